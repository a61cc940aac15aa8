"""The run directory's rules as pure functions (no Ray, no run): manifests, which checkpoint a resume takes,
the config a resume may change, the run lock, the divergence guard, the learning rates the config refuses,
a resumed log's rewind, argument order, and an unreachable Ray address. The same rules inside real runs:
tests/test_faults_runs.py."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayunify.config import ConfigError, load_config
from rayunify.config.resume import compare
from rayunify.divergence import DivergenceGuard
from rayunify.driver.checkpointer import Checkpointer
from rayunify.driver.rundir import RunDirectory
from rayunify.driver.stopping import resume_command
from rayunify.manifest import ManifestError, verify_manifest, write_manifest
from rayunify.preflight import UserError
from rayunify.runlock import LOCK_FILE, LockOwner, RunLock


# ---------------------------------------------------------------------------------------------- manifests
def fake_checkpoint(root: Path, step: int) -> Path:
    """A checkpoint's files as a save leaves them (contents made up; the manifest is the real one)."""
    path = root / f"step_{step:06d}"
    (path / "learner" / "learner").mkdir(parents=True)
    (path / "learner" / "learner" / "mp_rank_00_model_states.pt").write_bytes(os.urandom(4096))
    (path / "driver.pt").write_bytes(os.urandom(1024))
    (path / "config.yaml").write_text("model: {}\n")
    write_manifest(path, {"step": step, "log_rows": step + 1})
    return path


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: (p / "driver.pt").write_bytes(b""), "driver.pt has 0 bytes, the manifest says 1024"),
        (lambda p: (p / "driver.pt").write_bytes(bytes(1024)), "driver.pt does not match its checksum"),
        (
            lambda p: (p / "learner/learner/mp_rank_00_model_states.pt").unlink(),
            "mp_rank_00_model_states.pt is missing",
        ),
        (lambda p: (p / "MANIFEST.json").unlink(), "no MANIFEST.json (the save did not finish)"),
        (lambda p: (p / "MANIFEST.json").write_text("{"), "MANIFEST.json is unreadable"),
    ],
)
def test_a_damaged_checkpoint_fails_verification_naming_the_file(tmp_path, damage, message):
    path = fake_checkpoint(tmp_path, 3)
    assert verify_manifest(path)["step"] == 3
    damage(path)
    with pytest.raises(ManifestError, match=re.escape(message)):
        verify_manifest(path)


def test_resume_takes_the_newest_intact_checkpoint_and_deletes_nothing(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        fake_checkpoint(root, step)
    (root / "step_000003" / "driver.pt").write_bytes(b"")  # zeroed newest
    (root / "step_000004").mkdir()  # a save killed before its manifest (older versions left these)
    (root / "latest").write_text("garbage")  # the marker is for people; resume never trusts it
    (root / ".tmp-step_000005" / "learner").mkdir(parents=True)  # a driver killed (-9) mid-save leaves this
    found = Checkpointer(root, keep=2).newest()
    assert found.path == root / "step_000002" and found.step == 2
    assert [s.split(":")[0] for s in found.skipped] == ["step_000004", "step_000003"]
    assert sorted(p.name for p in root.glob("step_*")) == [
        "step_000001",
        "step_000002",
        "step_000003",
        "step_000004",
    ]


def test_rotation_deletes_only_intact_checkpoints_beyond_keep(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        fake_checkpoint(root, step)
    (root / "step_000004" / "driver.pt").write_bytes(b"")
    Checkpointer(root, keep=2).rotate()  # step 4 is damaged: 2 and 3 are the two newest intact ones
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000002", "step_000003", "step_000004"]


# ---------------------------------------------------------------------------------------------- resume plans
def cfg_for(tmp_path: Path, *overrides: str):
    base = [
        "model.path=builtin:tiny",
        f"trainer.output_dir={tmp_path}",
        "trainer.run_name=r",
        "logger.type=jsonl",
    ]
    return load_config(None, base + list(overrides))


def test_resume_refusals_and_plans(tmp_path):
    say: list[str] = []
    plan = RunDirectory(
        cfg_for(tmp_path, "trainer.resume=auto"), say.append
    ).open()  # empty: auto starts fresh
    assert not plan.resume
    (tmp_path / "r" / LOCK_FILE).unlink()
    with pytest.raises(
        UserError, match="nothing to resume in .*: it holds no checkpoint; start fresh without --resume"
    ):
        RunDirectory(cfg_for(tmp_path, "trainer.resume=true")).open()
    root = tmp_path / "r" / "checkpoints"
    fake_checkpoint(root, 2)
    (root / "step_000002" / "driver.pt").write_bytes(b"")
    for resume in ("true", "auto"):  # only a damaged checkpoint: both refuse, and keep it
        with pytest.raises(
            UserError, match="nothing to resume .*step_000002: driver.pt has 0 bytes.*--overwrite"
        ):
            RunDirectory(cfg_for(tmp_path, f"trainer.resume={resume}")).open()
    with pytest.raises(UserError, match="holds checkpoints .*--resume.*--overwrite"):
        RunDirectory(cfg_for(tmp_path)).open()
    assert (root / "step_000002").is_dir() and not (tmp_path / "r" / LOCK_FILE).exists()  # a refusal unlocks


def test_a_fresh_start_moves_the_old_final_model_aside(tmp_path):
    final = tmp_path / "r" / "final_model"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (tmp_path / "r" / "final.json").write_text('{"step": 3}')
    say: list[str] = []
    RunDirectory(cfg_for(tmp_path), say.append).open()
    assert (
        not final.exists()
        and len(list((tmp_path / "r" / "superseded").glob("final_model.*/config.json"))) == 1
    )
    assert any("moved the previous run's final_model to" in line for line in say)


def test_resume_compares_the_config():
    saved = load_config(None, ["model.path=builtin:tiny"]).model_dump(mode="json")

    def changes(*overrides: str):
        return compare(
            saved, load_config(None, ["model.path=builtin:tiny", *overrides]).model_dump(mode="json")
        )

    refused = changes(
        "algorithm.type=sft", "prompts.n_train=8", "learner.num_ranks=2", "learner.zero_stage=3"
    )
    keys = [c.key for c in refused.refused]
    assert {"algorithm.type", "prompts.n_train", "learner.num_ranks", "learner.zero_stage"} <= set(keys)
    assert "algorithm.type ('dpo' → 'sft')" in refused.refusal("step_000003")
    allowed = changes("trainer.steps=40", "learner.lr=3e-6", "trainer.eval_every=5", "logger.type=jsonl")
    assert not allowed.refused and [c.key for c in allowed.allowed] == [
        "learner.lr", "logger.type", "trainer.eval_every", "trainer.steps",
    ]  # fmt: skip
    assert not changes().refused and not changes().allowed


# ---------------------------------------------------------------------------------------------- the lock
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_one_owner_per_run_directory(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(
        RuntimeError, match=rf"in use by pid {os.getpid()} on {socket.gethostname()}, started"
    ):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    RunLock(tmp_path).acquire().release()


def test_a_stale_lock_is_taken_over_and_said(tmp_path):
    stale = LockOwner(dead_pid(), socket.gethostname(), "yesterday", None)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / LOCK_FILE).write_text(json.dumps(stale.__dict__))
    say: list[str] = []
    RunDirectory(cfg_for(tmp_path), say.append).open()
    assert (
        say[0]
        == f"took over the stale lock of pid {stale.pid} on {stale.host}, started yesterday (that process is gone)"
    )
    assert RunLock(tmp_path / "r").holder() == LockOwner.me()


def test_a_lock_from_another_host_is_refused_with_what_to_do(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps(LockOwner(1, "elsewhere", "today", 5).__dict__))
    with pytest.raises(
        RuntimeError, match=r"another host: cannot check it from here\); if that run is gone, delete"
    ):
        RunLock(tmp_path).acquire()


# ---------------------------------------------------------------------------------------------- divergence, lr
def test_divergence_guard_spike_collapse_and_quiet_noise():
    guard = DivergenceGuard(spike_factor=1000, collapse_factor=1e-6, window=5)
    assert all(
        guard.observe(s, n) is None for s, n in enumerate([0.33, 0.29, 3.0, 0.19, 0.05], 1)
    )  # 10x: noise
    assert "training diverged at step 6: gradient norm 9.55e+06 is" in guard.observe(6, 9.55e6)
    assert "collapsed below 1e-06x" in guard.observe(6, 0.0)
    assert guard.observe(6, 0.0, loss=0.0) is None  # zero advantages (GRPO): no gradient by design
    assert "the gradient norm is nan" in guard.observe(6, float("nan"))
    restored = DivergenceGuard(1000, 1e-6, 5)
    restored.load_state_dict(guard.state_dict())
    assert restored.history == guard.history


@pytest.mark.parametrize("lr", ["inf", ".nan", "0", "-1e-5"])
def test_non_finite_or_non_positive_learning_rates_are_refused(lr):
    with pytest.raises(ConfigError, match="learner.lr: "):
        load_config(None, [f"learner.lr={lr}"])


# ---------------------------------------------------------------------------------------------- logs
def test_a_resumed_log_rewinds_to_the_checkpoint_and_keeps_the_rest_aside(tmp_path):
    from rayunify.runlog import RunLogger

    cfg = cfg_for(tmp_path)
    logger = RunLogger(tmp_path, cfg)
    for step in range(5):
        logger.log(step, {"train/loss": float(step)})
    logger.close()
    resumed = RunLogger(tmp_path, cfg, resume=True)
    assert resumed.rows == 5
    aside = resumed.rewind(3)
    resumed.log(3, {"train/loss": 30.0})
    resumed.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3] and aside is not None
    assert [json.loads(line)["step"] for line in aside.read_text().splitlines()] == [3, 4]


# ---------------------------------------------------------------------------------------------- commands
@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "c.yaml", "--resume", "trainer.steps=9", "learner.lr=1e-6"],
        ["trainer.steps=9", "--resume", "--config", "c.yaml", "learner.lr=1e-6"],
        ["trainer.steps=9", "--config=c.yaml", "learner.lr=1e-6", "--resume=true"],
    ],
)
def test_train_options_and_overrides_in_any_order(argv):
    from rayunify.train import parse_args

    args = parse_args(argv)
    assert (args.config, args.resume, args.overrides) == (
        "c.yaml",
        "true",
        ["trainer.steps=9", "learner.lr=1e-6"],
    )
    assert parse_args(["a.b=1", "--resume=auto", "--overwrite"]).resume == "auto"


def test_eval_options_and_overrides_in_any_order(tmp_path, capsys):
    from rayunify.cli import main

    # --run after an override: parsed (then refused for the missing directory: one line, exit 2)
    assert (
        main(["eval", "trainer.seed=1", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "config file" in capsys.readouterr().err


def test_the_first_signal_asks_for_a_stop_at_the_step_boundary_the_second_stops_now(capsys):
    from rayunify.driver.stopping import STOP, StopRequested, graceful_stop

    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with graceful_stop():
            os.kill(os.getpid(), sig)
            assert STOP.requested and STOP.name == sig.name
            assert "stopping after this step with a checkpoint" in capsys.readouterr().err
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)
        assert StopRequested("stopped", sig).exit_code == code
    assert signal.getsignal(signal.SIGTERM) != STOP.handle  # the previous handlers are back


def test_resume_command_replaces_resume_and_overwrite_flags():
    got = resume_command(["--config", "c.yaml", "--overwrite", "a.b=1", "--resume=auto"])
    assert got == "rayunify train --config c.yaml a.b=1 --resume"


def test_an_unreachable_ray_address_is_one_line_within_the_timeout(tmp_path, capsys):
    from rayunify.train import main

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    argv = ["model.path=builtin:tiny", "judge.type=noisy", "judge.base.type=shapes_checker", "prompts.n_train=16",
            "prompts.n_eval=4", f"trainer.output_dir={tmp_path}", "logger.type=jsonl",
            f"ray.address=127.0.0.1:{port}", "ray.connect_timeout_s=5"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - started < 60 and len(err.splitlines()) == 1
    assert f"ray.address=127.0.0.1:{port}: nothing answers there within 5 s" in err
    assert not (tmp_path / "run" / LOCK_FILE).exists()
