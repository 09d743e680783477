"""Files from someone else -- a checkpoint, a run folder, a YAML config, a manifest, a photo --
cannot flood memory, disk or time, and a malformed number gets its format's own error (exit 3),
never exit 70 "this is a bug" (issue 24 items 5, 10, 11, 12).

Each hostile file is built here (torch.save, zipfile, PIL). The floods run as real processes
under a memory limit and a deadline that the unbounded code cannot meet.
"""

from __future__ import annotations

import json
import math
import resource
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from msn_cli.dev.synth import TINY, make_checkpoint, run_config
from msn_cli.errors import ConfigError, MsnError
from msn_cli.original.runconfig import read_run_config
from tests.conftest import run_msn_process

MEMORY_LIMIT = 4 << 30
"""Address space for a command under test: torch's import maps about 1.5 GB of it; a bounded
command needs well under the rest."""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_bounded(*args: str | Path, timeout: float = 60):
    """``python -m msn_cli ARGS`` with at most :data:`MEMORY_LIMIT` of memory and ``timeout``
    seconds (a command past them fails the test, as the unbounded code does)."""
    return run_msn_process(*map(str, args), timeout=timeout, preexec_fn=_limit_memory)


def assert_one_line_error(proc, code: int = 3) -> str:
    """``proc`` exited ``code`` with one ``Error:`` line (and a hint at most), no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _save(ck: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, path)
    return path


# -- item 5: a small checkpoint that floods memory, disk or time --------------------------------

@pytest.mark.parametrize(("index", "said"), [
    ("999999999", "block 999999999 but only"),  # nine digits: a block index, past the key count
    ("999999999999", "unaccounted source key"),  # more: no rule's block index
    ("1" * 5000, "unaccounted source key"),
], ids=["9-digits", "12-digits", "5000-digits"])
def test_a_huge_block_index_is_refused_fast(tmp_path, index, said):
    """One extra key ``blocks.N.norm1.weight``: the depth inferred from it made inspect build
    ``range(N)`` (10**12: gigabytes, then exit 70), and a 5000-digit N failed int()."""
    ck = make_checkpoint(TINY)
    ck["target_encoder"][f"module.blocks.{index}.norm1.weight"] = torch.zeros(TINY.hidden_size)
    path = _save(ck, tmp_path / "hostile.pth.tar")
    line = assert_one_line_error(run_bounded("inspect", path))
    assert said in line


def test_a_block_index_with_a_leading_zero_is_not_a_second_name(cli, tmp_path):
    """``blocks.01`` matched block 1 and was shown as renamed, though nothing converts it."""
    ck = make_checkpoint(TINY)
    ck["target_encoder"]["module.blocks.01.norm1.weight"] = torch.zeros(TINY.hidden_size)
    r = cli("inspect", _save(ck, tmp_path / "zero.pth.tar"), "--json")
    assert r.code == 3
    rows = {row["source"]: row["status"] for row in json.loads(r.stdout)["keys"] if row["source"]}
    assert rows["module.blocks.01.norm1.weight"] == "unaccounted"
    assert rows["module.blocks.1.norm1.weight"] == "renamed"


def test_a_stride0_view_past_its_storage_is_refused_before_converting(tmp_path):
    """pos_embed as a million rows viewing 17 stored ones: 4 kB in the file, 256 MB once
    converted (and gigabytes in verify)."""
    ck = make_checkpoint(TINY)
    d = TINY.hidden_size
    rows = 1000 * 1000 + 1  # a square grid of 1000 x 1000 patches, so the shapes are plausible
    ck["target_encoder"]["module.pos_embed"] = torch.zeros(17 * d).as_strided((1, rows, d),
                                                                              (0, 0, 1))
    path = _save(ck, tmp_path / "strided.pth.tar")
    out = tmp_path / "out"
    line = assert_one_line_error(run_bounded("convert", path, out, "--no-verify"))
    assert "pos_embed" in line and "storage" in line
    assert not out.exists()


def write_pickle_bomb(src: Path, dst: Path, inflated: int = 256 << 20) -> Path:
    """``src`` with its object table replaced by a DEFLATE-compressed pickle of a list of
    ``inflated / 2`` small ints: about 1 MB on disk."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename.endswith("/data.pkl"):
                member = zipfile.ZipInfo(info.filename)
                member.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(member, "w", force_zip64=True) as f:
                    f.write(b"\x80\x02](")  # protocol 2, an empty list, a mark
                    chunk = b"K\x00" * (1 << 19)  # BININT1 0
                    for _ in range(inflated // len(chunk)):
                        f.write(chunk)
                    f.write(b"e.")  # APPENDS, STOP
            else:
                zout.writestr(info, zin.read(info))
    return dst


@pytest.mark.parametrize("as_run", [False, True], ids=["file", "run-folder"])
def test_a_compressed_pickle_bomb_is_refused_before_it_inflates(tmp_path, tiny_ckpt, as_run):
    """1.3 MB on disk, 256 MB of pickle: inspect took over 100 s and 1 GB before."""
    folder = tmp_path / "run"
    folder.mkdir()
    name = "msn-experiment-1-latest.pth.tar" if as_run else "bomb.pth.tar"
    bomb = write_pickle_bomb(tiny_ckpt, folder / name)
    assert bomb.stat().st_size < 2 << 20
    line = assert_one_line_error(run_bounded("inspect", folder if as_run else bomb))
    assert "data.pkl" in line and "inflate" in line


def test_a_legacy_pickle_bomb_is_refused_from_its_opcodes(tmp_path):
    """A file in torch's pre-zip format is pickles read whole: 16 MiB of empty dicts took 18 s
    and 1.5 GB before torch said anything."""
    import pickle

    from msn_cli.original.archive import LEGACY_MAGIC

    path = tmp_path / "legacy-bomb.pth.tar"
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)  # torch's legacy magic number
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(b"\x80\x02](" + b"}" * (16 << 20) + b"e.")  # a list of 16 M empty dicts
    assert path.read_bytes()[:len(LEGACY_MAGIC)] == LEGACY_MAGIC
    line = assert_one_line_error(run_bounded("inspect", path))
    assert "pickles run past" in line


def test_a_legacy_checkpoint_still_converts(cli, tmp_path):
    path = tmp_path / "legacy.pth.tar"
    torch.save(make_checkpoint(TINY), path, _use_new_zipfile_serialization=False)
    r = cli("convert", path, tmp_path / "out", "--no-verify")
    assert r.code == 0, r.stderr


# -- item 10: numbers past what the format holds: the format's error, not exit 70 --------------

def test_an_epoch_of_2000_bits_in_a_run_is_a_checkpoint_error(tmp_path):
    ck = make_checkpoint(TINY, "training")
    ck["epoch"] = 2**2000
    _save(ck, tmp_path / "run" / "msn-experiment-1-latest.pth.tar")
    r = run_bounded("inspect", tmp_path / "run")
    assert "epoch" in assert_one_line_error(r)


@pytest.mark.parametrize("value", [2**2000, -5.0, math.nan, math.inf],
                         ids=["2**2000", "negative", "nan", "inf"])
def test_a_source_lr_that_is_not_a_learning_rate_is_refused_like_the_option(cli, tmp_path, value):
    """The source's lr goes into the optimizer's prototypes group: refused as ``--lr -5`` is
    (2**2000 was exit 70; -5, NaN and infinity were written)."""
    ck = make_checkpoint(TINY, "training")
    ck["lr"] = value
    src = _save(ck, tmp_path / "bad-lr.pth.tar")
    out = tmp_path / "out.pth.tar"
    r = cli("export", src, out)
    assert r.code == 3, r.stderr
    assert "lr" in r.stderr and not out.exists()
    if value != 2**2000:  # the option overrides the source's value
        assert cli("export", src, out, "--lr", "0.01").code == 0
        assert torch.load(out, weights_only=True)["opt"]["param_groups"][2]["lr"] == 0.01


def test_a_yaml_number_of_400_digits_is_a_config_error(cli, tmp_path, tiny_ckpt):
    cfg = run_config()
    text = yaml.safe_dump(cfg).replace("  lr: 0.001", "  lr: 1" + "0" * 400)
    assert "0" * 400 in text
    path = tmp_path / "params-msn-train.yaml"
    path.write_text(text)
    r = cli("inspect", tiny_ckpt, "--config", path)
    assert r.code == 3, r.stderr
    assert "optimization.lr" in r.stderr and "Traceback" not in r.stderr


def test_a_whole_number_past_2_63_in_the_yaml_is_refused(tmp_path):
    path = tmp_path / "params-msn-train.yaml"
    path.write_text(yaml.safe_dump(run_config(epochs=10**400)))
    with pytest.raises(ConfigError, match=r"optimization\.epochs"):
        read_run_config(path)


def test_a_5000_digit_number_in_the_manifest_is_a_folder_error(cli, folder):
    manifest = folder / "msn_manifest.json"
    text = manifest.read_text()
    size = json.loads(text)["files"]["model.safetensors"]["size"]
    manifest.write_text(text.replace(f'"size": {size}', '"size": 1' + "0" * 5000, 1))
    r = cli("verify", folder)
    assert r.code == 3, r.stderr
    assert "msn_manifest.json" in r.stderr and "unexpected" not in r.stderr


def test_a_5000_digit_number_in_a_folders_config_is_a_folder_error(cli, folder, tmp_path):
    config = folder / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps(data).replace(f'"hidden_size": {data["hidden_size"]}',
                                               '"hidden_size": 1' + "0" * 5000))
    r = cli("export", folder, tmp_path / "out.pth.tar")
    assert r.code == 3, r.stderr
    assert "config.json" in r.stderr and "unexpected" not in r.stderr


def test_a_sparse_tensor_is_refused_by_convert(cli, tmp_path):
    ck = make_checkpoint(TINY)
    ck["target_encoder"]["module.norm.bias"] = ck["target_encoder"]["module.norm.bias"].to_sparse()
    out = tmp_path / "out"
    r = cli("convert", _save(ck, tmp_path / "sparse.pth.tar"), out, "--no-verify")
    assert r.code == 3, r.stderr
    assert "norm.bias" in r.stderr and "sparse" in r.stderr and not out.exists()


def test_sparse_prototypes_are_refused_by_export(cli, tmp_path):
    ck = make_checkpoint(TINY, "training")
    ck["prototypes"] = ck["prototypes"].to_sparse()
    out = tmp_path / "out.pth.tar"
    r = cli("export", _save(ck, tmp_path / "sparse.pth.tar"), out)
    assert r.code == 3, r.stderr
    assert "prototypes" in r.stderr and "sparse" in r.stderr and not out.exists()


def test_a_list_holding_itself_is_walked_once(tmp_path):
    """A pickle can hold a list that holds itself; inspect walks the file without looping."""
    from msn_cli.original.checkpoint import load_checkpoint

    ck = make_checkpoint(TINY)
    loop: list = []
    loop.append(loop)
    ck["extra"] = loop
    got = load_checkpoint(_save(ck, tmp_path / "loop.pth.tar"))
    assert next(e for e in got.entries if e.name == "extra").tensors == 0


# -- item 11: export of a diverged run ----------------------------------------------------------

def _no_bare_nan(text: str) -> dict:
    def refuse(name: str):
        raise AssertionError(f"bare {name} in --json output")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_loss_is_carried_and_json_stays_json(cli, tmp_path):
    """The loss is bookkeeping the original code never reads back: carried as it is. The
    read-back compared NaN != NaN and blamed the disk."""
    ck = make_checkpoint(TINY, "training")
    ck["loss"] = math.nan
    src = _save(ck, tmp_path / "diverged.pth.tar")
    out = tmp_path / "out.pth.tar"
    r = cli("export", src, out, "--json")
    assert r.code == 0, r.stderr
    assert _no_bare_nan(r.stdout)["plan"]["numbers"]["loss"] == "nan"
    assert math.isnan(torch.load(out, weights_only=True)["loss"])
    r = cli("inspect", src, "--json")  # the entries list the loss too
    assert r.code == 0, r.stderr
    entries = {e["name"]: e for e in _no_bare_nan(r.stdout)["entries"]}
    assert entries["loss"]["value"] == "nan"


# -- item 12: --image ---------------------------------------------------------------------------

def test_a_13300_px_png_is_refused_before_it_is_decoded(tmp_path):
    """21 kB on disk, 177 MP: PIL only warns below 179 MP, and RGB is 530 MB (2.8 GB in
    verify, which decoded it twice)."""
    from PIL import Image

    from msn_cli.verify.photos import load_photo

    path = tmp_path / "huge.png"
    Image.new("1", (13300, 13300)).save(path)
    assert path.stat().st_size < 200_000
    with pytest.raises(MsnError, match="13300 x 13300") as e:
        load_photo(path)
    assert e.value.exit_code == 3


def test_an_eps_image_never_reaches_its_decoder(tmp_path, monkeypatch):
    """PIL identifies EPS and renders it with Ghostscript: not a photo format."""
    from PIL import EpsImagePlugin

    from msn_cli.verify.photos import load_photo

    ran: list[str] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append("gs"))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: ran.append("eps plugin") or pytest.fail("EPS opened"))
    path = tmp_path / "drawing.eps"
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    with pytest.raises(MsnError, match="not a JPEG") as e:
        load_photo(path)
    assert e.value.exit_code == 3 and not ran


def test_the_image_is_decoded_once_per_verify(cli, folder, tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "photo.webp"
    Image.effect_mandelbrot((96, 64), (-2, -1, 1, 1), 50).convert("RGB").save(path)
    opened: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        if Path(getattr(fp, "name", fp)) == path:
            opened.append(str(path))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    r = cli("verify", folder, "--image", path, "--json")
    assert r.code == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["image"]["passed"] is True and checks["preprocessing"]["passed"] is True
    assert len(opened) == 1


def test_verify_refuses_a_huge_image_before_loading_anything(cli, folder, tmp_path, monkeypatch):
    """The refusal comes before torch and transformers are imported and the models loaded (it
    came after them, some 15 s into a verify of a small model on a loaded machine)."""
    from PIL import Image

    from msn_cli.verify import run as verify_run

    def imports_not_reached():
        raise AssertionError("verify imported torch and transformers before refusing the image")

    monkeypatch.setattr(verify_run, "import_versions", imports_not_reached)
    path = tmp_path / "huge.png"
    Image.new("1", (13300, 13300)).save(path)
    r = cli("verify", folder, "--image", path)
    assert r.code == 3, r.stderr
    assert "13300 x 13300" in r.stderr and "Traceback" not in r.stderr
