"""The one declarative key mapping from original MSN keys to Hugging Face ``ViTMSNModel`` keys.

Everything that needs to know how the two layouts correspond -- ``inspect``'s key-diff,
``convert``'s plan, ``verify``'s accounting -- reads :data:`RULES`. Keys here are relative to
the backbone: the ``module.`` prefix of DistributedDataParallel saves is stripped before
matching. Hugging Face keys are the canonical on-disk names, which transformers 4.x loads
directly and 5.x renames while loading, so one file serves both.

A source template may contain ``{i}`` (a block index) and a trailing ``*`` (anything).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from msn_cli.original.architecture import Architecture

Action = Literal["rename", "split_qkv", "drop"]
ShapeFn = Callable[[Architecture], tuple[int, ...]]

QKV_PARTS = ("query", "key", "value")
"""Row order of the fused qkv projection: [0:D] query, [D:2D] key, [2D:3D] value."""


@dataclass(frozen=True)
class Rule:
    source: str
    targets: tuple[str, ...]
    action: Action
    note: str
    shape: ShapeFn | None = None
    """Expected source shape for an architecture (None: not checked, e.g. dropped keys)."""
    when: Callable[[Architecture], bool] | None = None
    """Only for architectures where this holds (None: always), e.g. the qkv bias."""

    def applies(self, arch: Architecture) -> bool:
        return self.when is None or self.when(arch)

    @property
    def per_block(self) -> bool:
        return "{i}" in self.source

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.source)

    def sources(self, arch: Architecture) -> list[str]:
        """Every concrete source key this rule expects for ``arch`` (none for drop rules)."""
        if self.action == "drop" or not self.applies(arch):
            return []
        if self.per_block:
            return [self.source.format(i=i) for i in range(arch.num_layers)]
        return [self.source]


BLOCK_INDEX = r"0|[1-9][0-9]{0,8}"
"""A block index as the original model writes it: no leading zero (``blocks.01`` would be a
second name for block 1) and at most nine digits (a key holds any number of them; ``int()``
refuses over 4,300 and a deeper network does not exist)."""

_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compile(template: str) -> re.Pattern[str]:
    if template not in _REGEX_CACHE:
        pattern = re.escape(template).replace(r"\{i\}", rf"(?P<i>{BLOCK_INDEX})").replace(r"\*", r".+")
        _REGEX_CACHE[template] = re.compile(pattern + r"\Z")
    return _REGEX_CACHE[template]


def _d(a: Architecture) -> tuple[int, ...]:
    return (a.hidden_size,)


def _pair(src: str, dst: str, note: str, wshape: ShapeFn, bshape: ShapeFn = _d) -> list[Rule]:
    return [
        Rule(f"{src}.weight", (f"{dst}.weight",), "rename", note, wshape),
        Rule(f"{src}.bias", (f"{dst}.bias",), "rename", note, bshape),
    ]


_L = "encoder.layer.{i}"

RULES: tuple[Rule, ...] = (
    Rule("cls_token", ("embeddings.cls_token",), "rename", "class token",
         lambda a: (1, 1, a.hidden_size)),
    Rule("pos_embed", ("embeddings.position_embeddings",), "rename", "position embeddings",
         lambda a: (1, a.num_patches + 1, a.hidden_size)),
    *_pair("patch_embed.proj", "embeddings.patch_embeddings.projection", "patch embedding",
           lambda a: (a.hidden_size, a.num_channels, a.patch_size, a.patch_size)),
    *_pair("blocks.{i}.norm1", f"{_L}.layernorm_before", "pre-attention LayerNorm", _d),
    Rule("blocks.{i}.attn.qkv.weight",
         tuple(f"{_L}.attention.attention.{p}.weight" for p in QKV_PARTS), "split_qkv",
         "fused qkv split by rows: query, key, value",
         lambda a: (3 * a.hidden_size, a.hidden_size)),
    Rule("blocks.{i}.attn.qkv.bias",
         tuple(f"{_L}.attention.attention.{p}.bias" for p in QKV_PARTS), "split_qkv",
         "fused qkv split: query, key, value", lambda a: (3 * a.hidden_size,),
         when=lambda a: a.qkv_bias),
    *_pair("blocks.{i}.attn.proj", f"{_L}.attention.output.dense", "attention output projection",
           lambda a: (a.hidden_size, a.hidden_size)),
    *_pair("blocks.{i}.norm2", f"{_L}.layernorm_after", "pre-MLP LayerNorm", _d),
    *_pair("blocks.{i}.mlp.fc1", f"{_L}.intermediate.dense", "MLP up-projection",
           lambda a: (a.intermediate_size, a.hidden_size), lambda a: (a.intermediate_size,)),
    *_pair("blocks.{i}.mlp.fc2", f"{_L}.output.dense", "MLP down-projection",
           lambda a: (a.hidden_size, a.intermediate_size)),
    *_pair("norm", "layernorm", "final LayerNorm", _d),
    Rule("fc.*", (), "drop", "MSN projection head, pre-training only"),
)


def dropped_note(rule: Rule, key: str, shape: tuple[int, ...]) -> str:
    """A dropped key's note with what its own shape says (a run chooses the head's sizes: the
    released models' are D-2048-2048-256, another run's may be anything)."""
    layer = key.rsplit(".", 2)[-2] if key.count(".") >= 2 else key
    if len(shape) == 2:
        what = f"{layer}: linear {shape[1]} -> {shape[0]}"
    elif len(shape) == 1:
        what = f"{layer}: {'BatchNorm' if layer.startswith('bn') else 'bias'} of {shape[0]}"
    else:
        what = f"{layer}: {key.rsplit('.', 1)[-1]}"
    return f"{rule.note} ({what})"


@dataclass(frozen=True)
class Match:
    rule: Rule
    source: str
    targets: tuple[str, ...]
    block: int | None


def match(key: str) -> Match | None:
    """The rule that accounts for the (prefix-free) source ``key``, or None."""
    for rule in RULES:
        m = rule.regex.match(key)
        if m:
            block = int(m.group("i")) if rule.per_block else None
            targets = tuple(t.format(i=block) for t in rule.targets)
            return Match(rule, key, targets, block)
    return None


def expected_targets(arch: Architecture) -> Iterator[tuple[str, str, Rule, int | None]]:
    """(target key, source key, rule, part index) for every key ``ViTMSNModel`` needs."""
    for rule in RULES:
        if rule.action == "drop":
            continue
        for src in rule.sources(arch):
            m = rule.regex.match(src)
            assert m is not None
            block = int(m.group("i")) if rule.per_block else None
            for part, tgt in enumerate(rule.targets):
                yield tgt.format(i=block), src, rule, (part if rule.action == "split_qkv" else None)


def inverse(arch: Architecture) -> list[tuple[str, tuple[str, ...], Rule]]:
    """The way back, read off :data:`RULES`: every original backbone key (prefix-free) for
    ``arch``, with the Hugging Face keys it is rebuilt from and its rule.

    A ``rename`` key comes from its one target; a ``split_qkv`` key is its three targets'
    rows joined in :data:`QKV_PARTS` order (query, key, value). Keys come in the order the
    original model registers them: the keys before the blocks, block by block (each block's
    keys in table order), then the keys after the blocks. Dropped keys (the projection head)
    have no way back and are not listed.
    """
    kept = [r for r in RULES if r.action != "drop"]
    first_block = next(i for i, r in enumerate(kept) if r.per_block)
    per_block = [r for r in kept if r.per_block]
    out: list[tuple[str, tuple[str, ...], Rule]] = []
    for rule in kept[:first_block]:
        out.append((rule.source, rule.targets, rule))
    for i in range(arch.num_layers):
        for rule in per_block:
            out.append((rule.source.format(i=i), tuple(t.format(i=i) for t in rule.targets), rule))
    for rule in kept[first_block:]:
        if not rule.per_block:
            out.append((rule.source, rule.targets, rule))
    return out
