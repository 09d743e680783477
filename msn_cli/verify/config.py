"""verify's ``config`` check: what transformers reads from the folder is what the source implies.

Every configuration value that changes the computation (model type, hidden size, layers,
heads, MLP size, patch size, image size, channels, activation -- exact erf GELU --, LayerNorm
eps, qkv bias), as transformers reads it from the folder, equals what the source checkpoint
implies (:func:`msn_cli.original.checkpoint.infer_architecture`); and the image processor's
settings (size, bilinear, 1/255, ImageNet mean/std). Values the weights do not hold (heads,
eps, activation) are resolved independently of the folder's own ``config.json`` (the user,
the run's config, the original model family, what the manifest records as given; else
assumed: see :mod:`msn_cli.conversion.provenance`), and each row says where its expected value
came from: such values are checked only against what msn knows or assumes, and parity, which
runs the reference with the same values, cannot confirm them further. Parity alone need not
catch e.g. ``layer_norm_eps`` 1e-5 instead of 1e-6: on real activations its effect is below
float32 noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from msn_cli.hf.folder import folder_files_problem, read_json_object
from msn_cli.hf.manifest import CONFIG, PREPROCESSOR
from msn_cli.hf.quiet import quiet_transformers
from msn_cli.original.architecture import LAYER_NORM_EPS, Architecture
from msn_cli.verify.context import show_value
from msn_cli.verify.photos import declared_choice
from msn_cli.verify.report import CheckResult, Json

if TYPE_CHECKING:
    from msn_cli.conversion.provenance import Provenance
    from msn_cli.verify.context import VerifyContext

RELEVANT_CONFIG = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "patch_size", "image_size", "num_channels", "hidden_act",
                   "layer_norm_eps", "qkv_bias")
"""Configuration values that change what the network computes, as ViTMSNConfig names them."""


class ConfigRow(TypedDict, total=False):
    key: str
    expected: object
    found: object
    in_file: bool
    ok: bool
    origin: str
    assumed: bool
    source: str


def run(ctx: VerifyContext) -> CheckResult:
    return check_config(ctx.folder, ctx.arch, ctx.dtype, ctx.inferred.provenance)


def _same(got: object, want: object) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(float(got), want, rel_tol=1e-9, abs_tol=0.0)
    return type(got) is type(want) and got == want


def check_config(folder: Path, arch: Architecture, dtype: str,
                 provenance: Sequence[Provenance] = ()) -> CheckResult:
    """Effective (as transformers reads them) computation-relevant values vs the source's.

    ``provenance``: where the expected values that the weights do not hold come from; each
    row and the detail say so (a value that is assumed was checked against an assumption).
    """
    expected = arch.hf_config(dtype)
    origin = {p.key: p for p in provenance}
    raw, err = read_json_object(folder / CONFIG)
    if raw is None:
        return CheckResult("config", False, err or f"{CONFIG} unreadable")
    unsafe = folder_files_problem(folder)  # transformers never sees a folder that names code
    if unsafe is not None:
        return CheckResult("config", False, f"not read: the folder {unsafe}")
    try:
        from transformers import ViTMSNConfig

        with quiet_transformers():
            effective = ViTMSNConfig.from_pretrained(str(folder), trust_remote_code=False).to_dict()
    except Exception as e:
        return CheckResult("config", False, f"transformers cannot read {CONFIG}: {e}")
    rows: list[ConfigRow] = []
    bad: list[str] = []
    for key in RELEVANT_CONFIG:
        want = expected[key]
        # model_type: what AutoModel dispatches on is the file's value (ViTMSNConfig reports
        # its own class attribute whatever the file says); the rest: what transformers uses
        got = raw.get(key) if key == "model_type" else effective.get(key, raw.get(key))
        ok = _same(got, want)
        row: ConfigRow = {"key": key, "expected": want, "found": got, "in_file": key in raw, "ok": ok}
        p = origin.get(key)
        if p is not None:
            row.update({"origin": p.origin, "assumed": p.assumed, "source": p.source})
        rows.append(row)
        if not ok:
            why = f" ({p.label}: {p.source})" if p is not None and p.origin != "weights" else ""
            bad.append(f"{key} = {show_value(got)}, expected {show_value(want)}{why}")
    choice = _check_preprocessor(folder, arch, rows, bad)
    return _result(rows, bad, choice, arch, provenance)


def _result(rows: list[ConfigRow], bad: list[str], choice: str, arch: Architecture,
            provenance: Sequence[Provenance]) -> CheckResult:
    outside = [p for p in provenance if p.origin != "weights"]
    numbers: dict[str, Json] = {"mismatched": len(bad), "assumed": sum(p.assumed for p in provenance)}
    if bad:
        assumed_note = "; ASSUMED: " + ", ".join(p.key for p in outside if p.assumed) \
            if any(p.assumed for p in outside) else ""
        return CheckResult("config", False, "; ".join(bad) + assumed_note, numbers, rows)
    known = ("; not in the weights, so checked against: " + ", ".join(
        f"{p.key} {show_value(p.value)} ({'ASSUMED' if p.assumed else p.origin})" for p in outside)
        if outside else "")
    return CheckResult("config", True, f"{len(rows)} computation-relevant values match the source "
                       f"(layer_norm_eps {LAYER_NORM_EPS:g}, exact gelu; preprocessing {choice}: "
                       f"{arch.image_size} px, ImageNet mean/std){known}", numbers, rows)


def _check_preprocessor(folder: Path, arch: Architecture, rows: list[ConfigRow],
                        bad: list[str]) -> str:
    """``preprocessor_config.json`` against the preprocessing the folder declares (the
    manifest's choice, else the one the file matches, else msn) at the model's size."""
    from msn_cli.original.preprocess import get, same_value

    choice = get(declared_choice(folder, arch.image_size))
    raw, err = read_json_object(folder / PREPROCESSOR)  # regular files only: a FIFO would hang
    if raw is None:
        bad.append(err or f"{PREPROCESSOR} unreadable")
        return choice.name
    expected = choice.config(arch.image_size)
    for key in ("image_processor_type", *choice.relevant):
        want, got = expected[key], raw.get(key)
        ok = same_value(got, want)
        rows.append({"key": f"{PREPROCESSOR}:{key}", "expected": want, "found": got,
                     "in_file": key in raw, "ok": ok})
        if not ok:
            bad.append(f"{PREPROCESSOR} {key} = {show_value(got)}, expected {show_value(want)}")
    return choice.name
