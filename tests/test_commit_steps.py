"""Show-o's commit steps travel as a typed field of the sample (`Sample.commit_steps`), not packed into the
token ids, through every stage: generation, the buffer's checkpoints, the learner's batches and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayunify.actors.policy import PolicyModule, TrainBatch, reference_logps_fn
from rayunify.batching import make_batch, make_grpo_batch
from rayunify.buffer import _sample_from_dict, _sample_to_dict
from rayunify.config import load_config
from rayunify.models.showo.factory import build_showo, save_showo_dir
from rayunify.models.showo.model import ShowoUnifiedModel
from rayunify.types import JudgedSample, Judgement, PreferencePair, Prompt, Sample, SamplingSettings, Verdict

PROMPT = Prompt("p0", "a red circle")
SCALE = 3.0


@pytest.fixture(scope="module")
def showo(tmp_path_factory):
    path = tmp_path_factory.mktemp("showo") / "tiny"
    save_showo_dir(path, *build_showo(seed=0))
    return ShowoUnifiedModel.from_pretrained(path)


@pytest.fixture(scope="module")
def samples(showo):
    out = showo.generate([PROMPT.text], n=2, settings=SamplingSettings(guidance_scale=SCALE), seed=7)
    assert out.commit_steps is not None and out.commit_steps.shape == out.image_tokens.shape
    tokens, steps = out.image_tokens.numpy(), out.commit_steps.numpy()
    made = [Sample(f"s{i}", PROMPT, tokens[i], 0, commit_steps=steps[i]) for i in range(2)]
    return made, out.logprobs


def test_the_buffer_keeps_the_commit_steps_through_a_checkpoint(samples):
    sample = samples[0][0]
    back = _sample_from_dict(_sample_to_dict(sample))
    assert np.array_equal(back.commit_steps, sample.commit_steps) and back.commit_steps.dtype == np.int64
    janus = Sample("j", PROMPT, np.arange(4), 0)
    assert _sample_from_dict(_sample_to_dict(janus)).commit_steps is None


def test_every_batch_kind_carries_the_steps_beside_the_tokens(samples):
    made, _ = samples
    cfg = load_config(None, ["sampling.geometry=cfg", f"sampling.guidance_scale={SCALE}"])
    pair = PreferencePair(PROMPT, made[0], made[1], 1.0, 0.0, ref_chosen_logp=0.0, ref_rejected_logp=0.0)
    dpo = make_batch([pair], "pair", cfg, TrainBatch)
    assert torch.equal(dpo.chosen_steps[0], torch.as_tensor(made[0].commit_steps))
    assert torch.equal(dpo.rejected_steps[0], torch.as_tensor(made[1].commit_steps))
    judged = [JudgedSample(s, Judgement(Verdict.ACCEPT, 1.0)) for s in made]
    sft = make_batch(judged, "sft", cfg, TrainBatch)
    assert torch.equal(sft.chosen_steps, torch.as_tensor(np.stack([s.commit_steps for s in made])))
    grpo_items = [JudgedSample(Sample(s.sample_id, PROMPT, s.image_tokens, 0, behaviour_logprobs=np.zeros(
        len(s.image_tokens), np.float32), commit_steps=s.commit_steps), Judgement(Verdict.ACCEPT, 1.0)) for s in made]
    grpo = make_grpo_batch(grpo_items, [1.0, -1.0], None, cfg, TrainBatch)
    assert torch.equal(grpo.chosen_steps, sft.chosen_steps)
    janus = JudgedSample(Sample("j", PROMPT, np.arange(4), 0), Judgement(Verdict.ACCEPT, 1.0))
    assert make_batch([janus], "sft", cfg, TrainBatch).chosen_steps is None


def test_the_learner_side_replays_the_sampled_path(showo, samples):
    """DPO's reference log-probs of a pair, from the batch alone, equal what generation recorded: the steps
    reached the estimator through the pair, the batch and the policy module."""
    made, generated = samples
    cfg = load_config(None, ["sampling.geometry=cfg", f"sampling.guidance_scale={SCALE}"])
    pair = PreferencePair(PROMPT, made[0], made[1], 1.0, 0.0)
    chosen, rejected = reference_logps_fn(PolicyModule(showo), make_batch([pair], "pair", cfg, TrainBatch))
    assert chosen[0] == pytest.approx(float(generated[0].sum()), abs=1e-3)
    assert rejected[0] == pytest.approx(float(generated[1].sum()), abs=1e-3)
