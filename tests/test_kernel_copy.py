"""convert's kernel copy: tensors written unchanged go file to file through ``os.sendfile``.

The copy reads the checkpoint file at offsets found from the memory map; nothing in the
writer compares the copied bytes with the tensors, so these tests hold the read-back check
to that job (a wrong offset must fail the conversion), and check that every way of not
copying in the kernel (refused by the kernel, stopped half-way, another file behind the
path, a dtype change, the legacy format) writes the very same file through memory.
"""

from __future__ import annotations

import errno
import os

import pytest
import torch

from msn_cli.dev.synth import TINY
from msn_cli.original.checkpoint import Checkpoint
from tests.conftest import TINY_MULTIHEAD


@pytest.fixture
def sendfile_calls(monkeypatch):
    calls: list[int] = []
    real = os.sendfile

    def spy(out_fd, in_fd, offset, count):
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", spy)
    return calls


def _no_kernel_copy(*_args):
    raise OSError(errno.EINVAL, "Invalid argument")


def _weights(out) -> bytes:
    return (out / "model.safetensors").read_bytes()


def _through_memory(cli, ckpt, out, monkeypatch, *extra) -> bytes:
    with monkeypatch.context() as m:
        m.setattr(os, "sendfile", _no_kernel_copy)
        r = cli("convert", ckpt, out, "--no-verify", *extra)
    assert r.code == 0, r.stderr
    return _weights(out)


@pytest.mark.parametrize("arch", [TINY, TINY_MULTIHEAD], ids=["tiny", "multihead"])
def test_kernel_copy_writes_the_same_file_as_the_memory_path(cli, make_ckpt, tmp_path,
                                                             monkeypatch, arch):
    ckpt = make_ckpt(arch)
    reference = _through_memory(cli, ckpt, tmp_path / "mem", monkeypatch)
    calls: list[int] = []
    real = os.sendfile
    monkeypatch.setattr(os, "sendfile", lambda *a: calls.append(a[3]) or real(*a))
    r = cli("convert", ckpt, tmp_path / "kernel", "--no-verify")
    assert r.code == 0, r.stderr
    assert _weights(tmp_path / "kernel") == reference
    # every tensor went through the kernel: its bytes are exactly the tensor data
    header = 8 + int.from_bytes(reference[:8], "little")
    assert sum(calls) == len(reference) - header
    from safetensors import safe_open

    with safe_open(str(tmp_path / "kernel" / "model.safetensors"), "pt") as f:
        assert len(calls) == len(list(f.keys()))


def test_a_copy_stopped_half_way_is_rewritten_through_memory(cli, tiny_ckpt, tmp_path,
                                                             monkeypatch):
    reference = _through_memory(cli, tiny_ckpt, tmp_path / "mem", monkeypatch)
    real = os.sendfile
    calls = []

    def flaky(out_fd, in_fd, offset, count):
        calls.append(count)
        if len(calls) == 3 and count > 1:  # the third tensor: half of it, then a refusal
            return real(out_fd, in_fd, offset, count // 2)
        if len(calls) >= 4:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", flaky)
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--no-verify")
    assert r.code == 0, r.stderr
    assert len(calls) == 4  # after the refusal nothing more was tried in the kernel
    assert _weights(tmp_path / "out") == reference


def test_a_wrong_offset_fails_the_read_back_check(cli, tiny_ckpt, tmp_path, monkeypatch):
    real = Checkpoint.file_span

    def off_by_four(self, tensor):
        span = real(self, tensor)
        return None if span is None else (span[0] + 4, span[1])

    monkeypatch.setattr(Checkpoint, "file_span", off_by_four)
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert r.code == 3
    assert "read-back check failed" in r.stderr and "differs from its source" in r.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpts"]


def test_another_file_behind_the_path_is_not_copied_from(cli, tiny_ckpt, tmp_path,
                                                         monkeypatch, sendfile_calls):
    monkeypatch.setattr(Checkpoint, "mapped_inode", property(lambda self: -1))
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--no-verify")
    assert r.code == 0, r.stderr
    assert sendfile_calls == []
    monkeypatch.undo()
    assert _weights(tmp_path / "out") == _through_memory(cli, tiny_ckpt, tmp_path / "mem",
                                                         monkeypatch)


def test_a_dtype_change_goes_through_memory(cli, tiny_ckpt, tmp_path, sendfile_calls):
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--no-verify", "--dtype", "float16")
    assert r.code == 0, r.stderr
    assert sendfile_calls == []  # every tensor is converted, none is a byte range of the file
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float16 for t in load_file(tmp_path / "out" / "model.safetensors").values())


def test_the_legacy_format_has_no_spans(tmp_path, sendfile_calls, cli):
    from msn_cli.dev.synth import make_checkpoint

    path = tmp_path / "legacy.pth.tar"
    torch.save(make_checkpoint(TINY), path, _use_new_zipfile_serialization=False)
    from msn_cli.original.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    assert ckpt.mapped_inode is None
    assert all(ckpt.file_span(t) is None for t in ckpt.state.values())
    r = cli("convert", path, tmp_path / "out", "--no-verify")
    assert r.code == 0, r.stderr
    assert sendfile_calls == []


def test_spans_point_at_the_tensor_bytes_in_the_file(tiny_ckpt):
    from msn_cli.original.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_ckpt)
    raw = tiny_ckpt.read_bytes()
    qkv = next(k for k in ckpt.state if k.endswith("attn.qkv.weight"))
    rows = ckpt.state[qkv].shape[0] // 3
    views = [*ckpt.state.values(), ckpt.state[qkv][rows:2 * rows]]  # a qkv part is a view
    for t in views:
        span = ckpt.file_span(t)
        assert span is not None and span[1] == t.numel() * t.element_size()
        got = torch.frombuffer(bytearray(raw[span[0]:span[0] + span[1]]), dtype=t.dtype)
        assert torch.equal(got.reshape(t.shape), t)
    assert ckpt.file_span(ckpt.state[qkv].t()) is None  # not contiguous: no span
    assert ckpt.file_span(torch.zeros(4)) is None  # not from the file
