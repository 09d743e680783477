"""The card tells Meta's releases from own training runs, describes a run, and takes --license."""

from __future__ import annotations

import copy
import json

import pytest

from msn_cli.dev.synth import run_config, write_run_config
from msn_cli.errors import UsageError
from msn_cli.hf.card import build_card, check_license, origin
from msn_cli.hf.manifest import MANIFEST, read_manifest, write_manifest
from msn_cli.original.runconfig import FIELD_BY_KEY, read_run_config
from tests.conftest import verified_source_path
from tests.test_card import as_released, table

LOCAL = ("/datasets01/", "imagenet_full_size/061417/", "/checkpoint/msn_logs/", "/home/me/runs/old.pth.tar")


@pytest.fixture
def manifest(tmp_path_factory):
    return read_manifest(verified_source_path(tmp_path_factory))


@pytest.fixture
def training(tmp_path):
    cfg = run_config("deit_small", epochs=300, num_proto=2048, patch_drop=0.2, lr=0.00125,
                     read_checkpoint="/home/me/runs/old.pth.tar")
    return read_run_config(write_run_config(tmp_path, cfg)).training()


def own_trained(manifest: dict, training: dict | None, shapes: str | None = "vits16") -> dict:
    """What convert records for a checkpoint of an own run (training layout, maybe its config)."""
    m = as_released(manifest, shapes) if shapes else copy.deepcopy(manifest)
    m["source"].update(kind="path", name=None, url=None, spec="msn-latest.pth.tar",
                       path="/home/me/runs/msn-latest.pth.tar", layout="training")
    if training is not None:
        m["training"] = training
    return m


def _section(card: str, title: str) -> str:
    return card.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _meta(card: str):
    from huggingface_hub import ModelCard

    return ModelCard(card).data


def test_own_training_run_is_never_presented_as_metas_release(manifest, training):
    m = own_trained(manifest, training)  # the shapes of a deit_small run are those of vits16
    card = build_card(m, "me/my-msn")
    title = card.split("\n# ", 1)[1].splitlines()[0]
    assert title == "MSN ViT-S/16 backbone (own training run, deit_small)"
    assert "vits16" not in title and "800 epochs" not in card
    assert "facebook/vit-msn" not in card and "Meta's own upload" not in card
    assert "**This is not one of Meta's released MSN checkpoints**" in card
    assert "Origin: **not one of Meta's released checkpoints**" in _section(card, "Provenance")
    assert "as released" not in card
    assert "these weights are not Meta's" in _section(card, "Architecture")
    assert "Meta's official uploads" not in _section(card, "License")
    assert "trained with that code" in _section(card, "License")
    assert _meta(card).datasets is None  # its data are unknown: never claimed to be ImageNet
    assert origin(m).kind == "own"


def test_training_section_is_the_runs_config(manifest, training):
    card = build_card(own_trained(manifest, training), "me/my-msn")
    rows = table(card, "Group")
    assert len(rows) == len(training)
    by_key = {r[1].rsplit("(`", 1)[1].rstrip("`)"): r[2] for r in rows}
    assert by_key["epochs"] == "300" and by_key["num_proto"] == "2048"
    assert by_key["patch_drop"] == "0.2" and by_key["lr"] == "0.00125"
    assert by_key["model_name"] == "deit_small" and by_key["use_bn"] == "yes"
    assert by_key["batch_size"] == "64" and by_key["rand_size"] == "224" and by_key["focal_views"] == "10"
    for key, value in training.items():
        label = FIELD_BY_KEY[key].label
        assert any(r[1].startswith(label) for r in rows), key
        assert value is not None


def test_local_paths_are_never_published(manifest, training, tmp_path):
    """Not from the config, and not from a manifest someone edited to hold them."""
    m = own_trained(manifest, training)
    m["training"].update(root_path="/datasets01/", image_folder="imagenet_full_size/061417/",
                         folder="/checkpoint/msn_logs/", read_checkpoint="/home/me/runs/old.pth.tar")
    m["training"]["model_name"] = "/home/me/runs/old.pth.tar"
    card = build_card(m, "me/my-msn")
    for local in LOCAL:
        assert local not in card
    assert "| Model constructor" not in card  # the path-like model name is dropped, not shown
    from msn_cli.transfer.push import public_manifest

    published = json.loads(public_manifest(m))
    text = json.dumps(published)
    for local in (*LOCAL, "/home/me/runs"):
        assert local not in text
    assert published["training"]["epochs"] == 300 and "root_path" not in published["training"]


def test_own_run_datasets_come_only_from_the_publishers_front_matter(manifest, training, tmp_path):
    own = own_trained(manifest, training)
    mine = tmp_path / "card.md"
    mine.write_text("---\ndatasets:\n- my-org/street-photos\n---\n\n# My MSN run\n")
    assert _meta(build_card(own, "me/x", card_path=mine)).datasets == ["my-org/street-photos"]
    # for Meta's release the card's own claim wins
    assert _meta(build_card(as_released(manifest), "me/x", card_path=mine)).datasets == ["imagenet-1k"]


def test_own_checkpoint_without_its_config(manifest):
    m = own_trained(manifest, None)
    card = build_card(m, "me/my-msn")
    assert "MSN ViT-S/16 backbone (own training run)" in card
    assert "was not given when this model was converted" in _section(card, "Training")
    assert "not one of Meta's released" in card


def test_shapes_alone_never_make_a_release(manifest):
    """A local file with the shapes of vitb16: msn cannot tell whose weights these are."""
    m = as_released(manifest, "vitb16")
    m["source"].update(kind="path", name=None, url=None)
    m["verify"]["source"] = {"released": None, "evidence": None}  # verify saw a local file
    card = build_card(m, "o/n")
    assert "(vitb16, 600 epochs)" not in card and "facebook/vit-msn-base" not in card
    assert "**not identified as one of Meta's released checkpoints**" in card
    assert "not identified (same shapes as the released vitb16" in _section(card, "Architecture")
    assert origin(m).kind == "unknown"
    assert "Whether these weights are Meta's" in _section(card, "License")
    # a mirror's URL is not Meta's either
    m["source"].update(kind="url", url="https://mirror.example/msn/vitb16_600ep.pth.tar")
    assert origin(m).kind == "unknown"


@pytest.mark.parametrize("how", ["name", "url"])
def test_a_release_is_known_by_its_name_or_its_canonical_url(manifest, how):
    m = as_released(manifest, "vitl7")
    if how == "url":
        m["source"].update(kind="url", name=None)
    o = origin(m)
    assert o.kind == "released" and o.variant is not None and o.variant.name == "vitl7"
    card = build_card(m, "o/n")
    assert "# MSN ViT-L/7 (vitl7, 200 epochs)" in card
    assert "Origin: Meta's released checkpoint `vitl7`" in card
    assert ("released name" if how == "name" else "dl.fbaipublicfiles.com/msn/vitl7_200ep.pth.tar") in \
        _section(card, "Provenance")
    assert "for 200 epochs" in _section(card, "Training")
    assert _meta(card).datasets == ["imagenet-1k"]


def test_a_training_file_fetched_by_a_released_name_is_not_a_release(manifest, training):
    m = as_released(manifest, "vits16")
    m["source"]["layout"] = "training"
    assert origin(m).kind == "own"
    m = as_released(manifest, "vits16")
    m["training"] = training
    assert origin(m).kind == "own"


def test_license_default_and_choice(manifest, training):
    m = own_trained(manifest, training)
    default = build_card(m, "me/x")
    assert _meta(default).license == "cc-by-nc-4.0"
    assert "CC BY-NC 4.0" in _section(default, "License")
    chosen = build_card(m, "me/x", license="Apache-2.0")
    assert _meta(chosen).license == "apache-2.0"
    assert "set its license to `apache-2.0`" in _section(chosen, "License")
    released = build_card(as_released(manifest), "me/x", license="mit")
    assert _meta(released).license == "mit" and "`mit`" in _section(released, "License")


@pytest.mark.parametrize("bad", ["", "Apache 2.0", "../etc", "-mit", "a" * 65, "cc by", "mit\nx: 1"])
def test_license_id_shape_is_checked(bad):
    with pytest.raises(UsageError, match="not a license id"):
        check_license(bad)


@pytest.mark.parametrize("good", ["mit", "apache-2.0", "cc-by-nc-4.0", "other", "openrail++", "llama3.1"])
def test_license_ids_the_hub_uses(good):
    assert check_license(good) == good


def test_push_license_option(cli, hub, folder):
    r = cli("push", folder, "my-org/vit-msn-tiny", "--dry-run", "--json", "--license", "MIT")
    assert r.code == 0, r.stderr
    out = r.json()
    assert out["license"] == "mit" and "\nlicense: mit\n" in out["card"]
    r = cli("push", folder, "my-org/vit-msn-tiny", "--dry-run", "--license", "not a license")
    assert r.code == 2 and "not a license id" in r.stderr
    assert hub.requests == []
    r = cli("push", folder, "my-org/vit-msn-tiny", "--dry-run", "--json")
    assert r.json()["license"] == "cc-by-nc-4.0"


def test_push_publishes_the_training_record_without_paths(cli, hub, folder, training):
    from msn_cli.transfer.push import plan_push

    m = read_manifest(folder)
    m["source"]["layout"] = "training"
    m["training"] = {**training, "root_path": "/datasets01/", "folder": "/checkpoint/msn_logs/"}
    write_manifest(folder, m)
    plan = plan_push(folder, "me/run")
    published = next(f for f in plan.files if f.path == MANIFEST).data
    assert published is not None
    text = published.decode()
    for local in LOCAL:
        assert local not in text and local not in plan.card
    assert json.loads(text)["training"] == training
    assert "own-trained" in plan.commit_message and "own training run, deit_small" in plan.card
