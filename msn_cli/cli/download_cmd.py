"""``msn download``: fill the checkpoint cache (``msn cache`` lists, checks and empties it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from msn_cli.cli import completion
from msn_cli.cli.options import BaseUrlOpt, CacheDirOpt, JsonOpt, QuietOpt, VerboseOpt
from msn_cli.cli.signals import Terminated
from msn_cli.cli.term import Term
from msn_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, MsnError, UsageError
from msn_cli.util.fmt import human_size
from msn_cli.util.safeio import strip_credentials

if TYPE_CHECKING:
    from msn_cli.transfer.download import CachedFile

RELEASED_HELP = "vits16, vitb16, vitl16, vitb4, vitl7"


def download(
    names: Annotated[Optional[list[str]], typer.Argument(
        help=f"Released names ({RELEASED_HELP}), entries of msn cache ls (fetched again from "
             "their source with --verify or --force) or http(s) URLs.",
        autocompletion=completion.released, show_default=False)] = None,
    all_released: Annotated[bool, typer.Option(
        "--all", help="All five released checkpoints.")] = False,
    sha256: Annotated[Optional[str], typer.Option(
        "--sha256", metavar="HEX", help="Expected sha256 of the file (one name or URL only); "
        "a mismatch deletes the download.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even when cached.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Re-hash a cached file against the index; a damaged one is downloaded "
        "again.")] = False,
    connections: Annotated[Optional[int], typer.Option(
        "--connections", "-c", metavar="N", help="Connections at once: ranged requests for a file "
        "of 64 MiB or more whose first stream is slow (below $MSN_DOWNLOAD_SPLIT_BELOW MB/s, "
        "else 150), shared by all the files of one command (1: one stream, one file at a time) "
        "\\[default: $MSN_DOWNLOAD_CONNECTIONS, else 4].",
        show_default=False)] = None,
    base_url: BaseUrlOpt = None,
    cache_dir: CacheDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Download released checkpoints (or any http(s) URL) into the shared cache.

    Prints the cached path of each file on stdout. A file that is already cached is not
    downloaded again (no network at all). An interrupted download resumes where it stopped
    the next time. A large file starts as one stream; if that stream is slow, the rest is
    fetched over several connections at once (--connections), each writing its own byte
    ranges; the sha256 always covers the whole file. Several files (--all) are fetched at
    once within the same budget of connections. Other commands (inspect, convert) download
    through the same cache.

    Bounds: a file may be at most what a released checkpoint can weigh (twice its float32
    parameters), else $MSN_DOWNLOAD_MAX_SIZE bytes (16 GiB); a longer answer is refused. A
    transfer that brings less than $MSN_DOWNLOAD_MIN_RATE bytes/s (10000; 0: never) over
    $MSN_DOWNLOAD_TIMEOUT seconds (60) is stalled and gives up; the next run resumes it.

    Exit codes: 0 done, 2 usage, 3 cache folder unusable or disk full, 4 network or server
    error (or offline with the file not cached), 130 interrupted (Ctrl-C), 143 terminated
    (SIGTERM).

    Examples:

      msn download vits16

      msn download --all --base-url https://mirror.example.org/msn/

      msn download https://example.org/my_msn_run.pth.tar --sha256 0123...cdef
    """
    from msn_cli.transfer.download import download_connections

    specs = _specs(names, all_released, sha256)
    connections = download_connections(connections)  # a bad value stops before any transfer
    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    outcomes = _fetch(term, specs, connections=connections, cache_dir=cache_dir, base_url=base_url,
                      sha256=sha256, force=force, verify=verify)
    got, failed = _report(term, specs, outcomes, json_out)
    if json_out:
        from msn_cli.transfer.cache import Cache

        term.emit_json({
            "cache_dir": str(Cache(cache_dir).root),
            "files": got,
            "failed": [{"spec": s, "error": e.message, "hint": e.hint, "exit_code": e.exit_code}
                       for s, e in failed],
        })
    if failed:
        first = failed[0][1]
        raise type(first)(f"{len(failed)} of {len(specs)} downloads failed: "
                          + ", ".join(s for s, _ in failed),
                          hint=first.hint, exit_code=first.exit_code)


def _report(term: Term, specs: list[str], outcomes: list[CachedFile | MsnError],
            json_out: bool) -> tuple[list[dict[str, Any]], list[tuple[str, MsnError]]]:
    """Say what became of each file (its path on stdout); return the files got, as --json shows
    them, and the specs that failed with their errors. A single spec's failure is raised."""
    got: list[dict[str, Any]] = []
    failed: list[tuple[str, MsnError]] = []
    for spec, f in zip(specs, outcomes, strict=True):
        shown = strip_credentials(spec)
        if isinstance(f, MsnError):
            if len(specs) == 1:
                raise f
            term.warn(f.message if shown in f.message else f"{shown}: {f.message}")
            failed.append((shown, f))
            continue
        got.append(f.to_dict())
        _say_fetched(term, f)
        if not json_out:
            term.line(str(f.path))
    return got, failed


def _specs(names: list[str] | None, all_released: bool, sha256: str | None) -> list[str]:
    """What to fetch, each once, in the order given (``--all`` adds the released names)."""
    from msn_cli.original.variants import VARIANTS

    specs = list(dict.fromkeys(names or []))
    if all_released:
        specs += [n for n in VARIANTS if n not in specs]
    if not specs:
        raise UsageError("nothing to download", hint=f"give one or more of {RELEASED_HELP}, a URL, or --all")
    if sha256 and len(specs) > 1:
        raise UsageError("--sha256 pins one file; give a single name or URL with it")
    return specs


def _fetch(term: Term, specs: list[str], *, connections: int, cache_dir: Path | None,
           base_url: str | None, sha256: str | None, force: bool,
           verify: bool) -> list[CachedFile | MsnError]:
    """Each spec's cached file, or the error that stopped it; an interruption keeps what arrived."""
    from msn_cli.transfer.download import fetch, fetch_many

    with term.progress() as progress:
        try:
            if len(specs) == 1:
                try:
                    return [fetch(specs[0], cache_dir=cache_dir, base_url=base_url, sha256=sha256,
                                  force=force, verify=verify, progress=progress, notify=term.info,
                                  connections=connections)]
                except MsnError as e:
                    return [e]
            # several at once, within one budget of connections
            return fetch_many(specs, cache_dir=cache_dir, base_url=base_url, force=force,
                              verify=verify, progress=progress, notify=term.info,
                              connections=connections)
        except (KeyboardInterrupt, Terminated) as e:
            ctrl_c = isinstance(e, KeyboardInterrupt)
            what = strip_credentials(specs[0]) if len(specs) == 1 else f"{len(specs)} files"
            raise MsnError(f"{'interrupted' if ctrl_c else 'terminated'} while getting {what}; "
                           "what arrived is kept in the cache",
                           hint="run the same command again to resume where it stopped",
                           exit_code=EXIT_INTERRUPTED if ctrl_c else EXIT_TERMINATED) from None


def _say_fetched(term: Term, f: CachedFile) -> None:
    """What became of one file: downloaded (how, how fast), checked, or already there."""
    if f.downloaded:
        resumed = f" (resumed from {human_size(f.resumed_from)})" if f.resumed_from else ""
        term.success(f"downloaded {f.name}, {human_size(f.size)}{resumed}, sha256 {f.sha256}")
        if f.first_rate is not None and not f.split:  # a split is said when it happens
            term.detail(f"{f.name}: one connection brought {f.first_rate / 1e6:.1f} MB/s, "
                        "fast enough not to split it")
    elif f.verified:
        term.success(f"{f.name} is cached and its sha256 matches the index")
    else:
        term.detail(f"{f.name} is already cached ({human_size(f.size)})")
