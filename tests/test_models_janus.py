"""The Janus unified-model layer against transformers' own Janus, on a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from rayunify.checkpoints import check_model_dir
from rayunify.config import JanusModelConfig, LoraConfig
from rayunify.judges import question
from rayunify.models import build_model
from rayunify.models.janus.decoding import KV_BUCKET
from rayunify.models.janus.factory import TINY, build_janus
from rayunify.models.janus.model import JanusUnifiedModel, LoraSettings
from rayunify.types import SamplingSettings, Verdict

PROMPTS = ["a red circle", "a blue square"]  # same token length: no padding, so HF's positions equal ours


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_janus(TINY, seed=0)
    return JanusUnifiedModel(model, processor)


def hf_inputs(um: JanusUnifiedModel, prompts):
    chats = [
        um.processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": p}]}], add_generation_prompt=True)
        for p in prompts
    ]
    return um.processor(text=chats, generation_mode="image", padding=True, return_tensors="pt")


def test_greedy_tokens_equal_transformers_generate(tiny):
    enc = hf_inputs(tiny, PROMPTS)
    assert enc["attention_mask"].all(), "the parity prompts must not need padding"
    theirs = tiny.model.generate(**enc, generation_mode="image", do_sample=False, guidance_scale=5.0)
    ours = tiny.generate(PROMPTS, n=1, settings=SamplingSettings(guidance_scale=5.0), greedy=True)
    assert torch.equal(theirs, ours.image_tokens)


def test_seeded_sampling_equals_transformers_generate(tiny):
    enc = hf_inputs(tiny, PROMPTS)
    torch.manual_seed(7)
    theirs = tiny.model.generate(
        **enc, generation_mode="image", do_sample=True, top_k=0, temperature=1.0, num_return_sequences=3, guidance_scale=3.0
    )
    ours = tiny.generate(PROMPTS, n=3, settings=SamplingSettings(guidance_scale=3.0), seed=7)
    assert torch.equal(theirs, ours.image_tokens)


@pytest.mark.parametrize("bucket", [0, 4, 7])
def test_static_shape_decode_step_matches_eager(tiny, bucket):
    """The fixed-shape step that GPUs capture as CUDA graphs gives the same tokens as the eager step, reading
    the whole buffer (bucket 0) or only up to the end of the current KV-length bucket."""
    settings = SamplingSettings(guidance_scale=3.0)
    eager = tiny.generate(["a circle", "two big red squares"], n=2, settings=settings, seed=5)
    tiny.decode_mode, tiny.decode_bucket = "static", bucket
    try:
        static = tiny.generate(["a circle", "two big red squares"], n=2, settings=settings, seed=5)
    finally:
        tiny.decode_mode, tiny.decode_bucket = "auto", KV_BUCKET
    assert torch.equal(eager.image_tokens, static.image_tokens)
    torch.testing.assert_close(eager.logprobs, static.logprobs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("greedy", [True, False])
def test_bucketed_static_decode_equals_transformers_generate(tiny, greedy):
    enc = hf_inputs(tiny, PROMPTS)
    torch.manual_seed(7)
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "top_k": 0, "temperature": 1.0, "num_return_sequences": 2}
    theirs = tiny.model.generate(**enc, generation_mode="image", guidance_scale=3.0, **sampling)
    tiny.decode_mode, tiny.decode_bucket = "static", 5
    try:
        ours = tiny.generate(PROMPTS, n=1 if greedy else 2, settings=SamplingSettings(guidance_scale=3.0), seed=7, greedy=greedy)
    finally:
        tiny.decode_mode, tiny.decode_bucket = "auto", KV_BUCKET
    assert torch.equal(theirs, ours.image_tokens)


def test_bucketed_decode_reads_what_it_wrote_rounded_up_to_a_bucket(tiny):
    """Each step reads the filled slots rounded up to the bucket, never the unwritten rest of the buffer."""
    from rayunify.models.janus.decoding import GraphDecoder

    seen: list[GraphDecoder] = []
    make = tiny._decoder
    tiny._decoder = lambda *a: seen.append(make(*a)) or seen[-1]  # type: ignore[method-assign]
    tiny.decode_mode, tiny.decode_bucket = "static", 4
    try:
        tiny.generate(["a circle"], n=1, settings=SamplingSettings(guidance_scale=3.0), seed=0)
    finally:
        tiny.decode_mode, tiny.decode_bucket = "auto", KV_BUCKET
        del tiny._decoder
    decoder = seen[0]
    capacity = decoder.cache.capacity
    filled = range(capacity - tiny.num_image_tokens + 1, capacity)  # the new token's slot included
    assert len(decoder.spans) == tiny.num_image_tokens - 1
    assert all(f <= span < f + 4 or span == capacity for f, span in zip(filled, decoder.spans, strict=True))
    assert decoder.spans[0] < capacity and len(set(decoder.spans)) > 2


def test_static_kv_unwritten_slots_are_zero_so_masked_reads_stay_finite():
    """The static step attends over the whole buffer with a mask; a masked weight of 0 times leftover NaN
    memory is NaN. The buffer's unwritten tail must therefore be zeros, never uninitialised memory."""
    from types import SimpleNamespace

    from rayunify.models.janus.kvcache import PreallocatedKV, StaticKV

    layer = SimpleNamespace(keys=torch.randn(2, 1, 3, 4), values=torch.randn(2, 1, 3, 4))
    cache = StaticKV(PreallocatedKV(SimpleNamespace(layers=[layer]), extra_tokens=5))
    keys, values = cache.update(torch.randn(2, 1, 1, 4), torch.randn(2, 1, 1, 4), 0)
    assert keys.shape[-2] == 8 and torch.count_nonzero(keys[:, :, 4:]) == 0 and torch.count_nonzero(values[:, :, 4:]) == 0
    mask = torch.zeros(2, 1, 1, 8, dtype=torch.bool)
    mask[..., :4] = True
    out = torch.nn.functional.scaled_dot_product_attention(torch.randn(2, 1, 1, 4), keys, values, attn_mask=mask)
    assert torch.isfinite(out).all()


def test_same_seed_same_images_and_batch_invariance(tiny):
    settings = SamplingSettings(guidance_scale=5.0)
    a = tiny.generate(["a green triangle"], n=2, settings=settings, seed=1)
    b = tiny.generate(["a green triangle"], n=2, settings=settings, seed=1)
    assert torch.equal(a.image_tokens, b.image_tokens)
    # Padding-aware positions: a prompt's greedy image does not depend on a longer neighbour in the batch.
    alone = tiny.generate(["a circle"], greedy=True).image_tokens
    batched = tiny.generate(["a circle", "three small yellow triangles above a big square"], greedy=True).image_tokens
    assert torch.equal(alone[0], batched[0])


@pytest.mark.parametrize("geometry,scale", [("cfg", 5.0), ("conditional", 1.0)])
def test_teacher_forced_logprobs_match_generation(tiny, geometry, scale):
    out = tiny.generate(PROMPTS, n=2, settings=SamplingSettings(guidance_scale=scale), seed=3)
    prompts = [p for p in PROMPTS for _ in range(2)]
    forced = tiny.image_logprobs(prompts, out.image_tokens, geometry=geometry, guidance_scale=scale)
    assert forced.shape == out.logprobs.shape
    torch.testing.assert_close(forced.detach(), out.logprobs, atol=1e-4, rtol=1e-4)


def test_logprobs_have_gradients_only_into_the_language_model(tiny):
    out = tiny.generate(PROMPTS, seed=0)
    tiny.model.zero_grad(set_to_none=True)
    tiny.image_logprobs(PROMPTS, out.image_tokens).sum().backward()
    grads = {n for n, p in tiny.model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("model.language_model.") for n in grads)
    tiny.model.zero_grad(set_to_none=True)


def test_decode_returns_uint8_images(tiny):
    out = tiny.generate(PROMPTS, seed=0, decode=True)
    assert out.images.dtype == np.uint8 and out.images.shape == (2, TINY.image_size, TINY.image_size, 3)


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_generate_frees_the_kv_cache_before_the_vq_decode(tiny, monkeypatch, mode):
    # The memory estimate counts the larger of the decode loop and the VQ decode, not their sum.
    import weakref

    caches, alive_at_decode = [], []
    make_decoder, decode_images = tiny._decoder, tiny.decode_images

    def tracked_decoder(hidden, cache, mask, scale):
        caches.append(weakref.ref(cache.keys[0]))  # a buffer both decoders write into
        return make_decoder(hidden, cache, mask, scale)

    def tracked_decode(tokens):
        alive_at_decode.append(caches[-1]() is not None)
        return decode_images(tokens)

    monkeypatch.setattr(tiny, "_decoder", tracked_decoder)
    monkeypatch.setattr(tiny, "decode_images", tracked_decode)
    monkeypatch.setattr(tiny, "decode_mode", mode)
    assert tiny.generate(PROMPTS, seed=0, decode=True).images is not None
    assert alive_at_decode == [False]


def test_judge_on_random_model_counts_invalid_and_scores_in_range(tiny):
    images = tiny.generate(PROMPTS, seed=0, decode=True).images
    verdicts = tiny.judge(list(images), PROMPTS)
    assert len(verdicts) == 2
    assert all(0.0 <= j.score <= 1.0 for j in verdicts)
    assert all(j.verdict == Verdict.INVALID for j in verdicts)  # a random model does not answer the format


def teach_to_answer(um: JanusUnifiedModel, images, prompts, answers, steps=60):
    """A few steps of understanding training, the way the ShapesWorld base learns to judge."""
    enc = um.judge_inputs(images, prompts, answers=answers)
    prompt_len = um.judge_inputs(images, prompts)["input_ids"].shape[1]
    labels = enc["input_ids"].clone()
    labels[:, :prompt_len] = -100
    opt = torch.optim.AdamW([p for _, p in um.trainable_named_parameters()], lr=3e-3)
    for _ in range(steps):
        loss = um.model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def test_judge_parses_answers_and_soft_score_agrees_with_teacher_forcing():
    model, processor = build_janus(TINY, seed=1)
    um = JanusUnifiedModel(model, processor)
    images = [np.full((32, 32, 3), c, np.uint8) for c in (0, 255)]
    prompts = ["a black image", "a white image"]
    answers = [question.answer_text(Verdict.REJECT), question.answer_text(Verdict.ACCEPT)]
    assert teach_to_answer(um, images, prompts, [a + processor.tokenizer.eos_token for a in answers]) < 0.1
    got = um.judge(images, prompts)
    assert [j.verdict for j in got] == [Verdict.REJECT, Verdict.ACCEPT]
    assert got[0].score < 0.5 < got[1].score
    forced = um._teacher_forced_digit_logits(um.judge_inputs(images, prompts))
    for j, logits in zip(got, forced, strict=True):
        assert j.score == pytest.approx(question.soft_score(*logits), abs=1e-5)
    singles = [um.judge([img], [p])[0] for img, p in zip(images, prompts, strict=True)]
    for batch, single in zip(got, singles, strict=True):
        assert batch.verdict == single.verdict and batch.score == pytest.approx(single.score, abs=1e-5)


def test_lora_reference_is_base_and_training_changes_only_adapters():
    model, processor = build_janus(TINY, seed=2)
    base_lp = JanusUnifiedModel(*build_janus(TINY, seed=2)).image_logprobs(
        PROMPTS, torch.zeros(2, TINY.num_image_tokens, dtype=torch.long)
    )
    um = JanusUnifiedModel(model, processor, trainable="lora", lora=LoraSettings(rank=4, alpha=8))
    names = [n for n, _ in um.trainable_named_parameters()]
    assert names and all("lora_" in n for n in names)
    frozen_before = {n: p.detach().clone() for n, p in um.model.named_parameters() if not p.requires_grad}
    trainable_before = {n: p.detach().clone() for n, p in um.trainable_named_parameters()}
    tokens = torch.zeros(2, TINY.num_image_tokens, dtype=torch.long)
    opt = torch.optim.AdamW([p for _, p in um.trainable_named_parameters()], lr=1e-2)
    for _ in range(3):
        loss = -um.image_logprobs(PROMPTS, tokens).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen_before[n]) for n, p in um.model.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(p, trainable_before[n]) for n, p in um.trainable_named_parameters())
    with torch.no_grad():
        policy = um.image_logprobs(PROMPTS, tokens)
        with um.reference():
            reference = um.image_logprobs(PROMPTS, tokens)
    torch.testing.assert_close(reference, base_lp.detach())
    assert not torch.allclose(policy, reference)


def test_full_fine_tuning_reference_is_a_frozen_copy_swapped_in():
    um = JanusUnifiedModel(*build_janus(TINY, seed=2))
    tokens = torch.zeros(2, TINY.num_image_tokens, dtype=torch.long)
    frozen = um.make_reference_copy()
    assert frozen is not None and not any(p.requires_grad for p in frozen.parameters())
    with torch.no_grad():
        before = um.image_logprobs(PROMPTS, tokens)
    opt = torch.optim.AdamW([p for _, p in um.trainable_named_parameters()], lr=1e-2)
    loss = -um.image_logprobs(PROMPTS, tokens).sum()
    loss.backward()
    opt.step()
    live = um.language_model
    with torch.no_grad():
        with um.reference(frozen):
            reference = um.image_logprobs(PROMPTS, tokens)
        policy = um.image_logprobs(PROMPTS, tokens)
    assert um.language_model is live, "the live language model must be back after the reference context"
    torch.testing.assert_close(reference, before)
    assert not torch.allclose(policy, reference)
    lora = JanusUnifiedModel(*build_janus(TINY, seed=2), trainable="lora", lora=LoraSettings(rank=4, alpha=8))
    assert lora.make_reference_copy() is None  # LoRA's reference is the adapter disabled


def test_lora_save_load_round_trip_reproduces_outputs(tmp_path):
    model, processor = build_janus(TINY, seed=3)
    um = JanusUnifiedModel(model, processor, trainable="lora", lora=LoraSettings(rank=4, alpha=8))
    with torch.no_grad():
        for _, p in um.trainable_named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    expected = um.generate(PROMPTS, greedy=True).image_tokens
    um.save_pretrained(tmp_path / "export")
    plain = JanusForConditionalGeneration.from_pretrained(tmp_path / "export")  # plain transformers loads it
    assert not any("lora" in n for n, _ in plain.named_parameters())
    reloaded = JanusUnifiedModel.from_pretrained(tmp_path / "export")
    assert torch.equal(reloaded.generate(PROMPTS, greedy=True).image_tokens, expected)


def test_full_save_load_round_trip_in_hf_layout(tmp_path):
    model, processor = build_janus(TINY, seed=4)
    um = JanusUnifiedModel(model, processor)
    um.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    JanusProcessor.from_pretrained(tmp_path)
    again = build_model(JanusModelConfig(path=str(tmp_path)), device="cpu")
    assert torch.equal(again.generate(PROMPTS, greedy=True).image_tokens, um.generate(PROMPTS, greedy=True).image_tokens)


def test_build_model_lora_from_config(tmp_path):
    model, processor = build_janus(TINY, seed=5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    um = build_model(JanusModelConfig(path=str(tmp_path), trainable="lora", lora=LoraConfig(rank=2)), device="cpu")
    assert all("lora_" in n for n, _ in um.trainable_named_parameters())


def test_bad_inputs_give_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="prompts is empty"):
        tiny.generate([])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        tiny.generate(["   "])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        tiny.generate(["circle " * 1000])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_dir(tmp_path / "nowhere", family="janus")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "janus"}))
    with pytest.raises(FileNotFoundError, match="missing weights"):
        check_model_dir(tmp_path, family="janus")
    with pytest.raises(ValueError, match="unknown built-in model"):
        build_model(JanusModelConfig(path="builtin:nope"))
    with pytest.raises(ValueError, match="geometry"):
        tiny.image_logprobs(PROMPTS, torch.zeros(2, TINY.num_image_tokens, dtype=torch.long), geometry="nope")
