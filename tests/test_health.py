"""No silent non-training: a judge that answers off-format, or steps with nothing to train on, warn once with
the share and a likely cause, then stop the run after `health.patience` steps; a skipped step logs no loss."""

from __future__ import annotations

import json
import math

import pytest

from rayunify.config import HealthConfig, load_config
from rayunify.health import NoTrainingSignal, TrainingHealth
from rayunify.types import Judgement, Verdict


def verdicts(accept: int = 0, reject: int = 0, invalid: int = 0) -> list[Judgement]:
    return (
        [Judgement(Verdict.ACCEPT, 0.9, "1")] * accept
        + [Judgement(Verdict.REJECT, 0.1, "0")] * reject
        + [Judgement(Verdict.INVALID, 0.5, "The image shows a red")] * invalid
    )


def test_off_format_answers_warn_once_with_the_share_and_an_answer_then_stop_after_patience():
    health = TrainingHealth(
        HealthConfig(max_invalid_share=0.5, warn_idle_steps=2, patience=3), judge_name="self"
    )
    first = health.observe_step(0, trained=False, verdicts=verdicts(invalid=32))
    assert first == [
        "[health] step 0: 32 of 32 verdicts (100%) are INVALID, e.g. 'The image shows a red', above "
        "health.max_invalid_share=0.5: the judge (self) likely answers off-format (not '1' or '0'); INVALID "
        "verdicts make no pairs and no SFT samples"
    ]
    second = health.observe_step(1, trained=False, verdicts=verdicts(invalid=32))
    assert len(second) == 1 and second[0].startswith(
        "[health] step 1: nothing to train on for 2 steps in a row"
    )
    with pytest.raises(
        NoTrainingSignal, match=r"no training signal for 3 steps in a row \(health.patience=3"
    ):
        health.observe_step(2, trained=False, verdicts=verdicts(invalid=32))


def test_a_healthy_step_resets_the_streak_and_a_minority_of_invalid_answers_is_fine():
    health = TrainingHealth(HealthConfig(patience=2), judge_name="self")
    assert health.observe_step(0, trained=False, verdicts=verdicts(accept=4, reject=4)) == []
    assert health.observe_step(1, trained=True, verdicts=verdicts(accept=3, reject=3, invalid=2)) == []
    assert health.observe_step(2, trained=False, verdicts=verdicts(accept=4)) == []
    with pytest.raises(NoTrainingSignal, match="the judge accepted all 4 valid verdicts"):
        health.observe_step(3, trained=False, verdicts=verdicts(accept=4))


def test_patience_zero_only_warns():
    health = TrainingHealth(HealthConfig(patience=0, warn_idle_steps=1), judge_name="hf_vlm")
    for step in range(50):
        health.observe_step(step, trained=False, verdicts=verdicts(reject=8))
    assert "the judge rejected all 8 valid verdicts" in health.likely_cause()


def test_the_defaults_leave_the_coin_flip_test_runs_alone():
    """tests/test_golden.py and tiny_runs.py judge by seeded coin flips: never INVALID, pairs nearly always."""
    cfg = load_config(None).health
    assert cfg.max_invalid_share >= 0.5 and cfg.patience >= 5 and cfg.warn_idle_steps >= 2


def test_an_online_run_whose_self_judge_answers_off_format_stops_with_one_line(tmp_path, capsys):
    """A random tiny Janus's own judge parses nothing: every verdict INVALID, no pairs. The run warns, stops
    with one line (exit 1) after health.patience steps, and its metrics hold no loss (no nan)."""
    from rayunify.train import main

    argv = [
        "model.path=builtin:tiny", "judge.type=self", "prompts.n_train=8", "prompts.n_eval=2",
        "sampling.samples_per_prompt=2", "sampling.guidance_scale=2.0", "trainer.prompts_per_step=2",
        "trainer.steps=8", "trainer.eval_every=100", "trainer.eval_prompts=2", "guard.probe_size=0",
        "rollout.num_cpus=0.5", "judge_actors.num_cpus=0.5", "logger.type=jsonl", "health.patience=3",
        "health.warn_idle_steps=2", f"trainer.output_dir={tmp_path}", "trainer.run_name=off_format",
    ]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "[health] step 0: 4 of 4 verdicts (100%) are INVALID, e.g. " in captured.err + captured.out
    stop = [line for line in captured.err.splitlines() if line.startswith("run stopped:")]
    assert (
        stop == [stop[0]] and "no training signal for 3 steps in a row" in stop[0] and "off-format" in stop[0]
    )
    rows = [json.loads(line) for line in (tmp_path / "off_format" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if row.get("step", 0) > 0]
    assert len(steps) == 2 and all(row["data/pairs_made"] == 0 for row in steps)
    assert not any(
        k.startswith("train/") and "loss" in k and math.isnan(v) for row in rows for k, v in row.items()
    )
    assert all("train/loss" not in row for row in steps)
