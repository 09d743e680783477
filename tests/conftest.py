"""Shared fixtures: an isolated environment for every test, checkpoint factories, a CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from msn_cli.dev.synth import TINY, write_checkpoint
from msn_cli.hf.manifest import read_manifest
from msn_cli.original.architecture import Architecture

if TYPE_CHECKING:
    from tests.hub_server import HubServer

REPO = Path(__file__).resolve().parent.parent

# A background job of a non-interactive shell (as CI may run us) starts with SIGINT ignored,
# and processes it starts inherit that, so Ctrl-C tests would send a signal nobody hears.
# With a handler here, exec resets SIGINT to its default in every child, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A second tiny shape with several heads, a non-16 patch and an odd grid.
TINY_MULTIHEAD = Architecture(hidden_size=128, num_layers=3, num_heads=2, intermediate_size=512,
                              patch_size=7, image_size=35)


def pytest_report_header(config):
    """Which torch / transformers / huggingface_hub the run tests against (make test vs make compat)."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return "msn deps: " + ", ".join(f"{d} {v(d)}" for d in ("torch", "transformers", "huggingface_hub"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Point every cache, token and config path at a temporary folder; no network by accident."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MSN_CACHE", str(home / "msn-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MSN_OFFLINE", "HF_HUB_OFFLINE",
                "MSN_BASE_URL", "HF_ENDPOINT", "MSN_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    yield


class FileWrapper:
    """A real file whose ``write`` a test overrides (to fail, or to interrupt); everything
    else, the context manager included, goes to the file."""

    def __init__(self, f):
        self._f = f

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def make_ckpt(tmp_path):
    """``make_ckpt(arch=TINY, layout="released", name=..., **kwargs) -> Path``."""

    def make(arch: Architecture = TINY, layout: str = "released", name: str | None = None,
             **kwargs) -> Path:
        name = name or f"{layout}-{arch.hidden_size}x{arch.num_layers}-p{arch.patch_size}.pth.tar"
        return write_checkpoint(tmp_path / "ckpts" / name, arch, layout, **kwargs)

    return make


@pytest.fixture
def tiny_ckpt(make_ckpt) -> Path:
    return make_ckpt()


@pytest.fixture
def server():
    """A real HTTP file server on 127.0.0.1 with Range support and injectable faults."""
    from tests.http_server import FileServer

    with FileServer() as srv:
        yield srv


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys):
    """Run ``msn ARGS`` in-process through the real ``main()``; returns code, stdout, stderr."""
    from msn_cli.cli import main

    def run(*args: str | os.PathLike[str]) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def run_msn_process(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
                    **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m msn_cli ARGS`` as a real process (for signals, concurrency, imports)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "msn_cli", *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


TOKEN = "hf_test_alice_0123456789"
OTHER_TOKEN = "hf_test_bob_9876543210"


# -- a verified folder and a stand-in Hub (test_push, test_push_errors, test_card, test_faults_input) --

_VERIFIED: dict[str, Path] = {}


def verified_source_path(tmp_path_factory) -> Path:
    """One tiny checkpoint converted with the real verify, once per session (read-only: copy it)."""
    if "folder" not in _VERIFIED:
        from msn_cli.conversion.convert import convert
        from msn_cli.transfer.sources import resolve_source

        base = tmp_path_factory.mktemp("push-src")
        ckpt = write_checkpoint(base / "vit-tiny.pth.tar", TINY, "released")
        convert(resolve_source(str(ckpt)), base / "converted", verify=True)
        manifest = read_manifest(base / "converted")
        assert manifest["verify"]["passed"] is True, manifest["verify"]["summary"]
        _VERIFIED["folder"] = base / "converted"
    return _VERIFIED["folder"]


def copy_verified(tmp_path_factory, tmp_path: Path) -> Path:
    out = tmp_path / "vit-msn-tiny"
    shutil.copytree(verified_source_path(tmp_path_factory), out)
    return out


def start_hub(monkeypatch, tmp_path: Path) -> HubServer:
    """A running stand-in Hub, with HF_ENDPOINT and huggingface_hub pointed at it.

    huggingface_hub reads HF_ENDPOINT and the token path once, at import; patch those
    constants too so that nothing it does on its own (its agent registry fetch) leaves 127.0.0.1
    and no stored login of the machine is found. The caller stops the server.
    """
    from huggingface_hub import constants

    from tests.hub_server import HubServer

    server = HubServer().start()
    server.add_user("alice", TOKEN, orgs=("my-org",))
    server.add_user("bob", OTHER_TOKEN)
    server.add_org("other-org")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-stored-tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"),
                        raising=False)
    return server


@pytest.fixture
def folder(tmp_path_factory, tmp_path) -> Path:
    """A copy of a tiny folder converted and verified for real (once per session)."""
    return copy_verified(tmp_path_factory, tmp_path)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in Hub (tests/hub_server.py), running, with alice, bob and two organizations."""
    server = start_hub(monkeypatch, tmp_path)
    yield server
    server.stop()
