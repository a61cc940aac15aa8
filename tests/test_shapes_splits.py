"""ShapesWorld's test and validation splits (issue 18): held out from the base, disjoint, balanced."""

from __future__ import annotations

import pytest

from rayunify.shapes.splits import MIN_PROMPTS_PER_CATEGORY, evaluation_pools, prompt_split, split_sizes
from rayunify.shapes.world import CATEGORIES, Spec, held_out_split, meaning_key


def _meanings(prompts):
    return {meaning_key(Spec.from_dict(p.spec)) for p in prompts}


def test_test_and_validation_are_disjoint_by_meaning_and_held_out_from_the_base():
    base_train, base_eval = held_out_split(1044, 522, seed=0)  # the base's two whole sides
    test = [p for ps in evaluation_pools("test", 0).values() for p in ps]
    validation = [p for ps in evaluation_pools("validation", 0).values() for p in ps]
    assert _meanings(test).isdisjoint(_meanings(validation))
    assert _meanings(base_train).isdisjoint(_meanings(test) | _meanings(validation))
    # Together the two splits are exactly the base's held-out texts.
    assert {p.text for p in test} | {p.text for p in validation} == {p.text for p in base_eval}
    assert len({p.prompt_id for p in test}) == len(test)  # repeats have ids of their own


def test_every_test_category_has_at_least_30_prompts_and_small_ones_say_how_few_texts():
    sizes = split_sizes(seed=0)
    for category in CATEGORIES:
        prompts, texts = sizes["test"][category]
        assert prompts >= MIN_PROMPTS_PER_CATEGORY, category
    # The honest part: the world's small categories hold only a few held-out texts.
    assert sizes["test"]["single_object"] == (30, 1)
    assert sizes["test"]["two_objects"] == (30, 2)
    assert sizes["test"]["colour_attribution"] == (68, 68)
    # One held-out meaning cannot be in both splits: validation has none of those categories.
    assert sizes["validation"]["single_object"] == (0, 0)
    assert sizes["validation"]["counting"] == (30, 1)


def test_repeats_come_after_every_text_and_each_text_repeats_equally():
    colour = evaluation_pools("test", 0)["colour"]
    texts = [p.text for p in colour]
    assert len(set(texts[:4])) == 4 and texts[4:8] == texts[:4]
    assert colour[4].prompt_id == colour[0].prompt_id + "~1"
    assert evaluation_pools("test", 0, min_per_category=0)["colour"] == colour[:4]


def test_prompt_split_prefixes_are_balanced_and_train_is_unchanged():
    train, test = prompt_split(192, 180, seed=0, eval_split="test")
    assert train == held_out_split(192, 96, seed=0)[0]
    assert {c: sum(p.category == c for p in test) for c in CATEGORIES} == dict.fromkeys(CATEGORIES, 30)
    assert prompt_split(192, 96, seed=0) == held_out_split(192, 96, seed=0)  # no eval_split: the old list
    _, colours = prompt_split(10, 1000, seed=0, categories=["colour"], eval_split="validation")
    assert colours == evaluation_pools("validation", 0)["colour"]


def test_bad_split_names_are_errors_naming_the_field():
    from rayunify.config import Config

    with pytest.raises(ValueError, match="unknown ShapesWorld eval split 'dev'"):
        evaluation_pools("dev", 0)
    with pytest.raises(ValueError, match="prompts.eval_split='dev'.*test, validation"):
        Config.model_validate({"prompts": {"source": "shapes", "eval_split": "dev"}})
    with pytest.raises(ValueError, match="asked for 500 validation"):
        prompt_split(10, 500, seed=0, eval_split="validation")


def test_config_eval_split_reaches_the_prompt_set():
    from rayunify.config import Config
    from rayunify.prompts import load_prompt_set

    cfg = Config.model_validate({"prompts": {"n_train": 8, "n_eval": 12, "eval_split": "test"}})
    prompt_set = load_prompt_set(cfg.prompts)
    assert prompt_set.eval == prompt_split(8, 12, 0, eval_split="test")[1]
    assert any("distinct texts" in note for note in prompt_set.notes)  # the repeats are reported
