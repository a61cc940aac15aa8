"""Curriculum replay (Algorithm 2), difficulty tracking, admission by level, and resume."""

import json
import math

import numpy as np
import pytest

from rayunify.curriculum import AdmissionSchedule, DifficultyTracker, DiscardPool
from rayunify.pairing import GroupOutcome, build_group_outcome
from rayunify.types import JudgedSample, Judgement, Prompt, Sample, Verdict

A, R, X = Verdict.ACCEPT, Verdict.REJECT, Verdict.INVALID


def prompt(prompt_id: str, category: str = "default") -> Prompt:
    return Prompt(prompt_id=prompt_id, text=f"text of {prompt_id}", category=category)


def judged_group(prompt_id: str, *verdicts: Verdict) -> list[JudgedSample]:
    return [
        JudgedSample(
            Sample(f"{prompt_id}-{i}", prompt(prompt_id), np.zeros(2, dtype=np.int64), policy_version=1),
            Judgement(verdict, 0.9 if verdict == A else 0.1),
        )
        for i, verdict in enumerate(verdicts)
    ]


def outcome(prompt_id: str, *verdicts: Verdict) -> GroupOutcome:
    return build_group_outcome(judged_group(prompt_id, *verdicts))


def judgements(
    accepts: int, rejects: int, score_accept: float = 0.9, score_reject: float = 0.1
) -> list[Judgement]:
    return [Judgement(A, score_accept)] * accepts + [Judgement(R, score_reject)] * rejects


# --- DiscardPool -------------------------------------------------------------------------------------


def test_replay_moves_passing_prompts_out_and_returns_recovered_samples() -> None:
    pool = DiscardPool(replay_at=[10])
    first_round = [outcome("p1", R, R), outcome("p2", R, R), outcome("p3", A, R)]
    assert pool.add_discarded(first_round) == 2
    assert [p.prompt_id for p in pool.prompts()] == ["p1", "p2"]

    assert not pool.due(9)
    assert pool.due(10)
    recovered = pool.replay_outcomes([outcome("p1", A, A, R), outcome("p2", R, X)], when=10)
    assert [j.sample.sample_id for j in recovered] == ["p1-0", "p1-1"]
    assert "p1" not in pool and "p2" in pool
    assert not pool.due(10)  # already replayed there, even after resume
    metrics = pool.metrics()
    assert metrics["discard_pool/size"] == 1
    assert metrics["discard_pool/recovered_prompts"] == 1
    assert metrics["discard_pool/recovered_samples"] == 2


def test_replay_ignores_prompts_not_in_pool_and_empty_pool_is_not_due() -> None:
    pool = DiscardPool(replay_at=[3])
    assert not pool.due(3)  # nothing to replay
    pool.add([prompt("p1")])
    assert pool.add([prompt("p1")]) == 0  # no duplicates
    assert pool.replay_outcomes([outcome("other", A)]) == []
    assert len(pool) == 1


def test_discard_pool_state_round_trip_is_json() -> None:
    pool = DiscardPool(replay_at=[5, 10])
    pool.add([prompt("p1"), prompt("p2")])
    pool.replay_outcomes([outcome("p1", A)], when=5)
    state = json.loads(json.dumps(pool.state_dict()))
    restored = DiscardPool(replay_at=[])
    restored.load_state_dict(state)
    assert restored.state_dict() == pool.state_dict()
    assert restored.prompts() == pool.prompts()
    assert not restored.due(5) and restored.due(10)


# --- DifficultyTracker -------------------------------------------------------------------------------


def test_difficulty_is_one_minus_beta_smoothed_pass_rate() -> None:
    tracker = DifficultyTracker(prior_passes=1.0, prior_fails=1.0)
    assert tracker.difficulty("unseen") == pytest.approx(0.5)
    tracker.update("p", judgements(accepts=3, rejects=7))
    assert tracker.pass_rate("p") == pytest.approx(4 / 12)
    assert tracker.difficulty("p") == pytest.approx(8 / 12)


def test_difficulty_ranks_hard_prompts_first() -> None:
    tracker = DifficultyTracker()
    tracker.update("easy", judgements(9, 1))
    tracker.update("medium", judgements(5, 5))
    tracker.update("hard", judgements(0, 10))
    tracker.update("ignored", [Judgement(X, 0.0)])  # only invalid answers: nothing to learn
    assert tracker.ranking() == ["hard", "medium", "easy"]
    assert "ignored" not in tracker
    assert tracker.histogram() == [1, 0, 1, 0, 1]  # 5 bins over [0, 1]: 1/6, 1/2, 11/12


def test_decay_forgets_old_verdicts() -> None:
    tracker = DifficultyTracker(decay=0.5)
    tracker.update("p", judgements(0, 10))
    tracker.update("p", judgements(10, 0))
    plain = DifficultyTracker(decay=1.0)
    plain.update("p", judgements(0, 10))
    plain.update("p", judgements(10, 0))
    assert tracker.difficulty("p") < plain.difficulty("p")  # the recent passes weigh more


def test_margin_term_separates_near_misses_from_confident_rejections() -> None:
    tracker = DifficultyTracker(margin_weight=0.5)
    tracker.update("near_miss", judgements(0, 10, score_reject=0.45))
    tracker.update("confident", judgements(0, 10, score_reject=0.02))
    assert tracker.difficulty("confident") > tracker.difficulty("near_miss")
    no_margin = DifficultyTracker()
    no_margin.update("near_miss", judgements(0, 10, score_reject=0.45))
    no_margin.update("confident", judgements(0, 10, score_reject=0.02))
    assert no_margin.difficulty("confident") == no_margin.difficulty("near_miss")


def test_update_group_and_metrics() -> None:
    tracker = DifficultyTracker()
    tracker.update_group(judged_group("p", A, R, X))  # the invalid answer does not count
    assert tracker.pass_rate("p") == pytest.approx(2 / 4)
    metrics = tracker.metrics()
    assert metrics["difficulty/tracked_prompts"] == 1
    assert metrics["difficulty/mean_pass_rate"] == pytest.approx(2 / 4)
    assert sum(v for k, v in metrics.items() if k.startswith("difficulty/hist_")) == 1
    assert math.isnan(DifficultyTracker().mean_pass_rate())


def test_tracker_state_round_trip_is_json() -> None:
    tracker = DifficultyTracker(decay=0.9, margin_weight=0.2)
    tracker.update("a", judgements(2, 3))
    tracker.update("b", judgements(0, 4))
    restored = DifficultyTracker()
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert restored.scores() == tracker.scores()
    assert restored.state_dict() == tracker.state_dict()


def test_bad_tracker_settings() -> None:
    with pytest.raises(ValueError, match="decay"):
        DifficultyTracker(decay=0.0)
    with pytest.raises(ValueError, match="margin_weight"):
        DifficultyTracker(margin_weight=1.5)


# --- AdmissionSchedule -------------------------------------------------------------------------------


def test_admission_advances_when_pass_rate_rises() -> None:
    prompts = [prompt("c1", "color"), prompt("s1", "shape"), prompt("sp1", "spatial")]
    schedule = AdmissionSchedule.from_categories(
        prompts, ["color", "shape", "spatial"], pass_threshold=0.6, patience=2
    )
    assert schedule.admitted_ids() == ["c1"]
    assert schedule.admitted(prompts[0]) and not schedule.admitted("s1")
    assert not schedule.update(0.4)
    assert not schedule.update(0.7)  # one success, patience 2
    assert not schedule.update(0.5)  # streak broken
    assert not schedule.update(math.nan)  # nothing measured: no change
    assert not schedule.update(0.7)
    assert schedule.update(0.8)
    assert schedule.level == 1 and schedule.admitted("s1") and not schedule.admitted("sp1")
    schedule.update(0.9)
    schedule.update(0.9)
    assert schedule.level == 2
    assert not schedule.update(1.0)  # last level: stays
    assert schedule.metrics()["admission/admitted_prompts"] == 3


def test_admission_from_tracker_uses_measured_pass_rate() -> None:
    tracker = DifficultyTracker()
    for prompt_id, accepts in [("e1", 9), ("e2", 8), ("h1", 1), ("h2", 0)]:
        tracker.update(prompt_id, judgements(accepts, 10 - accepts))
    schedule = AdmissionSchedule.from_difficulty(
        ["h2", "e1", "h1", "e2"], tracker, num_levels=2, pass_threshold=0.7
    )
    assert sorted(schedule.admitted_ids()) == ["e1", "e2"]
    assert schedule.update(tracker.mean_pass_rate(schedule.admitted_ids()))  # (10/12 + 9/12) / 2 ≈ 0.79
    assert schedule.admitted("h2")


def test_admission_unknown_category_or_prompt_is_clear_error() -> None:
    with pytest.raises(ValueError, match="not in category_order"):
        AdmissionSchedule.from_categories([prompt("x", "texture")], ["color"])
    schedule = AdmissionSchedule({"a": 0})
    with pytest.raises(KeyError, match="no level"):
        schedule.admitted("b")


def test_admission_state_round_trip_is_json() -> None:
    schedule = AdmissionSchedule({"a": 0, "b": 1, "c": 2}, pass_threshold=0.5, patience=2)
    schedule.update(0.6)
    restored = AdmissionSchedule({"z": 0})
    restored.load_state_dict(json.loads(json.dumps(schedule.state_dict())))
    assert restored.state_dict() == schedule.state_dict()
    assert restored.update(0.6)  # the streak of one survived the resume
    assert restored.level == 1
