"""Bad inputs: every one ends in one clear error line, a non-zero exit, no traceback, no output.

Each case is a file a user could really end up with: an empty or random download, an HTML
error page or a git-lfs pointer saved under the checkpoint's name, a zip cut short or with
flipped bytes, a pickle that would run code, torch's legacy format, state dicts that do not
describe an MSN ViT, NaN/Inf weights, a mistyped variant name, a URL that is not http(s).
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from msn_cli.dev.synth import TINY, backbone_state, make_checkpoint, write_checkpoint
from msn_cli.errors import CheckpointError
from msn_cli.original.checkpoint import check_zip_integrity, infer_architecture, load_checkpoint
from tests.test_convert import _expected

P = "module."


def assert_clean_failure(r, code: int, *needles: str, out: Path | None = None) -> None:
    """One ``Error:`` line on stderr containing every needle, the exit code, nothing written."""
    assert r.code == code, (r.code, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n.lower() in r.stderr.lower(), (n, r.stderr)
    if out is not None:
        assert not out.exists()
        marks = (f".{out.name}.msn-tmp-", f".{out.name}.msn-old-", f".{out.name}.msn-lock")
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(marks)]
        assert leftovers == []
    cache = Path(os.environ["MSN_CACHE"])
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*")), list(cache.rglob("*"))


def _member_data(path: Path, name_suffix: str) -> tuple[int, int]:
    """(offset, size) of a stored zip member's data inside the file."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(name_suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    n, e = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + n + e, info.file_size


def _flip(path: Path, offset: int, count: int = 16) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        raw[i] ^= 0xA5
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------------------------
# Files that are not checkpoints at all


JUNK = {
    "empty": (b"", "empty file"),
    "random": (bytes(range(256)) * 16, "not a PyTorch checkpoint"),
    "html": (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found"
             b"</body></html>\n", "HTML"),
    "xml-s3": (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code></Error>',
               "HTML/XML"),
    "text": (b"Service temporarily unavailable, please retry later\n", "text file"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\n"
            b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
            b"size 86700000\n", "git-lfs pointer"),
}


@pytest.mark.parametrize("command", ["convert", "inspect"])
@pytest.mark.parametrize("case", list(JUNK))
def test_junk_files_are_refused_with_one_line(cli, tmp_path, case, command):
    data, needle = JUNK[case]
    ck = tmp_path / "vits16_800ep.pth.tar"
    ck.write_bytes(data)
    out = tmp_path / "out"
    args = ("convert", ck, out, "--no-verify") if command == "convert" else ("inspect", ck)
    r = cli(*args)
    assert_clean_failure(r, 3, needle, "not a PyTorch checkpoint", out=out)
    if case == "lfs":
        assert "git lfs pull" in r.stderr


def test_plain_pickle_is_not_a_torch_file(cli, tmp_path):
    ck = tmp_path / "x.pth.tar"
    ck.write_bytes(pickle.dumps({"target_encoder": {"cls_token": [0.0]}}, protocol=2))
    r = cli("convert", ck, tmp_path / "out", "--no-verify")
    assert_clean_failure(r, 3, "plain Python pickle", out=tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Damaged zip archives


@pytest.mark.parametrize("cut", ["half", "last-bytes", "first-member"])
def test_truncated_zip_is_refused(cli, tiny_ckpt, tmp_path, cut):
    raw = tiny_ckpt.read_bytes()
    keep = {"half": len(raw) // 2, "last-bytes": len(raw) - 30,
            "first-member": _member_data(tiny_ckpt, "data.pkl")[0] + 10}[cut]
    tiny_ckpt.write_bytes(raw[:keep])
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert_clean_failure(r, 3, "damaged", out=out)
    assert "download it again" in r.stderr


def test_flipped_bytes_in_the_pickle_read_as_damage_not_as_an_attack(cli, tiny_ckpt, tmp_path):
    start, size = _member_data(tiny_ckpt, "data.pkl")
    for where in (40, size // 2, size - 8):
        ck = tmp_path / f"flip{where}.pth.tar"
        ck.write_bytes(tiny_ckpt.read_bytes())
        _flip(ck, start + where, 4)
        out = tmp_path / f"out{where}"
        for args in (("convert", ck, out, "--no-verify"), ("inspect", ck),
                     ("convert", ck, out, "--dry-run")):
            r = cli(*args)
            assert_clean_failure(r, 3, "damaged", "CRC", out=out)
            assert "refused" not in r.stderr  # a damaged file is not reported as hostile


def test_flipped_bytes_in_a_tensor_are_caught_before_writing(cli, tiny_ckpt, tmp_path):
    # torch.load does not check the zip's CRC-32s; convert does, in its hashing pass.
    start, size = _member_data(tiny_ckpt, "/data/2")  # a tensor of the converted backbone
    _flip(tiny_ckpt, start + size // 2, 16)
    sd = torch.load(tiny_ckpt, weights_only=True, mmap=True)  # still loads: torch does not notice
    assert "target_encoder" in sd
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert_clean_failure(r, 3, "damaged", "data/2", "CRC-32", out=out)
    with pytest.raises(CheckpointError, match="CRC-32"):
        check_zip_integrity(tiny_ckpt)


def test_integrity_pass_returns_the_files_sha256(tiny_ckpt):
    import hashlib

    assert check_zip_integrity(tiny_ckpt) == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert check_zip_integrity(tiny_ckpt, want_sha256=False) is None


# ---------------------------------------------------------------------------------------------
# Hostile pickles: the side effect must never happen


class _Payload:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _PayloadExec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _evil_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    good = make_checkpoint(TINY)
    files = {}
    ck = dict(good, extra=_Payload(marker))
    files["zip"] = tmp_path / "evil-zip.pth.tar"
    torch.save(ck, files["zip"], pickle_protocol=2)
    files["zip-exec"] = tmp_path / "evil-exec.pth.tar"
    torch.save(dict(good, extra=_PayloadExec(marker)), files["zip-exec"], pickle_protocol=2)
    files["legacy"] = tmp_path / "evil-legacy.pth.tar"
    torch.save(ck, files["legacy"], _use_new_zipfile_serialization=False)
    files["raw-p2"] = tmp_path / "evil-raw2.pth.tar"
    files["raw-p2"].write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    files["raw-p4"] = tmp_path / "evil-raw4.pth.tar"
    files["raw-p4"].write_bytes(pickle.dumps({"target_encoder": _Payload(marker)}, protocol=4))
    # inside the backbone itself, where the converter looks first
    te = dict(good["target_encoder"])
    te[P + "cls_token"] = _Payload(marker)
    files["in-state-dict"] = tmp_path / "evil-sd.pth.tar"
    torch.save({"target_encoder": te, "prototypes": good["prototypes"]}, files["in-state-dict"])
    return files


def test_pickles_that_would_run_code_are_refused_and_never_run(cli, tmp_path):
    marker = tmp_path / "PWNED"
    files = _evil_files(tmp_path, marker)
    # The payload works: a plain unpickle of the raw file creates the marker.
    pickle.loads(files["raw-p2"].read_bytes())
    assert marker.exists()
    marker.unlink()
    for name, ck in files.items():
        out = tmp_path / f"out-{name}"
        for args in (("convert", ck, out, "--no-verify"), ("inspect", ck), ("convert", ck, out, "--dry-run")):
            r = cli(*args)
            assert_clean_failure(r, 3, "refused", out=out)
            assert "do not trust this file" in r.stderr
            assert not marker.exists(), (name, args)
    # the refusal names what the file asked for when torch says it
    r = cli("inspect", files["zip"])
    assert "system" in r.stderr


def test_hostile_pickle_is_refused_in_a_real_process(tmp_path):
    from tests.conftest import run_msn_process

    marker = tmp_path / "PWNED"
    files = _evil_files(tmp_path, marker)
    p = run_msn_process("convert", files["zip"], tmp_path / "out", "--no-verify", timeout=120)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and "refused" in p.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# torch's legacy (non-zip) format: loads without mmap and converts exactly


def test_legacy_format_converts_bit_exact(cli, tmp_path):
    ck = tmp_path / "legacy.pth.tar"
    torch.save(make_checkpoint(TINY), ck, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(ck)
    loaded = load_checkpoint(ck)
    assert loaded.storage.startswith("legacy")
    out = tmp_path / "out"
    r = cli("convert", ck, out, "--no-verify")
    assert r.code == 0, r.stderr
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}
    want = _expected(ck)
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    r = cli("inspect", ck, "--json")
    assert r.code == 0 and "legacy" in r.stdout


def test_truncated_legacy_file_is_refused(cli, tmp_path):
    ck = tmp_path / "legacy.pth.tar"
    torch.save(make_checkpoint(TINY), ck, _use_new_zipfile_serialization=False)
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size * 2 // 3])
    r = cli("convert", ck, tmp_path / "out", "--no-verify")
    assert_clean_failure(r, 3, "cannot read", out=tmp_path / "out")
    ck.write_bytes(ck.read_bytes()[:3000])
    r = cli("convert", ck, tmp_path / "out", "--no-verify")
    assert_clean_failure(r, 3, "ends too early (truncated)", out=tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Checkpoints that load but do not describe an MSN ViT


def _save(tmp_path: Path, name: str, mutate) -> Path:
    ck = make_checkpoint(TINY)
    mutate(ck)
    path = tmp_path / name
    torch.save(ck, path)
    return path


def _drop_block(i):
    def mutate(ck):
        te = ck["target_encoder"]
        for k in [k for k in te if k.startswith(f"{P}blocks.{i}.")]:
            del te[k]
    return mutate


def _set(key, value):
    def mutate(ck):
        ck["target_encoder"][P + key] = value
    return mutate


STRUCTURE = {
    "no-encoder": (lambda ck: ck.pop("target_encoder"), "no 'target_encoder' or 'encoder'"),
    "encoder-is-a-list": (lambda ck: ck.__setitem__("target_encoder", [1, 2]), "not a state dict"),
    "not-a-dict": (None, "not a dict"),
    "missing-middle-block": (None, "blocks are missing: 1"),
    "missing-first-block": (_drop_block(0), "blocks are missing: 0"),
    "missing-one-tensor": (lambda ck: ck["target_encoder"].pop(P + "blocks.1.attn.proj.weight"),
                           "missing 'module.blocks.1.attn.proj.weight'"),
    "qkv-2d-rows": (_set("blocks.0.attn.qkv.weight", torch.randn(2 * 64, 64)),
                    "'module.blocks.0.attn.qkv.weight' has shape [128, 64], expected [192, 64]"),
    "qkv-3d-plus-one": (_set("blocks.1.attn.qkv.weight", torch.randn(3 * 64 + 1, 64)),
                        "has shape [193, 64], expected [192, 64]"),
    "qkv-bias": (_set("blocks.0.attn.qkv.bias", torch.randn(100)), "expected [192]"),
    "non-square-patch": (_set("patch_embed.proj.weight", torch.randn(64, 3, 16, 8)), "16x8, not square"),
    "unknown-extra": (_set("blocks.0.attn.rel_pos_h", torch.randn(7, 64)),
                      "unaccounted source key 'module.blocks.0.attn.rel_pos_h'"),
    "non-tensor-entry": (_set("blocks.0.norm1.weight", [1.0, 2.0]), "non-tensor entries"),
}


@pytest.mark.parametrize("case", list(STRUCTURE))
def test_state_dicts_that_are_not_msn_vits_are_refused(cli, tmp_path, case):
    mutate, needle = STRUCTURE[case]
    if case == "not-a-dict":
        ck = tmp_path / "x.pth.tar"
        torch.save([torch.zeros(3)], ck)
    elif case == "missing-middle-block":
        arch3 = TINY.__class__(**{**TINY.__dict__, "num_layers": 3})
        ck = write_checkpoint(tmp_path / "x.pth.tar", arch3)
        obj = torch.load(ck, weights_only=True)
        _drop_block(1)(obj)
        torch.save(obj, ck)
    else:
        ck = _save(tmp_path, "x.pth.tar", mutate)
    out = tmp_path / "out"
    r = cli("convert", ck, out, "--no-verify")
    assert_clean_failure(r, 3, needle, out=out)
    r = cli("convert", ck, out, "--dry-run")  # refused before anything is planned to disk
    assert_clean_failure(r, 3, needle, out=out)


def test_online_encoder_requested_from_a_released_file(cli, tiny_ckpt, tmp_path):
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--encoder", "online", "--no-verify")
    assert_clean_failure(r, 3, "has no 'encoder'", "--encoder", out=tmp_path / "out")


def _meta_state(hidden, layers, mlp, patch, image):
    arch = TINY.__class__(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
                          intermediate_size=mlp, patch_size=patch, image_size=image)
    with torch.device("meta"):
        return backbone_state(arch, head=False)


@pytest.mark.parametrize("name,dims", [("vits16", (384, 12, 1536, 16)), ("vitl7", (1024, 24, 4096, 7))])
def test_trailing_blocks_missing_from_a_released_shape_are_refused(name, dims):
    hidden, layers, mlp, patch = dims
    full = _meta_state(hidden, layers, mlp, patch, 224)
    assert infer_architecture(full).variant.name == name
    short = {k: v for k, v in full.items() if not k.startswith(f"blocks.{layers - 1}.")}
    last = layers - 1
    with pytest.raises(CheckpointError, match=rf"shapes are those of {name}.*blocks {last}-{last}"):
        infer_architecture(short)


# ---------------------------------------------------------------------------------------------
# NaN / Inf weights: refused, naming the tensor (decision kept from convert.py)


@pytest.mark.parametrize("key,value", [("blocks.1.mlp.fc2.weight", float("nan")),
                                       ("norm.bias", float("inf")),
                                       ("blocks.0.attn.qkv.weight", float("-inf"))])
def test_nan_or_inf_weights_are_refused_naming_the_tensor(cli, tmp_path, key, value):
    def mutate(ck):
        t = ck["target_encoder"][P + key]
        t.view(-1)[t.numel() // 2] = value

    ck = _save(tmp_path, "x.pth.tar", mutate)
    out = tmp_path / "out"
    r = cli("convert", ck, out, "--no-verify")
    assert_clean_failure(r, 3, f"'{key}' holds NaN or infinite values", out=out)


def test_nan_in_float16_output_from_an_overflowing_float32_value(cli, tmp_path):
    ck = _save(tmp_path, "x.pth.tar", lambda c: c["target_encoder"][P + "norm.weight"].__setitem__(0, 1e6))
    out = tmp_path / "out"
    r = cli("convert", ck, out, "--no-verify", "--dtype", "float16")  # 1e6 is inf in float16
    assert_clean_failure(r, 3, "'norm.weight' holds NaN or infinite values", out=out)
    r = cli("convert", ck, out, "--no-verify")  # fine as float32
    assert r.code == 0, r.stderr


def test_nan_in_the_dropped_projection_head_does_not_matter(cli, tmp_path):
    def mutate(ck):
        ck["target_encoder"][P + "fc.fc1.weight"][0, 0] = float("nan")

    ck = _save(tmp_path, "x.pth.tar", mutate)
    r = cli("convert", ck, tmp_path / "out", "--no-verify")
    assert r.code == 0, r.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# Names and URLs


@pytest.mark.parametrize("typo,suggestion", [("vits61", "vits16"), ("vitb61", "vitb16"),
                                             ("VITL16X", "vitl16"), ("vitb_4", "vitb4")])
@pytest.mark.parametrize("command", ["convert", "inspect", "download"])
def test_unknown_variant_suggests_the_closest(cli, tmp_path, typo, suggestion, command):
    args = ("convert", typo, tmp_path / "out") if command == "convert" else (command, typo)
    r = cli(*args)
    assert_clean_failure(r, 2, f"unknown checkpoint name '{typo}'", f"did you mean '{suggestion}'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url", ["ftp://dl.fbaipublicfiles.com/msn/vits16_800ep.pth.tar",
                                 "file:///etc/passwd", "s3://bucket/vits16.pth.tar",
                                 "javascript://alert(1)"])
@pytest.mark.parametrize("command", ["convert", "inspect", "download"])
def test_non_http_urls_are_refused(cli, tmp_path, url, command):
    args = ("convert", url, tmp_path / "out") if command == "convert" else (command, url)
    r = cli(*args)
    assert_clean_failure(r, 2, "unsupported URL scheme", "http(s)")
    assert not (tmp_path / "out").exists()


def test_missing_file_is_not_mistaken_for_a_variant(cli, tmp_path):
    r = cli("convert", tmp_path / "nope.pth.tar", tmp_path / "out")
    assert_clean_failure(r, 3, "no such file", out=tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Damaged converted folders given to verify and push


def _truncate(name: str, keep: int):
    def damage(folder: Path) -> None:
        p = folder / name
        p.write_bytes(p.read_bytes()[:keep])
    return damage


def _edit_json(name: str, change):
    def damage(folder: Path) -> None:
        import json

        p = folder / name
        data = json.loads(p.read_text())
        change(data)
        p.write_text(json.dumps(data, indent=2))
    return damage


def _flip_weights(folder: Path) -> None:
    p = folder / "model.safetensors"
    raw = bytearray(p.read_bytes())
    raw[-100] ^= 0xFF  # inside the last tensor's data
    p.write_bytes(bytes(raw))


FOLDERS = {
    # case: (damage, verify exit, verify needle, push needle)
    "weights-missing": (lambda f: (f / "model.safetensors").unlink(), 1,
                        "model.safetensors is missing", "missing model.safetensors"),
    "weights-truncated": (_truncate("model.safetensors", 5000), 1, "truncated",
                          "model.safetensors: size 5000"),
    "weights-header-only": (_truncate("model.safetensors", 2), 1, "not a readable safetensors file",
                            "model.safetensors: size 2"),
    "weights-flipped": (_flip_weights, 1, "sha256 differs", "model.safetensors: sha256 differs"),
    "config-not-json": (lambda f: (f / "config.json").write_text("{not json"), 1,
                        "config.json is not valid JSON", "config.json: size 9"),
    "config-edited": (_edit_json("config.json", lambda d: d.__setitem__("layer_norm_eps", 1e-5)), 1,
                      "layer_norm_eps", "config.json: size"),
    "file-not-in-manifest": (_edit_json("preprocessor_config.json", lambda d: d.update(do_normalize=False)),
                             1, "preprocessor_config.json", "preprocessor_config.json:"),
    "manifest-wrong-hash": (_edit_json("msn_manifest.json",
                                       lambda d: d["files"]["model.safetensors"].update(sha256="0" * 64)),
                            1, "sha256 differs", "sha256 differs"),
    "manifest-not-json": (lambda f: (f / "msn_manifest.json").write_text("garbage"), 3, "not valid JSON",
                          "not valid JSON"),
    "manifest-missing": (lambda f: (f / "msn_manifest.json").unlink(), 3, "no msn_manifest.json",
                         "no msn_manifest.json"),
    "manifest-not-msn": (lambda f: (f / "msn_manifest.json").write_text('{"tool": "other"}'), 3,
                         "not an msn manifest", "not an msn manifest"),
}


@pytest.fixture
def damaged(tmp_path_factory, tmp_path):
    from tests.conftest import copy_verified

    def make(case: str) -> Path:
        folder = copy_verified(tmp_path_factory, tmp_path)
        FOLDERS[case][0](folder)
        return folder

    return make


@pytest.mark.parametrize("case", list(FOLDERS))
def test_damaged_folder_given_to_verify(cli, damaged, case):
    folder = damaged(case)
    _, code, needle, _ = FOLDERS[case]
    r = cli("verify", folder, "--no-record")
    if code == 1:  # the checks ran: the report on stdout says why, one error line which failed
        assert_clean_failure(r, code)
        assert needle.lower() in r.stdout.lower(), (needle, r.stdout)
    else:
        assert_clean_failure(r, code, needle)
    assert "Traceback" not in r.stdout


@pytest.mark.parametrize("case", list(FOLDERS))
def test_damaged_folder_given_to_push_sends_nothing(cli, damaged, case, monkeypatch, tmp_path):
    from tests.conftest import TOKEN, start_hub

    folder = damaged(case)
    needle = FOLDERS[case][3]
    r = cli("push", folder, "my-org/vit-msn-tiny", "--dry-run")
    assert_clean_failure(r, 3, needle)
    hub = start_hub(monkeypatch, tmp_path)
    try:
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        r = cli("push", folder, "my-org/vit-msn-tiny")
        assert_clean_failure(r, 3, needle)
        assert hub.commits == [] and hub.requests == []  # refused before any request
    finally:
        hub.stop()
