"""Corrupted datasets on disk in the CIFAR-10-C layout: computed once, verified, reused.

Layout of one cache directory (one per clean dataset x profile x seed x backend, see
:meth:`CorruptionCache.directory`)::

    <dir>/<name>.npy       uint8 NHWC, the 5 severities stacked in order 1..5 (N images each)
    <dir>/labels.npy       int64, the N clean labels repeated once per severity (5N), as CIFAR-10-C
    <dir>/manifest.json    what produced each file, with its sha256 and size
    <dir>/partial/<name>.s<k>.npy   severities computed so far of a corruption not yet complete

A ``<name>.npy`` present is always all five severities, so the directory stays a valid
CIFAR-10-C directory that :func:`corruptions.published.load_c_dataset` (and other tools) can
read. A run that needs only some severities stores them under ``partial/``; once all five of a
corruption are there they are joined into ``<name>.npy`` and the partial files go.

Images keep their channel count: a grey dataset is stored N x H x W x 1.

Nothing is used unless its manifest entry matches: the manifest records the clean data's
identity (dataset name, number and shape of images, sha256 of the clean images and labels),
the profile, seed and backend, and for every file its corruption, severities, shape, sha256
and size. A missing, truncated, edited or mismatched file is a cache miss (logged with the
reason), so the caller recomputes it and :meth:`CorruptionCache.store` replaces it.

Every file is written atomically (:func:`robustbench_lite.files.atomic_write`): a temporary file in
the same directory, ``fsync``, then ``os.replace``; an interrupted write leaves the old file or none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corruptions.published import LABELS, SEVERITIES, to_nchw_float
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.files import atomic_write, sha256_array, sha256_file

try:  # POSIX: serialise manifest updates between processes sharing a cache directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_said: set[str] = set()


def _warn(message: str, *args: Any) -> None:
    """A cache warning, once per process: the manifest is read at every lookup, the problem is one."""
    text = message % args
    if text not in _said:
        _said.add(text)
        log.warning("%s", text)

MANIFEST = "manifest.json"
PARTIAL = "partial"
FORMAT = "robustbench-lite corruption cache"
VERSION = 1
_Lookup = tuple[dict[str, Any] | None, str | None]


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    sha, size = atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), binary=True, digest=True)
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


#: A manifest file entry's keys and their types.
ENTRY_FIELDS = {"file": str, "size": int, "sha256": str, "shape": list, "dtype": str, "severities": list,
                "corruption": str}


def _entry_shape_problem(entry: Any) -> str | None:
    """Why a manifest file entry is not what the cache writes, or None."""
    if not isinstance(entry, dict):
        return f"an entry is a {type(entry).__name__}, not a mapping"
    for key, kind in ENTRY_FIELDS.items():
        if key not in entry:
            return f"no '{key}'"
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            return f"'{key}' is not a {kind.__name__}"
    if not all(isinstance(s, int) and s in SEVERITIES for s in entry["severities"]):
        return "'severities' are not 1..5"
    if "/" in entry["file"].replace("partial/", "", 1) or ".." in entry["file"]:
        return "'file' points outside the cache folder"
    return None


def _to_nhwc_uint8(images: torch.Tensor) -> np.ndarray:
    x = images.detach().float().cpu().clamp(0, 1).mul(255).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


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
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            _warn("corruption cache: ignoring unreadable manifest %s (%s)", path, exc)
            return None
        for rel, entry in list(data["files"].items()):  # a hand-edited entry is a miss (rebuilt), not a crash
            problem = _entry_shape_problem(entry)
            if problem is not None:
                _warn("corruption cache: ignoring entry %s of %s (%s); it will be rebuilt", rel, path, problem)
                del data["files"][rel]
        return data

    def _write_manifest(self, folder: Path, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=True).encode()
        atomic_write(folder / MANIFEST, lambda f: f.write(text), binary=True)

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
                _warn("corruption cache: rebuilding %s severity %s: %s", name, severity, problem)
            return None
        try:
            array = np.load(self.directory(expected) / entry["file"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:  # raced with a concurrent rewrite, or corrupt header
            _warn("corruption cache: rebuilding %s severity %s: %s", name, severity, exc)
            return None
        if list(array.shape) != entry["shape"] or array.dtype != np.uint8:
            _warn("corruption cache: rebuilding %s: file changed under the manifest", name)
            return None
        block = entry["severities"].index(severity)
        n = expected.n
        return to_nchw_float(array[block * n:(block + 1) * n])

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
                    _warn("corruption cache: %s held other data; clearing it", folder)
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
