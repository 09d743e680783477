"""``msn export``: back to a checkpoint that the original MSN training code resumes from.

The harness below is written from the documented formats (``../shared/msn-facts.md``: the
backbone keys, the projection head fc1/bn1/fc2/bn2/fc3, prototypes, the AdamW of three
parameter groups in a fixed order, DistributedDataParallel's ``module.``), not from the
original code: an original-layout ViT with its head, and the original resume steps (strict
loads of both networks, the prototypes, ``opt.load_state_dict``), plus one training step.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from msn_cli.conversion.export import HeadOptions, export, plan_export
from msn_cli.dev.synth import TINY, write_checkpoint
from msn_cli.hf.safetensors_io import read_header
from msn_cli.original.architecture import Architecture
from msn_cli.transfer.sources import resolve_source
from tests.conftest import TINY_MULTIHEAD

# -- the harness: the original model and optimizer, from the documented formats ---------------


class _Attn(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, f: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = _Attn(d, heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = _Mlp(d, f)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, d: int, c: int, p: int):
        super().__init__()
        self.proj = nn.Conv2d(c, d, p, p)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class OriginalMSN(nn.Module):
    """The original ViT (cls_token, pos_embed, patch_embed.proj, blocks.i.*, norm) with the
    projection head fc (fc1, bn1, GELU, fc2, bn2, GELU, fc3)."""

    def __init__(self, a: Architecture, hidden: int, out: int, use_bn: bool = True):
        super().__init__()
        d = a.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, a.num_patches + 1, d))
        self.patch_embed = _PatchEmbed(d, a.num_channels, a.patch_size)
        self.blocks = nn.ModuleList(_Block(d, a.num_heads, a.intermediate_size)
                                    for _ in range(a.num_layers))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["fc1"] = nn.Linear(d, hidden)
        if use_bn:
            layers["bn1"] = nn.BatchNorm1d(hidden)
        layers["gelu1"] = nn.GELU()
        layers["fc2"] = nn.Linear(hidden, hidden)
        if use_bn:
            layers["bn2"] = nn.BatchNorm1d(hidden)
        layers["gelu2"] = nn.GELU()
        layers["fc3"] = nn.Linear(hidden, out)
        self.fc = nn.Sequential(layers)

    def forward(self, images):
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.fc(self.norm(x)[:, 0])


class DDP(nn.Module):
    """What DistributedDataParallel does to the keys: the model under ``module``."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.module = m


def original_opt(model: OriginalMSN, prototypes: nn.Parameter, ref_lr: float = 1e-3):
    """AdamW over the three documented groups, in their order, built before any wrapping."""
    named = list(model.named_parameters())
    return torch.optim.AdamW([
        {"params": [p for n, p in named if "bias" not in n and "bn" not in n and p.dim() != 1]},
        {"params": [p for n, p in named if "bias" in n or "bn" in n or p.dim() == 1],
         "WD_exclude": True, "weight_decay": 0},
        {"params": [prototypes], "lr": ref_lr, "LARS_exclude": True, "WD_exclude": True,
         "weight_decay": 0},
    ])


def resume(path: Path, a: Architecture, hidden: int, out: int, num_proto: int,
           world_size: int = 2, use_bn: bool = True):
    """The original resume steps on ``path``, then one training step; returns the pieces."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    epoch = ck["epoch"]
    encoder, target = OriginalMSN(a, hidden, out, use_bn), OriginalMSN(a, hidden, out, use_bn)
    prototypes = nn.Parameter(torch.empty(num_proto, out))
    opt = original_opt(encoder, prototypes)
    if world_size > 1:
        encoder, target = DDP(encoder), DDP(target)
    encoder.load_state_dict(ck["encoder"])  # strict, as the original
    target.load_state_dict(ck["target_encoder"])
    with torch.no_grad():
        prototypes.data = ck["prototypes"]
    opt.load_state_dict(ck["opt"])
    # one step: an MSN-like loss (anchor vs prototypes), so every group gets a gradient
    net = encoder.module if world_size > 1 else encoder
    net.train()
    z = nn.functional.normalize(net(torch.randn(4, a.num_channels, a.image_size, a.image_size)))
    p = nn.functional.normalize(prototypes)
    loss = -(z @ p.T / 0.1).log_softmax(-1).mean()
    before = prototypes.detach().clone()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(before, prototypes.detach()), "the step changed nothing"
    assert math.isfinite(float(loss.detach()))
    return ck, epoch, encoder, target, opt


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture
def released(tmp_path) -> Path:
    return write_checkpoint(tmp_path / "released.pth.tar", TINY, "released")


@pytest.fixture
def training(tmp_path) -> Path:
    return write_checkpoint(tmp_path / "training.pth.tar", TINY, "training")


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _head_sizes(ck: dict, prefix: str = "module.") -> tuple[int, int, int]:
    w1 = ck["target_encoder"][prefix + "fc.fc1.weight"]
    return int(w1.shape[0]), int(ck["prototypes"].shape[1]), int(ck["prototypes"].shape[0])


# -- the original code resumes from the output -------------------------------------------------

@pytest.mark.parametrize("single", [False, True], ids=["module-prefix", "single-process"])
def test_released_file_resumes_in_the_original_code(cli, released, tmp_path, single):
    out = tmp_path / "resume.pth.tar"
    r = cli("export", released, out, *(["--single-process"] if single else []))
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == str(out.absolute())
    ck = _load(out)
    assert list(ck) == ["encoder", "opt", "prototypes", "target_encoder", "epoch", "loss",
                        "batch_size", "world_size", "lr", "temperature"]
    hidden, dim_out, nproto = _head_sizes(ck, "" if single else "module.")
    _, epoch, _, _, opt = resume(out, TINY, hidden, dim_out, nproto,
                                 world_size=1 if single else 2)
    assert epoch == 0
    # strict key sets: exactly those of the original model with its head
    model = OriginalMSN(TINY, hidden, dim_out)
    want = set((model if single else DDP(model)).state_dict())
    assert set(ck["encoder"]) == set(ck["target_encoder"]) == want
    # the groups as documented, after the load
    g = opt.param_groups
    assert [len(x["params"]) for x in g] == [len(x["params"]) for x in ck["opt"]["param_groups"]]
    assert g[1]["WD_exclude"] is True and g[1]["weight_decay"] == 0
    assert g[2]["LARS_exclude"] is True and g[2]["WD_exclude"] is True and g[2]["lr"] == 1e-3
    assert ck["opt"]["state"] == {}
    # the source's weights, head and prototypes are carried unchanged
    src = _load(released)
    pre = "" if single else "module."
    for k, v in src["target_encoder"].items():
        assert torch.equal(ck["target_encoder"][pre + k.removeprefix("module.")], v), k
        assert torch.equal(ck["encoder"][pre + k.removeprefix("module.")], v), k
    assert torch.equal(ck["prototypes"], src["prototypes"])


def test_a_wrong_group_layout_is_refused_by_the_harness(released, tmp_path):
    """The harness can fail: a two-group optimizer does not take the exported state."""
    out = tmp_path / "resume.pth.tar"
    export(resolve_source(str(released)), out)
    ck = _load(out)
    hidden, dim_out, _ = _head_sizes(ck)
    model = OriginalMSN(TINY, hidden, dim_out)
    two = torch.optim.AdamW([{"params": list(model.parameters())[:5]},
                             {"params": list(model.parameters())[5:]}])
    with pytest.raises(ValueError):
        two.load_state_dict(ck["opt"])
    wrong_split = original_opt(OriginalMSN(TINY, hidden, dim_out, use_bn=False),
                               nn.Parameter(torch.zeros(3, dim_out)))
    with pytest.raises(ValueError):
        wrong_split.load_state_dict(ck["opt"])


def test_training_checkpoint_online_encoder_and_epoch(cli, training, tmp_path):
    out = tmp_path / "resume.pth.tar"
    r = cli("export", training, out, "--encoder", "online", "--epoch", "7", "--json")
    assert r.code == 0, r.stderr
    ck = _load(out)
    src = _load(training)
    for k, v in src["encoder"].items():  # the online network, head included
        assert torch.equal(ck["encoder"][k], v), k
    for k, v in src["target_encoder"].items():
        assert torch.equal(ck["target_encoder"][k], v), k
    assert not torch.equal(ck["encoder"]["module.cls_token"], ck["target_encoder"]["module.cls_token"])
    assert ck["epoch"] == 7
    for k in ("loss", "batch_size", "world_size", "lr", "temperature"):  # carried over
        assert ck[k] == src[k], k
    assert ck["opt"]["state"] == {}  # the source's moments are not carried
    hidden, dim_out, nproto = _head_sizes(ck)
    _, epoch, *_ = resume(out, TINY, hidden, dim_out, nproto)
    assert epoch == 7
    plan = r.json()["plan"]
    assert plan["encoder_from"].startswith("the source's online")
    assert plan["head"]["origin"] == "source"


def test_default_encoder_is_a_copy_of_the_target(training, tmp_path):
    out = tmp_path / "resume.pth.tar"
    export(resolve_source(str(training)), out)
    ck = _load(out)
    src = _load(training)
    for k, v in src["target_encoder"].items():
        assert torch.equal(ck["encoder"][k], v), k


def test_multihead_model_resumes(tmp_path):
    src = write_checkpoint(tmp_path / "mh.pth.tar", TINY_MULTIHEAD, "released")
    out = tmp_path / "resume.pth.tar"
    export(resolve_source(str(src)), out, num_heads=TINY_MULTIHEAD.num_heads)
    ck = _load(out)
    resume(out, TINY_MULTIHEAD, *_head_sizes(ck))


# -- round trips -----------------------------------------------------------------------------

def test_round_trip_original_convert_export_is_bit_identical(cli, released, tmp_path):
    folder = tmp_path / "converted"
    assert cli("convert", released, folder, "--no-verify").code == 0
    out = tmp_path / "back.pth.tar"
    r = cli("export", folder, out, "--head-from", released)
    assert r.code == 0, r.stderr
    assert "prototypes of released.pth.tar" in r.stderr
    ck, src = _load(out), _load(released)
    assert set(ck["target_encoder"]) == set(src["target_encoder"])
    for k, v in src["target_encoder"].items():
        got = ck["target_encoder"][k]
        assert got.dtype == v.dtype and torch.equal(got.view(-1).view(torch.uint8) if got.dim() else got,
                                                    v.view(-1).view(torch.uint8) if v.dim() else v), k
    assert torch.equal(ck["prototypes"], src["prototypes"])


def test_round_trip_export_convert_gives_the_same_folder(cli, released, tmp_path):
    first = tmp_path / "first"
    assert cli("convert", released, first, "--no-verify").code == 0
    exported = tmp_path / "exported.pth.tar"
    assert cli("export", first, exported, "--head-from", released).code == 0
    assert cli("inspect", exported).code == 0
    second = tmp_path / "second"
    r = cli("convert", exported, second, "--no-verify")
    assert r.code == 0, r.stderr
    for name in ("config.json", "preprocessor_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    h1, h2 = read_header(first / "model.safetensors"), read_header(second / "model.safetensors")
    assert h1 == h2  # every tensor at the same offsets, dtype and shape, the same metadata
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


@pytest.mark.parametrize("single", [False, True])
def test_convert_and_verify_accept_the_exported_file(cli, released, tmp_path, single):
    exported = tmp_path / "exported.pth.tar"
    assert cli("export", released, exported, *(["--single-process"] if single else [])).code == 0
    r = cli("inspect", exported, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["layout"] == "training" and r.json()["module_prefix"] is (not single)
    out = tmp_path / "conv"
    r = cli("convert", exported, out)  # with its verify against the exported file
    assert r.code == 0, r.stderr
    assert cli("convert", exported, tmp_path / "conv-online", "--encoder", "online",
               "--no-verify").code == 0


# -- folders: head initialised the way init_model does -----------------------------------------

def test_folder_without_head_from_gets_an_initialised_head(cli, released, tmp_path):
    folder = tmp_path / "converted"
    assert cli("convert", released, folder, "--no-verify").code == 0
    out = tmp_path / "init.pth.tar"
    r = cli("export", folder, out, "--proj-hidden", "96", "--proj-out", "32",
            "--num-prototypes", "40")
    assert r.code == 0, r.stderr
    assert "initialised" in r.stderr and "NOT trained" in r.stderr
    ck = _load(out)
    assert _head_sizes(ck) == (96, 32, 40)
    te = ck["target_encoder"]
    w = te["module.fc.fc2.weight"]
    assert 0.015 < float(w.std()) < 0.025 and float(w.abs().max()) <= 2.0
    assert torch.count_nonzero(te["module.fc.fc1.bias"]) == 0
    assert torch.equal(te["module.fc.bn1.running_var"], torch.ones(96))
    assert int(te["module.fc.bn1.num_batches_tracked"]) == 0
    bound = (1 / 32) ** 0.5
    assert float(ck["prototypes"].abs().max()) <= bound
    resume(out, TINY, 96, 32, 40)
    # seeded: the same command gives the same tensors
    again = tmp_path / "again.pth.tar"
    assert cli("export", folder, again, "--proj-hidden", "96", "--proj-out", "32",
               "--num-prototypes", "40").code == 0
    ck2 = _load(again)
    assert all(torch.equal(v, ck2["target_encoder"][k]) for k, v in te.items())


def test_folder_no_bn_head(cli, released, tmp_path):
    folder = tmp_path / "converted"
    assert cli("convert", released, folder, "--no-verify").code == 0
    out = tmp_path / "nobn.pth.tar"
    assert cli("export", folder, out, "--no-bn", "--single-process").code == 0
    ck = _load(out)
    assert not any(".bn" in k for k in ck["encoder"])
    hidden, dim_out, nproto = _head_sizes(ck, "")
    assert (hidden, dim_out, nproto) == (2048, 256, 1024)  # the original configs' defaults
    resume(out, TINY, hidden, dim_out, nproto, world_size=1, use_bn=False)


def test_head_sizes_against_a_carried_head_are_refused(cli, released, tmp_path):
    r = cli("export", released, tmp_path / "x.pth.tar", "--proj-out", "12")
    assert r.code == 2 and "proj-out 12" in r.stderr
    assert not (tmp_path / "x.pth.tar").exists()


# -- plan, safety, bad input ------------------------------------------------------------------

def test_dry_run_writes_nothing_and_shows_the_plan(cli, released, tmp_path):
    out = tmp_path / "dry.pth.tar"
    r = cli("export", released, out, "--dry-run")
    assert r.code == 0
    assert "Export plan" in r.stdout and "module.blocks.0.attn.qkv.weight" in r.stdout
    assert not out.exists() and list(tmp_path.glob(".dry*")) == []
    j = cli("export", released, out, "--dry-run", "--json", "--all-keys").json()
    assert j["dry_run"] is True and j["out"] is None
    assert [g["parameters"] for g in j["plan"]["optimizer"]["groups"]][2] == 1
    keys = {(t["entry"], t["key"]) for t in j["plan"]["tensors"]}
    assert ("encoder", "blocks.1.attn.qkv.weight") in keys


def test_existing_output_needs_force_and_force_replaces(cli, released, training, tmp_path):
    out = tmp_path / "o.pth.tar"
    out.write_bytes(b"keep me")
    r = cli("export", released, out)
    assert r.code == 2 and out.read_bytes() == b"keep me"
    assert cli("export", training, out, "--force", "--epoch", "3").code == 0
    assert _load(out)["epoch"] == 3


def test_a_failure_while_writing_leaves_nothing(monkeypatch, released, tmp_path):
    out = tmp_path / "o.pth.tar"
    out.write_bytes(b"old")
    real = torch.save

    def half_then_fail(obj, f, *a, **k):
        real({"partial": torch.zeros(10)}, f)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    from msn_cli.errors import OutputError

    with pytest.raises(OutputError):
        export(resolve_source(str(released)), out, force=True)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o.pth.tar")] == []


@pytest.mark.parametrize("case", ["junk", "html", "pickle-object", "no-config-folder",
                                  "online-on-released", "head-from-folder", "narrow-head",
                                  "config-fifo"])
def test_bad_input_is_one_line_and_exit_3(cli, released, tmp_path, case):
    out = tmp_path / "o.pth.tar"
    args: list = []
    if case == "junk":
        p = tmp_path / "junk.pth.tar"
        p.write_bytes(os.urandom(300))
        args = [p, out]
    elif case == "html":
        p = tmp_path / "page.pth.tar"
        p.write_text("<!DOCTYPE html><html>Not found</html>")
        args = [p, out]
    elif case == "pickle-object":
        p = tmp_path / "evil.pth.tar"
        torch.save({"target_encoder": {"x": torch.zeros(1)}, "prototypes": OrderedDict(a=Path("/"))}, p)
        args = [p, out]
    elif case == "no-config-folder":
        d = tmp_path / "folder"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"")
        args = [d, out]
    elif case == "config-fifo":  # a planted FIFO must not hang the read
        folder = tmp_path / "f"
        assert cli("convert", released, folder, "--no-verify").code == 0
        (folder / "config.json").unlink()
        os.mkfifo(folder / "config.json")
        args = [folder, out]
    elif case == "online-on-released":
        args = [released, out, "--encoder", "online"]
    elif case == "head-from-folder":
        folder = tmp_path / "f"
        assert cli("convert", released, folder, "--no-verify").code == 0
        args = [folder, out, "--head-from", folder]
    elif case == "narrow-head":
        wide = write_checkpoint(tmp_path / "wide.pth.tar", TINY_MULTIHEAD, "released")
        folder = tmp_path / "f"
        assert cli("convert", released, folder, "--no-verify").code == 0
        args = [folder, out, "--head-from", wide]
    r = cli("export", *args)
    assert r.code == 3, (r.code, r.stderr)
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert r.stdout == "" and not out.exists()


def test_folder_with_a_foreign_key_does_not_map_back(cli, released, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "f"
    assert cli("convert", released, folder, "--no-verify").code == 0
    sd = load_file(folder / "model.safetensors")
    sd["pooler.dense.weight"] = torch.zeros(2, 2)
    del sd["encoder.layer.1.attention.attention.key.bias"]
    save_file(sd, folder / "model.safetensors")
    r = cli("export", folder, tmp_path / "o.pth.tar")
    assert r.code == 3
    assert "pooler.dense.weight" in r.stderr and "key.bias" in r.stderr


def test_folder_heads_come_from_its_config(cli, tmp_path):
    src = write_checkpoint(tmp_path / "mh.pth.tar", TINY_MULTIHEAD, "released")
    folder = tmp_path / "f"
    assert cli("convert", src, folder, "--no-verify", "--num-heads", "2").code == 0
    assert json.loads((folder / "config.json").read_text())["num_attention_heads"] == 2
    plan = plan_export(resolve_source(str(folder)), head=HeadOptions(8, 8, 8))
    assert plan.arch.num_heads == 2
    r = cli("export", folder, tmp_path / "o.pth.tar", "--num-heads", "4")
    assert r.code == 2 and "config.json" in r.stderr


def test_model_name_from_the_family(tmp_path):
    vits = Architecture(384, 12, 6, 1536, 16, 224)
    src = write_checkpoint(tmp_path / "s.pth.tar", vits, "released", head=False)
    plan = plan_export(resolve_source(str(src)))
    assert plan.model_names == ["deit_small"]
    assert plan.head.origin == "initialised"  # a file without fc.* gets an initialised head


def test_output_that_is_a_folder_is_refused_and_stale_temporaries_go(cli, released, tmp_path):
    d = tmp_path / "somefolder"
    d.mkdir()
    r = cli("export", released, d)
    assert r.code == 2 and "is a folder" in r.stderr
    out = tmp_path / "o.pth.tar"
    stale = tmp_path / ".o.pth.tar.msn-tmp-999999-abcd"  # a run killed with -9
    stale.write_bytes(b"half")
    assert cli("export", released, out).code == 0
    assert not stale.exists() and out.exists()
    assert not (tmp_path / ".o.pth.tar.msn-lock").exists()


def test_the_groups_are_what_torch_adamw_writes_for_the_original_layout(released, tmp_path):
    """The table-built optimizer state against the one torch itself writes for an AdamW built
    the original way (keys a newer torch adds on its own aside)."""
    out = tmp_path / "o.pth.tar"
    export(resolve_source(str(released)), out)
    ck = _load(out)
    hidden, dim_out, nproto = _head_sizes(ck)
    model = OriginalMSN(TINY, hidden, dim_out)
    theirs = original_opt(model, nn.Parameter(torch.zeros(nproto, dim_out))).state_dict()
    extra = {"decoupled_weight_decay"}
    assert ck["opt"]["state"] == theirs["state"] == {}
    for mine, ref in zip(ck["opt"]["param_groups"], theirs["param_groups"], strict=True):
        assert mine == {k: v for k, v in ref.items() if k not in extra}


def test_the_read_back_catches_a_changed_bit(tmp_path):
    from msn_cli.conversion.export.write import readback_check
    from msn_cli.errors import CheckpointError

    meant = {"encoder": {"a": torch.arange(10.0)}, "opt": {"state": {}, "param_groups": []},
             "prototypes": torch.zeros(2, 2), "target_encoder": {"a": torch.arange(10.0)},
             "epoch": 0, "loss": None, "batch_size": None, "world_size": None, "lr": 1e-3,
             "temperature": None}
    path = tmp_path / "x.pth.tar"
    torch.save(meant, path)
    readback_check(path, meant)
    flipped = torch.arange(10.0)
    flipped.view(torch.int32)[9] ^= 1  # the lowest bit of one value
    with pytest.raises(CheckpointError, match="target_encoder a differs"):
        readback_check(path, {**meant, "target_encoder": {"a": flipped}})
    with pytest.raises(CheckpointError, match="epoch differs"):
        readback_check(path, {**meant, "epoch": 1})


def test_names_and_urls_resolve_like_convert(cli, tmp_path, monkeypatch):
    """A released name through the mirror and the cache (a wrong file is refused, as convert
    refuses it), a URL as the source and a name as --head-from."""
    from msn_cli.original.variants import VARIANTS
    from tests.http_server import FileServer

    name = VARIANTS["vits16"].filename
    ckpt = write_checkpoint(tmp_path / "mirror" / name, TINY, "released")
    with FileServer(root=tmp_path / "mirror") as srv:
        monkeypatch.setenv("MSN_BASE_URL", srv.url("/"))
        r = cli("export", "vits16", tmp_path / "o.pth.tar")
        assert r.code == 3 and "fetched as 'vits16'" in r.stderr
        assert not (tmp_path / "o.pth.tar").exists()
        r = cli("export", srv.url("/" + name), tmp_path / "u.pth.tar", "--json")
        assert r.code == 0, r.stderr
        assert r.json()["plan"]["source"]["kind"] == "url"
        folder = tmp_path / "f"
        assert cli("convert", ckpt, folder, "--no-verify").code == 0
        r = cli("export", folder, tmp_path / "h.pth.tar", "--head-from", srv.url("/" + name))
        assert r.code == 0, r.stderr
    assert torch.equal(_load(tmp_path / "h.pth.tar")["prototypes"], _load(ckpt)["prototypes"])


def test_half_precision_folder_gets_float32_prototypes_and_resumes(cli, released, tmp_path):
    folder = tmp_path / "f16"
    assert cli("convert", released, folder, "--dtype", "float16", "--no-verify").code == 0
    out = tmp_path / "o.pth.tar"
    r = cli("export", folder, out, "--proj-hidden", "64", "--proj-out", "16",
            "--num-prototypes", "8")
    assert r.code == 0, r.stderr
    assert "float16, kept as stored" in r.stderr
    ck = _load(out)
    assert ck["target_encoder"]["module.blocks.0.attn.qkv.weight"].dtype == torch.float16
    assert ck["prototypes"].dtype == torch.float32  # replaces a float32 parameter's data
    resume(out, TINY, 64, 16, 8)


def test_a_hub_repo_id_goes_through_snapshot_download(cli, released, tmp_path, monkeypatch):
    import huggingface_hub

    from msn_cli.transfer import hub_fetch

    folder = tmp_path / "snapshot"
    assert cli("convert", released, folder, "--no-verify").code == 0
    from tests.test_download_hub import FakeRepo

    repo = FakeRepo(folder, {p.name: p.read_bytes() for p in folder.iterdir()})
    repo.install(monkeypatch)
    out = tmp_path / "o.pth.tar"
    r = cli("export", "facebook/vit-msn-small", out, "--head-from", released)
    assert r.code == 0, r.stderr
    assert {c[0] for c in repo.calls} == {"facebook/vit-msn-small"}
    assert sorted(repo.fetched) == ["config.json", "model.safetensors"]  # tests/test_download_hub.py
    asked = len(repo.calls)
    src = _load(released)
    assert all(torch.equal(_load(out)["target_encoder"][k], v)
               for k, v in src["target_encoder"].items())
    # a missing local file is still a missing file, not a Hub look-up
    assert cli("export", "some/file.pth.tar", tmp_path / "x.pth.tar").code == 3

    def failing(repo_id, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    monkeypatch.setattr(hub_fetch, "list_files", failing)
    r = cli("export", "facebook/vit-msn-small", tmp_path / "y.pth.tar")
    assert r.code == 4 and "cannot fetch facebook/vit-msn-small" in r.stderr
    assert len(repo.calls) == asked


def test_a_damaged_head_from_is_refused(cli, released, tmp_path):
    folder = tmp_path / "f"
    assert cli("convert", released, folder, "--no-verify").code == 0
    data = bytearray(released.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor: only the CRC-32 check sees it
    damaged = tmp_path / "damaged.pth.tar"
    damaged.write_bytes(bytes(data))
    r = cli("export", folder, tmp_path / "o.pth.tar", "--head-from", damaged)
    assert r.code == 3 and "damaged" in r.stderr
    assert not (tmp_path / "o.pth.tar").exists()


def test_a_decoy_safetensors_file_is_not_what_a_folder_exports(cli, released, tmp_path):
    """Only what from_pretrained loads (model.safetensors) is read, never a glob of *.safetensors."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "converted"
    assert cli("convert", released, folder, "--no-verify").code == 0
    decoy = {k: torch.zeros_like(v) for k, v in load_file(folder / "model.safetensors").items()}
    save_file(decoy, folder / "zz-decoy.safetensors")
    out = tmp_path / "back.pth.tar"
    r = cli("export", folder, out, "--head-from", released)
    assert r.code == 0, r.stderr
    ck, src = _load(out), _load(released)
    for k, v in src["target_encoder"].items():
        if not k.startswith("module.fc."):
            assert torch.equal(ck["target_encoder"][k], v), k
