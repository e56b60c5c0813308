"""Readers of published corrupted test sets: CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C.

Two layouts (Hendrycks & Dietterich 2019 publish both)::

    <dir>/<corruption>.npy     uint8 N x H x W x C (or N x H x W), the 5 severities stacked 1..5
    <dir>/labels.npy           the labels, once per severity (5N) or once (N)

    <dir>/<corruption>/<severity>/<class>/*.JPEG     one folder per severity and class

:class:`~corruptions.cache.CorruptionCache` writes the first layout, so its directories read
back here too. Images come out as float NCHW in [0,1], read only when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_lite.errors import RobustEvalError

#: The severities of a -C set, in the order a ``<corruption>.npy`` stacks them.
SEVERITIES = (1, 2, 3, 4, 5)
#: The labels file of the ``.npy`` layout.
LABELS = "labels.npy"


def to_nchw_float(array: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x C (or N x H x W grey) images as float NCHW in [0,1]."""
    if array.ndim == 3:  # N x H x W grey
        array = array[..., None]
    return torch.from_numpy(np.array(array)).permute(0, 3, 1, 2).float().div_(255)


_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
_C_LAYOUTS = (
    "'<dir>/labels.npy' with '<dir>/<corruption>.npy' files (CIFAR-10-C / CIFAR-100-C layout) or "
    "'<dir>/<corruption>/<1..5>/<class>/*.JPEG' (Tiny-ImageNet-C layout)"
)


class CorruptedImages(Mapping[tuple[str, int], torch.Tensor]):
    """Lazy view of a -C dataset: ``images[(corruption, severity)]`` -> float NCHW in [0,1].

    Nothing is decoded until asked for; ``.npy`` files are memory-mapped, so
    :meth:`get_images` with ``indices`` reads only those images.
    """

    def __init__(self, root: Path, layout: str, corruptions: dict[str, Any], severities: tuple[int, ...],
                 n: int, files: list[str] | None = None) -> None:
        self.root = root
        self.layout = layout
        self._sources = corruptions
        self.corruptions = tuple(corruptions)
        self.severities = severities
        self.n = n
        self._files = files  # folder layout: relative image paths, the same in every severity folder

    def __getitem__(self, key: tuple[str, int]) -> torch.Tensor:
        name, severity = key
        return self.get_images(name, severity)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return ((name, s) for name in self.corruptions for s in self.severities)

    def __len__(self) -> int:
        return len(self.corruptions) * len(self.severities)

    def __contains__(self, key: object) -> bool:
        return (isinstance(key, tuple) and len(key) == 2
                and key[0] in self._sources and key[1] in self.severities)

    def get_images(
        self, name: str, severity: int, indices: slice | Iterable[int] | None = None
    ) -> torch.Tensor:
        """Images of one corruption and severity; ``indices`` picks a subset (default: all N)."""
        if name not in self._sources:
            raise RobustEvalError(
                f"corruption '{name}' is not in {self.root}; available: {', '.join(self.corruptions)}"
            )
        if severity not in self.severities:
            raise RobustEvalError(f"severity {severity!r} is not in {self.root}; have {self.severities}")
        select: np.ndarray | None = None
        if isinstance(indices, slice):
            select = np.arange(self.n)[indices]
        elif indices is not None:
            select = np.asarray(list(indices), dtype=np.int64)
            if select.size and (select.min() < 0 or select.max() >= self.n):
                raise RobustEvalError(
                    f"image indices must be in [0, {self.n}), got {select.min()}..{select.max()}"
                )
        if self.layout == "npy":
            block = self._sources[name][(severity - 1) * self.n:severity * self.n]
            return to_nchw_float(block[select] if select is not None else np.asarray(block))
        return self._read_folder(name, severity, np.arange(self.n) if select is None else select)

    def _read_folder(self, name: str, severity: int, select: np.ndarray) -> torch.Tensor:
        from PIL import Image

        folder = self._sources[name] / str(severity)
        assert self._files is not None
        files = _image_files(folder)
        if files != self._files:
            raise RobustEvalError(
                f"{folder} does not hold the same images as the other folders ({len(files)} vs "
                f"{len(self._files)} files, or other names); the -C dataset is incomplete or mixed"
            )
        arrays = []
        for i in select:
            with Image.open(folder / files[i]) as image:
                arrays.append(np.asarray(image.convert("RGB")))
        if not arrays:
            return torch.empty(0, 3, 0, 0)
        if len({a.shape for a in arrays}) != 1:
            raise RobustEvalError(f"images in {folder} differ in size; resize them to one size first")
        return to_nchw_float(np.stack(arrays))


def _image_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*")
                  if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def load_c_dataset(path: str | os.PathLike[str]) -> tuple[CorruptedImages, torch.Tensor]:
    """Open a published -C dataset lazily.

    Reads CIFAR-10-C / CIFAR-100-C (``<name>.npy``: 5N x 32 x 32 x 3 uint8 with severities 1..5
    stacked, ``labels.npy`` alongside; also the directories
    :class:`~corruptions.cache.CorruptionCache` writes) and Tiny-ImageNet-C
    (``<root>/<corruption>/<severity>/<wnid>/*.JPEG``; classes are the sorted wnids, as
    torchvision's ``ImageFolder`` numbers them).

    Returns:
        (images, labels): ``images[(corruption, severity)]`` loads float NCHW images in [0,1] on
        demand; ``labels`` are the N labels of each (corruption, severity) block, int64.

    Raises:
        RobustEvalError: the directory is missing or is not in either layout (the message says what
            was looked for) or its files are malformed.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RobustEvalError(f"no -C dataset at '{root}': directory not found; expected {_C_LAYOUTS}")
    if (root / LABELS).is_file():
        return _load_npy_layout(root)
    corruptions = {
        d.name: d for d in sorted(root.iterdir())
        if d.is_dir() and any((d / str(s)).is_dir() for s in SEVERITIES)
    }
    if corruptions:
        return _load_folder_layout(root, corruptions)
    raise RobustEvalError(f"'{root}' is not a -C dataset: found neither {_C_LAYOUTS}")


def _load_npy_layout(root: Path) -> tuple[CorruptedImages, torch.Tensor]:
    try:
        labels = np.load(root / LABELS, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RobustEvalError(f"cannot read {root / LABELS}: {exc}") from exc
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise RobustEvalError(
            f"{root / LABELS} must hold a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    arrays: dict[str, np.ndarray] = {}
    for file in sorted(root.glob("*.npy")):
        if file.name == LABELS:
            continue
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RobustEvalError(f"cannot read {file}: {exc} (truncated or not a .npy file?)") from exc
        channels_ok = array.ndim == 3 or (array.ndim == 4 and array.shape[-1] in (1, 3))
        if array.dtype != np.uint8 or not channels_ok:
            raise RobustEvalError(
                f"{file} must hold uint8 images N x H x W x 3 (or x 1), got {array.dtype} {array.shape}"
            )
        arrays[file.stem] = array
    if not arrays:
        raise RobustEvalError(f"'{root}' has {LABELS} but no <corruption>.npy files; expected {_C_LAYOUTS}")
    lengths = {a.shape[0] for a in arrays.values()}
    shapes = {a.shape[1:3] for a in arrays.values()}
    if len(lengths) != 1 or len(shapes) != 1:
        sizes = ", ".join(f"{k}: {a.shape}" for k, a in arrays.items())
        raise RobustEvalError(
            f"the .npy files in '{root}' differ in shape ({sizes}); each must be 5N x H x W x C"
        )
    (total,) = lengths
    if total % len(SEVERITIES):
        raise RobustEvalError(f"{total} images per file in '{root}' is not 5 severities x N")
    n = total // len(SEVERITIES)
    if labels.shape[0] == total:
        blocks = labels.reshape(len(SEVERITIES), n)
        if not (blocks == blocks[0]).all():
            raise RobustEvalError(f"{root / LABELS} does not repeat the same N labels for each severity")
        labels = blocks[0]
    elif labels.shape[0] != n:
        raise RobustEvalError(
            f"{root / LABELS} has {labels.shape[0]} labels; expected {total} (5 x {n}) or {n}"
        )
    images = CorruptedImages(root, "npy", arrays, SEVERITIES, n)
    return images, torch.from_numpy(np.array(labels, dtype=np.int64))


def _load_folder_layout(root: Path, corruptions: dict[str, Path]) -> tuple[CorruptedImages, torch.Tensor]:
    first = next(iter(corruptions.values()))
    severities = tuple(s for s in SEVERITIES if (first / str(s)).is_dir())
    for folder in corruptions.values():
        missing = [s for s in severities if not (folder / str(s)).is_dir()]
        if missing:
            raise RobustEvalError(f"'{folder}' lacks severity folders {missing}; expected {_C_LAYOUTS}")
    reference = first / str(severities[0])
    files = _image_files(reference)
    if not files:
        raise RobustEvalError(f"no images (*.JPEG, *.jpg, *.png) in class folders under '{reference}'")
    classes = sorted({f.split("/", 1)[0] for f in files})
    labels = torch.tensor([classes.index(f.split("/", 1)[0]) for f in files], dtype=torch.int64)
    images = CorruptedImages(root, "folder", corruptions, severities, len(files), files)
    return images, labels
