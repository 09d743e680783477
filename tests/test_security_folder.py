"""A folder, a manifest or an --against folder made by someone else (issue 19, folder half).

Each test plants what an attacker (or an accident) could put into a converted folder and
drives the real command: msn never writes or reads outside the folder, never blocks on a
special file, never records or reports a pass it did not earn, and a malformed value ends in
one clear error line with the format's own exit code, never "this is a bug in msn" (70).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from msn_cli.util import safeio
from tests.conftest import run_msn_process
from tests.test_faults_input import assert_clean_failure

W = "model.safetensors"
M = "msn_manifest.json"


def manifest(folder: Path) -> dict:
    return json.loads((folder / M).read_text())


def write_manifest_json(folder: Path, data: dict) -> None:
    (folder / M).write_text(json.dumps(data, indent=2))


def refresh_hashes(folder: Path) -> None:
    """Make the manifest's file table describe the files as they are now (as an editor would)."""
    m = manifest(folder)
    for name in m["files"]:
        data = (folder / name).read_bytes()
        m["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest_json(folder, m)


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def verify_json(cli, folder, *args):
    r = cli("verify", folder, "--json", *args)
    return r, (r.json() if r.stdout.strip() else None)


def no_bug_exit(r) -> None:
    assert r.code != 70 and "bug in msn" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# 4. the manifest: no write through a planted link, no file table reaching outside the folder
# ---------------------------------------------------------------------------------------------

def test_verify_replaces_a_planted_manifest_tmp_link_never_writes_through_it(cli, folder, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (folder / (M + ".tmp")).symlink_to(victim)
    (folder / ".msn_manifest.json.tmp").symlink_to(victim)
    r = cli("verify", folder)
    assert r.code == 1, r.stderr  # files a converted folder may not hold, named
    assert f"{M}.tmp" in r.stderr + r.stdout
    assert victim.read_text() == "precious\n"
    assert not (folder / M).is_symlink() and manifest(folder)["verify"]["passed"] is False


def test_a_manifest_link_is_replaced_not_written_through(cli, folder, tmp_path):
    victim = tmp_path / "victim.json"
    shutil.copy(folder / M, victim)
    before = victim.read_bytes()
    (folder / M).unlink()
    (folder / M).symlink_to(victim)
    r = cli("verify", folder)
    assert r.code == 0, r.stderr
    assert victim.read_bytes() == before
    assert not (folder / M).is_symlink()


@pytest.mark.parametrize("name", ["../victim.txt", "../../../../../../../../{victim}", "{victim}",
                                  "sub/../../victim.txt"])
def test_a_file_table_entry_outside_the_folder_is_refused(cli, folder, tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("root:x:0:0\n")
    name = name.format(victim=str(victim).lstrip("/") if name.startswith("..") else victim)
    m = manifest(folder)
    m["files"][name] = {"size": victim.stat().st_size,
                        "sha256": hashlib.sha256(victim.read_bytes()).hexdigest()}
    write_manifest_json(folder, m)
    r = cli("verify", folder, "--no-record")
    assert_clean_failure(r, 3, "not a file of the folder")
    r = cli("push", folder, "my-org/x", "--dry-run")
    assert_clean_failure(r, 3, "not a file of the folder")


def test_a_listed_link_leaving_the_folder_fails_verify_and_push(cli, folder, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 100)
    (folder / "extra.bin").symlink_to(outside)
    m = manifest(folder)
    m["files"]["extra.bin"] = {"size": 100, "sha256": hashlib.sha256(b"x" * 100).hexdigest()}
    write_manifest_json(folder, m)
    r, rep = verify_json(cli, folder, "--no-record")
    assert r.code == 1
    files = check(rep, "files")
    assert files["passed"] is False and "outside the folder" in files["detail"]
    r = cli("push", folder, "my-org/x", "--dry-run", "--skip-verify-check")
    assert_clean_failure(r, 3, "extra.bin")  # not a file a converted folder may hold


# ---------------------------------------------------------------------------------------------
# 6. --against compares what from_pretrained loads, never a glob
# ---------------------------------------------------------------------------------------------

def _perturbed_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    sd = load_file(str(dst / W))
    sd["layernorm.bias"] = sd["layernorm.bias"] + 1.0
    save_file(sd, str(dst / W), metadata={"format": "pt"})
    return dst


def test_a_decoy_beside_the_weights_does_not_pass_against(cli, folder, tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(folder, reference)
    here = _perturbed_copy(folder, tmp_path / "here")
    shutil.copy(reference / W, here / "zz-decoy.safetensors")
    r, rep = verify_json(cli, here, "--against", reference, "--no-record")
    assert r.code == 1
    ag = check(rep, "against")
    assert ag["passed"] is False and ag["differing"] == 1
    # and the same decoy planted in the other folder
    there = _perturbed_copy(folder, tmp_path / "there")
    shutil.copy(folder / W, there / "zz-decoy.safetensors")
    r, rep = verify_json(cli, folder, "--against", there, "--no-record")
    assert r.code == 1
    assert check(rep, "against")["passed"] is False


def _shard(folder: Path, out: Path, overlap: bool = False) -> Path:
    """``out``: the weights of ``folder`` as two shards with model.safetensors.index.json."""
    out.mkdir()
    shutil.copy(folder / "config.json", out / "config.json")
    sd = load_file(str(folder / W))
    keys = sorted(sd)
    first, second = keys[: len(keys) // 2], keys[len(keys) // 2:]
    if overlap:
        second = [first[0], *second]
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    weight_map = {}
    for name, part in zip(names, (first, second), strict=True):
        save_file({k: sd[k].contiguous() for k in part}, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return out


def test_against_reads_a_sharded_folder_through_its_index(cli, folder, tmp_path):
    sharded = _shard(folder, tmp_path / "sharded")
    shutil.copy(folder / W, sharded / "zz-decoy.safetensors")  # not in the index: never read
    r, rep = verify_json(cli, folder, "--against", sharded, "--no-record")
    assert r.code == 0, r.stderr
    ag = check(rep, "against")
    assert ag["passed"] is True and ag["tensors_there"] == ag["tensors_here"] == 38


def test_against_refuses_a_tensor_stored_twice(cli, folder, tmp_path):
    sharded = _shard(folder, tmp_path / "sharded", overlap=True)
    r = cli("verify", folder, "--against", sharded, "--no-record")
    assert_clean_failure(r, 3, "more than once")


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", 7])
def test_against_refuses_index_entries_outside_the_folder(cli, folder, tmp_path, shard):
    sharded = _shard(folder, tmp_path / "sharded")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["weight_map"]["layernorm.bias"] = shard
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    r = cli("verify", folder, "--against", sharded, "--no-record")
    assert_clean_failure(r, 3, "model.safetensors.index.json")


def test_against_reads_pytorch_model_bin_only_when_that_is_what_loads(cli, folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(folder / "config.json", other)
    sd = load_file(str(folder / W))
    sd["layernorm.bias"] = sd["layernorm.bias"] + 1.0
    save_file(sd, str(other / W))
    torch.save(load_file(str(folder / W)), other / "pytorch_model.bin")  # ignored by from_pretrained
    r, rep = verify_json(cli, folder, "--against", other, "--no-record")
    assert r.code == 1
    assert check(rep, "against")["differing"] == 1


def test_against_pytorch_model_bin_holding_a_list(cli, folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    torch.save([torch.zeros(3)], other / "pytorch_model.bin")
    r = cli("verify", folder, "--against", other, "--no-record")
    assert_clean_failure(r, 3, "pytorch_model.bin")


# ---------------------------------------------------------------------------------------------
# 7. a source that is not the recorded file never records a pass
# ---------------------------------------------------------------------------------------------

def test_a_source_other_than_the_recorded_one_fails_and_push_refuses(cli, folder):
    m = manifest(folder)
    m["source"]["sha256"] = "ab" * 32  # another checkpoint's hash, as someone may claim
    write_manifest_json(folder, m)
    r = cli("verify", folder)
    assert r.code == 1, r.stderr
    assert "not the file this folder was converted from" in r.stderr
    rec = manifest(folder)["verify"]
    assert rec["passed"] is False
    assert "not the file this folder was converted from" in rec["summary"]
    r = cli("push", folder, "my-org/x", "--dry-run")
    assert r.code == 1 and "recorded a failure" in r.stderr


def test_a_recorded_size_of_another_file_fails_too(cli, folder):
    m = manifest(folder)
    m["source"]["size"] += 1
    write_manifest_json(folder, m)
    r, rep = verify_json(cli, folder, "--no-record")
    assert r.code == 1
    assert "not the file this folder was converted from" in check(rep, "files")["detail"]


# ---------------------------------------------------------------------------------------------
# 8. special files: regular files only, never a blocked read
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["preprocessor_config.json", "config.json", W, M])
def test_a_fifo_in_the_folder_does_not_hang_verify(folder, name):
    (folder / name).unlink()
    os.mkfifo(folder / name)
    r = run_msn_process("verify", str(folder), "--no-record", timeout=240)
    assert r.returncode in (1, 3), r.stderr
    assert "named pipe" in r.stderr + r.stdout
    assert "bug in msn" not in r.stderr


@pytest.mark.parametrize("name", ["preprocessor_config.json", "config.json", W])
def test_a_device_behind_a_link_is_refused_not_read(cli, folder, name):
    (folder / name).unlink()
    (folder / name).symlink_to("/dev/zero")
    r, rep = verify_json(cli, folder, "--no-record")
    no_bug_exit(r)
    assert r.code == 1
    text = json.dumps(rep)
    assert "a device, not a regular file" in text


def test_a_fifo_as_the_against_weights_does_not_block(folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(folder / "config.json", other)
    os.mkfifo(other / W)
    r = run_msn_process("verify", str(folder), "--against", str(other), "--no-record", timeout=240)
    assert r.returncode == 3, r.stderr
    assert "named pipe" in r.stderr


# ---------------------------------------------------------------------------------------------
# 9. config.json checked against the weights header before anything is built
# ---------------------------------------------------------------------------------------------

def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    refresh_hashes(folder)


@pytest.mark.parametrize("layers, needle", [(1_000_000, "1000000 is outside 1..1024"),
                                             (1_000, "num_hidden_layers 1000, the weights hold 2")])
def test_a_config_claiming_a_million_layers_fails_fast(cli, folder, layers, needle):
    _edit_config(folder, num_hidden_layers=layers)
    t0 = time.monotonic()
    r, rep = verify_json(cli, folder, "--no-record")
    took = time.monotonic() - t0
    assert r.code == 1, r.stderr
    files = check(rep, "files")
    assert needle in files["detail"]
    loading = check(rep, "loading")
    assert loading["passed"] is False and "not loaded" in loading["detail"]
    assert took < 120  # building a million-layer model took minutes and gigabytes


@pytest.mark.parametrize("changes, needle", [
    ({"patch_size": 0}, "patch_size"),
    ({"hidden_size": "x"}, "hidden_size"),
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"num_attention_heads": 3}, "num_attention_heads"),
    ({"image_size": 10 ** 9}, "image_size"),
    ({"intermediate_size": 10 ** 9}, "intermediate_size"),
    ({"num_hidden_layers": True}, "num_hidden_layers"),
    ({"hidden_size": 128}, "hidden_size"),  # well-formed, but the weights are 64 wide
])
def test_config_values_that_cannot_be_are_a_clear_failure(cli, folder, changes, needle):
    _edit_config(folder, **changes)
    r, rep = verify_json(cli, folder, "--no-record")
    no_bug_exit(r)
    assert r.code == 1, r.stderr
    files = check(rep, "files")
    assert files["passed"] is False and needle in files["detail"]
    assert check(rep, "loading")["passed"] is False


# ---------------------------------------------------------------------------------------------
# 12. one typed reader per format: malformed values are that format's error
# ---------------------------------------------------------------------------------------------

def _header_file(path: Path, header_text: str, data: bytes = b"\0" * 16) -> Path:
    raw = header_text.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


GOOD_ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
BAD_HEADERS = {
    "entry-int": {"a": 7},
    "no-offsets": {"a": {"dtype": "F32", "shape": [2, 2]}},
    "offsets-text": {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": ["0", "16"]}},
    "offsets-one": {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16]}},
    "offsets-backwards": {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}},
    "offsets-size": {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}},
    "shape-int": {"a": {"dtype": "F32", "shape": 7, "data_offsets": [0, 16]}},
    "shape-negative": {"a": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}},
    "dtype-list": {"a": {"dtype": ["F32"], "shape": [2, 2], "data_offsets": [0, 16]}},
    "metadata-list": {"__metadata__": [1], "a": GOOD_ENTRY},
    "metadata-values": {"__metadata__": {"format": 1}, "a": GOOD_ENTRY},
}


@pytest.mark.parametrize("case", [*BAD_HEADERS, "deep", "not-utf8", "list"])
def test_safetensors_header_reader_refuses_malformed_headers(tmp_path, case):
    if case == "deep":
        text = "[" * 200_000 + "]" * 200_000
    elif case == "list":
        text = "[1, 2]"
    elif case == "not-utf8":
        text = '{"\udcff": 1}'
    else:
        text = json.dumps(BAD_HEADERS[case])
    from msn_cli.hf.safetensors_io import HeaderError, read_header

    path = tmp_path / "x.safetensors"
    if case == "not-utf8":
        raw = b'{"\xff": 1}'
        path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    else:
        _header_file(path, text)
    with pytest.raises(HeaderError):
        read_header(path)


def test_safetensors_header_reader_keeps_good_headers(tmp_path):
    from msn_cli.hf.safetensors_io import read_header

    path = _header_file(tmp_path / "x.safetensors",
                        json.dumps({"__metadata__": {"format": "pt"}, "a": GOOD_ENTRY}))
    assert read_header(path)["a"]["shape"] == [2, 2]


@pytest.mark.parametrize("case", ["entry-int", "no-offsets", "shape-int", "dtype-list", "deep"])
def test_a_malformed_weights_header_is_a_clear_failure(cli, folder, case):
    text = ("[" * 200_000 + "]" * 200_000) if case == "deep" else json.dumps(BAD_HEADERS[case])
    _header_file(folder / W, text)
    refresh_hashes(folder)
    r, rep = verify_json(cli, folder, "--no-record")
    no_bug_exit(r)
    assert r.code == 1, r.stderr
    assert "not a readable safetensors file" in check(rep, "files")["detail"]
    r = cli("verify", folder, "--no-record", "--against", folder)
    no_bug_exit(r)


def test_a_malformed_against_header_is_exit_3(cli, folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    _header_file(other / W, json.dumps(BAD_HEADERS["entry-int"]))
    r = cli("verify", folder, "--against", other, "--no-record")
    assert_clean_failure(r, 3, "model.safetensors")


MANIFEST_EDITS = {
    "source-string": lambda m: m.__setitem__("source", "vits16"),
    "architecture-string": lambda m: m.__setitem__("architecture", "vit"),
    "num-heads-text": lambda m: m["architecture"].__setitem__("num_heads", "x"),
    "files-entry-int": lambda m: m["files"].__setitem__("config.json", 7),
    "files-size-text": lambda m: m["files"]["config.json"].__setitem__("size", "7"),
    "files-sha-int": lambda m: m["files"]["config.json"].__setitem__("sha256", 7),
    "files-list": lambda m: m.__setitem__("files", ["config.json"]),
    "source-size-text": lambda m: m["source"].__setitem__("size", "big"),
    "source-path-list": lambda m: m["source"].__setitem__("path", ["x"]),
    "verify-string": lambda m: m.__setitem__("verify", "passed"),
    "verify-checks-ints": lambda m: m["verify"].__setitem__("checks", [1, 2]),
    "variant-int": lambda m: m.__setitem__("variant", 16),
    "dtype-list": lambda m: m.__setitem__("dtype", ["float32"]),
    "lists-itself": lambda m: m["files"].__setitem__(M, {"size": 1, "sha256": "0" * 64}),
}


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_malformed_manifest_values_are_exit_3(cli, folder, case):
    m = manifest(folder)
    MANIFEST_EDITS[case](m)
    write_manifest_json(folder, m)
    r = cli("verify", folder, "--no-record")
    assert_clean_failure(r, 3, M)
    r = cli("push", folder, "my-org/x", "--dry-run")
    assert_clean_failure(r, 3, M)


def test_a_deeply_nested_manifest_is_exit_3(cli, folder):
    (folder / M).write_text('{"tool": "msn", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    r = cli("verify", folder, "--no-record")
    assert_clean_failure(r, 3, M)


# ---------------------------------------------------------------------------------------------
# 12 / 14. OUT a symbolic link: refused before any work, nothing left behind
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("target_empty", [True, False])
def test_out_a_symbolic_link_is_refused_before_converting(cli, tiny_ckpt, tmp_path, force,
                                                          target_empty):
    target = tmp_path / "elsewhere"
    target.mkdir()
    if not target_empty:
        (target / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    out.symlink_to(target)
    args = ["convert", tiny_ckpt, out] + (["--force"] if force else [])
    t0 = time.monotonic()
    r = cli(*args)
    assert r.code == 2, r.stderr
    assert "symbolic link" in r.stderr and "bug in msn" not in r.stderr
    assert out.is_symlink() and sorted(p.name for p in target.iterdir()) == \
        ([] if target_empty else ["keep.txt"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    assert time.monotonic() - t0 < 30


def test_a_leftover_link_from_an_old_swap_is_removed_not_restored(cli, tiny_ckpt, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    (tmp_path / ".out.msn-old-12345").symlink_to(target)  # what msn <= 0.x left behind
    r = cli("convert", tiny_ckpt, out, "--no-verify", "-q")
    assert r.code == 0, r.stderr
    assert not out.is_symlink() and (out / W).is_file()
    assert not (tmp_path / ".out.msn-old-12345").exists()
    assert (target / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# 13. README.md in the file table: push generates the card, so it refuses the listed one
# ---------------------------------------------------------------------------------------------

def test_a_manifest_listing_readme_is_refused_by_push(cli, folder):
    (folder / "README.md").write_text("# mine\n")
    m = manifest(folder)
    m["files"]["README.md"] = {"size": 7, "sha256": hashlib.sha256(b"# mine\n").hexdigest()}
    write_manifest_json(folder, m)
    r = cli("push", folder, "my-org/x", "--dry-run")
    assert_clean_failure(r, 3, "README.md")


def test_safeio_relative_name_rule_is_the_one_inside_uses(tmp_path):
    assert safeio.relative_parts("a/b.json") == ("a", "b.json")
    for bad in ("../x", "/x", "a\\b", "", None, "a//../b"):
        with pytest.raises(safeio.UnsafeInput):
            safeio.relative_parts(bad)
