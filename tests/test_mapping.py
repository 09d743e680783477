"""The declarative mapping and the plan, on every released architecture's real shapes.

Shapes come from meta tensors, so ViT-L is planned without allocating a byte.
"""

from __future__ import annotations

import pytest
import torch

from msn_cli.conversion import mapping
from msn_cli.conversion.plan import plan_from_state
from msn_cli.dev.synth import arch_for, backbone_state
from msn_cli.errors import CheckpointError, MappingError
from msn_cli.original.architecture import Architecture
from msn_cli.original.checkpoint import infer_architecture
from msn_cli.original.variants import VARIANTS


def target_keys(arch: Architecture) -> list[str]:
    """Every canonical Hugging Face key of a ``ViTMSNModel`` with this architecture."""
    return [t for t, _, _, _ in mapping.expected_targets(arch)]


def source_keys(arch: Architecture) -> list[str]:
    """Every original backbone key (prefix-free) that the mapping consumes for ``arch``."""
    return [s for rule in mapping.RULES for s in rule.sources(arch)]


def meta_state(name: str, head: bool = True) -> dict[str, torch.Tensor]:
    arch = arch_for(name)
    with torch.device("meta"):
        return backbone_state(arch, head=head)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_released_variant_is_recognised_and_fully_mapped(name):
    v = VARIANTS[name]
    state = meta_state(name)
    inf = infer_architecture(state)
    assert inf.variant is not None and inf.variant.name == name
    a = inf.arch
    assert (a.hidden_size, a.num_layers, a.num_heads, a.intermediate_size, a.patch_size,
            a.image_size) == (v.hidden_size, v.num_layers, v.num_heads, v.intermediate_size,
                              v.patch_size, v.image_size)
    plan = plan_from_state(state, inf)
    assert plan.ok, plan.problems
    # 4 embedding tensors + 16 per block (qkv -> 6) + final norm 2
    assert len(plan.tensors) == 4 + 16 * v.num_layers + 2
    assert {t.target for t in plan.tensors} == set(target_keys(a))
    counts = plan.counts()
    assert counts["dropped"] == 16  # the projection head
    assert counts["split"] == 2 * v.num_layers
    # parameter count of the backbone equals the sum of the original backbone tensors
    backbone = sum(t.numel() for k, t in state.items() if not k.startswith("fc."))
    assert plan.num_parameters == backbone


def test_vits16_parameter_count_matches_the_published_model():
    plan = plan_from_state(meta_state("vits16"), infer_architecture(meta_state("vits16")))
    # ViT-S/16 backbone: 21.67M parameters (the Hub's vit-msn-small, 86.7 MB in float32)
    assert plan.num_parameters == 21_665_664
    assert abs(plan.output_bytes - 86.7e6) < 0.1e6


def test_qkv_split_rows_are_query_key_value_in_order():
    w = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(12, 2)
    rows = [t for t in mapping.expected_targets(arch_for("tiny")) if t[1] == "blocks.0.attn.qkv.weight"]
    assert [r[0].rsplit(".", 2)[-2] for r in rows] == ["query", "key", "value"]
    from msn_cli.conversion.plan import TensorPlan

    parts = [TensorPlan(r[0], r[1], "split_qkv", r[3], (4, 2), "float32", "float32").take(w)
             for r in rows]
    assert torch.equal(torch.cat(parts), w)
    assert torch.equal(parts[1], w[4:8])


def test_no_rule_matches_two_ways_and_every_target_is_unique():
    a = arch_for("vitb16")
    targets = target_keys(a)
    assert len(targets) == len(set(targets))
    for src in source_keys(a):
        hits = [r for r in mapping.RULES if r.regex.match(src)]
        assert len(hits) == 1, src


def test_unknown_extra_tensor_and_missing_tensor_are_all_reported_at_once():
    state = dict(meta_state("vits16"))
    with torch.device("meta"):
        state["head.weight"] = torch.empty(1000, 384)
    del state["blocks.3.mlp.fc2.bias"]
    del state["norm.weight"]
    inf = infer_architecture(state)
    plan = plan_from_state(state, inf)
    assert not plan.ok
    text = "\n".join(plan.problems)
    assert "head.weight" in text and "blocks.3.mlp.fc2.bias" in text and "norm.weight" in text
    with pytest.raises(MappingError) as e:
        plan.require_ok()
    assert len(e.value.problems) == 3


def test_wrong_qkv_rows_is_a_shape_problem():
    state = dict(meta_state("vits16"))
    with torch.device("meta"):
        state["blocks.2.attn.qkv.weight"] = torch.empty(2 * 384, 384)
    plan = plan_from_state(state, infer_architecture(state))
    assert any("blocks.2.attn.qkv.weight" in p and "1152" in p for p in plan.problems)


def test_heads_come_from_the_registry_rule_not_the_file():
    state = meta_state("vitb16")
    with pytest.raises(CheckpointError, match="12"):
        infer_architecture(state, num_heads=8)
    tiny = {k: v for k, v in backbone_state(arch_for("tiny")).items()}
    assert infer_architecture(tiny, num_heads=4).arch.num_heads == 4


def test_missing_blocks_are_named():
    state = {k: v for k, v in meta_state("vits16").items() if not k.startswith("blocks.5.")}
    with pytest.raises(CheckpointError, match="missing: 5"):
        infer_architecture(state)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_inverse_accounts_for_every_backbone_key_in_original_order(name):
    arch = arch_for(name)
    inv = mapping.inverse(arch)
    keys = [k for k, _, _ in inv]
    state = meta_state(name, head=False)
    assert keys == list(state), "the original model's order (synth writes it block by block)"
    assert sorted(keys) == sorted(source_keys(arch))
    forward = {}
    for tgt, src, _rule, _part in mapping.expected_targets(arch):
        forward.setdefault(src, []).append(tgt)
    assert {k: list(t) for k, t, _ in inv} == forward  # qkv parts in query, key, value order
