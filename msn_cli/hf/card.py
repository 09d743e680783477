"""The model card (``README.md``) that ``push`` publishes with a converted folder.

Built with huggingface_hub's card API (:class:`~huggingface_hub.ModelCardData` for the YAML
metadata, :class:`~huggingface_hub.ModelCard` to assemble and re-parse the text), and filled from
the folder's ``msn_manifest.json`` only: architecture, provenance, training run, verify results.
A body the user supplies (``--card FILE``) replaces the generated body; the metadata stays ours.
The manifest may be someone else's: every value taken from it is checked against its type or
escaped (:mod:`msn_cli.hf.cardtext`), and none reaches the front matter.
huggingface_hub is imported inside the functions, so importing this module costs nothing.

The card tells Meta's released weights from a model someone trained with the MSN code
(:func:`origin`). No checksums of the released files are published, so a sha256 cannot identify
them: a model is presented as Meta's release only when msn fetched it by its released name or
from its canonical URL, in the released layout, with no training record. Anything else is
described as what it is (an own training run, or a file msn cannot place), never under Meta's name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from msn_cli import __version__
from msn_cli.conversion.provenance import Provenance
from msn_cli.errors import UsageError
from msn_cli.hf.cardtext import UNKNOWN, md_code, md_text, sha256, timestamp, version
from msn_cli.hf.manifest import Manifest, SourceRecord, verified_release
from msn_cli.original.runconfig import CONFIG_NAME, FIELD_BY_KEY, publishable
from msn_cli.original.variants import VARIANTS, Variant
from msn_cli.transfer.sources import public_file_name
from msn_cli.util.fmt import human_size

if TYPE_CHECKING:
    from huggingface_hub import ModelCardData

LICENSE = "cc-by-nc-4.0"
"""The default: the license of the MSN code and of Meta's released weights (CC BY-NC 4.0)."""
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


_LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")


def check_license(value: str) -> str:
    """A Hub license id (``apache-2.0``, ``cc-by-nc-4.0``, ``mit``, ``other``...), lower-cased;
    a :class:`UsageError` for anything that cannot be one."""
    v = value.strip().lower()
    if not _LICENSE_ID.fullmatch(v):
        raise UsageError(f"'{value}' is not a license id",
                         hint="give a Hub license id such as cc-by-nc-4.0, apache-2.0, mit or other "
                              "(https://huggingface.co/docs/hub/repositories-licenses)")
    return v


def card_metadata(extra: dict[str, Any] | None = None, *, license: str = LICENSE,
                  datasets: list[str] | None = None) -> ModelCardData:
    """The card's YAML metadata as a ``ModelCardData``; ``extra`` keys are kept unless ours.

    ``datasets``: what the model was trained on, when known (ImageNet-1K for Meta's releases;
    an own run's data folder is a local path and is never published, so only the publisher's
    own card front matter can name its datasets)."""
    from huggingface_hub import ModelCardData

    ours: dict[str, Any] = {"license": license, "library_name": LIBRARY_NAME,
                            "pipeline_tag": PIPELINE_TAG, "tags": list(TAGS)}
    if datasets:
        ours["datasets"] = list(datasets)
    kept = {k: v for k, v in (extra or {}).items() if k not in ours and k.replace("-", "_") not in ours}
    return ModelCardData(**ours, **kept)


def build_card(manifest: Manifest, repo_id: str, *, body: str | None = None,
               card_path: str | os.PathLike[str] | None = None, license: str | None = None) -> str:
    """The full ``README.md`` text: metadata front matter plus the generated (or given) body.

    ``card_path``: a Markdown file whose text replaces the body. If it has front matter of its
    own, its body is used and any metadata keys we do not set are kept; ours win otherwise.
    ``license``: a Hub license id for the card (default :data:`LICENSE`).
    """
    from huggingface_hub import ModelCard

    lic = check_license(license) if license is not None else LICENSE
    extra: dict[str, Any] = {}
    if card_path is not None:
        body, extra = read_user_card(card_path)
    if body is None:
        body = default_body(manifest, repo_id, license=lic)
    released = origin(manifest).kind == "released"
    data = card_metadata(extra, license=lic, datasets=DATASETS if released else None)
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
        return card.text, card.data.to_dict()  # type: ignore[no-untyped-call]  # unannotated there
    return text, {}


# -- the generated body --------------------------------------------------------------------------

def _md(text: object) -> str:
    """A value from the manifest, inert in the card (and inside a table cell)."""
    return md_text(text)


MAX_ROWS = 32
"""Rows of one table (or items of one list) taken from the manifest: a folder holds three files
and verify makes eight checks, so more is a manifest made to flood the card."""


def _size(x: object) -> str:
    return human_size(x) if isinstance(x, int) and not isinstance(x, bool) else "unknown size"


def _typed(record: Any, key: str, check: Callable[[object], str | None]) -> str | None:
    """``record[key]`` if it is there and of its type (else None, and the card leaves it out)."""
    value = record.get(key)
    return None if value is None else check(value) or UNKNOWN


def _num(x: object) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        # cosines like 0.9999998 must not round to 1
        return f"{x:.8g}" if 0.99 < abs(x) < 1 else f"{x:.3g}"
    return str(x) if isinstance(x, int) else _md(x)


def _tolerance(t: object) -> str:
    if isinstance(t, dict):
        return "(" + ", ".join(f"{_md(k)} {_tolerance(v)}" for k, v in list(t.items())[:MAX_ROWS]) + ")"
    return _num(t)


@dataclass(frozen=True)
class Origin:
    """Where the weights come from, as far as the manifest shows."""

    kind: Literal["released", "own", "unknown"]
    reason: str
    variant: Variant | None = None
    """Meta's release (kind "released"), or the release whose shapes these are (otherwise)."""


def _training(manifest: Manifest) -> dict[str, Any]:
    t = manifest.get("training")
    return publishable(t) if t else {}


def origin(manifest: Manifest) -> Origin:
    """Meta's released weights, an own training run, or a file msn cannot place.

    Shapes never decide (an own ``deit_small`` run has exactly the shapes of ``vits16``), and
    no sha256 of the released files is published. Released: a passed ``msn verify`` saw it
    fetched by a released name or from its canonical URL (the verify record's ``source``, never
    the manifest's own ``source``), in the released layout, with no training record.
    """
    src = manifest.get("source") or {}
    shapes = VARIANTS.get(manifest.get("variant") or "")
    if _training(manifest):
        return Origin("own", f"the {CONFIG_NAME} of its training run is recorded",
                      shapes)
    if src.get("layout") == "training" or src.get("encoder_key") == "encoder":
        return Origin("own", "it was saved by the MSN training code (the file holds the online "
                             "encoder and optimizer state, which Meta's releases do not)", shapes)
    seen = verified_release(manifest)  # what msn verify observed, never the manifest's word
    if seen is not None and seen[0] is shapes:
        return Origin("released", f"{seen[1]}, as `msn verify` saw", seen[0])
    return Origin("unknown", "`msn verify` did not see it fetched by a released name or from "
                             "Meta's URL, and no checksums of Meta's files are published to tell "
                             "them apart", shapes)


def _title(manifest: Manifest) -> str:
    arch = manifest.get("architecture") or {}
    o = origin(manifest)
    size = {192: "Ti", 384: "S", 768: "B", 1024: "L", 1280: "H"}.get(arch.get("hidden_size") or 0)
    name = f"ViT-{size}/{arch.get('patch_size')}" if size else "ViT"
    if o.kind == "released" and o.variant is not None:
        return f"MSN {name} ({o.variant.name}, {o.variant.epochs} epochs)"
    if o.kind == "own":
        model = _training(manifest).get("model_name")
        return f"MSN {name} backbone (own training run{f', {_md(model)}' if model else ''})"
    return f"MSN {name} backbone"


def _source_line(src: SourceRecord, o: Origin) -> str:
    # a released checkpoint's canonical URL, never a mirror's, and only for what verify saw
    url = o.variant.url() if o.kind == "released" and o.variant is not None else None
    if url:
        return f"<{url}>"
    # never publish a local path, a host or credentials: only the file's name
    if src.get("kind") == "url":
        return f"{md_code(public_file_name(src))}, downloaded from a URL that is not published"
    return f"local file {md_code(public_file_name(src))}"


def _variant_row(o: Origin) -> str:
    if o.kind == "released" and o.variant is not None:
        return o.variant.name
    if o.variant is None:
        return "none (shapes match no released model)"
    if o.kind == "own":
        return f"none (same shapes as the released {o.variant.name}; these weights are not Meta's)"
    return f"not identified (same shapes as the released {o.variant.name}; shapes do not tell whose weights)"


def architecture_table(manifest: Manifest) -> str:
    a = manifest.get("architecture") or {}
    parameters = manifest.get("parameters")
    grid = (a.get("image_size") or 0) // max(a.get("patch_size") or 1, 1)
    rows = [
        ("Released variant", _variant_row(origin(manifest))),
        ("Hidden size", a.get("hidden_size")),
        ("Layers", a.get("num_layers")),
        ("Attention heads", _Markdown(_md(f"{a.get('num_heads')} (head size {a.get('head_dim')})")
                                      + _origin(manifest, "num_attention_heads"))),
        ("MLP size", a.get("intermediate_size")),
        ("Patch size", a.get("patch_size")),
        ("Image size", f"{a.get('image_size')} ({grid}x{grid} patches + cls token)"),
        ("Parameters", f"{parameters:,}" if parameters is not None else "unknown"),
        ("Weights dtype", manifest.get("dtype")),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v if isinstance(v, _Markdown) else _md(v)} |"
                                      for k, v in rows]
    return "\n".join(lines)


class _Markdown(str):
    """Text the card wrote itself, its manifest values escaped already: kept as it is."""


def _origin(manifest: Manifest, key: str) -> str:
    p = _records(manifest).get(key)
    if p is None:
        return ""
    return " -- **ASSUMED**" if p.assumed else f" -- {p.label}"


def _records(manifest: Manifest) -> dict[str, Provenance]:
    out = {}
    for d in manifest.get("provenance") or []:
        p = Provenance.from_dict(d)
        if p is not None:
            out[p.key] = p
    return out


def values_section(manifest: Manifest) -> str:
    """Where each value that the weights do not hold comes from (the heads above all)."""
    records = list(_records(manifest).values())[:MAX_ROWS]
    if not records:
        return ("The converter that made this folder did not record where the values not "
                "held by the weights (number of heads, LayerNorm eps, activation) came from.")
    lines = ["A checkpoint holds weights, not the number of attention heads, the LayerNorm eps "
             "or the activation; `msn` took them from:", ""]
    for p in records:
        value = f"{p.value:g}" if isinstance(p.value, float) else p.value
        label = "**ASSUMED** (fallback)" if p.assumed else p.label
        lines.append(f"- {md_code(p.key)} = {_md(value)}: {label} -- {_md(p.source)}")
    if any(p.assumed for p in records):
        lines += ["", "An assumed value is not known from the weights, the run's config or the "
                  "original model family; `msn verify` checked the model against the same "
                  "assumption, so parity does not confirm it."]
    return "\n".join(lines)


def _origin_line(o: Origin) -> str:
    if o.kind == "released" and o.variant is not None:
        return f"Meta's released checkpoint `{o.variant.name}` ({o.reason})"
    if o.kind == "own":
        return f"**not one of Meta's released checkpoints**: an own MSN training run ({o.reason})"
    return f"**not identified as one of Meta's released checkpoints** ({o.reason})"


def provenance_section(manifest: Manifest) -> str:
    src = manifest.get("source") or {}
    encoder = src.get("encoder_key") or src.get("encoder") or "target_encoder"
    dropped = manifest.get("dropped") or []
    o = origin(manifest)
    as_released = " (the EMA target encoder, as released)" if o.kind == "released" else \
        " (the EMA target encoder)"
    lines = [
        f"- Origin: {_origin_line(o)}",
        f"- Source checkpoint: {_source_line(src, o)}",
        f"- Source sha256: `{sha256(src.get('sha256')) or UNKNOWN}` ({_size(src.get('size'))})",
        f"- Network converted: {md_code(encoder)}" + (as_released if encoder == "target_encoder" else ""),
        f"- Dropped: {len(dropped)} tensors (the pre-training projection head"
        + (" and prototypes" if any("prototypes" in str(d) for d in dropped) else "") + ")",
        f"- Converted with `msn` {version(manifest.get('msn_version')) or UNKNOWN} on "
        f"{timestamp(manifest.get('created')) or 'an unknown date'} (pushed with `msn` {__version__})",
    ]
    files = manifest.get("files") or {}
    if files:
        lines += ["", "| File | Size | sha256 |", "|---|---|---|"]
        lines += [f"| {md_code(name)} | {_size(f.get('size'))} | `{sha256(f.get('sha256')) or UNKNOWN}` |"
                  for name, f in list(files.items())[:MAX_ROWS]]
    return "\n".join(lines)


def verify_section(manifest: Manifest) -> str:
    v = manifest.get("verify")
    if v is None:
        return ("**Not verified.** This folder was pushed without a recorded `msn verify` run "
                "(`--skip-verify-check`); nothing here shows that its outputs match the original model.")
    status = "passed" if v.get("passed") is True else "**FAILED**"
    head = [f"`msn verify` {status}: {_md(v.get('summary') or '')}".rstrip(": "), ""]
    facts = [("date", _typed(v, "date", timestamp)), ("msn", _typed(v, "msn_version", version)),
             ("transformers", _typed(v, "transformers_version", version)),
             ("torch", _typed(v, "torch_version", version)),
             ("dtype", v.get("dtype")), ("tolerance", v.get("tolerance"))]
    head.append(", ".join(f"{k} {_tolerance(x) if k == 'tolerance' else _num(x)}"
                          for k, x in facts if x is not None))
    checks = v.get("checks") or []
    if not checks:
        return "\n".join(head)
    rows = ["", "| Check | Result | Max abs error | Other figures | Detail |", "|---|---|---|---|---|"]
    for c in checks[:MAX_ROWS]:
        numbers = {k: x for k, x in c.items()
                   if k not in ("name", "passed", "detail", "max_abs_err") and isinstance(x, (int, float))
                   and not isinstance(x, bool)}
        other = ", ".join(f"{k} {_num(x)}" for k, x in list(numbers.items())[:MAX_ROWS]) or ""
        err = c.get("max_abs_err")
        passed = c.get("passed")
        result = "skipped" if passed is None else "pass" if passed else "FAIL"
        rows.append(f"| {_md(c.get('name', ''))} | {result} | "
                    f"{_num(err) if err is not None else ''} | {_md(other)} | {_md(c.get('detail', ''))} |")
    return "\n".join(head + rows)


def training_section(manifest: Manifest) -> str:
    """The run's hyperparameters (own-trained), or what is known of Meta's pre-training."""
    o = origin(manifest)
    t = _training(manifest)
    if o.kind == "released" and o.variant is not None:
        return (f"Pre-trained by Meta with MSN on ImageNet-1K for {o.variant.epochs} epochs, as "
                f"described in the [paper]({PAPER_URL}); the configs are in the "
                f"[MSN repository]({CODE_URL}).")
    saved = _saved_at(manifest.get("source"))
    if not t:
        if o.kind == "own":
            return (f"The run's config ({CONFIG_NAME}) was not given when this model was converted, "
                    f"so its hyperparameters are not recorded here.{saved}")
        return "Unknown: nothing about how these weights were trained was recorded."
    rows = ["| Group | Setting | Value |", "|---|---|---|"]
    group = None
    for key, value in t.items():
        f = FIELD_BY_KEY[key]
        shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        rows.append(f"| {f.group if f.group != group else ''} | {_md(f.label)} (`{key}`) | {_md(shown)} |")
        group = f.group
    return (f"Trained with the original MSN code ([facebookresearch/msn]({CODE_URL})); the settings "
            f"below are those of the run's `{CONFIG_NAME}`. Where the data came from is not "
            "recorded: the config's local paths (dataset root and image folder, logging folder, "
            f"checkpoint to resume from) are never published.{saved}\n\n" + "\n".join(rows))


def _saved_at(src: SourceRecord | None) -> str:
    """What the converted training checkpoint records of itself (its ``epoch`` and ``loss``)."""
    if not src:
        return ""
    parts = [f"{k} {_num(v)}" for k, v in (("epoch", src.get("epoch")), ("loss", src.get("loss")))
             if v is not None]
    return f" The converted checkpoint records {' and '.join(parts)}." if parts else ""


def license_section(manifest: Manifest, license: str = LICENSE) -> str:
    o = origin(manifest)
    code = (f"The MSN code and Meta's released weights are distributed under CC BY-NC 4.0 "
            f"(non-commercial; see the [MSN repository]({CODE_URL}))")
    if o.kind == "released":
        text = (f"{code}, so this card says `cc-by-nc-4.0` by default. Note that Meta's official "
                "uploads of these models on the Hub (`facebook/vit-msn-*`) are marked `apache-2.0`; "
                "check which terms apply to your use.")
    elif o.kind == "own":
        text = (f"{code}. This model was not released by Meta; it was trained with that code, so this "
                "card says `cc-by-nc-4.0` unless its publisher chose otherwise.")
    else:
        text = (f"{code}. Whether these weights are Meta's or were trained with that code, this card "
                "says `cc-by-nc-4.0` unless its publisher chose otherwise.")
    if license != LICENSE:
        text += f"\n\nThe publisher of this repository set its license to `{license}` (`msn push --license`)."
    return text


def table_processor(manifest: Manifest) -> str | None:
    """The image processor class the preprocessing table gives for the folder's choice (None for
    a name not in the table). The manifest's own ``preprocessing.processor`` string is never
    shown or published: a processor is one of the table's."""
    from msn_cli.original.preprocess import PREPROCESSING

    name = (manifest.get("preprocessing") or {}).get("name")
    if name not in PREPROCESSING:
        return None
    size = (manifest.get("architecture") or {}).get("image_size") or 224
    return str(PREPROCESSING[str(name)].config(size)["image_processor_type"])


def preprocessing_section(manifest: Manifest, image_size: int) -> str:
    """Which image processor the folder has, why, and what verify measured of it."""
    from msn_cli.original.preprocess import PREPROCESSING, eval_resize_size

    p = manifest.get("preprocessing") or {}
    name = p.get("name")
    if name is None or name not in PREPROCESSING:  # converted before the choice was recorded
        return (f"The image processor resizes straight to {image_size}x{image_size} (bilinear) "
                "and normalises with the ImageNet mean and standard deviation. MSN's own "
                "evaluation code instead resizes the short side to 256 and centre-crops 224; use "
                "that if you want to reproduce the paper's numbers.")
    processor = table_processor(manifest)
    if name == "msn":
        text = (f"The image processor (`{processor}`) reproduces MSN's own evaluation transform: "
                f"the short side resized to {eval_resize_size(image_size)} (bilinear), a "
                f"{image_size}x{image_size} centre crop, the ImageNet mean and standard deviation "
                "(`msn convert --preprocessing msn`, the default).")
    else:
        text = (f"The image processor (`{processor}`) resizes the whole image to "
                f"{image_size}x{image_size} (bilinear, aspect ratio not kept) and normalises with "
                "the ImageNet mean and standard deviation (`msn convert --preprocessing seed`). "
                "MSN's own evaluation instead resizes the short side to 256 and centre-crops 224.")
    text += f" Why: {PREPROCESSING[name].why}"
    checks = (manifest.get("verify") or {}).get("checks") or []
    measured = next((c for c in checks if c.get("name") == "preprocessing"), None)
    if measured and measured.get("detail"):
        text += f"\n\nMeasured by `msn verify` on real photographs: {_md(measured['detail'])}."
    return text


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


def _intro(o: Origin) -> str:
    if o.kind == "released" and o.variant is not None:
        v = o.variant
        return ("A Vision Transformer pre-trained with **Masked Siamese Networks (MSN)**, converted from "
                "Meta's\noriginal PyTorch checkpoint into a `transformers` `ViTMSNModel` with the `msn` "
                f"converter\n(msn-cli). Meta's own upload of this checkpoint is [{v.hub_id}]"
                f"(https://huggingface.co/{v.hub_id}).")
    if o.kind == "own":
        return ("A Vision Transformer pre-trained with **Masked Siamese Networks (MSN)** using the "
                "original MSN\ntraining code, and converted into a `transformers` `ViTMSNModel` with "
                "the `msn` converter (msn-cli).\n**This is not one of Meta's released MSN checkpoints**: "
                f"{o.reason}. See Training below.")
    return ("A Vision Transformer pre-trained with **Masked Siamese Networks (MSN)**, converted into a\n"
            "`transformers` `ViTMSNModel` with the `msn` converter (msn-cli) from an MSN checkpoint "
            f"that msn\ndid not identify as one of Meta's released checkpoints ({o.reason}).")


def default_body(manifest: Manifest, repo_id: str, *, license: str = LICENSE) -> str:
    arch = manifest.get("architecture") or {}
    image_size = arch.get("image_size") or 224
    o = origin(manifest)
    return f"""# {_title(manifest)}

{_intro(o)}

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

{values_section(manifest)}

## Usage

{usage_snippet(repo_id)}

Which output is which:

- `last_hidden_state[:, 0]` is the cls token after the final LayerNorm: the same vector as the
  original code's `forward_features`.
- `hidden_states[-1][:, 0]` is the cls token as the last transformer block leaves it, before the
  final norm: the features the paper's linear and logistic-regression evaluations are computed on.
  `msn fewshot {repo_id} --train DIR --val DIR` (msn-cli) runs that low-shot logistic-regression
  evaluation on your own labelled images (one sub-folder per class); msn-cli's docs/fewshot.md
  says what its numbers mean.

{preprocessing_section(manifest, image_size)}

## Training

{training_section(manifest)}

## Provenance

{provenance_section(manifest)}

## Verification

{verify_section(manifest)}

## License

{license_section(manifest, license)}

## Citation

```bibtex
{BIBTEX}
```
"""
