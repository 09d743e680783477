"""verify passes only what it checked, push publishes only what verify saw, and nothing from a
folder ever runs (issue 24 items 1 to 3).

Each test plants what someone else could put into a converted folder or its manifest and
drives the real command:

1. a manifest that claims Meta's release: the card and the golden check rest only on what
   msn observed in its own run (a fetch by released name or canonical URL, or the sha256 of
   such a fetch), never on the manifest's words;
2. files a converted folder may not hold, and ``auto_map`` / ``custom_pipelines`` in the JSON
   files transformers reads: verify fails naming the file or the key;
3. a ``processor_config.json`` naming a custom processor whose ``evil.py`` would run: verify
   exits non-zero before transformers sees the folder, nothing runs, nothing waits for an
   answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from msn_cli.dev.synth import TINY
from msn_cli.original.variants import VARIANTS, Variant

W = "model.safetensors"
M = "msn_manifest.json"
CARD_CLAIMS = ("Origin: Meta's released checkpoint", "imagenet-1k", "Meta's own upload")


def manifest(folder: Path) -> dict:
    return json.loads((folder / M).read_text())


def write_manifest_json(folder: Path, data: dict) -> None:
    (folder / M).write_text(json.dumps(data, indent=2))


def list_file(folder: Path, name: str) -> None:
    """List ``name`` in the manifest with its true size and sha256, as a forger would."""
    m = manifest(folder)
    data = (folder / name).read_bytes()
    m["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest_json(folder, m)


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def verify_json(cli, folder, *args):
    r = cli("verify", folder, "--json", *args)
    return r, (r.json() if r.stdout.strip() else None)


def card_of(folder: Path) -> str:
    from msn_cli.hf.card import build_card
    from msn_cli.hf.manifest import read_manifest

    return build_card(read_manifest(folder), "my-org/x")


# ---------------------------------------------------------------------------------------------
# 1. provenance: a claim of Meta's release rests only on what msn observed
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def stand_in(monkeypatch) -> Variant:
    """A released variant with the tiny test model's shapes (the real five are too big)."""
    v = Variant("tinyv", "tinyv_100ep.pth.tar", 100, TINY.hidden_size, TINY.num_layers,
                TINY.num_heads, TINY.intermediate_size, TINY.patch_size, TINY.image_size,
                "facebook/vit-msn-tiny", (0.0, 0.0, 0.0))
    monkeypatch.setitem(VARIANTS, v.name, v)
    return v


def forge_release(folder: Path, variant: Variant) -> Path:
    """The issue's forgery: the converted file renamed to the release's file name beside the
    folder, and the manifest's source rewritten to say msn fetched it by that name."""
    m = manifest(folder)
    beside = folder.parent / variant.filename
    shutil.copy(m["source"]["path"], beside)
    m["variant"] = variant.name
    m["source"].update(kind="variant", name=variant.name, spec=variant.name, url=variant.url(),
                       path=variant.filename, layout="released")
    write_manifest_json(folder, m)
    return beside


def test_a_manifest_claiming_a_release_does_not_make_one(cli, folder, stand_in):
    forge_release(folder, stand_in)
    r, rep = verify_json(cli, folder)
    assert r.code == 0, r.stderr  # the folder is a good conversion of the file it names...
    assert "released" not in rep["source"]  # ...which msn saw only as a local file
    assert manifest(folder)["verify"]["source"] == {"released": None, "evidence": None}
    golden = check(rep, "golden")
    assert golden["passed"] is None and "did not see it to be Meta's released" in golden["detail"]
    card = card_of(folder)
    for claim in (*CARD_CLAIMS, stand_in.url(), stand_in.hub_id):
        assert claim not in card, claim
    assert "not identified as one of Meta's released checkpoints" in card


def test_a_forged_verify_record_of_a_failed_run_claims_nothing(folder, stand_in):
    """The card reads the verify record's observation only from a passed verify."""
    m = manifest(folder)
    m["variant"] = stand_in.name
    m["verify"]["source"] = {"released": stand_in.name, "evidence": "name"}
    m["verify"]["passed"] = False
    write_manifest_json(folder, m)
    assert "Origin: Meta's released" not in card_of(folder)


def test_a_release_msn_fetched_itself_is_one(cli, folder, stand_in, server):
    """The same folder, with the source fetched by its released name from the user's mirror:
    now the card names Meta's release; then the local copy is recognised by the sha256 the
    cache recorded for that fetch."""
    beside = forge_release(folder, stand_in)
    server.add(f"/msn/{stand_in.filename}", beside.read_bytes())
    r, rep = verify_json(cli, folder, "--source", stand_in.name, "--base-url", server.url("/msn/"))
    assert r.code == 0, r.stderr
    assert (rep["source"]["released"], rep["source"]["evidence"]) == (stand_in.name, "name")
    card = card_of(folder)
    assert f"Meta's released checkpoint `{stand_in.name}`" in card
    assert stand_in.url() in card and "imagenet-1k" in card

    r, rep = verify_json(cli, folder)  # the recorded local path: the same bytes as the fetch
    assert r.code == 0, r.stderr
    assert (rep["source"]["released"], rep["source"]["evidence"]) == (stand_in.name, "sha256")
    beside.write_bytes(beside.read_bytes() + b"\0")  # another file under the same name
    m = manifest(folder)
    m["source"].update(size=beside.stat().st_size,
                       sha256=hashlib.sha256(beside.read_bytes()).hexdigest())
    write_manifest_json(folder, m)
    r, rep = verify_json(cli, folder)
    assert "released" not in rep["source"]
    assert "Origin: Meta's released" not in card_of(folder)


def test_a_fetched_file_without_the_release_shapes_is_not_the_release(cli, folder, monkeypatch,
                                                                        server):
    """A mirror serving another network under a released name: not taken for the release."""
    v = Variant("widev", "widev.pth.tar", 1, 128, 2, 2, 512, 16, 64, "x/y", (0.0, 0.0, 0.0))
    monkeypatch.setitem(VARIANTS, v.name, v)
    m = manifest(folder)
    server.add(f"/msn/{v.filename}", Path(m["source"]["path"]).read_bytes())
    _r, rep = verify_json(cli, folder, "--source", v.name, "--base-url", server.url("/msn/"))
    assert "released" not in rep["source"]
    assert any("does not have its shapes" in n for n in rep["notes"])


# ---------------------------------------------------------------------------------------------
# 2. a converted folder holds its five files and names no code
# ---------------------------------------------------------------------------------------------

def _extra_file(folder: Path, name: str, data: bytes, listed: bool) -> str:
    (folder / name).write_bytes(data)
    if listed:
        list_file(folder, name)
    return name


def _json_key(folder: Path, file: str, path: tuple[str, ...], value: object) -> str:
    data = json.loads((folder / file).read_text())
    inner = data
    for key in path[:-1]:
        inner = inner.setdefault(key, {})
    inner[path[-1]] = value
    (folder / file).write_text(json.dumps(data))
    list_file(folder, file)  # with hashes that match, as a forger would
    return f"{file}: {'.'.join(path)}"


PLANTS = {
    "evil.py listed": lambda f: _extra_file(f, "evil.py", b"import os\n", listed=True),
    "evil.py unlisted": lambda f: _extra_file(f, "evil.py", b"import os\n", listed=False),
    "pytorch_model.bin": lambda f: _extra_file(f, "pytorch_model.bin", b"\x80\x02}q\x00.", True),
    "config auto_map": lambda f: _json_key(f, "config.json", ("auto_map",),
                                           {"AutoModel": "evil.EvilModel"}),
    "config custom_pipelines": lambda f: _json_key(f, "config.json", ("custom_pipelines",),
                                                   {"evil": {"impl": "evil.Pipe"}}),
    "preprocessor auto_map": lambda f: _json_key(f, "preprocessor_config.json", ("auto_map",),
                                                 {"AutoImageProcessor": "evil.EvilProcessor"}),
    "nested auto_map": lambda f: _json_key(f, "preprocessor_config.json",
                                           ("extra", "auto_map"), {"AutoImageProcessor": "e.E"}),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_file_or_key_a_folder_may_not_hold_fails_verify_naming_it(cli, folder, plant):
    named = PLANTS[plant](folder)
    r, rep = verify_json(cli, folder)
    assert r.code == 1, r.stderr
    files = check(rep, "files")
    assert files["passed"] is False and named in files["detail"], files["detail"]
    # transformers never saw the folder
    for name in ("loading", "config", "preprocessing"):
        assert check(rep, name)["passed"] is False and "the folder" in check(rep, name)["detail"]
    assert manifest(folder)["verify"]["passed"] is False


def test_the_files_a_converted_folder_may_hold(folder):
    from msn_cli.hf.folder import ALLOWED_FILES, folder_files_problem

    assert folder_files_problem(folder) is None
    (folder / "README.md").write_text("# a card from the Hub\n")  # push writes its own
    assert folder_files_problem(folder) is None
    assert set(ALLOWED_FILES) == {W, "config.json", "preprocessor_config.json", M, "README.md"}
    (folder / "sub").mkdir()
    assert "sub" in (folder_files_problem(folder) or "")
    assert "other.json" in (folder_files_problem(folder, ["other.json"]) or "")
    (folder / "sub").rmdir()
    assert "README.md" in (folder_files_problem(folder, ["README.md"]) or "")  # never listed


# ---------------------------------------------------------------------------------------------
# 3. nothing from a folder runs: processor_config.json with auto_map and evil.py
# ---------------------------------------------------------------------------------------------

def plant_evil_processor(folder: Path, marker: Path) -> None:
    (folder / "evil.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import ViTImageProcessor\n"
        "class EvilProcessor(ViTImageProcessor):\n    pass\n")
    (folder / "processor_config.json").write_text(json.dumps({
        "processor_class": "EvilProcessor",
        "image_processor": {"image_processor_type": "EvilProcessor",
                            "auto_map": {"AutoImageProcessor": "evil.EvilProcessor"}},
        "auto_map": {"AutoImageProcessor": "evil.EvilProcessor",
                     "AutoProcessor": "evil.EvilProcessor"}}))


@pytest.mark.parametrize("answer", [None, "y\n"], ids=["stdin-closed", "answers-yes"])
def test_a_processor_config_naming_code_never_runs_it(folder, tmp_path, answer):
    marker = tmp_path / "marker"
    plant_evil_processor(folder, marker)
    cmd = [sys.executable, "-m", "msn_cli", "verify", str(folder), "--json"]
    r = subprocess.run(cmd, input=answer, stdin=subprocess.DEVNULL if answer is None else None,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 1, r.stderr
    assert not marker.exists()
    assert "custom code" not in r.stdout + r.stderr  # transformers never asked
    rep = json.loads(r.stdout)
    detail = check(rep, "files")["detail"]
    assert "processor_config.json: auto_map" in detail and "evil.py" in detail
    assert "processor_config.json: image_processor.auto_map" in detail
    assert check(rep, "preprocessing")["passed"] is False


def test_transformers_is_told_never_to_trust_the_folders_code(folder, tmp_path, monkeypatch):
    """Beneath the check: every from_pretrained msn calls says trust_remote_code=False, so a
    folder that got past the check would be refused or given transformers' own class."""
    import transformers

    seen = []
    for cls_name in ("AutoImageProcessor", "ViTMSNConfig", "ViTMSNModel"):
        cls = getattr(transformers, cls_name)
        original = cls.from_pretrained.__func__

        def spy(cls_, *args, _original=original, **kwargs):
            if sys._getframe(1).f_globals["__name__"].startswith("msn_cli."):  # msn's calls only
                seen.append((cls_.__name__, kwargs.get("trust_remote_code", "absent")))
            return _original(cls_, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    from msn_cli.verify import verify_folder

    assert verify_folder(folder).passed
    assert {name for name, _ in seen} == {"AutoImageProcessor", "ViTMSNConfig", "ViTMSNModel"}, seen
    assert all(trust is False for _, trust in seen), seen

    from msn_cli.verify.photos import load_processor

    marker = tmp_path / "marker"
    plant_evil_processor(folder, marker)
    with contextlib.suppress(ValueError):
        load_processor(folder)  # the check bypassed: transformers' own class, or a refusal
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# 2. push publishes only what verify saw: the allow-listed files, and no code reference
# ---------------------------------------------------------------------------------------------

def test_push_refuses_the_issues_folder_even_unverified(cli, folder):
    """evil.py and a pickled pytorch_model.bin listed with their right hashes: push uploads
    only the allow-listed files, so it refuses a manifest that lists others."""
    for plant in ("evil.py listed", "pytorch_model.bin"):
        PLANTS[plant](folder)
    r = cli("push", folder, "my-org/x", "--dry-run", "--skip-verify-check")
    assert r.code == 3, r.stderr
    assert "evil.py" in r.stderr and "pytorch_model.bin" in r.stderr


@pytest.mark.parametrize("plant", ["config auto_map", "config custom_pipelines", "nested auto_map"])
def test_push_never_publishes_a_code_reference(cli, folder, plant):
    """A config naming code (auto_map may name another repository's code) is not published,
    --skip-verify-check or not."""
    named = PLANTS[plant](folder)
    r = cli("push", folder, "my-org/x", "--dry-run", "--skip-verify-check")
    assert r.code == 3, r.stderr
    assert named.split(": ")[1] in r.stderr


def test_convert_by_released_name_records_what_its_verify_saw(cli, stand_in, server, make_ckpt,
                                                               tmp_path):
    """convert hands its verify how it found the source: a fetch by released name is recorded
    as such; a local file under the released file name is not."""
    server.add(f"/msn/{stand_in.filename}", make_ckpt().read_bytes())
    r = cli("convert", stand_in.name, tmp_path / "by-name", "--base-url", server.url("/msn/"))
    assert r.code == 0, r.stderr
    assert manifest(tmp_path / "by-name")["verify"]["source"] == {"released": stand_in.name,
                                                                 "evidence": "name"}
    local = make_ckpt(name=stand_in.filename, seed=1)  # someone's own file, the release's name
    r = cli("convert", local, tmp_path / "local")
    assert r.code == 0, r.stderr
    assert manifest(tmp_path / "local")["verify"]["source"]["released"] is None
    copy = tmp_path / "copy.pth.tar"  # the fetched bytes, kept elsewhere: their sha256 is known
    shutil.copy(make_ckpt(), copy)
    r = cli("convert", copy, tmp_path / "copy")
    assert r.code == 0, r.stderr
    assert manifest(tmp_path / "copy")["verify"]["source"] == {"released": stand_in.name,
                                                              "evidence": "sha256"}


def test_fewshot_never_loads_a_folder_that_names_code(folder, tmp_path):
    """The other command that hands a folder to transformers refuses one naming code too."""
    from msn_cli.errors import FolderError
    from msn_cli.fewshot.model import load_folder

    marker = tmp_path / "marker"
    plant_evil_processor(folder, marker)
    with pytest.raises(FolderError, match=r"processor_config\.json: auto_map"):
        load_folder(folder, str(folder), "folder", "cpu")
    assert not marker.exists()


def test_only_the_canonical_url_is_evidence_of_a_url(tmp_path):
    """A fetch from Meta's own URL is a release; the same file name on another host is not."""
    from msn_cli.transfer.sources import ResolvedSource
    from msn_cli.verify.source import observed_release

    v = VARIANTS["vits16"]
    f = tmp_path / v.filename
    fetched = ResolvedSource(v.url(), "url", f, url=v.url())
    assert observed_release(fetched, None) == (v, "url")
    mirror = f"https://mirror.example/msn/{v.filename}"
    assert observed_release(ResolvedSource(mirror, "url", f, url=mirror), None) is None
    assert observed_release(ResolvedSource(str(f), "path", f), "ab" * 32) is None
