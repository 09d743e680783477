"""Behaviour the docs describe, checked as a careful reader would try it."""

from __future__ import annotations

import json
from pathlib import Path

from msn_cli.hf.manifest import MANIFEST
from tests.conftest import run_msn_process


def test_verify_from_another_folder_after_a_relative_convert(cli, make_ckpt, tmp_path, monkeypatch):
    ckpt = make_ckpt(name="rel.pth.tar")
    monkeypatch.chdir(ckpt.parent)
    r = cli("convert", "rel.pth.tar", "out", "--no-verify", "-q")
    assert r.code == 0, r.stderr
    folder = ckpt.parent / "out"
    recorded = json.loads((folder / MANIFEST).read_text())["source"]["path"]
    assert Path(recorded).is_absolute() and Path(recorded) == ckpt
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = cli("verify", folder, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["passed"] is True


def test_an_old_manifest_with_a_relative_path_finds_the_file_beside_the_folder(
        cli, make_ckpt, tmp_path, monkeypatch):
    ckpt = make_ckpt(name="old.pth.tar")
    folder = ckpt.parent / "out"
    assert cli("convert", ckpt, folder, "--no-verify", "-q").code == 0
    m = json.loads((folder / MANIFEST).read_text())
    m["source"]["path"] = "some/where/old.pth.tar"  # a relative path, as typed on the command line
    (folder / MANIFEST).write_text(json.dumps(m))
    monkeypatch.chdir(tmp_path)
    r = cli("verify", folder, "--json", "--no-record")
    assert r.code == 0, r.stderr
    assert r.json()["source"]["path"] == str(ckpt)
    ckpt.rename(ckpt.with_name("moved.pth.tar"))
    r = cli("verify", folder, "--no-record")
    assert r.code == 3 and "is gone" in r.stderr


def test_show_completion_prints_the_named_shells_script(tmp_path):
    fish = run_msn_process("--show-completion", "fish", env={"SHELL": "/bin/bash"})
    assert fish.returncode == 0, fish.stderr
    assert fish.stdout.startswith("complete --command msn") and "COMP_WORDS" not in fish.stdout
    zsh = run_msn_process("--show-completion", "zsh", env={"SHELL": "/bin/bash"})
    assert "compdef" in zsh.stdout and "complete --command" not in zsh.stdout
    bad = run_msn_process("--show-completion", "ksh")
    assert bad.returncode == 2 and "unknown shell 'ksh'" in bad.stderr


def test_install_completion_installs_for_the_named_shell(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = run_msn_process("--install-completion", "zsh", env={"HOME": str(home), "SHELL": "/bin/bash"})
    assert r.returncode == 0, r.stderr
    assert (home / ".zfunc" / "_msn").is_file() and "compinit" in (home / ".zshrc").read_text()
    assert not (home / ".bashrc").exists() and not (home / ".bash_completions").exists()
    r = run_msn_process("--install-completion", "fish", env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert "complete --command msn" in (home / ".config/fish/completions/msn.fish").read_text()


def test_every_exit_code_list_names_143():
    import typer

    from msn_cli.cli.app import app

    def walk(cmd):
        yield cmd
        for sub in (getattr(cmd, "commands", None) or {}).values():
            yield from walk(sub)

    lists = [h.split("Exit codes:", 1)[1].split("\n\n")[0] for h in
             (c.help or "" for c in walk(typer.main.get_command(app))) if "Exit codes:" in h]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert len(lists) >= 5 and all("143 terminated" in x for x in lists), lists
    assert "| 143  | terminated (SIGTERM) |" in readme


def test_against_table_on_success_only_with_v(cli, folder, tmp_path):
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(folder, twin)
    plain = cli("verify", folder, "--against", twin, "--no-record")
    assert plain.code == 0, plain.stderr
    assert "Tensor-by-tensor comparison" not in plain.stdout
    verbose = cli("verify", folder, "--against", twin, "--no-record", "-v")
    assert verbose.code == 0 and "Tensor-by-tensor comparison" in verbose.stderr  # -v: detail
    assert verbose.stdout == plain.stdout


def test_verify_source_on_a_folder_without_a_manifest(cli, folder):
    source = json.loads((folder / MANIFEST).read_text())["source"]["path"]
    (folder / MANIFEST).unlink()
    assert cli("verify", folder).code == 3  # the manifest names the source; without it, say one
    r = cli("verify", folder, "--source", source, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["recorded"] is False and not (folder / MANIFEST).exists()
    files = next(c for c in r.json()["checks"] if c["name"] == "files")
    assert "no manifest: hashes not checked" in files["detail"]
