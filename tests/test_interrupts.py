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
