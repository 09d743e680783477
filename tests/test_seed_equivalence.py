"""Our output against the transformers conversion script this tool replaces.

The seed's own renaming, qkv-split and head-removal functions (from ../shared/seeds) run on the
same synthetic file; names and tensors must be identical. The seed's network calls (label file,
COCO image, checkpoint URL) are outside these functions and are not run.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from msn_cli.dev.synth import TINY, arch_for
from tests.conftest import TINY_MULTIHEAD

SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_2126801676a814e6.txt"


def _seed_functions() -> dict:
    if not SEED.is_file():
        pytest.skip(f"the seed script is not beside the repository ({SEED})")
    text = SEED.read_text(encoding="utf-8")
    code = re.search(r"```\n(.*?)```", text, re.S).group(1)
    # keep only the pure state-dict functions; everything from the network-bound converter on
    # (and the module-level torch.set_grad_enabled) is left out
    start = code.index("def create_rename_keys")
    end = code.index("def convert_vit_msn_checkpoint")
    ns: dict = {"torch": torch}
    exec(compile(code[start:end], str(SEED), "exec"), ns)
    return ns


def _seed_convert(path: Path, hidden: int, layers: int) -> dict[str, torch.Tensor]:
    f = _seed_functions()
    config = types.SimpleNamespace(num_hidden_layers=layers, hidden_size=hidden)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)["target_encoder"]
    f["remove_projection_head"](state_dict)
    for src, dest in f["create_rename_keys"](config, base_model=True):
        f["rename_key"](state_dict, src, dest)
    f["read_in_q_k_v"](state_dict, config, base_model=True)
    return state_dict


@pytest.mark.parametrize("arch", [TINY, TINY_MULTIHEAD, arch_for("vits16")],
                         ids=["tiny", "multihead", "vits16"])
def test_same_names_and_bit_identical_tensors_as_the_seed(cli, make_ckpt, tmp_path, arch):
    ck = make_ckpt(arch, "released", prefix=True)
    out = tmp_path / "out"
    r = cli("convert", ck, out, "--no-verify", "--num-heads", arch.num_heads)
    assert r.code == 0, r.stderr
    seed = _seed_convert(ck, arch.hidden_size, arch.num_layers)
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        ours = {k: f.get_tensor(k) for k in f.keys()}
    assert sorted(ours) == sorted(seed)
    for k in seed:
        assert ours[k].dtype == seed[k].dtype and torch.equal(ours[k], seed[k]), k
