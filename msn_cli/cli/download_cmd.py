"""``msn download`` and ``msn cache``: fill, list, check and empty the checkpoint cache."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from msn_cli.cli import Terminated
from msn_cli.cli.options import BaseUrlOpt, CacheDirOpt, JsonOpt, QuietOpt, VerboseOpt
from msn_cli.cli.render import human_bytes
from msn_cli.cli.term import Term
from msn_cli.dev.clidocs import MsnCommand, MsnGroup
from msn_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, MsnError, UsageError, VerificationFailed

RELEASED_HELP = "vits16, vitb16, vitl16, vitb4, vitl7"


def download(
    names: Annotated[Optional[list[str]], typer.Argument(
        help=f"Released names ({RELEASED_HELP}), entries of msn cache ls (fetched again from "
             "their source with --verify or --force) or http(s) URLs.", show_default=False)] = None,
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

    Exit codes: 0 done, 2 usage, 3 cache folder unusable or disk full, 4 network or server
    error (or offline with the file not cached), 130 interrupted (Ctrl-C), 143 terminated
    (SIGTERM).

    Examples:

      msn download vits16

      msn download --all --base-url https://mirror.example.org/msn/

      msn download https://example.org/my_msn_run.pth.tar --sha256 0123...cdef
    """
    from msn_cli.original.variants import VARIANTS
    from msn_cli.transfer.cache import Cache
    from msn_cli.transfer.download import download_connections, fetch, fetch_many
    from msn_cli.util.safeio import strip_credentials

    specs = list(dict.fromkeys(names or []))
    if all_released:
        specs += [n for n in VARIANTS if n not in specs]
    if not specs:
        raise UsageError("nothing to download", hint=f"give one or more of {RELEASED_HELP}, a URL, or --all")
    if sha256 and len(specs) > 1:
        raise UsageError("--sha256 pins one file; give a single name or URL with it")

    connections = download_connections(connections)  # a bad value stops before any transfer
    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    got: list[dict[str, Any]] = []
    failed: list[tuple[str, MsnError]] = []
    with term.progress() as progress:
        try:
            if len(specs) == 1:
                outcomes: list[Any] = [_fetch_one(fetch, specs[0], cache_dir=cache_dir,
                                                  base_url=base_url, sha256=sha256, force=force,
                                                  verify=verify, progress=progress,
                                                  notify=term.info, connections=connections)]
            else:  # several at once, within one budget of connections
                outcomes = fetch_many(specs, cache_dir=cache_dir, base_url=base_url, force=force,
                                      verify=verify, progress=progress, notify=term.info,
                                      connections=connections)
        except (KeyboardInterrupt, Terminated) as e:
            ctrl_c = isinstance(e, KeyboardInterrupt)
            what = strip_credentials(specs[0]) if len(specs) == 1 else f"{len(specs)} files"
            raise MsnError(f"{'interrupted' if ctrl_c else 'terminated'} while getting {what}; "
                           "what arrived is kept in the cache",
                           hint="run the same command again to resume where it stopped",
                           exit_code=EXIT_INTERRUPTED if ctrl_c else EXIT_TERMINATED) from None
    for spec, f in zip(specs, outcomes, strict=True):
        shown = strip_credentials(spec)
        if isinstance(f, MsnError):
            if len(specs) == 1:
                raise f
            term.warn(f.message if shown in f.message else f"{shown}: {f.message}")
            failed.append((shown, f))
            continue
        got.append(f.to_dict())
        if f.downloaded:
            resumed = f" (resumed from {human_bytes(f.resumed_from)})" if f.resumed_from else ""
            term.success(f"downloaded {f.name}, {human_bytes(f.size)}{resumed}, sha256 {f.sha256}")
            if f.first_rate is not None and not f.split:  # a split is said when it happens
                term.detail(f"{f.name}: one connection brought {f.first_rate / 1e6:.1f} MB/s, "
                            "fast enough not to split it")
        elif f.verified:
            term.success(f"{f.name} is cached and its sha256 matches the index")
        else:
            term.detail(f"{f.name} is already cached ({human_bytes(f.size)})")
        if not json_out:
            term.line(str(f.path))
    if json_out:
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


def _fetch_one(fetch: Any, spec: str, **options: Any) -> Any:
    """One file: its :class:`CachedFile`, or the :class:`MsnError` that stopped it."""
    try:
        return fetch(spec, **options)
    except MsnError as e:
        return e


cache_app = typer.Typer(
    name="cache",
    cls=MsnGroup,
    help="List, check and remove downloaded checkpoints.\n\n"
         "The cache is --cache-dir, else $MSN_CACHE, else $XDG_CACHE_HOME/msn, else ~/.cache/msn.\n\n"
         "Examples:\n\n"
         "  msn cache ls\n\n"
         "  msn cache check --json\n\n"
         "  msn cache rm vitl7",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cache_app.command("ls", cls=MsnCommand)
def cache_ls(
    cache_dir: CacheDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """List the cached checkpoints, unfinished downloads and the total size.

    Examples:

      msn cache ls

      msn cache ls --json
    """
    from msn_cli.transfer.cache import Cache

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    summary = Cache(cache_dir).summary()
    if json_out:
        term.emit_json(summary)
        return
    narrow = term.width < 120  # the source URL goes under the name instead of in a column
    t = Table(title=f"Cache: {summary['cache_dir']}", title_justify="left")
    t.add_column("name" + (" and source" if narrow else ""), overflow="fold")
    for col in ("released", "size", "downloaded", "sha256"):
        t.add_column(col, no_wrap=True, justify="right" if col == "size" else "left")
    if not narrow:
        t.add_column("source", overflow="fold")

    def row(name: Text, url: str, *cells: str) -> None:
        if narrow:
            name.append("\n" + url, style="dim")
        t.add_row(name, *cells, *(() if narrow else (url,)))

    for e in summary["entries"]:
        name = Text(e["name"])
        if not e["intact"]:
            name.append(" (damaged: size differs)", style="red")
        when = e["downloaded_at"].replace("T", " ")[:16]
        row(name, e["url"], e["variant"] or "", human_bytes(e["size"]), when,
            e["sha256"][:12] if not verbose else e["sha256"])
    for p in summary["partial"]:
        of = f" of {human_bytes(p['total'])}" if p["total"] else ""
        row(Text.assemble(p["name"], (" (partial)", "yellow")), p["url"] or "", "",
            human_bytes(p["size"]) + of, "unfinished", "")
    _warn_damaged(term, summary["damaged"])
    n = len(summary["entries"])
    t.caption = (f"{n} file{'s' if n != 1 else ''}"
                 + (f", {len(summary['partial'])} unfinished" if summary["partial"] else "")
                 + f", {human_bytes(summary['total_bytes'])} in all")
    term.data(t)


def _printable(text: str) -> str:
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _warn_damaged(term: Term, damaged: list[dict[str, Any]]) -> None:
    """One warning per index record msn ignores (its key is shown as text, never followed)."""

    from msn_cli.util.safeio import redact

    for d in damaged:
        term.warn(f"damaged index entry '{_printable(d['key'])}': {redact(d['problem'])}")
    if damaged:
        term.info("msn cache rm --all --yes (or msn cache rm KEY) drops damaged index entries; "
                  "no file is touched for them")


def _selected(cache: Any, names: list[str] | None, everything: bool) -> list[str]:
    """Entry names (finished or partial, and damaged index keys) for what the user typed."""
    known = ({e.name for e in cache.entries()} | {p.name for p in cache.partials()}
             | {d.key for d in cache.damaged()})
    if everything:
        if names:
            raise UsageError("give names or --all, not both")
        return sorted(known)
    if not names:
        raise UsageError("say what to remove", hint="give names (see msn cache ls) or --all")
    out: list[str] = []
    for spec in names:
        name = _entry_name(cache, spec)
        if name not in known:
            raise UsageError(f"nothing in the cache is called '{spec}'",
                             hint="msn cache ls lists what is there")
        if name not in out:
            out.append(name)
    return out


def _entry_name(cache: Any, spec: str) -> str:
    """The entry name for an entry name, a released name or a source URL."""
    found = cache.find_by_url(spec) if "://" in spec else None
    return found.name if found is not None else cache.name_for(spec)


def _stdin_interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


@cache_app.command("rm", cls=MsnCommand)
def cache_rm(
    names: Annotated[Optional[list[str]], typer.Argument(
        help="Entry names from msn cache ls, released names or source URLs.", show_default=False)] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Empty the whole cache.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    cache_dir: CacheDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Remove cached checkpoints (and their unfinished downloads).

    Asks for confirmation unless --yes is given; without a terminal to ask on, --yes is required.

    Examples:

      msn cache rm vits16

      msn cache rm --all --yes
    """
    from msn_cli.transfer.cache import Cache

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    cache = Cache(cache_dir)
    selected = _selected(cache, names, all_entries)
    sizes = {e.name: e.size for e in cache.entries()}
    for p in cache.partials():
        sizes[p.name] = sizes.get(p.name, 0) + p.size
    total = sum(sizes.get(n, 0) for n in selected)
    if not selected:
        term.info("the cache is empty; nothing to remove")
        if json_out:
            term.emit_json({"cache_dir": str(cache.root), "removed": [], "bytes": 0})
        return
    if not yes:
        if not _stdin_interactive():
            raise UsageError(f"refusing to delete {len(selected)} cached file(s) without confirmation",
                             hint="add --yes")
        listing = ", ".join(selected)
        if not typer.confirm(f"Delete {listing} ({human_bytes(total)}) from {cache.root}?",
                             default=False, err=True):
            term.info("nothing deleted")
            if json_out:
                term.emit_json({"cache_dir": str(cache.root), "removed": [], "bytes": 0})
            return
    removed = [cache.remove(n) for n in selected]
    freed = sum(r["bytes"] for r in removed)
    if json_out:
        term.emit_json({"cache_dir": str(cache.root), "removed": removed, "bytes": freed})
    else:
        term.success(f"removed {', '.join(selected)}: {human_bytes(freed)} freed")


@cache_app.command("check", cls=MsnCommand)
def cache_check(
    names: Annotated[Optional[list[str]], typer.Argument(
        help="Entry names from msn cache ls, released names or source URLs \\[default: all].",
        show_default=False)] = None,
    cache_dir: CacheDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Re-hash cached checkpoints and compare them with the index.

    Exits 1 when a file is missing (a NAME not in the cache included), has another size or
    another sha256. Nothing is changed: 'msn download NAME --verify' (or --force) fetches a
    damaged file again.

    Examples:

      msn cache check

      msn cache check vitb16 --json
    """
    from msn_cli.transfer.cache import Cache

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    cache = Cache(cache_dir)
    entries = cache.entries()
    damaged = cache.damaged()
    rows: list[dict[str, Any]] = []
    if names:  # a name not in the cache is missing, like a file gone from it: exit 1
        wanted = list(dict.fromkeys(_entry_name(cache, n) for n in names))
        have = {e.name for e in entries} | {d.key for d in damaged}
        rows += [{"name": _printable(n), "ok": False, "problem": "not in the cache"}
                 for n in wanted if n not in have]
        entries = [e for e in entries if e.name in wanted]
        damaged = [d for d in damaged if d.key in wanted]
    rows += [{"name": _printable(d.key), "ok": False, "problem": f"damaged index entry, {d.problem}"}
             for d in damaged]  # reported, never followed
    with term.progress() as progress:
        for e in entries:
            rows.append(cache.check(e, progress))
    bad = [r for r in rows if not r["ok"]]
    if json_out:
        term.emit_json({"cache_dir": str(cache.root), "checked": rows, "ok": not bad})
    else:
        for r in rows:
            if r["ok"]:
                term.success(f"{r['name']}: sha256 matches the index")
            else:
                term.failure(f"{r['name']}: {r['problem']}")
        if not rows:
            term.info("the cache holds no finished files")
    if bad:
        raise VerificationFailed(f"{len(bad)} of {len(rows)} cached file(s) missing or damaged: "
                                 + ", ".join(r["name"] for r in bad),
                                 hint="msn download NAME --verify fetches a missing or damaged "
                                      "file again")
