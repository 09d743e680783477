"""The conversion plan: every output tensor with its origin, built before any byte is written.

``inspect``'s key-diff, ``convert --dry-run``, the writer and ``verify``'s accounting all read
the same :class:`ConversionPlan`, which is derived from :data:`msn_cli.conversion.mapping.RULES` alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from msn_cli.conversion import mapping
from msn_cli.conversion.provenance import Known, Provenance
from msn_cli.errors import MappingError, UsageError
from msn_cli.hf.dtypes import nbytes_of
from msn_cli.original.architecture import Architecture
from msn_cli.original.checkpoint import Checkpoint, Inferred, infer_architecture

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: where it comes from and what it will be."""

    target: str
    source: str  # prefix-free original key
    action: str  # rename | split_qkv
    part: int | None  # qkv row block (0 query, 1 key, 2 value) for split_qkv
    shape: tuple[int, ...]
    source_dtype: str
    dtype: str

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.dtype, self.shape)

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """This plan's slice of the source tensor, as a view (no copy)."""
        if self.part is None:
            return tensor
        rows = tensor.shape[0] // 3
        return tensor[self.part * rows:(self.part + 1) * rows]


@dataclass(frozen=True)
class KeyRow:
    """One row of the key-diff table: an original key and what happens to it."""

    source: str | None  # original key as stored (with module. if present); None for a missing one
    targets: tuple[str, ...]
    status: str  # renamed | split | dropped | unaccounted | missing | bad-shape
    note: str
    shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "targets": list(self.targets), "status": self.status,
                "note": self.note, "shape": list(self.shape) if self.shape is not None else None}


@dataclass
class ConversionPlan:
    arch: Architecture
    variant_name: str | None
    source_dtype: str
    dtype: str
    tensors: list[TensorPlan]
    rows: list[KeyRow]
    problems: list[str] = field(default_factory=list)
    provenance: list[Provenance] = field(default_factory=list)
    """Every value not read from the weights (and the qkv bias and image size, which are
    read from them), with where it comes from."""
    warnings: list[str] = field(default_factory=list)
    family_name: str | None = None
    """The constructors of the original family whose shapes these are (None: none)."""
    prefix: str = ""
    """What every original key carries before the names the rules know (``module.``)."""

    @property
    def assumed(self) -> list[Provenance]:
        return [p for p in self.provenance if p.assumed]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def dropped(self) -> list[KeyRow]:
        return [r for r in self.rows if r.status == "dropped"]

    @property
    def output_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def require_ok(self) -> None:
        if self.problems:
            n = len(self.problems)
            raise MappingError(
                f"the checkpoint does not map cleanly onto ViTMSNModel ({n} problem"
                f"{'s' if n > 1 else ''}): " + "; ".join(self.problems[:6])
                + (f"; and {n - 6} more" if n > 6 else ""),
                self.problems, hint="msn inspect FILE shows every key and what happens to it")

    def fetched_as(self, name: str | None) -> str | None:
        """Why a file fetched as the released variant ``name`` is not that variant, or None.

        ``convert`` refuses such a file with this message; ``inspect`` warns with it."""
        if name is None or self.variant_name == name:
            return None
        return (f"the file fetched as '{name}' has the shapes of "
                f"{self.variant_name or 'no released variant'} ({self.arch.hidden_size} wide, "
                f"{self.arch.num_layers} blocks, patch {self.arch.patch_size})")

    def config(self) -> dict[str, Any]:
        return self.arch.hf_config(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.arch.to_dict(),
            "variant": self.variant_name,
            "family": self.family_name,
            "provenance": [p.to_dict() for p in self.provenance],
            "assumed": [p.key for p in self.assumed],
            "warnings": self.warnings,
            "source_dtype": self.source_dtype,
            "dtype": self.dtype,
            "tensors": len(self.tensors),
            "parameters": self.num_parameters,
            "output_bytes": self.output_bytes,
            "counts": self.counts(),
            "problems": self.problems,
            "keys": [r.to_dict() for r in self.rows],
        }




def dtype_name(t: torch.Tensor) -> str:
    """``float32`` for ``torch.float32``: the name the plan and the safetensors writer use."""
    return str(t.dtype).removeprefix("torch.")


def build_plan(ckpt: Checkpoint, dtype: str | None = None, num_heads: int | None = None,
               inferred: Inferred | None = None, known: Known | None = None) -> ConversionPlan:
    """Map every source key through the rules and check every target key is produced.

    ``known``: what is known apart from the weights (the run's config); ``num_heads``, when
    given, overrides its heads.
    """
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown dtype '{dtype}'", hint=f"choose one of {', '.join(DTYPES)}")
    inf = inferred or infer_architecture(ckpt.state, num_heads, known=known)
    return plan_from_state(ckpt.state, inf, dtype, prefix=ckpt.raw_key_prefix)


def _expected_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """The shape every source key the rules check must have for ``arch``."""
    expected: dict[str, tuple[int, ...]] = {}
    for rule in mapping.RULES:
        if rule.shape is not None:
            for src in rule.sources(arch):
                expected[src] = rule.shape(arch)
    return expected


def _key_row(key: str, shape: tuple[int, ...], arch: Architecture, shown: str,
             expected: dict[str, tuple[int, ...]]) -> tuple[KeyRow, str | None]:
    """The key-diff row of one source key, and the problem it is (None: it maps)."""
    m = mapping.match(key)
    if m is None:
        return (KeyRow(shown, (), "unaccounted", "no rule maps this key", shape),
                f"unaccounted source key '{shown}' {list(shape)}")
    if m.rule.action == "drop":
        return KeyRow(shown, (), "dropped", mapping.dropped_note(m.rule, key, shape), shape), None
    if not m.rule.applies(arch):
        return (KeyRow(shown, (), "unaccounted", "block 0 has no qkv bias, so the model has none",
                       shape), f"'{shown}' is there although block 0 has no qkv bias")
    if m.block is not None and m.block >= arch.num_layers:
        return (KeyRow(shown, (), "unaccounted", "block index beyond the model's depth", shape),
                f"unaccounted source key '{shown}'")
    want = expected.get(key)
    if want is not None and shape != want:
        return (KeyRow(shown, m.targets, "bad-shape", f"shape {list(shape)}, expected {list(want)}",
                       shape), f"'{shown}' has shape {list(shape)}, expected {list(want)}")
    status = "split" if m.rule.action == "split_qkv" else "renamed"
    return KeyRow(shown, m.targets, status, m.rule.note, shape), None


def plan_from_state(state: Mapping[str, torch.Tensor], inf: Inferred, dtype: str | None = None,
                    prefix: str = "") -> ConversionPlan:
    """The plan for ``state`` (prefix-free keys; ``prefix`` is shown before them) and the
    architecture ``inf`` read from it: a key-diff row for every source key and every missing
    one, a tensor plan for every target key the state holds (also one of the wrong shape:
    the plan is then not ok), and every problem found."""
    arch = inf.arch
    out_dtype = dtype or (inf.dtype if inf.dtype in DTYPES else "float32")
    expected = _expected_shapes(arch)
    rows: list[KeyRow] = []
    problems: list[str] = []
    for key, tensor in state.items():
        row, problem = _key_row(key, tuple(int(s) for s in tensor.shape), arch, prefix + key,
                                expected)
        rows.append(row)
        if problem is not None:
            problems.append(problem)

    tensors: list[TensorPlan] = []
    for target, src, rule, part in mapping.expected_targets(arch):
        if src not in state:
            rows.append(KeyRow(None, (target,), "missing",
                               f"needs '{prefix + src}', which the checkpoint lacks"))
            problems.append(f"missing '{prefix + src}' (for {target})")
            continue
        t = state[src]
        shape = tuple(int(s) for s in t.shape)
        if part is not None:
            shape = (shape[0] // 3, *shape[1:])
        tensors.append(TensorPlan(target, src, rule.action, part, shape, dtype_name(t), out_dtype))
    return ConversionPlan(arch, inf.variant.name if inf.variant else None, inf.dtype, out_dtype,
                          tensors, rows, problems, list(inf.provenance), list(inf.warnings),
                          inf.family_name, prefix)
