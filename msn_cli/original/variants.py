"""The five released MSN checkpoints, as published by Meta (facts in shared/msn-facts.md)."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

from msn_cli.errors import UsageError

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/msn/"


@dataclass(frozen=True)
class Variant:
    name: str
    filename: str
    epochs: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int
    hub_id: str
    expected_slice: tuple[float, float, float]
    """The seed's ``last_hidden_state[0, 0, :3]`` on COCO val2017 000000039769 (tolerance 1e-4)."""

    def url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return base_url.rstrip("/") + "/" + self.filename

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["url"] = self.url()
        d["expected_slice"] = list(self.expected_slice)
        return d


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vits16", "vits16_800ep.pth.tar", 800, 384, 12, 6, 1536, 16, 224,
                "facebook/vit-msn-small", (-1.0915, -1.4876, -1.1809)),
        Variant("vitb16", "vitb16_600ep.pth.tar", 600, 768, 12, 12, 3072, 16, 224,
                "facebook/vit-msn-base", (14.2889, -18.9045, 11.7281)),
        Variant("vitl16", "vitl16_600ep.pth.tar", 600, 1024, 24, 16, 4096, 16, 224,
                "facebook/vit-msn-large", (41.5028, -22.8681, 45.6475)),
        Variant("vitb4", "vitb4_300ep.pth.tar", 300, 768, 12, 12, 3072, 4, 224,
                "facebook/vit-msn-base-4", (-4.3868, 5.2932, -0.4137)),
        Variant("vitl7", "vitl7_200ep.pth.tar", 200, 1024, 24, 16, 4096, 7, 224,
                "facebook/vit-msn-large-7", (-0.1792, -0.6465, 2.4263)),
    )
}


def find_variant(name: str) -> Variant | None:
    """The variant called ``name``, or whose released file (its cache entry) is ``name``."""
    key = name.strip().lower()
    if key in VARIANTS:
        return VARIANTS[key]
    return next((v for v in VARIANTS.values() if v.filename == key), None)


def get_variant(name: str) -> Variant:
    """The registered variant called ``name`` (or its file name, as ``msn cache ls`` shows it);
    a :class:`UsageError` suggesting the closest."""
    found = find_variant(name)
    if found is not None:
        return found
    key = name.strip().lower()
    close = difflib.get_close_matches(key, list(VARIANTS), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UsageError(
        f"unknown checkpoint name '{name}'",
        hint=f"{hint}Known names: {', '.join(VARIANTS)} (or their file names, an entry of msn cache "
             "ls, a file path or an http(s) URL).",
    )


def match_variant(hidden_size: int, num_layers: int, patch_size: int,
                  intermediate_size: int, image_size: int) -> Variant | None:
    """The released variant whose architecture these shapes describe, if any."""
    for v in VARIANTS.values():
        if (v.hidden_size, v.num_layers, v.patch_size, v.intermediate_size, v.image_size) == (
            hidden_size, num_layers, patch_size, intermediate_size, image_size
        ):
            return v
    return None


def variant_for_filename(filename: str) -> Variant | None:
    """The variant whose released file name is ``filename`` (used for cache look-ups only)."""
    for v in VARIANTS.values():
        if v.filename == filename:
            return v
    return None
