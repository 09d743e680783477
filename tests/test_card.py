"""The model card push publishes: metadata, numbers taken from the manifest, and a usage snippet that runs."""

from __future__ import annotations

import copy
import re

import pytest

from msn_cli.errors import UsageError
from msn_cli.hf.card import build_card
from msn_cli.hf.manifest import read_manifest
from tests.conftest import copy_verified, verified_source_path


@pytest.fixture
def manifest(tmp_path_factory):
    return read_manifest(verified_source_path(tmp_path_factory))


def as_released(manifest: dict, name: str = "vitb16") -> dict:
    """The manifest of Meta's release ``name`` that msn verify saw fetched by its name (shapes
    from the registry)."""
    from msn_cli.original.variants import VARIANTS

    v = VARIANTS[name]
    m = copy.deepcopy(manifest)
    m["variant"] = name
    m["architecture"].update(hidden_size=v.hidden_size, num_layers=v.num_layers, num_heads=v.num_heads,
                             head_dim=v.hidden_size // v.num_heads, intermediate_size=v.intermediate_size,
                             patch_size=v.patch_size, image_size=v.image_size)
    m["source"].update(kind="variant", name=name, spec=name, url=v.url(), layout="released")
    m["verify"]["source"] = {"released": name, "evidence": "name"}
    return m


def code_blocks(card_text: str, language: str = "python") -> list[str]:
    """The fenced code blocks of a card in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", card_text, re.DOTALL)


def table(card: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``first_header``."""
    lines = card.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_metadata_is_what_the_hub_reads(manifest):
    from huggingface_hub import ModelCard

    data = ModelCard(build_card(as_released(manifest), "my-org/vit-msn-tiny")).data
    assert data.license == "cc-by-nc-4.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-feature-extraction"
    assert set(data.tags) == {"vision", "vit", "msn", "self-supervised"}
    assert data.datasets == ["imagenet-1k"]


def test_license_section_mentions_the_official_apache_marking(manifest):
    card = build_card(as_released(manifest), "o/n")
    section = card.split("## License", 1)[1].split("##", 1)[0]
    assert "CC BY-NC 4.0" in section and "apache-2.0" in section


def test_architecture_table_comes_from_the_manifest(manifest):
    card = build_card(manifest, "o/n")
    rows = _arch_rows(card)
    a = manifest["architecture"]
    assert rows["Hidden size"] == str(a["hidden_size"])
    assert rows["Layers"] == str(a["num_layers"])
    assert rows["Attention heads"].startswith(f"{a['num_heads']} (head size {a['head_dim']})")
    assert rows["MLP size"] == str(a["intermediate_size"])
    assert rows["Patch size"] == str(a["patch_size"])
    grid = a["image_size"] // a["patch_size"]
    assert rows["Image size"] == f"{a['image_size']} ({grid}x{grid} patches + cls token)"
    assert rows["Parameters"] == f"{manifest['parameters']:,}"
    assert rows["Weights dtype"] == manifest["dtype"]


def _arch_rows(card: str) -> dict[str, str]:
    section = card.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1]
    return rows


def test_provenance_has_source_hash_tool_version_and_date_but_no_local_path(manifest):
    card = build_card(manifest, "o/n")
    section = card.split("## Provenance", 1)[1].split("\n## ", 1)[0]
    assert manifest["source"]["sha256"] in section
    assert manifest["msn_version"] in section and manifest["created"] in section
    for name, f in manifest["files"].items():
        assert f"| `{name}` |" in section and f["sha256"] in section
    assert manifest["source"]["path"] not in card  # never publish where the file sat on disk
    assert "vit-tiny.pth.tar" in section  # only its name


def test_verify_results_are_the_manifests(manifest):
    card = build_card(manifest, "o/n")
    v = manifest["verify"]
    assert v["summary"] in card
    assert v["transformers_version"] in card and v["torch_version"] in card
    rows = {r[0]: r for r in table(card, "Check")}
    assert set(rows) == {c["name"] for c in v["checks"]}
    for c in v["checks"]:
        want = {True: "pass", False: "FAIL", None: "skipped"}[c["passed"]]
        assert rows[c["name"]][1] == want
    parity = next(c for c in v["checks"] if c["name"] == "parity")
    assert float(rows["parity"][2]) == pytest.approx(parity["max_abs_err"], rel=1e-2)


def test_citation_is_the_papers_bibtex(manifest):
    card = build_card(manifest, "o/n")
    (bib,) = code_blocks(card, "bibtex")
    assert bib.startswith("@inproceedings{")
    assert "Masked Siamese Networks for Label-Efficient Learning" in bib
    assert "Assran, Mahmoud" in bib and "Ballas, Nicolas" in bib
    assert re.search(r"eprint\s*=\s*\{2204\.07141\}", bib)
    assert "ECCV" in bib and "2022" in bib


def test_usage_snippet_runs_and_its_comments_are_true(manifest, tmp_path_factory, tmp_path):
    """Run the card's snippet on the converted folder; check which output is which."""
    import torch
    from PIL import Image

    folder = copy_verified(tmp_path_factory, tmp_path)
    card = build_card(manifest, "my-org/vit-msn-tiny")
    (snippet,) = code_blocks(card, "python")
    assert 'repo = "my-org/vit-msn-tiny"' in snippet
    assert "AutoModel" in snippet and "AutoImageProcessor" in snippet
    image = tmp_path / "image.jpg"
    Image.effect_noise((80, 60), 40).convert("RGB").save(image)
    code = snippet.replace('"my-org/vit-msn-tiny"', repr(str(folder)))
    code = code.replace('"image.jpg"', repr(str(image)))
    scope: dict = {}
    exec(compile(code, "card-snippet", "exec"), scope)
    final_cls, block_cls, model = scope["final_cls"], scope["block_cls"], scope["model"]
    assert final_cls.shape == block_cls.shape == (1, manifest["architecture"]["hidden_size"])
    with torch.no_grad():
        normed = model.layernorm(block_cls)
    assert torch.allclose(normed, final_cls, atol=1e-5)  # final = norm(last block's cls)
    assert not torch.allclose(block_cls, final_cls, atol=1e-3)  # and they are different vectors


def test_card_file_replaces_the_body_and_keeps_our_metadata(manifest, tmp_path):
    from huggingface_hub import ModelCard

    plain = tmp_path / "plain.md"
    plain.write_text("# My port\n\nNotes.\n")
    card = build_card(manifest, "o/n", card_path=plain)
    parsed = ModelCard(card)
    assert parsed.text.strip() == "# My port\n\nNotes."
    assert parsed.data.license == "cc-by-nc-4.0" and parsed.data.pipeline_tag == "image-feature-extraction"
    assert "## Architecture" not in card

    with_meta = tmp_path / "meta.md"
    with_meta.write_text("---\nlicense: mit\nlanguage: en\n---\n\n# Theirs\n")
    parsed = ModelCard(build_card(manifest, "o/n", card_path=with_meta))
    assert parsed.data.license == "cc-by-nc-4.0"  # ours wins
    assert parsed.data.language == "en"  # theirs kept where we say nothing
    assert parsed.text.strip() == "# Theirs"


@pytest.mark.parametrize("content", ["", "   \n"])
def test_empty_card_file_is_refused(manifest, tmp_path, content):
    p = tmp_path / "empty.md"
    p.write_text(content)
    with pytest.raises(UsageError, match="empty"):
        build_card(manifest, "o/n", card_path=p)


def test_unverified_and_failed_folders_say_so(manifest):
    never = copy.deepcopy(manifest)
    never["verify"] = None
    assert "**Not verified.**" in build_card(never, "o/n")
    failed = copy.deepcopy(manifest)
    failed["verify"]["passed"] = False
    failed["verify"]["checks"][0]["passed"] = False
    card = build_card(failed, "o/n")
    assert "`msn verify` **FAILED**" in card
    assert table(card, "Check")[0][1] == "FAIL"


def test_a_released_variant_gets_its_name_and_a_link_to_the_official_upload(manifest):
    card = build_card(as_released(manifest, "vitb16"), "o/n")
    assert "# MSN ViT-B/16 (vitb16, 600 epochs)" in card
    assert "https://huggingface.co/facebook/vit-msn-base" in card
    assert "short side resized to 256 (bilinear), a 224x224 centre crop" in card


def test_the_card_says_which_preprocessing_was_written_and_why(manifest):
    card = build_card(manifest, "o/n")
    assert manifest["preprocessing"]["name"] == "msn"
    assert "reproduces MSN's own evaluation transform" in card and "`BitImageProcessor`" in card
    assert "Why: MSN's own evaluation transform" in card
    # what verify measured of the folder's processor on the photographs
    detail = next(c["detail"] for c in manifest["verify"]["checks"] if c["name"] == "preprocessing")
    assert f"Measured by `msn verify` on real photographs: {detail}" in card
    seed = copy.deepcopy(manifest)
    seed["preprocessing"] = {"name": "seed", "processor": "ViTImageProcessor"}
    card = build_card(seed, "o/n")
    assert "`msn convert --preprocessing seed`" in card and "official facebook/vit-msn-* uploads" in card
    old = copy.deepcopy(manifest)
    del old["preprocessing"]  # converted before the choice was recorded: the seed's processor
    assert "resizes straight to" in build_card(old, "o/n")
