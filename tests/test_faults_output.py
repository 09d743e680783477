"""OUT problems: an existing file or folder, a read-only place, a disk that fills up mid-write.

Where the machine allows it (root with CAP_SYS_ADMIN, as in CI containers) the read-only and
disk-full cases use real tmpfs mounts; the same cases are also simulated by making the
writer's file raise the errno, so they are checked everywhere. ``RLIMIT_FSIZE`` gives a third,
unprivileged, real OS-level write failure in a child process.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import msn_cli.hf.safetensors_io as st_io
from msn_cli.util.outdir import lock_path
from tests.conftest import FileWrapper

MARKS = (".msn-tmp-", ".msn-old-", ".msn-lock")  # the lock file goes too


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256: to prove a folder was left exactly as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir()
            if p.name.startswith(f".{out.name}.") and any(m in p.name for m in MARKS)]


def _one_error(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.stderr)
    assert "Traceback" not in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("Error:")]) == 1, r.stderr
    for n in needles:
        assert n.lower() in r.stderr.lower(), (n, r.stderr)


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(name, options) -> Path``: a real tmpfs, or the test is skipped."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)],
                               capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot mount a tmpfs here: {e}")
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


class _FailingFile(FileWrapper):
    """A binary file whose writes fail with ``err`` once ``budget`` bytes have gone through."""

    def __init__(self, f, budget: int, err: int):
        super().__init__(f)
        self._budget, self._err = budget, err
        self.failed = False

    def charge(self, n: int) -> None:
        if n > self._budget:
            self.failed = True
            raise OSError(self._err, os.strerror(self._err))
        self._budget -= n

    def write(self, data) -> int:
        self.charge(memoryview(data).nbytes)
        return self._f.write(data)


@pytest.fixture
def failing_writer(monkeypatch):
    """Make the safetensors writer's file fail with an errno part-way through the stream."""
    opened: list[_FailingFile] = []

    def install(err: int, budget: int = 100_000) -> list[_FailingFile]:
        real_open = open

        def fake_open(path, mode="r", *args, **kwargs):
            f = real_open(path, mode, *args, **kwargs)
            if "w" in mode and str(path).endswith(".safetensors"):
                wrapped = _FailingFile(f, budget, err)
                opened.append(wrapped)
                return wrapped
            return f

        monkeypatch.setattr(st_io, "open", fake_open, raising=False)
        return opened

    return install


# ---------------------------------------------------------------------------------------------
# Existing OUT


def test_out_is_an_existing_file(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.write_text("precious")
    for extra in ((), ("--force",)):
        r = cli("convert", tiny_ckpt, out, "--no-verify", *extra)
        _one_error(r, 2, "exists and is a file")
        assert out.read_text() == "precious"
        assert _leftovers(out) == []


def test_out_is_a_non_empty_folder_without_force(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    _one_error(r, 2, "exists and is not empty", "--force")
    assert _tree(out) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}
    assert _leftovers(out) == []


def test_out_is_an_empty_folder(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert r.code == 0, r.stderr
    assert (out / "model.safetensors").is_file()


def test_out_below_a_file(cli, tiny_ckpt, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    _one_error(r, 3, "cannot create")
    assert (tmp_path / "afile").read_text() == "x"


def test_force_replaces_only_with_a_complete_folder(cli, make_ckpt, tmp_path):
    a = make_ckpt(seed=1, name="a.pth.tar")
    b = make_ckpt(seed=2, name="b.pth.tar")
    out = tmp_path / "out"
    assert cli("convert", a, out, "--no-verify").code == 0
    (out / "notes.txt").write_text("old")
    old = _tree(out)
    r = cli("convert", b, out, "--no-verify", "--force")
    assert r.code == 0, r.stderr
    new = _tree(out)
    assert "notes.txt" not in new  # replaced as a whole, not merged
    assert new["model.safetensors"] != old["model.safetensors"]
    assert _leftovers(out) == []


def test_force_with_a_bad_checkpoint_keeps_the_old_folder(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    before = _tree(out)
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"<html>502 Bad Gateway</html>")
    r = cli("convert", bad, out, "--no-verify", "--force")
    _one_error(r, 3, "not a PyTorch checkpoint")
    assert _tree(out) == before
    assert _leftovers(out) == []


def test_force_with_a_failure_mid_write_keeps_the_old_folder(cli, tiny_ckpt, tmp_path, failing_writer):
    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    before = _tree(out)
    opened = failing_writer(errno.ENOSPC)
    r = cli("convert", tiny_ckpt, out, "--no-verify", "--force")
    assert opened and opened[0].failed
    _one_error(r, 3, "no space left")
    assert _tree(out) == before
    assert _leftovers(out) == []


def test_an_interrupted_swap_is_undone_by_the_next_run(cli, tiny_ckpt, tmp_path):
    # A run killed between moving the old OUT aside and renaming the new one in leaves only
    # .OUT.msn-old-PID: the next run puts it back instead of deleting the user's folder.
    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    before = _tree(out)
    aside = tmp_path / ".out.msn-old-424242"
    out.rename(aside)
    r = cli("convert", tiny_ckpt, out, "--no-verify")  # no --force: must refuse, OUT restored
    _one_error(r, 2, "exists and is not empty")
    assert _tree(out) == before and not aside.exists()


# ---------------------------------------------------------------------------------------------
# Read-only locations (root ignores chmod, so these use a read-only mount or a simulated errno)


def test_read_only_mount(cli, tiny_ckpt, mount_tmpfs):
    ro = mount_tmpfs("ro", "ro,size=1m")
    for out in (ro / "out", ro / "deeper" / "out"):
        r = cli("convert", tiny_ckpt, out, "--no-verify")
        _one_error(r, 3, "cannot", "writable location")
        assert not out.exists()
    assert list(ro.iterdir()) == []


def test_read_only_simulated(cli, tiny_ckpt, tmp_path, failing_writer):
    out = tmp_path / "out"
    opened = failing_writer(errno.EROFS, budget=0)
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert opened and opened[0].failed
    _one_error(r, 3, "read-only")
    assert not out.exists() and _leftovers(out) == []


def test_permission_denied_simulated(cli, tiny_ckpt, tmp_path, failing_writer):
    out = tmp_path / "out"
    failing_writer(errno.EACCES, budget=0)
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    _one_error(r, 3, "permission denied")
    assert not out.exists() and _leftovers(out) == []


# ---------------------------------------------------------------------------------------------
# A disk that fills up mid-write


def test_disk_full_on_a_small_tmpfs(cli, tiny_ckpt, mount_tmpfs):
    disk = mount_tmpfs("small", "size=300k")  # the tiny model's weights are ~600 kB
    out = disk / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    _one_error(r, 3, "no space left", "nothing was written")
    assert not out.exists()
    assert list(disk.iterdir()) == []  # not even the lock file
    assert not lock_path(out).exists()
    assert os.statvfs(disk).f_bfree == os.statvfs(disk).f_blocks  # every block given back


def test_disk_full_with_force_keeps_the_old_folder(cli, tiny_ckpt, mount_tmpfs):
    disk = mount_tmpfs("small", "size=1000k")  # room for one folder, not two
    out = disk / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    before = _tree(out)
    r = cli("convert", tiny_ckpt, out, "--no-verify", "--force")
    _one_error(r, 3, "no space left")
    assert _tree(out) == before and _leftovers(out) == []


def test_disk_full_simulated_mid_stream(cli, tiny_ckpt, tmp_path, failing_writer):
    out = tmp_path / "out"
    opened = failing_writer(errno.ENOSPC, budget=200_000)  # fails a few tensors in
    r = cli("convert", tiny_ckpt, out, "--no-verify", "--json")
    assert opened and opened[0].failed
    _one_error(r, 3, "no space left")
    assert r.stdout == ""  # no half-made JSON report
    assert not out.exists() and _leftovers(out) == []


def test_file_size_limit_in_a_real_process(tiny_ckpt, tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG): a real OS failure."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "msn_cli", "convert", str(tiny_ckpt), str(out), "--no-verify"],
                       capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and "file too large" in p.stderr
    assert not out.exists() and _leftovers(out) == []


def test_force_refuses_to_replace_a_folder_holding_the_source(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    inside = out / "keep" / "ckpt.pth.tar"
    inside.parent.mkdir()
    inside.write_bytes(tiny_ckpt.read_bytes())
    before = _tree(out)
    r = cli("convert", inside, out, "--no-verify", "--force")
    _one_error(r, 2, "is inside", "would delete it")
    assert _tree(out) == before and _leftovers(out) == []


@pytest.mark.parametrize("command", ["convert", "export"])
def test_a_planted_symlink_as_the_output_lock_is_refused(cli, tiny_ckpt, tmp_path, command):
    """Anyone who can write beside OUT could plant ``.OUT.msn-lock`` as a link to a file of the
    user's: msn never opens it through the link (the file is neither created nor touched)."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me\n")
    missing = tmp_path / "created-through-link"
    out = tmp_path / ("out" if command == "convert" else "out.pth.tar")
    for target in (victim, missing):
        lock_path(out).unlink(missing_ok=True)
        lock_path(out).symlink_to(target)
        extra = ("--no-verify",) if command == "convert" else ()
        r = cli(command, tiny_ckpt, out, *extra)
        _one_error(r, 3, "symbolic link", str(lock_path(out)))
        assert victim.read_bytes() == b"keep me\n"
        assert not missing.exists()
        assert not out.exists()
        assert lock_path(out).is_symlink()  # left for the user to look at, never followed
