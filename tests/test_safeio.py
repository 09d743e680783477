"""The shared rules for planted files and names (msn_cli/util/safeio.py)."""

import os
import threading

import pytest

from msn_cli.util import safeio
from msn_cli.util.safeio import UnsafeInput


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "/abs", "a\\b", "a\x00b", "a\nb", 7, None])
def test_safe_name_refuses_anything_but_one_plain_component(name):
    with pytest.raises(UnsafeInput):
        safeio.safe_name(name)


def test_safe_name_keeps_plain_names():
    for name in ("vits16_800ep.pth.tar", "odd [v2].bin", ".hidden", "a..b"):
        assert safeio.safe_name(name) == name


def test_inside_keeps_names_in_the_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    assert safeio.inside(tmp_path, "sub/model.safetensors") == tmp_path / "sub" / "model.safetensors"
    for bad in ("../../etc/passwd", "/etc/passwd", "sub/../../x", "a\\b", "", 3):
        with pytest.raises(UnsafeInput):
            safeio.inside(tmp_path, bad)


def test_inside_refuses_a_link_that_leaves_the_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside)
    with pytest.raises(UnsafeInput, match="outside"):
        safeio.inside(folder, "config.json")


def test_read_refuses_fifo_without_blocking_and_devices(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    result = {}

    def read():
        try:
            safeio.read_json(fifo)
        except UnsafeInput as e:
            result["err"] = str(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert "named pipe" in result["err"]
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(UnsafeInput, match="device"):
        safeio.read_capped(link)
    with pytest.raises(UnsafeInput, match="folder"):
        safeio.read_capped(tmp_path)


def test_read_refuses_links_when_asked(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert safeio.read_json(link) == {}
    with pytest.raises(UnsafeInput, match="symbolic link"):
        safeio.read_json(link, follow_links=False)


def test_read_caps_size_and_depth(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 101)
    with pytest.raises(UnsafeInput, match="larger than 100"):
        safeio.read_capped(big, limit=100)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UnsafeInput, match="nested deeper"):
        safeio.read_json(deep)
    # brackets inside strings are text, escaped quotes do not end a string
    assert safeio.parse_json('{"a": "[[[[\\"[[[["}') == {"a": '[[[["[[[['}
    nested = safeio.parse_json(b"[" * 100 + b"]" * 100)  # deep, but within the parser's reach
    for _ in range(99):
        (nested,) = nested
    assert nested == []
    with pytest.raises(ValueError):
        safeio.parse_json(b"{not json")


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_an_interrupt_as_the_file_is_opened_stays_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM raised the moment the file object is handed over (Python runs signal
    handlers as a call returns) must reach the caller as itself, with the descriptor closed once.
    It used to be closed twice: the second close failed with EBADF, and that OSError replaced
    the interrupt, so a SIGTERM during verify became "config.json is unreadable (Bad file
    descriptor)" and the conversion went on."""
    import builtins

    path = tmp_path / "config.json"
    path.write_text("{}")

    def interrupting(real):
        def call(*args, **kwargs):
            f = real(*args, **kwargs)
            assert f.fileno() >= 0
            del f  # as the interpreter drops the call's result when the handler raises
            raise KeyboardInterrupt

        return call

    # whichever call hands the descriptor to a file object (open now, os.fdopen before)
    monkeypatch.setattr(safeio, "open", interrupting(builtins.open), raising=False)
    monkeypatch.setattr(safeio.os, "fdopen", interrupting(os.fdopen))
    before = _open_fds()
    with pytest.raises(KeyboardInterrupt):
        with safeio.open_regular(path):
            pass
    with pytest.raises(KeyboardInterrupt):
        safeio.read_json(path)
    monkeypatch.undo()
    assert _open_fds() == before  # nothing leaked
    assert safeio.read_json(path) == {}


def test_replace_file_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "msn_manifest.json"
    target.symlink_to(victim)
    safeio.replace_file(target, b"new")
    assert victim.read_text() == "keep me"
    assert not target.is_symlink() and target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def has_credentials(url: str) -> bool:
    return safeio.strip_credentials(url) != url


def test_credentials_are_stripped_from_urls_and_text():
    url = "http://alice:S3cretPW@mirror.example:8080/msn/vits16_800ep.pth.tar?x=1"
    assert safeio.strip_credentials(url) == "http://mirror.example:8080/msn/vits16_800ep.pth.tar?x=1"
    assert has_credentials(url)
    assert not has_credentials("https://dl.fbaipublicfiles.com/msn/vits16_800ep.pth.tar")
    msg = f"cannot reach {url}: connection refused (also https://bob@h2/x)"
    out = safeio.redact(msg)
    assert "S3cretPW" not in out and "alice" not in out and "bob@" not in out
    assert "http://mirror.example:8080/msn/" in out
