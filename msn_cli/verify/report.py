"""What ``msn verify`` found: one :class:`CheckResult` per check, the per-layer figures of
parity, and the :class:`VerifyReport` that holds them, with its two writers: ``to_dict`` (the
``--json`` output) and ``manifest_record`` (what the manifest keeps, read by push and the card).

Tolerances (parity), per layer ``l`` with ``scale_l = max(1, max |reference_l|)`` over all
inputs of one size::

    max |hf_l - reference_l|  <=  atol[dtype] * scale_l      and
    min over tokens of cosine(hf_l, reference_l)  >=  cosine_min[dtype]

==========  ========  ===========  ==================================================
dtype       atol      cosine_min   why
==========  ========  ===========  ==================================================
float32     1e-5      0.99999      same weights, only the order of float32 operations
                                   differs (fused vs split qkv, SDPA vs explicit
                                   softmax): measured 1-3e-7 relative on tiny models
float16     1e-2      0.9995       weights rounded to 11 bits, computed in float16:
                                   relative rounding 2^-11 per operation, accumulating
bfloat16    6e-2      0.998        8-bit mantissa: relative rounding 2^-8 per operation
==========  ========  ===========  ==================================================

In float32 a change of 1e-3 to any one weight tensor is ~50x over tolerance on the test
models; in float16/bfloat16 parity catches structural errors (a swapped or transposed
matrix, a wrong split) but not a 1e-3 perturbation, which is below their own rounding -- the
``files`` hashes and ``--against`` cover bit-level identity there.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypedDict, Union, cast

from msn_cli import __version__
from msn_cli.hf.manifest import read_manifest, write_manifest

if TYPE_CHECKING:
    from msn_cli.conversion.provenance import Provenance
    from msn_cli.hf.manifest import CheckRecord, VerifyRecord

Json: TypeAlias = Union[str, int, float, bool, Sequence["Json"], Mapping[str, "Json"], None]
"""A value ``--json`` can hold: the figures of a check."""

Row: TypeAlias = Mapping[str, object]
"""One item a check looked at (a file, a config key, a photo, a tensor); each check declares
its own rows as a ``TypedDict``, and the CLI renders them as the JSON they become."""


@dataclass(frozen=True)
class Tolerance:
    atol: float
    """Allowed max abs error as a fraction of ``max(1, max|reference|)`` of the layer."""
    cosine_min: float

    def to_dict(self) -> dict[str, object]:
        return {"atol": self.atol, "cosine_min": self.cosine_min,
                "atol_scaled_by": "max(1, max|reference|) of each layer"}


TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(1e-5, 0.99999),
    "float16": Tolerance(1e-2, 0.9995),
    "bfloat16": Tolerance(6e-2, 0.998),
}


def tolerance_for(dtype: str) -> Tolerance:
    """The parity tolerance of ``dtype`` (float32's for a dtype without one)."""
    return TOLERANCES.get(dtype, TOLERANCES["float32"])


@dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: skipped
    detail: str
    numbers: dict[str, Json] = field(default_factory=dict)
    """The check's figures: in the manifest's record and in ``--json``."""
    rows: Sequence[Row] = ()
    """Per-item rows (files, config keys, photos, tensors) for the CLI and --json; not in the
    manifest."""
    seconds: float | None = None
    """How long the check took (set by :func:`msn_cli.verify.run.verify_folder`)."""

    def record(self) -> CheckRecord:
        record = {"name": self.name, "passed": self.passed, "detail": self.detail, **self.numbers}
        return cast("CheckRecord", record)

    def to_dict(self) -> dict[str, object]:
        return {**self.record(), "rows": list(self.rows), "seconds": self.seconds}


@dataclass
class LayerStat:
    """One layer's comparison at one input size, over all inputs of that size."""

    index: int  # 0 embeddings, 1..L blocks, L+1 final norm
    name: str
    hf: str
    original: str
    size: int
    max_abs_err: float
    mean_abs_err: float
    min_cosine: float
    scale: float
    allowed: float
    passed: bool

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class InputRecord(TypedDict):
    """One parity input, as the report describes it."""

    input: str
    size: int
    layers: str  # "all" or "embeddings"


class SourceReport(TypedDict, total=False):
    """The source checkpoint verify compared with."""

    path: str
    kind: str
    encoder: str
    given: bool
    mismatch: str
    """Set when the source is not the file the manifest records (the files check fails)."""
    released: str
    """The released checkpoint msn observed the source to be in this run (never the manifest's
    word: :func:`msn_cli.verify.source.observed_release`); absent when it did not."""
    evidence: str
    """How it observed it: a key of :data:`msn_cli.hf.manifest.RELEASE_EVIDENCE`."""


class Versions(TypedDict):
    msn: str
    transformers: str
    torch: str


@dataclass
class VerifyReport:
    folder: Path
    dtype: str | None
    tolerance: Tolerance | None
    checks: list[CheckResult]
    layers: list[LayerStat] = field(default_factory=list)
    inputs: list[InputRecord] = field(default_factory=list)
    source: SourceReport = field(default_factory=lambda: SourceReport())
    variant: str | None = None
    notes: list[str] = field(default_factory=list)
    date: str = ""
    versions: Versions | None = None
    provenance: list[Provenance] = field(default_factory=list)
    """Where the values verify expects but the weights do not hold came from."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Time outside the checks (``source``: finding, reading and hashing the source;
    ``imports``: torch and transformers) and ``total``."""

    @property
    def passed(self) -> bool:
        """True when no check that ran failed (and at least one ran)."""
        ran = [c for c in self.checks if c.passed is not None]
        return bool(ran) and all(c.passed for c in ran)

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def first_bad_layer(self) -> LayerStat | None:
        bad = [s for s in self.layers if not s.passed]
        native = self.layers[0].size if self.layers else None
        return min(bad, key=lambda s: (s.index, s.size != native)) if bad else None

    def summary(self) -> str:
        ok = [c.name for c in self.checks if c.passed]
        bad = [c for c in self.checks if c.passed is False]
        if bad:
            failed = "FAILED " + "; ".join(f"{c.name} ({c.detail})" for c in bad)
            return f"{failed}; passed {', '.join(ok)}" if ok else failed
        text = ", ".join(ok)
        parity = self.check("parity")
        if parity is not None and parity.passed:
            n = parity.numbers
            what = n.get("coverage") or f"{n['layers']} layers x {n['inputs']} inputs"
            text += (f": {what}, max abs err {n['max_abs_err']:.1e}, the worst layer at "
                     f"{n.get('worst_ratio', 0):.0%} of its tolerance ({n['tolerance']:.0e} x the "
                     "layer's scale)")
        skipped = [c.name for c in self.checks if c.passed is None]
        if skipped:
            text += f"; skipped {', '.join(skipped)}"
        return text

    def manifest_record(self) -> VerifyRecord:
        """What :func:`record_in_manifest` stores (the schema push and the model card read)."""
        versions = self.versions
        record = {
            "passed": self.passed,
            "summary": self.summary(),
            "date": self.date,
            "msn_version": versions["msn"] if versions else __version__,
            "transformers_version": versions["transformers"] if versions else None,
            "torch_version": versions["torch"] if versions else None,
            "dtype": self.dtype,
            "tolerance": {"atol": self.tolerance.atol, "cosine_min": self.tolerance.cosine_min}
            if self.tolerance else None,
            "checks": [c.record() for c in self.checks],
            "source": {"released": self.source.get("released"),
                       "evidence": self.source.get("evidence")},
            "provenance": [p.to_dict() for p in self.provenance],
            "assumed": [p.key for p in self.provenance if p.assumed],
        }
        return cast("VerifyRecord", record)

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` output: the manifest's record, and everything behind it."""
        first = self.first_bad_layer
        return {
            **self.manifest_record(),
            "folder": str(self.folder),
            "variant": self.variant,
            "source": self.source,
            "tolerance": self.tolerance.to_dict() if self.tolerance else None,
            "checks": [c.to_dict() for c in self.checks],
            "first_bad_layer": first.name if first else None,
            "layers": [s.to_dict() for s in self.layers],
            "inputs": self.inputs,
            "notes": self.notes,
            "seconds": self.seconds,
        }


def record_in_manifest(folder: str | os.PathLike[str], report: VerifyReport) -> VerifyRecord:
    """Store ``report`` as ``manifest["verify"]`` (the files' hashes do not cover the manifest)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    record = report.manifest_record()
    manifest["verify"] = record
    write_manifest(folder, manifest)
    return record
