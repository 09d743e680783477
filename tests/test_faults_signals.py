"""Real ``python -m msn_cli convert`` processes hit by SIGINT, SIGTERM and SIGKILL, and run twice at once.

The checkpoint has ViT-S/16 shapes (88 MB, no projection head), so the write takes long enough
to be caught. To hit the process at a known point without test hooks in the product, the test
polls the output's parent until the temporary folder ``.OUT.msn-tmp-PID-*`` holds a
``model.safetensors`` being written, freezes the process with SIGSTOP, checks what is on disk,
then sends the signal under test and SIGCONT. No assertion depends on timing: if the process
finished before it could be frozen the attempt is repeated.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from msn_cli.dev.synth import write_checkpoint
from msn_cli.original.architecture import Architecture
from msn_cli.util.outdir import lock_path
from tests.conftest import FileWrapper

pytestmark = pytest.mark.slow

SMALL = Architecture(hidden_size=384, num_layers=12, num_heads=6, intermediate_size=1536,
                     patch_size=16, image_size=224)


@pytest.fixture(scope="module")
def medium_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "vits16_800ep.pth.tar", SMALL, head=False)


@pytest.fixture(scope="module")
def medium_ckpt_b(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "other.pth.tar", SMALL, head=False, seed=7)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "msn_cli", *map(str, args)], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _temporaries(out: Path) -> list[Path]:
    """Temporary folders, set-aside folders and the lock file of ``out``."""
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.msn-tmp-")
            or p.name.startswith(f".{out.name}.msn-old-") or p.name == f".{out.name}.msn-lock"]


def _freeze_while_writing(p: subprocess.Popen, out: Path, timeout: float = 240) -> Path | None:
    """SIGSTOP ``p`` once its temp folder holds a model.safetensors; the folder, or None if it finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return None
        for tmp in out.parent.glob(f".{out.name}.msn-tmp-*"):
            weights = tmp / "model.safetensors"
            try:
                if weights.stat().st_size > 0:
                    os.kill(p.pid, signal.SIGSTOP)
                    if p.poll() is not None or not tmp.exists():  # raced past the end
                        return None
                    return tmp
            except FileNotFoundError:
                continue
        time.sleep(0.002)
    raise AssertionError("the convert process never started writing")


def _interrupt(args: tuple, out: Path, sig: int, attempts: int = 6):
    """Run convert, freeze it mid-write, deliver ``sig``; (process, stdout, stderr, temp folder seen)."""
    for _ in range(attempts):
        p = _start(*args)
        tmp = _freeze_while_writing(p, out)
        if tmp is None:  # finished too fast: undo and retry
            p.communicate(timeout=60)
            if out.exists() and not any(a == "--force" for a in args):
                import shutil

                shutil.rmtree(out)
            continue
        assert tmp.name.startswith(f".{out.name}.msn-tmp-{p.pid}-")  # recognisable: OUT and PID
        assert not out.exists() or "--force" in args
        os.kill(p.pid, sig)
        os.kill(p.pid, signal.SIGCONT)
        stdout, stderr = p.communicate(timeout=120)
        return p, stdout, stderr, tmp
    pytest.skip("the machine is too fast to catch the write in progress")


def test_sigint_mid_write_exits_130_and_leaves_nothing(medium_ckpt, tmp_path):
    out = tmp_path / "out"
    p, stdout, stderr, tmp = _interrupt(("convert", medium_ckpt, out, "--no-verify"), out, signal.SIGINT)
    assert p.returncode == 130, stderr
    assert "Error: interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists() and not tmp.exists() and _temporaries(out) == []
    assert stdout == ""


def test_sigterm_mid_write_leaves_nothing(medium_ckpt, tmp_path):
    out = tmp_path / "out"
    p, _, stderr, tmp = _interrupt(("convert", medium_ckpt, out, "--no-verify"), out, signal.SIGTERM)
    assert p.returncode == 143, stderr
    assert "Error: terminated" in stderr and "Traceback" not in stderr
    assert not out.exists() and not tmp.exists() and _temporaries(out) == []


def test_sigkill_leaves_a_recognisable_temp_folder_that_the_next_run_cleans(medium_ckpt, tmp_path):
    out = tmp_path / "out"
    p, _, _, tmp = _interrupt(("convert", medium_ckpt, out, "--no-verify"), out, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    assert not out.exists()
    assert tmp.exists()  # .out.msn-tmp-<dead pid>-XXXX, and the lock file the dead run held
    assert sorted(_temporaries(out)) == sorted([tmp, lock_path(out)])
    # a run to another OUT in the same folder leaves it alone (it is not its own)
    other = tmp_path / "other"
    q = _start("convert", medium_ckpt, other, "--no-verify")
    q.communicate(timeout=300)
    assert q.returncode == 0 and tmp.exists()
    # the next run to the same OUT removes it and writes a complete folder
    q = _start("convert", medium_ckpt, out, "--no-verify")
    _, err = q.communicate(timeout=300)
    assert q.returncode == 0, err
    assert not tmp.exists() and _temporaries(out) == []
    assert _sha(out / "model.safetensors") == _sha(other / "model.safetensors")


def test_sigint_with_force_keeps_the_old_folder(medium_ckpt, medium_ckpt_b, tmp_path):
    out = tmp_path / "out"
    first = _start("convert", medium_ckpt, out, "--no-verify")
    assert first.wait(timeout=300) == 0
    before = {p.name: _sha(p) for p in out.iterdir()}
    p, _, stderr, _ = _interrupt(("convert", medium_ckpt_b, out, "--no-verify", "--force"), out,
                                 signal.SIGINT)
    assert p.returncode == 130, stderr
    assert {p.name: _sha(p) for p in out.iterdir()} == before
    assert _temporaries(out) == []


def test_sigkill_with_force_keeps_the_old_folder(medium_ckpt, medium_ckpt_b, tmp_path):
    out = tmp_path / "out"
    assert _start("convert", medium_ckpt, out, "--no-verify").wait(timeout=300) == 0
    before = {p.name: _sha(p) for p in out.iterdir()}
    p, _, _, tmp = _interrupt(("convert", medium_ckpt_b, out, "--no-verify", "--force"), out,
                              signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    assert {p.name: _sha(p) for p in out.iterdir()} == before
    assert tmp.exists()  # cleaned by the next run to OUT


def test_sigint_before_writing_leaves_nothing(tmp_path, make_ckpt):
    # Interrupted during the source check, before the temp folder exists.
    big = make_ckpt(SMALL, "training", head=False, name="train.pth.tar")  # ~4x the backbone
    out = tmp_path / "out"
    p = _start("convert", big, out, "--no-verify")
    time.sleep(0.5)  # not an assertion: just lets the interpreter start and import
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    # it used to finish with exit 0 when the signal came while torch imported numpy (torch
    # clears the error); msn_cli.util.interrupts holds signals back across that import
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and _temporaries(out) == []


# ---------------------------------------------------------------------------------------------
# Two converts to the same OUT


def test_second_convert_while_one_is_writing_is_refused(medium_ckpt, tmp_path):
    out = tmp_path / "out"
    for _ in range(6):
        a = _start("convert", medium_ckpt, out, "--no-verify")
        tmp = _freeze_while_writing(a, out)
        if tmp is not None:
            break
        a.communicate(timeout=60)
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    else:
        pytest.skip("the machine is too fast to catch the write in progress")
    try:
        b = _start("convert", medium_ckpt, out, "--no-verify", "--force")
        _, err_b = b.communicate(timeout=120)
        assert b.returncode == 2, err_b
        assert "another msn process is writing" in err_b and "Traceback" not in err_b
        assert tmp.exists() and not out.exists()  # B touched neither A's work nor OUT
    finally:
        os.kill(a.pid, signal.SIGCONT)
    _, err_a = a.communicate(timeout=300)
    assert a.returncode == 0, err_a
    manifest = json.loads((out / "msn_manifest.json").read_text())
    assert manifest["files"]["model.safetensors"]["sha256"] == _sha(out / "model.safetensors")
    assert _temporaries(out) == []


def test_lock_held_in_process_is_respected(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    with FileLock(str(lock_path(out.absolute()))):
        r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert r.code == 2 and "another msn process is writing" in r.stderr
    assert not out.exists()
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0


@pytest.mark.parametrize("force", [False, True])
def test_two_converts_started_together_never_mix(medium_ckpt, medium_ckpt_b, tmp_path, force):
    out = tmp_path / "out"
    extra = ("--force",) if force else ()
    procs = [_start("convert", ck, out, "--no-verify", *extra) for ck in (medium_ckpt, medium_ckpt_b)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = [c for c, _ in results]
    assert 0 in codes, results
    for code, err in results:
        assert "Traceback" not in err
        if code != 0:
            assert code == 2, err
            assert "another msn process is writing" in err or "exists and is not empty" in err
    # OUT is entirely one conversion: manifest, weights and source all agree
    manifest = json.loads((out / "msn_manifest.json").read_text())
    for name, row in manifest["files"].items():
        assert _sha(out / name) == row["sha256"], name
    assert manifest["source"]["sha256"] in {_sha(medium_ckpt), _sha(medium_ckpt_b)}
    assert _temporaries(out) == []


def test_ctrl_c_in_process_removes_the_temp_folder(cli, tiny_ckpt, tmp_path, monkeypatch):
    """main()'s Ctrl-C path: KeyboardInterrupt mid-write -> 'interrupted', 130, nothing on disk."""
    import msn_cli.hf.safetensors_io as st_io

    real_open = open
    seen: list[Path] = []

    class Interrupting(FileWrapper):
        def write(self, data):
            seen.append(Path(self._f.name).parent)
            raise KeyboardInterrupt

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Interrupting(f) if "w" in mode and str(path).endswith(".safetensors") else f

    monkeypatch.setattr(st_io, "open", fake_open, raising=False)
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert seen and seen[0].name.startswith(".out.msn-tmp-")  # it was interrupted inside the temp folder
    assert r.code == 130 and "Error: interrupted" in r.stderr
    assert not seen[0].exists() and not out.exists() and _temporaries(out) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["int", "term"])
def test_signal_during_verify_leaves_nothing(tiny_ckpt, tmp_path, sig, code):
    """Verify runs inside the temp folder (after the manifest is written): interrupting it is clean too."""
    out = tmp_path / "out"
    p = _start("convert", tiny_ckpt, out)  # with verify: imports transformers, runs the model
    deadline = time.monotonic() + 240
    tmp = None
    while tmp is None and time.monotonic() < deadline and p.poll() is None:
        for t in out.parent.glob(".out.msn-tmp-*"):
            if (t / "msn_manifest.json").exists():
                os.kill(p.pid, signal.SIGSTOP)
                tmp = t
                break
        time.sleep(0.005)
    if tmp is None or p.poll() is not None or not tmp.exists():
        p.kill()
        p.communicate(timeout=60)
        pytest.skip("could not catch the verify phase")
    os.kill(p.pid, sig)
    os.kill(p.pid, signal.SIGCONT)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == code, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not tmp.exists() and _temporaries(out) == []


def test_out_lock_is_exclusive_and_removed_on_release(tmp_path, monkeypatch):
    import fcntl

    from msn_cli.util.outdir import _OutLock

    path = tmp_path / ".out.msn-lock"
    a, b = _OutLock(path), _OutLock(path)
    assert a.acquire() and path.exists()
    assert not b.acquire()  # held
    a.release()
    assert not path.exists()  # no clutter left beside OUT
    assert b.acquire()
    b.release()
    # A taker whose file was removed (by its releasing holder) between open and flock must not
    # trust that lock: it notices the path names another file now, and takes that one.
    real_flock = fcntl.flock
    calls: list[int] = []

    def racing_flock(fd, op):
        real_flock(fd, op)
        calls.append(os.fstat(fd).st_ino)
        if len(calls) == 1:
            path.unlink()
            path.write_bytes(b"")  # someone else's new lock file

    monkeypatch.setattr(fcntl, "flock", racing_flock)
    c = _OutLock(path)
    assert c.acquire()
    assert len(calls) == 2 and calls[0] != calls[1] == os.stat(path).st_ino
    c.release()


def _signalled_on_return(real, sig=signal.SIGINT):
    """``real``, with ``sig`` sent to this process the moment it returns: Python runs the
    handler at the caller's next bytecode, the narrowest window there is."""

    def call(*args, **kwargs):
        result = real(*args, **kwargs)
        os.kill(os.getpid(), sig)
        return result

    return call


@pytest.mark.parametrize("step", ["lock", "folder", "file"])
def test_an_interrupt_as_the_output_is_set_up_leaves_nothing(tmp_path, monkeypatch, step):
    """Ctrl-C just as the output lock is taken, or the temporary folder or file made, used to
    leave that lock file (1 in 70 conversions interrupted at random) or temporary behind; both
    are now taken with the interrupt held back until the cleanup that removes them is armed."""
    import tempfile

    from msn_cli.util import outdir

    if step == "lock":
        monkeypatch.setattr(outdir._OutLock, "acquire", _signalled_on_return(outdir._OutLock.acquire))
    elif step == "folder":
        monkeypatch.setattr(tempfile, "mkdtemp", _signalled_on_return(tempfile.mkdtemp))
    else:
        monkeypatch.setattr(tempfile, "mkstemp", _signalled_on_return(tempfile.mkstemp))
    out = tmp_path / "out"
    entered = []
    with pytest.raises(KeyboardInterrupt):
        if step == "file":
            with outdir.atomic_output_file(out):
                entered.append(True)
        else:
            with outdir.atomic_output_dir(out):
                entered.append(True)
    assert not entered  # the interrupt stopped the command before it wrote anything
    assert not out.exists() and _temporaries(out) == []
