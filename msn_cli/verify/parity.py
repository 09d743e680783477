"""verify's ``parity`` check: the converted model computes what the original network computes.

The independent reference (:mod:`msn_cli.original.reference`, float32, on the source
checkpoint's own tensors in their original names) and the converted model (in the folder's
dtype) run on the same deterministic inputs (:mod:`msn_cli.verify.inputs`), one batch per
size. At the native size the embeddings (``hidden_states[0]``: patch projection, class token,
the position embeddings as stored) are compared on all tokens; at a smaller size with position
interpolation every layer's output is compared on all tokens: the embeddings, each block
(``hidden_states[i + 1]`` against ``blocks.i``) and the final norm (``last_hidden_state``).
Every weight takes part. The first layer over tolerance (:mod:`msn_cli.verify.report`) is
named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msn_cli.original.architecture import Architecture
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.verify.inputs import ParityInput, parity_inputs
from msn_cli.verify.report import CheckResult, InputRecord, Json, LayerStat, Tolerance, tolerance_for

if TYPE_CHECKING:
    import torch

    from msn_cli.verify.context import VerifyContext

Group = tuple[int, bool]
"""(image size, every layer compared)."""


@dataclass
class _Running:
    """One layer's figures at one size, over the inputs compared so far."""

    max: float = 0.0
    sum: float = 0.0
    n: int = 0
    cos: float = 1.0
    scale: float = 0.0


def run(ctx: VerifyContext) -> CheckResult:
    if ctx.model is None:
        return CheckResult("parity", None, "skipped: the converted model did not load")
    from msn_cli.original.reference import build_reference

    ctx.reference = build_reference(ctx.checkpoint.state, num_heads=ctx.arch.num_heads)
    result, ctx.layers, ctx.inputs = check_parity(ctx.model, ctx.reference, ctx.arch, ctx.dtype,
                                                  ctx.progress)
    return result


def layer_names(num_layers: int) -> list[tuple[str, str, str]]:
    """(name, Hugging Face output, original module) of every compared layer, in order."""
    names = [("embeddings", "hidden_states[0]", "patch_embed + cls_token + pos_embed")]
    names += [(f"block {i}", f"hidden_states[{i + 1}]", f"blocks.{i}") for i in range(num_layers)]
    names.append(("final norm", "last_hidden_state", "norm"))
    return names


def _coverage(groups: dict[Group, list[ParityInput]], n_layers: int) -> str:
    """What parity compared: ``embeddings at 224 px, all 14 layers at 112 px, 2 inputs each``."""
    parts = [f"all {n_layers} layers at {size} px" if every else f"embeddings at {size} px"
             for size, every in groups]
    counts = {len(g) for g in groups.values()}
    each = f"{counts.pop()} inputs each" if len(counts) == 1 else \
        f"{sum(len(g) for g in groups.values())} inputs"
    return f"{', '.join(parts)}, {each}"


def _reference_outputs(reference: Any, pixels: torch.Tensor, every_layer: bool) -> list[Any]:
    from msn_cli.original.reference import run_embeddings, run_reference

    if every_layer:
        return run_reference(reference, pixels).all
    return [run_embeddings(reference, pixels)]


def _model_outputs(model: Any, pixels: torch.Tensor, dtype: str, every_layer: bool,
                   interpolate: bool) -> list[Any]:
    import torch

    x = pixels.to(getattr(torch, dtype))
    with torch.inference_mode():
        if every_layer:
            out = model(pixel_values=x, output_hidden_states=True,
                        interpolate_pos_encoding=interpolate)
            return [*out.hidden_states, out.last_hidden_state]
        # the converted model's own embeddings module, as its forward calls it
        return [model.embeddings(x, interpolate_pos_encoding=False)]


def _accumulate(acc: dict[tuple[int, int], _Running], size: int, hf: list[Any],
                ref: list[Any]) -> None:
    import torch

    for li, (h, r) in enumerate(zip(hf, ref, strict=True)):
        h32 = h.float()
        diff = (h32 - r).abs()
        cos = torch.nn.functional.cosine_similarity(h32, r, dim=-1, eps=1e-12)
        a = acc.setdefault((size, li), _Running())
        worst = float(diff.max())
        a.max = max(a.max, worst) if math.isfinite(worst) else math.inf
        a.sum += float(diff.sum(dtype=torch.float64))
        a.n += diff.numel()
        a.cos = min(a.cos, float(cos.min()))
        a.scale = max(a.scale, float(r.abs().max()))


def check_parity(model: Any, reference: Any, arch: Architecture, dtype: str,
                 progress: ProgressFn = no_progress,
                 ) -> tuple[CheckResult, list[LayerStat], list[InputRecord]]:
    """Compare the layers :func:`~msn_cli.verify.inputs.parity_inputs` names on every input;
    the per-layer table; the input descriptions. The inputs of one size run as one batch,
    through the reference, then the converted model."""
    import torch

    groups: dict[Group, list[ParityInput]] = {}
    for i in parity_inputs(arch):
        groups.setdefault((i.size, i.every_layer), []).append(i)
    n_inputs = sum(len(g) for g in groups.values())
    descriptions: list[InputRecord] = [
        {"input": i.description, "size": i.size, "layers": "all" if i.every_layer else "embeddings"}
        for g in groups.values() for i in g]
    acc: dict[tuple[int, int], _Running] = {}
    passes = 2 * len(groups)  # the reference, then the converted model, on each size's batch
    for done, ((size, every_layer), group) in enumerate(groups.items()):
        pixels = torch.cat([i.pixels for i in group])
        desc = " and ".join(i.description for i in group)
        progress("parity", 2 * done, passes)
        ref = _reference_outputs(reference, pixels, every_layer)
        progress("parity", 2 * done + 1, passes)
        try:
            hf = _model_outputs(model, pixels, dtype, every_layer, size != arch.image_size)
        except Exception as e:
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return CheckResult("parity", False, f"the converted model failed on {desc}: "
                               f"{msg[:300]}"), [], descriptions
        if len(hf) != len(ref) or any(h.shape != r.shape for h, r in zip(hf, ref, strict=False)):
            return CheckResult("parity", False, (
                f"the converted model returns {len(hf)} outputs of shape "
                f"{list(hf[-1].shape)}, the original {len(ref)} of {list(ref[-1].shape)} "
                f"on {desc}")), [], descriptions
        _accumulate(acc, size, hf, ref)
        del ref, hf
        progress("parity", 2 * done + 2, passes)
    tol = tolerance_for(dtype)
    stats = _layer_stats(acc, layer_names(arch.num_layers), tol)
    numbers: dict[str, Json] = {"layers": arch.num_layers + 2, "inputs": n_inputs,
                                "sizes": list(dict.fromkeys(size for size, _ in groups))}
    return _result(stats, numbers, _coverage(groups, arch.num_layers + 2), tol), stats, descriptions


def _layer_stats(acc: dict[tuple[int, int], _Running], names: list[tuple[str, str, str]],
                 tol: Tolerance) -> list[LayerStat]:
    stats = []
    for (size, li), a in acc.items():
        name, hfname, orig = names[li]
        scale = max(1.0, a.scale)
        allowed = tol.atol * scale
        ok = a.max <= allowed and a.cos >= tol.cosine_min
        stats.append(LayerStat(li, name, hfname, orig, size, a.max, a.sum / max(1, a.n),
                               a.cos, scale, allowed, ok))
    return stats


def _result(stats: list[LayerStat], numbers: dict[str, Json], coverage: str,
            tol: Tolerance) -> CheckResult:
    worst = max(stats, key=lambda s: s.max_abs_err / s.allowed)
    bad = [s for s in stats if not s.passed]
    numbers.update({
        "max_abs_err": max(s.max_abs_err for s in stats),
        "mean_abs_err": sum(s.mean_abs_err for s in stats) / len(stats),
        "min_cosine": min(s.min_cosine for s in stats),
        "worst_ratio": worst.max_abs_err / worst.allowed,
        "tolerance": tol.atol,
        "first_bad_layer": None,
        "coverage": coverage,
    })
    if bad:
        sizes = list(dict.fromkeys(s.size for s in stats))
        first = min(bad, key=lambda s: (s.index, sizes.index(s.size)))
        numbers["first_bad_layer"] = first.name
        why = (f"max abs err {first.max_abs_err:.2e} > {first.allowed:.2e}"
               if first.max_abs_err > first.allowed else
               f"min cosine {first.min_cosine:.6f} < {tol.cosine_min}")
        return CheckResult("parity", False, (
            f"first bad layer: {first.name} ({first.hf} vs original {first.original}) at "
            f"{first.size} px: {why}; {len(bad)} of {len(stats)} layer comparisons over "
            "tolerance"), numbers)
    return CheckResult("parity", True, (
        f"{coverage}: max abs err {numbers['max_abs_err']:.1e}, min cosine "
        f"{numbers['min_cosine']:.7f}, worst layer at {numbers['worst_ratio']:.0%} of its "
        "tolerance"), numbers)
