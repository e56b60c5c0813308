"""Atomic writes and sha256 digests (robustbench_lite.files): what results, caches and checkpoints rely on."""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest
import torch

from robustbench_lite.files import Digest, atomic_write, sha256_array, sha256_file


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    path = tmp_path / "x.bin"
    atomic_write(path, lambda f: f.write(b"old"), binary=True)

    def fail(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail, binary=True)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temporary file left behind
    sha, size = atomic_write(path, lambda f: f.write(b"new"), binary=True, digest=True)
    assert path.read_bytes() == b"new" and size == 3
    assert sha == hashlib.sha256(b"new").hexdigest()


def test_text_is_utf8_and_the_path_comes_back(tmp_path):
    path = tmp_path / "deeper" / "r.json"  # the folder is created
    assert atomic_write(str(path), lambda f: f.write("résumé\n")) == path
    assert path.read_bytes() == "résumé\n".encode()
    written = atomic_write(path, lambda f: f.write("é"), digest=True)
    assert written == Digest(hashlib.sha256("é".encode()).hexdigest(), 2)


def test_digest_matches_the_file_for_numpy_and_torch_writers(tmp_path):
    array = np.arange(1000, dtype=np.uint8).reshape(10, 100)
    written = atomic_write(tmp_path / "a.npy", lambda f: np.save(f, array, allow_pickle=False),
                           binary=True, digest=True)
    assert written.sha256 == sha256_file(tmp_path / "a.npy")
    assert written.size == (tmp_path / "a.npy").stat().st_size
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)
    state = {"w": torch.arange(6.0)}
    sha, size = atomic_write(tmp_path / "m.pt", lambda f: torch.save(state, f), binary=True, digest=True)
    assert (sha, size) == (sha256_file(tmp_path / "m.pt"), (tmp_path / "m.pt").stat().st_size)
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["w"], state["w"])


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "shared.txt", lambda f: f.write("x"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_sha256_file_reads_in_chunks(tmp_path):
    data = os.urandom((1 << 22) + 17)  # more than one chunk
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_sha256_array_sees_dtype_and_shape_and_takes_tensors():
    a = np.arange(12, dtype=np.int64)
    assert sha256_array(a) != sha256_array(a.reshape(3, 4))  # same bytes, other shape
    assert sha256_array(a) != sha256_array(a.astype(np.int32))
    assert sha256_array(torch.arange(12)) == sha256_array(a)
    assert sha256_array(a.reshape(3, 4).T) == sha256_array(np.ascontiguousarray(a.reshape(3, 4).T))


def test_a_temp_file_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    """kill -9 between the write and the rename leaves .<name>.<pid>.<rand>.tmp: the next write of that
    file removes it when its process is gone, and never touches a live writer's."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".r.json.{dead}.abc123.tmp"
    stale.write_text("half a file")
    live = tmp_path / f".r.json.{os.getppid()}.def456.tmp"  # a running process (our parent)
    live.write_text("being written")
    atomic_write(tmp_path / "r.json", lambda f: f.write("{}"))
    assert not stale.exists() and live.exists()
    assert (tmp_path / "r.json").read_text() == "{}"
