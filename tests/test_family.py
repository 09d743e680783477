"""The original model family table (facts: shared/msn-facts.md, "The original model family")."""

from msn_cli.original import family


def test_heads_by_width_follow_the_family_not_width_over_64():
    assert {d: family.heads_for_width(d) for d in (192, 384, 768, 1024, 1280)} == {
        192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
    huge = family.constructor("deit_huge")
    assert huge is not None and huge.head_dim == 80 and huge.depth == 32
    assert 1280 // family.FALLBACK_HEAD_DIM != huge.num_heads  # the old rule was wrong here


def test_widths_outside_the_family_have_no_heads():
    for d in (64, 256, 512, 1536):
        assert family.heads_for_width(d) is None


def test_every_constructor_is_listed_once_with_its_patch():
    names = [c.name for c in family.FAMILY]
    assert len(names) == len(set(names)) == 17
    assert family.constructor("deit_base_p4").patch_size == 4
    assert family.constructor("deit_huge_p10").patch_size == 10
    assert family.constructor("no_such_model") is None


def test_conv_stem_models_are_marked_and_matched_separately():
    stems = [c.name for c in family.FAMILY if c.conv_stem]
    assert stems == ["vitc_4gf", "deit_small_convstem"]
    assert family.constructor("vitc_4gf").intermediate_size == 384 * 3
    assert [c.name for c in family.matching(384, depth=11, intermediate_size=384 * 6,
                                            conv_stem=True)] == ["deit_small_convstem"]
    assert [c.name for c in family.matching(384, depth=12, patch_size=8)] == ["deit_small_p8"]
