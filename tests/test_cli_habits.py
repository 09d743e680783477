"""The habits people bring from hf, git and pip, and the messages of the CLI layer (issue 25)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from msn_cli import __version__
from tests.conftest import run_msn_process

COCO_URL = "http://images.cocodataset.org/val2017/000000039769.jpg"


def _help(cli, monkeypatch, *args: str, columns: int = 80) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    r = cli(*args, "-h")
    assert r.code == 0, r.stderr
    return r.stdout


# -- item 25: msn version, msn -V -------------------------------------------------------------

def test_version_command_and_short_flag(cli):
    r = cli("version")
    assert r.code == 0
    assert r.stdout.splitlines()[0] == f"msn {__version__}"
    assert any(line.startswith("torch ") for line in r.stdout.splitlines())
    short = cli("-V")
    assert short.code == 0 and short.stdout.strip() == f"msn {__version__}"
    data = cli("version", "--json").json()
    assert data["msn"] == __version__ and "transformers" in data


# -- item 28: a closed pipe is not "a check failed" ------------------------------------------

def test_closed_pipe_exits_141_quietly(tiny_ckpt):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before msn writes: `msn inspect X | head -0`
    try:
        p = subprocess.run([sys.executable, "-m", "msn_cli", "inspect", str(tiny_ckpt),
                            "--num-heads", "1"], stdout=write_end, stderr=subprocess.PIPE,
                           text=True, timeout=300)
    finally:
        os.close(write_end)
    assert p.returncode == 141, p.stderr
    assert "Error" not in p.stderr and "Traceback" not in p.stderr and "Exception" not in p.stderr


# -- item 17: msn's words, not Python's or pydantic's ----------------------------------------

@pytest.mark.parametrize(("value", "said"), [("0", "must be 1 or more"),
                                             ("two", "must be a whole number")])
def test_bad_number_is_said_in_msn_style(cli, tiny_ckpt, tmp_path, value, said):
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--num-heads", value)
    assert r.code == 2
    assert f"Error: --num-heads {said}" in r.stderr
    assert "Input should" not in r.stderr and "Usage:" not in r.stderr
    assert "Hint: msn convert -h" in r.stderr
    assert not (tmp_path / "out").exists()


def test_image_that_is_not_one_names_no_python_object(tmp_path, capsys):
    from msn_cli.cli.entry import exit_code_for
    from msn_cli.errors import MsnError
    from msn_cli.verify.photos import load_photo

    card = tmp_path / "card.md"
    card.write_text("# a model card, not a photograph\n")
    with pytest.raises(MsnError) as caught:
        load_photo(card)
    assert exit_code_for(caught.value) == 3
    err = capsys.readouterr().err
    assert "<_io" not in err and "BufferedReader" not in err
    assert str(card) in err


def test_hub_failure_names_no_exception_classes(capsys):
    from msn_cli.cli.entry import exit_code_for
    from msn_cli.errors import NetworkError

    # huggingface_hub's chain, as verify --against and export report it without a network
    e = NetworkError("cannot fetch org/repo from the Hub: LocalEntryNotFoundError: Got: "
                     "ConnectError: [Errno 111] Connection refused", hint="check the repo id")
    assert exit_code_for(e) == 4
    err = capsys.readouterr().err
    assert "Error: cannot fetch org/repo from the Hub: Connection refused" in err
    assert not re.search(r"\w+Error:", err.replace("Error: cannot", ""))


# -- item 9: docs/cli.md says what -h says ---------------------------------------------------

def test_reference_uses_the_words_of_help(cli, monkeypatch):
    from msn_cli.dev.clidocs import render

    shown = _help(cli, monkeypatch, "convert", columns=200)
    docs = render()
    for words in ("Show this message and exit.", "INTEGER [x>=1]", "[env var: MSN_BASE_URL]"):
        assert words in shown
        assert words in docs
    assert "Show the help and exit." not in docs and "(1..)" not in docs


# -- item 22: -h at 80 columns ---------------------------------------------------------------

def test_help_folds_urls_rather_than_cutting_them(cli, monkeypatch):
    for command in ("verify", "convert", "export"):
        text = _help(cli, monkeypatch, command)
        assert "…" not in text, command
        joined = re.sub(r"[\s│]", "", text)
        assert "https://dl.fbaipublicfiles.com/msn/" in joined, command
    assert COCO_URL in re.sub(r"[\s│]", "", _help(cli, monkeypatch, "verify"))


def test_no_help_screen_cuts_a_word_even_at_50_columns(cli, monkeypatch):
    from tests.test_conventions import ALL

    for name, _ in ALL:
        text = _help(cli, monkeypatch, *name.split(), columns=50)
        assert "…" not in text, name


def test_example_comment_never_wraps_to_column_one(cli, monkeypatch):
    text = _help(cli, monkeypatch, "convert")
    examples = text.split("Examples:")[1].split("╭")[0]
    lines = [line for line in examples.splitlines() if line.strip()]
    assert lines and all(line.startswith("   ") for line in lines), lines
    assert "  # the official uploads' processor" in examples
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    from tests.test_conventions import ALL

    for name, _ in ALL:  # no command's example wraps back to the text's margin at 80 columns
        text = _help(cli, monkeypatch, *name.split())
        examples = text.split("Examples:")[1].split("╭")[0] if "Examples:" in text else ""
        wrapped = [line for line in examples.splitlines()
                   if line.startswith(" ") and not line.startswith("  ") and " --" in f" {line}"]
        assert not wrapped, (name, wrapped)


# -- item 27: choices in help and in completion ----------------------------------------------

def test_help_shows_the_choices(cli, monkeypatch):
    text = _help(cli, monkeypatch, "convert", columns=200)
    for choices in ("float32|float16|bfloat16", "target|online", "msn|seed"):
        assert choices in text


def _complete(words: str, tmp_path) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    p = run_msn_process(env={"_MSN_COMPLETE": "complete_bash", "COMP_WORDS": words,
                             "COMP_CWORD": str(cword)}, cwd=tmp_path)
    return p.stdout.split()


def test_completion_offers_values_and_variant_names(tmp_path):
    (tmp_path / "vits16_800ep.pth.tar").write_bytes(b"")
    assert _complete("msn convert --dtype ", tmp_path) == ["float32", "float16", "bfloat16"]
    assert _complete("msn convert x --encoder o", tmp_path) == ["online"]
    assert _complete("msn convert x y --preprocessing ", tmp_path) == ["msn", "seed"]
    offered = _complete("msn convert vits", tmp_path)
    assert offered == ["vits16", "vits16_800ep.pth.tar"]  # the name, and the file beside
    assert "all" in _complete("msn convert a", tmp_path)
    assert _complete("msn inspect vitl", tmp_path) == ["vitl16", "vitl7"]
    assert _complete("msn download vitb", tmp_path) == ["vitb16", "vitb4"]


def test_version_json_is_json(cli):
    assert json.loads(cli("version", "--json").stdout)["python"]


# -- item 14: --no-config, offered when the config beside the weights disagrees with them ------

def test_no_config_ignores_a_config_from_another_run(cli, tiny_ckpt, tmp_path):
    from msn_cli.dev.synth import write_run_config
    from msn_cli.hf.manifest import read_manifest

    write_run_config(tiny_ckpt.parent, model_name="deit_base")  # not the tiny weights' network
    out = tmp_path / "out"
    refused = cli("convert", tiny_ckpt, out, "--num-heads", "1")
    assert refused.code == 3 and "--no-config" in refused.stderr
    assert not out.exists()
    done = cli("convert", tiny_ckpt, out, "--num-heads", "1", "--no-config")
    assert done.code == 0, done.stderr
    assert read_manifest(out).get("run_config") is None
    assert cli("verify", out, "--no-record").code == 3  # the config beside is read again
    assert cli("verify", out, "--no-config", "--no-record").code == 0
    assert cli("inspect", tiny_ckpt, "--no-config", "--num-heads", "1").code == 0
    both = cli("convert", tiny_ckpt, tmp_path / "o2", "--no-config", "--config", tmp_path / "x")
    assert both.code == 2 and "--no-config" in both.stderr


# -- item 16: msn knows its own output -------------------------------------------------------

def test_inspect_a_converted_folder_and_its_weights(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--num-heads", "1").code == 0
    r = cli("inspect", out, "--json")
    assert r.code == 0, r.stderr
    data = r.json()
    manifest = json.loads((out / "msn_manifest.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert data["written_by_msn"] is True
    assert data["config"]["hidden_size"] == config["hidden_size"]
    assert data["verify"]["passed"] is True and data["verify"]["date"] == manifest["verify"]["date"]
    assert {p["key"] for p in data["provenance"]} == {p["key"] for p in manifest["provenance"]}
    assert data["source"]["sha256"] == manifest["source"]["sha256"]
    text = cli("inspect", out)
    assert text.code == 0 and "a folder msn convert wrote" in text.stdout
    assert "verify: passed" in text.stdout and f"msn push {out}" in text.stderr
    weights = cli("inspect", out / "model.safetensors", "--json")
    assert weights.code == 0 and weights.json()["folder"] == str(out)
    assert "weights of the model folder" in weights.stderr


def test_inspect_a_folder_from_elsewhere_and_a_lone_safetensors(cli, tiny_ckpt, tmp_path):
    import shutil

    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--num-heads", "1").code == 0
    hub = tmp_path / "hub"
    hub.mkdir()
    shutil.copy(out / "config.json", hub)
    shutil.copy(out / "model.safetensors", hub)
    r = cli("inspect", hub, "--json")
    assert r.code == 0 and r.json()["written_by_msn"] is False
    assert any("--source" in step for step in r.json()["next"])
    lone = tmp_path / "lone.safetensors"
    shutil.copy(out / "model.safetensors", lone)
    refused = cli("inspect", lone)
    assert refused.code == 2 and "is a safetensors file" in refused.stderr
    assert "neither a zip nor a pickle" not in refused.stderr


# -- item 19: the family row and the heads row agree -----------------------------------------

def test_family_row_names_the_width_the_heads_row_credits(cli, make_ckpt):
    from msn_cli.dev.synth import family_arch

    ckpt = make_ckpt(family_arch(192, 2))  # deit_tiny's width, not its 12 blocks
    r = cli("inspect", ckpt)
    assert r.code == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") > 3}
    assert "deit_tiny" in rows["heads"]
    assert "deit_tiny" in rows["family"]


# -- item 1: the README says how msn gets on the PATH before its first msn command -----------

def test_readme_puts_msn_on_the_path_before_using_it():
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```console\n(.*?)```", readme, flags=re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()]
    first_msn = next(i for i, c in enumerate(commands) if c.startswith("msn "))
    assert any(c.startswith(". .venv/bin/activate") for c in commands[:first_msn])
    assert "141" in readme.split("## Exit codes")[1]
