"""A real HTTP file server on 127.0.0.1 for download tests and the download benchmark.

It serves byte strings or files with Range support (206, Content-Range, 416), ETag and
Last-Modified with If-Range, and faults injected per path that a test queues up:

- ``cut``: send ``after`` bytes of the body, then reset the connection;
- ``short``: announce the full Content-Length, send ``after`` bytes, close cleanly;
- ``error``: answer ``status`` (500 by default) without a body;
- ``ignore_range``: answer 200 with the whole file even when a Range was asked for;
- ``not_found``: answer 404;
- ``slow``: pause ``delay`` seconds after every ``step`` bytes;
- ``hold``: send ``after`` bytes, then wait until the test calls ``release()``;
- ``no_length``: no Content-Length (the body ends when the connection closes);
- ``ignore_if_range``: serve the Range even when If-Range names another version (a broken
  cache in the path).
- ``redirect``: answer 302 with ``Location: location``;
- ``announce``: a Content-Length of ``after`` bytes, whatever the body is;
- ``swap_etag``: serve the Range whatever If-Range says, under the ETag ``etag`` (None: no
  ETag and no Last-Modified), as a server whose file changed and that ignores If-Range does.

A fault applies to the next request for its path; with ``ranged=True`` only to a request with a
Range header, with ``start=N`` only to one whose Range starts at byte N (so one segment of a
split download can fail while the others go through). ``rate`` (bytes per second) caps every
response body, each connection on its own, as a congested long path does.

Every request is logged (method, path, Range header, status, body bytes sent), so tests can
assert that a resume asked for a Range and that bytes were not sent twice.

Standalone (used by bench/download_bench.py)::

    python tests/http_server.py --root DIR [--port 0] [--rate BYTES_PER_SECOND]

prints the port on the first line of stdout and serves DIR until killed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STEP = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Fault:
    kind: str
    times: int | None = 1  # None: every request
    after: int = 0
    status: int = 500
    delay: float = 0.0
    step: int = STEP
    ranged: bool = False
    start: int | None = None
    etag: str | None = None
    location: str = ""

    def matches(self, rng: str | None) -> bool:
        if (self.ranged or self.start is not None) and not rng:
            return False
        if self.start is not None:
            m = _RANGE.match((rng or "").strip())
            return bool(m and m.group(1) and int(m.group(1)) == self.start)
        return True


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    status: int
    sent: int = 0
    done: bool = False  # the whole response body went out


@dataclass
class _Item:
    data: bytes | None = None
    file: Path | None = None
    mtime: float = field(default_factory=time.time)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.file.stat().st_size  # type: ignore[union-attr]

    @property
    def etag(self) -> str:
        if self.data is not None:
            return '"' + hashlib.sha256(self.data).hexdigest()[:16] + '"'
        st = self.file.stat()  # type: ignore[union-attr]
        return f'"{st.st_size:x}-{int(st.st_mtime_ns):x}"'


class FileServer:
    """Start with ``with FileServer() as srv:`` or ``srv.start()``; ``srv.url("/name")``."""

    def __init__(self, root: str | os.PathLike[str] | None = None, etag: bool = True,
                 rate: float | None = None):
        self.root = Path(root) if root else None
        self.etag = etag
        self.rate = rate
        self._items: dict[str, _Item] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self.log: list[Logged] = []
        self.active = self.peak = 0  # bodies being sent now, and the most at once
        self.gate = threading.Event()
        self.holding = threading.Event()  # set while a 'hold' fault waits on the gate
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ----------------------------------------------------------------------------
    def add(self, path: str, content: bytes | str | os.PathLike[str]) -> str:
        path = "/" + path.lstrip("/")
        item = _Item(data=content) if isinstance(content, bytes) else _Item(file=Path(content))
        with self._lock:
            self._items[path] = item
        return self.url(path)

    def fault(self, path: str, kind: str, times: int | None = 1, **params) -> None:
        path = "/" + path.lstrip("/")
        with self._lock:
            self._faults.setdefault(path, []).append(Fault(kind, times, **params))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def release(self) -> None:
        self.gate.set()

    # -- what happened ---------------------------------------------------------------------
    def requests(self, path: str | None = None, method: str = "GET") -> list[Logged]:
        p = None if path is None else "/" + path.lstrip("/")
        with self._lock:
            return [r for r in self.log if r.method == method and (p is None or r.path == p)]

    def body_bytes(self, path: str | None = None) -> int:
        return sum(r.sent for r in self.requests(path))

    # -- life ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def start(self, port: int = 0) -> FileServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.gate.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FileServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------
    def _lookup(self, path: str) -> _Item | None:
        with self._lock:
            item = self._items.get(path)
        if item is None and self.root is not None:
            candidate = (self.root / path.lstrip("/")).resolve()
            if candidate.is_file() and self.root.resolve() in candidate.parents:
                item = _Item(file=candidate, mtime=candidate.stat().st_mtime)
        return item

    def _take_fault(self, path: str, rng: str | None = None) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path) or []
            f = next((f for f in queue if f.matches(rng)), None)
            if f is None:
                return None
            if f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    queue.remove(f)
            return f

    def _record(self, entry: Logged) -> Logged:
        with self._lock:
            self.log.append(entry)
        return entry


class _Handler(BaseHTTPRequestHandler):
    owner: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv = self.owner
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        item = srv._lookup(path)
        fault = srv._take_fault(path, rng) if not head else None
        if item is None or (fault and fault.kind == "not_found"):
            srv._record(Logged(self.command, path, rng, 404))
            self._simple(404, b"not found\n")
            return
        if fault and fault.kind == "redirect":
            srv._record(Logged(self.command, path, rng, 302))
            self.send_response(302)
            self.send_header("Location", fault.location)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        if fault and fault.kind == "error":
            srv._record(Logged(self.command, path, rng, fault.status))
            self._simple(fault.status, b"injected error\n")
            return
        size = item.size
        start, end, status = 0, size - 1, 200
        if rng and not (fault and fault.kind == "ignore_range"):
            if_range = self.headers.get("If-Range")
            honour = if_range is None or if_range in (item.etag, formatdate(item.mtime, usegmt=True)) \
                or bool(fault and fault.kind in ("ignore_if_range", "swap_etag"))
            m = _RANGE.match(rng.strip())
            if honour and m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(size - int(m.group(2)), 0)
                if start >= size or start > end:
                    srv._record(Logged(self.command, path, rng, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                status = 206
        length = end - start + 1
        log = srv._record(Logged(self.command, path, rng, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if fault and fault.kind == "announce":
            self.send_header("Content-Length", str(fault.after))
        elif not (fault and fault.kind == "no_length"):
            self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if fault and fault.kind == "swap_etag":
            if fault.etag is not None:
                self.send_header("ETag", fault.etag)
        elif srv.etag:
            self.send_header("ETag", item.etag)
            self.send_header("Last-Modified", formatdate(item.mtime, usegmt=True))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        with srv._lock:
            srv.active += 1
            srv.peak = max(srv.peak, srv.active)
        try:
            self._body(item, start, length, fault, log)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with srv._lock:
                srv.active -= 1

    def _simple(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _body(self, item: _Item, start: int, length: int, fault: Fault | None, log: Logged) -> None:
        kind = fault.kind if fault else None
        limit = length
        if kind in ("cut", "short", "hold"):
            limit = min(fault.after, length)  # type: ignore[union-attr]
        self.wfile.flush()
        if item.file is not None and kind is None:
            # Plain path: let the kernel copy the file to the socket (paced when rate is set).
            rate = self.owner.rate
            block = max(int(rate / 50), 16 * 1024) if rate else 1 << 24
            t0 = time.perf_counter()
            with open(item.file, "rb") as f:
                offset, left = start, length
                while left > 0:
                    n = os.sendfile(self.connection.fileno(), f.fileno(), offset, min(left, block))
                    if n == 0:
                        break
                    offset += n
                    left -= n
                    log.sent += n
                    if rate:
                        _pace(t0, log.sent, rate)
            log.done = log.sent == length
            return
        sent = self._send_range(item, start, limit, fault, log)
        if kind == "hold":
            self.owner.holding.set()
            self.owner.gate.wait(timeout=120)
            sent += self._send_range(item, start + sent, length - sent, None, log)
        if kind == "cut" and sent < length:
            # An abrupt reset, as when a network path dies.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        if kind == "short":
            self.connection.shutdown(socket.SHUT_WR)
            return
        log.done = sent == length

    def _send_range(self, item: _Item, start: int, length: int, fault: Fault | None, log: Logged) -> int:
        sent = 0
        step = fault.step if fault else 1 << 20
        rate = self.owner.rate
        if rate:
            step = min(step, max(int(rate / 50), 16 * 1024))
        t0 = time.perf_counter()
        f = open(item.file, "rb") if item.file is not None else None
        try:
            while sent < length:
                n = min(step, length - sent)
                if f is not None:
                    f.seek(start + sent)
                    chunk = f.read(n)
                else:
                    chunk = item.data[start + sent: start + sent + n]  # type: ignore[index]
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                log.sent += len(chunk)
                if fault and fault.kind == "slow":
                    time.sleep(fault.delay)
                if rate:
                    _pace(t0, sent, rate)
        finally:
            if f is not None:
                f.close()
        return sent


def _pace(t0: float, sent: int, rate: float) -> None:
    """Sleep until ``sent`` bytes since ``t0`` are no faster than ``rate`` bytes per second."""
    ahead = t0 + sent / rate - time.perf_counter()
    if ahead > 0:
        time.sleep(ahead)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="folder to serve")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rate", type=float, default=None,
                    help="cap each response body at this many bytes per second")
    args = ap.parse_args(argv)
    srv = FileServer(root=args.root, rate=args.rate).start(args.port)
    sys.stdout.write(f"{srv.port}\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
