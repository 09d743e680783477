"""The library API: ``from msn_cli import ...`` does what the commands do and returns data.

Also: ``import msn_cli`` stays light, the wheel ships ``py.typed``, and ``python -m msn_cli``
behaves like the ``msn`` console script.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import msn_cli
from msn_cli.dev.synth import TINY, write_checkpoint
from tests.conftest import REPO, run_msn_process
from tests.http_server import FileServer

HEAVY = ("torch", "transformers", "typer", "rich", "click", "huggingface_hub", "safetensors", "numpy")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return set(out.split())


def test_import_is_light_and_names_load_on_first_use():
    loaded = _modules_after("import msn_cli; assert msn_cli.__version__")
    assert "msn_cli" in loaded
    assert not [m for m in HEAVY if m in loaded]
    # one name pulls in only what it needs
    loaded = _modules_after("from msn_cli import MsnError, Architecture")
    assert not [m for m in HEAVY if m in loaded]
    assert "msn_cli.errors" in loaded and "msn_cli.conversion.convert" not in loaded


def test_every_public_name_resolves():
    assert len(set(msn_cli.__all__)) == len(msn_cli.__all__)
    for name in msn_cli.__all__:
        assert getattr(msn_cli, name) is not None, name
        assert name in dir(msn_cli)
    with pytest.raises(AttributeError):
        msn_cli.no_such_name  # noqa: B018
    assert issubclass(msn_cli.CheckpointError, msn_cli.MsnError)


def test_convert_checkpoint_is_the_function_even_after_the_submodule_is_imported():
    import msn_cli.conversion.convert as module
    from msn_cli import convert_checkpoint

    assert convert_checkpoint is module.convert and callable(convert_checkpoint)
    code = "import msn_cli.conversion.convert, msn_cli; print(msn_cli.convert_checkpoint.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "msn_cli.conversion.convert"


def test_pipeline_end_to_end_returns_data(tmp_path):
    from msn_cli import (
        Architecture,
        ConvertResult,
        InspectReport,
        VerifyReport,
        build_plan,
        convert_checkpoint,
        infer_architecture,
        inspect_checkpoint,
        load_checkpoint,
        push_folder,
        resolve_source,
        verify_folder,
    )

    ck_path = write_checkpoint(tmp_path / "tiny.pth.tar", TINY, "released", seed=3)
    src = resolve_source(str(ck_path))
    assert src.kind == "path" and src.path == ck_path

    ck = load_checkpoint(ck_path)
    assert ck.layout == "released" and ck.prefixed and ck.encoder_key == "target_encoder"
    assert "blocks.0.attn.qkv.weight" in ck.state
    inferred = infer_architecture(ck.state)
    assert isinstance(inferred.arch, Architecture) and inferred.arch == TINY
    assert inferred.variant is None and inferred.dtype == "float32"

    plan = build_plan(ck, "float16")
    assert plan.ok and plan.dtype == "float16"
    assert len(plan.tensors) == 4 + 16 * TINY.num_layers + 2
    assert len(plan.dropped) == 16 and all(r.source.startswith("module.fc.") for r in plan.dropped)
    assert plan.output_bytes == 2 * sum(t.numel() for k, t in ck.state.items() if not k.startswith("fc."))

    report = inspect_checkpoint(src)
    assert isinstance(report, InspectReport) and report.plan.ok
    data = json.loads(json.dumps(report.to_dict()))
    assert data["layout"] == "released" and data["ok"] is True
    assert data["backbone"]["tensors"] == len(ck.state)
    assert data["counts"]["dropped"] == 16 and data["counts"]["split"] == 2 * TINY.num_layers

    calls: list[tuple[str, int, int | None]] = []
    out = tmp_path / "vit-msn-tiny"
    result = convert_checkpoint(src, out, progress=lambda s, d, t: calls.append((s, d, t)))
    assert isinstance(result, ConvertResult) and result.out == out.absolute()
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "msn_manifest.json", "preprocessor_config.json"]
    assert result.verify is not None and result.verify["passed"] is True
    assert result.files["model.safetensors"]["size"] == (out / "model.safetensors").stat().st_size
    writing = [(d, t) for s, d, t in calls if s == "writing"]
    assert writing and writing[-1] == (result.plan.output_bytes, result.plan.output_bytes)
    assert result.plan.output_bytes == 2 * plan.output_bytes  # float32 as stored vs float16

    rep = verify_folder(out)
    assert isinstance(rep, VerifyReport) and rep.passed
    assert {c.name for c in rep.checks if c.passed} >= {"files", "loading", "config", "parity"}
    assert len({s.index for s in rep.layers}) == TINY.num_layers + 2
    import transformers

    assert rep.versions.get("transformers") == transformers.__version__

    pushed = push_folder(out, "someone/vit-msn-tiny", dry_run=True)
    assert pushed.dry_run and pushed.plan.repo_id == "someone/vit-msn-tiny"
    assert {"model.safetensors", "config.json", "README.md"} <= {f.path for f in pushed.plan.files}
    assert json.loads(json.dumps(pushed.to_dict()))["commit_oid"] is None


def test_errors_are_exceptions_with_exit_codes(tmp_path):
    from msn_cli import CheckpointError, MsnError, OutputExistsError, convert_checkpoint, load_checkpoint
    from msn_cli import resolve_source as resolve

    junk = tmp_path / "junk.pth.tar"
    junk.write_text("<html>not found</html>")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(junk)
    assert e.value.exit_code == 3 and "HTML" in e.value.message

    ck = write_checkpoint(tmp_path / "tiny.pth.tar", TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError) as e2:
        convert_checkpoint(resolve(str(ck)), out, verify=False)
    assert isinstance(e2.value, MsnError) and e2.value.exit_code == 2 and e2.value.hint
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_fetch_downloads_into_the_cache_and_returns_the_file(tmp_path):
    import hashlib

    from msn_cli import CachedFile, fetch

    ck = write_checkpoint(tmp_path / "src" / "tiny.pth.tar", TINY)
    with FileServer() as server:
        server.add("/msn/tiny.pth.tar", ck)
        got = fetch(server.url("/msn/tiny.pth.tar"), cache_dir=tmp_path / "cache")
        again = fetch(server.url("/msn/tiny.pth.tar"), cache_dir=tmp_path / "cache")
    assert isinstance(got, CachedFile) and got.downloaded and not again.downloaded
    assert got.path.is_relative_to(tmp_path / "cache") and got.path.read_bytes() == ck.read_bytes()
    assert got.sha256 == hashlib.sha256(ck.read_bytes()).hexdigest() == again.sha256


def test_python_dash_m_behaves_like_the_console_script(tiny_ckpt):
    script = Path(sys.executable).with_name("msn")
    if not script.exists():
        pytest.skip("the msn console script is not installed beside this interpreter")
    for args in (["--version"], ["inspect", str(tiny_ckpt), "--json"], ["convert"]):
        a = run_msn_process(*args, env={"NO_COLOR": "1"})
        b = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), args
    assert run_msn_process("--version").stdout.strip() == f"msn {msn_cli.__version__}"
    assert run_msn_process("convert").returncode == 2


def test_wheel_ships_py_typed(tmp_path):
    import zipfile

    # hatchling (a dev dependency) builds offline from this checkout
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("msn_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "msn_cli/py.typed" in names and "msn_cli/__init__.py" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_type_checkers_see_the_real_signatures(tmp_path):
    """py.typed + the TYPE_CHECKING block: mypy knows what the lazy names are."""
    pytest.importorskip("mypy")
    (tmp_path / "use_msn.py").write_text(
        "from msn_cli import convert_checkpoint, fetch, resolve_source, verify_folder\n"
        "src = resolve_source('x.pth.tar')\n"
        "reveal_type(convert_checkpoint(src, 'out').plan.arch.hidden_size)\n"
        "reveal_type(verify_folder('out').passed)\n"
        "reveal_type(fetch('vits16').path)\n"
        "convert_checkpoint('a string, not a ResolvedSource', 'out')\n")
    # msn_cli is checked; the heavy libraries behind it are not followed (seconds, not a minute)
    (tmp_path / "mypy.ini").write_text(
        "[mypy]\nignore_missing_imports = True\n"
        "[mypy-torch.*,transformers.*,huggingface_hub.*,safetensors.*,numpy.*,typer.*,rich.*,"
        "requests.*,PIL.*,filelock.*]\nfollow_imports = skip\n")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "mypy.ini",
                        "--python-executable", sys.executable, "use_msn.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    revealed = [t.removeprefix("builtins.") for t in re.findall(r'Revealed type is "([^"]+)"', r.stdout)]
    assert revealed == ["int", "bool", "pathlib.Path"], r.stdout
    assert 'incompatible type "str"; expected "ResolvedSource"' in r.stdout, r.stdout
