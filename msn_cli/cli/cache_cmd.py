"""``msn cache ls|rm|check``: list, remove and re-hash the downloaded checkpoints."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from msn_cli.cli.helpfmt import MsnCommand, MsnGroup
from msn_cli.cli.options import CacheDirOpt, JsonOpt, QuietOpt, VerboseOpt
from msn_cli.cli.term import Term
from msn_cli.errors import UsageError, VerificationFailed
from msn_cli.util.fmt import human_size

if TYPE_CHECKING:
    from msn_cli.transfer.cache import Cache


cache_app = typer.Typer(
    name="cache",
    cls=MsnGroup,
    help="List, check and remove downloaded checkpoints.\n\n"
         "The cache is --cache-dir, else $MSN_CACHE, else $XDG_CACHE_HOME/msn, else ~/.cache/msn. "
         "As in hf cache, 'list' is ls and 'verify' is check.\n\n"
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
    """List the cached checkpoints, unfinished downloads and the total size (alias: list).

    Files in the cache that its index does not list (an index deleted or started afresh) are
    hashed once, recorded again and listed.

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
    _warn_damaged(term, summary["damaged"])
    term.data(_ls_table(summary, term.width, verbose > 0))
    # The sources below the table, each URL whole on a line of its own: one that a table cell
    # folds over several lines (or cuts) cannot be copied.
    sources = [(e["name"], e["url"]) for e in summary["entries"] if e["url"]]
    sources += [(p["name"], p["url"]) for p in summary["partial"] if p["url"]]
    if sources:
        term.line("sources:")
    for name, url in sources:
        term.line(f"  {name}  {url}")


cache_app.command("list", cls=MsnCommand, hidden=True)(cache_ls)  # hf cache's name for it


def _ls_table(summary: dict[str, Any], width: int, whole_sha: bool) -> Table:
    """One line per file (the sources go under the table); compact below 120 columns."""
    narrow = width < 120
    t = Table(title=f"Cache: {summary['cache_dir']}", title_justify="left",
              box=None if narrow else box.HEAVY_HEAD, pad_edge=not narrow)
    t.add_column("name", overflow="fold")
    for col in ("released", "size", "downloaded", "sha256"):
        t.add_column(col, no_wrap=True, justify="right" if col == "size" else "left")
    for e in summary["entries"]:
        name = Text(e["name"])
        if not e["intact"]:
            name.append(" (damaged: size differs)", style="red")
        when = e["downloaded_at"].replace("T", " ")[: 10 if narrow else 16]
        t.add_row(name, e["variant"] or "", human_size(e["size"]), when,
                  e["sha256"] if whole_sha else e["sha256"][:12])
    for p in summary["partial"]:
        of = ("/" if narrow else " of ") + human_size(p["total"]) if p["total"] else ""
        t.add_row(Text(p["name"]), "", human_size(p["size"]) + of, Text("unfinished", "yellow"), "")
    n = len(summary["entries"])
    t.caption = (f"{n} file{'s' if n != 1 else ''}"
                 + (f", {len(summary['partial'])} unfinished" if summary["partial"] else "")
                 + f", {human_size(summary['total_bytes'])} in all")
    return t


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


def _selected(cache: Cache, names: list[str] | None, everything: bool) -> list[str]:
    """Entry names (finished or partial, and damaged index keys) for what the user typed."""
    known = ({e.name for e in cache.entries()} | {p.name for p in cache.partials()}
             | {d.key for d in cache.damaged()} | set(cache.orphans()))
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


def _entry_name(cache: Cache, spec: str) -> str:
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
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be removed and how much it frees; remove nothing.")] = False,
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

      msn cache rm --all --dry-run
    """
    from msn_cli.transfer.cache import Cache

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    cache = Cache(cache_dir)
    selected = _selected(cache, names, all_entries)
    sizes = {e.name: e.size for e in cache.entries()}
    sizes.update({n: cache.file_path(n).lstat().st_size for n in cache.orphans()})
    for p in cache.partials():
        sizes[p.name] = sizes.get(p.name, 0) + p.size
    total = sum(sizes.get(n, 0) for n in selected)
    if not selected:
        term.info("the cache is empty; nothing to remove")
        if json_out:
            term.emit_json({"cache_dir": str(cache.root), "removed": [], "bytes": 0})
        return
    if dry_run:
        _say_dry_run(term, cache, selected, sizes, json_out)
        return
    if not yes:
        if not _stdin_interactive():
            raise UsageError(f"refusing to delete {len(selected)} cached file(s) without confirmation",
                             hint="add --yes")
        listing = ", ".join(selected)
        if not _confirm(f"Delete {listing} ({human_size(total)}) from {cache.root}?"):
            term.info("nothing deleted")
            if json_out:
                term.emit_json({"cache_dir": str(cache.root), "removed": [], "bytes": 0})
            return
    removed = [cache.remove(n) for n in selected]
    freed = sum(r["bytes"] for r in removed)
    if json_out:
        term.emit_json({"cache_dir": str(cache.root), "removed": removed, "bytes": freed})
    else:
        term.success(f"removed {', '.join(selected)}: {human_size(freed)} freed")


def _confirm(question: str) -> bool:
    """The user's yes; end of input (Ctrl-D) at the prompt is a no, as the default says."""
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort as e:
        if isinstance(e.__context__, KeyboardInterrupt):  # Ctrl-C stays an interruption
            raise KeyboardInterrupt from None
        sys.stderr.write("\n")
        return False


def _say_dry_run(term: Term, cache: Cache, selected: list[str], sizes: dict[str, int],
                 json_out: bool) -> None:
    total = sum(sizes.get(n, 0) for n in selected)
    if json_out:
        term.emit_json({"cache_dir": str(cache.root), "dry_run": True, "removed": [],
                        "would_remove": [{"name": n, "bytes": sizes.get(n, 0)} for n in selected],
                        "bytes": total})
        return
    for n in selected:
        term.line(f"{n}  {human_size(sizes.get(n, 0))}")
    term.info(f"would remove {len(selected)} file(s), {human_size(total)}, from {cache.root}; "
              "nothing was removed (run it without --dry-run to remove them)")


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

    Alias: verify. Exits 1 when a file is missing (a NAME not in the cache included), has
    another size or another sha256. Nothing is changed: 'msn download NAME --verify' (or --force) fetches a
    damaged file again.

    Examples:

      msn cache check

      msn cache check vitb16 --json
    """
    from msn_cli.transfer.cache import Cache

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    cache = Cache(cache_dir)
    with term.progress() as progress:
        adopted = {e.name for e in cache.adopt_orphans(progress)}  # hashed just now: not again
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
            rows.append({"name": e.name, "path": str(cache.file_path(e.name)), "ok": True,
                         "adopted": True, "size": e.size, "sha256": e.sha256}
                        if e.name in adopted else cache.check(e, progress))
    bad = [r for r in rows if not r["ok"]]
    if json_out:
        term.emit_json({"cache_dir": str(cache.root), "checked": rows, "ok": not bad})
    else:
        for r in rows:
            if r.get("adopted"):
                term.success(f"{r['name']}: not in the index; hashed and recorded again")
            elif r["ok"]:
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


cache_app.command("verify", cls=MsnCommand, hidden=True)(cache_check)  # hf cache's name for it
