"""ReplayBuffer: difficulty-priority sampling, staleness, capacity, empty batches, resume."""

import io
import pickle

import numpy as np
import pytest
import torch

from rayunify.buffer import ReplayBuffer
from rayunify.types import JudgedSample, Judgement, PreferencePair, Prompt, Sample, SamplingSettings, Verdict


def sample(sample_id: str, prompt_id: str, version: int) -> Sample:
    tokens = np.arange(6, dtype=np.int64) + len(sample_id)
    settings = SamplingSettings(guidance_scale=3.0, geometry="cfg")
    return Sample(sample_id, Prompt(prompt_id, f"text {prompt_id}"), tokens, version, settings)


def pair(prompt_id: str, version: int = 0, tag: str = "") -> PreferencePair:
    chosen = sample(f"{prompt_id}{tag}-c", prompt_id, version)
    rejected = sample(f"{prompt_id}{tag}-r", prompt_id, version)
    # A numpy scalar, as a learner's `.numpy()` would hand over: the checkpoint must still be plain.
    ref_logp = np.float32(-5.0)
    return PreferencePair(chosen.prompt, chosen, rejected, 0.9, 0.1, ref_chosen_logp=ref_logp)  # type: ignore[arg-type]


def sft(prompt_id: str, version: int = 0) -> JudgedSample:
    return JudgedSample(
        sample(f"{prompt_id}-s", prompt_id, version), Judgement(Verdict.ACCEPT, 0.8, "The score is 1")
    )


def test_priority_sampling_prefers_hard_prompts() -> None:
    buffer = ReplayBuffer(alpha=2.0)
    buffer.add_pairs([pair("easy"), pair("hard")])
    buffer.update_difficulty({"easy": 0.1, "hard": 0.9})
    rng = np.random.default_rng(0)
    draws = [
        buffer.sample(1, rng, current_version=0, max_staleness=None)[0].prompt.prompt_id for _ in range(400)
    ]
    # Expected share of "hard": 0.91² / (0.91² + 0.11²) ≈ 0.986.
    assert draws.count("hard") > 360


def test_alpha_zero_is_uniform() -> None:
    buffer = ReplayBuffer(alpha=0.0)
    buffer.add_pairs([pair("easy"), pair("hard")])
    buffer.update_difficulty({"easy": 0.0, "hard": 1.0})
    rng = np.random.default_rng(1)
    draws = [buffer.sample(1, rng, 0, None)[0].prompt.prompt_id for _ in range(400)]
    assert 150 < draws.count("hard") < 250


def test_batch_has_distinct_items_and_is_short_when_few_are_usable() -> None:
    buffer = ReplayBuffer()
    buffer.add_pairs([pair(f"p{i}") for i in range(3)])
    batch = buffer.sample(8, np.random.default_rng(0), 0, None)
    assert sorted(p.prompt.prompt_id for p in batch) == ["p0", "p1", "p2"]
    assert buffer.size("pair") == 3  # drawing does not consume


def test_stale_pairs_are_evicted_and_never_returned() -> None:
    buffer = ReplayBuffer()
    buffer.add_pairs([pair("old", version=1), pair("new", version=4)])
    buffer.add_sft([sft("old_sft", version=1)])
    batch = buffer.sample(4, np.random.default_rng(0), current_version=5, max_staleness=2)
    assert [p.prompt.prompt_id for p in batch] == ["new"]
    assert buffer.size("pair") == 1 and buffer.size("sft") == 0
    assert buffer.counters["pair_evicted_stale"] == 1 and buffer.counters["sft_evicted_stale"] == 1


def test_capacity_evicts_oldest() -> None:
    buffer = ReplayBuffer(capacity=2)
    buffer.add_pairs([pair("p0"), pair("p1"), pair("p2")])
    kept = buffer.sample(5, np.random.default_rng(0), 0, None)
    assert sorted(p.prompt.prompt_id for p in kept) == ["p1", "p2"]
    assert buffer.counters["pair_evicted_capacity"] == 1
    assert buffer.metrics()["buffer/pair_evicted_capacity"] == 1


def test_empty_returns_empty_list() -> None:
    buffer = ReplayBuffer()
    rng = np.random.default_rng(0)
    assert buffer.sample(4, rng, 0, 1) == []
    buffer.add_pairs([pair("p", version=0)])
    assert buffer.sample(4, rng, current_version=10, max_staleness=1) == []  # all stale
    assert buffer.sample(4, rng, 0, None, kind="sft") == []
    assert buffer.counters["empty_samples"] == 3


def test_sft_samples_are_sampled_separately() -> None:
    buffer = ReplayBuffer()
    buffer.add_pairs([pair("p")])
    buffer.add_sft([sft("s")])
    batch = buffer.sample(4, np.random.default_rng(0), 0, None, kind="sft")
    assert len(batch) == 1 and isinstance(batch[0], JudgedSample)
    with pytest.raises(ValueError, match="unknown kind"):
        buffer.sample(1, np.random.default_rng(0), 0, None, kind="dpo")  # type: ignore[call-overload]


def test_state_round_trip_through_torch_weights_only_load() -> None:
    buffer = ReplayBuffer(capacity=5, alpha=1.5)
    buffer.add_pairs([pair("a", version=2), pair("b", version=3, tag="x")])
    buffer.add_sft([sft("c", version=3)])
    buffer.update_difficulty({"a": 0.2, "b": 0.7})

    stream = io.BytesIO()
    torch.save(buffer.state_dict(), stream)
    stream.seek(0)
    state = torch.load(stream, weights_only=True)  # plain containers only: the safe loader accepts them
    restored = ReplayBuffer()
    restored.load_state_dict(pickle.loads(pickle.dumps(state)))

    for kind in ("pair", "sft"):
        assert restored.size(kind) == buffer.size(kind)  # type: ignore[arg-type]
    assert restored.metrics() == buffer.metrics()
    original = buffer.sample(2, np.random.default_rng(7), 3, 5)
    again = restored.sample(2, np.random.default_rng(7), 3, 5)
    assert [p.chosen.sample_id for p in again] == [p.chosen.sample_id for p in original]
    np.testing.assert_array_equal(again[0].chosen.image_tokens, original[0].chosen.image_tokens)
    assert again[0].chosen.image_tokens.dtype == np.int64
    assert again[0].chosen.sampling == original[0].chosen.sampling
    assert again[0].ref_chosen_logp == -5.0 and again[0].ref_rejected_logp is None
    restored_sft = restored.sample(1, np.random.default_rng(0), 3, None, kind="sft")[0]
    assert restored_sft.judgement == Judgement(Verdict.ACCEPT, 0.8, "The score is 1")


def test_offline_epochs_are_full_passes_without_replacement_and_grow_with_added_data() -> None:
    from rayunify.training_data import TrainingData

    data = TrainingData([Prompt(f"p{i}", f"prompt {i}") for i in range(4)], seed=0)
    data.buffer.add_sft([sft(f"p{i}") for i in range(10)])  # distinct sample ids
    assert data.epoch_progress(4) == (-1, 0)  # no epoch begun: sample() still draws by priority
    epoch, steps = data.begin_epoch("sft", 4)
    assert (epoch, steps) == (0, 3)  # 10 items in batches of 4: 4, 4, 2
    batches = [data.sample("sft", 4, 0, None) for _ in range(steps)]
    assert [len(b) for b in batches] == [4, 4, 2] and data.epoch_progress(4) == (0, 0)
    seen = [item.sample.sample_id for b in batches for item in b]
    assert sorted(seen) == sorted(f"p{i}-s" for i in range(10))  # each item exactly once
    # A replay adds items between epochs: the next pass covers the enlarged set.
    data.buffer.add_sft([sft(f"q{i}") for i in range(3)])
    assert data.begin_epoch("sft", 4) == (1, 4)
    again = [item.sample.sample_id for _ in range(4) for item in data.sample("sft", 4, 0, None)]
    assert len(again) == len(set(again)) == 13
    # The epoch's place survives a checkpoint.
    data.begin_epoch("sft", 4)
    data.sample("sft", 4, 0, None)
    restored = TrainingData([Prompt(f"p{i}", f"prompt {i}") for i in range(4)], seed=0)
    restored.load_state_dict(data.state_dict())
    assert restored.epoch_progress(4) == data.epoch_progress(4) == (2, 3)
    assert [s.sample.sample_id for s in restored.sample("sft", 4, 0, None)] == [
        s.sample.sample_id for s in data.sample("sft", 4, 0, None)
    ]


def test_capped_epochs_keep_the_first_epochs_length_after_a_replay_enlarges_the_data() -> None:
    from rayunify.training_data import TrainingData

    data = TrainingData([Prompt(f"p{i}", f"prompt {i}") for i in range(4)], seed=0)
    data.buffer.add_sft([sft(f"p{i}") for i in range(8)])
    assert data.begin_epoch("sft", 4, cap_to_first=True) == (0, 2)
    for _ in range(2):
        data.sample("sft", 4, 0, None)
    data.buffer.add_sft([sft(f"q{i}") for i in range(4)])  # a replay recovered four images
    assert data.begin_epoch("sft", 4, cap_to_first=True) == (1, 2)  # still 8 items, not 12
    seen = [item.sample.sample_id for _ in range(2) for item in data.sample("sft", 4, 0, None)]
    assert len(seen) == len(set(seen)) == 8  # without replacement, from all 12
    restored = TrainingData([Prompt(f"p{i}", f"prompt {i}") for i in range(4)], seed=0)
    restored.load_state_dict(data.state_dict())
    assert restored.begin_epoch("sft", 4, cap_to_first=True) == (2, 2)
    assert data.begin_epoch("sft", 4) == (2, 3)  # uncapped: the whole enlarged set
