"""``msn push`` refusals and Hub failures: one clear message, the right exit code, nothing committed."""

from __future__ import annotations

import json
import socket

import pytest

from msn_cli.hf.manifest import MANIFEST, read_manifest, write_manifest
from tests.conftest import TOKEN


def one_error(r) -> str:
    """stderr holds one Error line (plus an optional Hint), no traceback."""
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


# -- the Hub says no -------------------------------------------------------------------------------

def test_invalid_token_is_401_exit_4_and_never_printed(cli, hub, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_value")
    r = cli("push", folder, "my-org/vit-msn-tiny")
    assert r.code == 4
    assert "rejected the token" in one_error(r) and "401" in r.stderr
    assert "Hint:" in r.stderr and "HF_TOKEN" in r.stderr
    assert "hf_wrong_token_value" not in r.stdout + r.stderr
    assert hub.commits == [] and "my-org/vit-msn-tiny" not in hub.state.repos


def test_401_at_commit_time_is_reported_too(cli, hub, folder):
    hub.fail(r"/commit/", 401, "Invalid credentials in Authorization header")
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 4
    assert "rejected the token" in one_error(r)
    assert hub.commits == []


def test_no_rights_on_the_organization_is_403(cli, hub, folder):
    r = cli("push", folder, "other-org/vit-msn-tiny", "--token", TOKEN)  # alice is not a member
    assert r.code == 4
    assert "not allowed" in one_error(r) and "403" in r.stderr
    assert "other-org" in r.stderr  # the hint names the namespace
    assert hub.commits == []


def test_read_only_token_cannot_push(cli, hub, folder):
    hub.add_user("carol", "hf_read_only_token", role="read")
    r = cli("push", folder, "carol/tiny", "--token", "hf_read_only_token")
    assert r.code == 4
    assert "not allowed" in one_error(r)
    assert "hf_read_only_token" not in r.stdout + r.stderr
    assert hub.commits == []


def test_unknown_organization_is_404(cli, hub, folder):
    r = cli("push", folder, "no-such-org/vit-msn-tiny", "--token", TOKEN)
    assert r.code == 4
    line = one_error(r)
    assert "no-such-org" in line and "404" in line
    assert hub.commits == []


def test_server_error_during_commit_leaves_the_repo_as_it_was(cli, hub, folder):
    hub.add_repo("alice/tiny", {"README.md": b"before\n"})
    before = hub.files_at("alice/tiny")
    hub.fail(r"/commit/", 500, "internal error")
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 4
    assert "the Hub failed" in one_error(r)
    assert hub.commits == [] and hub.files_at("alice/tiny") == before


def test_no_token_anywhere(cli, hub, folder):
    r = cli("push", folder, "alice/tiny")
    assert r.code == 4
    assert "no Hugging Face token" in one_error(r)
    assert "--token" in r.stderr and "HF_TOKEN" in r.stderr
    assert "pushing 5 files" not in r.stderr  # said before announcing an upload that cannot happen
    assert hub.requests == []


def test_offline_mode_sends_nothing(cli, hub, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("push", folder, "alice/tiny")
    assert r.code == 4
    assert "offline" in one_error(r) and "HF_HUB_OFFLINE" in r.stderr
    assert "pushing 5 files" not in r.stderr
    assert hub.requests == []


def test_hub_unreachable(cli, folder, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 4
    assert f"cannot reach the Hub at {url}" in one_error(r)


# -- refusing the folder (before any request) -------------------------------------------------------

def test_unverified_folder_is_refused_with_exit_3(cli, hub, tiny_ckpt, tmp_path):
    out = tmp_path / "raw"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    r = cli("push", out, "alice/tiny", "--token", TOKEN)
    assert r.code == 3
    assert "has not been verified" in one_error(r)
    assert "msn verify" in r.stderr and "--skip-verify-check" in r.stderr
    assert hub.requests == []


def test_folder_that_failed_verify_is_refused_with_exit_1(cli, hub, folder):
    # Break the model for real (a wrong LayerNorm eps), run the real verify, record its verdict.
    from msn_cli.verify import record_in_manifest, verify_folder

    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    report = verify_folder(folder)
    record_in_manifest(folder, report)
    assert read_manifest(folder)["verify"]["passed"] is False
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 1
    assert "verify recorded a failure" in one_error(r)
    assert hub.requests == []


def test_weights_changed_after_verify_are_refused(cli, hub, folder):
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (folder / "model.safetensors").write_bytes(bytes(data))
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 3
    line = one_error(r)
    assert "do not match its manifest" in line and "model.safetensors" in line
    assert hub.requests == []


def test_missing_file_is_refused_even_with_skip(cli, hub, folder):
    (folder / "preprocessor_config.json").unlink()
    r = cli("push", folder, "alice/tiny", "--token", TOKEN, "--skip-verify-check")
    assert r.code == 3
    assert "missing preprocessor_config.json" in one_error(r)
    assert hub.requests == []


def test_tampered_manifest_claiming_a_pass_is_caught_by_the_hashes(cli, hub, folder):
    # A manifest edited by hand to say "passed" does not make swapped weights pass: the sha256
    # of the file on disk is checked against the manifest's table.
    manifest = read_manifest(folder)
    manifest["verify"] = {**manifest["verify"], "passed": True, "summary": "edited by hand"}
    write_manifest(folder, manifest)
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("1e-06", "1e-05"))
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 3
    assert "config.json" in one_error(r)
    assert hub.requests == []


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/hostname"])
def test_manifest_naming_files_outside_the_folder_is_refused(cli, hub, folder, name):
    manifest = read_manifest(folder)
    manifest["files"][name] = {"size": 1, "sha256": "0" * 64}
    write_manifest(folder, manifest)
    r = cli("push", folder, "alice/tiny", "--token", TOKEN, "--skip-verify-check")
    assert r.code == 3
    assert "not a file of the folder" in one_error(r)
    assert hub.requests == []


def test_no_manifest_is_refused(cli, hub, folder):
    (folder / MANIFEST).unlink()
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 3
    assert MANIFEST in one_error(r)
    assert hub.requests == []


def test_not_a_folder(cli, hub, tmp_path):
    r = cli("push", tmp_path / "nope", "alice/tiny", "--token", TOKEN)
    assert r.code == 3
    one_error(r)


@pytest.mark.parametrize("repo_id", ["a/b/c", "bad--name", "spaces in/name", "", "badrepo", "/tiny",
                                     "alice/", "alice/x..y", "alice/-tiny", "alice/tiny.git",
                                     "café/tiny", "alice/" + "x" * 97])
def test_invalid_repo_id_is_a_usage_error(cli, hub, folder, repo_id):
    r = cli("push", folder, repo_id, "--token", TOKEN)
    assert r.code == 2
    assert "not a valid repo id" in one_error(r)
    assert hub.requests == []


@pytest.mark.parametrize("repo_id", ["badrepo", "bad--name/x"])
def test_dry_run_checks_the_repo_id_before_anything_else(cli, tmp_path, repo_id):
    r = cli("push", tmp_path / "no-such-folder", repo_id, "--dry-run")
    assert r.code == 2 and "not a valid repo id" in one_error(r) and "Would commit" not in r.stdout


def test_the_longest_valid_names_pass(cli, folder):
    r = cli("push", folder, "a_1/" + "x" * 96, "--dry-run", "--json")
    assert r.code == 0, r.stderr


def test_missing_card_file_is_a_usage_error(cli, hub, folder, tmp_path):
    r = cli("push", folder, "alice/tiny", "--card", tmp_path / "nope.md", "--token", TOKEN)
    assert r.code == 2
    assert "card file not found" in one_error(r)
    assert hub.requests == []


# -- only the files of a converted folder, only as checked (issue 24 items 2, 15) -------------------

@pytest.mark.parametrize("args", [[], ["--skip-verify-check"], ["--dry-run"]],
                         ids=["plain", "skip", "dry-run"])
def test_files_listed_beside_the_converted_ones_are_refused(cli, hub, folder, args):
    """Code and a pickle, listed in the manifest with their right sha256, are still not published."""
    import hashlib

    manifest = read_manifest(folder)
    for name, data in (("evil.py", b"import os; os.system('id')\n"), ("pytorch_model.bin", b"PK\x03\x04")):
        (folder / name).write_bytes(data)
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest(folder, manifest)
    r = cli("push", folder, "alice/tiny", "--token", TOKEN, *args)
    assert r.code == 3
    line = one_error(r)
    assert "evil.py" in line and "pytorch_model.bin" in line and "not files of a converted folder" in line
    assert hub.requests == [] and r.stdout == ""


def test_a_link_under_a_listed_name_is_refused(cli, hub, folder):
    """Even a link to an identical file inside the folder: push reads no file through a link."""
    (folder / "config.copy").write_bytes((folder / "config.json").read_bytes())
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("config.copy")
    for args in ([], ["--skip-verify-check"]):
        r = cli("push", folder, "alice/tiny", "--token", TOKEN, *args)
        assert r.code == 3, r.stderr
        assert "config.json" in one_error(r) and "symbolic link" in r.stderr
    assert hub.requests == []


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json"])
def test_code_named_in_an_uploaded_config_is_refused(cli, hub, folder, name):
    """auto_map can name another repository's code: never published, whatever the manifest says."""
    import hashlib

    data = json.loads((folder / name).read_text())
    data["auto_map"] = {"AutoModel": "someone/else--evil.EvilModel"}
    raw = (json.dumps(data, indent=2) + "\n").encode()
    (folder / name).write_bytes(raw)
    manifest = read_manifest(folder)
    manifest["files"][name] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    write_manifest(folder, manifest)
    for args in ([], ["--skip-verify-check"], ["--dry-run"]):
        r = cli("push", folder, "alice/tiny", "--token", TOKEN, *args)
        assert r.code == 3, r.stderr
        assert "auto_map" in one_error(r) and name in r.stderr
    assert hub.requests == []
