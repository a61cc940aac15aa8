"""The ShapesWorld base model: trains (test size), saves in the HF layout, reloads, is deterministic, is
cached once per (config, seed) even under concurrent callers, and `rayunify eval` scores it."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rayunify.cli import main as cli_main
from rayunify.metrics import METRIC_KEYS
from rayunify.shapes import base_training, cache
from rayunify.shapes import data as shapes_data
from rayunify.shapes.base_training import train_base
from rayunify.shapes.cache import cached_base_dir
from rayunify.shapes.checker import check_batch
from rayunify.shapes.data import ShapesData, balanced_choice, one_attribute_away
from rayunify.shapes.objectives import JudgeLoss, PatchProbe
from rayunify.shapes.recipe import SIZES, split_prompts
from rayunify.shapes.render import render
from rayunify.shapes.world import (
    CATEGORIES,
    OPPOSITE_RELATION,
    ObjectSpec,
    Spec,
    all_specs,
    generate_prompts,
    meaning_key,
)
from rayunify.types import Verdict

pytestmark = pytest.mark.kernels  # figures of trained models: rerun under a second kernel setting

REQUIRED_METRICS = ("gen_accuracy", "nonunified", "judge_accuracy", "judge_fpr", "judge_fnr", "weak_generation", "invalid_rate")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("RAYUNIFY_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def test_model(cache_dir) -> Path:
    """The "test" size, trained once for this module through the cache (as `builtin:shapes-test` does)."""
    return cached_base_dir("test", seed=0, progress=False)


def test_test_size_trains_and_saves_in_hf_layout(test_model: Path, cache_dir: Path):
    from transformers import JanusForConditionalGeneration

    from rayunify.models.janus.model import JanusUnifiedModel

    assert test_model.parent == cache_dir
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "shapes_base.json"):
        assert (test_model / name).is_file(), name
    assert not list(cache_dir.glob("*.tmp*")), "the temporary training directory must be gone"
    info = json.loads((test_model / "shapes_base.json").read_text())
    assert info["size"] == "test" and info["seed"] == 0
    assert info["timings"]["total_s"] > 0
    losses = info["train_loss"]
    assert losses["und"][-1] < losses["und"][0] and losses["gen"][-1] < losses["gen"][0]
    eval_prompts = [json.loads(line) for line in (test_model / "eval_prompts.jsonl").read_text().splitlines()]
    assert len(eval_prompts) == SIZES["test"].n_eval_prompts

    plain = JanusForConditionalGeneration.from_pretrained(test_model)
    assert "boi_token_id" in plain.generation_config.generation_kwargs
    um = JanusUnifiedModel.from_pretrained(test_model)
    out = um.generate(["a red circle"], n=2, seed=0, decode=True)
    assert out.image_tokens.shape == (2, 64) and out.images.shape == (2, 32, 32, 3)
    verdicts = um.judge(list(out.images), ["a red circle"] * 2)
    assert all(0.0 <= j.score <= 1.0 for j in verdicts)


def test_model_decodes_image_tokens_exactly_like_the_trained_vq(test_model: Path):
    """The VQ weights went into model.model.vqmodel unchanged: the model's decode is the tokenizer's."""
    from rayunify.models.janus.model import JanusUnifiedModel
    from rayunify.shapes.vq import decode_tokens, encode_tokens

    um = JanusUnifiedModel.from_pretrained(test_model)
    vq = um.model.model.vqmodel
    rng = np.random.default_rng(0)
    images = np.stack([render(all_specs("colour")[i], rng) for i in range(4)])
    tokens = encode_tokens(vq, images)
    assert np.array_equal(um.decode_images(tokens), decode_tokens(vq, tokens))


def test_cached_base_dir_reuses_the_trained_model(test_model: Path, monkeypatch):
    def must_not_train(*args, **kwargs):
        raise AssertionError("a cached model was trained again")

    monkeypatch.setattr(base_training, "train_base", must_not_train)
    assert cached_base_dir("test", seed=0) == test_model


def test_a_shipped_base_is_used_while_its_recipe_is_unchanged(tmp_path: Path, monkeypatch):
    """The shipped directory is named by the recipe's hash: that recipe is never trained again; another recipe
    (here another seed) trains as before, into the cache."""
    monkeypatch.setenv("RAYUNIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "SHIPPED", tmp_path / "shipped")
    shipped = tmp_path / "shipped" / cache.base_dir_name("base", seed=0)
    shipped.mkdir(parents=True)
    (shipped / cache.INFO_FILE).write_text("{}")
    trained = []

    def fake_train(out, size, seed, progress):
        trained.append((size, seed))
        Path(out).mkdir(parents=True)
        (Path(out) / cache.INFO_FILE).write_text("{}")
        return Path(out)

    monkeypatch.setattr(base_training, "train_base", fake_train)
    assert cached_base_dir("base", seed=0) == shipped and trained == []
    assert cached_base_dir("base", seed=1).parent == tmp_path / "cache" and trained == [("base", 1)]


def test_concurrent_callers_train_once_and_share_the_result(tmp_path: Path, monkeypatch):
    """Ray actors start together: the file lock lets one train while the others wait and reuse it."""
    monkeypatch.setenv("RAYUNIFY_CACHE", str(tmp_path))
    calls = []

    def fake_train(out, size, seed, progress):
        calls.append(seed)
        time.sleep(0.3)  # long enough for the other callers to reach the lock
        Path(out).mkdir(parents=True)
        (Path(out) / cache.INFO_FILE).write_text("{}")
        return Path(out)

    monkeypatch.setattr(base_training, "train_base", fake_train)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cached_base_dir("test", seed=7))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [7]
    assert len(set(results)) == 1 and (results[0] / cache.INFO_FILE).is_file()
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_short_run_is_deterministic_for_a_seed(tmp_path: Path):
    cfg = SIZES["test"]
    tiny = dataclasses.replace(cfg, steps=3, gen_batch=4, und_batch=4, vq=dataclasses.replace(cfg.vq, steps=10))

    def run(name: str, seed: int) -> tuple[dict, dict[str, torch.Tensor]]:
        out = train_base(tmp_path / name, seed=seed, progress=False, config=tiny)
        return json.loads((out / "shapes_base.json").read_text())["train_loss"], load_file(out / "model.safetensors")

    first, first_weights = run("a", seed=3)
    second, second_weights = run("b", seed=3)
    other, _ = run("c", seed=4)
    assert first == second
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)
    assert other != first


def test_a_given_tokenizer_is_used_unchanged_instead_of_training_one(test_model: Path, tmp_path: Path):
    """A recipe sweep trains the VQ once and hands it to every variant: the model must carry it as given."""
    from transformers import JanusForConditionalGeneration

    vq = JanusForConditionalGeneration.from_pretrained(test_model).model.vqmodel.eval()
    cfg = dataclasses.replace(SIZES["test"], steps=2, vision_pretrain_steps=1, gen_batch=4, und_batch=4)
    out = train_base(tmp_path / "reused", progress=False, config=cfg, vq=vq)
    saved = JanusForConditionalGeneration.from_pretrained(out).model.vqmodel.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in vq.state_dict().items())
    assert json.loads((out / "shapes_base.json").read_text())["vq_given"] is True


def test_sweep_variants_apply_overrides_and_reject_unknown_keys():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "sweep_base.py"
    spec = importlib.util.spec_from_file_location("sweep_base", path)
    assert spec and spec.loader
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    cfg = sweep.variant_config({"steps": 7, "mix.own_balanced": False, "arch.num_layers": 6, "category_weights": [1, 1, 1, 1, 1, 1]})
    default = SIZES["base"]
    assert (cfg.steps, cfg.mix.own_balanced, cfg.arch.num_layers) == (7, False, 6)
    assert cfg.category_weights == (1, 1, 1, 1, 1, 1) and cfg.mix.clean == default.mix.clean
    assert cfg.arch.image_size == default.arch.image_size and cfg.arch.patch_size == default.arch.patch_size
    for typo in ({"stepz": 1}, {"mix.nope": 1}, {"arch.depth": 2}, {"vq.steps": 1}):
        with pytest.raises(ValueError, match="unknown variant keys"):
            sweep.variant_config(typo)


def test_eval_cli_writes_every_metric_overall_and_per_category(test_model: Path, tmp_path: Path):
    out = tmp_path / "eval"
    prompts = test_model / "eval_prompts.jsonl"
    args = ["eval", "--model", str(test_model), "--samples", "2", "--out", str(out), "prompts.source=file",
            f"prompts.path={test_model / 'train_prompts.jsonl'}", f"prompts.eval_path={prompts}"]  # fmt: skip
    assert cli_main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    assert (out / "samples.png").is_file() and (out / "verdicts.jsonl").is_file()
    categories = {json.loads(line)["category"] for line in prompts.read_text().splitlines()}
    assert set(report) == {"overall", "category_mean", "intervals", "settings", *categories}
    assert set(report["intervals"]) == {"overall", "category_mean", *categories}
    for group, values in ((g, v) for g, v in report.items() if g not in ("intervals", "settings")):
        assert set(REQUIRED_METRICS) <= set(values) <= set(METRIC_KEYS), group
        for key in REQUIRED_METRICS:
            value = values[key]
            assert math.isnan(value) or 0.0 <= value <= 1.0, (group, key, value)


def test_understanding_batches_are_balanced_and_labelled_by_the_checker(test_model: Path):
    from rayunify.models.janus.model import JanusUnifiedModel

    vq = JanusUnifiedModel.from_pretrained(test_model).model.model.vqmodel
    prompts, _ = split_prompts(SIZES["test"])
    data = ShapesData(vq, prompts, SIZES["test"], np.random.default_rng(0))
    images, texts, verdicts = data.understanding_batch(16)
    assert len(images) == len(texts) == len(verdicts) == 16
    # How many of the 32 candidates survive the VQ round trip as right depends on the trained VQ's last bits
    # (and so on the host's kernels): at most half are accepted, and a shortfall is made up by rejected ones.
    # The exact rule is `balanced_choice`'s test below; here the labels must be the checker's.
    assert 1 <= sum(v == Verdict.ACCEPT for v in verdicts) <= 8
    specs = {p.text: Spec.from_dict(p.spec) for p in prompts}
    truth = [r.aligned for r in check_batch(np.stack(images), [specs[t] for t in texts])]
    assert truth == [v == Verdict.ACCEPT for v in verdicts]


@pytest.mark.parametrize(("n_accepted", "n_rejected", "want_accepted"), [(20, 12, 8), (7, 25, 7), (30, 2, 14), (0, 32, 0)])
def test_balanced_choice_takes_half_accepted_where_the_candidates_allow(n_accepted, n_rejected, want_accepted):
    accepted = np.random.default_rng(0).permutation(np.array([True] * n_accepted + [False] * n_rejected))
    chosen = balanced_choice(accepted, 16)
    assert len(chosen) == len(set(chosen.tolist())) == 16
    assert int(accepted[chosen].sum()) == want_accepted


def test_own_samples_are_split_by_the_checker_and_drawn_into_understanding_batches(test_model: Path):
    """The judge learns on the model's own images too: stored by the checker's verdict, drawn as their
    share of the mix says, labelled by the checker like every other source."""
    import dataclasses

    from rayunify.models.janus.model import JanusUnifiedModel

    vq = JanusUnifiedModel.from_pretrained(test_model).model.model.vqmodel
    prompts, _ = split_prompts(SIZES["test"])
    only_own = dataclasses.replace(SIZES["test"], mix=dataclasses.replace(SIZES["test"].mix, own=1.0, clean=0.0,
                                   corrupted=0.0, one_attribute_away=0.0, random_prompt=0.0))  # fmt: skip
    data = ShapesData(vq, prompts, only_own, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    good = [render(data.specs[p.text], rng) for p in prompts[:4]]
    bad = [np.zeros_like(good[0]) for _ in prompts[4:8]]  # a blank canvas shows nothing the prompt asks for
    data.add_own(prompts[:8], np.stack(good + bad))
    assert len(data.own[True]) == 4 and len(data.own[False]) == 4
    images, texts, verdicts = data.understanding_batch(8)
    own_images = {img.tobytes() for img in good + bad}
    assert all(img.tobytes() in own_images for img in images)
    assert sum(v == Verdict.ACCEPT for v in verdicts) == 4
    truth = [r.aligned for r in check_batch(np.stack(images), [data.specs[t] for t in texts])]
    assert truth == [v == Verdict.ACCEPT for v in verdicts]


def test_unbalanced_own_rows_keep_the_generators_success_rate_and_the_rest_stays_balanced(test_model: Path):
    """mix.own_balanced=False: own samples are drawn at the rate the model gets them right (here 1 in 8),
    so the judge learns the prior it faces on its own images; rendered rows stay half and half."""
    import dataclasses

    from rayunify.models.janus.model import JanusUnifiedModel

    vq = JanusUnifiedModel.from_pretrained(test_model).model.model.vqmodel
    prompts, _ = split_prompts(SIZES["test"])
    mix = dataclasses.replace(SIZES["test"].mix, own=1.0, clean=0.5, corrupted=0.5, one_attribute_away=0.0,
                              random_prompt=0.0, own_balanced=False)  # fmt: skip
    data = ShapesData(vq, prompts, dataclasses.replace(SIZES["test"], mix=mix), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    good = [render(data.specs[prompts[0].text], rng)]
    bad = [np.zeros_like(good[0]) for _ in range(7)]
    data.add_own(prompts[:8], np.stack(good + bad))
    assert [aligned for _, _, aligned in data.own_recent] == [True] + [False] * 7
    own_images = {img.tobytes() for img in good + bad}
    own_accepted = own_total = rendered_accepted = rendered_total = 0
    for _ in range(6):
        images, texts, verdicts = data.understanding_batch(64)
        assert len(images) == len(texts) == len(verdicts) == 64
        truth = [r.aligned for r in check_batch(np.stack(images), [data.specs[t] for t in texts])]
        assert truth == [v == Verdict.ACCEPT for v in verdicts]
        for image, verdict in zip(images, verdicts, strict=True):
            own = image.tobytes() in own_images
            own_total += own
            own_accepted += own and verdict == Verdict.ACCEPT
            rendered_total += not own
            rendered_accepted += not own and verdict == Verdict.ACCEPT
    assert 0.4 < own_total / 384 < 0.6  # own share 1.0 of 2.0
    assert 0.05 < own_accepted / own_total < 0.22  # 1/8, not 1/2
    assert abs(rendered_accepted / rendered_total - 0.5) < 0.05


def spy_on_render(monkeypatch, spy) -> None:
    """ShapesData renders through its world's operations: v1's, with `spy` in place of the renderer."""
    from rayunify.shapes.worlds import world_ops

    monkeypatch.setattr(shapes_data, "world_ops", lambda name: dataclasses.replace(world_ops(name), render=spy))


def test_opposite_relation_negatives_show_the_two_objects_in_each_others_places(test_model: Path, monkeypatch):
    import dataclasses

    from rayunify.models.janus.model import JanusUnifiedModel

    vq = JanusUnifiedModel.from_pretrained(test_model).model.model.vqmodel
    prompts, _ = split_prompts(SIZES["test"])
    mix = dataclasses.replace(SIZES["test"].mix, clean=0.0, corrupted=0.0, one_attribute_away=0.0, random_prompt=0.0,
                              own=0.0, opposite_relation=1.0)  # fmt: skip
    only_position = tuple(float(c == "position") for c in CATEGORIES)
    cfg = dataclasses.replace(SIZES["test"], mix=mix, category_weights=only_position)
    rendered = []
    spy_on_render(monkeypatch, lambda spec, rng: rendered.append(spec) or render(spec, rng))
    data = ShapesData(vq, prompts, cfg, np.random.default_rng(0))
    images, texts, verdicts = data.understanding_batch(8)
    assert len(rendered) == 16 and {s.relation for s in rendered} <= {"left of", "right of", "above", "below"}
    drawn = {(s.objects, OPPOSITE_RELATION[s.relation]) for s in rendered}
    assert all((data.specs[t].objects, data.specs[t].relation) in drawn for t in texts)
    assert all(v == Verdict.REJECT for v in verdicts)  # labelled by the checker, as every source is


def test_caption_noise_renders_specs_one_attribute_away_and_leaves_the_noiseless_stream_alone(test_model: Path, monkeypatch):
    """The noisy base's generation data: with caption_noise 1 every image is drawn from a spec one attribute
    away from its prompt; at 0, from the prompt's own spec, and the batches are exactly those of a config
    that never had the field."""
    from rayunify.models.janus.model import JanusUnifiedModel

    vq = JanusUnifiedModel.from_pretrained(test_model).model.model.vqmodel
    prompts, _ = split_prompts(SIZES["test"])
    drawn: list[Spec] = []
    spy_on_render(monkeypatch, lambda spec, rng: drawn.append(spec) or render(spec, rng))

    def drawn_specs(noise: float) -> tuple[list[str], list[Spec]]:
        drawn.clear()
        data = ShapesData(vq, prompts, dataclasses.replace(SIZES["test"], caption_noise=noise), np.random.default_rng(0))
        texts, _ = data.generation_batch(32)
        return texts, list(drawn)

    texts, specs = drawn_specs(1.0)
    truth = [Spec.from_dict(next(p.spec for p in prompts if p.text == t)) for t in texts]
    assert all(meaning_key(s) != meaning_key(t) for s, t in zip(specs, truth, strict=True))
    texts, specs = drawn_specs(0.0)
    assert specs == [Spec.from_dict(next(p.spec for p in prompts if p.text == t)) for t in texts]
    clean = ShapesData(vq, prompts, SIZES["test"], np.random.default_rng(3)).generation_batch(8)
    zero = ShapesData(vq, prompts, dataclasses.replace(SIZES["test"], caption_noise=0.0), np.random.default_rng(3))
    again = zero.generation_batch(8)
    assert clean[0] == again[0] and torch.equal(clean[1], again[1])


@pytest.mark.parametrize("by_kind", [False, True])
def test_one_attribute_away_changes_exactly_one_thing(by_kind):
    rng = np.random.default_rng(0)
    for category in CATEGORIES:
        for spec in all_specs(category)[:20]:
            other = one_attribute_away(spec, rng, by_kind=by_kind)
            assert isinstance(other, Spec) and other != spec
            differences = sum(a != b for a, b in zip(spec.objects, other.objects, strict=False))
            differences += abs(len(spec.objects) - len(other.objects)) + (spec.relation != other.relation)
            swapped_colours = len(spec.objects) == 2 and differences == 2 and spec.relation == other.relation
            assert differences == 1 or swapped_colours, (spec, other)


def test_negatives_by_kind_draw_each_kind_of_change_equally_often():
    """A position prompt has 14 shape or colour changes but 4 relation changes: drawn by spec, a relation
    change is 4 in 19; drawn by kind (shape, colour, relation, colour swap), 1 in 4."""
    spec = Spec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), "left of")
    shares = {}
    for by_kind in (False, True):
        rng = np.random.default_rng(0)
        draws = [one_attribute_away(spec, rng, by_kind=by_kind) for _ in range(4000)]
        shares[by_kind] = sum(d.objects == spec.objects for d in draws) / len(draws)
    assert abs(shares[False] - 4 / 19) < 0.03
    assert abs(shares[True] - 1 / 4) < 0.03


def test_prompt_split_holds_out_the_experiments_eval_prompts():
    cfg = SIZES["base"]
    train, evaluation = split_prompts(cfg)
    assert len(train) == cfg.n_train_prompts and len(evaluation) == cfg.n_eval_prompts
    assert not {p.text for p in train} & {p.text for p in evaluation}
    # The held-out list of runs without prompts.eval_split is generate_prompts(192, 96, seed=0): none of those is
    # a training prompt. (configs/shapes/*.yaml use the test split, held out too: tests/test_shapes_splits.py.)
    experiment_train, experiment_eval = generate_prompts(192, 96, seed=0)
    assert [p.text for p in experiment_eval] == [p.text for p in evaluation[:96]]
    assert {p.text for p in experiment_train} <= {p.text for p in train}


def test_patch_probe_labels_each_patch_with_the_object_over_it(test_model: Path):
    """The vision tower's own objective: each patch's target is the colour and shape of the object whose
    box covers it, background elsewhere; the joint step's loss reads the features of the judge's forward."""
    from rayunify.models.janus.model import JanusUnifiedModel
    from rayunify.shapes.render import render_with_objects

    um = JanusUnifiedModel.from_pretrained(test_model)
    probe = PatchProbe(um)
    image, (drawn,) = render_with_objects(Spec((ObjectSpec("square", "red"),)), np.random.default_rng(0))
    colour, shape = probe.targets([image])
    cell = image.shape[0] // probe.grid
    x0, y0, w, h = drawn.box
    inside = np.zeros((probe.grid, probe.grid), bool)
    inside[y0 // cell : (y0 + h - 1) // cell + 1, x0 // cell : (x0 + w - 1) // cell + 1] = True
    inside = torch.from_numpy(inside.ravel())
    assert (colour[0][inside] == probe.colours["red"]).all() and (colour[0][~inside] == 0).all()
    assert (shape[0][inside] == probe.shapes["square"]).all() and (shape[0][~inside] == 0).all()
    loss = probe.loss_on([image, np.zeros_like(image)])
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    judged = JudgeLoss(um)([image, np.zeros_like(image)], ["a red square"] * 2, [Verdict.ACCEPT, Verdict.REJECT])
    torch.testing.assert_close(probe.loss(judged.vision_features, [image, np.zeros_like(image)]), loss)
    with pytest.raises(RuntimeError, match="features of 2 images for 1"):
        probe.loss(judged.vision_features, [image])
    assert not um.model.model.vision_model._forward_hooks, "the judge's forward must leave no hook behind"
