"""Atomic file writes and sha256 digests: every result, record, cache file and checkpoint goes through here.

A write goes to a temporary file in the target's folder, is flushed and fsynced, and then
replaces the target with ``os.replace``: readers (and a run interrupted half-way) see the old
file or the new one, never a part. A leaf module: it imports nothing from the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple, overload

if TYPE_CHECKING:
    import numpy as np
    import torch

_HASH_CHUNK = 1 << 22


class Digest(NamedTuple):
    """What :func:`atomic_write` wrote, when asked (``digest=True``)."""

    sha256: str
    size: int


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray | torch.Tensor) -> str:
    """sha256 over dtype, shape and bytes (C order), so equal bytes of another shape differ."""
    import numpy as np  # here, not above: writing a results file should not need numpy loaded

    if not isinstance(array, np.ndarray):  # a torch tensor; torch stays out of this leaf's imports
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array.reshape(-1)).cast("B"))
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """File wrapper that hashes and counts what passes through it."""

    def __init__(self, f: IO[bytes]) -> None:
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
    """Make the rename itself durable; best effort (not every platform can fsync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@overload
def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], binary: bool = ...,
                 *, digest: Literal[False] = ...) -> Path: ...


@overload
def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], binary: bool = ...,
                 *, digest: Literal[True]) -> Digest: ...


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left for ``path`` when its process died mid-write
    (``kill -9`` between the write and the rename): ``.<name>.<pid>.<random>.tmp`` whose pid is gone.
    A live writer's file is never touched; returns what was removed."""
    path = Path(path)
    removed = []
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


class Rescued(Exception):
    """:func:`write_or_rescue` could not write the target but wrote the same bytes elsewhere."""

    def __init__(self, path: Path, rescued: Path, error: OSError) -> None:
        super().__init__(f"{path}: {error}; written to {rescued} instead")
        self.path, self.rescued, self.error = path, rescued, error


def write_or_rescue(path: str | os.PathLike[str], data: bytes, rescue_dirs: list[Path]) -> Path:
    """:func:`atomic_write` of finished work (a trained checkpoint): when the target cannot be written
    (a full disk, a folder removed or replaced since the run started), the same bytes go to the first of
    ``rescue_dirs`` that takes them, under the target's name (a numbered one if taken), and
    :class:`Rescued` says where, so hours of work are never lost to an output problem.

    Raises:
        Rescued: the target failed and a copy was written (``.rescued``).
        OSError: the target and every rescue folder failed (the target's error).
    """
    path = Path(path)
    try:
        return atomic_write(path, lambda f: f.write(data), binary=True)
    except OSError as error:
        for folder in rescue_dirs:
            target = folder / path.name
            for n in range(1, 1000):
                if not target.exists():
                    break
                target = folder / f"{path.stem}.{n}{path.suffix}"
            try:
                atomic_write(target, lambda f: f.write(data), binary=True)
            except OSError:
                continue
            raise Rescued(path, target, error) from error
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], binary: bool = False,
                 *, digest: bool = False) -> Path | Digest:
    """Write ``path`` atomically through ``write(f)``.

    Args:
        path: the file to (re)place; its folder is created if needed.
        write: called once with an open file: bytes when ``binary``, else UTF-8 text.
        binary: open the file for bytes (``np.save``, ``torch.save``) instead of text.
        digest: hash and count the bytes on their way to disk, so a caller that records them
            (the corruption cache's manifest) does not read the file back.

    Returns:
        ``path`` as a :class:`~pathlib.Path`; with ``digest=True`` the content's
        :class:`Digest` (sha256, size) instead.

    Example:
        >>> atomic_write("results.json", lambda f: f.write(text))
        >>> sha, size = atomic_write("fog.npy", lambda f: np.save(f, array), binary=True, digest=True)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file 0600; results, reports and caches are meant to be shared like any file
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    hashing = None
    try:
        with os.fdopen(fd, "wb") as f:
            target: IO[Any] = f
            if digest:
                target = hashing = _HashingWriter(f)  # type: ignore[assignment]
            if binary:
                write(target)
            else:
                # the same text layer open(..., "w", encoding="utf-8") puts over its buffer
                text = io.TextIOWrapper(target, encoding="utf-8")  # type: ignore[type-var]
                write(text)
                text.flush()
                text.detach()  # leave closing the file to the `with`
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    if hashing is None:
        return path
    return Digest(hashing.digest.hexdigest(), hashing.size)
