"""convert's model.safetensors, byte for byte: what the writer puts in the file.

Every tensor is its source's bits (or its source converted, with ``--dtype``), in the layout
the format documents: the 8-byte header length, the JSON header, then the tensors in name
order tiling the data section to the file's last byte. The header records the source's sha256
and what was dropped. A legacy-format checkpoint (read whole, not memory-mapped) gives the
very same tensor bytes as the zip format.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from msn_cli.conversion.plan import build_plan
from msn_cli.dev.synth import TINY, make_checkpoint
from msn_cli.original.checkpoint import load_checkpoint
from tests.conftest import TINY_MULTIHEAD


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


@pytest.mark.parametrize("arch", [TINY, TINY_MULTIHEAD], ids=["tiny", "multihead"])
def test_every_tensor_is_its_source_bit_for_bit(cli, make_ckpt, tmp_path, arch):
    ckpt = make_ckpt(arch)
    out = tmp_path / "out"
    r = cli("convert", ckpt, out, "--no-verify")
    assert r.code == 0, r.stderr
    raw = (out / "model.safetensors").read_bytes()
    header, data = _split(raw)
    meta = header.pop("__metadata__")
    assert "msn_source_sha256" not in meta  # the manifest records the source, not the weights
    manifest = json.loads((out / "msn_manifest.json").read_text())
    assert manifest["source"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["msn_dropped"].split(",")[0].startswith("module.fc.")
    names = sorted(header)
    assert list(header) == names  # written in name order, each right after the one before
    assert [header[k]["data_offsets"][0] for k in names] == [0, *(header[k]["data_offsets"][1]
                                                                for k in names[:-1])]
    assert header[names[-1]]["data_offsets"][1] == len(data)  # to the file's last byte
    loaded = load_checkpoint(ckpt)
    plan = build_plan(loaded)
    assert {t.target for t in plan.tensors} == set(names)
    for t in plan.tensors:
        lo, hi = header[t.target]["data_offsets"]
        want = t.take(loaded.state[t.source]).contiguous()
        assert data[lo:hi] == want.reshape(-1).view(torch.uint8).numpy().tobytes(), t.target


def test_a_dtype_change_writes_the_converted_values(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify", "--dtype", "float16")
    assert r.code == 0, r.stderr
    loaded = load_checkpoint(tiny_ckpt)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for t in build_plan(loaded, "float16").tensors:
            got = f.get_tensor(t.target)
            assert got.dtype == torch.float16
            assert torch.equal(got, t.take(loaded.state[t.source]).to(torch.float16)), t.target


def test_the_legacy_format_gives_the_same_tensor_bytes(cli, tiny_ckpt, tmp_path):
    legacy = tmp_path / "legacy.pth.tar"
    torch.save(make_checkpoint(TINY), legacy, _use_new_zipfile_serialization=False)
    for src, out in ((tiny_ckpt, tmp_path / "zip"), (legacy, tmp_path / "legacy")):
        r = cli("convert", src, out, "--no-verify")
        assert r.code == 0, r.stderr
    zip_header, zip_data = _split((tmp_path / "zip" / "model.safetensors").read_bytes())
    legacy_header, legacy_data = _split((tmp_path / "legacy" / "model.safetensors").read_bytes())
    assert legacy_data == zip_data
    assert legacy_header == zip_header  # metadata included: it names no source
