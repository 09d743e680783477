"""Rich renderings of core results (tables only; the data come from plain modules)."""

from __future__ import annotations

import re

from rich.table import Table

from ..plan import ConversionPlan, KeyRow

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


def keydiff_table(plan: ConversionPlan, full: bool = False, title: str = "Key mapping") -> Table:
    """Every original key and its fate; compact mode shows block 0 for all identical blocks."""
    t = Table(title=title, title_justify="left", show_lines=False)
    t.add_column("original key", overflow="fold")
    t.add_column("shape", overflow="fold")
    t.add_column("Hugging Face key", overflow="fold")
    t.add_column("what happens", overflow="fold")
    last = plan.arch.num_layers - 1
    folded = 0
    for row in plan.rows:
        b = _block(row)
        ok = row.status in ("renamed", "split", "dropped")
        if not full and ok and b is not None and b > 0:
            folded += 1
            continue
        style = _STYLE.get(row.status, "")
        targets = "\n".join(row.targets) if row.targets else "—"
        shape = "x".join(map(str, row.shape)) if row.shape else ""
        t.add_row(row.source or "—", shape, targets,
                  f"[{style}]{row.status}[/{style}]: {row.note}" if style else row.note)
    if folded:
        t.caption = (f"{folded} keys of blocks 1-{last} map like block 0 "
                     "(--all-keys lists every one)")
    return t


def counts_line(plan: ConversionPlan) -> str:
    c = plan.counts()
    parts = [f"{c.get(k, 0)} {k}" for k in ("renamed", "split", "dropped") if c.get(k)]
    bad = sum(c.get(k, 0) for k in ("unaccounted", "missing", "bad-shape"))
    parts.append(f"{bad} problem{'s' if bad != 1 else ''}")
    return f"{len(plan.tensors)} Hugging Face tensors from {sum(c.values()) - c.get('missing', 0)} " \
           f"original keys: " + ", ".join(parts)


def arch_table(plan: ConversionPlan) -> Table:
    a = plan.arch
    t = Table(title="Architecture (from tensor shapes)", title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    rows = [("matches", plan.variant_name or "no released variant"),
            ("hidden size", str(a.hidden_size)), ("layers", str(a.num_layers)),
            ("heads", f"{a.num_heads} (head size {a.head_dim})"),
            ("MLP size", str(a.intermediate_size)), ("patch size", str(a.patch_size)),
            ("image size", f"{a.image_size} ({a.grid}x{a.grid} patches + cls)"),
            ("channels", str(a.num_channels)), ("dtype", plan.source_dtype),
            ("parameters", f"{plan.num_parameters:,}")]
    for k, v in rows:
        t.add_row(k, v)
    return t
