"""Training-data stress: too few images, rare classes, wrong labels, injected exactly and recorded.

Applied to the training split only (never the test split), in this order, each seeded:

1. small data: ``fraction`` of each class (``--train-fraction F``, rounded, at least one image a
   class) or ``per_class`` images of each (``--train-per-class N``), the first of a seeded shuffle;
2. imbalance (``--imbalance RATIO``): class ``c`` keeps ``n_max * RATIO ** (-c / (C - 1))`` images
   (``exp``, the long-tailed CIFAR-10-LT protocol: class 0 most frequent, class C-1 rarest at
   ``n_max / RATIO``), or ``step``: the first half of the classes keep ``n_max``, the rest
   ``n_max / RATIO``; the most frequent class keeps its images;
3. label noise (``--label-noise KIND:RATE``): ``sym`` flips each label with probability RATE to a
   uniformly drawn *other* class; ``pair`` flips it to the next class (c -> c + 1 mod C: a
   systematic error); ``confusion:FILE`` draws each new label from row ``c`` of a class-to-class
   matrix (CSV or JSON, rows summing to 1), or from a model's own confusion matrix (the realistic
   kind: ``FILE`` a ``robust-eval --suite clean --json`` results file, its counts normalised per
   true class). ``confusion:FILE@RATE`` keeps the matrix's pattern of errors and scales it to the
   rate: each class's off-diagonal row normalised to RATE, the diagonal 1 - RATE (a class the
   matrix never confuses keeps its labels, so fewer than RATE may change; the record says how many).

What was done is recorded (:meth:`Stress.record`): the settings and seed, the per-class training
counts, and the indices (into the training split) whose labels were changed, so later steps (the
label audit's precision and recall) can use them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.seeding import derive_seed

if TYPE_CHECKING:
    from robustbench_lite.readers import ImageDataset

PROFILES = ("exp", "step")
NOISE_KINDS = ("sym", "pair", "confusion")


@dataclass(frozen=True)
class StressOptions:
    """The stressors of one training run (None: not applied). See the module docstring."""

    fraction: float | None = None
    per_class: int | None = None
    imbalance: float | None = None
    profile: str = "exp"
    label_noise: str | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.fraction, self.per_class, self.imbalance, self.label_noise))

    def validate(self) -> StressOptions:
        """Checks that need no data (one line each); :func:`apply` checks the rest against the classes."""
        if self.fraction is not None and self.per_class is not None:
            raise RobustEvalError("--train-fraction and --train-per-class both given; pass one")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise RobustEvalError(f"--train-fraction {self.fraction} must be in (0, 1], e.g. 0.1")
        if self.per_class is not None and self.per_class < 1:
            raise RobustEvalError(f"--train-per-class {self.per_class} must be a positive number of images")
        if self.imbalance is not None and not (math.isfinite(self.imbalance) and self.imbalance >= 1):
            raise RobustEvalError(f"--imbalance {self.imbalance} must be a ratio >= 1 (most frequent / rarest class), "
                                  "e.g. 10 or 100")
        if self.profile not in PROFILES:
            raise RobustEvalError(f"--imbalance-profile {self.profile!r} is not a profile; valid: "
                                  f"{', '.join(PROFILES)}")
        if self.label_noise is not None:
            parse_noise(self.label_noise)
        return self

    def label(self) -> str:
        """A short name for file names: ``frac0.1+imb100exp+pair0.3``; "" when nothing is applied."""
        parts = [f"frac{self.fraction:g}" if self.fraction is not None else "",
                 f"n{self.per_class}" if self.per_class is not None else "",
                 f"imb{self.imbalance:g}{self.profile}" if self.imbalance is not None else "",
                 self.label_noise.replace(":", "") if self.label_noise and not self.label_noise.startswith(
                     "confusion:") else ("confusion" + _rate_label(self.label_noise) if self.label_noise else "")]
        return "+".join(p for p in parts if p)

    @classmethod
    def parse(cls, spec: str) -> StressOptions:
        """The inverse of :meth:`label`: ``frac0.1``, ``n100``, ``imb100`` (``imb100step``), ``sym0.2``,
        ``pair0.3``, ``confusion:FILE``, joined with ``+``; ``none`` or "" is no stress.

        Raises:
            RobustEvalError: a part that is none of these, or a value the stressors refuse.
        """
        import re

        values: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split("+")):
            if part in ("", "none"):
                continue
            if part.startswith("confusion:"):
                values["label_noise"] = part
                continue
            m = re.fullmatch(r"(frac|n|imb|sym|pair)([0-9.eE+-]+?)(exp|step)?", part)
            try:
                number = float(m.group(2)) if m else None
            except ValueError:
                number = None
            if m is None or number is None or (m.group(3) and m.group(1) != "imb"):
                raise RobustEvalError(f"stress {part!r} is not a stressor; write frac0.1, n100, imb100 (or "
                                      "imb100step), sym0.2, pair0.3 or confusion:FILE, joined with '+'")
            kind = m.group(1)
            if kind == "frac":
                values["fraction"] = number
            elif kind == "n":
                if number != int(number):
                    raise RobustEvalError(f"stress {part!r}: images per class must be a whole number")
                values["per_class"] = int(number)
            elif kind == "imb":
                values.update(imbalance=number, profile=m.group(3) or "exp")
            else:
                values["label_noise"] = f"{kind}:{m.group(2)}"
        return cls(**values).validate()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StressOptions:
        """The options a checkpoint's stress record (:func:`apply`'s ``record``) was made with."""
        return cls(fraction=record.get("fraction"), per_class=record.get("per_class"),
                   imbalance=record.get("imbalance"), profile=record.get("profile") or "exp",
                   label_noise=record.get("label_noise"))

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "per_class": self.per_class, "imbalance": self.imbalance,
                "profile": self.profile if self.imbalance is not None else None, "label_noise": self.label_noise}


def confusion_source(arg: str) -> tuple[str, float | None]:
    """``FILE`` or ``FILE@RATE`` of a ``confusion:`` spec -> (the file, the rate or None), checked.

    A file whose own name holds ``@`` is taken whole when it exists.
    """
    path, rate = _split_rate(arg)
    if rate is not None and not 0 < rate < 1:
        raise RobustEvalError(f"--label-noise confusion:{arg}: the rate after '@' must be in (0, 1), "
                              "e.g. confusion:results.json@0.3")
    if not Path(path).is_file():
        raise RobustEvalError(f"--label-noise confusion:{arg}: no such file {path!r}; give a CSV or JSON "
                              "class-to-class matrix whose rows sum to 1, or a robust-eval --suite clean --json "
                              "results file")
    return path, rate


def _split_rate(arg: str) -> tuple[str, float | None]:
    path, at, tail = arg.rpartition("@")
    if not at or Path(arg).is_file():
        return arg, None
    try:
        return path, float(tail)
    except ValueError:
        return path, math.nan


def _rate_label(label_noise: str) -> str:
    rate = _split_rate(label_noise.partition(":")[2])[1]
    return "" if rate is None else f"{rate:g}"


def parse_noise(spec: str) -> tuple[str, float | str]:
    """``sym:0.2`` -> ("sym", 0.2); ``confusion:FILE[@RATE]`` -> ("confusion", "FILE[@RATE]"); anything else is
    one line."""
    kind, sep, arg = spec.partition(":")
    if kind not in NOISE_KINDS or not sep or not arg:
        raise RobustEvalError(f"--label-noise {spec!r}: write sym:RATE, pair:RATE or confusion:FILE[@RATE], "
                              "e.g. sym:0.2")
    if kind == "confusion":
        confusion_source(arg)
        return kind, arg
    try:
        rate = float(arg)
    except ValueError:
        raise RobustEvalError(f"--label-noise {spec!r}: the rate must be a number in [0, 1), e.g. {kind}:0.2") from None
    if not 0 <= rate < 1:
        raise RobustEvalError(f"--label-noise {spec!r}: the rate must be in [0, 1), e.g. {kind}:0.2")
    if kind == "pair" and rate >= 0.5:
        raise RobustEvalError(f"--label-noise pair:{rate:g}: at 0.5 or more a class's flipped labels outnumber its "
                              "true ones and the labels carry no information; give a rate below 0.5")
    return kind, rate


def _read_matrix(path: str) -> torch.Tensor:
    """The matrix in the file; a results file's clean confusion matrix (counts) normalised per true class."""
    text = Path(path).read_text()
    counts = False
    try:
        rows = json.loads(text) if path.endswith(".json") else [
            [float(v) for v in line.replace(";", ",").split(",") if v.strip()]
            for line in text.splitlines() if line.strip()]
        if isinstance(rows, dict):  # a results file: its clean suite's confusion matrix (test-image counts)
            clean = rows.get("clean")
            rows, counts = (clean.get("confusion_matrix") if isinstance(clean, dict) else None), True
        matrix = None if rows is None else torch.tensor(rows, dtype=torch.float64)
    except (ValueError, TypeError):
        raise RobustEvalError(f"--label-noise confusion:{path}: not a matrix of numbers (CSV rows, a JSON list of "
                              "lists or a robust-eval results file)") from None
    if matrix is None:
        raise RobustEvalError(f"--label-noise confusion:{path}: a JSON object without a clean confusion matrix; "
                              "give a results file of robust-eval --suite clean --json, or a list of rows")
    if counts and matrix.dim() == 2:
        total = matrix.sum(1, keepdim=True)  # a class without test images keeps its labels
        matrix = torch.where(total > 0, matrix / total.clamp_min(1), torch.eye(*matrix.shape, dtype=torch.float64))
    return matrix


def _at_rate(matrix: torch.Tensor, rate: float) -> torch.Tensor:
    """The matrix's pattern of errors at ``rate``: off-diagonal rows normalised to it, the diagonal 1 - rate."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    mass = off.sum(1, keepdim=True)
    scaled = torch.where(mass > 0, off * (rate / mass.clamp_min(1e-300)), off)
    scaled[torch.arange(len(matrix)), torch.arange(len(matrix))] = 1 - scaled.sum(1)
    return scaled


def noise_matrix(kind: str, arg: float | str, classes: int) -> torch.Tensor:
    """(classes, classes) row-stochastic P(new label | true label) of a noise spec, checked against the classes."""
    if kind == "confusion":
        path, at_rate = confusion_source(str(arg))
        matrix = _read_matrix(path)
        if matrix.dim() != 2 or tuple(matrix.shape) != (classes, classes):
            raise RobustEvalError(f"--label-noise confusion:{arg}: a {'x'.join(map(str, matrix.shape))} matrix, "
                                  f"the data has {classes} classes; give a {classes}x{classes} matrix")
        bad = ((matrix < 0).any(1) | ((matrix.sum(1) - 1).abs() > 1e-6)).nonzero().flatten()
        if len(bad):
            row = int(bad[0])
            raise RobustEvalError(f"--label-noise confusion:{arg}: every row must be probabilities summing to 1 "
                                  f"(row {row} sums to {float(matrix[row].sum()):.4g}"
                                  f"{', with a negative entry' if bool((matrix[row] < 0).any()) else ''})")
        return matrix if at_rate is None else _at_rate(matrix, at_rate)
    rate = float(arg)
    if kind == "sym":
        if rate >= 1 - 1 / classes:
            raise RobustEvalError(f"--label-noise sym:{rate:g} leaves the labels no information with {classes} classes "
                                  f"(at 1 - 1/{classes} = {1 - 1 / classes:.3g} every class is equally likely); "
                                  "give a smaller rate")
        matrix = torch.full((classes, classes), rate / (classes - 1), dtype=torch.float64)
    else:
        if rate >= 0.5:
            raise RobustEvalError(f"--label-noise pair:{rate:g}: at 0.5 or more a class's flipped labels outnumber its "
                                  "true ones and the labels carry no information; give a rate below 0.5")
        matrix = torch.zeros(classes, classes, dtype=torch.float64)
        matrix[torch.arange(classes), (torch.arange(classes) + 1) % classes] = rate
    matrix[torch.arange(classes), torch.arange(classes)] = 1 - rate
    return matrix


@dataclass
class Stress:
    """What :func:`apply` did: kept indices (into the training split), the new labels, and the record."""

    indices: torch.Tensor
    labels: torch.Tensor
    record: dict[str, Any] = field(default_factory=dict)


def _targets(counts: torch.Tensor, opts: StressOptions) -> torch.Tensor:
    """Images per class after small-data and imbalance (checked: no class left empty)."""
    classes = len(counts)
    target = counts.clone()
    if opts.fraction is not None:
        target = torch.round(counts.double() * opts.fraction).long()
    elif opts.per_class is not None:
        target = torch.minimum(counts, torch.full_like(counts, opts.per_class))
    if opts.imbalance is not None and classes > 1:
        n_max = int(target.max())
        c = torch.arange(classes, dtype=torch.float64)
        if opts.profile == "exp":
            wanted = torch.floor(n_max * opts.imbalance ** (-c / (classes - 1)) + 1e-9).long()
        else:
            wanted = torch.where(c < classes // 2, torch.tensor(n_max, dtype=torch.float64),
                                 torch.tensor(n_max / opts.imbalance, dtype=torch.float64)).floor().long()
        target = torch.minimum(target, wanted)
    empty = [int(c) for c in torch.nonzero(target == 0).flatten() if int(counts[c]) > 0]
    if empty:
        what = (f"--train-fraction {opts.fraction}" if opts.fraction is not None else
                f"--imbalance {opts.imbalance:g}" if opts.imbalance is not None else "the stressors")
        raise RobustEvalError(f"{what} leaves class {empty[0]} with no training image ({int(counts[empty[0]])} there); "
                              "give a larger fraction or a smaller ratio")
    return target


def apply(labels: torch.Tensor, classes: int, opts: StressOptions, seed: int,
          matrix: torch.Tensor | None = None) -> Stress:
    """The stressed training set of a split with these ``labels`` (see the module docstring).

    ``matrix``: the noise matrix to draw from instead of reading ``opts.label_noise`` (a recorded
    run reproduced from its checkpoint, whose confusion file may be gone).
    """
    if matrix is None:
        opts.validate()
    counts = torch.bincount(labels, minlength=classes)
    target = _targets(counts, opts)
    gen = torch.Generator().manual_seed(derive_seed(seed, 0, "stress", "subset"))
    kept = []
    for c in range(classes):
        members = torch.nonzero(labels == c).flatten()
        order = members[torch.randperm(len(members), generator=gen)]
        kept.append(order[:int(target[c])])
    indices = torch.cat(kept).sort().values if kept else labels[:0]
    new = labels[indices].clone()
    changed = torch.zeros(0, dtype=torch.long)
    noise: dict[str, Any] | None = None
    if opts.label_noise is not None:
        kind, _, arg = opts.label_noise.partition(":")
        if matrix is None:
            kind, arg = parse_noise(opts.label_noise)
            matrix = noise_matrix(kind, arg, classes)
        matrix = torch.as_tensor(matrix, dtype=torch.float64)
        ngen = torch.Generator().manual_seed(derive_seed(seed, 0, "stress", "noise"))
        drawn = torch.multinomial(matrix[new].float(), 1, generator=ngen).flatten()
        flipped = drawn != new
        changed = indices[flipped]
        new = drawn
        noise = {"kind": kind, "rate": _split_rate(str(arg))[1] if kind == "confusion" else float(arg),
                 "matrix": matrix.tolist(), "changed": len(changed),
                 "changed_fraction": len(changed) / max(len(new), 1)}
    record = {**opts.to_dict(), "seed": seed, "images": len(indices),
              "class_counts": torch.bincount(labels[indices], minlength=classes).tolist(),
              "noise": noise, "changed_indices": changed.tolist()}
    return Stress(indices, new, record)


def stressed_dataset(dataset: ImageDataset, opts: StressOptions, seed: int,
                     matrix: torch.Tensor | None = None) -> tuple[ImageDataset, Stress]:
    """:func:`apply` to a training split: (the kept images with their new labels, what was done)."""
    stress = apply(dataset.labels, dataset.num_classes, opts, seed, matrix)
    return dataclasses.replace(dataset.subset(stress.indices), labels=stress.labels), stress
