"""The offline build in chunks: each chunk goes to the training data and is checkpointed as it finishes, and a
build that dies resumes from its last finished chunk with no prompt judged twice and the data an
uninterrupted build holds.

The judge is user code (`counting_judge` below, loaded by the judge actor by import path) that notes every
prompt it judges in a file, so the test counts judgements across both runs of an interrupted build.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from tiny_runs import start_local_cluster

from rayunify.config import load_config
from rayunify.driver.build import BuildProgress, group_by_prompt
from rayunify.driver.runtime import ray_get
from rayunify.metrics import VerdictRecord
from rayunify.train import Hooks, Trainer
from rayunify.training_data import TrainingData
from rayunify.types import JudgedSample, Judgement, Prompt, Sample, Verdict

N = 2  # samples per prompt
CHUNK = 3  # prompts per build chunk: 8 training prompts make chunks of 3, 3 and 2


def counting_judge(images, prompts, log):
    """Accepts images brighter than middle grey (some of a random model's, not all), noting each prompt."""
    with open(log, "a") as f:
        f.writelines(f"{p.prompt_id}\n" for p in prompts)
    scores = [float(np.asarray(image, dtype=np.float64).mean() / 255.0) for image in images]
    return [s > 0.5 for s in scores], scores


# ---------------------------------------------------------------------------------------------- no Ray
def judged(prompt: Prompt, verdicts: list[Verdict], reference: bool) -> list[JudgedSample]:
    return [
        JudgedSample(
            Sample(f"{prompt.prompt_id}-{k}", prompt, np.arange(4, dtype=np.int64) + k, 0),
            Judgement(v, 0.9 if v == Verdict.ACCEPT else 0.1),
            Judgement(Verdict.ACCEPT, 1.0) if reference and k == 0 else None,
        )
        for k, v in enumerate(verdicts)
    ]


def test_a_build_in_chunks_reports_the_row_of_one_build_and_its_progress_round_trips(tmp_path):
    A, R, INVALID = Verdict.ACCEPT, Verdict.REJECT, Verdict.INVALID
    prompts = [Prompt(f"p{i}", f"prompt {i}", category="c") for i in range(5)]
    verdicts = [[A, R], [R, R], [A, A], [INVALID, R], [A, INVALID]]
    samples = [item for i, p in enumerate(prompts) for item in judged(p, verdicts[i], reference=i % 2 == 0)]
    whole = TrainingData(prompts).add_groups(group_by_prompt(samples), 0)
    data, progress = TrainingData(prompts), BuildProgress()
    for chunk in (samples[:4], samples[4:8], samples[8:]):
        metrics = data.add_groups(group_by_prompt(chunk), 0)
        progress.add({**metrics, "time/pair_s": 0.0}, chunk)
    assert {k: v for k, v in progress.metrics().items() if k != "time/pair_s"} == whole
    assert progress.chunks_done == 3 and len(progress.records) == 3  # one reference verdict per even prompt
    assert progress.record_prompts == ["prompt 0", "prompt 2", "prompt 4"]
    progress.finished = True
    torch.save(progress.to_plain(), tmp_path / "progress.pt")
    loaded = BuildProgress.from_plain(torch.load(tmp_path / "progress.pt", weights_only=True))
    assert loaded == progress and isinstance(loaded.records[0], VerdictRecord)
    assert loaded.records[0].own is Verdict.ACCEPT


# ---------------------------------------------------------------------------------------------- on Ray
class Interrupt(Exception):
    """Stands for the driver dying: raised by a hook, it ends the run (its actors are torn down)."""


class Build(Hooks):
    """Keeps the training data as the build's last chunk leaves it; dies after `die_after` chunks; kills the
    rollout actor after `kill_rollout_after` chunks (the next chunk's parts all fail, and are re-run on a
    restarted actor); ends the run after the first learner step's row (the build's data trained on)."""

    def __init__(self, log: Path, die_after: int | None = None, kill_rollout_after: int | None = None) -> None:
        self.log, self.die_after, self.kill_rollout_after = log, die_after, kill_rollout_after
        self.data, self.train_prompts, self.judged = None, None, Counter()

    def after_build_chunk(self, trainer, chunk):
        if chunk + 1 == self.die_after:
            raise Interrupt(f"killed after build chunk {chunk}")
        if chunk + 1 == self.kill_rollout_after:
            ray.kill(trainer.collector.rollout.actors[0], no_restart=True)
        self.train_prompts = [p.prompt_id for p in ray_get(trainer.data.all_prompts.remote())]
        self.judged = Counter(self.log.read_text().split())  # at the build's end (training judges fresh samples too)
        self.data = json.dumps(ray_get(trainer.data.state_dict.remote()), default=np.ndarray.tolist, sort_keys=True)

    def after_step(self, trainer):
        if trainer.step == 1:  # step 1's row is logged: the build's data has been trained on
            raise Interrupt("enough")


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    start_local_cluster()  # tests/ on the actors' path: the judge actor imports counting_judge from here
    yield
    ray.shutdown()


def config(tmp_path: Path, name: str, *overrides: str):
    return load_config(None, [
        "model.path=builtin:tiny", "judge.type=python", "judge.import_path=test_offline_build:counting_judge",
        f"judge.kwargs.log={tmp_path / name}.judged", "prompts.n_train=8", "prompts.n_eval=2",
        f"sampling.samples_per_prompt={N}", "sampling.guidance_scale=2.0", "rollout.max_rows=4",  # a prompt a part
        "rollout.num_cpus=0.5", "judge_actors.num_cpus=0.5", "algorithm.type=sft", "trainer.mode=offline",
        f"trainer.build_chunk_prompts={CHUNK}", "learner.batch_size=2", "trainer.eval_prompts=2",
        "guard.probe_size=0", "trainer.eval_fixed_images=false", "logger.type=jsonl", f"trainer.output_dir={tmp_path}",
        f"trainer.run_name={name}", *overrides,
    ])  # fmt: skip


def run(cfg, hooks: Build) -> None:
    with pytest.raises(Interrupt):
        Trainer(cfg, hooks=hooks).run()


def rows(tmp_path: Path, name: str) -> list[dict]:
    timing = ("time/", "idle/", "busy/")
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(timing) and not k.endswith("_s")} for line in lines]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.slow  # three short runs: about 90 s on 2 loaded cores
def test_a_killed_build_resumes_from_its_last_chunk_judging_each_prompt_once(tmp_path):
    straight = Build(tmp_path / "straight.judged", kill_rollout_after=1)  # a lost rollout actor changes nothing
    run(config(tmp_path, "straight"), straight)
    assert straight.train_prompts is not None and len(straight.train_prompts) == 8
    every_prompt_once = Counter({pid: N for pid in straight.train_prompts})
    assert straight.judged == every_prompt_once

    run(config(tmp_path, "killed"), Build(tmp_path / "killed.judged", die_after=2))  # chunks 0 and 1 checkpointed
    judged_before = Counter((tmp_path / "killed.judged").read_text().split())
    assert sum(judged_before.values()) == 2 * CHUNK * N
    resumed = Build(tmp_path / "killed.judged")
    run(config(tmp_path, "killed", "trainer.resume=true"), resumed)
    assert resumed.judged == every_prompt_once  # across both runs: no prompt judged twice
    assert resumed.data == straight.data  # the same buffer, pairs, difficulty, pool and prompt order
    # The same logged rows: the start evaluation (first run), the build's row and the first learner step.
    got, want = rows(tmp_path, "killed"), rows(tmp_path, "straight")
    assert want[2].pop("actors/restarts") == 1 and got[2].pop("actors/restarts") == 0
    assert len(got) == len(want) == 3 and all(same(a, b) for a, b in zip(got, want, strict=True))
    assert want[1]["data/groups"] == 8 and want[2]["train/loss"] > 0
