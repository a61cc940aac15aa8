"""ShapesWorld v2: its prompt space, renderer, exact checker, splits and prompt source (v1 untouched)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rayunify.shapes import check_batch, rendered_cases
from rayunify.shapes.checker_v2 import check_batch_v2, match_v2
from rayunify.shapes.judge import ShapesCheckerJudge
from rayunify.shapes.render_v2 import render_v2, render_v2_with_objects, rendered_cases_v2
from rayunify.shapes.splits_v2 import (
    EVAL_SPLITS_V2,
    SPLITS_V2,
    prompt_split_v2,
    spec_prompt_v2,
    split_counts_v2,
    split_groups_v2,
    split_pools_v2,
)
from rayunify.shapes.world import CATEGORIES, COLOURS, PALETTE, SHAPES, all_specs, spec_prompt
from rayunify.shapes.world_v2 import (
    COLOURS_V2,
    MIN_COLOUR_DISTANCE,
    PALETTE_V2,
    SHAPES_V2,
    ObjectSpecV2,
    SpecV2,
    all_specs_v2,
    make_prompt_text_v2,
    meaning_key_v2,
    one_attribute_negatives,
)

SMALL_CATEGORIES = ("single_object", "colour", "two_objects", "counting")


def test_v1_world_is_unchanged():
    assert SHAPES == ("circle", "square", "triangle") and len(COLOURS) == 6
    assert {c: len(all_specs(c)) for c in CATEGORIES} == {
        "single_object": 3, "colour": 18, "two_objects": 6, "counting": 9, "colour_attribution": 306, "position": 1224,
    }
    images, specs = rendered_cases(60, seed=3)  # v1's judge path gives v1's checker verdicts, v1 prompts only
    judged = ShapesCheckerJudge().judge(list(images), [spec_prompt(s, "colour") for s in specs])
    assert [j.score == 1.0 for j in judged] == [r.aligned for r in check_batch(images, specs)]


def test_palette_is_far_apart_and_in_distinct_directions():
    rgb = np.array([PALETTE_V2[c] for c in COLOURS_V2], float)
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)]
    assert min(distances) == pytest.approx(MIN_COLOUR_DISTANCE, abs=0.5)
    unit = rgb / np.linalg.norm(rgb, axis=1, keepdims=True)
    # the checker reads a colour's direction from black: two colours on one ray could not be told apart
    assert max(a @ b for a, b in itertools.combinations(unit, 2)) < 0.95
    assert all(PALETTE_V2[c] == PALETTE[c] for c in COLOURS)


def test_texts_and_meanings():
    spec = SpecV2((ObjectSpecV2("circle", "orange"), ObjectSpecV2("inverted triangle", "white")), "left of")
    assert make_prompt_text_v2(spec) == "an orange circle to the left of a white inverted triangle"
    mirrored = SpecV2(spec.objects[::-1], "right of", template=1)
    assert make_prompt_text_v2(mirrored) == "a picture of a white inverted triangle to the right of an orange circle"
    assert meaning_key_v2(spec) == meaning_key_v2(mirrored)
    assert make_prompt_text_v2(SpecV2((ObjectSpecV2("diamond", size="large"),))) == "a large diamond"
    assert SpecV2.from_dict(spec.to_dict()) == spec
    for bad, message in (
        ({"world": "v2", "objects": [{"shape": "star"}]}, "unknown v2 shape"),
        ({"world": "v2", "objects": [{"shape": "circle", "count": 2, "size": "small"}]}, "single object"),
        ({"objects": [{"shape": "circle"}]}, "'world' must be 'v2'"),
    ):
        with pytest.raises(ValueError, match=message):
            SpecV2.from_dict(bad)


def _render_all(specs: list[SpecV2], seed: int) -> tuple[np.ndarray, list[SpecV2]]:
    rng = np.random.default_rng(seed)
    return np.stack([render_v2(s, rng) for s in specs]), specs


@pytest.mark.parametrize("seed", range(4))
def test_every_spec_of_the_small_categories_is_read_back_aligned(seed):
    specs = [s for c in SMALL_CATEGORIES for s in all_specs_v2(c)]
    images, specs = _render_all(specs, seed)
    failures = [(make_prompt_text_v2(s), r.reasons) for s, r in zip(specs, check_batch_v2(images, specs), strict=True) if not r.aligned]
    assert not failures, failures[:5]


def test_many_rendered_specs_of_every_category_are_read_back_aligned_and_match_their_scene():
    images, specs = rendered_cases_v2(3000, seed=11)
    results = check_batch_v2(images, specs)
    assert all(r.aligned for r in results), [r.reasons for r in results if not r.aligned][:5]
    rng = np.random.default_rng(2)
    for spec in specs[:300]:
        _, objects = render_v2_with_objects(spec, rng)
        assert match_v2(objects, spec).aligned  # the symbolic truth agrees with the renderer


@pytest.mark.parametrize("seed", range(3))
def test_one_attribute_away_negatives_are_not_aligned(seed):
    rng = np.random.default_rng(seed)
    originals = [s for c in SMALL_CATEGORIES for s in all_specs_v2(c)[::2]]
    for category in ("colour_attribution", "position"):
        specs = all_specs_v2(category)
        originals += [specs[i] for i in rng.choice(len(specs), 40, replace=False)]
    pairs = [(original, negative) for original in originals for negative in one_attribute_negatives(original)]
    assert len(pairs) > 2000
    images = np.stack([render_v2(negative, rng) for _, negative in pairs])
    results = check_batch_v2(images, [original for original, _ in pairs])
    wrongly_aligned = [
        (make_prompt_text_v2(o), make_prompt_text_v2(n)) for (o, n), r in zip(pairs, results, strict=True) if r.aligned
    ]
    assert not wrongly_aligned, wrongly_aligned[:5]


def test_negatives_change_one_attribute():
    spec = SpecV2((ObjectSpecV2("square", size="small"),))
    negatives = one_attribute_negatives(spec)
    assert len(negatives) == len(SHAPES_V2) - 1 + 2  # other shapes, other sizes
    relation = SpecV2((ObjectSpecV2("circle", "red"), ObjectSpecV2("square", "blue")), "above")
    assert SpecV2(relation.objects, "below") in one_attribute_negatives(relation)


def _texts(groups) -> set[str]:
    return {make_prompt_text_v2(s) for g in groups for s in g}


def test_every_category_has_30_test_texts_from_15_meanings_and_a_validation_and_train_side():
    counts = split_counts_v2()
    for category in CATEGORIES:
        meanings, texts = counts["test"][category]
        assert meanings >= 15 and texts >= 30, (category, meanings, texts)
        assert counts["validation"][category][0] >= 3 and counts["train"][category][0] >= 3, category
    assert counts["test"]["single_object"] == (15, 30)


@pytest.mark.parametrize("seed", [0, 7])
def test_splits_are_disjoint_by_meaning_and_text_and_cover_the_world(seed):
    groups = split_groups_v2(seed)
    for category in CATEGORIES:
        sides = [groups[split][category] for split in SPLITS_V2]
        meanings = [{meaning_key_v2(s) for g in side for s in g} for side in sides]
        texts = [_texts(side) for side in sides]
        for a, b in itertools.combinations(range(3), 2):
            assert not meanings[a] & meanings[b] and not texts[a] & texts[b], category
        assert sum(map(len, texts)) == len(all_specs_v2(category))  # every text in exactly one split
        assert all(len({meaning_key_v2(s) for s in g}) == 1 for side in sides for g in side)


def test_the_split_is_fixed_by_its_seed():
    assert split_pools_v2("test", 0) == split_pools_v2("test", 0)
    assert split_pools_v2("test", 0) != split_pools_v2("test", 1)


def test_prompt_split_v2_draws_balanced_prefixes_from_the_named_split():
    train, test = prompt_split_v2(60, 60, seed=0, eval_split="test")
    _, validation = prompt_split_v2(0, 60, seed=0, eval_split="validation")
    assert [p.category for p in test[:6]] == list(CATEGORIES)
    test_pool = {p.text for ps in split_pools_v2("test").values() for p in ps}
    assert {p.text for p in test} <= test_pool
    assert not {p.text for p in validation} & test_pool and not {p.text for p in train} & test_pool
    assert prompt_split_v2(0, 10, seed=0)[1] == validation[:10]  # no split named: validation, never test
    _, only = prompt_split_v2(0, 500, seed=0, categories=["counting"], eval_split="test")
    assert len(only) == 30 and {p.category for p in only} == {"counting"}
    assert set(EVAL_SPLITS_V2) == {"validation", "test"}
    with pytest.raises(ValueError, match="unknown ShapesWorld v2 eval split 'train'"):
        prompt_split_v2(1, 1, seed=0, eval_split="train")


def test_the_checker_judge_scores_v2_and_mixed_prompts():
    rng = np.random.default_rng(5)
    spec = SpecV2((ObjectSpecV2("diamond", "orange"),))
    wrong = SpecV2((ObjectSpecV2("diamond", "red"),))
    v1_images, v1_specs = rendered_cases(2, seed=0)
    images = [render_v2(spec, rng), render_v2(wrong, rng), *v1_images]
    prompts = [spec_prompt_v2(spec, "colour")] * 2 + [spec_prompt(s, "colour") for s in v1_specs]
    verdicts = [j.score for j in ShapesCheckerJudge().judge(images, prompts)]
    assert verdicts == [1.0, 0.0, 1.0, 1.0]


V2_DRY_RUN = ["prompts.source=shapes_v2", "model.path=builtin:tiny", "judge.type=shapes_checker"]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_a_dry_run_accepts_the_shapes_v2_source_with_the_checker(capsys, split):
    from rayunify.train import main

    code = main(["--dry-run", *V2_DRY_RUN, f"prompts.eval_split={split}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"prompts: built-in source 'shapes_v2', eval split '{split}'" in out
    assert "judge: shapes_checker (built in)" in out and "dry run OK" in out


def test_a_dry_run_refuses_an_eval_split_v2_does_not_have(capsys):
    from rayunify.train import main

    code = main(["--dry-run", *V2_DRY_RUN, "prompts.eval_split=train"])
    _, err = capsys.readouterr()
    assert code == 2 and "train" in err and "Traceback" not in err


def test_v2_colours_survive_a_tiny_vq_trained_on_v2_images():
    """The closest colours (orange against yellow and red, 127-128 apart) are read back as themselves after
    a round trip through the test-sized tokenizer recipe trained here on v2 images (about 70 CPU s)."""
    from rayunify.shapes.checker_v2 import perceive_batch_v2
    from rayunify.shapes.render_v2 import random_training_images_v2
    from rayunify.shapes.vq import VQTrainConfig, decode_tokens, encode_tokens, train_vq

    vq = train_vq(VQTrainConfig.tiny(), seed=0, progress=False, images=random_training_images_v2)
    rng = np.random.default_rng(3)
    specs = [s for s in all_specs_v2("colour") if s.template == 0] * 3
    back = decode_tokens(vq, encode_tokens(vq, np.stack([render_v2(s, rng) for s in specs])))
    read = [(s.objects[0].colour, o.colour) for s, objects in zip(specs, perceive_batch_v2(back), strict=True) for o in objects]
    wrong = [pair for pair in read if pair[0] != pair[1]]
    print(f"tiny v2 VQ: {len(wrong)} of {len(read)} objects read in another colour: {wrong[:5]}")
    assert len(read) >= 0.8 * len(specs)  # the objects are still there to be read
    assert len(wrong) <= 0.03 * len(read)
    assert {want for want, _ in read} == set(COLOURS_V2)
