"""Dataset-shift splits: natural, subpopulation (BREEDS-style), covariate and label (prior) shift.

Every split is an entry of :data:`SHIFTS`, named ``<kind>/<name>``:

- ``natural/cifar10.1-v4``, ``natural/cifar10.1-v6`` (Recht et al. 2019, CIFAR-10.1 ``.npy``
  files), ``natural/cifar10.2-test``, ``natural/cifar10.2-train`` (Lu et al. 2020, CIFAR-10.2
  ``.npz`` files): new test sets for CIFAR-10 models. ``natural/folder``: the user's own
  shifted sets (``--shift-natural PATH``, image folders whose class names match the model's).
- ``subpop/source``, ``subpop/target``: a :class:`Hierarchy` groups fine classes into coarse
  ones; source and target use disjoint fine classes of each coarse class (Santurkar et al. 2021,
  "BREEDS", arXiv:2008.04859). The same splits are datasets for training: ``--dataset
  fashion-mnist:subpop-source``.
- ``covariate/<transform>``: seeded pixel-space transforms at five intensities (geometric,
  photometric, resolution); per-image randomness from :func:`robustbench_lite.seeding.generators`.
- ``label/dirichlet``: the test set resampled with Dirichlet class priors (Lipton et al. 2018,
  arXiv:1802.03916) at several concentrations, many seeded draws each; scored from the clean
  logits, so it costs no model pass.

A split is built against a :class:`ShiftEnv` (the test data, the options and callables that run
the model); it returns :class:`SplitData` (logits and labels per intensity) that the shift suite
scores. This module never imports the suites or the CLI.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_lite import data as data_mod
from robustbench_lite.data import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, ImageDataset
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import Options, comma_list, int_in, option
from robustbench_lite.pixels import LUMA
from robustbench_lite.registry import Registry
from robustbench_lite.seeding import default_indices, derive_seed, generators

Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

INTENSITIES = (1, 2, 3, 4, 5)
DEFAULT_ALPHAS = (0.1, 1.0, 10.0)
DEFAULT_DRAWS = 20


# ---------------------------------------------------------------------------------------------
# Options


def _alphas(value: Any) -> tuple[float, ...]:
    return tuple(_parse_alpha(a) for a in comma_list(value, "--shift-alpha", "0.1,1,10"))


def _intensities(value: Any) -> tuple[int, ...]:
    parse = int_in("--shift-intensities", 1, len(INTENSITIES))
    return tuple(sorted({parse(v) for v in comma_list(value, "--shift-intensities", "1,3,5")}))


def _natural(value: Any) -> tuple[str, ...]:
    folders = comma_list(value, "--shift-natural", "~/data/my-shifted-set")
    for spec in folders:
        path = Path(spec.removeprefix("imagefolder:")).expanduser()
        if not path.is_dir():
            raise RobustEvalError(f"--shift-natural: {path} is not a directory; expected "
                                  f"{path}/<class>/<image files> with the model's class names")
    return folders


@dataclass(frozen=True)
class ShiftOptions(Options):
    """The shift suite's settings (CLI flags ``--shift-*``; YAML/API keys are the field names).

    Attributes:
        splits: fnmatch patterns over :data:`SHIFTS` names; a name without wildcards is "named
            explicitly": it must apply and its files must exist (otherwise it is an error, where a
            pattern's inapplicable matches are reported as skipped).
        alphas: Dirichlet concentrations for ``label/dirichlet`` (> 0; small = skewed priors).
        draws: resampled test sets per alpha.
        intensities: which of the five covariate intensities to run.
        natural: image folders (``PATH`` or ``imagefolder:PATH``) scored as ``natural/folder:NAME``.
    """

    owner: ClassVar[str] = "shift suite"

    splits: tuple[str, ...] = option(
        "--shift-splits", "shift splits, fnmatch patterns, e.g. 'covariate/*,label/dirichlet' (default: every "
        "split that applies to the dataset); see 'robust-eval list shifts'", default=("*",),
        parse=lambda v: comma_list(v, "--shift-splits", "'covariate/*'"), metavar="PATTERN[,PATTERN]",
        repeatable=True, example="covariate/*,label/dirichlet")
    alphas: tuple[float, ...] = option(
        "--shift-alpha", "Dirichlet concentrations for label/dirichlet, > 0 "
        f"(default: {','.join(f'{a:g}' for a in DEFAULT_ALPHAS)})", default=DEFAULT_ALPHAS, parse=_alphas,
        metavar="A[,A]", example="0.5,2")
    draws: int = option("--shift-draws", f"resampled test sets per alpha (default: {DEFAULT_DRAWS})",
                        default=DEFAULT_DRAWS, parse=int_in("--shift-draws", 1), metavar="N", example="3")
    intensities: tuple[int, ...] = option(
        "--shift-intensities", "covariate intensities to run, 1-5 (default: 1,2,3,4,5)", default=INTENSITIES,
        parse=_intensities, metavar="I[,I]", example="1,5")
    natural: tuple[str, ...] = option(
        "--shift-natural", "your own shifted test set: a folder of <class>/<images> with the model's class "
        "names; repeatable (default: none)", default=(), parse=_natural, metavar="PATH", repeatable=True,
        example="natural-set")

    def validate(self) -> None:
        select(self)  # unknown split names fail here, before any model pass


def _parse_alpha(value: Any) -> float:
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise RobustEvalError(f"--shift-alpha: '{value}' is not a number; give concentrations > 0, e.g. 0.1,1,10") \
            from None
    if not (alpha > 0 and math.isfinite(alpha)):
        raise RobustEvalError(f"--shift-alpha must be > 0 (a Dirichlet concentration), got {value}; e.g. 0.1,1,10")
    return alpha


# ---------------------------------------------------------------------------------------------
# What a split is built against, and what it returns


@dataclass
class ShiftEnv:
    """The run as a split sees it.

    Attributes:
        dataset: the in-distribution test split (already limited); its classes are the model's.
        options: the validated suite options.
        clean_logits: the model's logits on ``dataset`` (computed once per run).
        predict: ``predict(transform, desc)`` -> logits on ``dataset`` through a per-batch
            ``transform(images, indices)``.
        predict_dataset: ``predict_dataset(dataset, desc)`` -> logits on another dataset.
        seed, limit, data_dir: the run's settings (limit applies to every test set loaded here).
        cache: what a split's ``skip_reason`` loaded, for its ``build``.
    """

    dataset: ImageDataset
    options: ShiftOptions
    clean_logits: Callable[[], torch.Tensor]
    predict: Callable[[Transform, str], torch.Tensor]
    predict_dataset: Callable[[ImageDataset, str], torch.Tensor]
    seed: int = 0
    limit: int | None = None
    data_dir: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The registry name of the test data without a view (``fashion-mnist:subpop-source`` -> ``fashion-mnist``)."""
        return self.dataset.name.partition(":")[0]


@dataclass
class Level:
    """One scored setting of a split: an intensity, an alpha, or the whole split.

    Attributes:
        name: ``"3"`` (intensity), ``"alpha=0.1"``, or ``""`` for a split with one setting.
        params: the setting's parameters (shown in results).
        logits, labels: N x C logits and N labels.
        draws: resampled index sets into ``logits``/``labels``, each scored on its own (label shift).
        priors: the class prior of each draw.
    """

    name: str
    params: dict[str, Any]
    logits: torch.Tensor
    labels: torch.Tensor
    draws: list[torch.Tensor] | None = None
    priors: list[list[float]] | None = None


@dataclass
class SplitData:
    """A built split, ready to score.

    Attributes:
        name: key in the results (``covariate/rotation``, ``natural/folder:mydata``).
        kind: ``natural``, ``subpop``, ``covariate`` or ``label``.
        classes: class names of ``levels``' labels (coarse groups for subpopulation splits).
        levels: one or more scored settings; the split's numbers are their means.
        reference: the in-distribution level to compare with; None: the clean test split.
        reference_name: what ``reference`` is called in results.
        shifted: False for an in-distribution reference split (``subpop/source``).
        in_summary: whether the split enters mean/worst accuracy (False when its task differs
            from the model's, e.g. fine predictions mapped to coarse groups).
        notes: how the numbers were obtained, for the report.
        extra: split-specific details (per-fine-class accuracy, file paths...).
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    levels: list[Level]
    reference: Level | None = None
    reference_name: str = "clean"
    shifted: bool = True
    in_summary: bool = True
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class ShiftSplit:
    """A registered split: ``skip_reason`` says why it cannot run here, ``build`` makes its data.

    ``skip_reason`` runs for every selected split before any is built, so a bad input (missing
    files, mismatched class names) fails before the first model pass; it may raise
    :class:`RobustEvalError` for input the user gave explicitly.
    """

    name: str
    kind: str
    description: str

    def skip_reason(self, env: ShiftEnv) -> str | None:
        """Why this split does not apply to ``env`` (wrong dataset, files missing); None if it does."""
        return None

    def build(self, env: ShiftEnv) -> list[SplitData]:
        raise NotImplementedError


SHIFTS: Registry[ShiftSplit] = Registry("shift split", "robust-eval list shifts")


def register_shift(split: ShiftSplit) -> ShiftSplit:
    return SHIFTS.register(split.name, split)


def select(options: ShiftOptions) -> list[tuple[ShiftSplit, bool]]:
    """The splits ``options`` choose, in registry order, each with "named explicitly"."""
    chosen: dict[str, bool] = {}
    for pattern in options.splits:
        if any(ch in pattern for ch in "*?["):
            names = SHIFTS.list(pattern)
            if not names:
                raise RobustEvalError(f"no shift split matches '{pattern}'; valid: {', '.join(SHIFTS.list())}")
            for name in names:
                chosen.setdefault(name, False)
        else:
            SHIFTS.entry(pattern)  # unknown names raise with the valid ones
            chosen[pattern] = True
    if options.natural:
        chosen["natural/folder"] = True
    return [(SHIFTS.entry(name), chosen[name]) for name in SHIFTS.list() if name in chosen]


# ---------------------------------------------------------------------------------------------
# Covariate shift: pure kernels (images, parameter, uniforms) -> images, all in [0, 1] NCHW


def _sign(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0).to(u.dtype)


def _affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample through ``theta`` (N x 2 x 3, output -> input in normalised coordinates); zero fill."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(images: torch.Tensor, degrees: float, u: torch.Tensor) -> torch.Tensor:
    """Rotate by ``degrees`` about the centre, direction from ``u[:, 0]``; corners filled with 0."""
    h, w = images.shape[-2:]
    angle = torch.deg2rad(degrees * _sign(u[:, 0]))
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    # Normalised coordinates scale x and y differently on non-square images.
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    return _affine(images, theta)


def translate(images: torch.Tensor, fraction: float, u: torch.Tensor) -> torch.Tensor:
    """Shift by ``fraction`` of the image size in the direction ``2 pi u[:, 0]``."""
    phi = 2 * math.pi * u[:, 0]
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = 2 * fraction * phi.cos(), 2 * fraction * phi.sin()
    return _affine(images, theta)


def scale(images: torch.Tensor, factor: float, u: torch.Tensor) -> torch.Tensor:
    """Zoom in (crop) or out (border of 0) by ``factor`` about the centre; which one from ``u[:, 0]``."""
    zoom = torch.where(u[:, 0] < 0.5, factor, 1 / factor).to(images.dtype)
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    return _affine(images, theta)


def brightness(images: torch.Tensor, delta: float, u: torch.Tensor) -> torch.Tensor:
    """Add ``delta`` (darker or brighter from ``u[:, 0]``), clipped to [0, 1]."""
    return (images + delta * _sign(u[:, 0]).view(-1, 1, 1, 1)).clamp(0, 1)


def contrast(images: torch.Tensor, factor: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """Scale each image's deviation from its mean by ``factor`` (< 1 lowers contrast)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * factor + mean).clamp(0, 1)


_RGB_TO_YIQ = torch.tensor([LUMA, [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])


def hue(images: torch.Tensor, degrees: float, u: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``degrees`` (direction from ``u[:, 0]``) in YIQ space; luma is kept. RGB only."""
    angle = torch.deg2rad(degrees * _sign(u[:, 0])).double()
    rot = torch.zeros(len(images), 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = angle.cos(), -angle.sin()
    rot[:, 2, 1], rot[:, 2, 2] = angle.sin(), angle.cos()
    to_yiq = _RGB_TO_YIQ.double()
    matrix = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(images.dtype).to(images.device)
    return torch.einsum("nij,njhw->nihw", matrix, images).clamp(0, 1)


def invert(images: torch.Tensor, threshold: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """Solarise: invert every pixel at or above ``threshold`` (0 inverts the whole image)."""
    return torch.where(images >= threshold, 1 - images, images)


def resolution(images: torch.Tensor, factor: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """Down-sample by ``factor`` (area average), then up-sample back (bilinear)."""
    h, w = images.shape[-2:]
    small = (max(2, round(h / factor)), max(2, round(w / factor)))
    down = F.interpolate(images, size=small, mode="area")
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


class CovariateShift(ShiftSplit):
    """A pixel-space transform at five graded intensities, seeded per image.

    Args:
        name: registry name (``covariate/rotation``).
        family: ``geometric``, ``photometric`` or ``resolution``.
        kernel: ``kernel(images, parameter, uniforms) -> images``; ``uniforms`` is N x ``randoms``
            numbers in [0, 1) drawn from each image's own generator (None when ``randoms`` is 0).
        parameter: the parameter's name (``degrees``); ``params`` its value at intensities 1-5.
        needs_rgb: only for colour images.
    """

    kind = "covariate"

    def __init__(self, name: str, family: str, kernel: Callable[..., torch.Tensor], parameter: str,
                 params: Sequence[float], description: str, randoms: int = 1, needs_rgb: bool = False) -> None:
        if len(params) != len(INTENSITIES):
            raise ValueError(f"{name}: need {len(INTENSITIES)} parameters, got {len(params)}")
        self.name, self.family, self.kernel, self.parameter = name, family, kernel, parameter
        self.params, self.description, self.randoms, self.needs_rgb = tuple(params), description, randoms, needs_rgb

    def transform(self, intensity: int, seed: int) -> Transform:
        """The ``(images, indices) -> images`` transform at ``intensity`` (1-5)."""
        param = self.params[intensity - 1]

        def apply(images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
            u = None
            if self.randoms:
                gens = generators(seed, default_indices(len(images), indices), "shift", self.name, intensity)
                u = torch.stack([torch.rand(self.randoms, generator=g) for g in gens]).to(images.device)
            return self.kernel(images, param, u)

        return apply

    def skip_reason(self, env: ShiftEnv) -> str | None:
        if self.needs_rgb and env.dataset.channels != 3:
            return f"needs colour images; {env.dataset.name} has {env.dataset.channels} channel(s)"
        return None

    def build(self, env: ShiftEnv) -> list[SplitData]:
        levels = []
        for intensity in env.options.intensities:
            logits = env.predict(self.transform(intensity, env.seed), f"{self.name} {intensity}")
            params = {"intensity": intensity, self.parameter: self.params[intensity - 1]}
            levels.append(Level(str(intensity), params, logits, env.dataset.labels))
        return [SplitData(self.name, self.kind, env.dataset.classes, levels, extra={"family": self.family})]


for _split in (
    CovariateShift("covariate/rotation", "geometric", rotate, "degrees", (10, 20, 30, 45, 60),
                   "rotation by +-10..60 degrees (zero fill)"),
    CovariateShift("covariate/translation", "geometric", translate, "fraction", (0.05, 0.1, 0.15, 0.2, 0.3),
                   "translation by 5..30% of the image size in a random direction (zero fill)"),
    CovariateShift("covariate/scale", "geometric", scale, "factor", (1.1, 1.2, 1.35, 1.5, 1.75),
                   "zoom in or out by 1.1..1.75x about the centre"),
    CovariateShift("covariate/brightness", "photometric", brightness, "delta", (0.1, 0.2, 0.3, 0.4, 0.5),
                   "brightness -+0.1..0.5 (clipped)"),
    CovariateShift("covariate/contrast", "photometric", contrast, "factor", (0.8, 0.6, 0.45, 0.3, 0.2),
                   "contrast lowered to 80..20% about the image mean", randoms=0),
    CovariateShift("covariate/colour", "photometric", hue, "degrees", (30, 60, 90, 135, 180),
                   "hue rotation by +-30..180 degrees in YIQ (colour images only)", needs_rgb=True),
    CovariateShift("covariate/inversion", "photometric", invert, "threshold", (0.9, 0.75, 0.5, 0.25, 0.0),
                   "solarisation: pixels above 0.9..0 inverted (intensity 5 = negative image)", randoms=0),
    CovariateShift("covariate/resolution", "resolution", resolution, "factor", (1.5, 2, 3, 4, 6),
                   "down-sampled by 1.5..6x (area), up-sampled back (bilinear)", randoms=0),
):
    register_shift(_split)


# ---------------------------------------------------------------------------------------------
# Label (prior) shift


def dirichlet_resample(labels: torch.Tensor, num_classes: int, alpha: float, seed: int, draw: int,
                       size: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """One prior-shifted resample of a labelled set, keeping sample identities.

    A class prior p ~ Dirichlet(alpha, ..., alpha) over the classes present in ``labels``; class
    counts ~ Multinomial(size, p); each class's samples drawn with replacement from that class.

    Args:
        labels: N labels.
        alpha: concentration > 0 (0.1: nearly one class; 10: close to uniform).
        seed, draw: the draw's randomness is a function of (seed, draw, alpha) only.
        size: samples per draw (default N).

    Returns:
        Sorted indices into ``labels`` (length ``size``) and the prior (``num_classes`` values).
    """
    if not alpha > 0:
        raise RobustEvalError(f"Dirichlet alpha must be > 0, got {alpha}")
    labels_np = labels.cpu().numpy()
    size = len(labels_np) if size is None else size
    present = np.unique(labels_np)
    rng = np.random.default_rng(derive_seed(seed, draw, "label/dirichlet", repr(float(alpha))))
    prior = np.zeros(num_classes)
    prior[present] = rng.dirichlet(np.full(len(present), float(alpha)))
    counts = rng.multinomial(size, prior[present] / prior[present].sum())
    picks = [rng.choice(np.flatnonzero(labels_np == c), k, replace=True)
             for c, k in zip(present, counts, strict=True) if k]
    idx = np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(idx.astype(np.int64)), prior


class LabelShift(ShiftSplit):
    name = "label/dirichlet"
    kind = "label"
    description = "test set resampled with Dirichlet class priors (alphas x draws), from the clean logits"

    def build(self, env: ShiftEnv) -> list[SplitData]:
        logits, labels = env.clean_logits(), env.dataset.labels
        levels = []
        for alpha in env.options.alphas:
            draws, priors = [], []
            for d in range(env.options.draws):
                idx, prior = dirichlet_resample(labels, env.dataset.num_classes, alpha, env.seed, d)
                draws.append(idx)
                priors.append([round(float(p), 6) for p in prior])
            levels.append(Level(f"alpha={alpha:g}", {"alpha": alpha, "draws": env.options.draws}, logits, labels,
                                draws, priors))
        return [SplitData(self.name, self.kind, env.dataset.classes, levels)]


register_shift(LabelShift())


# ---------------------------------------------------------------------------------------------
# Subpopulation shift: class hierarchies


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", name.lower())


@dataclass(frozen=True)
class Hierarchy:
    """Fine classes of a dataset grouped into coarse classes, each split into source and target.

    Attributes:
        dataset: the base dataset's registry name.
        fine: the dataset's class names in label order.
        coarse: coarse class names, index = coarse label.
        parent: coarse label of each fine label.
        source, target: fine labels in each split; disjoint except for coarse classes with one
            fine class, which appear in both (nothing to split).
        reference: where the grouping comes from.
    """

    dataset: str
    fine: tuple[str, ...]
    coarse: tuple[str, ...]
    parent: tuple[int, ...]
    source: tuple[int, ...]
    target: tuple[int, ...]
    reference: str

    @classmethod
    def from_groups(cls, dataset: str, fine: Sequence[str],
                    groups: Mapping[str, tuple[Sequence[str], Sequence[str]]], reference: str) -> Hierarchy:
        """Build from ``{coarse: (source fine names, target fine names)}``; checks it is a partition."""
        index = {name: i for i, name in enumerate(fine)}
        parent = [-1] * len(fine)
        source: list[int] = []
        target: list[int] = []
        for g, (group, (src, tgt)) in enumerate(groups.items()):
            members = set(src) | set(tgt)
            if set(src) & set(tgt) and len(members) > 1:
                raise ValueError(f"{dataset} hierarchy: group '{group}' has fine classes in both splits")
            if not src or not tgt:
                raise ValueError(f"{dataset} hierarchy: group '{group}' needs source and target classes")
            for name in members:
                if name not in index:
                    raise ValueError(f"{dataset} hierarchy: '{name}' is not a class of {dataset}")
                if parent[index[name]] != -1:
                    raise ValueError(f"{dataset} hierarchy: '{name}' is in two groups")
                parent[index[name]] = g
            source += [index[n] for n in src]
            target += [index[n] for n in tgt]
        missing = [fine[i] for i, p in enumerate(parent) if p == -1]
        if missing:
            raise ValueError(f"{dataset} hierarchy: fine classes in no group: {', '.join(missing)}")
        return cls(dataset, tuple(fine), tuple(groups), tuple(parent), tuple(sorted(source)), tuple(sorted(target)),
                   reference)

    def part(self, part: str) -> tuple[int, ...]:
        """Fine labels of ``source`` or ``target``."""
        if part not in ("source", "target"):
            raise ValueError(f"unknown subpopulation part '{part}'; use source or target")
        return self.source if part == "source" else self.target

    @property
    def shared(self) -> tuple[int, ...]:
        """Fine labels in both splits (coarse classes with a single fine class)."""
        return tuple(sorted(set(self.source) & set(self.target)))

    def groups(self) -> dict[str, dict[str, list[str]]]:
        return {c: {part: [self.fine[i] for i in self.part(part) if self.parent[i] == g]
                    for part in ("source", "target")} for g, c in enumerate(self.coarse)}

    def task(self, classes: Sequence[str]) -> str | None:
        """``coarse`` or ``fine`` when ``classes`` name that task (order matters), else None."""
        classes = tuple(classes)
        if classes == self.coarse:
            return "coarse"
        unnamed = tuple(str(i) for i in range(len(self.fine)))  # a dataset copy without its names file
        if classes in (self.fine, unnamed):
            return "fine"
        return None

    def coarse_logits(self, fine_logits: torch.Tensor) -> torch.Tensor:
        """Coarse logits whose softmax sums the fine probabilities of each group (logsumexp)."""
        parent = torch.tensor(self.parent)
        return torch.stack([fine_logits[:, parent == g].logsumexp(dim=1) for g in range(len(self.coarse))], dim=1)

    def view(self, part: str) -> Callable[[ImageDataset], ImageDataset]:
        """``dataset -> its part`` with coarse labels: the ``<dataset>:subpop-<part>`` dataset."""
        fine = torch.tensor(self.part(part))
        parent = torch.tensor(self.parent)

        def make(ds: ImageDataset) -> ImageDataset:
            if self.task(ds.classes) != "fine":
                raise RobustEvalError(f"{ds.name}: classes {', '.join(ds.classes[:4])}... are not the fine classes "
                                      f"of the {self.dataset} hierarchy")
            sub = ds.subset(torch.isin(ds.labels, fine).nonzero().squeeze(1))
            meta = {**sub.meta, "hierarchy": self.dataset, "subpop": part}
            return ImageDataset(f"{self.dataset}:subpop-{part}", sub.split, sub.images, parent[sub.labels],
                                self.coarse, sub.source, meta)

        return make


HIERARCHIES: Registry[Hierarchy] = Registry("class hierarchy", "robust-eval --help: --shift-splits")


def register_hierarchy(hierarchy: Hierarchy) -> Hierarchy:
    """Register ``hierarchy`` and its two datasets ``<dataset>:subpop-source`` / ``-target``."""
    HIERARCHIES.register(hierarchy.dataset, hierarchy)
    for part in ("source", "target"):
        data_mod.VIEWS.register(f"{hierarchy.dataset}:subpop-{part}", hierarchy.view(part))
    return hierarchy


#: Fashion-MNIST groups (our grouping; the dataset has none): tops / bottoms / dresses / footwear /
#: bags. Groups with several fine classes are split between source and target; Trouser, Dress and
#: Bag are alone in their group and so appear in both splits.
FASHION_MNIST_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tops": (("T-shirt/top", "Pullover"), ("Shirt", "Coat")),
    "bottoms": (("Trouser",), ("Trouser",)),
    "dresses": (("Dress",), ("Dress",)),
    "footwear": (("Sandal", "Sneaker"), ("Ankle boot",)),
    "bags": (("Bag",), ("Bag",)),
}

#: CIFAR-100 fine class names in label order (the ``fine_label_names`` of the dataset's ``meta`` file).
CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

#: The standard CIFAR-100 superclasses (``coarse_label_names``, label order) and their five fine
#: classes, as listed on https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky 2009, "Learning
#: Multiple Layers of Features from Tiny Images", appendix). BREEDS-style split: the first three fine
#: classes of each superclass, in this order, are the source; the other two are the target.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

register_hierarchy(Hierarchy.from_groups(
    "fashion-mnist", FASHION_MNIST_CLASSES, FASHION_MNIST_GROUPS,
    "robustbench_lite grouping of the Fashion-MNIST classes (Xiao et al. 2017 define no hierarchy)",
))
register_hierarchy(Hierarchy.from_groups(
    "cifar100", CIFAR100_FINE, {c: (f[:3], f[3:]) for c, f in CIFAR100_SUPERCLASSES.items()},
    "CIFAR-100 superclasses, https://www.cs.toronto.edu/~kriz/cifar.html; source = first 3 fine classes",
))


class SubpopShift(ShiftSplit):
    """``subpop/source`` (the in-distribution reference) or ``subpop/target`` (unseen fine classes).

    A model trained on the coarse task (``--dataset <dataset>:subpop-source``) is scored on the
    source and target views of the test split, each limited like the run's test data. A model of
    the fine task is scored by mapping its predictions to coarse groups (group probability = sum
    of its fine probabilities); it has seen every fine class, so that measures coarse accuracy per
    subpopulation rather than generalisation to new ones, and stays out of the summary.
    """

    kind = "subpop"

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = f"subpop/{part}"
        self.description = f"coarse task on the {part} fine classes of a class hierarchy (fashion-mnist, cifar100)"

    def skip_reason(self, env: ShiftEnv) -> str | None:
        if env.base not in HIERARCHIES:
            return f"no class hierarchy for {env.base} (hierarchies: {', '.join(HIERARCHIES.list())})"
        if HIERARCHIES.entry(env.base).task(env.dataset.classes) is None:
            return (f"the model's classes ({', '.join(env.dataset.classes[:4])}...) are neither the fine nor the "
                    f"coarse classes of the {env.base} hierarchy")
        return None

    def build(self, env: ShiftEnv) -> list[SplitData]:
        h = HIERARCHIES.entry(env.base)
        task = h.task(env.dataset.classes)
        levels = {part: self._level(env, h, task, part)
                  for part in (("source",) if self.part == "source" else ("source", "target"))}
        level, fine_labels = levels[self.part]
        notes = [f"hierarchy: {h.reference}"]
        if h.shared:
            notes.append(f"in both splits (alone in their coarse class): {', '.join(h.fine[i] for i in h.shared)}")
        if task == "fine":
            notes.append("the model predicts fine classes (it has seen every subpopulation): fine probabilities are "
                         "summed per coarse class, so this is coarse accuracy per subpopulation, not generalisation "
                         f"to unseen ones (train on {h.dataset}:subpop-source for that); not in the summary")
        extra = {"task": task, "hierarchy": h.dataset, "groups": h.groups(),
                 "fine_classes": _per_fine(h, level, fine_labels)}
        return [SplitData(self.name, self.kind, h.coarse, [level], reference=levels["source"][0],
                          reference_name="subpop/source", shifted=self.part != "source",
                          in_summary=task == "coarse", notes=notes, extra=extra)]

    @classmethod
    def _level(cls, env: ShiftEnv, h: Hierarchy, task: str | None, part: str) -> tuple[Level, torch.Tensor]:
        """The part's level and its fine labels (cached: subpop/target rescores the source as its reference)."""
        key = f"subpop/{part}"
        if key not in env.cache:
            env.cache[key] = cls._make_level(env, h, task, part)
        return env.cache[key]

    @staticmethod
    def _make_level(env: ShiftEnv, h: Hierarchy, task: str | None, part: str) -> tuple[Level, torch.Tensor]:
        parent = torch.tensor(h.parent)
        if task == "fine":
            fine_labels = env.dataset.labels
            keep = torch.isin(fine_labels, torch.tensor(h.part(part)))
            logits = h.coarse_logits(env.clean_logits()[keep])
            return Level("", {"part": part, "n_fine_classes": len(h.part(part))}, logits,
                         parent[fine_labels[keep]]), fine_labels[keep]
        base = data_mod.load(h.dataset, "test", env.data_dir)
        ds = h.view(part)(base).limit(env.limit)
        same = ds.name == env.dataset.name and torch.equal(ds.indices, env.dataset.indices)
        logits = env.clean_logits() if same else env.predict_dataset(ds, f"subpop/{part}")
        return Level("", {"part": part, "n_fine_classes": len(h.part(part))}, logits, ds.labels), \
            base.labels[ds.indices]


def _per_fine(h: Hierarchy, level: Level, fine_labels: torch.Tensor) -> dict[str, dict[str, Any]]:
    correct = level.logits.argmax(dim=1) == level.labels
    out = {}
    for f in fine_labels.unique().tolist():
        mask = fine_labels == f
        out[h.fine[f]] = {"coarse": h.coarse[h.parent[f]], "n": int(mask.sum()),
                          "accuracy": float(correct[mask].float().mean())}
    return out


register_shift(SubpopShift("source"))
register_shift(SubpopShift("target"))


# ---------------------------------------------------------------------------------------------
# Natural shift: new test sets in their published formats


def _check_arrays(images: np.ndarray, labels: np.ndarray, where: str, num_classes: int) -> ImageDataset:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise RobustEvalError(f"{where}: expected uint8 images of shape N x 32 x 32 x 3, "
                              f"got {images.dtype} {tuple(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise RobustEvalError(f"{where}: expected {len(images)} integer labels, "
                              f"got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise RobustEvalError(f"{where}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return ImageDataset("", "test", torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                        torch.from_numpy(labels.astype(np.int64)), CIFAR10_CLASSES, where)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RobustEvalError(f"{path} is not a .npy array file ({exc})") from None


def read_cifar10_1(data: Path, labels: Path) -> ImageDataset:
    """CIFAR-10.1: ``cifar10.1_vN_data.npy`` (uint8 N x 32 x 32 x 3) and ``cifar10.1_vN_labels.npy``."""
    return _check_arrays(_load_npy(data), _load_npy(labels), f"{data.parent}/{data.name}", 10)


def read_cifar10_2(path: Path) -> ImageDataset:
    """CIFAR-10.2: ``cifar102_{train,test}.npz`` with arrays ``images`` (uint8 N x 32 x 32 x 3) and ``labels``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("images", "labels") if k not in npz.files]
            if missing:
                raise RobustEvalError(f"{path}: missing array(s) {', '.join(missing)}; "
                                      f"found {', '.join(npz.files) or 'none'}")
            images, labels = npz["images"], npz["labels"]
    except (ValueError, OSError, EOFError) as exc:
        raise RobustEvalError(f"{path} is not a .npz archive ({exc})") from None
    return _check_arrays(images, labels, str(path), 10)


class NaturalShift(ShiftSplit):
    """A published shifted test set for CIFAR-10 models, read from files found in the data roots.

    Args:
        files: file names that must all be present in one folder.
        folders: sub-folders of each data root searched (``""``: the root itself).
        reader: ``reader(*paths) -> ImageDataset``.
        get: where the files come from.
    """

    kind = "natural"

    def __init__(self, name: str, files: tuple[str, ...], folders: tuple[str, ...],
                 reader: Callable[..., ImageDataset], get: str, description: str) -> None:
        self.name, self.files, self.folders, self.reader = name, files, folders, reader
        self.get, self.description = get, description

    def _dirs(self, env: ShiftEnv) -> list[Path]:
        return [root / sub for root in data_mod.search_roots(env.data_dir) for sub in self.folders]

    def find(self, env: ShiftEnv) -> list[Path] | None:
        found = next((d for d in self._dirs(env) if all((d / f).is_file() for f in self.files)), None)
        return None if found is None else [found / f for f in self.files]

    def skip_reason(self, env: ShiftEnv) -> str | None:
        if env.dataset.classes != CIFAR10_CLASSES and env.base != "cifar10":
            return f"a shifted test set for CIFAR-10 models; this run's dataset is {env.dataset.name}"
        if self.find(env) is None:
            where = ", ".join(str(d) for d in self._dirs(env))
            return f"files not found: looked for {', '.join(self.files)} in {where}. Get them from {self.get}"
        return None

    def build(self, env: ShiftEnv) -> list[SplitData]:
        paths = self.find(env)
        if paths is None:
            raise RobustEvalError(f"{self.name}: {self.skip_reason(env)}")
        ds = self.reader(*paths).limit(env.limit)
        level = Level("", {"n_examples": len(ds)}, env.predict_dataset(ds, self.name), ds.labels)
        return [SplitData(self.name, self.kind, env.dataset.classes, [level],
                          extra={"files": [str(p) for p in paths]})]


_C101_FOLDERS = ("", "cifar10.1", "CIFAR-10.1", "CIFAR-10.1/datasets", "cifar10.1/datasets")
_C102_FOLDERS = ("", "cifar10.2", "CIFAR-10.2", "cifar-10.2")
for _version in ("v4", "v6"):
    register_shift(NaturalShift(
        f"natural/cifar10.1-{_version}", (f"cifar10.1_{_version}_data.npy", f"cifar10.1_{_version}_labels.npy"),
        _C101_FOLDERS, read_cifar10_1,
        "https://github.com/modestyachts/CIFAR-10.1 (datasets/); put them in DIR/cifar10.1 and pass --data-dir DIR",
        f"CIFAR-10.1 {_version} (Recht et al. 2019): a new CIFAR-10 test set from the same source",
    ))
for _part in ("test", "train"):
    register_shift(NaturalShift(
        f"natural/cifar10.2-{_part}", (f"cifar102_{_part}.npz",), _C102_FOLDERS, read_cifar10_2,
        "https://github.com/modestyachts/cifar-10.2; put them in DIR/cifar10.2 and pass --data-dir DIR",
        f"CIFAR-10.2 {_part} file (Lu et al. 2020): a new CIFAR-10 test set",
    ))


def conform(ds: ImageDataset, like: ImageDataset) -> ImageDataset:
    """``ds`` with the channels and size of ``like`` (luma or repeated grey; antialiased resize)."""
    images = ds.images
    if images.shape[1] == 3 and like.channels == 1:
        weights = torch.tensor(LUMA).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(dim=1, keepdim=True).round().to(torch.uint8)
    elif images.shape[1] == 1 and like.channels == 3:
        images = images.repeat(1, 3, 1, 1)
    if tuple(images.shape[-2:]) != like.size:
        resized = F.interpolate(images.float(), size=like.size, mode="bilinear", align_corners=False, antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return ImageDataset(ds.name, ds.split, images, ds.labels, ds.classes, ds.source, dict(ds.meta))


def match_classes(ds: ImageDataset, classes: Sequence[str], where: str) -> ImageDataset:
    """Relabel a folder dataset to the model's class indices by name (case and punctuation ignored)."""
    index = {_norm(c): i for i, c in enumerate(classes)}
    bad = [c for c in ds.classes if _norm(c) not in index]
    if bad:
        raise RobustEvalError(
            f"{where}: class folder(s) {', '.join(repr(b) for b in bad)} match none of the model's classes "
            f"({', '.join(classes)}); rename them to the model's class names (case and punctuation are ignored)"
        )
    remap = torch.tensor([index[_norm(c)] for c in ds.classes])
    return ImageDataset(ds.name, ds.split, ds.images, remap[ds.labels], tuple(classes), ds.source, dict(ds.meta))


class FolderShift(ShiftSplit):
    name = "natural/folder"
    kind = "natural"
    description = "your own shifted test sets: --shift-natural PATH (one folder per class, the model's class names)"

    def skip_reason(self, env: ShiftEnv) -> str | None:
        if not env.options.natural:
            return "no folder given (--shift-natural PATH)"
        env.cache[self.name] = self._load(env)  # class-name mismatches fail here, before any model pass
        return None

    def _load(self, env: ShiftEnv) -> dict[str, ImageDataset]:
        out: dict[str, ImageDataset] = {}
        for spec in env.options.natural:
            path = spec.removeprefix("imagefolder:")
            ds = data_mod.load(f"imagefolder:{path}", "test", env.data_dir)
            ds = conform(match_classes(ds, env.dataset.classes, f"--shift-natural {path}"), env.dataset)
            name = f"natural/folder:{Path(path).expanduser().resolve().name or path}"
            while name in out:
                name += "+"
            out[name] = ds.limit(env.limit)
        return out

    def build(self, env: ShiftEnv) -> list[SplitData]:
        out: list[SplitData] = []
        for name, ds in (env.cache.get(self.name) or self._load(env)).items():
            level = Level("", {"n_examples": len(ds)}, env.predict_dataset(ds, name), ds.labels)
            out.append(SplitData(name, self.kind, env.dataset.classes, [level], extra={"path": ds.source}))
        return out


register_shift(FolderShift())
