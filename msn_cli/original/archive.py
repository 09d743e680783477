"""What a checkpoint file is from its first bytes, and whether its zip archive is intact.

``torch.save`` writes a zip archive (stored, never compressed) whose members each carry a
CRC-32; ``torch.load`` does not check them, so a flipped bit in a tensor would otherwise be
converted silently. :func:`check_zip_integrity` reads the file once and checks every member;
:func:`check_pickle_crc` checks only the small object table, before anything unpickles it,
and refuses an archive whose members would inflate past what a checkpoint holds.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from msn_cli.errors import CheckpointError
from msn_cli.progress import ProgressFn, no_progress

try:  # zlib-ng's CRC-32 is about 4x the standard library's; the source check can be the last
    from zlib_ng.zlib_ng import crc32  # step of a large convert (docs/benchmarks.md)
except ImportError:  # pragma: no cover - zlib-ng is a dependency; a build without it still works
    from zlib import crc32

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
"""The first bytes of a file written by ``torch.save`` before its zip format (PyTorch < 1.6)."""

_LOCAL_HEADER = 30  # bytes of a zip local file header before the member's name and extra field
_CHUNK = 8 << 20

MAX_PICKLE_BYTES = 1 << 20
"""The most a checkpoint's object table (``data.pkl``, or a legacy file's pickles) may hold. A
ViT-H/14 training file's, the largest there is, is about 190 kB. torch's weights-only unpickler
spends about 5 us and 300 bytes on an object a single byte can make (an empty dict), so the cap
is what bounds the time and memory of a load: about 5 s and 300 MB at most."""
LEGACY_PICKLES = 5
"""A legacy file: magic number, protocol, system info, the object, the storage keys (then the
tensors' bytes, which are not pickled)."""
MAX_INFLATED_BYTES = MAX_PICKLE_BYTES
"""The most a compressed member may inflate to: ``torch.save`` compresses nothing, so only a
file made by other means has one, and a few kB of DEFLATE can inflate to gigabytes."""


def sniff(path: Path) -> str:
    """What kind of file this is from its first bytes: zip, legacy, or a description of junk."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(LEGACY_MAGIC):
        return "legacy"
    if head.startswith(b"\x80"):
        return "pickle"
    if head.startswith(b"version https://git-lfs"):
        return "a git-lfs pointer file (the weights were never fetched: run `git lfs pull`)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "an HTML/XML page (probably an error page saved under the checkpoint's name)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data that is neither a zip nor a pickle"


def damaged(path: Path, what: str) -> CheckpointError:
    """The error for a checkpoint whose bytes changed after it was written."""
    return CheckpointError(f"{path.name} is damaged: {what}",
                           hint="the file changed after it was written; download it again "
                                "(msn download --force NAME)")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read one member to its end: :mod:`zipfile` checks its CRC-32 as it reaches it."""
    with zf.open(info) as member:
        while member.read(1 << 20):
            pass


def _is_pickle(info: zipfile.ZipInfo) -> bool:
    return info.filename.rsplit("/", 1)[-1] == "data.pkl"


def refuse_bombs(path: Path, zf: zipfile.ZipFile) -> None:
    """Refuse, from the sizes the archive declares and before anything is inflated, an object
    table over :data:`MAX_PICKLE_BYTES` and a compressed member over :data:`MAX_INFLATED_BYTES`
    (a member longer than it declares fails its read: :mod:`zipfile` and torch both stop at the
    declared size)."""
    for info in zf.infolist():
        if _is_pickle(info) and info.file_size > MAX_PICKLE_BYTES:
            what, cap = "its object table (data.pkl)", MAX_PICKLE_BYTES
        elif info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATED_BYTES:
            what, cap = f"its compressed member {info.filename[:80]}", MAX_INFLATED_BYTES
        else:
            continue
        raise CheckpointError(
            f"refused {path.name}: {what} would inflate to {info.file_size:,} bytes, more than "
            f"the {cap >> 20} MiB msn reads",
            hint="a torch.save file's object table is well under 1 MiB and nothing in it is "
                 "compressed; do not trust this file")


def check_legacy_pickles(path: Path) -> None:
    """Refuse a legacy or plain-pickle file whose pickles run past :data:`MAX_PICKLE_BYTES`,
    from their opcodes alone (nothing is built), before torch unpickles them; a file that is
    not pickles at all is left to torch to name."""
    import pickletools

    with open(path, "rb") as f:
        head = io.BytesIO(f.read(MAX_PICKLE_BYTES + 1))
    try:
        for _ in range(LEGACY_PICKLES):
            for _op in pickletools.genops(head):
                pass
    except ValueError:  # no STOP before the bytes read ran out, or not a pickle
        if head.tell() > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"refused {path.name}: its pickles run past the {MAX_PICKLE_BYTES >> 20} MiB "
                "msn reads", hint="a checkpoint's pickled objects are well under 1 MiB; do not "
                                  "trust this file") from None


def check_pickle_crc(path: Path) -> None:
    """Check the CRC-32 of the archive's ``data.pkl`` (small) before anything unpickles it,
    so that a damaged object table reads as damage, not as a hostile file; refuse an archive
    that would inflate past what a checkpoint holds (:func:`refuse_bombs`) first."""
    try:
        with zipfile.ZipFile(path) as zf:
            refuse_bombs(path, zf)
            for info in zf.infolist():
                if _is_pickle(info):
                    _read_member(zf, info)
    except zipfile.BadZipFile as e:  # "Bad CRC-32 for file ...", bad local header, ...
        raise damaged(path, f"{e} (the object table does not match its checksum)") from e
    except (OSError, EOFError, ValueError) as e:
        raise damaged(path, str(e) or type(e).__name__) from e


@dataclass(frozen=True)
class _Member:
    """Where a stored member's data lies in the file, and the CRC-32 it must have."""

    start: int
    stop: int
    crc: int
    name: str


def _stored_members(path: Path) -> list[_Member]:
    """Every stored member's data range, in file order; compressed members (torch writes
    none) are checked on the spot by :mod:`zipfile` instead."""
    members: list[_Member] = []
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
            refuse_bombs(path, zf)
            for info in zf.infolist():
                f.seek(info.header_offset)
                local = f.read(_LOCAL_HEADER)
                if len(local) != _LOCAL_HEADER or not local.startswith(ZIP_MAGIC):
                    raise damaged(path, f"the local header of {info.filename} is broken")
                if info.compress_type != zipfile.ZIP_STORED:
                    _read_member(zf, info)
                    continue
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + _LOCAL_HEADER + name_len + extra_len
                members.append(_Member(start, start + info.compress_size, info.CRC, info.filename))
    except zipfile.BadZipFile as e:
        raise damaged(path, str(e)) from e
    members.sort(key=lambda m: (m.start, m.stop))
    return members


class _CrcChecker:
    """The running CRC-32 of each member, fed the file's chunks in order."""

    def __init__(self, path: Path, members: list[_Member]) -> None:
        self.path = path
        self.members = members
        self.crcs = [0] * len(members)
        self.first_open = 0  # members before this one are complete and checked

    def feed(self, chunk: memoryview, pos: int) -> None:
        """Account for ``chunk``, the file's bytes from offset ``pos``."""
        end = pos + len(chunk)
        j = self.first_open
        while j < len(self.members) and self.members[j].start <= end:
            m = self.members[j]
            lo, hi = max(m.start, pos), min(m.stop, end)
            if lo < hi:
                self.crcs[j] = crc32(chunk[lo - pos:hi - pos], self.crcs[j])
            if m.stop > end:
                return
            if self.crcs[j] != m.crc:
                raise damaged(self.path, f"member {m.name} does not match its CRC-32 checksum")
            j += 1
            self.first_open = j

    def finish(self) -> None:
        if self.first_open < len(self.members):
            name = self.members[self.first_open].name
            raise damaged(self.path, f"it ends inside member {name} (truncated)")


def check_zip_integrity(path: str | os.PathLike[str], progress: ProgressFn = no_progress,
                        want_sha256: bool = True) -> str | None:
    """Read a zip-format checkpoint once, checking every member against its stored CRC-32.

    The file's sha256 is computed in the same pass and returned when ``want_sha256``. The
    checksums (CRC-32, hashlib) release the GIL, so the check can run in a thread
    beside the conversion. Raises :class:`CheckpointError` naming the first damaged member.
    """
    path = Path(path)
    checker = _CrcChecker(path, _stored_members(path))
    total = path.stat().st_size
    digest = hashlib.sha256() if want_sha256 else None
    pos = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            chunk = view[:n]
            if digest is not None:
                digest.update(chunk)
            checker.feed(chunk, pos)
            pos += n
            progress("checking source", pos, total)
    checker.finish()
    return digest.hexdigest() if digest is not None else None
