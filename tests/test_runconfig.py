"""A run's params-msn-train.yaml: read safely, checked by type, local paths never taken."""

from __future__ import annotations

import json
import time

import pytest

from msn_cli.dev.synth import run_config, write_run_config
from msn_cli.errors import EXIT_BAD_INPUT, ConfigError
from msn_cli.original.runconfig import (
    CONFIG_NAME,
    FIELDS,
    MAX_BYTES,
    find_run_config,
    looks_like_path,
    read_run_config,
)

PATHS = ("/datasets01/", "imagenet_full_size/061417/", "/checkpoint/msn_logs/", "/runs/old/latest.pth.tar")


def _no_paths(obj) -> None:
    text = json.dumps(obj)
    for p in PATHS:
        assert p not in text
    assert not any(looks_like_path(v) for v in obj.values())


def test_reads_the_original_layout(tmp_path):
    cfg = run_config("deit_huge", epochs=300, num_proto=2048, read_checkpoint="/runs/old/latest.pth.tar")
    path = write_run_config(tmp_path, cfg)
    rc = read_run_config(path)
    assert rc.model_name == "deit_huge"
    assert rc.write_tag == "msn-experiment-1"
    t = rc.training()
    assert t["model_name"] == "deit_huge" and t["epochs"] == 300 and t["num_proto"] == 2048
    assert t["batch_size"] == 64 and t["lr"] == 0.001 and t["final_lr"] == 1e-06
    assert t["use_bn"] is True and t["hidden_dim"] == 2048 and t["output_dim"] == 256
    assert t["rand_size"] == 224 and t["focal_size"] == 96 and t["focal_views"] == 10
    assert t["patch_drop"] == 0.15 and t["start_sharpen"] == 0.25 and t["me_max"] is True
    # every field of the table that the original config has is taken, in the table's order
    assert list(t) == [f.key for f in FIELDS if f.key in t]
    # all but freeze_proto and two_layer, which the original config leaves to the code's defaults
    assert set(t) == {f.key for f in FIELDS} - {"freeze_proto", "two_layer"}
    _no_paths(t)
    for key in ("root_path", "image_folder", "folder", "read_checkpoint", "write_tag", "num_workers"):
        assert key not in t


def test_yaml_quirks_are_read_as_the_training_code_reads_them(tmp_path):
    # PyYAML reads 1e-6 (no dot) as a string; the value is still a number
    p = tmp_path / CONFIG_NAME
    p.write_text("meta: {model_name: deit_base}\noptimization: {final_lr: 1e-6, clip_grad: 3, epochs: 10}\n")
    t = read_run_config(p).training()
    assert t == {"model_name": "deit_base", "epochs": 10, "final_lr": 1e-6, "clip_grad": 3.0}
    assert isinstance(t["clip_grad"], float)


def test_a_config_without_model_name(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text("optimization: {epochs: 10}\n")
    rc = read_run_config(p)
    assert rc.model_name is None and rc.training() == {"epochs": 10}


def test_find_run_config(tmp_path):
    ck = tmp_path / "run" / "msn-latest.pth.tar"
    ck.parent.mkdir()
    ck.write_bytes(b"x")
    assert find_run_config(ck) is None
    assert find_run_config(ck.parent) is None
    path = write_run_config(ck.parent)
    assert find_run_config(ck) == path
    assert find_run_config(ck.parent) == path


def _err(tmp_path, text: str | bytes) -> ConfigError:
    p = tmp_path / CONFIG_NAME
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        read_run_config(p)
    e = ei.value
    assert e.exit_code == EXIT_BAD_INPUT == 3
    assert "\n" not in e.message and str(p) in e.message
    return e


@pytest.mark.parametrize(("text", "words"), [
    ("meta: [model_name: deit_small\n", "not valid YAML"),
    ("meta:\n  model_name: deit_small\n   bad: indent\n", "not valid YAML"),
    ("meta:\n\tmodel_name: x\n", "not valid YAML"),
    ("", "empty"),
    ("- a\n- b\n", "a list, not a mapping"),
    ("foo: 1\nbar: 2\n", "none of the sections"),
    ("meta: deit_small\n", "section 'meta' is a str"),
    ("optimization: {epochs: many}\n", "optimization.epochs is 'many', expected a whole number"),
    ("optimization: {epochs: -3}\n", "expected a whole number"),
    ("optimization: {epochs: true}\n", "expected a whole number"),
    ("optimization: {lr: fast}\n", "optimization.lr is 'fast', expected a number"),
    ("optimization: {lr: .nan}\n", "expected a finite number"),
    ("meta: {use_bn: 1}\n", "meta.use_bn is 1, expected true or false"),
    ("meta: {model_name: /home/me/models/deit_small}\n", "expected a constructor name"),
    ("meta: {model_name: [deit_small]}\n", "meta.model_name is list"),
    ("meta: {model_name: null}\n", "expected a constructor name"),
])
def test_malformed(tmp_path, text, words):
    assert words in _err(tmp_path, text).message


def test_not_text(tmp_path):
    assert "not UTF-8" in _err(tmp_path, b"meta:\n  model_name: \xff\xfe\n").message


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['echo owned > /tmp/msn-owned']",
    "!!python/object:collections.OrderedDict {}",
    "!!python/name:os.system",
])
def test_python_tags_are_refused_and_never_run(tmp_path, tag):
    e = _err(tmp_path, f"meta:\n  model_name: {tag}\n")
    assert "not plain YAML data" in e.message and "python/" in e.message
    assert e.hint and "never constructs" in e.hint


def _bomb(levels: int = 10, width: int = 9) -> list[str]:
    """A billion-laughs document: ``width ** levels`` leaves once expanded, a few nodes as read."""
    lines = ['a: &a [' + ",".join(['"lol"'] * width) + ']']
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * width) + "]")
    return lines


def test_alias_bomb_is_read_quickly_and_never_expanded(tmp_path):
    """safe_load makes each alias one shared object, and only the table's fields are read."""
    p = tmp_path / CONFIG_NAME
    p.write_text("\n".join([*_bomb(), "meta: {model_name: deit_small}"]) + "\n")
    start = time.perf_counter()
    config = read_run_config(p)
    assert time.perf_counter() - start < 2
    assert config.training() == {"model_name": "deit_small"}


def test_a_few_aliases_are_fine(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text("base: &lr 0.001\noptimization: {lr: *lr, start_lr: *lr}\n")
    assert read_run_config(p).training() == {"lr": 0.001, "start_lr": 0.001}


def test_deep_nesting_is_refused(tmp_path):
    assert "nested more than" in _err(tmp_path, "x: " + "[" * 5000 + "]" * 5000 + "\n").message


def test_huge_file_is_refused_without_parsing(tmp_path):
    body = "meta:\n  model_name: deit_small\n" + "# padding\n" * (MAX_BYTES // 10 + 10)
    start = time.perf_counter()
    e = _err(tmp_path, body)
    assert time.perf_counter() - start < 1
    assert "over 1024 kB" in e.message


def test_huge_integer_is_refused(tmp_path):
    assert "cannot be read" in _err(tmp_path, "optimization: {epochs: " + "9" * 20000 + "}\n").message


def test_missing_and_not_a_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_run_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_run_config(tmp_path)


def test_write_tag_that_looks_like_a_path_is_dropped(tmp_path):
    path = write_run_config(tmp_path, run_config(write_tag="../elsewhere/run"))
    assert read_run_config(path).write_tag is None


def test_a_recursive_alias_is_harmless(tmp_path):
    p = tmp_path / CONFIG_NAME
    p.write_text("meta: &m {model_name: deit_small, self: *m}\n")
    assert read_run_config(p).model_name == "deit_small"
    # at a field, the value is refused by its type, never walked or printed
    e = _err(tmp_path, "optimization: &o {lr: *o}\n")
    assert "optimization.lr is dict, expected a finite number" in e.message


def test_alias_bomb_at_a_field_is_refused_by_its_type_quickly(tmp_path):
    start = time.perf_counter()
    e = _err(tmp_path, "\n".join([*_bomb(), "meta: {model_name: *j}"]) + "\n")
    assert time.perf_counter() - start < 2
    assert "meta.model_name is list, expected a constructor name" in e.message


def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / CONFIG_NAME
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="named pipe, not a regular file"):
        read_run_config(fifo)
