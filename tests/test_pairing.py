"""Algorithm 1: SFT set, one pair per mixed group, discard pool, invalid answers left out."""

import numpy as np
import pytest

from rayunify.pairing import build_dataset, build_group_outcome
from rayunify.types import JudgedSample, Judgement, Prompt, Sample, Verdict

A, R, X = Verdict.ACCEPT, Verdict.REJECT, Verdict.INVALID


def judged(
    sample_id: str, verdict: Verdict, score: float, prompt_id: str = "p0", version: int = 0
) -> JudgedSample:
    prompt = Prompt(prompt_id=prompt_id, text=f"a photo for {prompt_id}")
    sample = Sample(sample_id, prompt, np.zeros(4, dtype=np.int64), policy_version=version)
    return JudgedSample(sample, Judgement(verdict, score))


def group(*specs: tuple[str, Verdict, float], prompt_id: str = "p0") -> list[JudgedSample]:
    return [judged(sample_id, verdict, score, prompt_id) for sample_id, verdict, score in specs]


def test_chosen_is_best_accepted_and_rejected_is_worst_rejected() -> None:
    outcome = build_group_outcome(
        group(("s0", A, 0.7), ("s1", A, 0.9), ("s2", R, 0.4), ("s3", R, 0.1), ("s4", X, 0.0)),
        created_step=5,
    )
    assert outcome.pair is not None
    assert outcome.pair.chosen.sample_id == "s1" and outcome.pair.chosen_score == 0.9
    assert outcome.pair.rejected.sample_id == "s3" and outcome.pair.rejected_score == 0.1
    assert outcome.pair.created_step == 5
    assert [j.sample.sample_id for j in outcome.accepted] == ["s1", "s0"]
    assert not outcome.discard
    assert (outcome.n_rejected, outcome.n_invalid) == (2, 1)


def test_all_rejected_goes_to_discard_pool_without_pair() -> None:
    outcome = build_group_outcome(group(("s0", R, 0.3), ("s1", R, 0.2)))
    assert outcome.discard
    assert outcome.pair is None
    assert outcome.accepted == []


def test_all_accepted_gives_sft_but_no_pair() -> None:
    outcome = build_group_outcome(group(("s0", A, 0.8), ("s1", A, 0.8), ("s2", A, 0.9)))
    assert outcome.pair is None
    assert len(outcome.accepted) == 3
    assert not outcome.discard


def test_invalid_never_enters_pair_or_sft() -> None:
    # An invalid answer with an extreme score must not be picked as chosen or rejected.
    outcome = build_group_outcome(group(("x0", X, 1.0), ("x1", X, 0.0), ("s0", A, 0.6), ("s1", R, 0.4)))
    assert outcome.pair is not None
    assert (outcome.pair.chosen.sample_id, outcome.pair.rejected.sample_id) == ("s0", "s1")
    assert [j.sample.sample_id for j in outcome.accepted] == ["s0"]
    assert outcome.n_invalid == 2


def test_only_invalid_and_rejected_is_discarded() -> None:
    outcome = build_group_outcome(group(("x0", X, 0.0), ("x1", X, 0.0)))
    assert outcome.discard and outcome.pair is None and outcome.n_invalid == 2


def test_never_pairs_same_verdict_even_when_all_scores_tie() -> None:
    for verdict in (A, R):
        outcome = build_group_outcome(group(*[(f"s{i}", verdict, 0.5) for i in range(4)]))
        assert outcome.pair is None


def test_tied_scores_across_verdicts_still_pair_by_verdict_with_id_tie_break() -> None:
    specs = [("s3", A, 0.5), ("s1", A, 0.5), ("s2", R, 0.5), ("s0", R, 0.5)]
    outcome = build_group_outcome(group(*specs))
    assert outcome.pair is not None
    assert outcome.pair.chosen.sample_id == "s1"  # smallest id among the tied accepted
    assert outcome.pair.rejected.sample_id == "s0"  # smallest id among the tied rejected
    # Order of arrival does not matter.
    reordered = build_group_outcome(group(*reversed(specs)))
    assert reordered.pair is not None
    assert (reordered.pair.chosen.sample_id, reordered.pair.rejected.sample_id) == ("s1", "s0")


def test_pair_keeps_verdict_label_when_soft_scores_disagree() -> None:
    outcome = build_group_outcome(group(("s0", A, 0.3), ("s1", R, 0.6)))
    assert outcome.pair is not None
    assert outcome.pair.chosen.sample_id == "s0"
    assert outcome.pair.chosen_score < outcome.pair.rejected_score


def test_group_must_be_one_prompt_and_non_empty() -> None:
    with pytest.raises(ValueError, match="one prompt"):
        build_group_outcome([judged("s0", A, 0.9, "p0"), judged("s1", R, 0.1, "p1")])
    with pytest.raises(ValueError, match="at least one"):
        build_group_outcome([])


def test_build_dataset_collects_and_counts() -> None:
    groups = [
        group(("a0", A, 0.9), ("a1", R, 0.1), prompt_id="mixed"),
        group(("b0", A, 0.8), ("b1", A, 0.7), prompt_id="easy"),
        group(("c0", R, 0.2), ("c1", X, 0.0), prompt_id="hard"),
    ]
    dataset = build_dataset(groups)
    assert [j.sample.sample_id for j in dataset.sft] == ["a0", "b0", "b1"]
    assert [pair.prompt.prompt_id for pair in dataset.pairs] == ["mixed"]
    assert dataset.discard_prompt_ids == ["hard"]
    metrics = dataset.metrics()
    assert metrics["accepted"] == 3 and metrics["rejected"] == 2 and metrics["invalid"] == 1
    assert metrics["pairs"] == 1 and metrics["discarded_prompts"] == 1 and metrics["groups"] == 3
    assert metrics["non_unified"] == pytest.approx(2 / 5)
