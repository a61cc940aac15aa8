"""The co-degradation guard on ShapesWorld images: the exact checker is the reference, the judges under watch
are the checker itself with a share of its verdicts corrupted (`NoisyJudge`), as in the poor-supervision
experiment. Each check is a stream of 32 "own" images of which a set number really show their prompt (a
render of it) and the rest show another prompt's render, so the reference accuracy is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rayunify.guard import CoDegradationGuard
from rayunify.judges.inprocess import NoisyJudge
from rayunify.metrics import VerdictRecord
from rayunify.shapes.judge import ShapesCheckerJudge
from rayunify.shapes.render import render
from rayunify.shapes.world import Spec, generate_prompts
from rayunify.types import Verdict

CHECK_SIZE = 32
PROMPTS, _ = generate_prompts(64, 1, seed=0)
RENDERS = [render(Spec.from_dict(p.spec), np.random.default_rng(i)) for i, p in enumerate(PROMPTS)]
CHECKER = ShapesCheckerJudge()


def check_records(judge, check: int, correct: int) -> list[VerdictRecord]:
    """One guard check: `correct` of CHECK_SIZE images show their prompt, the others a different prompt's."""
    start = (check * CHECK_SIZE) % len(PROMPTS)
    prompts = [PROMPTS[(start + i) % len(PROMPTS)] for i in range(CHECK_SIZE)]
    images = [RENDERS[(start + i + (i >= correct)) % len(PROMPTS)] for i in range(CHECK_SIZE)]
    own, reference = judge.judge(images, prompts), CHECKER.judge(images, prompts)
    return [
        VerdictRecord(p.category, o.verdict, o.score, r.verdict)
        for p, o, r in zip(prompts, own, reference, strict=True)
    ]


def run_guard(guard: CoDegradationGuard, judges, corrects, first_check: int = 0) -> list[list[str]]:
    checks = enumerate(zip(judges, corrects, strict=True), start=first_check)
    return [guard.observe(check_records(judge, i, correct)).alarms for i, (judge, correct) in checks]


def test_stream_has_the_reference_accuracy_it_was_built_with():
    records = check_records(CHECKER, 0, correct=10)
    assert sum(r.reference == Verdict.ACCEPT for r in records) == 10
    assert all(r.own == r.reference for r in records)


def test_guard_fires_on_a_flipped_judge():
    guard = CoDegradationGuard(min_agreement=0.6)
    flipped = NoisyJudge(CHECKER, flip_fraction=0.8, seed=1)
    alarms = run_guard(guard, [flipped] * 6, [8] * 6)
    assert all(any("agrees with the reference on only" in a for a in check) for check in alarms)
    assert guard.alarms_total >= 6


@pytest.mark.parametrize(
    "corrects", [[8] * 10, [4, 6, 8, 10, 12, 14, 16, 18, 20, 22]], ids=["steady", "improving"]
)
def test_guard_stays_quiet_on_a_good_judge(corrects):
    """A judge wrong on 15% of samples (agreement ~85%), on a steady and on an improving generator."""
    guard = CoDegradationGuard(min_agreement=0.6)
    good = NoisyJudge(CHECKER, flip_fraction=0.15, seed=2)
    assert run_guard(guard, [good] * 10, corrects) == [[]] * 10
    assert guard.alarms_total == 0


def test_guard_flags_co_degradation_when_accuracy_and_non_unification_fall_together():
    """Generation gets worse while the judge slides into accepting everything: the non-unification score
    falls (the model agrees with itself more), which alone would look like improvement."""
    guard = CoDegradationGuard(min_agreement=0.0)  # only the trend rule can fire
    judges = [NoisyJudge(CHECKER, flip_fraction=0.1, seed=3)] * 3 + [
        NoisyJudge(CHECKER, always_accept=True)
    ] * 3
    alarms = run_guard(guard, judges, [16, 16, 16, 6, 6, 6])
    assert alarms[:5] == [[]] * 5
    assert len(alarms[5]) == 1 and alarms[5][0].startswith("co-degradation")


def test_one_unlucky_check_does_not_alarm_but_a_sustained_fall_does():
    guard = CoDegradationGuard(min_agreement=0.6, window=3)
    good, bad = NoisyJudge(CHECKER, flip_fraction=0.1, seed=4), NoisyJudge(CHECKER, flip_fraction=0.6, seed=5)
    alarms = run_guard(guard, [good, good, bad, good, good, bad, bad, bad], [8] * 8)
    assert alarms[:6] == [[]] * 6  # ~35% agreement once, pooled with two good checks: ~65-70%
    assert any("agrees with the reference" in a for a in alarms[7])


def test_small_checks_are_logged_but_never_alarm():
    guard = CoDegradationGuard(min_samples=8)
    records = check_records(NoisyJudge(CHECKER, flip_fraction=1.0), 0, correct=8)[:5]
    verdict = guard.observe(records)
    assert (
        verdict.alarms == []
        and verdict.metrics["guard/agreement"] == 0.0
        and "guard/alarm" not in verdict.metrics
    )


def test_invalid_answers_do_not_count_as_agreement():
    records = [VerdictRecord("colour", Verdict.INVALID, 0.5, Verdict.REJECT)] * 20
    records += [VerdictRecord("colour", Verdict.ACCEPT, 0.9, Verdict.ACCEPT)] * 4
    verdict = CoDegradationGuard(min_samples=8).observe(records)
    assert verdict.alarms == [] and verdict.metrics.get("guard/agreement_window") is None  # 4 valid < 8


def test_state_round_trip_continues_identically():
    judges = [NoisyJudge(CHECKER, flip_fraction=0.1, seed=6)] * 4 + [
        NoisyJudge(CHECKER, always_accept=True)
    ] * 4
    corrects = [16, 16, 16, 16, 6, 6, 6, 6]
    straight = CoDegradationGuard()
    expected = run_guard(straight, judges, corrects)
    first = CoDegradationGuard()
    run_guard(first, judges[:4], corrects[:4])
    resumed = CoDegradationGuard()
    resumed.load_state_dict(first.state_dict())
    rest = run_guard(resumed, judges[4:], corrects[4:], first_check=4)
    assert rest == expected[4:] and resumed.alarms_total == straight.alarms_total


def test_bad_window_is_a_clear_error():
    with pytest.raises(ValueError, match="window must be >= 1"):
        CoDegradationGuard(window=0)


def test_a_small_first_check_does_not_alarm_but_a_large_bad_one_does():
    """The demo's first check sees 9 samples: 4 agreements could be a judge at 60% or at 30%; it is not an
    alarm. 90 samples at 30% agreement are."""
    A, R = Verdict.ACCEPT, Verdict.REJECT

    def check(agree: int, disagree: int) -> list[VerdictRecord]:
        return [VerdictRecord("c", A, 1.0, A)] * agree + [VerdictRecord("c", A, 1.0, R)] * disagree

    assert CoDegradationGuard(window=1).observe(check(4, 5)).alarms == []
    alarms = CoDegradationGuard(window=1).observe(check(27, 63)).alarms
    assert len(alarms) == 1 and "only 30% of the 90 samples" in alarms[0]


def test_clustered_proportion_against_hand_computed_values():
    from rayunify.guard import Proportion

    # Two prompts of two images: one all right, one all wrong. p = 1/2 over n = 4; clustered variance
    # 2/1 * ((2 - 1)^2 + (0 - 1)^2) / 4^2 = 1/4, four times the independent p(1-p)/n = 1/16: one image's worth.
    p = Proportion.of([2, 0], [2, 2])
    assert (p.value, p.n, p.variance) == (0.5, 4, 0.25) and p.effective_n() == pytest.approx(1.0)
    # Within-prompt agreement as varied as between prompts: the independent variance is the floor.
    q = Proportion.of([1, 1], [2, 2])
    assert q.variance == pytest.approx(1 / 16) and q.effective_n() == pytest.approx(4.0)


def test_images_of_one_prompt_count_as_one_cluster():
    """16 prompts x 4 images, each prompt's images all agreeing or all not: 44% agreement is 16 prompts' worth
    of evidence, not 64 images', so the alarm that the unclustered count would raise is not raised."""
    A, R = Verdict.ACCEPT, Verdict.REJECT
    records, prompts = [], []
    for k in range(16):
        agree = k < 7
        records += [VerdictRecord("c", A, 1.0, A if agree else R)] * 4
        prompts += [f"prompt {k}"] * 4
    independent = CoDegradationGuard(window=1).observe(records)
    clustered = CoDegradationGuard(window=1).observe(records, prompts)
    assert independent.metrics["guard/agreement_window"] == clustered.metrics["guard/agreement_window"] == 7 / 16
    assert clustered.metrics["guard/agreement_upper"] > independent.metrics["guard/agreement_upper"]
    assert independent.alarms and not clustered.alarms


def drifting_check(check: int) -> list[VerdictRecord]:
    """32 images whose reference accuracy and own rejection rate both fall by 1/32 per check."""
    A, R = Verdict.ACCEPT, Verdict.REJECT
    accepted, rejected = 24 - check, 20 - check
    return [VerdictRecord("c", R if i < rejected else A, 0.5, A if i < accepted else R) for i in range(32)]


def test_a_slow_drift_is_caught_against_the_start_window_not_between_adjacent_ones():
    guard = CoDegradationGuard(min_agreement=0.0, window=2)  # only the trend rules can fire
    verdicts = [guard.observe(drifting_check(k)) for k in range(12)]
    assert all(v.metrics.get("guard/reference_accuracy_trend", 0) > -0.2 for v in verdicts)
    assert not any("since the last window" in a for v in verdicts for a in v.alarms)
    fired = [k for k, v in enumerate(verdicts) if v.alarms]
    assert fired and fired[0] >= 6 and "since the start" in verdicts[fired[0]].alarms[0]
    assert verdicts[fired[0]].metrics["guard/reference_accuracy_since_start"] < 0
    # The start window survives a checkpoint.
    resumed = CoDegradationGuard(min_agreement=0.0, window=2)
    straight = CoDegradationGuard(min_agreement=0.0, window=2)
    for k in range(6):
        straight.observe(drifting_check(k))
    resumed.load_state_dict(straight.state_dict())
    assert resumed.observe(drifting_check(6)).metrics == straight.observe(drifting_check(6)).metrics
