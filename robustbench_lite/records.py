"""Per-image records: for every image and condition, whether the model was right (and what it said).

A run's accuracies are fractions of images; its records keep the images themselves, so that
intervals, paired comparisons and re-analysis need no second pass of the model:

* an **image set** is a list of dataset indices with their labels (``test``: the run's test
  split; a shift suite's natural or subpopulation set has its own);
* a **condition** is one accuracy of the results JSON, named by its gate path
  (``clean.accuracy``, ``corruptions.accuracy.fog.3``, ``adversarial.robust_accuracy.pgd.Linf[0.1]``,
  ``shift.splits.covariate/rotate.levels.3``): per image of its set, right or wrong, the predicted
  class where there is one, and for attacks the smallest budget that broke the image and which
  attack did. A condition may weight its images (a label-shift draw resamples the test set).

On disk (``--records PATH``) the records are one ``.npz`` file (numpy arrays only, no pickle):
``meta`` holds a UTF-8 JSON header (format version, image sets, conditions in order) and each
array is stored under a short key (``s0_indices``, ``c12_correct``...). :func:`load` reads it back
in one call; :meth:`Records.accuracy` recomputes any accuracy of the JSON from it.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustbench_lite import statistics
from robustbench_lite.errors import RobustEvalError

#: Version of the file layout; a newer file is refused with a clear message.
FORMAT_VERSION = 1
#: What ``--records`` files end in.
SUFFIX = ".npz"
#: The run's own test split.
TEST = "test"
_ARRAYS = ("correct", "predicted", "weights", "min_eps", "broken_by")


@dataclass(frozen=True)
class ImageSet:
    """Images a condition is scored on: dataset indices and labels, aligned."""

    indices: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def same_as(self, other: ImageSet) -> bool:
        return np.array_equal(self.indices, other.indices) and np.array_equal(self.labels, other.labels)


@dataclass(frozen=True)
class Condition:
    """One accuracy, image by image.

    Attributes:
        path: the gate path of the accuracy it gives.
        images: the name of its image set.
        correct: (n,) bool.
        predicted: (n,) predicted class, or None (attacks record the budget instead).
        weights: (n,) non-negative image weights, or None (every image once).
        min_eps: (n,) smallest budget that fooled the image, NaN if none did, 0 if misclassified clean.
        broken_by: (n,) the ensemble component that broke the image ("" if none).
    """

    path: str
    images: str
    correct: np.ndarray
    predicted: np.ndarray | None = None
    weights: np.ndarray | None = None
    min_eps: np.ndarray | None = None
    broken_by: np.ndarray | None = None

    @property
    def suite(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def subset(self) -> np.ndarray | None:
        """The images an unweighted accuracy counts (all, or those of 0/1 weight 1); None when truly weighted."""
        if self.weights is None:
            return np.ones(self.correct.shape, dtype=bool)
        return self.weights == 1 if np.all((self.weights == 0) | (self.weights == 1)) else None

    @property
    def accuracy(self) -> float:
        if self.correct.size == 0:
            return math.nan
        if self.weights is None:
            return float(self.correct.mean())
        total = float(self.weights.sum())
        return float((self.weights * self.correct).sum() / total) if total > 0 else math.nan

    def interval(self, resampler: statistics.Resampler | None = None,
                 level: float = statistics.LEVEL) -> tuple[float, float]:
        """Wilson for an unweighted accuracy (or one on a subset: 0/1 weights); else the bootstrap interval."""
        subset = self.subset
        if subset is not None:
            return statistics.wilson(int(self.correct[subset].sum()), int(subset.sum()), level)
        resampler = resampler or statistics.Resampler()
        return statistics.percentile_interval(resampler.accuracies(self.images, self.correct, self.weights), level)


@dataclass
class Records:
    """A run's per-image outcomes: image sets and the conditions scored on them."""

    image_sets: dict[str, ImageSet] = field(default_factory=dict)
    conditions: dict[str, Condition] = field(default_factory=dict)

    # -- building ----------------------------------------------------------------------------------

    def add_images(self, name: str, indices: Any, labels: Any) -> None:
        """Declare an image set; declaring the same one again is fine, a different one is an error."""
        new = ImageSet(_array(indices, np.int64), _array(labels, np.int64))
        if new.indices.shape != new.labels.shape or new.indices.ndim != 1:
            raise ValueError(f"image set {name!r}: indices {new.indices.shape} and labels {new.labels.shape} "
                             "must be equal-length vectors")
        old = self.image_sets.get(name)
        if old is not None and not old.same_as(new):
            raise ValueError(f"image set {name!r} was already declared with other images")
        self.image_sets[name] = new

    def add(self, path: str, *, correct: Any = None, predicted: Any = None, images: str = TEST,
            weights: Any = None, min_eps: Any = None, broken_by: Any = None) -> Condition:
        """Record one condition. ``correct`` may be left out when ``predicted`` is given."""
        if images not in self.image_sets:
            raise ValueError(f"condition {path!r}: declare image set {images!r} first (add_images)")
        labels = self.image_sets[images].labels
        pred = None if predicted is None else _array(predicted, np.int64)
        if correct is None:
            if pred is None:
                raise ValueError(f"condition {path!r}: pass correct or predicted")
            correct = pred == labels
        cond = Condition(
            path=path, images=images, correct=_array(correct, np.bool_), predicted=_small_ints(pred),
            weights=None if weights is None else _array(weights, np.float32),
            min_eps=None if min_eps is None else _array(min_eps, np.float32),
            broken_by=None if broken_by is None else np.asarray(
                ["" if b is None else str(b) for b in broken_by], dtype=np.str_),
        )
        for name in _ARRAYS:
            value = getattr(cond, name)
            if value is not None and value.shape != labels.shape:
                raise ValueError(f"condition {path!r}: {name} has shape {value.shape}, image set {images!r} "
                                 f"has {labels.shape[0]} images")
        self.conditions[path] = cond
        return cond

    def extend(self, other: Records) -> None:
        for name, s in other.image_sets.items():
            self.add_images(name, s.indices, s.labels)
        self.conditions.update(other.conditions)

    # -- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.conditions)

    def __iter__(self) -> Iterator[Condition]:
        return iter(self.conditions.values())

    def __contains__(self, path: object) -> bool:
        return path in self.conditions

    def __getitem__(self, path: str) -> Condition:
        try:
            return self.conditions[path]
        except KeyError:
            raise KeyError(f"no condition {path!r} in the records; there are {len(self.conditions)} "
                           f"(e.g. {', '.join(list(self.conditions)[:3])})") from None

    def accuracy(self, path: str) -> float:
        """The accuracy of one condition, recomputed from the images."""
        return self[path].accuracy

    def suite(self, name: str) -> list[Condition]:
        return [c for c in self.conditions.values() if c.suite == name]

    def replicates(self, resampler: statistics.Resampler, paths: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Bootstrap replicates (resampler.resamples,) of each condition's accuracy, paired per image set."""
        chosen = [self[p] for p in (paths if paths is not None else self.conditions)]
        out: dict[str, np.ndarray] = {}
        groups: dict[tuple[str, bool], list[Condition]] = {}
        for c in chosen:
            groups.setdefault((c.images, c.weights is None), []).append(c)
        for (images, plain), conds in groups.items():
            correct = np.stack([c.correct for c in conds], axis=1)
            weights = None if plain else np.stack([c.weights for c in conds], axis=1)  # type: ignore[misc]
            reps = resampler.accuracies(images, correct, weights)
            for j, c in enumerate(conds):
                out[c.path] = reps[:, j]
        return out

    # -- files -------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        sets = []
        for i, (name, s) in enumerate(self.image_sets.items()):
            sets.append({"name": name, "n": len(s)})
            arrays[f"s{i}_indices"], arrays[f"s{i}_labels"] = s.indices, s.labels
        conds = []
        for i, c in enumerate(self.conditions.values()):
            stored = [name for name in _ARRAYS if getattr(c, name) is not None]
            conds.append({"path": c.path, "images": c.images, "arrays": stored})
            for name in stored:
                arrays[f"c{i}_{name}"] = getattr(c, name)
        meta = {"format": "robust-eval records", "version": FORMAT_VERSION, "image_sets": sets, "conditions": conds}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the records atomically (a ``.npz`` file); returns the path."""
        from robustbench_lite.files import atomic_write

        data = self.to_bytes()
        return atomic_write(path, lambda f: f.write(data), binary=True)


def check_path(path: str | Path, flag: str = "--records") -> Path:
    """A records path a run may write: ending in .npz, in a folder that exists or can be made."""
    path = Path(path)
    if path.suffix != SUFFIX:
        raise RobustEvalError(f"{flag} {path}: records are a numpy .npz file; pass a path ending in {SUFFIX}")
    if path.is_dir():
        raise RobustEvalError(f"{flag} {path} is a folder; pass a file path ending in {SUFFIX}")
    folder = path.absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # what the run would create it under
    if not existing.is_dir():
        raise RobustEvalError(f"{flag} {path}: its folder cannot be created, {existing} is a file; "
                              "pass a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RobustEvalError(f"{flag} {path}: {existing} is not writable; pass a path in a folder you can write")
    return path


def load(path: str | Path) -> Records:
    """Read a records file written by :meth:`Records.save` (no pickled objects are loaded)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if meta.get("format") != "robust-eval records":
                raise RobustEvalError(f"{path} is not a robust-eval records file (no records header)")
            if int(meta.get("version", 0)) > FORMAT_VERSION:
                raise RobustEvalError(f"{path} has records version {meta['version']}, newer than {FORMAT_VERSION}; "
                                      "upgrade robustbench-lite")
            out = Records()
            for i, s in enumerate(meta["image_sets"]):
                out.add_images(s["name"], z[f"s{i}_indices"], z[f"s{i}_labels"])
            for i, c in enumerate(meta["conditions"]):
                arrays = {name: z[f"c{i}_{name}"] for name in c["arrays"]}
                out.conditions[c["path"]] = Condition(path=c["path"], images=c["images"], **arrays)
    except FileNotFoundError:
        raise RobustEvalError(f"records file {path} does not exist; write one with --records {path}") from None
    except RobustEvalError:
        raise
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise RobustEvalError(f"{path} is not a readable records file ({type(exc).__name__}: {exc})") from None
    return out


def paired(first: Records, second: Records, path: str) -> bool:
    """Whether ``path`` was scored on the same images in both records (a paired comparison is valid)."""
    if path not in first or path not in second:
        return False
    a, b = first[path], second[path]
    sa, sb = first.image_sets.get(a.images), second.image_sets.get(b.images)
    if sa is None or sb is None or not sa.same_as(sb):
        return False
    wa, wb = a.weights, b.weights
    return (wa is None) == (wb is None) and (wa is None or np.array_equal(wa, wb))


def load_records_for(results: Mapping[str, Any], json_path: str | Path | None = None) -> tuple[Records | None, str]:
    """The records a results JSON points to (its ``records`` block), checked against its sha256.

    The file is looked for at the recorded path, then (a relative path, or files moved together)
    beside the results JSON: at the path relative to its folder, and by name in its folder.

    Args:
        results: a results JSON dict.
        json_path: where that JSON was read from (None: a history run or an in-memory dict).

    Returns:
        (the records, "") or (None, why not: no records block, file missing, changed since the run...).
    """
    block = results.get("records")
    if not isinstance(block, Mapping) or not isinstance(block.get("path"), str):
        return None, "the results hold no per-image records (run with --records PATH)"
    recorded = Path(block["path"])
    candidates = [recorded]
    if json_path is not None:
        folder = Path(json_path).parent
        candidates += [folder / recorded, folder / recorded.name]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        return None, f"the records file {recorded} is missing"
    from robustbench_lite.files import sha256_file

    expected = block.get("sha256")
    if not isinstance(expected, str):
        return None, f"the results record no sha256 for {recorded}, so the file cannot be checked"
    if sha256_file(found) != expected:
        return None, f"the records file {found} changed since the run (its sha256 differs from the results')"
    try:
        return load(found), ""
    except RobustEvalError as exc:
        return None, str(exc)


def _array(value: Any, dtype: type) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: records stay numpy (and the file pickle-free)
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype=dtype))


def _small_ints(pred: np.ndarray | None) -> np.ndarray | None:
    """Predicted classes in the smallest integer type that holds them (int16 below 32,768 classes)."""
    if pred is None:
        return None
    return pred.astype(np.int16) if pred.size == 0 or (pred.min() >= 0 and pred.max() < 2**15) else pred
