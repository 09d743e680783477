"""verify's ``loading`` check: the folder loads as a user loads it.

``ViTMSNModel.from_pretrained(folder, output_loading_info=True)`` with the installed
transformers reports no missing, unexpected or mismatched keys and no load errors. The model it
returns is what the checks after it run. Never with the folder's own code: a folder that names
any (:func:`msn_cli.hf.folder.folder_files_problem`) is not loaded, and ``trust_remote_code`` is
False.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from msn_cli.hf.folder import folder_files_problem
from msn_cli.hf.quiet import quiet_transformers
from msn_cli.verify.report import CheckResult, Json

if TYPE_CHECKING:
    from msn_cli.verify.context import VerifyContext

_KINDS = ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")


class LoadingRow(TypedDict):
    kind: str
    count: int
    items: list[str]


def run(ctx: VerifyContext) -> CheckResult:
    if ctx.unloadable is not None:
        return CheckResult("loading", False, f"not loaded: {ctx.unloadable}")
    ctx.model, result = load_hf_model(ctx.folder, ctx.dtype)
    return result


def _info_items(info: Any, key: str) -> list[str]:
    v = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
    return sorted(map(str, v)) if v else []


def load_hf_model(folder: Path, dtype: str) -> tuple[Any, CheckResult]:
    """``ViTMSNModel.from_pretrained`` with loading info; (model or None, the loading check)."""
    unsafe = folder_files_problem(folder)
    if unsafe is not None:
        return None, CheckResult("loading", False, f"not loaded: the folder {unsafe}")
    import torch
    from transformers import ViTMSNModel

    try:
        with quiet_transformers():
            loaded: Any = ViTMSNModel.from_pretrained(
                str(folder), output_loading_info=True, dtype=getattr(torch, dtype),
                trust_remote_code=False)
            model, info = loaded
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, CheckResult("loading", False, f"from_pretrained failed: {first[:300]}")
    model.eval()
    rows: list[LoadingRow] = []
    problems: list[str] = []
    for key in _KINDS:
        items = _info_items(info, key)
        rows.append({"kind": key, "count": len(items), "items": items[:20]})
        if items:
            problems.append(f"{len(items)} {key.replace('_', ' ')}: {', '.join(items[:3])}"
                            + (" ..." if len(items) > 3 else ""))
    numbers: dict[str, Json] = {r["kind"]: r["count"] for r in rows}
    if problems:
        return model, CheckResult("loading", False, "; ".join(problems), numbers, rows)
    return model, CheckResult("loading", True, "from_pretrained: no missing, unexpected or "
                              "mismatched keys", numbers, rows)
