"""Readers for the real dataset file formats, and the in-memory :class:`ImageDataset` they fill.

Each reader turns files on disk into an :class:`ImageDataset`: IDX (MNIST, Fashion-MNIST), CIFAR
python pickles (read with an unpickler that refuses everything but plain data), the Tiny-ImageNet
folder layout, generic ``<class>/<image>`` folders and scikit-learn's digits. Where to look and
what to say when nothing is found belong to :mod:`robustbench_lite.data`, which registers these
loaders; a loader that finds no files raises the error the ``missing`` argument builds (that is
``data.missing``, passed in so this module stays below ``data``).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_lite.errors import RobustEvalError

#: ``missing(dataset name, folders looked in, extra note) -> error to raise``: ``data.missing``.
MissingFiles = Callable[[str, Sequence[Path], str], Exception]


@dataclass
class ImageDataset:
    """One split of a dataset, in memory.

    Attributes:
        name: registry name (with its argument, e.g. ``imagefolder:/data/x``).
        split: ``train`` or ``test``.
        images: uint8 tensor, N x C x H x W.
        labels: int64 tensor, N.
        classes: class names, index = label.
        source: where the files came from (shown in results).
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def float_images(self, index: slice | torch.Tensor | Sequence[int] = slice(None)) -> torch.Tensor:
        """Float32 images in [0, 1] for ``index``."""
        return self.images[index].float().div_(255)

    def subset(self, index: torch.Tensor | Sequence[int] | slice) -> ImageDataset:
        """A view on some samples (class list unchanged); ``meta['indices']`` keeps original indices."""
        base = self.meta.get("indices", torch.arange(len(self)))
        return ImageDataset(self.name, self.split, self.images[index], self.labels[index], self.classes,
                            self.source, {**self.meta, "indices": base[index]})

    def limit(self, n: int | None) -> ImageDataset:
        """The first ``n`` samples (all when ``n`` is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    @property
    def indices(self) -> torch.Tensor:
        """Each sample's index in the full split: the key of per-sample randomness."""
        return self.meta.get("indices", torch.arange(len(self)))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(float images, labels, indices) batches in order."""
        idx = self.indices
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            yield self.float_images(sl), self.labels[sl], idx[sl]



# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


#: What to do about a damaged dataset file, unless its loader knows better.
GOOD_COPY = "delete it and run again (it is downloaded anew where downloads work), or replace it with a good copy"


def read_idx(path: Path, fix: str = GOOD_COPY) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the MNIST format. A damaged file is one line naming it,
    what is wrong, and ``fix`` (how to get a good copy)."""
    import zlib

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        what = "not gzip data" if "Not a gzipped file" in str(exc) else (
            "a truncated gzip stream" if isinstance(exc, EOFError) else f"a damaged gzip stream ({exc})")
        raise RobustEvalError(f"dataset file {path} is damaged: {what}; {fix}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise RobustEvalError(f"dataset file {path} is not an IDX file (bad magic number); {fix}")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise RobustEvalError(f"dataset file {path} is damaged: unknown IDX element type 0x{data[2]:02x}; {fix}")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise RobustEvalError(f"dataset file {path} is damaged: its IDX header is cut short; {fix}")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    width = np.dtype(dtypes[data[2]]).itemsize
    body = len(data) - 4 - 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64))
    if body != expected * width:
        raise RobustEvalError(f"dataset file {path} is {'truncated' if body < expected * width else 'too long'}: "
                              f"its header promises {expected} values, the file holds {body // width}; {fix}")
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    return arr.reshape(shape)


def _find_idx(dirs: Sequence[Path], stem: str) -> Path | None:
    for d in dirs:
        for suffix in (".gz", ""):
            p = d / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def idx_loader(
    name: str, subdirs: tuple[str, ...], classes: tuple[str, ...], debian: Path | None,
    torchvision_cls: str, missing: MissingFiles,
) -> Callable[..., ImageDataset]:
    """The loader of an IDX dataset: ``<root>/<subdir>/{train,t10k}-{images,labels}-idx?-ubyte[.gz]``.

    Args:
        name: registry name.
        subdirs: folders under each search root that may hold the files.
        classes: class names, index = label.
        debian: the Debian package's folder, searched before the download cache (None: none).
        torchvision_cls: the ``torchvision.datasets`` class that downloads the files.
        missing: builds the error raised when no files are found.
    """
    prefix = {"train": "train", "test": "t10k"}

    def loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
        dirs = [r / s for r in roots for s in subdirs]
        if debian is not None:
            dirs.insert(len(dirs) - len(subdirs), debian)  # before the download cache
        img_stem, lbl_stem = f"{prefix[split]}-images-idx3-ubyte", f"{prefix[split]}-labels-idx1-ubyte"
        img, lbl = _find_idx(dirs, img_stem), _find_idx(dirs, lbl_stem)
        note = ""
        if (img is None or lbl is None) and download_dir is not None:
            note = _download(torchvision_cls, download_dir, split)
            img, lbl = _find_idx(dirs, img_stem), _find_idx(dirs, lbl_stem)
        if img is None or lbl is None:
            raise missing(name, dirs, note)
        fix = (f"reinstall the Debian package dataset-{name} (apt-get install --reinstall dataset-{name})"
               if debian is not None and img.parent == debian else GOOD_COPY)
        raw_images, raw_labels = read_idx(img, fix), read_idx(lbl, fix)
        if raw_images.ndim != 3 or raw_images.dtype != np.uint8:
            raise RobustEvalError(f"dataset file {img} holds {raw_images.dtype} values of shape {raw_images.shape}, "
                                  f"not N x H x W 8-bit images; {fix}")
        if raw_labels.ndim != 1:
            raise RobustEvalError(f"dataset file {lbl} holds values of shape {raw_labels.shape}, not N labels; {fix}")
        images = torch.from_numpy(raw_images.copy()).unsqueeze(1)
        labels = torch.from_numpy(raw_labels.astype(np.int64))
        if len(images) != len(labels):
            raise RobustEvalError(f"{img} and {lbl} differ in length ({len(images)} vs {len(labels)}); {fix}")
        bad = (labels < 0) | (labels >= len(classes))
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            raise RobustEvalError(f"dataset file {lbl} is damaged: label {int(labels[first])} at position {first} "
                                  f"({int(bad.sum())} in all) is outside 0..{len(classes) - 1}; {fix}")
        return ImageDataset(name, split, images, labels, classes, str(img.parent),
                            {"files": [str(img.resolve()), str(lbl.resolve())]})

    return loader


def _download(torchvision_cls: str, root: Path, split: str) -> str:
    """Try torchvision's downloader; return a note for the error message when it fails."""
    import torchvision.datasets as tvd

    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(tvd, torchvision_cls)(str(root), train=(split == "train"), download=True)
        return ""
    except Exception as exc:  # noqa: BLE001 - offline, blocked, checksum: all mean "not available"
        return f" Download with torchvision.datasets.{torchvision_cls} failed ({type(exc).__name__})."


# ---------------------------------------------------------------------------------------------
# CIFAR python pickles


def cifar_loader(name: str, folder: str, tv_cls: str, files: dict[str, list[str]], label_key: str,
                 meta_file: str, names_key: str, missing: MissingFiles) -> Callable[..., ImageDataset]:
    """The loader of a CIFAR python-pickle dataset in ``<root>/<folder>``.

    Args:
        name: registry name.
        folder: the folder under each search root (``cifar-10-batches-py``).
        tv_cls: the ``torchvision.datasets`` class that downloads the files.
        files: the batch files of each split.
        label_key, meta_file, names_key: where the labels and the class names are.
        missing: builds the error raised when no files are found.
    """

    def loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
        dirs = [r / folder for r in roots]
        found = next((d for d in dirs if all((d / f).is_file() for f in files[split])), None)
        note = ""
        if found is None and download_dir is not None:
            note = _download(tv_cls, download_dir, split)
            found = next((d for d in dirs if all((d / f).is_file() for f in files[split])), None)
        if found is None:
            raise missing(name, dirs, note)
        images, labels = [], []
        for f in files[split]:
            entry = _unpickle(found / f)
            try:
                data = np.asarray(entry["data"], dtype=np.uint8)
                images.append(data.reshape(-1, 3, 32, 32))
                labels.extend(int(v) for v in entry[label_key])
            except (KeyError, ValueError, TypeError) as exc:
                raise RobustEvalError(f"{found / f} is damaged: no usable 'data' and '{label_key}' "
                                      f"({type(exc).__name__}: {exc}); {GOOD_COPY}") from None
        meta = _unpickle(found / meta_file) if (found / meta_file).is_file() else {}
        classes = tuple(meta.get(names_key, [str(i) for i in range(max(labels) + 1)]))
        outside = [v for v in labels if not 0 <= v < len(classes)]
        if outside:
            raise RobustEvalError(f"{found} is damaged: {len(outside)} label(s) outside 0..{len(classes) - 1} "
                                  f"(first {outside[0]}); {GOOD_COPY}")
        return ImageDataset(name, split, torch.from_numpy(np.concatenate(images)),
                            torch.tensor(labels, dtype=torch.int64), classes, str(found),
                            {"files": [str((found / f).resolve()) for f in files[split]]})

    return loader


class _PlainUnpickler(pickle.Unpickler):
    """CIFAR batches hold only dicts, lists, bytes and numbers (and numpy arrays in some copies)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               # protocol-2 pickles carry raw bytes as _codecs.encode(str, 'latin1')
               ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR batch as a dict with str keys (the files were pickled by Python 2: bytes keys)."""
    try:
        with open(path, "rb") as f:
            raw = _PlainUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, IndexError, TypeError, KeyError,
            OSError) as exc:
        raise RobustEvalError(f"{path} is not a CIFAR python batch file ({type(exc).__name__}: {exc}); "
                              f"{GOOD_COPY}") from None
    if not isinstance(raw, dict):
        raise RobustEvalError(f"{path} is not a CIFAR python batch file (not a dict); {GOOD_COPY}")
    out = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    for key in ("label_names", "fine_label_names", "coarse_label_names"):
        if key in out:
            out[key] = [n.decode() if isinstance(n, bytes) else n for n in out[key]]
    return out


# ---------------------------------------------------------------------------------------------
# Folders: Tiny-ImageNet and generic image folders


IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _read_images(paths: Sequence[Path], size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    from PIL import Image

    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                if size is None:
                    size = (im.height, im.width)
                if (im.height, im.width) != size:
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError, truncated data
            raise RobustEvalError(f"cannot read image {p} ({exc}); remove it from the folder or replace it with "
                                  "a good copy") from None
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def tiny_imagenet_loader(missing: MissingFiles) -> Callable[..., ImageDataset]:
    """The loader of Tiny-ImageNet (``<root>/tiny-imagenet-200``); ``missing`` builds the not-found error."""

    def loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
        dirs = [r / "tiny-imagenet-200" for r in roots]
        root = next((d for d in dirs if (d / "wnids.txt").is_file()), None)
        if root is None:
            raise missing("tiny-imagenet", dirs, " torchvision has no downloader for it.")
        return _read_tiny_imagenet(root, split)

    return loader


def _read_tiny_imagenet(root: Path, split: str) -> ImageDataset:
    """One split of the Tiny-ImageNet folder at ``root``, class names from ``words.txt`` when present."""
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    words = {}
    if (root / "words.txt").is_file():
        for line in (root / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    if split == "train":
        for w in wnids:
            for p in sorted((root / "train" / w / "images").glob("*")):
                if p.suffix.lower() in IMAGE_EXTS:
                    paths.append(p)
                    labels.append(index[w])
    else:  # the labelled validation set is the test split, as everyone evaluates on it
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise RobustEvalError(f"tiny-imagenet: {ann} is missing; the val split needs its annotations file")
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in index:
                raise RobustEvalError(f"tiny-imagenet: {ann} names class {parts[1]} missing from wnids.txt")
            paths.append(root / "val" / "images" / parts[0])
            labels.append(index[parts[1]])
    if not paths:
        raise RobustEvalError(f"tiny-imagenet: no {split} images under {root}")
    images = _read_images(paths, (64, 64), "RGB")
    classes = tuple(words.get(w, w) for w in wnids)
    return ImageDataset("tiny-imagenet", split, images, torch.tensor(labels), classes, str(root), {"wnids": wnids})


def imagefolder_loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
    """``imagefolder:PATH``: ``PATH/<class>/<image>``, or ``PATH/{train,test|val}/<class>/<image>`` with splits."""
    assert arg is not None  # parse_name guarantees it
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise RobustEvalError(f"imagefolder: {root} is not a directory; expected {root}/<class>/<image files>")
    # A folder with train/ and test/ (or val/) subfolders has splits; otherwise it is all test data.
    split_dir = {"train": ["train"], "test": ["test", "val"]}[split]
    base = next((root / s for s in split_dir if (root / s).is_dir()), None)
    if base is None:
        if split == "train":
            raise RobustEvalError(f"imagefolder: {root} has no train/ subfolder; it can only be evaluated")
        base = root
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not classes:
        raise RobustEvalError(f"imagefolder: no class folders in {base}; expected {base}/<class>/<image files>")
    paths, labels = [], []
    for i, c in enumerate(classes):
        for p in sorted((base / c).rglob("*")):
            if p.suffix.lower() in IMAGE_EXTS:
                paths.append(p)
                labels.append(i)
    if not paths:
        raise RobustEvalError(f"imagefolder: no images ({', '.join(sorted(IMAGE_EXTS))}) under {base}")
    images = _read_images(paths, None, _first_mode(paths[0]))
    return ImageDataset(f"imagefolder:{arg}", split, images, torch.tensor(labels), tuple(classes), str(base))


def unlabelled_folder(root: Path, size: tuple[int, int] | None = None, mode: str | None = None) -> torch.Tensor:
    """The images of a folder without class subfolders (``PATH/<image>``, sorted by name) as uint8 NCHW.

    Args:
        size: (height, width) every image is resized to (default: the first image's).
        mode: ``L`` or ``RGB`` (default: the first image's, as ``imagefolder:`` reads it).
    """
    if not root.is_dir():
        raise RobustEvalError(f"{root} is not a directory of images")
    paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not paths:
        raise RobustEvalError(f"{root} holds no images ({', '.join(sorted(IMAGE_EXTS))}); pass a folder of images")
    return _read_images(paths, size, mode or _first_mode(paths[0]))


def _first_mode(path: Path) -> str:
    """``L`` for a grey first image, else ``RGB``: the mode a folder's images are all read in."""
    from PIL import Image

    try:
        with Image.open(path) as first:
            return "L" if first.mode in ("L", "1", "I;16", "I") else "RGB"
    except (OSError, ValueError, SyntaxError) as exc:
        raise RobustEvalError(f"cannot read image {path} ({exc}); remove it from the folder or replace it with "
                              "a good copy") from None


# ---------------------------------------------------------------------------------------------
# scikit-learn digits: 1,797 real 8x8 images, shipped with scikit-learn (fastest tests)


DIGITS_TEST_FRACTION = 0.25


def digits_loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
    """scikit-learn's digits, 16 grey levels scaled to uint8, split 75/25 stratified with seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    idx_train, idx_test = train_test_split(
        np.arange(len(d.target)), test_size=DIGITS_TEST_FRACTION, random_state=0, stratify=d.target
    )
    idx = np.sort(idx_train if split == "train" else idx_test)
    labels = torch.from_numpy(d.target[idx].astype(np.int64))
    return ImageDataset("digits", split, torch.from_numpy(images[idx]), labels, tuple(str(i) for i in range(10)),
                        "sklearn.datasets.load_digits")

