"""``msn inspect RUN_FOLDER``: a training run's checkpoints (epoch and loss from each file) and config."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from msn_cli.cli import main
from msn_cli.dev.synth import TINY, run_loss, write_checkpoint, write_run_folder
from msn_cli.errors import CheckpointError, ConfigError
from msn_cli.original.runconfig import CONFIG_NAME
from msn_cli.original.runfolder import CHECKPOINT_NAME, inspect_run

LOCAL = ("/datasets01/", "imagenet_full_size/061417/")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run_folder(tmp_path_factory.mktemp("runs") / "msn-run", model_name="deit_base",
                            saved=(10, 25, 50), epochs_done=57, world_size=8, epochs=300)


def is_run_folder(path: Path) -> bool:
    """A folder with at least one ``{tag}-latest.pth.tar`` or ``{tag}-ep{N}.pth.tar`` file."""
    return path.is_dir() and any(CHECKPOINT_NAME.fullmatch(q.name) for q in path.iterdir() if q.is_file())


def _mapped_ranges(path) -> list[tuple[int, int]]:
    """The address ranges of this process's private (copy-on-write) mappings of ``path``."""
    real = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].rstrip("\n") == real and parts[1][3:4] == "p":
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((lo, hi))
    return ranges


def _json(capsys, *argv) -> tuple[int, dict]:
    rc = main(["inspect", *argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def test_lists_every_checkpoint_with_the_epoch_and_loss_it_stores(run, capsys):
    rc, data = _json(capsys, str(run))
    assert rc == 0 and data["ok"] is True
    rows = {c["file"]: c for c in data["checkpoints"]}
    assert list(rows) == ["msn-experiment-1-ep10.pth.tar", "msn-experiment-1-ep25.pth.tar",
                          "msn-experiment-1-ep50.pth.tar", "msn-experiment-1-latest.pth.tar"]
    for n in (10, 25, 50):
        row = rows[f"msn-experiment-1-ep{n}.pth.tar"]
        assert row["kind"] == "epoch" and row["number"] == n
        assert row["epoch"] == n - 1 and row["loss"] == pytest.approx(run_loss(n - 1))
    latest = rows["msn-experiment-1-latest.pth.tar"]
    assert latest["kind"] == "latest" and latest["epoch"] == 57
    assert latest["loss"] == pytest.approx(run_loss(57))
    assert data["latest"] == "msn-experiment-1-latest.pth.tar"
    for row in rows.values():
        assert row["values"]["world_size"] == 8 and row["tag"] == "msn-experiment-1"
        assert row["networks"] == ["encoder", "target_encoder", "prototypes", "opt"]
        assert row["storage"] == "zip (memory-mapped)" and row["problem"] is None
        assert row["size"] == (run / row["file"]).stat().st_size


def test_config_summary_names_the_constructor_and_leaves_local_paths_out(run, capsys):
    rc, data = _json(capsys, str(run))
    assert rc == 0
    cfg = data["config"]
    assert cfg["file"] == CONFIG_NAME and cfg["model_name"] == "deit_base"
    assert cfg["constructor"]["hidden_size"] == 768 and cfg["constructor"]["num_heads"] == 12
    assert cfg["training"]["epochs"] == 300 and cfg["training"]["model_name"] == "deit_base"
    text = json.dumps(cfg)
    for local in (*LOCAL, str(run.resolve())):
        assert local not in text


def test_table_output(run, capsys):
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "msn-experiment-1-ep25.pth.tar" in out and "msn-experiment-1-latest.pth.tar" in out
    assert f"{run_loss(57):.4f}" in out and f"{run_loss(24):.4f}" in out
    assert "deit_base (768 wide, 12 blocks, 12 heads)" in out
    assert "Patch drop" in out and "0.15" in out
    for local in LOCAL:
        assert local not in out


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_reads_no_tensor_data(run, monkeypatch):
    """Listing must not page in weights: every tensor stays a view of the file's mapping."""
    import torch

    seen: list[bool] = []
    real = torch.load

    def spy(path, *args, **kwargs):
        assert kwargs.get("weights_only") is True and kwargs.get("mmap") is True
        obj = real(path, *args, **kwargs)
        ranges = _mapped_ranges(path)

        def mapped(t) -> bool:
            start = t.data_ptr()
            return any(lo <= start and start + t.numel() * t.element_size() <= hi for lo, hi in ranges)

        seen.append(bool(ranges) and all(mapped(t) for t in obj["encoder"].values()))
        return obj

    monkeypatch.setattr(torch, "load", spy)
    report = inspect_run(run)
    assert seen == [True] * len(report.checkpoints) == [True] * 4


def test_without_config_and_single_process_run(tmp_path, capsys):
    folder = write_run_folder(tmp_path / "r", config=False, saved=(), epochs_done=3, tag="exp")
    rc, data = _json(capsys, str(folder))
    assert rc == 0 and data["config"] is None
    (only,) = data["checkpoints"]
    assert only["file"] == "exp-latest.pth.tar" and only["epoch"] == 3 and only["values"]["world_size"] == 1
    assert main(["inspect", str(folder)]) == 0
    assert "No params-msn-train.yaml" in capsys.readouterr().out


def test_a_folder_without_checkpoints_is_not_a_run(tmp_path, capsys):
    write_checkpoint(tmp_path / "vits16_800ep.pth.tar", TINY)
    assert not is_run_folder(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "is not a training run" in err and "vits16_800ep.pth.tar" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a training run"):
        inspect_run(empty)


def test_a_damaged_checkpoint_is_listed_and_fails_the_command(run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / "msn-experiment-1-ep25.pth.tar").write_bytes(b"<html>not found</html>")
    rc, data = _json(capsys, str(folder))
    assert rc == 3 and data["ok"] is False
    rows = {c["file"]: c for c in data["checkpoints"]}
    assert "HTML" in rows["msn-experiment-1-ep25.pth.tar"]["problem"]
    assert rows["msn-experiment-1-latest.pth.tar"]["epoch"] == 57  # the others are still read
    assert main(["inspect", str(folder)]) == 3
    assert "1 of 4 checkpoints" in capsys.readouterr().err


def test_a_hostile_config_fails_the_command(run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / CONFIG_NAME).write_text("meta: !!python/object/apply:os.system ['true']\n")
    assert main(["inspect", str(folder)]) == 3
    err = capsys.readouterr().err
    assert "not plain YAML data" in err and "Traceback" not in err
    with pytest.raises(ConfigError):
        inspect_run(folder)


def test_single_checkpoint_options_are_refused_for_a_folder(run, capsys):
    assert main(["inspect", str(run), "--all-keys"]) == 2
    assert "--all-keys" in capsys.readouterr().err


def test_a_checkpoint_that_would_run_code_is_refused_and_never_run(run, tmp_path, capsys):
    import torch

    from tests.test_faults_input import _Payload

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    marker = tmp_path / "PWNED"
    evil = torch.load(folder / "msn-experiment-1-latest.pth.tar", weights_only=True)
    torch.save({**evil, "extra": _Payload(marker)}, folder / "msn-experiment-1-latest.pth.tar")
    rc, data = _json(capsys, str(folder))
    assert rc == 3 and not marker.exists()
    row = next(c for c in data["checkpoints"] if c["kind"] == "latest")
    assert row["problem"].startswith("refused to load") and row["epoch"] is None
