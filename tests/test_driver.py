"""The driver's collaborators that hold logic of their own, without Ray: the checkpointer's typed state and
its rotation. (Weight sync runs on real actors in test_learner_group.py; the whole loop in test_runtime.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rayunify.config import CurriculumConfig
from rayunify.driver.checkpointer import Checkpointer, DriverState
from rayunify.driver.monitor import FixedImages, ProbeSet
from rayunify.guard import CoDegradationGuard
from rayunify.metrics import VerdictRecord
from rayunify.training_data import TrainingData
from rayunify.types import JudgedSample, Judgement, Prompt, Sample, Verdict

A, R = Verdict.ACCEPT, Verdict.REJECT


class FakeLearner:
    def __init__(self) -> None:
        self.saved: list[str] = []

    def save_checkpoint(self, save_dir: str, tag: str) -> None:
        (Path(save_dir) / tag).mkdir(parents=True)
        (Path(save_dir) / tag / "weights.bin").write_bytes(b"w" * len(self.saved))
        self.saved.append(save_dir)

    def load_checkpoint(self, load_dir: str, tag: str) -> None:
        assert (Path(load_dir) / tag / "weights.bin").is_file()  # written into a temporary dir, renamed into place


def driver_state(step: int) -> DriverState:
    prompts = [Prompt(f"p{i}", f"a red circle {i}", category="shape") for i in range(3)]
    data = TrainingData(prompts, CurriculumConfig(type="adaptive"), seed=1)
    group = [
        JudgedSample(Sample(f"s{k}", prompts[0], np.arange(4, dtype=np.int64) + k, 0), Judgement(v, s))
        for k, (v, s) in enumerate([(A, 0.9), (R, 0.2)])
    ]
    data.add_groups([group], step=0)
    data.next_prompts(2)
    guard = CoDegradationGuard(min_agreement=0.5, window=2)
    guard.observe([VerdictRecord("shape", A, 0.9, R), VerdictRecord("shape", R, 0.1, R)])
    images = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    return DriverState(
        step=step,
        data=data.state_dict(),
        guard=guard.state_dict(),
        probe=ProbeSet(["a", "b"], images, np.arange(8, dtype=np.int64).reshape(2, 4)),
        fixed_images=FixedImages(["a", "b"], ["shape", "shape"], [int(A), int(R)], images),
        skipped_batches=3,
    )


def test_driver_state_round_trips_through_weights_only_load(tmp_path):
    state = driver_state(step=4)
    checkpoints = Checkpointer(tmp_path / "checkpoints", keep=2)
    learner = FakeLearner()
    path = checkpoints.save(state, learner, "model: {}\n")
    assert checkpoints.newest().path == path and path.name == "step_000004"
    torch.load(path / "driver.pt", weights_only=True)  # no pickled objects: loads without running code
    loaded = checkpoints.load(path, learner)
    assert (loaded.step, loaded.skipped_batches, loaded.guard) == (4, 3, state.guard)
    assert loaded.probe is not None and loaded.fixed_images is not None and state.probe is not None
    assert loaded.probe.prompts == state.probe.prompts
    for got, want in ((loaded.probe.images, state.probe.images), (loaded.probe.tokens, state.probe.tokens)):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and np.array_equal(got, want)
    assert loaded.fixed_images.references == [int(A), int(R)]
    # The training data resumes exactly: same next prompts, same buffer.
    prompts = [Prompt(f"p{i}", f"a red circle {i}", category="shape") for i in range(3)]
    a, b = TrainingData(prompts, CurriculumConfig(type="adaptive")), TrainingData(prompts, CurriculumConfig(type="adaptive"))
    a.load_state_dict(state.data)
    b.load_state_dict(loaded.data)
    assert a.next_prompts(5) == b.next_prompts(5) and a.metrics() == b.metrics()


def test_checkpoints_rotate_and_a_fresh_run_clears_them(tmp_path):
    checkpoints = Checkpointer(tmp_path / "checkpoints", keep=2)
    learner = FakeLearner()
    for step in (2, 4, 6):
        checkpoints.save(DriverState(step, {}, {}, None, None, 0), learner, "")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_000004", "step_000006"]
    loaded = checkpoints.load(checkpoints.newest().path, learner)
    assert loaded.step == 6 and loaded.probe is None and loaded.fixed_images is None
    checkpoints.clear()
    assert checkpoints.newest().path is None
