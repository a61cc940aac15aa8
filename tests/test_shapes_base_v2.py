"""A ShapesWorld v2 base: the base pipeline trains on v2's train split with v2's renderer, checker and hard
negatives, its tokenizer has one token per v2 word, and the fixed judge set is built for v2 prompts; v1's
recipes keep their cache keys (so the shipped base its directory)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from rayunify.shapes.cache import SHIPPED, base_dir_name
from rayunify.shapes.checker_v2 import check_batch_v2
from rayunify.shapes.data import ShapesData
from rayunify.shapes.recipe import SIZES, split_prompts
from rayunify.shapes.render_v2 import render_v2
from rayunify.shapes.splits_v2 import split_groups_v2
from rayunify.shapes.vq import VQTrainConfig
from rayunify.shapes.world import CATEGORIES
from rayunify.shapes.world_v2 import SpecV2, all_specs_v2, meaning_key_v2, one_attribute_away_v2
from rayunify.shapes.worlds import world_of_prompts, world_ops
from rayunify.types import Prompt, SamplingSettings, Verdict

TINY_V2 = dataclasses.replace(
    SIZES["v2-test"], steps=3, vision_pretrain_steps=1, gen_batch=4, und_batch=4, n_train_prompts=10_000,
    vq=VQTrainConfig.tiny(),  # the test size's 300 steps: too few for any v2 round trip to pass
)  # fmt: skip


def test_v1_recipes_keep_their_cache_keys_and_the_shipped_base_its_directory():
    assert (SHIPPED / base_dir_name("base", 0) / "shapes_base.json").is_file()
    assert base_dir_name("v2", 0) != base_dir_name("base", 0)


def test_the_shipped_v2_base_is_its_recipe_small_and_loads_with_transformers():
    """Found for SIZES["v2"] as it stands (a recipe change trains a fresh one), within the 8 MB a shipped base
    may take, and an ordinary transformers checkpoint: its train prompts are remade from the split, not stored."""
    from transformers import JanusForConditionalGeneration

    shipped = SHIPPED / base_dir_name("v2", 0)
    info = json.loads((shipped / "shapes_base.json").read_text())
    assert info["config"] == json.loads(json.dumps(SIZES["v2"].to_dict(), default=str))
    assert sum(f.stat().st_size for f in shipped.iterdir()) < 8 * 2**20
    assert not (shipped / "train_prompts.jsonl").exists()
    model = JanusForConditionalGeneration.from_pretrained(shipped)
    assert model.config.text_config.hidden_size == SIZES["v2"].arch.hidden_size


def _meanings(split: str) -> set:
    return {meaning_key_v2(s) for groups in split_groups_v2(0)[split].values() for g in groups for s in g}


def test_a_v2_base_trains_on_every_train_text_and_keeps_validation_texts_for_eval():
    train, evaluation = split_prompts(SIZES["v2"])
    keys = {meaning_key_v2(SpecV2.from_dict(p.spec)) for p in train}
    assert keys == _meanings("train") and len({p.text for p in train}) == len(train)
    assert {meaning_key_v2(SpecV2.from_dict(p.spec)) for p in evaluation} <= _meanings("validation")
    assert len(evaluation) == SIZES["v2"].n_eval_prompts and {p.category for p in evaluation} == set(CATEGORIES)


@pytest.mark.parametrize("category", CATEGORIES)
def test_v2_training_negatives_are_valid_one_change_away_and_rejected_by_the_checker(category):
    rng = np.random.default_rng(3)
    specs = [all_specs_v2(category)[i] for i in rng.permutation(len(all_specs_v2(category)))[:40]]
    for by_kind in (False, True):
        negatives = [one_attribute_away_v2(s, rng, by_kind=by_kind) for s in specs]
        assert all(meaning_key_v2(n) != meaning_key_v2(s) for n, s in zip(negatives, specs, strict=True))
        images = np.stack([render_v2(n, rng) for n in negatives])
        rejected = [not r.aligned for r in check_batch_v2(images, specs)]
        assert np.mean(rejected) == 1.0, f"{category}: a negative was read as the original spec"


def test_negative_kinds_include_colour_swaps_and_added_or_dropped_objects():
    rng = np.random.default_rng(0)
    pair = next(s for s in all_specs_v2("colour_attribution") if s.objects[0].shape != s.objects[1].shape
                       and s.objects[0].colour != s.objects[1].colour)
    drawn = {one_attribute_away_v2(pair, rng, by_kind=True) for _ in range(200)}
    a, b = pair.objects
    swapped = SpecV2((dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour)))
    assert swapped in drawn and any(len(s.objects) == 1 for s in drawn)
    single = all_specs_v2("single_object")[0]
    assert any(len(one_attribute_away_v2(single, rng).objects) == 2 for _ in range(200))


@pytest.fixture(scope="module")
def tiny_vq():
    from rayunify.shapes.vq import train_vq

    return train_vq(TINY_V2.vq, seed=0, progress=False, images=world_ops("v2").vq_images)


def test_understanding_batches_are_labelled_by_the_v2_checker_and_balanced(tiny_vq):
    """Own samples skip the (here untrained) tokenizer: exact renders of the prompts and of negatives, so
    the batch must hold both labels, half each, each as the v2 checker reads it."""
    mix = dataclasses.replace(TINY_V2.mix, own=1.0, clean=0.0, corrupted=0.0, one_attribute_away=0.0, random_prompt=0.0)
    cfg = dataclasses.replace(TINY_V2, mix=mix)
    prompts = split_prompts(cfg)[0][:40]
    data = ShapesData(tiny_vq, prompts, cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    specs = [SpecV2.from_dict(p.spec) for p in prompts]
    data.add_own(prompts, np.stack([render_v2(s, rng) for s in specs]))
    data.add_own(prompts, np.stack([render_v2(one_attribute_away_v2(s, rng), rng) for s in specs]))
    images, texts, verdicts = data.understanding_batch(32)
    by_text = dict(zip([p.text for p in prompts], specs, strict=True))
    checked = check_batch_v2(np.stack(images), [by_text[t] for t in texts])
    assert [Verdict.ACCEPT if r.aligned else Verdict.REJECT for r in checked] == verdicts
    assert sum(v == Verdict.ACCEPT for v in verdicts) == 16


def test_the_worlds_never_mix_in_one_prompt_list():
    v1 = Prompt("a", "a red circle", "colour", {"objects": [{"shape": "circle", "colour": "red"}], "relation": None})
    v2 = Prompt("b", "an orange circle", "colour", SpecV2.from_dict(all_specs_v2("colour")[0].to_dict()).to_dict())
    assert world_of_prompts([v1]).name == "v1" and world_of_prompts([v2]).name == "v2"
    with pytest.raises(ValueError, match="mix ShapesWorld v1 and v2"):
        world_of_prompts([v1, v2])


@pytest.fixture(scope="module")
def tiny_v2_base(tmp_path_factory, tiny_vq) -> Path:
    from rayunify.shapes.base_training import train_base

    return train_base(tmp_path_factory.mktemp("v2") / "base", progress=False, config=TINY_V2, vq=tiny_vq)


def test_a_v2_base_trains_saves_and_speaks_every_v2_word_as_one_token(tiny_v2_base: Path):
    from rayunify.config import JanusModelConfig
    from rayunify.models import build_model

    info = json.loads((tiny_v2_base / "shapes_base.json").read_text())
    assert info["config"]["world"] == "v2" and info["prompts"]["eval"] == TINY_V2.n_eval_prompts
    model = build_model(JanusModelConfig(path=str(tiny_v2_base), device="cpu"))
    tokenizer = model.processor.tokenizer
    for word in ("diamond", "inverted", "orange", "white", "large", "picture"):
        assert len(tokenizer.encode(f" {word}", add_special_tokens=False)) == 1, word


def test_the_fixed_judge_set_is_built_for_v2_prompts_and_labelled_by_the_v2_checker(tiny_v2_base: Path):
    from rayunify.config import JanusModelConfig
    from rayunify.models import build_model
    from rayunify.shapes.judge_set import build_judge_set
    from rayunify.shapes.splits_v2 import prompt_split_v2

    model = build_model(JanusModelConfig(path=str(tiny_v2_base), device="cpu"))
    _, prompts = prompt_split_v2(0, 24, seed=0, eval_split="test")
    judge_set = build_judge_set(model, prompts, size=24, seed=0, settings=SamplingSettings(guidance_scale=3.0))
    by_text = {p.text: SpecV2.from_dict(p.spec) for p in prompts}
    checked = check_batch_v2(judge_set.images, [by_text[t] for t in judge_set.texts])
    assert [r.aligned for r in checked] == judge_set.labels.tolist()
    assert set(judge_set.categories) <= set(CATEGORIES) and judge_set.labels.any() and (~judge_set.labels).any()


def test_best_of_n_takes_the_judges_favourite_and_the_oracle_any_correct_image():
    from rayunify.shapes.base_report import best_of_n_report, targets

    by_prompt = {  # (judge P(yes), judge accepts, checker accepts) per image
        "a": [(0.9, True, False), (0.2, False, True), (0.1, False, False), (0.3, False, False)],
        "b": [(0.4, False, True), (0.8, True, True), (0.1, False, False), (0.0, False, False)],
        "c": [(0.5, True, False)] * 4,
    }
    report = best_of_n_report({"a": "colour", "b": "colour", "c": "counting"}, by_prompt)
    colour = report["colour"]
    assert (colour["pass_at_1"], colour["judge_best_of_n"], colour["oracle_any_of_n"]) == (0.375, 0.5, 1.0)
    assert report["counting"]["judge_accepts"] == 1.0 and report["counting"]["oracle_any_of_n"] == 0.0
    assert report["category_mean"]["pass_at_1"] == pytest.approx(0.1875)
    verdict = targets({"overall": {"balanced_accuracy": 0.9, "auroc": 0.94}}, report)
    assert verdict["judge_balanced_accuracy"]["holds"] and not verdict["judge_auroc"]["holds"]
    assert not verdict["generation_category_mean"]["holds"] and verdict["best_of_n_over_pass_at_1"]["value"] == pytest.approx(0.25 / 0.1875)


def test_the_base_report_scores_a_v2_base_on_its_test_split(tiny_v2_base: Path):
    from rayunify.config import JanusModelConfig
    from rayunify.models import build_model
    from rayunify.shapes.base_report import ReportSettings, generation_figures, judge_figures
    from rayunify.shapes.splits_v2 import split_pools_v2

    model = build_model(JanusModelConfig(path=str(tiny_v2_base), device="cpu"))
    prompts = [p for pool in split_pools_v2("test").values() for p in pool]
    settings = ReportSettings(judge_set_size=24, texts_per_category=2, samples=3)
    judge = judge_figures(model, prompts, settings)
    generation = generation_figures(model, prompts, settings)
    assert 0.0 <= judge["overall"]["balanced_accuracy"] <= 1.0 and judge["overall"]["count"] > 0
    assert set(generation) == {*CATEGORIES, "category_mean"}
    assert all(g["texts"] == 2 for c, g in generation.items() if c != "category_mean")
    assert all(g["pass_at_1"] <= g["oracle_any_of_n"] for g in generation.values())
