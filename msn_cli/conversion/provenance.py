"""Where each value of a converted model comes from, when the weights do not say.

A state dict holds shapes and numbers, not the number of attention heads, the LayerNorm eps
or the activation. Each such value is resolved once, into a :class:`Provenance` record that
says where it came from; every report (inspect, ``convert --dry-run``, ``--json``, the
manifest, the model card, verify's config row) shows the same records, and a value that
rests on a fallback is marked *assumed* and warned about, never taken silently.

Precedence for the heads: the user's ``--num-heads`` > the run's config (``meta.model_name``
names a constructor) > the original model family by width > (verify only) what a manifest
records as given by the user or the run's config > hidden size / 64, assumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from msn_cli.errors import CheckpointError
from msn_cli.hf.manifest import ProvenanceRecord, RunConfigRecord
from msn_cli.original import family

if TYPE_CHECKING:
    from msn_cli.original.runconfig import RunConfig

Origin = Literal["weights", "family", "run_config", "user", "recorded", "assumed"]

ORIGINS: dict[str, str] = {
    "weights": "read from the weights",
    "family": "original model family (src/deit.py)",
    "run_config": "the run's config",
    "user": "given by the user",
    "recorded": "recorded in the manifest",
    "assumed": "ASSUMED (fallback)",
}
"""Every origin and how reports name it."""


@dataclass(frozen=True)
class Provenance:
    """One value of the model and where it comes from."""

    key: str
    """The ``config.json`` name: ``num_attention_heads``, ``layer_norm_eps``, ..."""
    value: Any
    origin: Origin
    source: str
    """Where exactly, in words: the constructor, the option, the key, the fallback's reason."""

    @property
    def assumed(self) -> bool:
        return self.origin == "assumed"

    @property
    def label(self) -> str:
        return ORIGINS[self.origin]

    def to_dict(self) -> ProvenanceRecord:
        return {"key": self.key, "value": self.value, "origin": self.origin,
                "assumed": self.assumed, "source": self.source}

    @classmethod
    def from_dict(cls, d: Any) -> Provenance | None:
        """A record read back from a manifest; None when it is not a well-formed one."""
        if not isinstance(d, dict) or d.get("origin") not in ORIGINS or not isinstance(d.get("key"), str):
            return None
        return cls(d["key"], d.get("value"), d["origin"], str(d.get("source") or ""))

    def describe(self) -> str:
        """``16 (original model family (src/deit.py): deit_huge ...)`` for tables and cards."""
        return f"{self.label}: {self.source}"

    def warning(self) -> str:
        """One value's assumption in a line (see :func:`assumed_warning` for a report's)."""
        return f"{self.key} = {_show(self.value)} is ASSUMED: {self.source}"


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def assumed_warning(records: list[Provenance] | tuple[Provenance, ...]) -> str | None:
    """The one warning line a report prints when any of its values is assumed (None if none)."""
    a = [p for p in records if p.assumed]
    if not a:
        return None
    heads = next((p for p in a if p.key == HEADS), None)
    rest = [p for p in a if p is not heads]
    parts = [f"{heads.key} = {heads.value} ({heads.source})"] if heads else []
    if rest:
        parts.append(", ".join(f"{p.key} = {_show(p.value)}" for p in rest)
                     + f" ({rest[0].source})")
    return ("ASSUMED (fallback): " + "; ".join(parts) + ". If the network differs, give "
            "--num-heads N, or the run's params-msn-train.yaml with --config")


@dataclass(frozen=True)
class Known:
    """What is known about a network apart from its weights, and from where."""

    num_heads: int | None = None
    """``--num-heads``."""
    model_name: str | None = None
    """``meta.model_name`` of the run's config."""
    config_name: str | None = None
    """The run config's file name (shown as the origin; never a full local path)."""
    recorded_heads: Provenance | None = None
    """The heads a manifest records (verify only: used when it came from the user or a run
    config and nothing better is known)."""


HEADS = "num_attention_heads"


def named_constructor(known: Known) -> tuple[family.Constructor | None, str | None]:
    """The constructor the run's config names, and a warning when it names none we know."""
    if not known.model_name:
        return None, None
    c = family.constructor(known.model_name)
    if c is None:
        where = known.config_name or "the run's config"
        return None, (f"{where} names meta.model_name '{known.model_name}', which is not a "
                      f"constructor of {family.SOURCE}: its values are not used")
    return c, None


def check_constructor(c: family.Constructor, known: Known, hidden_size: int, depth: int,
                      patch_size: int | None, intermediate_size: int) -> None:
    """Refuse weights whose shapes disagree with the constructor the run's config names."""
    have: dict[str, int | str | None] = {"width": hidden_size, "blocks": depth,
                                         "MLP": intermediate_size}
    want: dict[str, int | str | None] = {"width": c.hidden_size, "blocks": c.depth,
                                         "MLP": c.intermediate_size}
    if c.conv_stem or patch_size is None:
        have["patch"], want["patch"] = (patch_size or "conv stem"), (c.patch_size or "conv stem")
    else:
        have["patch"], want["patch"] = patch_size, c.patch_size
    bad = [k for k in have if have[k] != want[k]]
    if bad:
        where = known.config_name or "the run's config"
        raise CheckpointError(
            f"{where} names {c.name} ({', '.join(f'{k} {want[k]}' for k in have)}), but the "
            f"weights have {', '.join(f'{k} {have[k]}' for k in have)}: they disagree on "
            f"{', '.join(bad)}",
            hint="the config belongs to another run or network: give the right one with "
                 "--config FILE, or ignore it with --no-config")


def resolve_heads(hidden_size: int, known: Known,
                  constructor: family.Constructor | None) -> tuple[Provenance, list[str]]:
    """The number of heads and where it comes from, plus warnings (see the module docstring).

    Raises :class:`CheckpointError` when the heads cannot split the width, or when the user's
    number contradicts the constructor the run's config names.
    """
    warnings: list[str] = []
    by_width = family.heads_for_width(hidden_size)
    width_names = ", ".join(c.name for c in family.FAMILY
                            if c.hidden_size == hidden_size and not c.conv_stem)
    if known.num_heads is not None:
        n = known.num_heads
        if n <= 0 or hidden_size % n:
            raise CheckpointError(
                f"hidden size {hidden_size} cannot be split into {n} heads (given with "
                "--num-heads)", hint="the number of heads must divide the hidden size")
        if constructor is not None and constructor.num_heads != n:
            raise CheckpointError(
                f"--num-heads {n} contradicts {known.config_name or 'the run config'}, whose "
                f"meta.model_name {constructor.name} has {constructor.num_heads} heads",
                hint="drop --num-heads, give the config of the run these weights come from "
                     "(--config FILE), or ignore the config with --no-config")
        if constructor is None and by_width is not None and by_width != n:
            warnings.append(f"--num-heads {n} overrides the {by_width} heads of {family.SOURCE} "
                            f"at width {hidden_size} ({width_names})")
        return Provenance(HEADS, n, "user", f"--num-heads {n}"), warnings
    if constructor is not None:
        return Provenance(HEADS, constructor.num_heads, "run_config",
                          f"meta.model_name {constructor.name} in "
                          f"{known.config_name or 'the run config'}: {constructor.num_heads} heads "
                          f"of {constructor.head_dim} in the original family"), warnings
    if by_width is not None:
        return Provenance(HEADS, by_width, "family",
                          f"width {hidden_size} ({width_names}): {by_width} heads of "
                          f"{hidden_size // by_width}"), warnings
    rec = known.recorded_heads
    if rec is not None and rec.origin in ("user", "run_config") and isinstance(rec.value, int) \
            and rec.value > 0 and hidden_size % rec.value == 0:
        return Provenance(HEADS, rec.value, "recorded",
                          f"the manifest records {rec.value} heads, {rec.label} at conversion "
                          f"({rec.source})"), warnings
    if hidden_size % family.FALLBACK_HEAD_DIM:
        raise CheckpointError(
            f"hidden size {hidden_size} is not a width of {family.SOURCE} and is not a multiple "
            f"of {family.FALLBACK_HEAD_DIM}: the number of heads cannot be assumed",
            hint="give the number of heads with --num-heads (or the run's config with --config)")
    n = hidden_size // family.FALLBACK_HEAD_DIM
    return Provenance(HEADS, n, "assumed",
                      f"hidden size / {family.FALLBACK_HEAD_DIM}, the released models' head size; "
                      f"width {hidden_size} is in no constructor of {family.SOURCE}"), warnings


def shared_values(hidden_size: int, constructor: family.Constructor | None) -> list[Provenance]:
    """LayerNorm eps and activation: the family's, or assumed outside it."""
    in_family = family.heads_for_width(hidden_size) is not None
    out = []
    for key, value in (("layer_norm_eps", family.SHARED["layer_norm_eps"]),
                       ("hidden_act", family.SHARED["hidden_act"])):
        if constructor is not None:
            out.append(Provenance(key, value, "family",
                                  f"{constructor.name}, named by the run's config"))
        elif in_family:
            out.append(Provenance(key, value, "family",
                                  f"shared by every constructor; width {hidden_size} is one of "
                                  "the family's"))
        else:
            out.append(Provenance(key, value, "assumed",
                                  f"the values every constructor of the original family shares; "
                                  f"width {hidden_size} is not one of its widths"))
    return out


def assumed(records: list[Provenance] | tuple[Provenance, ...]) -> list[Provenance]:
    return [r for r in records if r.assumed]


def run_context(checkpoint_path: str | os.PathLike[str] | None,
                config: str | os.PathLike[str] | None = None, num_heads: int | None = None,
                recorded_heads: Provenance | None = None) -> tuple[Known, RunConfig | None]:
    """What is known about the network at ``checkpoint_path`` besides its weights, and the
    run's config it came from (a :class:`~msn_cli.original.runconfig.RunConfig`, or None).

    ``config``: a ``params-msn-train.yaml`` the user named (``--config``); otherwise the one
    beside the checkpoint, when there is one; :data:`os.devnull` for none at all
    (``--no-config``: a config beside that belongs to another run). A malformed file raises
    ``ConfigError`` (exit 3).
    """
    from pathlib import Path

    from msn_cli.original.runconfig import find_run_config, read_run_config

    if config is not None and os.fspath(config) == os.devnull:
        return Known(num_heads=num_heads, recorded_heads=recorded_heads), None

    path = Path(config) if config is not None else (
        find_run_config(checkpoint_path) if checkpoint_path is not None else None)
    run = read_run_config(path) if path is not None else None
    given = "--config " if config is not None else ""
    return Known(num_heads=num_heads, model_name=run.model_name if run else None,
                 config_name=f"{given}{path.name}" if path is not None else None,
                 recorded_heads=recorded_heads), run


def run_record(run: RunConfig | None, config_given: bool) -> RunConfigRecord | None:
    """What a manifest records about the run's config (its file name only, never a path)."""
    if run is None:
        return None
    return {"file": run.path.name, "found": "given with --config" if config_given else
            "beside the checkpoint", "model_name": run.model_name}
