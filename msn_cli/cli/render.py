"""Rich renderings of core results (tables only; the data come from plain modules)."""

from __future__ import annotations

import re

from rich import box
from rich.markup import escape
from rich.table import Table

from ..plan import ConversionPlan, KeyRow
from ..provenance import HEADS, assumed_warning
from ..runfolder import RunReport

_STYLE = {"renamed": "green", "split": "cyan", "dropped": "yellow", "unaccounted": "bold red",
          "missing": "bold red", "bad-shape": "bold red"}


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _block(row: KeyRow) -> int | None:
    m = re.search(r"(?:^|\.)blocks\.(\d+)\.", row.source or "")
    return int(m.group(1)) if m else None


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


def keydiff_table(plan: ConversionPlan, full: bool = False, title: str = "Key mapping",
                  width: int = 200) -> Table:
    """Every original key and its fate.

    Compact mode (the default) shows block 0 for all identical blocks, one row for the dropped
    projection head, and qkv targets in brace form; problems are always shown in full.
    On a narrow terminal (under 120 columns) the shape column and the borders go.
    """
    narrow = width < 120
    t = Table(title=title, title_justify="left", show_lines=False, box=None if narrow else box.HEAVY_HEAD,
              pad_edge=not narrow)
    t.add_column("original key", overflow="fold", no_wrap=True)
    if not narrow:
        t.add_column("shape", no_wrap=True)
    t.add_column("Hugging Face key", overflow="fold", ratio=1)
    t.add_column("what happens", overflow="fold", max_width=None if full else 16)
    last = plan.arch.num_layers - 1
    folded = 0
    dropped = [r for r in plan.rows if r.status == "dropped"]
    head_row_done = False
    for row in plan.rows:
        b = _block(row)
        ok = row.status in ("renamed", "split", "dropped")
        if not full and ok and b is not None and b > 0:
            folded += 1
            continue
        style = _STYLE.get(row.status, "")
        status = f"[{style}]{row.status}[/{style}]" if style else row.status
        if not full and row.status == "dropped":
            if not head_row_done and dropped:
                stem = (dropped[0].source or "").rsplit(".", 2)[0] + ".*"
                t.add_row(*_cells(narrow, f"{stem} ({len(dropped)} keys)", "", "—",
                                  f"{status}: projection head"))
                head_row_done = True
            continue
        targets = "\n".join(row.targets) if full else _brace(row.targets)
        shape = "x".join(map(str, row.shape)) if row.shape else ""
        ok_compact = not full and row.status in ("renamed", "split")
        t.add_row(*_cells(narrow, row.source or "—", shape, targets or "—",
                          status if ok_compact else f"{status}: {row.note}"))
    if folded:
        blocks = "block 1" if last == 1 else f"blocks 1-{last}"
        t.caption = (f"{folded} keys of {blocks} map like block 0; "
                     "--all-keys lists every key with notes")
    return t


def _cells(narrow: bool, source: str, shape: str, target: str, what: str) -> tuple[str, ...]:
    return (source, target, what) if narrow else (source, shape, target, what)


def counts_line(plan: ConversionPlan) -> str:
    c = plan.counts()
    parts = [f"{c.get(k, 0)} {k}" for k in ("renamed", "split", "dropped") if c.get(k)]
    bad = sum(c.get(k, 0) for k in ("unaccounted", "missing", "bad-shape"))
    parts.append(f"{bad} problem{'s' if bad != 1 else ''}")
    return f"{len(plan.tensors)} Hugging Face tensors from {sum(c.values()) - c.get('missing', 0)} " \
           f"original keys: " + ", ".join(parts)


def arch_table(plan: ConversionPlan) -> Table:
    """The architecture, each value with where it comes from (weights, family, config, user,
    or ASSUMED)."""
    a = plan.arch
    t = Table(title="Architecture", title_justify="left", show_header=True)
    t.add_column("", style="bold")
    t.add_column("value")
    t.add_column("from", overflow="fold")
    by_key = {p.key: p for p in plan.provenance}

    def origin(key: str) -> str:
        p = by_key.get(key)
        if p is None:
            return "weights"
        if p.assumed:
            return f"[bold yellow]ASSUMED[/bold yellow]: {escape(p.source)}"
        return escape(p.describe()) if p.origin != "weights" else f"weights: {escape(p.source)}"

    heads = by_key.get(HEADS)
    rows = [("matches", plan.variant_name or "no released variant", "shapes"),
            ("family", plan.family_name or "no constructor at these shapes", "shapes"),
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
    return [escape(w) for w in [*plan.warnings, *([summary] if summary else [])]]


def run_checkpoints_table(report: RunReport) -> Table:
    """A run folder's checkpoints: epoch and loss as each file stores them."""
    from rich.markup import escape

    t = Table(title=f"Training run {escape(str(report.folder))}", title_justify="left")
    for name, justify in (("checkpoint", "left"), ("epoch", "right"), ("loss", "right"),
                          ("world size", "right"), ("size", "right"), ("holds", "left")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in report.checkpoints:
        if c.problem is not None:
            t.add_row(escape(c.file), "", "", "", human_bytes(c.size), f"[bold red]{escape(c.problem)}[/]")
            continue
        loss = c.values.get("loss")
        t.add_row(escape(c.file), "—" if c.epoch is None else str(c.epoch),
                  "—" if loss is None else (f"{loss:.4f}" if isinstance(loss, float) else str(loss)),
                  str(c.values.get("world_size", "—")), human_bytes(c.size), ", ".join(c.networks))
    latest = report.latest
    t.caption = ("epoch: as stored in the file (the training code names -ep{N} one above it)"
                 + (f"; furthest: {escape(latest.file)} at epoch {latest.epoch}" if latest else ""))
    return t


def run_config_table(report: RunReport) -> Table | str:
    """The run config's publishable hyperparameters, grouped as the model card shows them."""
    from rich.markup import escape

    from ..runconfig import CONFIG_NAME, FIELD_BY_KEY

    info = report.config_dict()
    if info is None:
        return f"No {CONFIG_NAME} in the folder: the run's hyperparameters are unknown."
    t = Table(title=f"Training config ({escape(info['file'])}; local paths left out)",
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
        t.add_row(f.group if f.group != group else "", f.label, escape(shown))
        group = f.group
    return t
