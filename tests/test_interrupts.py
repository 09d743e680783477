"""``msn_cli.util.interrupts.deferred``: Ctrl-C and SIGTERM held back across code that would
swallow them (torch's start-up clears an exception raised while it imports numpy), then
delivered to the handler that was there before."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from msn_cli.util.interrupts import deferred


def _swallowing(signum: int) -> bool:
    """Send ``signum`` to this process inside code that swallows every exception, as torch's
    start-up does; whether anything was swallowed."""
    try:
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # Python runs the handler here
    except BaseException:
        return True
    return False


def test_without_it_the_interrupt_is_swallowed():
    # the failure deferred() exists for: this test would prove nothing if it did not happen
    assert _swallowing(signal.SIGINT)


def test_ctrl_c_is_delivered_after_the_block():
    before = signal.getsignal(signal.SIGINT)
    swallowed = None
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            swallowed = _swallowing(signal.SIGINT)
    assert swallowed is False
    assert signal.getsignal(signal.SIGINT) is before


def test_a_python_handler_runs_once_after_the_block(monkeypatch):
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda n, f: calls.append(n))
    try:
        with deferred():
            assert not _swallowing(signal.SIGTERM)
            assert not _swallowing(signal.SIGTERM)
            assert calls == []
        assert calls == [signal.SIGTERM]  # the first pending signal, once
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nothing_pending_nothing_delivered():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda n, f: calls.append(n))
    try:
        with deferred():
            pass
        assert calls == [] and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with deferred():
            assert not _swallowing(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_it_changes_nothing():
    seen = []

    def run():
        with deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [signal.getsignal(signal.SIGINT)]


def test_python_m_exits_130_after_an_interrupt_that_passed_through_exec(tmp_path):
    """CI saw ``python -m msn_cli convert`` print "Error: interrupted" and then die by SIGINT
    (-2) instead of exiting 130: Ctrl-C had landed inside a dataclass's exec'd method source,
    and CPython remembered it although msn caught it. Reproduced deterministically here."""
    import subprocess
    import sys

    pkg = tmp_path / "probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "from msn_cli.cli import entry\n"
        # import what the message needs first, as a real run has: an import that runs exec()
        # after the interrupt would hide what this test shows
        "entry.exit_code_for(KeyboardInterrupt())\n"
        "def main():\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt as e:\n"
        "        return entry.exit_code_for(e)\n"
        "entry.main = main\n"
        "entry.run()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    p = subprocess.run([sys.executable, "-m", "probe"], env=env, capture_output=True, text=True, timeout=120)
    assert "interrupted" in p.stderr
    assert p.returncode == 130, p.stderr
