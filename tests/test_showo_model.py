"""The Show-o family on a tiny random Show-o: generation, log-prob estimators, judge, files, LoRA."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rayunify.config import LoraConfig, ShowoModelConfig
from rayunify.models import build_model
from rayunify.models.showo.factory import build_showo, save_showo_dir
from rayunify.models.showo.magvit import MagvitArch, MAGVITv2
from rayunify.models.showo.model import ShowoUnifiedModel
from rayunify.models.showo.sampling import prompt_mask
from rayunify.types import SamplingSettings, Verdict

PROMPTS = ["a red circle", "a blue square left of a red circle"]
CFG = SamplingSettings(guidance_scale=3.0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("showo") / "tiny"
    save_showo_dir(path, *build_showo(seed=0))
    return path


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return ShowoUnifiedModel.from_pretrained(tiny_dir)


def test_generation_is_seeded_and_a_prompt_draws_the_same_in_any_batch(tiny):
    both = tiny.generate(PROMPTS, n=2, settings=CFG, seed=[11, 12])
    again = tiny.generate(PROMPTS, n=2, settings=CFG, seed=[11, 12])
    alone = tiny.generate(PROMPTS[1:], n=2, settings=CFG, seed=[12])
    assert both.image_tokens.shape == (4, tiny.num_image_tokens)
    assert torch.equal(both.image_tokens, again.image_tokens)
    assert torch.equal(both.image_tokens[2:], alone.image_tokens)
    assert torch.allclose(both.logprobs[2:], alone.logprobs, atol=1e-5)
    assert torch.equal(both.commit_steps[2:], alone.commit_steps)
    steps = both.commit_steps
    assert steps.shape == both.image_tokens.shape and steps.min() == 0 and steps.max() == tiny.steps - 1
    assert both.image_tokens.min() >= 0 and both.image_tokens.max() < tiny.vocab.codebook_size  # plain codes


def test_cached_prefix_gives_the_full_forward_logits(tiny):
    prefixes = tiny._prefixes(PROMPTS)
    state = torch.randint(0, tiny.vocab.codebook_size, (2, tiny.num_image_tokens))
    state[:, ::3] = -1
    with torch.no_grad():
        full = tiny.full_forward_code_logits(prefixes, state)
        cached = tiny.cached_code_logits_fn()(prefixes, state)
    assert torch.allclose(full, cached, atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_teacher_forced_trajectory_logprobs_equal_generation(tiny, scale):
    out = tiny.generate(PROMPTS, n=2, settings=SamplingSettings(guidance_scale=scale), seed=3)
    texts = [p for p in PROMPTS for _ in range(2)]
    replayed = tiny.image_logprobs(
        texts, out.image_tokens, geometry="cfg", guidance_scale=scale, commit_steps=out.commit_steps
    )
    assert replayed.requires_grad
    assert torch.allclose(replayed, out.logprobs, atol=1e-5)


def test_trajectory_estimator_refuses_tokens_without_their_commit_steps(tiny):
    codes = torch.zeros(1, tiny.num_image_tokens, dtype=torch.long)
    with pytest.raises(ValueError, match="logprob_estimator=masked"):
        tiny.image_logprobs(PROMPTS[:1], codes)


def test_masked_estimator_shares_its_mask_between_chosen_rejected_policy_and_reference(tiny_dir):
    lora = LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj", "fc1"])
    um = ShowoUnifiedModel.from_pretrained(tiny_dir, trainable="lora", lora=lora, estimator="masked")
    with torch.no_grad():
        for _, p in um.trainable_named_parameters():
            p.add_(0.05 * torch.randn_like(p))  # the policy now differs from the reference
    out = um.generate([PROMPTS[0]], n=2, settings=CFG, seed=5)  # chosen and rejected of one prompt
    policy = um.image_logprobs([PROMPTS[0]] * 2, out.image_tokens)
    with um.reference():
        reference = um.image_logprobs([PROMPTS[0]] * 2, out.image_tokens)
    mask = prompt_mask(PROMPTS[0], um.num_image_tokens)
    for logps in (policy, reference):
        assert torch.equal(logps != 0, mask[None].expand(2, -1))
    assert not torch.allclose(policy, reference)


def test_judge_answers_are_parsed_and_the_soft_score_matches_teacher_forcing(tiny):
    images = tiny.decode_images(tiny.generate(PROMPTS, settings=CFG, seed=1).image_tokens)
    judgements = tiny.judge(list(images), PROMPTS, max_new_tokens=4)
    assert all(j.verdict == Verdict.INVALID for j in judgements)  # a random model answers nothing parsable
    # Make the greedy answer's first two tokens "the prefix": the digit logits are then read from the cached
    # decoding and must equal one teacher-forced forward over question + prefix.
    inputs = tiny.judge_inputs(list(images), PROMPTS)
    _, _, generated = tiny._greedy_answer(inputs, 3)
    first = generated[0][:2]
    saved = tiny.answer_prefix_ids
    try:
        tiny.answer_prefix_ids = first
        _, digits, _ = tiny._greedy_answer(inputs, 3)
        forced = tiny.teacher_forced_digit_logits(list(images[:1]), PROMPTS[:1])
    finally:
        tiny.answer_prefix_ids = saved
    assert digits[0] is not None
    assert digits[0] == pytest.approx(forced[0], abs=1e-4)


def test_judging_does_not_depend_on_batch_mates(tiny):
    images = tiny.decode_images(tiny.generate(PROMPTS, settings=CFG, seed=2).image_tokens)
    together = tiny.judge(list(images), PROMPTS, max_new_tokens=3)
    alone = tiny.judge(list(images[:1]), PROMPTS[:1], max_new_tokens=3)
    assert together[0].answer == alone[0].answer
    assert together[0].score == pytest.approx(alone[0].score, abs=1e-5)


def test_public_key_names_load_without_missing_or_unexpected_keys_and_round_trip(tiny, tmp_path):
    state = tiny.module().state_dict()
    for key in ("showo.model.embed_tokens.weight", "showo.model.layers.0.self_attn.dense.weight",
                "showo.model.layers.1.mlp.fc2.bias", "showo.model.final_layernorm.weight", "showo.lm_head.bias",
                "vq.quantize.embedding", "vq.encoder.quant_conv.weight", "vq.decoder.post_quant_conv.weight"):  # fmt: skip
        assert key in state
    tiny.save_pretrained(tmp_path / "saved")
    loaded = ShowoUnifiedModel.from_pretrained(tmp_path / "saved")
    for name, tensor in loaded.module().state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["_class_name"] == "Showo"


def test_magvit_has_the_public_architecture_names():
    keys = set(MAGVITv2(MagvitArch()).state_dict())
    # encoder levels 1,2,2,4,4 × 128 with 4,3,4,3,4 blocks; decoder 1,1,2,2,4 with 4,4,3,4,3; no down/up at the ends
    assert "encoder.down.4.block.3.conv2.weight" in keys and "encoder.down.4.downsample.conv.weight" not in keys
    assert "encoder.down.1.block.0.nin_shortcut.weight" in keys and "encoder.down.0.downsample.conv.weight" in keys
    assert "decoder.up.0.block.3.norm1.weight" in keys and "decoder.up.0.upsample.conv.weight" not in keys
    assert "decoder.up.4.upsample.conv.weight" in keys and "decoder.up.3.block.0.nin_shortcut.weight" in keys
    assert "decoder.up.1.block.0.nin_shortcut.weight" in keys and "decoder.up.2.block.0.nin_shortcut.weight" not in keys
    assert "encoder.mid.attn_1.proj_out.weight" in keys and not any(".attn.0." in k for k in keys)
    assert {"quantize.embedding", "quantize.power_vals"} <= keys


def test_magvit_codes_round_trip_through_the_quantizer():
    vq = MAGVITv2(MagvitArch(ch=32, encoder_ch_mult=(1, 1), encoder_res_blocks=(1, 1), decoder_ch_mult=(1, 1),
                             decoder_res_blocks=(1, 1), attn_resolutions=(), resolution=8, bits=5))  # fmt: skip
    codes = torch.randint(0, 32, (2, 16))
    assert torch.equal(vq.quantize.codes(vq.quantize.latent(codes)), codes)


def test_incomplete_or_mismatched_folders_fail_clearly(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ShowoUnifiedModel.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "vq")
    with pytest.raises(FileNotFoundError, match="vq_path"):
        ShowoUnifiedModel.from_pretrained(broken)
    config = json.loads((tiny_dir / "config.json").read_text())
    shutil.copytree(tiny_dir / "vq", broken / "vq")
    (broken / "config.json").write_text(json.dumps({**config, "num_vq_tokens": 256}))
    with pytest.raises(ValueError, match="num_vq_tokens=256"):
        ShowoUnifiedModel.from_pretrained(broken)
    (broken / "config.json").write_text(json.dumps({**config, "llm_vocab_size": 10}))
    with pytest.raises(ValueError, match="llm_vocab_size=10"):
        ShowoUnifiedModel.from_pretrained(broken)


def test_lora_trains_only_adapters_and_the_reference_is_the_adapter_off(tiny_dir):
    cfg = ShowoModelConfig(path=str(tiny_dir), trainable="lora", device="cpu", lora=LoraConfig(rank=4, alpha=8))
    um = build_model(cfg)
    names = [n for n, _ in um.trainable_named_parameters()]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}
    out = um.generate(PROMPTS[:1], n=2, settings=CFG, seed=4)
    um.image_logprobs(PROMPTS[:1] * 2, out.image_tokens, commit_steps=out.commit_steps).sum().backward()
    grads = [n for n, p in um.module().named_parameters() if p.grad is not None]
    assert grads and all("lora_" in n for n in grads)
    assert not any(p.requires_grad for n, p in um.module().named_parameters() if n.startswith("vq."))


def test_a_lora_model_saves_merged_in_the_public_layout(tiny_dir, tmp_path):
    um = ShowoUnifiedModel.from_pretrained(tiny_dir, trainable="lora", lora=LoraConfig(rank=4, alpha=8, target_modules=["fc1"]))
    with torch.no_grad():
        for _, p in um.trainable_named_parameters():
            p.add_(0.1)
    out = um.generate(PROMPTS[:1], seed=0)
    um.save_pretrained(tmp_path / "merged")
    merged = ShowoUnifiedModel.from_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "adapter").is_dir()
    logps = [m.image_logprobs(PROMPTS[:1], out.image_tokens, commit_steps=out.commit_steps) for m in (merged, um)]
    assert torch.allclose(*logps, atol=1e-5)


def test_lora_targets_that_match_no_layer_are_refused(tiny_dir):
    with pytest.raises(ValueError, match="o_proj"):
        ShowoUnifiedModel.from_pretrained(tiny_dir, trainable="lora", lora=LoraConfig(target_modules=["q_proj", "o_proj"]))


def test_config_selects_the_family_and_refuses_the_clip_variant():
    assert ShowoModelConfig().logprob_estimator == "trajectory"
    # LoRA targets default to Phi's layer names, not Janus's, unless given
    assert ShowoModelConfig(lora={"rank": 4}).lora.target_modules == ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]
    assert ShowoModelConfig(lora={"target_modules": ["fc1"]}).lora.target_modules == ["fc1"]
    with pytest.raises(ValueError, match="variant=clip"):
        ShowoModelConfig(variant="clip")


def test_judge_images_of_another_size_are_resized_and_centre_cropped(tiny):
    wide = torch.randint(0, 256, (2, 40, 64, 3), dtype=torch.uint8).numpy()
    assert tiny.image_codes(list(wide)).shape == (2, tiny.num_image_tokens)


def test_weights_with_per_head_norms_load_with_qk_layernorm(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "qk"
    shutil.copytree(tiny_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    head_dim = state["showo.model.layers.0.self_attn.q_proj.weight"].shape[0] // 4
    for layer in range(2):
        for norm in ("q_layernorm", "k_layernorm"):
            state[f"showo.model.layers.{layer}.self_attn.{norm}.weight"] = torch.ones(head_dim)
            state[f"showo.model.layers.{layer}.self_attn.{norm}.bias"] = torch.zeros(head_dim)
    save_file(state, str(folder / "model.safetensors"))
    um = ShowoUnifiedModel.from_pretrained(folder)
    assert um.phi.config.qk_layernorm and um.phi.model.layers[0].self_attn.qk_layernorm


@pytest.mark.gpu
def test_show_o_512_architecture_generates_replays_and_decodes_on_a_gpu():
    from rayunify.models.showo.factory import SHOWO_512, build_showo_model

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 for the replay comparison
    um = build_showo_model(SHOWO_512, device="cuda", steps=4)
    assert um.phi.config.vocab_size == 58498 and um.vocab.code_offset == 50305 and um.vocab.mask == 58497
    out = um.generate(PROMPTS, settings=SamplingSettings(guidance_scale=6.0), seed=[1, 2])
    assert out.image_tokens.shape == (2, 1024)
    replayed = um.image_logprobs(
        PROMPTS, out.image_tokens, geometry="cfg", guidance_scale=6.0, commit_steps=out.commit_steps
    )
    assert torch.allclose(replayed, out.logprobs, atol=1e-3)
    assert um.decode_images(out.image_tokens).shape == (2, 512, 512, 3)
