"""Natural shift: new test sets in their published formats, and the user's own folders.

``natural/cifar10.1-v4``, ``-v6`` (Recht et al. 2019, CIFAR-10.1 ``.npy`` files) and
``natural/cifar10.2-test``, ``-train`` (Lu et al. 2020, CIFAR-10.2 ``.npz`` files) for CIFAR-10
models; ``natural/folder`` scores image folders (``--shift-natural PATH``) whose class names
match the model's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_lite import data as data_mod
from robustbench_lite.data import CIFAR10_CLASSES, ImageDataset
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.pixels import to_gray
from robustbench_lite.shift.base import Level, ShiftEnv, ShiftSplit, SplitData, register_shift

# ---------------------------------------------------------------------------------------------
# Published test sets


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
        level = Level("", {"n_examples": len(ds)}, env.predict_dataset(ds, self.name), ds.labels, indices=ds.indices)
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


# ---------------------------------------------------------------------------------------------
# The user's own folders


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def conform(ds: ImageDataset, like: ImageDataset) -> ImageDataset:
    """``ds`` with the channels and size of ``like`` (luma or repeated grey; antialiased resize)."""
    images = ds.images
    if images.shape[1] == 3 and like.channels == 1:
        images = to_gray(images.float()).round().to(torch.uint8)
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
            level = Level("", {"n_examples": len(ds)}, env.predict_dataset(ds, name), ds.labels, indices=ds.indices)
            out.append(SplitData(name, self.kind, env.dataset.classes, [level], extra={"path": ds.source}))
        return out


register_shift(FolderShift())
