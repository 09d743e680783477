"""``msn push`` against a local stand-in for the Hub (tests/hub_server.py): what gets committed.

Every folder here is a tiny synthetic checkpoint converted by ``msn convert`` and checked by the
real ``msn verify`` (run once per session, copied per test). The assertions compare what the
server received, byte for byte, with the folder's files and the card.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msn_cli.hf.manifest import MANIFEST, read_manifest
from tests.conftest import TOKEN


def folder_files(folder: Path) -> dict[str, bytes]:
    """What a push must send: every file the manifest lists, and the manifest itself."""
    manifest = read_manifest(folder)
    files = {name: (folder / name).read_bytes() for name in manifest["files"]}
    public = json.loads((folder / MANIFEST).read_text())
    public["source"]["path"] = Path(public["source"]["path"]).name
    if public["source"]["kind"] == "path":
        public["source"]["spec"] = public["source"]["path"]
    files[MANIFEST] = (json.dumps(public, indent=2) + "\n").encode()
    return files


def assert_received_folder(commit, folder: Path) -> str:
    """The commit holds exactly the folder's files plus README.md; returns the card text."""
    expected = folder_files(folder)
    assert set(commit.files) == set(expected) | {"README.md"}
    for name, data in expected.items():
        assert commit.files[name] == data, f"{name} differs from the folder's file"
    assert commit.deleted == [] and commit.lfs_files == []
    card = commit.files["README.md"].decode("utf-8")
    assert card.startswith("---\n") and "license: cc-by-nc-4.0" in card
    return card


# -- successful pushes ------------------------------------------------------------------------------

def test_new_repo_gets_one_commit_with_every_file_and_the_card(cli, hub, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = cli("push", folder, "my-org/vit-msn-tiny", "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit.repo_id == "my-org/vit-msn-tiny" and commit.ref == "main"
    card = assert_received_folder(commit, folder)
    # what --json reports is what the server made
    assert out["commit_url"] == f"{hub.url}/my-org/vit-msn-tiny/commit/{commit.oid}"
    assert out["commit_oid"] == commit.oid and out["repo_created"] is True and out["changed"] is True
    assert out["pr_url"] is None and out["user"] == "alice"
    assert out["card"] == card
    assert {f["path"]: f["size"] for f in out["files"]} == {k: len(v) for k, v in commit.files.items()}
    # the repo now holds the folder (plus the .gitattributes every new repo starts with)
    now = hub.files_at("my-org/vit-msn-tiny")
    assert set(now) == set(commit.files) | {".gitattributes"}
    assert all(now[name] == data for name, data in commit.files.items())
    assert hub.repo("my-org/vit-msn-tiny").private is False
    # the default message names the tool; the description carries the provenance
    manifest = read_manifest(folder)
    assert "msn" in commit.summary
    assert manifest["source"]["sha256"] in commit.description
    assert TOKEN not in r.stdout + r.stderr
    # one create, one commit: exactly the calls huggingface_hub makes
    calls = [(q.method, q.path) for q in hub.requests if q.path != "/api/agent-harnesses"]
    assert calls == [
        ("GET", "/api/whoami-v2"),
        ("GET", "/api/models/my-org/vit-msn-tiny"),
        ("POST", "/api/repos/create"),
        ("GET", "/api/models/my-org/vit-msn-tiny/revision/main"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/my-org/vit-msn-tiny/preupload/main"),
        ("POST", "/api/models/my-org/vit-msn-tiny/commit/main"),
    ]
    assert all(q.authenticated for q in hub.requests if q.path != "/api/agent-harnesses")


def test_plain_output_prints_the_commit_url_on_stdout(cli, hub, folder):
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 0, r.stderr
    commit = hub.commits[0]
    assert r.stdout.strip() == f"{hub.url}/alice/tiny/commit/{commit.oid}"
    assert "pushing 5 files" in r.stderr and "committed to alice/tiny (main)" in r.stderr
    assert TOKEN not in r.stdout + r.stderr


def test_existing_repo_is_updated_not_recreated(cli, hub, folder):
    hub.add_repo("my-org/vit-msn-tiny", {"README.md": b"old card\n", "model.safetensors": b"old weights",
                                         "notes.txt": b"kept\n"})
    r = cli("push", folder, "my-org/vit-msn-tiny", "--token", TOKEN, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["repo_created"] is False
    assert not [q for q in hub.requests if q.path == "/api/repos/create"]
    assert len(hub.commits) == 1
    assert_received_folder(hub.commits[0], folder)
    after = hub.files_at("my-org/vit-msn-tiny")
    assert after["notes.txt"] == b"kept\n"  # a commit adds and replaces; it deletes nothing
    assert after["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_revision_branch_is_created_from_main_and_committed_to(cli, hub, folder):
    r = cli("push", folder, "my-org/vit-msn-tiny", "--revision", "fp32", "--token", TOKEN, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["revision"] == "fp32"
    commit = hub.commits[0]
    assert commit.ref == "fp32"
    assert_received_folder(commit, folder)
    assert set(hub.files_at("my-org/vit-msn-tiny", "main")) == {".gitattributes"}  # main untouched
    assert [q.path for q in hub.requests if "/branch/" in q.path] == \
        ["/api/models/my-org/vit-msn-tiny/branch/fp32"]


def test_revision_that_exists_is_reused(cli, hub, folder):
    hub.add_repo("my-org/vit-msn-tiny", branches={"dev": {"old.txt": b"x"}})
    r = cli("push", folder, "my-org/vit-msn-tiny", "--revision", "dev", "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert hub.commits[0].ref == "dev"
    assert_received_folder(hub.commits[0], folder)
    assert hub.files_at("my-org/vit-msn-tiny", "dev")["old.txt"] == b"x"


def test_create_pr_opens_a_pull_request_and_leaves_main_alone(cli, hub, folder):
    hub.add_repo("my-org/vit-msn-tiny", {"README.md": b"maintained by someone else\n"})
    before = hub.files_at("my-org/vit-msn-tiny")
    r = cli("push", folder, "my-org/vit-msn-tiny", "--create-pr", "--token", TOKEN, "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    commit = hub.commits[0]
    assert commit.pr_num == 1 and commit.ref == "refs/pr/1"
    assert out["pr_url"] == f"{hub.url}/my-org/vit-msn-tiny/discussions/1" and out["pr_num"] == 1
    assert_received_folder(commit, folder)
    assert hub.files_at("my-org/vit-msn-tiny") == before
    assert hub.repo("my-org/vit-msn-tiny").prs[1]["target"] == "main"
    # the preupload and the commit both said create_pr
    sent = [q for q in hub.requests if "/preupload/" in q.path or "/commit/" in q.path]
    assert [q.query.get("create_pr") for q in sent] == [["1"], ["1"]]


def test_create_pr_plain_output_is_the_pr_url(cli, hub, folder):
    r = cli("push", folder, "my-org/x", "--create-pr", "--revision", "v2", "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == f"{hub.url}/my-org/x/discussions/1"
    assert hub.repo("my-org/x").prs[1]["target"] == "v2"
    assert_received_folder(hub.commits[0], folder)


def test_private_creates_a_private_repo(cli, hub, folder):
    r = cli("push", folder, "my-org/secret", "--private", "--token", TOKEN, "--json")
    assert r.code == 0, r.stderr
    assert hub.repo("my-org/secret").private is True
    assert r.json()["private"] is True
    assert_received_folder(hub.commits[0], folder)
    create = next(q for q in hub.requests if q.path == "/api/repos/create")
    assert create.status == 200


def test_private_on_an_existing_public_repo_warns(cli, hub, folder):
    hub.add_repo("my-org/public-one")
    r = cli("push", folder, "my-org/public-one", "--private", "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert "already exists and is public" in r.stderr
    assert hub.repo("my-org/public-one").private is False


def test_commit_message_is_used(cli, hub, folder):
    r = cli("push", folder, "alice/tiny", "-m", "Add MSN tiny", "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert hub.commits[0].summary == "Add MSN tiny"


def test_token_flag_wins_over_environment(cli, hub, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert len(hub.commits) == 1


def test_stored_login_is_used_when_nothing_else_is_given(cli, hub, folder, tmp_path):
    (tmp_path / "hf-token").write_text(TOKEN)
    r = cli("push", folder, "alice/tiny")
    assert r.code == 0, r.stderr
    assert len(hub.commits) == 1


def test_pushing_the_same_folder_twice_makes_no_second_commit(cli, hub, folder):
    assert cli("push", folder, "alice/tiny", "--token", TOKEN).code == 0
    r = cli("push", folder, "alice/tiny", "--token", TOKEN, "--json")
    assert r.code == 0, r.stderr
    assert len(hub.commits) == 1
    assert r.json()["changed"] is False
    assert r.json()["commit_oid"] == hub.commits[0].oid


def test_skip_verify_check_pushes_an_unverified_folder_with_a_warning(cli, hub, tiny_ckpt, tmp_path):
    out = tmp_path / "unverified"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    r = cli("push", out, "alice/raw", "--skip-verify-check", "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert "Warning:" in r.stderr and "never verified" in r.stderr
    card = assert_received_folder(hub.commits[0], out)
    assert "Not verified" in card


def test_custom_card_body_is_sent(cli, hub, folder, tmp_path):
    body = tmp_path / "card.md"
    body.write_text("# My port\n\nHand-written notes.\n")
    r = cli("push", folder, "alice/tiny", "--card", body, "--token", TOKEN)
    assert r.code == 0, r.stderr
    card = assert_received_folder(hub.commits[0], folder)
    assert card.endswith("# My port\n\nHand-written notes.\n")
    assert "pipeline_tag: image-feature-extraction" in card


def test_extra_files_in_the_folder_are_not_uploaded(cli, hub, folder):
    (folder / "notes.txt").write_text("scratch")
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert "notes.txt" in r.stderr
    assert "notes.txt" not in hub.commits[0].files
    # the published manifest keeps the source's file name, not where it lay on this machine
    sent = hub.commits[0].files[MANIFEST].decode()
    local = json.loads((folder / MANIFEST).read_text())["source"]["path"]
    assert "/" in local and local not in sent and str(folder.parent) not in sent
    assert json.loads(sent)["source"]["path"] == Path(local).name


# -- dry run ------------------------------------------------------------------------------------------

def test_dry_run_sends_nothing_and_shows_repo_files_and_card(cli, hub, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = cli("push", folder, "my-org/vit-msn-tiny", "--dry-run")
    assert r.code == 0, r.stderr
    assert hub.requests == []
    assert "my-org/vit-msn-tiny" in r.stdout
    from msn_cli.util.fmt import human_size

    for name, data in folder_files(folder).items():
        row = next(line for line in r.stdout.splitlines() if name in line)
        assert human_size(len(data)) in row
    assert "README.md" in r.stdout
    assert "license: cc-by-nc-4.0" in r.stdout and "@inproceedings" in r.stdout
    assert "nothing was sent" in r.stderr


def test_dry_run_json_lists_sizes_and_needs_no_token(cli, hub, folder):
    r = cli("push", folder, "my-org/vit-msn-tiny", "--dry-run", "--json")
    assert r.code == 0, r.stderr
    assert hub.requests == []
    out = r.json()
    assert out["dry_run"] is True and out["commit_url"] is None
    sizes = {f["path"]: f["size"] for f in out["files"]}
    expected = {k: len(v) for k, v in folder_files(folder).items()}
    expected["README.md"] = len(out["card"].encode())
    assert sizes == expected


def test_dry_run_in_a_fresh_process_sends_nothing(hub, folder):
    """A real process reads HF_ENDPOINT at import: still not a single request."""
    from conftest import run_msn_process

    p = run_msn_process("push", str(folder), "my-org/x", "--dry-run", "--json",
                        env={"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["endpoint"] == hub.url
    assert hub.requests == []


def test_help_has_examples(cli):
    r = cli("push", "--help")
    assert r.code == 0
    examples = [line.strip() for line in r.stdout.splitlines() if line.strip().startswith("msn push ")]
    assert len(examples) >= 3
    for opt in ("--private", "--revision", "--create-pr", "--commit-message", "--token", "--card",
                "--skip-verify-check", "--dry-run", "--json"):
        assert opt in r.stdout


def _hub_major() -> int:
    from importlib.metadata import version

    return int(version("huggingface_hub").split(".")[0])


def test_files_the_revision_already_holds_are_not_resent(cli, hub, folder):
    same_config = (folder / "config.json").read_bytes()
    hub.add_repo("alice/tiny", {"config.json": same_config, "README.md": b"old\n"})
    r = cli("push", folder, "alice/tiny", "--token", TOKEN, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["changed"] is True
    (commit,) = hub.commits
    expected = {**folder_files(folder), "README.md": commit.files["README.md"]}
    if _hub_major() >= 1:
        # huggingface_hub 1.x and later drop byte-identical files from a commit; 0.x sends
        # them again unless every file is unchanged (the repo ends up the same either way)
        assert "config.json" not in commit.files
        assert set(commit.files) == set(expected) - {"config.json"}
    else:
        assert set(commit.files) == set(expected)
    now = hub.files_at("alice/tiny")
    assert all(now[name] == data for name, data in expected.items())  # the repo ends up identical


def test_real_push_in_a_fresh_process(hub, folder):
    """No patched constants: the process reads HF_ENDPOINT and HF_TOKEN itself."""
    from conftest import run_msn_process

    p = run_msn_process("push", str(folder), "my-org/fresh", "--json",
                        env={"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN})
    assert p.returncode == 0, p.stderr
    (commit,) = hub.commits
    assert json.loads(p.stdout)["commit_url"] == f"{hub.url}/my-org/fresh/commit/{commit.oid}"
    assert_received_folder(commit, folder)
    assert TOKEN not in p.stdout + p.stderr


# -- what is uploaded is what was checked (issue 24 item 15) ------------------------------------------

@pytest.mark.parametrize("held_open", [False, True], ids=["checked-bytes", "held-open"])
def test_a_file_swapped_for_a_link_at_commit_time_is_not_uploaded(cli, hub, folder, monkeypatch,
                                                                 tmp_path, held_open):
    """Right before huggingface_hub uploads, the weights and config.json become links to a private
    file: the commit holds the bytes that were checked, never the links' target."""
    from huggingface_hub import HfApi

    if held_open:  # the tiny weights uploaded from their open descriptor, as real ones are
        from msn_cli.transfer import pushfiles

        monkeypatch.setattr(pushfiles, "SMALL", 4096)
        assert (folder / "model.safetensors").stat().st_size > 4096
    secret = tmp_path / "id_ed25519"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    original = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    real = HfApi.create_commit

    def swap_then_commit(self, *args, **kwargs):
        for name in original:
            (folder / name).unlink()
            (folder / name).symlink_to(secret)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", swap_then_commit)
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 0, r.stderr
    (commit,) = hub.commits
    for name, data in original.items():
        assert commit.files[name] == data
    assert not any(b"PRIVATE KEY" in data for data in commit.files.values())


def test_skip_verify_check_uploads_what_it_hashed_not_a_link_put_there_since(hub, folder, tmp_path):
    from msn_cli.transfer.push import plan_push, send_push

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for the Hub\n")
    plan = plan_push(folder, "alice/tiny", skip_verify_check=True)
    config = (folder / "config.json").read_bytes()
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(secret)
    send_push(plan, token=TOKEN)
    assert hub.commits[0].files["config.json"] == config
    plan.close()


def test_a_held_file_changed_in_place_is_not_sent(hub, folder, monkeypatch):
    """An open file guards against a swap, not a write into the file itself: the sha256 taken
    when the commit is prepared must be the one checked, or nothing is sent."""
    from msn_cli.errors import FolderError
    from msn_cli.transfer import pushfiles
    from msn_cli.transfer.push import plan_push, send_push

    monkeypatch.setattr(pushfiles, "SMALL", 4096)  # the weights are held open
    plan = plan_push(folder, "alice/tiny")
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(FolderError, match="changed while preparing"):
        send_push(plan, token=TOKEN)
    plan.close()
    assert hub.commits == []


# -- habits from hf, the dry run, the terminal (issue 25) ---------------------------------------------

def test_dry_run_lists_every_whole_sha256(cli, folder):
    import hashlib

    r = cli("push", folder, "alice/tiny", "--dry-run")
    assert r.code == 0, r.stderr
    card = cli("push", folder, "alice/tiny", "--dry-run", "--json").json()["card"].encode()
    for name, data in {**folder_files(folder), "README.md": card}.items():
        at = next(i for i, line in enumerate(r.stdout.splitlines()) if line.strip().startswith(name))
        assert r.stdout.splitlines()[at + 1].split() == ["sha256", hashlib.sha256(data).hexdigest()]
    listing = r.stdout[:r.stdout.index("README.md (model card)")]
    assert all(len(line) <= 80 for line in listing.splitlines())  # COLUMNS is 80 here


def test_the_hf_upload_order_is_recognised_and_said(cli, hub, folder):
    r = cli("push", "alice/tiny", folder, "--token", TOKEN)
    assert r.code == 0, r.stderr
    assert "msn push takes FOLDER REPO_ID" in r.stderr
    assert hub.commits[0].repo_id == "alice/tiny"
    assert_received_folder(hub.commits[0], folder)


def test_no_private_makes_a_public_repo(cli, hub, folder):
    r = cli("push", folder, "my-org/open", "--no-private", "--token", TOKEN, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["private"] is False and hub.repo("my-org/open").private is False
    assert "--no-private" in cli("push", "--help").stdout


def test_dry_run_on_a_terminal_breaks_no_word_and_a_pipe_gets_the_card_whole(cli, folder):
    from tests.test_conventions import _in_a_terminal
    from tests.test_screens import Screen

    code, raw = _in_a_terminal(["push", str(folder), "alice/tiny", "--dry-run"], {}, size=(80, 60))
    screen = Screen(80, raw)
    assert code == 0, screen.text
    assert not screen.broken_mid_word(), screen.broken_mid_word()
    assert all(len(line) <= 80 for line in screen.lines)
    assert "@inproceedings" not in screen.text and "--dry-run | less" in screen.text.replace("\n", " ")
    card = cli("push", folder, "alice/tiny", "--dry-run", "--json").json()["card"]
    code, _raw, piped = _in_a_terminal(["push", str(folder), "alice/tiny", "--dry-run"], {},
                                       stdout_to_pipe=True, size=(80, 60))
    assert code == 0 and card in piped.decode()
