"""ShapesWorld: prompts, renderer and checker agree with the truth; malformed prompt files fail clearly."""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rayunify.shapes import (
    CATEGORIES,
    PALETTE,
    ObjectSpec,
    Spec,
    all_specs,
    check,
    check_batch,
    generate_prompts,
    load_prompts_jsonl,
    make_prompt_text,
    match,
    meaning_key,
    render,
    render_with_objects,
    save_prompts_jsonl,
)

ALL_SPECS = [spec for category in CATEGORIES for spec in all_specs(category)]


def _random_specs(n: int, rng: np.random.Generator) -> list[Spec]:
    """Category first, so every category is well represented."""
    by_category = [all_specs(c) for c in CATEGORIES]
    picks = [by_category[rng.integers(len(by_category))] for _ in range(n)]
    return [specs[rng.integers(len(specs))] for specs in picks]


def _cases(n: int, seed: int) -> tuple[np.ndarray, list[Spec], np.ndarray]:
    """Rendered images, each checked against its own spec half the time and a random one otherwise, with
    the truth from the scene the renderer drew."""
    rng = np.random.default_rng(seed)
    images, queries, truth = [], [], []
    for drawn in _random_specs(n, rng):
        query = drawn if rng.random() < 0.5 else ALL_SPECS[rng.integers(len(ALL_SPECS))]
        image, objects = render_with_objects(drawn, rng)
        images.append(image)
        queries.append(query)
        truth.append(match(objects, query).aligned)
    return np.stack(images), queries, np.array(truth)


def _blur(images: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur, edges replicated."""
    x = images.astype(np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (1, 1)
        p = np.pad(x, pad, mode="edge")
        lo, mid, hi = (np.take(p, range(k, k + x.shape[axis]), axis=axis) for k in range(3))
        x = (lo + 2 * mid + hi) / 4
    return x


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _agreement(images: np.ndarray, queries: list[Spec], truth: np.ndarray) -> float:
    verdicts = np.array([r.aligned for r in check_batch(images, queries)])
    return float((verdicts == truth).mean())


def test_checker_agrees_with_truth_on_rendered_images():
    images, queries, truth = _cases(2000, seed=0)
    assert 0.3 < truth.mean() < 0.7  # both verdicts well represented
    agreement = _agreement(images, queries, truth)
    print(f"clean agreement {agreement:.4f}")
    assert agreement >= 0.995


def test_checker_agrees_with_truth_under_blur_noise_and_jpeg():
    images, queries, truth = _cases(1000, seed=1)
    rng = np.random.default_rng(1)
    blurred = np.clip(_blur(images) + rng.normal(0, 10, images.shape), 0, 255).astype(np.uint8)
    noisy = np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
    jpegged = np.stack([_jpeg(im, quality=75) for im in noisy])
    for name, degraded in (("blur + noise 10", blurred), ("noise 8 + jpeg 75", jpegged)):
        agreement = _agreement(degraded, queries, truth)
        print(f"{name} agreement {agreement:.4f}")
        assert agreement >= 0.995, name


def test_checker_rejects_blank_and_noise_images():
    rng = np.random.default_rng(2)
    blanks = np.stack(
        [np.full((32, 32, 3), v, np.uint8) for v in ((0, 0, 0), (128, 128, 128), (255, 255, 255))]
    )
    blanks = np.concatenate(
        [blanks, np.stack([np.full((32, 32, 3), rgb, np.uint8) for rgb in PALETTE.values()])]
    )
    noise = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    for images in (blanks, noise):
        for spec in ALL_SPECS[::7]:
            results = check_batch(images, [spec] * len(images))
            assert not any(r.aligned for r in results), make_prompt_text(spec)


def _one_attribute_changed(spec: Spec) -> list[Spec]:
    """Valid specs differing from `spec` in one attribute (shape, colour, count or relation direction), each
    false for every image of `spec`."""
    first, rest = spec.objects[0], spec.objects[1:]
    other_shape = next(s for s in ("circle", "square", "triangle") if s != first.shape)
    other_colour = "green" if first.colour != "green" else "red"
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    candidates = [lambda: Spec((ObjectSpec(other_shape, first.colour, first.count), *rest), spec.relation)]
    if first.colour is not None:
        candidates.append(
            lambda: Spec((ObjectSpec(first.shape, other_colour, first.count), *rest), spec.relation)
        )
    if spec.relation is None:
        candidates.append(lambda: Spec((ObjectSpec(first.shape, first.colour, first.count + 1), *rest)))
    else:
        candidates.append(lambda: Spec(spec.objects, opposite[spec.relation]))
    variants = []
    for make in candidates:
        with contextlib.suppress(ValueError):  # the change broke a Spec rule (5 objects, a kind twice)
            variants.append(make())
    return variants


def test_checker_rejects_images_of_a_spec_one_attribute_away():
    rng = np.random.default_rng(3)
    tested = 0
    for spec in _random_specs(300, rng):
        image = render(spec, rng)
        assert check(image, spec).aligned, make_prompt_text(spec)
        for variant in _one_attribute_changed(spec):
            result = check(image, variant)
            assert not result.aligned, (
                f"{make_prompt_text(spec)!r} image passed as {make_prompt_text(variant)!r}"
            )
            assert result.reasons
            tested += 1
    assert tested > 300


def test_check_result_breaks_the_verdict_down():
    rng = np.random.default_rng(4)
    spec = Spec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), "left of")
    image = render(spec, rng)
    result = check(image, spec)
    assert result.aligned and result.relation_ok and not result.reasons
    assert result.counts == {("circle", "red"): 1, ("square", "blue"): 1}
    swapped = Spec(spec.objects, "right of")
    assert check(image, swapped).relation_ok is False


def test_prompt_generation_is_deterministic_and_splits_are_disjoint():
    train, evaluation = generate_prompts(400, 80, seed=7)
    again_train, again_eval = generate_prompts(400, 80, seed=7)
    assert train == again_train and evaluation == again_eval
    assert len(train) == 400 and len(evaluation) == 80
    train_texts = {p.text for p in train}
    assert len(train_texts) == 400
    assert train_texts.isdisjoint(p.text for p in evaluation)
    meanings = {meaning_key(Spec.from_dict(p.spec)) for p in train}
    assert meanings.isdisjoint(meaning_key(Spec.from_dict(p.spec)) for p in evaluation)
    assert {p.category for p in evaluation} == set(CATEGORIES)
    assert generate_prompts(400, 80, seed=8)[1] != evaluation
    for p in train[:50]:
        assert p.text == make_prompt_text(Spec.from_dict(p.spec))


def test_prompt_generation_refuses_more_prompts_than_exist():
    with pytest.raises(ValueError, match="distinct texts"):
        generate_prompts(10_000, 10, seed=0)


def test_jsonl_round_trip(tmp_path: Path):
    train, _ = generate_prompts(60, 0, seed=0)
    path = tmp_path / "prompts.jsonl"
    save_prompts_jsonl(path, train)
    assert load_prompts_jsonl(path) == train
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"prompt", "category", "spec"}


GOOD_LINE = json.dumps(
    {
        "prompt": "a red circle",
        "category": "colour",
        "spec": {"objects": [{"shape": "circle", "colour": "red"}]},
    }
)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"prompt": "a red circle", ', "not valid JSON"),
        (json.dumps({"prompt": "a circle", "category": "single_object"}), "missing key 'spec'"),
        (GOOD_LINE.replace('"circle"', '"hexagon"'), "unknown shape 'hexagon'"),
        (GOOD_LINE.replace('"red"', '"beige"'), "unknown colour 'beige'"),
        (GOOD_LINE.replace('"category": "colour"', '"category": "nonsense"'), "unknown category 'nonsense'"),
    ],
)
def test_malformed_jsonl_names_file_line_and_reason(tmp_path: Path, bad_line: str, reason: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(GOOD_LINE + "\n\n" + bad_line + "\n")
    with pytest.raises(ValueError) as error:
        load_prompts_jsonl(path)
    message = str(error.value)
    assert f"{path}:3:" in message and reason in message


def test_empty_jsonl_is_an_error(tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        load_prompts_jsonl(path)


def test_checker_speed():
    images, queries, _ = _cases(1000, seed=5)
    start = time.perf_counter()
    check_batch(images, queries)
    per_second = len(images) / (time.perf_counter() - start)
    print(f"checker: {per_second:.0f} images/s")
    assert per_second > 200  # loose: the machine is shared; the benchmark reports the real figure


def test_held_out_split_keeps_eval_prompts_out_of_the_base_training_set_at_any_sizes():
    from rayunify.shapes.world import held_out_split

    base_train, base_eval = held_out_split(1044, 96, seed=0)  # the ShapesWorld base model's own split
    base_meanings = {meaning_key(Spec.from_dict(p.spec)) for p in base_train}
    for n_train, n_eval in [(192, 96), (1044, 96), (16, 4), (100, 90), (0, 96)]:  # (0, n): `rayunify eval`
        train, evaluation = held_out_split(n_train, n_eval, seed=0)
        assert len(train) == n_train and len(evaluation) == n_eval
        assert train == base_train[:n_train]  # prefixes of one split, not a new cut per ratio
        assert base_meanings.isdisjoint(meaning_key(Spec.from_dict(p.spec)) for p in evaluation)
    assert held_out_split(192, 96, seed=0) == generate_prompts(192, 96, seed=0)
    # generate_prompts at another ratio cuts the meanings anew: another eval list, and where the eval share
    # is above a third, prompts the base trained on.
    assert generate_prompts(1044, 96, seed=0)[1] != base_eval
    _, direct_eval = generate_prompts(100, 90, seed=0)
    assert not base_meanings.isdisjoint(meaning_key(Spec.from_dict(p.spec)) for p in direct_eval)


def test_held_out_split_by_category_is_the_same_split_filtered():
    from rayunify.shapes.world import held_out_split

    full_train, full_eval = held_out_split(1044, 522, seed=0)  # both whole sides
    train, evaluation = held_out_split(1000, 1000, seed=0, categories=["colour", "single_object"])
    # n_train / n_eval are upper bounds here: the two categories hold 14 train and 7 eval texts.
    assert (len(train), len(evaluation)) == (14, 7)
    assert train == [p for p in full_train if p.category in ("single_object", "colour")]
    assert evaluation == [p for p in full_eval if p.category in ("single_object", "colour")]
    assert held_out_split(5, 3, seed=0, categories=["colour"]) == (
        [p for p in train if p.category == "colour"][:5],
        [p for p in evaluation if p.category == "colour"][:3],
    )
    with pytest.raises(ValueError, match="unknown ShapesWorld category 'colours'"):
        held_out_split(10, 10, seed=0, categories=["colours"])
    with pytest.raises(ValueError, match="categories is empty"):
        held_out_split(10, 10, seed=0, categories=[])
