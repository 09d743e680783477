"""``BackgroundHashes``: the same sha256 as ``sha256_file``, the same refusals, and a stop."""

from __future__ import annotations

import hashlib
import os

import pytest

from msn_cli.util import safeio
from msn_cli.util.hashing import BackgroundHashes, sha256_file


def test_background_hashes_are_the_files_sha256(tmp_path):
    files = []
    for i, size in enumerate((0, 1, 20 * 1024 * 1024 + 3)):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(size))
        files.append(p)
    other = tmp_path / "not-given"
    other.write_bytes(b"abc")
    hashes = BackgroundHashes(files)
    try:
        seen = []
        for p in files:
            assert hashes(p, lambda stage, done, total: seen.append(stage), "hashing") \
                == hashlib.sha256(p.read_bytes()).hexdigest()
        assert hashes(other) == sha256_file(other) == hashlib.sha256(b"abc").hexdigest()
    finally:
        hashes.close()


def test_a_named_pipe_is_refused_not_read(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    hashes = BackgroundHashes([fifo])
    try:
        with pytest.raises(safeio.UnsafeInput):
            hashes(fifo)
    finally:
        hashes.close()


def test_close_stops_the_thread_before_the_end(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(4 << 30)  # sparse: 4 GiB that would take seconds to hash
    hashes = BackgroundHashes([big])
    hashes.close()  # returns once the thread has stopped, at its next chunk
    future = hashes._futures[big]
    assert future.done()
    assert future.cancelled() or future.exception() is not None
