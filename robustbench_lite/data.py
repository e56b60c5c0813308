"""Dataset registry: real datasets read from their real file formats, as [0,1] NCHW tensors.

Images are held as uint8 NCHW tensors (compact: Tiny-ImageNet is 1.2 GB as uint8, 5 GB as
float) and turned into float32 in [0, 1] per batch. Grey datasets stay one channel; the model
wrapper repeats channels when the network needs three.

File lookup order for every dataset: ``--data-dir``, ``$ROBUST_EVAL_DATA``, the Debian package
location (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``), then a download into the data
cache with torchvision's own loaders when the network allows (``ROBUST_EVAL_OFFLINE=1`` turns
downloads off).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.base import check_norm
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import Registry, suggest

SPLITS = ("train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cache_home() -> Path:
    """``$ROBUST_EVAL_HOME``, else ``$XDG_CACHE_HOME/robustbench_lite``, else ``~/.cache/robustbench_lite``."""
    if os.environ.get("ROBUST_EVAL_HOME"):
        return Path(os.environ["ROBUST_EVAL_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "robustbench_lite"


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


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: static facts and a loader.

    Attributes:
        name: registry name.
        loader: ``loader(split, roots, download_dir, arg) -> ImageDataset``.
        classes: class names when fixed (None for folder datasets).
        channels, size: native image format.
        files: file names looked for (for error messages).
        get_command: how a user gets the files.
        takes_arg: the name is used as ``name:ARG`` (e.g. ``imagefolder:PATH``).
        default_eps: the conventional attack budget per threat model, ``{"Linf": ..., "L2": ...}``
            in pixel units of [0, 1] images; empty when there is no convention (see
            :func:`default_eps`).
    """

    name: str
    loader: Callable[..., ImageDataset]
    classes: tuple[str, ...] | None
    channels: int | None
    size: tuple[int, int] | None
    files: tuple[str, ...]
    get_command: str
    description: str
    takes_arg: bool = False
    default_eps: Mapping[str, float] = field(default_factory=dict)

    @property
    def usage(self) -> str:
        """The name as written on the command line: ``imagefolder:PATH`` for a dataset that takes an argument."""
        return f"{self.name}:PATH" if self.takes_arg else self.name


DATASETS: Registry[DatasetSpec] = Registry("dataset", "robust-eval list datasets")

#: Derived datasets named ``base:view`` for datasets that take no argument, e.g.
#: ``fashion-mnist:subpop-source``: ``view(loaded split) -> dataset``. The modules that define
#: views register them here when imported (``robustbench_lite.shift``: the ``subpop-*`` views);
#: this module never imports them, so an entry point that takes such names imports them first.
VIEWS: Registry[Callable[[ImageDataset], ImageDataset]] = Registry("dataset view", "robust-eval list datasets")


def parse_name(name: str) -> tuple[str, str | None]:
    """``imagefolder:/x`` -> (``imagefolder``, ``/x``); plain names -> (name, None).

    A view of a plain dataset (``fashion-mnist:subpop-source``) -> (``fashion-mnist``, ``subpop-source``).
    """
    base, sep, arg = name.partition(":")
    spec = DATASETS.entry(base)
    if spec.takes_arg and not arg:
        raise RobustEvalError(f"dataset '{base}' needs a path: use --dataset {base}:PATH")
    if not spec.takes_arg and sep:
        if name not in VIEWS:
            views = VIEWS.list(f"{base}:*")
            also = f" or one of its views: {', '.join(views)}" if views else ""
            raise RobustEvalError(f"dataset '{base}' takes no argument, got '{name}'; use --dataset {base}{also}")
    return base, arg or None


def search_roots(data_dir: str | Path | None = None) -> list[Path]:
    """The lookup order: --data-dir, $ROBUST_EVAL_DATA, the data cache (where downloads go)."""
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("ROBUST_EVAL_DATA"):
        roots.append(Path(os.environ["ROBUST_EVAL_DATA"]))
    roots.append(cache_home() / "data")
    return roots


def load(
    name: str, split: str = "test", data_dir: str | Path | None = None, download: bool = True
) -> ImageDataset:
    """Load one split of a registered dataset.

    Args:
        name: registry name, ``name:ARG`` for datasets that take one.
        split: ``train`` or ``test``.
        data_dir: searched first (``--data-dir``).
        download: allow torchvision's downloader as the last resort.
    """
    if split not in SPLITS:
        raise RobustEvalError(f"unknown split '{split}'; valid splits: {', '.join(SPLITS)}")
    base, arg = parse_name(name)
    spec = DATASETS.entry(base)
    roots = search_roots(data_dir)
    if os.environ.get("ROBUST_EVAL_OFFLINE", "") not in ("", "0"):
        download = False
    download_dir = cache_home() / "data" if download else None
    if arg is not None and not spec.takes_arg:
        return VIEWS.entry(name)(spec.loader(split=split, roots=roots, download_dir=download_dir, arg=None))
    return spec.loader(split=split, roots=roots, download_dir=download_dir, arg=arg)


def missing(spec_name: str, looked: Sequence[Path], extra: str = "") -> RobustEvalError:
    spec = DATASETS.entry(spec_name)
    where = ", ".join(str(p) for p in looked) or "(nowhere)"
    return RobustEvalError(
        f"{spec_name}: files not found; looked for {', '.join(spec.files)} in {where}.{extra} "
        f"Get them with: {spec.get_command}"
    )


def default_eps_table() -> dict[str, dict[str, float]]:
    """``{dataset: {"Linf": eps, "L2": eps}}`` for the registered datasets that have a default budget."""
    return {name: dict(spec.default_eps) for name, spec in DATASETS.items() if spec.default_eps}


def default_eps(dataset: str, norm: str = "Linf") -> float:
    """The conventional attack budget for a dataset and threat model, in pixel units.

    Args:
        dataset: dataset registry name; the part after ':' is ignored, so a view has its base
            dataset's budget (``fashion-mnist:subpop-source``) and ``imagefolder:/x`` has none.
        norm: ``"Linf"`` or ``"L2"`` (aliases such as ``"linf"`` are accepted).

    Example:
        >>> default_eps("cifar10", "Linf")
        0.03137254901960784
    """
    norm = check_norm(norm)
    table = default_eps_table()
    base = dataset.split(":", 1)[0] if isinstance(dataset, str) else dataset
    if base not in table:
        raise RobustEvalError(
            f"no default eps for dataset {dataset!r}.{suggest(str(base), table)} "
            f"Datasets with defaults: {', '.join(table)}; pass the budget explicitly, e.g. --eps 8/255"
        )
    return table[base][norm]


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the MNIST format."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise RobustEvalError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise RobustEvalError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise RobustEvalError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {arr.size}")
    return arr.reshape(shape)


def _find_idx(dirs: Sequence[Path], stem: str) -> Path | None:
    for d in dirs:
        for suffix in (".gz", ""):
            p = d / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _idx_loader(
    name: str, subdirs: tuple[str, ...], classes: tuple[str, ...], debian: Path | None,
    torchvision_cls: str,
) -> Callable[..., ImageDataset]:
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
        images = torch.from_numpy(read_idx(img).copy()).unsqueeze(1)
        labels = torch.from_numpy(read_idx(lbl).astype(np.int64))
        if len(images) != len(labels):
            raise RobustEvalError(f"{img} and {lbl} differ in length ({len(images)} vs {len(labels)})")
        return ImageDataset(name, split, images, labels, classes, str(img.parent))

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


def _cifar_loader(name: str, folder: str, tv_cls: str, files: dict[str, list[str]], label_key: str,
                  meta_file: str, names_key: str) -> Callable[..., ImageDataset]:
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
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry[label_key])
        meta = _unpickle(found / meta_file) if (found / meta_file).is_file() else {}
        classes = tuple(meta.get(names_key, [str(i) for i in range(max(labels) + 1)]))
        return ImageDataset(name, split, torch.from_numpy(np.concatenate(images)),
                            torch.tensor(labels, dtype=torch.int64), classes, str(found))

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
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise RobustEvalError(f"{path} is not a CIFAR python batch file ({exc})") from None
    if not isinstance(raw, dict):
        raise RobustEvalError(f"{path} is not a CIFAR python batch file (not a dict)")
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
        except OSError as exc:
            raise RobustEvalError(f"cannot read image {p}: {exc}") from None
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def _tiny_imagenet_loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
    dirs = [r / "tiny-imagenet-200" for r in roots]
    root = next((d for d in dirs if (d / "wnids.txt").is_file()), None)
    if root is None:
        raise missing("tiny-imagenet", dirs, " torchvision has no downloader for it.")
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


def _imagefolder_loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
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
    from PIL import Image

    with Image.open(paths[0]) as first:
        mode = "L" if first.mode in ("L", "1", "I;16", "I") else "RGB"
    images = _read_images(paths, None, mode)
    return ImageDataset(f"imagefolder:{arg}", split, images, torch.tensor(labels), tuple(classes), str(base))


# ---------------------------------------------------------------------------------------------
# scikit-learn digits: 1,797 real 8x8 images, shipped with scikit-learn (fastest tests)


DIGITS_TEST_FRACTION = 0.25


def _digits_loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
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


# ---------------------------------------------------------------------------------------------
# Registration
#
# Default budgets: where the literature has a convention it is used (MNIST 0.3 / 2.0 from Madry
# et al.; CIFAR 8/255 / 0.5 from RobustBench). For the others the L2 budget keeps the per-pixel
# RMS of a comparable benchmark: ``L2 = rms * sqrt(pixels)``.


def _register(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name, spec)


_IDX_FILES = ("{train,t10k}-images-idx3-ubyte[.gz]", "{train,t10k}-labels-idx1-ubyte[.gz]")
_register(DatasetSpec(
    "fashion-mnist",
    _idx_loader("fashion-mnist", ("fashion-mnist", "FashionMNIST/raw", "."), FASHION_MNIST_CLASSES,
                DEBIAN_FASHION_MNIST, "FashionMNIST"),
    FASHION_MNIST_CLASSES, 1, (28, 28), _IDX_FILES,
    "sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), or download the four IDX files from "
    "github.com/zalandoresearch/fashion-mnist into DIR/fashion-mnist and pass --data-dir DIR",
    "Zalando Fashion-MNIST: 70,000 28x28 grey images of 10 clothing classes (default)",
    # Linf 0.1 is the common choice (0.3 breaks every model); L2 1.5 as in robustness papers on
    # 28x28 grey images.
    default_eps={"Linf": 0.1, "L2": 1.5},
))
_register(DatasetSpec(
    "mnist",
    _idx_loader("mnist", ("mnist", "MNIST/raw", "."), tuple(str(i) for i in range(10)), None, "MNIST"),
    tuple(str(i) for i in range(10)), 1, (28, 28), _IDX_FILES,
    "python -c \"import torchvision; torchvision.datasets.MNIST('DIR', download=True)\" and pass --data-dir DIR",
    "MNIST handwritten digits: 70,000 28x28 grey images",
    default_eps={"Linf": 0.3, "L2": 2.0},
))
_register(DatasetSpec(
    "digits", _digits_loader, tuple(str(i) for i in range(10)), 1, (8, 8), ("(ships with scikit-learn)",),
    "pip install scikit-learn",
    "scikit-learn digits: 1,797 8x8 grey images (stratified 75/25 split, seed 0); for fast tests",
    # 17 grey levels (steps of 1/16): Linf 0.1 is ~1.6 levels; L2 0.5 over 64 pixels is an RMS of
    # 0.0625, close to MNIST-L2's 2.0 over 784 pixels (0.071).
    default_eps={"Linf": 0.1, "L2": 0.5},
))
_register(DatasetSpec(
    "cifar10",
    _cifar_loader("cifar10", "cifar-10-batches-py", "CIFAR10",
                  {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                  "labels", "batches.meta", "label_names"),
    CIFAR10_CLASSES, 3, (32, 32), ("cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",),
    "python -c \"import torchvision; torchvision.datasets.CIFAR10('DIR', download=True)\" and pass --data-dir DIR",
    "CIFAR-10: 60,000 32x32 colour images of 10 classes",
    default_eps={"Linf": 8 / 255, "L2": 0.5},
))
_register(DatasetSpec(
    "cifar100",
    _cifar_loader("cifar100", "cifar-100-python", "CIFAR100", {"train": ["train"], "test": ["test"]},
                  "fine_labels", "meta", "fine_label_names"),
    None, 3, (32, 32), ("cifar-100-python/{train,test,meta}",),
    "python -c \"import torchvision; torchvision.datasets.CIFAR100('DIR', download=True)\" and pass --data-dir DIR",
    "CIFAR-100: 60,000 32x32 colour images of 100 fine classes in 20 superclasses",
    default_eps={"Linf": 8 / 255, "L2": 0.5},
))
_register(DatasetSpec(
    "tiny-imagenet", _tiny_imagenet_loader, None, 3, (64, 64),
    ("tiny-imagenet-200/{wnids.txt,words.txt,train/,val/val_annotations.txt,val/images/}",),
    "download tiny-imagenet-200.zip (cs231n.stanford.edu) and unzip it into DIR, then pass --data-dir DIR",
    "Tiny-ImageNet: 200 classes of 64x64 colour images (val split used as test)",
    # 4x the pixels of CIFAR, so L2 doubles to keep CIFAR's RMS.
    default_eps={"Linf": 8 / 255, "L2": 1.0},
))
_register(DatasetSpec(
    "imagefolder", _imagefolder_loader, None, None, None, ("PATH/<class>/<images>",),
    "arrange images as PATH/<class name>/<image> (optionally PATH/train and PATH/test)",
    "your own images: imagefolder:PATH, one folder per class", takes_arg=True,
))


# ---------------------------------------------------------------------------------------------
# Published corrupted test sets: CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C


def _c_loader(base: str) -> Callable[..., ImageDataset]:
    """``<base>-c:PATH``: the clean test split of ``base`` plus the corrupted copies in PATH.

    The corruption suite scores the files in PATH instead of corrupting images itself; the
    clean split provides the clean accuracy and the class names, and the labels must agree.
    """

    def loader(split: str, roots: list[Path], download_dir: Path | None, arg: str | None) -> ImageDataset:
        from corruptions.published import load_c_dataset

        if split != "test":
            raise RobustEvalError(f"{base}-c is a test set only; train on {base}")
        corrupted, c_labels = load_c_dataset(arg)
        clean = DATASETS.entry(base).loader(split="test", roots=roots, download_dir=download_dir, arg=None)
        n = min(len(clean), len(c_labels))
        if len(c_labels) != len(clean) or not torch.equal(c_labels[:n].long(), clean.labels[:n]):
            raise RobustEvalError(
                f"the labels in {arg} do not match the clean {base} test set ({len(c_labels)} vs {len(clean)} "
                f"images); pass the -C directory made from this {base} test split"
            )
        return ImageDataset(f"{base}-c:{arg}", "test", clean.images, clean.labels, clean.classes, clean.source,
                            {"corrupted": corrupted, "corrupted_source": str(arg)})

    return loader


for _base, _what in (("cifar10", "CIFAR-10-C"), ("cifar100", "CIFAR-100-C"), ("tiny-imagenet", "Tiny-ImageNet-C")):
    _register(DatasetSpec(
        f"{_base}-c", _c_loader(_base), DATASETS.entry(_base).classes, 3, DATASETS.entry(_base).size,
        ("PATH/<corruption>.npy + PATH/labels.npy, or PATH/<corruption>/<severity>/<wnid>/*",
         f"and the clean {_base} test split"),
        f"download {_what} (zenodo) and unpack it into PATH; the clean split as for {_base}",
        f"{_what}: published corrupted copies of the {_base} test set, scored by --suite corruptions",
        takes_arg=True,
    ))
