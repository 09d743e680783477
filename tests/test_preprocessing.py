"""Preprocessing: MSN's evaluation transform, its transformers processor, and verify's checks,
on real photographs (the ones msn ships, from scikit-image's data module)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from msn_cli.dev.synth import TINY
from msn_cli.original import preprocess
from msn_cli.original.architecture import Architecture
from msn_cli.verify.photos import (
    PHOTOS_DIR,
    PIXEL_ATOL,
    Photo,
    bundled_photos,
    compare_photo,
    load_processor,
)
from tests import torchvision_fixture
from tests.test_verify import check, refresh_hashes, run_verify

# 224 px like every released model (the odd crop margin of the 640x427 photo shows at 224),
# tiny otherwise.
TINY224 = Architecture(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=256,
                       patch_size=16, image_size=224)


def _have_torchvision() -> bool:
    """Whether torchvision imports here (``make torchvision`` sets MSN_EXPECT_TORCHVISION:
    there, a missing one is a failure). Where it does not, the tests compare with its outputs
    stored in tests/fixtures (tests/torchvision_fixture.py)."""
    try:
        import torchvision.transforms  # noqa: F401
    except Exception as e:
        if os.environ.get("MSN_EXPECT_TORCHVISION"):
            pytest.fail(f"MSN_EXPECT_TORCHVISION is set but torchvision does not import: {e}")
        return False
    return True


class StoredProcessor:
    """transformers' torchvision-backend processor as the fixture recorded it: the
    ``pixel_values`` it gave for each bundled photo, looked up by the photo's image."""

    def __init__(self, photos: list[Photo]) -> None:
        stored = torchvision_fixture.load().processor
        self.pixels = {id(p.image): stored[i] for i, p in enumerate(photos)}

    def __call__(self, images: Image.Image, return_tensors: str) -> dict[str, Any]:
        import torch

        return {"pixel_values": torch.from_numpy(self.pixels[id(images)])[None]}


PROCESSORS = ["pil", "torchvision", "torchvision-stored"]


def _processor(folder: Path, backend: str, photos: list[Photo]) -> tuple[Any, str]:
    """The folder's processor with a given backend (5.x: ``backend=``, 4.57: ``use_fast``), and
    the backend's name; skips when that backend cannot be had here. ``torchvision-stored``:
    the torchvision backend's outputs on ``photos`` from the fixture."""
    import transformers
    from transformers import AutoImageProcessor

    from msn_cli.verify.photos import backend_name

    if backend == "torchvision-stored":
        return StoredProcessor(photos), "torchvision"
    if backend == "torchvision" and not _have_torchvision():
        pytest.skip("torchvision is not installed (or does not import) here")
    kw = ({"backend": backend} if int(transformers.__version__.split(".")[0]) >= 5
          else {"use_fast": backend == "torchvision"})
    proc = AutoImageProcessor.from_pretrained(str(folder), **kw)
    if backend_name(proc) != backend:
        pytest.skip(f"the {backend} backend is not available here ({type(proc).__name__})")
    return proc, backend


@pytest.fixture
def msn_folder(tmp_path):
    """A folder holding only the default preprocessor_config.json at 224 px."""
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(preprocess.msn_processor_config(224)))
    return tmp_path


# ---------------------------------------------------------------------------------------------
# The independent transform
# ---------------------------------------------------------------------------------------------

def test_geometry_of_the_odd_margin_photo():
    """640x427 -> 383x256; margin 159: torchvision rounds 79.5 to 80, transformers floors to 79."""
    g = preprocess.eval_geometry(640, 427, 224)
    assert g.resized == (383, 256)
    assert (g.left, g.top) == (80, 16) and (g.floor_left, g.floor_top) == (79, 16)
    assert g.odd_margin
    # half-way cases round to the even neighbour, so a margin of 1 mod 4 agrees with floor
    assert preprocess.crop_offset(224 + 157, 224) == 78 == preprocess.floor_offset(224 + 157, 224)
    assert not preprocess.eval_geometry(451, 300, 224).odd_margin  # 384x256: margin 160
    assert preprocess.eval_geometry(300, 451, 224).resized == (256, 384)
    assert preprocess.eval_resize_size(224) == 256 and preprocess.eval_resize_size(384) == 439


def test_transform_shape_and_statistics():
    for photo in bundled_photos():
        x = preprocess.msn_eval_transform(photo.image, 224)
        assert x.shape == (3, 224, 224) and x.dtype == np.float32
        # normalised: the ImageNet mean maps near 0, the 0..255 range to about -2.1..2.6
        assert -2.2 < float(x.min()) and float(x.max()) < 2.7


def test_transform_is_pil_bilinear_then_rounded_crop():
    """Built by hand on one photo, step by step as torchvision documents it."""
    photo = bundled_photos()[0]  # rocket, 640x427
    resized = photo.image.resize((383, 256), resample=Image.Resampling.BILINEAR)
    crop = np.asarray(resized, dtype=np.float32)[16:240, 80:304] / 255
    want = (crop - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    got = preprocess.msn_eval_transform(photo.image, 224)
    assert np.array_equal(got, want.transpose(2, 0, 1))
    floored = preprocess.msn_eval_transform(photo.image, 224, floor_crop=True)
    assert np.array_equal(floored[:, :, 1:], got[:, :, :-1])  # the same crop, one column over


def test_small_images_are_padded_like_torchvision():
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    x = preprocess.msn_eval_transform(img, 224)  # resized to 292x146 (> 224 wide), then padded
    assert x.shape == (3, 224, 224)


@pytest.mark.parametrize("size", torchvision_fixture.SIZES)
def test_independent_transform_equals_torchvision(size: int) -> None:
    """Bit for bit against torchvision's own Resize/CenterCrop/ToTensor/Normalize, where a
    torchvision that imports beside the installed torch can be had."""
    if not _have_torchvision():
        pytest.skip("torchvision is not installed (or does not import) here")
    tv = torchvision_fixture.torchvision_transform(size)
    for photo in bundled_photos():
        want = tv(photo.image).numpy()
        got = preprocess.msn_eval_transform(photo.image, size)
        assert np.array_equal(got, want), photo.name


@pytest.mark.parametrize("size", torchvision_fixture.SIZES)
def test_independent_transform_equals_stored_torchvision(size: int) -> None:
    """Bit for bit against torchvision's outputs stored by ``make torchvision`` (float32 as
    torchvision gave them), everywhere."""
    stored = torchvision_fixture.load()
    for i, photo in enumerate(bundled_photos()):
        got = preprocess.msn_eval_transform(photo.image, size)
        assert np.array_equal(got, stored.transform[(size, i)]), photo.name


def test_stored_torchvision_outputs_are_of_these_photos_and_this_configuration() -> None:
    """Outputs made from other photos, or by a processor loaded from another configuration,
    prove nothing about these: ``make torchvision`` makes them again."""
    stored = torchvision_fixture.load()
    record = stored.record
    assert record["photos"] == [p.name for p in bundled_photos()], "run make torchvision"
    assert record["photo_sha256"] == torchvision_fixture.photo_hashes(), "run make torchvision"
    assert record["processor_config"] == preprocess.msn_processor_config(
        torchvision_fixture.PROCESSOR_SIZE), "run make torchvision"
    assert {"torch", "torchvision", "transformers"} <= set(record["versions"])
    for (size, _), a in stored.transform.items():
        assert a.dtype == np.float32 and a.shape == (3, size, size)
    for a in stored.processor:
        assert a.dtype == np.float32 and a.shape == (3, 224, 224)


# ---------------------------------------------------------------------------------------------
# transformers' processor against it, per backend
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", PROCESSORS)
def test_processor_matches_the_evaluation_transform(msn_folder: Path, backend: str) -> None:
    photos = bundled_photos()
    proc, backend = _processor(msn_folder, backend, photos)
    rows = {}
    for photo in photos:
        res = compare_photo(proc, backend, photo, "msn", 224)
        rows[photo.name] = res.row
        assert res.ok, res.row
    for name in ("chelsea.png", "retina.jpg"):
        assert rows[name]["max_abs_pixel_diff"] <= PIXEL_ATOL
        assert rows[name]["status"] in ("identical", "within one 8-bit level")
    if backend == "pil":  # PIL's resize is the one torchvision calls on a PIL image
        assert rows["chelsea.png"]["status"] == "identical"


@pytest.mark.parametrize("backend", PROCESSORS)
def test_odd_margin_640x427_is_one_pixel_off(msn_folder: Path, backend: str) -> None:
    """The named case: transformers floors the crop offset (79), torchvision rounds it (80)."""
    photos = bundled_photos()
    proc, backend = _processor(msn_folder, backend, photos)
    for photo in photos[:2]:  # rocket.jpg, landscape and rotated
        res = compare_photo(proc, backend, photo, "msn", 224)
        assert res.row["geometry"]["odd_margin"] is True
        assert res.row["status"].startswith("one pixel off")
        assert res.row["max_abs_pixel_diff"] > 1.0  # a real difference, not rounding
        assert res.row["max_abs_diff_to_floored_crop"] <= PIXEL_ATOL
        assert 0.03 < res.row["mean_abs_pixel_diff"] < 0.08


def test_seed_processor_is_far_from_the_evaluation_transform(tmp_path):
    """What the check would say of the seed's squash if it were held to MSN's transform."""
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(preprocess.seed_processor_config(224)))
    proc, backend = load_processor(tmp_path)
    for photo in bundled_photos():
        res = compare_photo(proc, backend, photo, "msn", 224)
        assert not res.ok and res.row["status"] == "differs"
        assert res.row["mean_abs_pixel_diff"] > 0.1
        assert compare_photo(proc, backend, photo, "seed", 224).ok  # it is the seed's transform


# ---------------------------------------------------------------------------------------------
# convert --preprocessing and verify's checks
# ---------------------------------------------------------------------------------------------

def _convert(cli, make_ckpt, tmp_path, arch=TINY, *extra, name="out"):
    ck = make_ckpt(arch)
    out = tmp_path / name
    r = cli("convert", ck, out, "--json", *extra)
    assert r.code == 0, r.stderr
    return out, r.json()


def test_default_is_msn_and_recorded_with_why(cli, make_ckpt, tmp_path):
    out, _ = _convert(cli, make_ckpt, tmp_path, TINY224)
    m = json.loads((out / "msn_manifest.json").read_text())
    assert m["preprocessing"]["name"] == "msn"
    assert m["preprocessing"]["processor"] == "BitImageProcessor"
    assert "evaluation" in m["preprocessing"]["why"]
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["size"] == {"shortest_edge": 256} and pre["crop_size"] == {"height": 224, "width": 224}
    v = {c["name"]: c for c in m["verify"]["checks"]}
    p = v["preprocessing"]
    assert p["passed"] is True and p["preprocessing"] == "msn" and p["photos"] == 4
    assert p["backend"] in ("pil", "torchvision")
    # the odd-margin photos are reported; their effect on the converted model's output costs
    # forward passes at the native size, so verify measures it only with --effect
    assert "one pixel off" in p["detail"] and "cls cosine" not in p["detail"]
    assert "cls_min_cosine" not in p


def test_preprocessing_rows_give_pixels_and_output_effect(cli, make_ckpt, tmp_path):
    out, _ = _convert(cli, make_ckpt, tmp_path, TINY224)
    r, rep = run_verify(cli, out)  # the effect costs forward passes: only when asked for
    assert r.code == 0
    assert not any("effect" in row for row in check(rep, "preprocessing")["rows"])
    r, rep = run_verify(cli, out, "--effect")
    assert r.code == 0
    p = check(rep, "preprocessing")
    assert "cls cosine" in p["detail"] and 0.9 < p["cls_min_cosine"] < 1.0 and p["cls_max_abs_err"] > 0
    rows = {row["photo"]: row for row in p["rows"]}
    odd = rows["rocket.jpg"]
    assert odd["status"].startswith("one pixel off") and odd["geometry"]["left"] == 80
    e = odd["effect"]
    assert e["cls_cosine"] < 1.0 and e["tokens_min_cosine"] <= e["cls_cosine"] + 1e-9
    assert e["cls_max_abs_err"] > 0 and e["tokens_max_abs_err"] >= e["cls_max_abs_err"]
    if odd["backend"] == "pil":
        assert rows["chelsea.png"]["effect"]["cls_max_abs_err"] == 0.0  # same pixels, same output


def test_seed_choice(cli, make_ckpt, tmp_path):
    out, res = _convert(cli, make_ckpt, tmp_path, TINY, "--preprocessing", "seed")
    m = json.loads((out / "msn_manifest.json").read_text())
    assert m["preprocessing"]["name"] == "seed"
    assert "facebook/vit-msn" in m["preprocessing"]["why"]
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "ViTImageProcessor"
    assert pre["size"] == {"height": TINY.image_size, "width": TINY.image_size}
    assert res["verify"]["passed"] is True
    p = next(c for c in res["verify"]["checks"] if c["name"] == "preprocessing")
    assert p["preprocessing"] == "seed" and "seed's 224x224 resize" in p["detail"]


def test_unknown_preprocessing_is_a_usage_error(cli, make_ckpt, tmp_path):
    r = cli("convert", make_ckpt(TINY), tmp_path / "out", "--preprocessing", "squash")
    assert r.code == 2 and "--preprocessing squash" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_processor_that_differs_fails_the_check(cli, make_ckpt, tmp_path):
    """Bicubic instead of bilinear: the config check names it, the photos show it."""
    out, _ = _convert(cli, make_ckpt, tmp_path, TINY224, "--no-verify")
    p = out / "preprocessor_config.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "resample": 3}))
    refresh_hashes(out)
    r, rep = run_verify(cli, out)
    assert r.code == 1
    pre = check(rep, "preprocessing")
    assert pre["passed"] is False and "FAILED on" in pre["detail"]
    assert all(row["status"] == "differs" for row in pre["rows"])
    assert check(rep, "parity")["passed"] is True


def test_processors_that_cannot_be_imported_give_a_skipped_row(cli, make_ckpt, tmp_path,
                                                             monkeypatch):
    """A torchvision that does not match torch breaks every transformers image processor."""
    import transformers

    out, _ = _convert(cli, make_ckpt, tmp_path, TINY, "--no-verify")

    def broken(*a, **k):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", broken)
    r, rep = run_verify(cli, out, "--image", PHOTOS_DIR / "chelsea.png")
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    for name in ("preprocessing", "image"):
        c = check(rep, name)
        assert c["passed"] is None and "cannot load image processors" in c["detail"]
        assert "torchvision::nms" in c["detail"]


def test_image_end_to_end(cli, make_ckpt, tmp_path):
    out, _ = _convert(cli, make_ckpt, tmp_path, TINY224, "--no-verify")
    photo = tmp_path / "wide.png"
    Image.open(PHOTOS_DIR / "chelsea.png").save(photo)
    r, rep = run_verify(cli, out, "--image", photo)
    assert r.code == 0, r.stderr
    img = check(rep, "image")
    assert img["passed"] is True and img["preprocessing"] == "msn"
    assert img["model_max_abs_err"] <= img["model_allowed"]
    if img["backend"] == "pil":  # an even margin: the same pixels, so the same output
        assert img["pixels"] == "identical" and img["end_to_end_cls_cosine"] > 0.99999
    # the --image photo is among the preprocessing check's photos too
    assert any(row["photo"] == "wide.png" for row in check(rep, "preprocessing")["rows"])


def test_image_check_fails_with_wrong_weights(cli, make_ckpt, tmp_path):
    """End to end runs the independent reference on the source: a perturbed weight shows."""
    from tests.test_verify import edit_weights

    out, _ = _convert(cli, make_ckpt, tmp_path, TINY, "--no-verify")

    def poke(sd):
        sd["encoder.layer.0.output.dense.weight"][0, 0] += 0.5

    edit_weights(out, poke)
    r, rep = run_verify(cli, out, "--image", PHOTOS_DIR / "rocket.jpg")
    assert r.code == 1
    assert check(rep, "image")["passed"] is False
    assert check(rep, "preprocessing")["passed"] is True  # the pixels are right


def test_against_notes_a_preprocessing_difference(cli, make_ckpt, tmp_path):
    ck = make_ckpt(TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("convert", ck, a, "--no-verify", "-q").code == 0
    assert cli("convert", ck, b, "--no-verify", "-q", "--preprocessing", "seed").code == 0
    r, rep = run_verify(cli, a, "--against", b)
    assert r.code == 0, r.stderr
    assert check(rep, "against")["passed"] is True
    assert any("image processor differs" in n and "ViTImageProcessor" in n for n in rep["notes"])
    r, rep = run_verify(cli, b, "--against", b)
    assert not any("image processor" in n for n in rep["notes"])


def test_an_image_that_is_a_fifo_or_a_bomb_is_one_line_exit_3(cli, make_ckpt, tmp_path):
    """--image is read as a regular file only (a FIFO would block) within PIL's pixel limit."""
    from tests.conftest import run_msn_process

    out, _ = _convert(cli, make_ckpt, tmp_path, TINY, "--no-verify")
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    r = run_msn_process("verify", out, "--image", fifo, "--no-record", timeout=240)
    assert r.returncode == 3 and "not a regular file" in r.stderr and "Traceback" not in r.stderr
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # 400 Mpx: over PIL's limit, a few kB on disk
    r, _ = run_verify(cli, out, "--image", bomb)
    assert r.code == 3 and "cannot read the image" in r.stderr and "bug in msn" not in r.stderr
