"""What ``push`` publishes besides the folder's own files: the manifest as published, and the
commit's message and description.

Both are read by people on the Hub, and the manifest was written by whoever made the folder:
typed values are checked and free text escaped as in the model card
(:mod:`msn_cli.hf.cardtext`); no local path, host or credential is published.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, cast

from msn_cli import __version__
from msn_cli.hf.cardtext import html_safe_json, md_code, md_text, sha256, timestamp, version
from msn_cli.hf.manifest import Manifest
from msn_cli.transfer.sources import public_file_name, public_url


def public_manifest(manifest: Manifest) -> bytes:
    """The manifest as published: the source's local path cut to its file name, its URL the
    released checkpoint's canonical one when the card's origin is that release, else none
    (never a mirror, an internal host or credentials), and of the training record only the
    hyperparameters a run's config may publish (never a path).

    Where the checkpoint lay on the converting machine (a home folder, a cache path) or which
    server it came from is no business of the Hub; everything else, hashes and verify results
    included, goes up unchanged.
    """
    from msn_cli.hf.card import origin
    from msn_cli.original.runconfig import publishable

    public = json.loads(json.dumps(manifest))
    src = public.get("source")
    if isinstance(src, dict):
        # Meta's URL only for a release msn verify saw, as the card: never the manifest's word
        url = public_url(src) if origin(manifest).kind == "released" else None
        if src.get("path"):
            src["path"] = PurePosixPath(str(src["path"]).replace("\\", "/")).name
        if src.get("url") or url:
            src["url"] = url
        if src.get("kind") in ("path", "url"):
            src["spec"] = url or public_file_name(src)
    if "training" in public:
        training = public["training"]
        public["training"] = publishable(training) if isinstance(training, dict) else None
    _vet(public)
    return html_safe_json(public)


def _vet(public: dict[str, Any]) -> None:
    """Typed fields that are not of their type become null (a forged date is not republished);
    the preprocessing's processor is the one the table gives for its name."""
    from msn_cli.hf.card import table_processor

    verify = public.get("verify")
    for record, keys in ((public, ("created", "msn_version")),
                         (verify if isinstance(verify, dict) else {},
                          ("date", "msn_version", "transformers_version", "torch_version"))):
        for key in keys:
            check = timestamp if key in ("created", "date") else version
            if record.get(key) is not None and check(record[key]) is None:
                record[key] = None
    pre = public.get("preprocessing")
    if isinstance(pre, dict) and "processor" in pre:
        pre["processor"] = table_processor(cast(Manifest, public))


def default_message(manifest: Manifest) -> str:
    from msn_cli.hf.card import origin

    o = origin(manifest)
    if o.kind == "released" and o.variant is not None:
        return f"Upload MSN {o.variant.name} converted from the original checkpoint (msn {__version__})"
    what = "an own-trained MSN ViT backbone" if o.kind == "own" else "an MSN ViT backbone"
    return f"Upload {what} converted with msn {__version__}"


def commit_description(manifest: Manifest) -> str:
    """The commit's description: typed values checked, text escaped, as in the card."""
    from msn_cli.hf.card import origin

    src = manifest.get("source") or {}
    v = manifest.get("verify")
    o = origin(manifest)  # Meta's URL only where the card names Meta's release
    url = o.variant.url() if o.kind == "released" and o.variant is not None else None
    lines = [f"Converted by msn {version(manifest.get('msn_version')) or 'unknown'} on "
             f"{timestamp(manifest.get('created')) or 'an unknown date'}.",
             f"Source: {url or md_code(public_file_name(src))}",
             f"Source sha256: {sha256(src.get('sha256')) or 'unknown'}"]
    if isinstance(v, dict):
        lines.append(f"msn verify: {'passed' if v.get('passed') is True else 'FAILED'}: "
                     f"{md_text(v.get('summary') or '')}")
    else:
        lines.append("msn verify: not run (pushed with --skip-verify-check)")
    return "\n".join(lines)
