"""Corrupted datasets on disk in the CIFAR-10-C layout, and readers for the published -C sets.

Layout of one cache directory (one per clean dataset x profile x seed x backend, see
:meth:`CorruptionCache.directory`)::

    <dir>/<name>.npy       uint8 NHWC, the 5 severities stacked in order 1..5 (N images each)
    <dir>/labels.npy       int64, the N clean labels repeated once per severity (5N), as CIFAR-10-C
    <dir>/manifest.json    what produced each file, with its sha256 and size
    <dir>/partial/<name>.s<k>.npy   severities computed so far of a corruption not yet complete

A ``<name>.npy`` present is always all five severities, so the directory stays a valid
CIFAR-10-C directory that :func:`load_c_dataset` (and other tools) can read. A run that needs
only some severities stores them under ``partial/``; once all five of a corruption are there they
are joined into ``<name>.npy`` and the partial files go.

Images keep their channel count: a grey dataset is stored N x H x W x 1.

Nothing is used unless its manifest entry matches: the manifest records the clean data's
identity (dataset name, number and shape of images, sha256 of the clean images and labels),
the profile, seed and backend, and for every file its corruption, severities, shape, sha256
and size. A missing, truncated, edited or mismatched file is a cache miss (logged with the
reason), so the caller recomputes it and :meth:`CorruptionCache.store` replaces it.

Every file is written atomically: a temporary file in the same directory, ``fsync``, then
``os.replace``; an interrupted write leaves the old file or none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from robustbench_lite.errors import RobustEvalError

try:  # POSIX: serialise manifest updates between processes sharing a cache directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SEVERITIES = (1, 2, 3, 4, 5)
MANIFEST = "manifest.json"
LABELS = "labels.npy"
PARTIAL = "partial"
FORMAT = "robustbench-lite corruption cache"
VERSION = 1
_HASH_CHUNK = 1 << 22
_Lookup = tuple[dict[str, Any] | None, str | None]


# ----------------------------------------------------------------------------- hashing and atomic writes


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray | torch.Tensor) -> str:
    """sha256 over dtype, shape and bytes (C order), so equal bytes of another shape differ."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array.reshape(-1)).cast("B"))
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """File wrapper that hashes and counts what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._f.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. Windows); best effort
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> tuple[str, int]:
    """Write ``path`` atomically through ``write(f)``; returns the content's (sha256, size).

    The data goes to a temporary file in the same directory, is flushed and fsynced, and then
    replaces ``path`` with ``os.replace``, so readers see the old file or the new one, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _HashingWriter(f)
            write(writer)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return writer.digest.hexdigest(), writer.size


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    sha, size = atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
    return {"sha256": sha, "size": size, "shape": list(array.shape), "dtype": array.dtype.str}


# ----------------------------------------------------------------------------- cache key


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """What a cached corrupted set is a function of; every field must match for a cache hit.

    Build it with :meth:`for_data`, which hashes the clean images and labels.
    """

    dataset: str
    n: int
    image_shape: tuple[int, int, int]  # C, H, W
    profile: str
    seed: int
    backend: str
    images_sha256: str
    labels_sha256: str
    #: The clean labels themselves (for ``labels.npy``); not part of the identity (their hash is).
    labels: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def for_data(
        cls, dataset: str, images: torch.Tensor, labels: torch.Tensor | np.ndarray, *,
        profile: str, seed: int, backend: str = "native",
    ) -> CacheKey:
        """Key for clean ``images`` (float NCHW in [0,1]) and their ``labels``."""
        if images.ndim != 4:
            raise RobustEvalError(f"the corruption cache takes NCHW images, got shape {tuple(images.shape)}")
        labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
        if labels_np.shape != (images.shape[0],):
            raise RobustEvalError(f"got {labels_np.shape} labels for {images.shape[0]} images")
        return cls(
            dataset=str(dataset), n=int(images.shape[0]), image_shape=tuple(int(s) for s in images.shape[1:]),
            profile=str(profile), seed=int(seed), backend=str(backend),
            images_sha256=sha256_array(images.float()), labels_sha256=sha256_array(labels_np),
            labels=labels_np,
        )

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        return {**out, "image_shape": list(self.image_shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CacheKey:
        fields = {f.name for f in dataclasses.fields(cls) if f.compare}
        if set(data) != fields:
            raise ValueError(f"cache key fields {sorted(data)} != {sorted(fields)}")
        return cls(**{**data, "image_shape": tuple(data["image_shape"])})

    def slug(self) -> str:
        """Directory name: readable, plus a digest of the whole key."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.dataset).strip("_") or "dataset"
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{name}-{self.profile}-{self.backend}-seed{self.seed}-{digest}"


# ----------------------------------------------------------------------------- the cache


def _to_nhwc_uint8(images: torch.Tensor) -> np.ndarray:
    x = images.detach().float().cpu().clamp(0, 1).mul(255).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _to_nchw_float(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 3:  # N x H x W grey
        array = array[..., None]
    return torch.from_numpy(np.array(array)).permute(0, 3, 1, 2).float().div_(255)


class CorruptionCache:
    """Corrupted copies of a dataset under ``root``, one CIFAR-10-C directory per :class:`CacheKey`.

    Args:
        root: cache root; created on first store.

    Example:
        >>> cache = CorruptionCache("~/.cache/robustbench-lite/corruptions")
        >>> key = CacheKey.for_data("fashion-mnist", images, labels, profile="cifar", seed=0)
        >>> x = cache.load("fog", 3, key)
        >>> if x is None:
        ...     x = corrupt(images, "fog", 3)
        ...     cache.store("fog", {3: x}, key)
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        # path -> (size, mtime_ns, inode, sha256) of files hashed this session: a file is re-hashed
        # only when it changes on disk, not on every load of one of its severities.
        self._verified: dict[Path, tuple[int, int, int, str]] = {}

    def directory(self, key: CacheKey) -> Path:
        return self.root / key.slug()

    # -- manifest

    def _read_manifest(self, folder: Path) -> dict[str, Any] | None:
        path = folder / MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if (data.get("format"), data.get("version")) != (FORMAT, VERSION):
                raise ValueError(f"not a version {VERSION} manifest")
            if not isinstance(data["files"], dict):
                raise ValueError("'files' is not a mapping")
            CacheKey.from_json(data["key"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("corruption cache: ignoring unreadable manifest %s (%s)", path, exc)
            return None
        return data

    def _write_manifest(self, folder: Path, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=True).encode()
        atomic_write(folder / MANIFEST, lambda f: f.write(text))

    @contextlib.contextmanager
    def _locked(self, folder: Path) -> Iterator[None]:
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(folder / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- verification

    def _file_problem(self, folder: Path, entry: Mapping[str, Any]) -> str | None:
        """Why the file described by a manifest entry is unusable, or None when it is intact."""
        path = folder / entry["file"]
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"{path.name} is missing"
        if stat.st_size != entry["size"]:
            return f"{path.name} has {stat.st_size} bytes, the manifest says {entry['size']} (truncated?)"
        seen = self._verified.get(path)
        if seen is None or seen[:3] != (stat.st_size, stat.st_mtime_ns, stat.st_ino):
            seen = (stat.st_size, stat.st_mtime_ns, stat.st_ino, sha256_file(path))
            self._verified[path] = seen
        if seen[3] != entry["sha256"]:
            return f"{path.name} does not match its sha256 in the manifest (damaged or edited)"
        return None

    def _key_problem(self, manifest: Mapping[str, Any] | None, expected: CacheKey) -> str | None:
        if manifest is None:
            return "no manifest"
        stored = CacheKey.from_json(manifest["key"])
        if stored != expected:
            diff = [f.name for f in dataclasses.fields(CacheKey)
                    if f.compare and getattr(stored, f.name) != getattr(expected, f.name)]
            return f"manifest describes other data ({', '.join(diff)} differ)"
        return None

    def _lookup(self, name: str, severity: int, expected: CacheKey) -> _Lookup:
        """(manifest entry, None) for an intact cached file, else (None, why not)."""
        _check_name(name)
        folder = self.directory(expected)
        manifest = self._read_manifest(folder)
        problem = self._key_problem(manifest, expected)
        if problem is not None:
            return None, problem
        assert manifest is not None
        first_problem = None
        for rel in (f"{name}.npy", _partial_file(name, severity)):  # the full file first
            entry = manifest["files"].get(rel)
            if entry is None:
                continue
            problem = self._entry_problem(folder, entry, name, expected, severity)
            if problem is None:
                return entry, None
            first_problem = first_problem or problem
        return None, first_problem or f"{name} severity {severity} is not cached"

    def _entry_problem(
        self, folder: Path, entry: Mapping[str, Any], name: str, expected: CacheKey,
        severity: int | None = None,
    ) -> str | None:
        """Why a manifest entry cannot be used for ``name`` (at ``severity``), or None."""
        c, h, w = expected.image_shape
        shape = [len(entry["severities"]) * expected.n, h, w, c]
        if (entry.get("corruption"), entry["shape"], entry["dtype"]) != (name, shape, np.dtype(np.uint8).str):
            return f"{entry['file']} has the wrong corruption, shape or dtype for this dataset"
        if severity is not None and severity not in entry["severities"]:
            return f"{entry['file']} holds severities {entry['severities']}, not {severity}"
        return self._file_problem(folder, entry)

    def check(self, name: str, severity: int, expected: CacheKey) -> str | None:
        """Why ``load(name, severity, expected)`` would miss, or None if it would hit."""
        return self._lookup(name, severity, expected)[1]

    # -- public API

    def load(self, name: str, severity: int, expected: CacheKey) -> torch.Tensor | None:
        """The cached corrupted images (float NCHW in [0,1]) or None on any mismatch or damage."""
        entry, problem = self._lookup(name, severity, expected)
        if entry is None:
            if problem is not None and "not cached" not in problem and problem != "no manifest":
                log.warning("corruption cache: rebuilding %s severity %s: %s", name, severity, problem)
            return None
        try:
            array = np.load(self.directory(expected) / entry["file"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:  # raced with a concurrent rewrite, or corrupt header
            log.warning("corruption cache: rebuilding %s severity %s: %s", name, severity, exc)
            return None
        if list(array.shape) != entry["shape"] or array.dtype != np.uint8:
            log.warning("corruption cache: rebuilding %s: file changed under the manifest", name)
            return None
        block = entry["severities"].index(severity)
        n = expected.n
        return _to_nchw_float(array[block * n:(block + 1) * n])

    def store(self, name: str, images_by_severity: Mapping[int, torch.Tensor], key: CacheKey) -> Path:
        """Store corrupted images (float NCHW in [0,1], quantised to uint8) for some severities.

        With all five severities (here or stored earlier) the result is ``<name>.npy``; otherwise
        the severities go under ``partial/`` until the rest arrive. A directory holding data for
        another key is cleared first. Returns the directory.
        """
        _check_name(name)
        if not images_by_severity:
            raise ValueError("store() needs at least one severity")
        expected_shape = (key.n, *key.image_shape)
        for severity, images in images_by_severity.items():
            if severity not in SEVERITIES:
                raise RobustEvalError(f"severity must be 1..5, got {severity!r}")
            if tuple(images.shape) != expected_shape:
                raise RobustEvalError(
                    f"{name} severity {severity}: got images of shape {tuple(images.shape)}, "
                    f"the cache key says {expected_shape}"
                )
        folder = self.directory(key)
        with self._locked(folder):
            manifest = self._read_manifest(folder)
            if self._key_problem(manifest, key) is not None:
                if manifest is not None:
                    log.warning("corruption cache: %s held other data; clearing it", folder)
                self._clear(folder)
                manifest = {"format": FORMAT, "version": VERSION, "key": key.to_json(), "files": {}}
            files: dict[str, Any] = manifest["files"]
            if files.get(LABELS) is None or self._file_problem(folder, files[LABELS]) is not None:
                files[LABELS] = self._write_labels(folder, key)
            blocks = {s: _to_nhwc_uint8(x) for s, x in sorted(images_by_severity.items())}
            # Complete the set from what is stored and intact: the full file (replacing some of
            # its severities) or partial files. A damaged file is dropped, never merged.
            full = files.get(f"{name}.npy")
            if full is not None and self._entry_problem(folder, full, name, key) is not None:
                self._drop(folder, files, f"{name}.npy")
                full = None
            stored = None if full is None else np.load(folder / full["file"], mmap_mode="r")
            for severity in SEVERITIES:
                if severity in blocks:
                    continue
                if stored is not None:
                    blocks[severity] = np.array(stored[(severity - 1) * key.n:severity * key.n])
                    continue
                entry = files.get(_partial_file(name, severity))
                if entry is not None and self._entry_problem(folder, entry, name, key) is None:
                    blocks[severity] = np.load(folder / entry["file"], allow_pickle=False)
            if set(blocks) == set(SEVERITIES):
                stacked = np.concatenate([blocks[s] for s in SEVERITIES])
                files[f"{name}.npy"] = self._entry(folder, f"{name}.npy", stacked, name, SEVERITIES)
                for severity in SEVERITIES:
                    self._drop(folder, files, _partial_file(name, severity))
                with contextlib.suppress(OSError):  # only if empty
                    (folder / PARTIAL).rmdir()
            else:
                for severity, block in blocks.items():
                    if severity in images_by_severity:
                        rel = _partial_file(name, severity)
                        files[rel] = self._entry(folder, rel, block, name, (severity,))
            self._write_manifest(folder, manifest)
        return folder

    def get_or_compute(
        self, name: str, severities: Iterable[int], key: CacheKey, compute: Callable[[int], torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """Cached severities of ``name``; the missing ones come from ``compute(severity)`` and are stored."""
        out: dict[int, torch.Tensor] = {}
        missing: dict[int, torch.Tensor] = {}
        for severity in severities:
            cached = self.load(name, severity, key)
            if cached is None:
                cached = missing[severity] = compute(severity)
            out[severity] = cached
        if missing:
            self.store(name, missing, key)
        return out

    # -- helpers

    def _entry(
        self, folder: Path, rel: str, array: np.ndarray, name: str, severities: Iterable[int]
    ) -> dict[str, Any]:
        entry = _save_npy(folder / rel, array)
        self._remember(folder / rel, entry)
        return {**entry, "file": rel, "corruption": name, "severities": list(severities)}

    def _write_labels(self, folder: Path, key: CacheKey) -> dict[str, Any]:
        if key.labels is None or sha256_array(np.asarray(key.labels, dtype=np.int64)) != key.labels_sha256:
            raise RobustEvalError(
                "the corruption cache needs the clean labels to write labels.npy; build the key with "
                "CacheKey.for_data(dataset, images, labels, ...)"
            )
        labels = np.tile(np.asarray(key.labels, dtype=np.int64), len(SEVERITIES))
        return self._entry(folder, LABELS, labels, "labels", SEVERITIES)

    def _remember(self, path: Path, entry: Mapping[str, Any]) -> None:
        stat = path.stat()
        self._verified[path] = (stat.st_size, stat.st_mtime_ns, stat.st_ino, entry["sha256"])

    def _drop(self, folder: Path, files: dict[str, Any], rel: str) -> None:
        if files.pop(rel, None) is not None:
            with contextlib.suppress(FileNotFoundError):
                (folder / rel).unlink()

    def _clear(self, folder: Path) -> None:
        for path in [*folder.glob("*.npy"), *folder.glob(f"{PARTIAL}/*.npy"), folder / MANIFEST]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._verified.pop(path, None)


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name == "labels":
        raise RobustEvalError(f"invalid corruption name for the cache: {name!r} (letters, digits and _ only)")


def _partial_file(name: str, severity: int) -> str:
    return f"{PARTIAL}/{name}.s{severity}.npy"


# ----------------------------------------------------------------------------- published -C datasets

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
            return _to_nchw_float(block[select] if select is not None else np.asarray(block))
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
        return _to_nchw_float(np.stack(arrays))


def _image_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*")
                  if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def load_c_dataset(path: str | os.PathLike[str]) -> tuple[CorruptedImages, torch.Tensor]:
    """Open a published -C dataset lazily.

    Reads CIFAR-10-C / CIFAR-100-C (``<name>.npy``: 5N x 32 x 32 x 3 uint8 with severities 1..5
    stacked, ``labels.npy`` alongside; also the directories :class:`CorruptionCache` writes) and
    Tiny-ImageNet-C (``<root>/<corruption>/<severity>/<wnid>/*.JPEG``; classes are the sorted
    wnids, as torchvision's ``ImageFolder`` numbers them).

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
