"""Rich renderings of core results (tables only; the data come from plain modules)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Union

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from msn_cli.cli.term import printable
from msn_cli.conversion.mapping import BLOCK_INDEX
from msn_cli.conversion.plan import ConversionPlan
from msn_cli.conversion.provenance import HEADS, assumed_warning
from msn_cli.original.runfolder import RunReport
from msn_cli.util.fmt import human_size

_STYLE = {"renamed": "green", "split": "cyan", "dropped": "yellow", "unaccounted": "bold red",
          "missing": "bold red", "bad-shape": "bold red"}


_SOURCE_BLOCK = re.compile(rf"^blocks\.({BLOCK_INDEX})\.")  # what the rules call a block
_TARGET_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.")


def _brace(targets: tuple[str, ...]) -> str:
    """``a.query.w, a.key.w, a.value.w`` -> ``a.{query,key,value}.w`` (for the compact table)."""
    if len(targets) < 2:
        return targets[0] if targets else "—"
    parts = [t.split(".") for t in targets]
    if len({len(p) for p in parts}) == 1:
        diff = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
        if len(diff) == 1:
            i = diff[0]
            head, tail = parts[0][:i], parts[0][i + 1:]
            mid = "{" + ",".join(p[i] for p in parts) + "}"
            return ".".join([*head, mid, *tail])
    return "\n".join(targets)


@dataclass
class _Entry:
    """One line of the key-diff: a key (source -> target) or a block heading."""

    source: str
    target: str
    what: Text
    shape: str = ""
    heading: bool = False
    indent: bool = False


def _entries(plan: ConversionPlan, full: bool) -> tuple[list[_Entry], int]:
    """The key-diff's lines and how many keys the compact form folded away.

    Original keys lose the plan's common prefix (said once in the title); the keys of a
    transformer block are listed under one ``blocks.N.* -> encoder.layer.N.*`` heading, relative
    to it. Compact mode shows block 0 for all identical blocks and one line for the dropped
    projection head; problems are always shown."""
    out: list[_Entry] = []
    folded = 0
    dropped = plan.dropped
    head_done = False
    current: int | None = None
    for row in plan.rows:
        source = row.source or ""
        if source.startswith(plan.prefix):
            source = source[len(plan.prefix):]
        m = _SOURCE_BLOCK.match(source) if row.source else _TARGET_BLOCK.match(row.targets[0])
        block = int(m.group(1)) if m else None
        ok = row.status in ("renamed", "split", "dropped")
        if not full and ok and block is not None and block > 0:
            folded += 1
            continue
        style = _STYLE.get(row.status, "")
        if not full and row.status == "dropped":
            if not head_done and dropped:
                stem = source.rsplit(".", 2)[0] + ".*"
                out.append(_Entry(f"{stem} ({len(dropped)} keys)", "— projection head",
                                  Text(row.status, style=style)))
                head_done = True
            current = None
            continue
        targets = tuple(row.targets)
        if block is not None and all(_TARGET_BLOCK.match(t) for t in targets):
            if block != current:
                out.append(_Entry(f"blocks.{block}.*", f"encoder.layer.{block}.*", Text(""),
                                  heading=True))
                current = block
            source = _SOURCE_BLOCK.sub("", source)
            targets = tuple(_TARGET_BLOCK.sub("", t) for t in targets)
            indent = True
        else:
            current, indent = None, False
        target = ("\n".join(targets) if full else _brace(targets)) if targets else "—"
        compact_ok = not full and row.status in ("renamed", "split")
        what = Text(row.status, style=style)
        if not compact_ok:
            what.append(f": {row.note}")
        shape = "x".join(map(str, row.shape)) if row.shape else ""
        out.append(_Entry(source if row.source else "—", target, what, shape, indent=indent))
    return out, folded


def keydiff_table(plan: ConversionPlan, full: bool = False, title: str = "Key mapping",
                  width: int = 80) -> RenderableType:
    """Every original key and its fate, laid out for ``width`` columns.

    With room, a bordered table with shapes; else the same without shapes and borders; on a
    very narrow terminal, two lines per key. Key names are never folded while one of these
    layouts fits them whole.
    """
    entries, folded = _entries(plan, full)
    if plan.prefix:
        title += f" (original keys shown without their {plan.prefix} prefix)"
    caption = None
    if folded:
        last = plan.arch.num_layers - 1
        blocks = "block 1" if last == 1 else f"blocks 1-{last}"
        caption = f"{folded} keys of {blocks} map like block 0; --all-keys lists every key with notes"
    for wide in (True, False):
        if _table_width(entries, wide) <= width:
            return _keydiff_grid(entries, wide, title, caption)
    return _keydiff_stacked(entries, title, caption)


def _cell_width(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _table_width(entries: list[_Entry], wide: bool) -> int:
    """Columns the key-diff needs with keys unbroken (notes may wrap at words)."""
    source = max((_cell_width(_shown(e.source, e.indent)) for e in entries), default=0)
    target = max((_cell_width(_shown(e.target, e.indent)) for e in entries), default=0)
    what = max((cell_len(w) for e in entries for w in e.what.plain.split()), default=0)
    if wide:
        shape = max((len(e.shape) for e in entries), default=0)
        widths = [source, max(shape, 5), target, max(what, 12)]
        return sum(widths) + 3 * len(widths) + 1
    return source + target + max(what, len("what")) + 2 * 2


def _shown(name: str, indent: bool) -> str:
    return "\n".join(("  " + line if indent else line) for line in name.split("\n"))


def _keydiff_grid(entries: list[_Entry], wide: bool, title: str, caption: str | None) -> Table:
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
              box=box.HEAVY_HEAD if wide else None, pad_edge=wide)
    t.add_column("original key", no_wrap=True)
    if wide:
        t.add_column("shape", no_wrap=True)
    t.add_column("Hugging Face key", no_wrap=True)
    t.add_column("what happens" if wide else "what", overflow="fold")
    for e in entries:
        style = "bold" if e.heading else ""
        cells = [Text(_shown(e.source, e.indent), style=style), Text(_shown(e.target, e.indent), style=style),
                 e.what]
        if wide:
            cells.insert(1, Text(e.shape))
        t.add_row(*cells)
    return t


def _keydiff_stacked(entries: list[_Entry], title: str, caption: str | None) -> Group:
    """Two lines per key (``original``, then ``  -> hugging face  what``) for narrow terminals."""
    lines: list[RenderableType] = [Text(title, style="table.title")]
    for e in entries:
        pad = "  " if e.indent else ""
        style = "bold" if e.heading else ""
        first = Text(pad + e.source, style=style)
        if e.what.plain:
            first.append("  ")
            first.append(e.what)
        lines.append(first)
        for target in e.target.split("\n"):
            lines.append(Text(f"{pad}  -> ", style="dim").append(target, style=style))
    if caption:
        lines.append(Text(caption, style="table.caption"))
    return Group(*lines)


def counts_line(plan: ConversionPlan) -> str:
    c = plan.counts()
    parts = [f"{c.get(k, 0)} {k}" for k in ("renamed", "split", "dropped") if c.get(k)]
    bad = sum(c.get(k, 0) for k in ("unaccounted", "missing", "bad-shape"))
    parts.append(f"{bad} problem{'s' if bad != 1 else ''}")
    return f"{len(plan.tensors)} Hugging Face tensors from {sum(c.values()) - c.get('missing', 0)} " \
           f"original keys: " + ", ".join(parts)


def family_words(hidden_size: int) -> str:
    """The family row when no constructor has all the shapes: the width's constructors still
    give the heads, eps and activation (as their rows say), so it names them too."""
    from msn_cli.original import family

    names = [c.name for c in family.FAMILY if c.hidden_size == hidden_size and not c.conv_stem]
    if not names:
        return "no constructor at these shapes"
    return f"no constructor at these shapes (width {hidden_size} as in {', '.join(names)})"


def arch_table(plan: ConversionPlan) -> Table:
    """The architecture, each value with where it comes from (weights, family, config, user,
    or ASSUMED)."""
    a = plan.arch
    t = Table(title="Architecture", title_justify="left", show_header=True)
    t.add_column("", style="bold")
    t.add_column("value")
    t.add_column("from", overflow="fold")
    by_key = {p.key: p for p in plan.provenance}

    def origin(key: str) -> str | Text:
        p = by_key.get(key)
        if p is None:
            return "weights"
        if p.assumed:
            return Text.assemble(("ASSUMED", "bold yellow"), f": {p.source}")
        return p.describe() if p.origin != "weights" else f"weights: {p.source}"

    heads = by_key.get(HEADS)
    rows = [("matches", plan.variant_name or "no released variant", "shapes"),
            ("family", plan.family_name or family_words(a.hidden_size), "shapes"),
            ("hidden size", str(a.hidden_size), "weights"),
            ("layers", str(a.num_layers), "weights"),
            ("heads", f"{a.num_heads} (head size {a.head_dim})", origin(HEADS) if heads else "?"),
            ("MLP size", str(a.intermediate_size), "weights"),
            ("patch size", str(a.patch_size), "weights"),
            ("image size", f"{a.image_size} ({a.grid}x{a.grid} patches + cls)", origin("image_size")),
            ("qkv bias", "yes" if a.qkv_bias else "no", origin("qkv_bias")),
            ("LayerNorm eps", f"{by_key['layer_norm_eps'].value:g}" if "layer_norm_eps" in by_key
             else "1e-06", origin("layer_norm_eps")),
            ("activation", "exact GELU", origin("hidden_act")),
            ("channels", str(a.num_channels), "weights"), ("dtype", plan.source_dtype, "weights"),
            ("parameters", f"{plan.num_parameters:,}", "weights")]
    for k, v, o in rows:
        t.add_row(k, v, o)
    return t


def assumption_warnings(plan: ConversionPlan) -> list[str]:
    """The stderr warnings a plan calls for: overrides, unknown names, values ASSUMED."""
    summary = assumed_warning(plan.provenance)
    return [*plan.warnings, *([summary] if summary else [])]


def run_checkpoints_table(report: RunReport, width: int = 80) -> RenderableType:
    """A run folder's checkpoints: epoch and loss as each file stores them, laid out for
    ``width`` columns with every name and number whole."""
    rows: list[list[Cell]] = []
    for c in report.checkpoints:
        if c.problem is not None:
            rows.append([c.file, "", "", "", human_size(c.size), Text(c.problem, style="bold red")])
            continue
        loss = c.values.get("loss")
        rows.append([c.file, "—" if c.epoch is None else str(c.epoch),
                     "—" if loss is None else (f"{loss:.4f}" if isinstance(loss, float) else str(loss)),
                     str(c.values.get("world_size", "—")), human_size(c.size), ", ".join(c.networks)])
    latest = report.latest
    caption = ("epoch: as stored in the file (the training code names -ep{N} one above it)"
               + (f"; furthest: {latest.file} at epoch {latest.epoch}" if latest else ""))
    cols = [Col("checkpoint", lead=True), Col("epoch", "right"), Col("loss", "right"),
            Col("world size", "right"), Col("size", "right"), Col("holds", words=True)]
    return fitted_table(f"Training run {report.folder}", cols, rows, width, caption)


def run_config_table(report: RunReport) -> Table | str:
    """The run config's publishable hyperparameters, grouped as the model card shows them."""
    from msn_cli.original.runconfig import CONFIG_NAME, FIELD_BY_KEY

    info = report.config_dict()
    if info is None:
        return f"No {CONFIG_NAME} in the folder: the run's hyperparameters are unknown."
    t = Table(title=f"Training config ({info['file']}; local paths left out)",
              title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_column("")
    group = None
    for key, value in info["training"].items():
        f = FIELD_BY_KEY[key]
        shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        if key == "model_name":
            c = info["constructor"]
            shown += (f" ({c['hidden_size']} wide, {c['depth']} blocks, {c['num_heads']} heads)" if c
                      else " (not a constructor of the original model family)")
        t.add_row(f.group if f.group != group else "", f.label, shown)
        group = f.group
    return t


# -- tables that fit the terminal: no number or name is ever cut or split ----------------------

@dataclass(frozen=True)
class Col:
    """A column of :func:`fitted_table`: ``words`` columns may wrap between words (a detail, a
    list of values); the others never wrap (a number, a key, a hash). A header wraps at words
    whenever its column's values are narrower than it. ``lead`` columns open each record of the
    list layout."""

    header: str
    justify: str = "left"
    words: bool = False
    lead: bool = False


Cell = Union[str, Text]

_OVERHEAD_PER_COLUMN = 3  # a border and a space either side (box.HEAVY_HEAD, padding 1)


def fitted_table(title: str, cols: list[Col], rows: list[list[Cell]], width: int,
                 caption: str | None = None) -> RenderableType:
    """A table laid out for ``width`` columns that never cuts or splits a value.

    Columns empty in every row are left out; headers wrap at words first, then ``words``
    columns; when even that is too wide, each row becomes a record of ``header value`` pairs
    (:func:`records`), packed on lines that never split a pair.
    """
    keep = [i for i in range(len(cols)) if any(_plain(r[i]) for r in rows)] or list(range(len(cols)))
    cols = [cols[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    widths = _fit_widths(cols, rows, width - _OVERHEAD_PER_COLUMN * len(cols) - 1)
    if widths is None:
        return records(title, cols, rows, width, caption)
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
              box=box.HEAVY_HEAD)
    for c, w in zip(cols, widths, strict=True):
        header = c.header if c.words else "\n".join(textwrap.wrap(c.header, w) or [""])
        t.add_column(header, justify=c.justify, width=w, no_wrap=not c.words,  # type: ignore[arg-type]
                     overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t


def _plain(cell: Cell) -> str:
    """The text of a cell as the terminal will show it (control characters escaped)."""
    return printable(cell.plain if isinstance(cell, Text) else cell)


def _words(text: str) -> list[str]:
    return text.split()


def _fit_widths(cols: list[Col], rows: list[list[Cell]], room: int) -> list[int] | None:
    """Each column's width within ``room`` (None: no width keeps every value whole).

    First the headers wrap (down to their longest word), then the ``words`` columns (down to
    their longest word), widest first."""
    natural, soft, least = [], [], []
    for i, c in enumerate(cols):
        cells = [_plain(r[i]) for r in rows]
        lines = [cell_len(line) for cell in cells for line in cell.split("\n")]
        longest_word = max((cell_len(w) for cell in cells for w in _words(cell)), default=0)
        header_word = max((cell_len(w) for w in _words(c.header)), default=0)
        content = max(lines, default=0)
        natural.append(max(content, cell_len(c.header)))
        soft.append(max(content, header_word))
        least.append(max(longest_word if c.words else content, header_word))
    widths = list(natural)
    for floor in (soft, least):
        while sum(widths) > room:
            slack = [i for i in range(len(cols)) if widths[i] > floor[i]]
            if not slack:
                break
            widest = max(slack, key=lambda i: widths[i])
            widths[widest] -= 1
    return widths if sum(widths) <= room else None


def records(title: str, cols: list[Col], rows: list[list[Cell]], width: int,
            caption: str | None = None) -> Group:
    """The list layout of a table too wide for ``width``: per row, the ``lead`` values on a
    line, then ``header: value`` pairs packed on indented lines (a pair is never split), and a
    ``words`` value too long for a line as a paragraph of its own that wraps between words."""
    out: list[RenderableType] = [Text(title, style="table.title")]
    lead = [i for i, c in enumerate(cols) if c.lead] or [0]
    for r in rows:
        first = Text("  ").join(_as_text(r[i]) for i in lead if _plain(r[i]))
        out.append(first)
        pairs: list[Text] = []
        paragraphs: list[Text] = []
        for i, c in enumerate(cols):
            if i in lead or not _plain(r[i]):
                continue
            pair = Text(f"{c.header}: ", style="dim").append_text(_as_text(r[i]))
            long = "\n" in _plain(r[i]) or (c.words and cell_len(pair.plain) > width - 2)
            (paragraphs if long else pairs).append(pair)
        out.extend(Padding(line, (0, 0, 0, 2)) for line in _pack(pairs, width - 2))
        out.extend(Padding(p, (0, 0, 0, 2)) for p in paragraphs)
    if caption:
        out.append(Text(caption, style="table.caption"))
    return Group(*out)


def _as_text(cell: Cell) -> Text:
    return cell.copy() if isinstance(cell, Text) else Text(cell)


def _pack(pairs: list[Text], width: int) -> list[Text]:
    """``pairs`` on as few lines of ``width`` as fit them whole, three spaces apart."""
    lines: list[Text] = []
    for pair in pairs:
        if lines and cell_len(lines[-1].plain) + 3 + cell_len(pair.plain) <= width:
            lines[-1].append("   ").append_text(pair)
        else:
            lines.append(pair.copy())
    return lines
