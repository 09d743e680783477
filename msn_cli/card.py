"""The model card (``README.md``) that ``push`` publishes with a converted folder.

Built with huggingface_hub's card API (:class:`~huggingface_hub.ModelCardData` for the YAML
metadata, :class:`~huggingface_hub.ModelCard` to assemble and re-parse the text), and filled from
the folder's ``msn_manifest.json`` only: architecture, provenance, verify results. A body the
user supplies (``--card FILE``) replaces the generated body; the metadata stays ours.
huggingface_hub is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UsageError
from .variants import VARIANTS

LICENSE = "cc-by-nc-4.0"
LIBRARY_NAME = "transformers"
PIPELINE_TAG = "image-feature-extraction"
TAGS = ["vision", "vit", "msn", "self-supervised"]
DATASETS = ["imagenet-1k"]
PAPER_URL = "https://arxiv.org/abs/2204.07141"
CODE_URL = "https://github.com/facebookresearch/msn"

BIBTEX = """@inproceedings{assran2022masked,
  title     = {Masked Siamese Networks for Label-Efficient Learning},
  author    = {Assran, Mahmoud and Caron, Mathilde and Misra, Ishan and Bojanowski, Piotr and
               Bordes, Florian and Vincent, Pascal and Joulin, Armand and Rabbat, Michael and
               Ballas, Nicolas},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2022},
  eprint    = {2204.07141},
  archivePrefix = {arXiv}
}"""


def card_metadata(extra: dict[str, Any] | None = None):
    """The card's YAML metadata as a ``ModelCardData``; ``extra`` keys are kept unless ours."""
    from huggingface_hub import ModelCardData

    ours: dict[str, Any] = {"license": LICENSE, "library_name": LIBRARY_NAME,
                            "pipeline_tag": PIPELINE_TAG, "tags": list(TAGS), "datasets": list(DATASETS)}
    kept = {k: v for k, v in (extra or {}).items() if k not in ours and k.replace("-", "_") not in ours}
    return ModelCardData(**ours, **kept)


def build_card(manifest: dict[str, Any], repo_id: str, *, body: str | None = None,
               card_path: str | os.PathLike[str] | None = None) -> str:
    """The full ``README.md`` text: metadata front matter plus the generated (or given) body.

    ``card_path``: a Markdown file whose text replaces the body. If it has front matter of its
    own, its body is used and any metadata keys we do not set are kept; ours win otherwise.
    """
    from huggingface_hub import ModelCard

    extra: dict[str, Any] = {}
    if card_path is not None:
        body, extra = read_user_card(card_path)
    if body is None:
        body = default_body(manifest, repo_id)
    data = card_metadata(extra)
    text = f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"
    card = ModelCard(text)  # parse back: proves the front matter is well formed
    return str(card)


def read_user_card(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The body and metadata of a user-written card file."""
    from huggingface_hub import ModelCard

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"card file not found: {p}", hint="give a Markdown file for --card") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read card file {p}: {e}") from None
    if not text.strip():
        raise UsageError(f"card file {p} is empty", hint="write the card's Markdown body into it")
    if text.lstrip().startswith("---"):
        try:
            card = ModelCard(text)
        except Exception as e:  # malformed YAML front matter
            raise UsageError(f"card file {p} has front matter that is not valid YAML: {e}") from None
        return card.text, card.data.to_dict()
    return text, {}


# -- the generated body --------------------------------------------------------------------------

def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _md(text: Any) -> str:
    """A value safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(x: Any) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        # cosines like 0.9999998 must not round to 1
        return f"{x:.8g}" if 0.99 < abs(x) < 1 else f"{x:.3g}"
    return str(x)


def _tolerance(t: Any) -> str:
    if isinstance(t, dict):
        return "(" + ", ".join(f"{k} {_tolerance(v)}" for k, v in t.items()) + ")"
    return _num(t)


def _title(manifest: dict[str, Any]) -> str:
    arch = manifest.get("architecture") or {}
    variant = VARIANTS.get(manifest.get("variant") or "")
    size = {384: "S", 768: "B", 1024: "L"}.get(arch.get("hidden_size", 0))
    name = f"ViT-{size}/{arch.get('patch_size')}" if size else "ViT"
    if variant is not None:
        return f"MSN {name} ({variant.name}, {variant.epochs} epochs)"
    return f"MSN {name} backbone"


def _source_line(src: dict[str, Any]) -> str:
    if src.get("url"):
        return f"<{src['url']}>"
    if src.get("name"):
        return f"released checkpoint `{src['name']}`"
    # never publish a local path: only the file's name
    return f"local file `{Path(str(src.get('path') or src.get('spec') or 'unknown')).name}`"


def architecture_table(manifest: dict[str, Any]) -> str:
    a = manifest.get("architecture") or {}
    grid = a.get("image_size", 0) // max(a.get("patch_size", 1), 1)
    rows = [
        ("Released variant", manifest.get("variant") or "none (shapes match no released model)"),
        ("Hidden size", a.get("hidden_size")),
        ("Layers", a.get("num_layers")),
        ("Attention heads", f"{a.get('num_heads')} (head size {a.get('head_dim')})"),
        ("MLP size", a.get("intermediate_size")),
        ("Patch size", a.get("patch_size")),
        ("Image size", f"{a.get('image_size')} ({grid}x{grid} patches + cls token)"),
        ("Parameters", f"{manifest['parameters']:,}" if isinstance(manifest.get("parameters"), int)
         else "unknown"),
        ("Weights dtype", manifest.get("dtype")),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in rows]
    return "\n".join(lines)


def provenance_section(manifest: dict[str, Any]) -> str:
    src = manifest.get("source") or {}
    encoder = src.get("encoder_key") or src.get("encoder") or "target_encoder"
    dropped = manifest.get("dropped") or []
    lines = [
        f"- Source checkpoint: {_source_line(src)}",
        f"- Source sha256: `{src.get('sha256') or 'unknown'}` ({_fmt_bytes(src.get('size'))})",
        f"- Network converted: `{encoder}`"
        + (" (the EMA target encoder, as released)" if encoder == "target_encoder" else ""),
        f"- Dropped: {len(dropped)} tensors (the pre-training projection head"
        + (" and prototypes" if any("prototypes" in str(d) for d in dropped) else "") + ")",
        f"- Converted with `msn` {manifest.get('msn_version', 'unknown')} on "
        f"{manifest.get('created', 'unknown')} (pushed with `msn` {__version__})",
    ]
    files = manifest.get("files") or {}
    if files:
        lines += ["", "| File | Size | sha256 |", "|---|---|---|"]
        lines += [f"| `{name}` | {_fmt_bytes(f.get('size'))} | `{f.get('sha256')}` |"
                  for name, f in files.items()]
    return "\n".join(lines)


def verify_section(manifest: dict[str, Any]) -> str:
    v = manifest.get("verify")
    if not isinstance(v, dict):
        return ("**Not verified.** This folder was pushed without a recorded `msn verify` run "
                "(`--skip-verify-check`); nothing here shows that its outputs match the original model.")
    status = "passed" if v.get("passed") else "**FAILED**"
    head = [f"`msn verify` {status}: {v.get('summary', '')}".rstrip(": "), ""]
    facts = [("date", v.get("date")), ("msn", v.get("msn_version")),
             ("transformers", v.get("transformers_version")), ("torch", v.get("torch_version")),
             ("dtype", v.get("dtype")), ("tolerance", v.get("tolerance"))]
    head.append(", ".join(f"{k} {_tolerance(x) if k == 'tolerance' else _num(x)}"
                          for k, x in facts if x is not None))
    checks = v.get("checks") or []
    if not checks:
        return "\n".join(head)
    rows = ["", "| Check | Result | Max abs error | Other figures | Detail |", "|---|---|---|---|---|"]
    for c in checks:
        numbers = {k: x for k, x in c.items()
                   if k not in ("name", "passed", "detail", "max_abs_err") and isinstance(x, (int, float))
                   and not isinstance(x, bool)}
        other = ", ".join(f"{k} {_num(x)}" for k, x in numbers.items()) or ""
        err = c.get("max_abs_err")
        result = {True: "pass", False: "FAIL"}.get(c.get("passed"), "skipped")
        rows.append(f"| {_md(c.get('name', ''))} | {result} | "
                    f"{_num(err) if err is not None else ''} | {_md(other)} | {_md(c.get('detail', ''))} |")
    return "\n".join(head + rows)


def usage_snippet(repo_id: str) -> str:
    return f'''```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

repo = "{repo_id}"
processor = AutoImageProcessor.from_pretrained(repo)
model = AutoModel.from_pretrained(repo).eval()

image = Image.open("image.jpg").convert("RGB")
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs, output_hidden_states=True)

final_cls = outputs.last_hidden_state[:, 0]  # cls token after the final LayerNorm
block_cls = outputs.hidden_states[-1][:, 0]  # cls token of the last block, before that norm
```'''


def default_body(manifest: dict[str, Any], repo_id: str) -> str:
    arch = manifest.get("architecture") or {}
    image_size = arch.get("image_size", 224)
    variant = VARIANTS.get(manifest.get("variant") or "")
    official = (f" Meta's own upload of this checkpoint is [{variant.hub_id}]"
                f"(https://huggingface.co/{variant.hub_id}).") if variant else ""
    return f"""# {_title(manifest)}

A Vision Transformer pre-trained with **Masked Siamese Networks (MSN)**, converted from Meta's
original PyTorch checkpoint into a `transformers` `ViTMSNModel` with the `msn` converter
(msn-cli).{official}

## What MSN is

MSN is a self-supervised way to pre-train Vision Transformers without labels
([paper]({PAPER_URL}), [code]({CODE_URL})). Two views of each image are made; in one of them a
large share of the patches is randomly dropped, and the network is trained so that the masked
view is assigned to the same learned prototypes as the unmasked view. Because dropped patches
are never processed, pre-training is cheap for large ViTs, and the resulting features do well
when very few labels are available (low-shot ImageNet-1K classification). This repository holds
the backbone only: the projection head and prototypes used during pre-training are not included,
and there is no classifier.

## Architecture

{architecture_table(manifest)}

## Usage

{usage_snippet(repo_id)}

Which output is which:

- `last_hidden_state[:, 0]` is the cls token after the final LayerNorm: the same vector as the
  original code's `forward_features`.
- `hidden_states[-1][:, 0]` is the cls token as the last transformer block leaves it, before the
  final norm: the features the paper's linear and logistic-regression evaluations are computed on.

The image processor resizes straight to {image_size}x{image_size} (bilinear) and normalises with
the ImageNet mean and standard deviation. MSN's own evaluation code instead resizes the short
side to 256 and centre-crops 224; use that if you want to reproduce the paper's numbers.

## Provenance

{provenance_section(manifest)}

## Verification

{verify_section(manifest)}

## License

The MSN code and released weights are distributed under
CC BY-NC 4.0 (non-commercial; see the [MSN repository]({CODE_URL})), so this card says
`cc-by-nc-4.0`. Note that Meta's official uploads of these models on the Hub
(`facebook/vit-msn-*`) are marked `apache-2.0`; check which terms apply to your use.

## Citation

```bibtex
{BIBTEX}
```
"""


def code_blocks(card_text: str, language: str = "python") -> list[str]:
    """The fenced code blocks of a card in ``language`` (used to test the usage snippet)."""
    return re.findall(rf"```{language}\n(.*?)```", card_text, re.DOTALL)
