"""Dataset registry: real datasets read from their real file formats, as [0,1] NCHW tensors.

Images are held as uint8 NCHW tensors (compact: Tiny-ImageNet is 1.2 GB as uint8, 5 GB as
float) and turned into float32 in [0, 1] per batch. Grey datasets stay one channel; the model
wrapper repeats channels when the network needs three.

File lookup order for every dataset: ``--data-dir``, ``$ROBUST_EVAL_DATA``, the Debian package
location (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``), then a download into the data
cache with torchvision's own loaders when the network allows (``ROBUST_EVAL_OFFLINE=1`` turns
downloads off).

The file formats themselves are read by :mod:`robustbench_lite.readers`; this module holds the
registry, the lookup order and the errors a user sees.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils.data

from attacks.base import check_norm
from robustbench_lite import readers
from robustbench_lite.errors import RobustEvalError

# The in-memory dataset and the format readers live in ``readers``; these names stay importable
# from here, where callers have always found them (``from robustbench_lite.data import ImageDataset``).
from robustbench_lite.readers import DIGITS_TEST_FRACTION as DIGITS_TEST_FRACTION
from robustbench_lite.readers import IMAGE_EXTS as IMAGE_EXTS
from robustbench_lite.readers import ImageDataset as ImageDataset
from robustbench_lite.readers import read_idx as read_idx
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
    if data_dir is not None and not Path(data_dir).is_dir():
        what = "is a file" if Path(data_dir).exists() else "does not exist"
        raise RobustEvalError(f"--data-dir {data_dir} {what}; give the folder that holds the dataset's files, or "
                              "leave --data-dir out to use the usual places")
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
    """The error for a dataset whose files are nowhere in ``looked``: the files, the folders, how to get them.

    The loaders in :mod:`robustbench_lite.readers` are given this function to raise it.
    """
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
    readers.idx_loader("fashion-mnist", ("fashion-mnist", "FashionMNIST/raw", "."), FASHION_MNIST_CLASSES,
                       DEBIAN_FASHION_MNIST, "FashionMNIST", missing),
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
    readers.idx_loader("mnist", ("mnist", "MNIST/raw", "."), tuple(str(i) for i in range(10)), None, "MNIST",
                       missing),
    tuple(str(i) for i in range(10)), 1, (28, 28), _IDX_FILES,
    "python -c \"import torchvision; torchvision.datasets.MNIST('DIR', download=True)\" and pass --data-dir DIR",
    "MNIST handwritten digits: 70,000 28x28 grey images",
    default_eps={"Linf": 0.3, "L2": 2.0},
))
_register(DatasetSpec(
    "digits", readers.digits_loader, tuple(str(i) for i in range(10)), 1, (8, 8), ("(ships with scikit-learn)",),
    "pip install scikit-learn",
    "scikit-learn digits: 1,797 8x8 grey images (stratified 75/25 split, seed 0); for fast tests",
    # 17 grey levels (steps of 1/16): Linf 0.1 is ~1.6 levels; L2 0.5 over 64 pixels is an RMS of
    # 0.0625, close to MNIST-L2's 2.0 over 784 pixels (0.071).
    default_eps={"Linf": 0.1, "L2": 0.5},
))
_register(DatasetSpec(
    "cifar10",
    readers.cifar_loader("cifar10", "cifar-10-batches-py", "CIFAR10",
                         {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                         "labels", "batches.meta", "label_names", missing),
    CIFAR10_CLASSES, 3, (32, 32), ("cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",),
    "python -c \"import torchvision; torchvision.datasets.CIFAR10('DIR', download=True)\" and pass --data-dir DIR",
    "CIFAR-10: 60,000 32x32 colour images of 10 classes",
    default_eps={"Linf": 8 / 255, "L2": 0.5},
))
_register(DatasetSpec(
    "cifar100",
    readers.cifar_loader("cifar100", "cifar-100-python", "CIFAR100", {"train": ["train"], "test": ["test"]},
                         "fine_labels", "meta", "fine_label_names", missing),
    None, 3, (32, 32), ("cifar-100-python/{train,test,meta}",),
    "python -c \"import torchvision; torchvision.datasets.CIFAR100('DIR', download=True)\" and pass --data-dir DIR",
    "CIFAR-100: 60,000 32x32 colour images of 100 fine classes in 20 superclasses",
    default_eps={"Linf": 8 / 255, "L2": 0.5},
))
_register(DatasetSpec(
    "tiny-imagenet", readers.tiny_imagenet_loader(missing), None, 3, (64, 64),
    ("tiny-imagenet-200/{wnids.txt,words.txt,train/,val/val_annotations.txt,val/images/}",),
    "download tiny-imagenet-200.zip (cs231n.stanford.edu) and unzip it into DIR, then pass --data-dir DIR",
    "Tiny-ImageNet: 200 classes of 64x64 colour images (val split used as test)",
    # 4x the pixels of CIFAR, so L2 doubles to keep CIFAR's RMS.
    default_eps={"Linf": 8 / 255, "L2": 1.0},
))
_register(DatasetSpec(
    "imagefolder", readers.imagefolder_loader, None, None, None, ("PATH/<class>/<images>",),
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


def as_dataset(data: Any, name: str = "custom", data_dir: str | None = None) -> ImageDataset:
    """Any dataset a user holds, as the test split the suites run on.

    Args:
        data: a registry name (``fashion-mnist``, ``imagefolder:PATH``); an :class:`ImageDataset`;
            ``(images, labels[, classes])`` tensors or arrays, N x C x H x W, float in [0, 1] or
            uint8; or a ``torch.utils.data.Dataset`` yielding ``(image, label)`` with images as
            C x H x W tensors in [0, 1] (or PIL images).
        name: the dataset's name in the results, for in-memory data.

    Float images are stored as uint8 like every dataset (rounded to 1/255).
    """
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, (str, Path)):  # shift views (<dataset>:subpop-*) are registered by robustbench_lite.shift
        return load(str(data), "test", data_dir)
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        images, labels = torch.as_tensor(data[0]), torch.as_tensor(data[1]).long()
        classes = tuple(str(c) for c in data[2]) if len(data) == 3 else None
        return _from_tensors(images, labels, classes, name, "in-memory tensors")
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        from torchvision.transforms.functional import pil_to_tensor

        images, labels = [], []
        for i in range(len(data)):  # type: ignore[arg-type]
            item = data[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise RobustEvalError(f"dataset item {i} is {type(item).__name__}; a Dataset must yield (image, label)")
            image = item[0]
            if not isinstance(image, torch.Tensor):
                image = pil_to_tensor(image)
            images.append(image)
            labels.append(int(item[1]))
        if not images:
            raise RobustEvalError("the dataset is empty; pass at least one (image, label)")
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise RobustEvalError(f"dataset images differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}); "
                                  "resize them to one size in the Dataset's transform")
        found = getattr(data, "classes", None)
        classes = tuple(map(str, found)) if isinstance(found, (list, tuple)) else None
        return _from_tensors(torch.stack(images), torch.tensor(labels), classes, name, type(data).__name__)
    raise RobustEvalError(f"data must be a dataset name, an ImageDataset, (images, labels[, classes]) or a "
                          f"torch Dataset of (image, label), got {type(data).__name__}")


def _from_tensors(images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...] | None, name: str,
                  source: str) -> ImageDataset:
    if images.ndim == 3:  # N x H x W grey images
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise RobustEvalError(f"images must be N x C x H x W with 1 or 3 channels, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise RobustEvalError("images must be in [0, 1] (or uint8); normalisation belongs in the model "
                                  "(pass mean=/std= for a model that expects normalised input)")
        images = images.float().mul(255).round().to(torch.uint8)
    if len(labels) != len(images):
        raise RobustEvalError(f"{len(images)} images but {len(labels)} labels; pass one label per image")
    n_classes = int(labels.max()) + 1 if labels.numel() else 0
    if classes is None:
        classes = tuple(str(i) for i in range(n_classes))
    elif n_classes > len(classes):
        raise RobustEvalError(f"labels go up to {n_classes - 1} but {len(classes)} class names were given")
    return ImageDataset(name, "test", images.contiguous(), labels, tuple(classes), source=source)
