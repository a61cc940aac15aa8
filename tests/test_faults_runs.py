"""The fault suite on real runs: a local Ray cluster (one for the module), real DeepSpeed (gloo) and the tiny
Janus, three-step runs through `rayunify train`'s own entry point. Every case counts that nothing finished is
lost (the checkpoint it names verifies; every step's row is there) and that no step is logged twice.

Faults are the real thing where a test can cause it (a killed actor, a signal, a damaged file, a learning
rate that blows the model up). A full disk is injected: `Checkpointer.write_state` (the file-write boundary
of the driver's state) raises OSError(ENOSPC), as a full file system would.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import ray
from tiny_runs import COIN_FLIP_TINY_RUN, start_local_cluster

from rayunify.driver.checkpointer import Checkpointer
from rayunify.eval_job import run_model_path
from rayunify.manifest import verify_manifest
from rayunify.train import Hooks, main

STEPS = 3


def argv(out: Path, name: str, *extra: str) -> list[str]:
    return [
        *COIN_FLIP_TINY_RUN, "learner.batch_size=4", "learner.lr=1e-3", f"trainer.steps={STEPS}",
        "trainer.prompts_per_step=4", "trainer.eval_every=100", "trainer.eval_prompts=4", "trainer.checkpoint_every=1",
        "trainer.keep_checkpoints=3", f"trainer.output_dir={out}", f"trainer.run_name={name}", "logger.type=jsonl",
        "guard.probe_size=0", *extra,
    ]  # fmt: skip


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train_steps(run: Path) -> list[int]:
    """The steps of the learner rows, in the order logged: [1, 2, 3] once each when nothing was lost or doubled."""
    return [r["step"] for r in rows(run) if "train/skipped_batches" in r]


def steps_on_disk(run: Path) -> list[int]:
    return [int(p.name.split("_")[1]) for p in sorted((run / "checkpoints").glob("step_*"))]


def no_temporaries(run: Path) -> bool:
    return not list((run / "checkpoints").glob(".tmp-*"))


class At(Hooks):
    """Runs `action(trainer)` once, when step `step`'s work is done (before its row and checkpoint)."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action = step, action

    def after_step(self, trainer):
        if trainer.step + 1 == self.step:
            self.action(trainer)


class LearningRate(Hooks):
    """The learning rates of the learner's optimizer (every rank, every parameter group) after each step."""

    def __init__(self) -> None:
        self.seen: list[set[float]] = []

    def after_step(self, trainer):
        self.seen.append({lr for rank in trainer.learner.group.run("learning_rates") for lr in rank})


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    start_local_cluster()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    assert main(argv(out, "run")) == 0
    return out / "run"


def copy_of(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / run.name)
    return tmp_path / run.name


def test_a_finished_run_has_verified_checkpoints_and_each_step_logged_once(finished):
    assert (
        train_steps(finished) == [1, 2, 3]
        and steps_on_disk(finished) == [1, 2, 3]
        and no_temporaries(finished)
    )
    for step in (1, 2, 3):
        manifest = verify_manifest(finished / "checkpoints" / f"step_{step:06d}")
        assert manifest["step"] == step and "config.yaml" in manifest["files"]
    assert json.loads((finished / "final.json").read_text())["step"] == STEPS
    assert not (finished / "run.lock").exists()
    assert run_model_path(finished)[0] == str(finished / "final_model")


def test_refusals_before_anything_starts(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    cases = [
        (["--resume", "algorithm.type=sft"], "cannot resume from .*step_000003: the config changes keys a resumed "
         "run must keep: algorithm.type \\('dpo' → 'sft'\\)\\. Put them back"),
        (["prompts.n_train=8", "--resume"], "prompts.n_train \\(16 → 8\\)"),
        (["learner.num_ranks=2", "learner.zero_stage=3", "--resume"], "learner.num_ranks \\(1 → 2\\); learner.zero_stage"),
        ([], "holds checkpoints \\(step_000003\\): continue it with --resume, or start over with --overwrite"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main(argv(tmp_path, "run", *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and re.search(message, err.splitlines()[-1]), err
    (run / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": "now",
                                             "process_start": None}))  # fmt: skip
    assert main(argv(tmp_path, "run", "--resume")) == 2
    assert f"is in use by pid {os.getpid()}" in capsys.readouterr().err
    assert steps_on_disk(run) == [1, 2, 3] and train_steps(run) == [1, 2, 3]  # nothing touched


def test_resume_skips_a_damaged_checkpoint_rewinds_the_log_and_takes_new_settings(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "checkpoints" / "step_000003" / "driver.pt").write_bytes(
        b""
    )  # zeroed, as a kill mid-write leaves it
    (run / "checkpoints" / "latest").write_text("step_999999")
    hooks = LearningRate()
    assert main(argv(tmp_path, "run", "--resume", "trainer.steps=4", "learner.lr=5e-4"), hooks=hooks) == 0
    out = capsys.readouterr().out
    assert "skipped damaged checkpoints: step_000003: driver.pt has 0 bytes" in out
    assert "resume with changed settings: learner.lr (0.001 → 0.0005); trainer.steps (3 → 4)" in out
    assert hooks.seen == [{5e-4}, {5e-4}]  # the optimizer state came back with 1e-3: the new rate applies
    assert train_steps(run) == [1, 2, 3, 4]  # step 3 again from step 2's checkpoint, logged once
    dropped = next(run.glob("metrics.dropped.*.jsonl"))
    assert [json.loads(line)["step"] for line in dropped.read_text().splitlines()] == [
        3,
        3,
    ]  # step 3, final eval
    assert (
        len(list((run / "checkpoints" / "set_aside").glob("step_000003.damaged.*"))) == 1
    )  # kept, not deleted
    assert steps_on_disk(run) == [2, 3, 4] and run_model_path(run)[0] == str(run / "final_model")


def test_sigterm_stops_at_the_step_with_a_checkpoint_and_the_command_that_resumes(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)  # a fresh rerun under a finished run's name
    hooks = At(1, lambda t: os.kill(os.getpid(), signal.SIGTERM))
    fresh = argv(tmp_path, "run", "--overwrite", "logger.type=wandb")
    assert main(fresh, hooks=hooks) == 143
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        f"run stopped by SIGTERM at step 1: checkpoint {run / 'checkpoints' / 'step_000001'}; resume with: "
        in err
    )
    assert err.endswith("logger.type=wandb --resume") and "--overwrite" not in err
    assert not (run / "final_model").exists() and steps_on_disk(run) == [1] and train_steps(run) == [1]
    path, said = run_model_path(run)  # the stopped rerun, never the old run's final_model (moved aside)
    assert path == str(run / "checkpoint_models" / "step_000001") and "scoring checkpoint step_000001" in said
    wandb_id = (run / "wandb_id.txt").read_text()
    assert main(argv(tmp_path, "run", "logger.type=wandb", "--resume")) == 0
    assert train_steps(run) == [1, 2, 3] and (run / "wandb_id.txt").read_text() == wandb_id


def test_a_lost_learner_rank_names_the_last_good_checkpoint_and_the_run_resumes(tmp_path, capsys):
    run = tmp_path / "learner"
    kill = At(2, lambda t: ray.kill(t.learner.group.actors[0], no_restart=True))
    assert main(argv(tmp_path, "learner"), hooks=kill) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("run stopped: a learner rank was lost after step 2 (")
    assert err.endswith(
        f"the last intact checkpoint is {run / 'checkpoints' / 'step_000001'}: rerun with --resume"
    )
    assert steps_on_disk(run) == [1] and no_temporaries(run)  # the save it died in left nothing behind
    assert main(argv(tmp_path, "learner", "--resume")) == 0
    assert train_steps(run) == [1, 2, 3]


def test_a_lost_training_data_actor_names_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "data"
    assert main(argv(tmp_path, "data"), hooks=At(2, lambda t: ray.kill(t.data, no_restart=True))) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # ray.kill is asynchronous: the actor's death shows at its next call, in step 2's bookkeeping or step 3's
    # collection, so the step the message names depends on timing; what was finished and kept does not.
    assert re.match(r"run stopped: the training-data actor was lost after step [12] \(", err), err
    assert err.endswith(
        f"the last intact checkpoint is {run / 'checkpoints' / 'step_000001'}: rerun with --resume"
    )
    verify_manifest(run / "checkpoints" / "step_000001")
    assert train_steps(run) in ([1], [1, 2]) and steps_on_disk(run) == [1]  # each step logged once at most


def test_a_full_disk_stops_with_the_space_needed_and_nothing_corrupted(tmp_path, capsys, monkeypatch):
    run = tmp_path / "full"
    write = Checkpointer.write_state

    def full_at_step_two(self, plain, path):  # fault injection at the file-write boundary, not a mock
        if plain["step"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(self, plain, path)

    monkeypatch.setattr(Checkpointer, "write_state", full_at_step_two)
    assert main(argv(tmp_path, "full")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"disk full writing checkpoint step_000002 under {run / 'checkpoints'}: " in err
    assert "MiB free, about" in err and "MiB needed (the last checkpoint's size)" in err
    assert err.endswith(f"the last intact checkpoint is {run / 'checkpoints' / 'step_000001'}: free space, then "
                        "rerun with --resume")  # fmt: skip
    assert steps_on_disk(run) == [1] and no_temporaries(run) and train_steps(run) == [1, 2]
    verify_manifest(run / "checkpoints" / "step_000001")


def test_a_learning_rate_that_blows_up_stops_with_the_last_good_checkpoint(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)  # three sane steps, then learner.lr=1e3 from step 4 on
    assert main(argv(tmp_path, "run", "--resume", "trainer.steps=6", "learner.lr=1e3")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("run stopped: training diverged at step 5: gradient norm")
    assert "guard.divergence.spike_factor=1000" in err
    assert err.endswith(f"the last intact checkpoint is {run / 'checkpoints' / 'step_000003'}: lower learner.lr and "
                        "rerun with --resume")  # fmt: skip
    assert steps_on_disk(run) == [
        2,
        3,
    ]  # step 4's weights made the spike: its checkpoint is set aside (1 rotated out)
    assert len(list((run / "checkpoints" / "set_aside").glob("step_000004.diverged.*"))) == 1
    assert train_steps(run)[-2:] == [3, 4]  # rows up to the stop; a resume rewinds step 4's
