"""The loop. `train_online` reads like the paper's Algorithm 1 and `train_offline` like Algorithm 2; the
mechanics live in collaborators: `Collector` (generate + judge, retries, actor restarts), `WeightSync`
(the one push path), `Monitor` (evaluation, probe, guard, images), `Checkpointer`, `OfflineBuild` (the
offline data set, chunk by chunk, resumable), and the algorithm's learner step (`PreferenceLearning` for DPO
and SFT, `GRPOLearning`).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from rayunify.config import Config, dump_config
from rayunify.config.transport import push_backend
from rayunify.driver.build import OfflineBuild, group_by_prompt
from rayunify.driver.checkpointer import DriverState
from rayunify.driver.collector import Collected, Collector, Pending
from rayunify.driver.grpo import GRPOLearning
from rayunify.driver.monitor import Monitor, reference_fraction
from rayunify.driver.preference import PreferenceLearning
from rayunify.driver.rundir import FINAL_MODEL, FINAL_RECORD, RunDirectory
from rayunify.driver.runtime import is_actor_death, make_progress, ray_get, start_actors
from rayunify.driver.safeguards import Safeguards, order_curriculum, restore
from rayunify.driver.stopping import actor_lost
from rayunify.driver.weight_sync import WeightSync
from rayunify.types import JudgedSample


class Hooks:
    """Seams for fault-injection tests; every default does nothing."""

    def after_step(self, trainer: Trainer) -> None:
        """A step's work is done (the next collection may be in flight); its bookkeeping comes next."""

    def on_reference_logps(self, pairs: list[Any], step: int) -> None:
        """The batch's pairs hold their reference log-probs; the learner step comes next."""

    def after_build_chunk(self, trainer: Trainer, chunk: int) -> None:
        """An offline build's chunk is in the training data and its build checkpoint is written."""


class Trainer:
    """Builds the run's actors and collaborators at construction; `run()` trains and always tears down."""

    def __init__(self, cfg: Config, hooks: Hooks | None = None) -> None:
        from rayunify.preflight import check_run

        prompt_set = check_run(cfg)  # before anything starts: a bad path or judge is one clear line
        print("\n".join(prompt_set.describe()))
        self.train_prompts = prompt_set.train
        self.hooks = hooks or Hooks()
        self.directory = RunDirectory(cfg)
        self.run_dir, self.checkpoints = self.directory.path, self.directory.checkpoints
        self.build = OfflineBuild(self)  # an offline run's data set; resumable chunk by chunk
        plan = self.directory.open()  # the run's lock, then resume or a fresh start (or a one-line refusal)
        self.resume, self.resumed_from = plan.resume, plan.found.path
        self.resources = ExitStack()  # the lock, every actor, the logger, the progress bar: closed in reverse
        self.resources.callback(self.directory.lock.release)
        try:
            self.start(cfg, prompt_set.train, prompt_set.eval)
        except BaseException:
            self.resources.close()
            raise

    def start(self, cfg: Config, train_prompts: list[Any], eval_prompts: list[Any]) -> None:
        from rayunify.builtins import is_builtin, resolve_model_path
        from rayunify.preflight import check_prompt_lengths
        from rayunify.runlog import RunLogger

        dump_config(cfg, self.run_dir / "config.yaml")
        self.config_yaml = (self.run_dir / "config.yaml").read_text()  # each checkpoint records it
        if is_builtin(cfg.model.path):  # built once here, with its progress bar; actors load the cached copy
            path = resolve_model_path(cfg.model.path, seed=cfg.model.builtin_seed)
            cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": path})})
        print(check_prompt_lengths(cfg, train_prompts + eval_prompts))  # the built model's tokenizer
        self.cfg, self.dpo = cfg, cfg.algorithm.type == "dpo"
        self.step = self.skipped_batches = 0
        self.trained = False  # whether the latest learner step had anything to train on
        self.safeguards = Safeguards(self, cfg)
        actors = start_actors(cfg, train_prompts, self.resources)
        self.logger = RunLogger(self.run_dir, cfg, resume=self.resume)
        self.resources.callback(self.logger.close)
        self.progress = self.resources.enter_context(make_progress(cfg.trainer.steps))
        self.data, self.learner = actors.data, actors.learner
        backend = push_backend(cfg.learner.num_gpus, cfg.push_receiver_gpus())  # nccl only on distinct GPUs
        self.sync = WeightSync(self.learner, actors.receivers, cfg.learner.weight_transport, backend,
                               timeout_s=cfg.learner.push_timeout_s)  # fmt: skip
        from rayunify.actors.workers import prompts_per_call

        self.collector = Collector(actors, self.sync, cfg.sampling.samples_per_prompt, cfg.trainer.seed,
                                   partial(reference_fraction, cfg), part_prompts=prompts_per_call(cfg))  # fmt: skip
        self.sync.restart_dead = self.collector.restart_dead_actors  # a receiver lost mid-push: restart, retry
        self.monitor = Monitor(cfg, self.run_dir, self.logger, self.progress, eval_prompts, train_prompts,
                               self.collector.on_first_rollout, self.save_checkpoint)  # fmt: skip
        grpo = cfg.algorithm.type == "grpo"
        self.algorithm = GRPOLearning(cfg, self.data, self.learner) if grpo else PreferenceLearning(
            cfg, self.data, self.learner, self.hooks
        )

    # ================================================================== the algorithm
    def run(self) -> None:
        try:
            if self.resume:
                restore(self)
            else:
                start = self.monitor.start()
                self.logger.log(0, {**start, **order_curriculum(self)})
            self.safeguards.stop_if_requested()
            if self.cfg.trainer.mode == "online":
                self.train_online()
            else:
                self.train_offline()
            self.finish()
        except Exception as err:
            if is_actor_death(err):  # the training data or a learner rank: its state is gone with it
                raise actor_lost(err, self.step, self.checkpoints) from err
            raise
        finally:
            self.resources.close()

    def train_online(self) -> None:
        cfg = self.cfg.trainer
        pending = self.collector.launch(self.step, self.next_prompts())
        while self.step < cfg.steps:
            started = time.perf_counter()
            collected = self.collect(pending)  # generate + judge (this step's prompts)
            data_metrics = self.add_to_buffer(collected.judged)  # Algorithm 1 pairing, difficulty, discard pool
            if cfg.sync == "async" and self.step + 1 < cfg.steps:
                pending = self.collector.launch(self.step + 1, self.next_prompts())  # overlaps training
            train_metrics = self.learner_step()  # DPO or SFT on a difficulty-ranked batch
            self.safeguards.check_health([j.judgement for j in collected.judged])
            push_metrics = self.push_weights() if (self.step + 1) % cfg.push_every == 0 else {}
            if self.due_replay(self.step):  # Algorithm 2: regenerate the discard pool with the current model
                data_metrics.update(self.replay_discard_pool(self.step))
            if cfg.sync == "sync" and self.step + 1 < cfg.steps:
                pending = self.collector.launch(self.step + 1, self.next_prompts())
            timings = {**collected.timings, "step_s": time.perf_counter() - started}
            self.hooks.after_step(self)
            self.end_of_step(collected.judged, {**data_metrics, **train_metrics, **push_metrics, **timings})

    def train_offline(self) -> None:
        """The paper's recipe: build the dataset once, then `epochs` full passes over what it holds; a
        curriculum epoch first replays the discard pool and adds what it recovers (Algorithm 2), so that epoch
        and the later ones are longer. Each epoch ends with a guard check on fresh samples."""
        cfg, batch = self.cfg.trainer, self.cfg.learner.batch_size
        if self.step == 0:
            self.build.run()  # chunk by chunk; a resumed build goes on from its last finished chunk
        epoch, left = ray_get(self.data.epoch_progress.remote(batch))
        self.progress.reset()
        self.progress.update(self.step)
        while left > 0 or epoch + 1 < cfg.epochs:
            started, metrics = time.perf_counter(), {}
            if left == 0:
                epoch, left, begun = self.begin_epoch(epoch + 1)
                metrics.update(begun)
            metrics.update(self.learner_step())
            self.safeguards.check_health([])
            left -= 1
            if (self.step + 1) % cfg.push_every == 0:
                metrics.update(self.push_weights())
            if left == 0:
                metrics.update(self.fresh_guard_check())
            metrics.update({"epoch": float(epoch), "step_s": time.perf_counter() - started})
            self.hooks.after_step(self)
            self.end_of_step([], metrics)

    def begin_epoch(self, epoch: int) -> tuple[int, int, dict[str, float]]:
        """Replay first where the curriculum says so, then a pass over everything held. Returns (epoch, steps,
        metrics); an epoch over no data still takes one (skipped) step, so it is logged."""
        metrics = self.replay_discard_pool(epoch) if self.due_replay(epoch) else {}
        capped = self.cfg.trainer.epoch_steps == "first"
        kind = "pair" if self.dpo else "sft"
        epoch, steps = ray_get(self.data.begin_epoch.remote(kind, self.cfg.learner.batch_size, capped))
        metrics["data/epoch_steps"] = float(steps)
        remaining = self.cfg.trainer.epochs - epoch - 1
        self.progress.total = self.step + max(steps, 1) * (1 + remaining)  # later epochs: at least this long
        self.progress.refresh()
        return epoch, max(steps, 1), metrics

    def fresh_guard_check(self) -> dict[str, float]:
        """Offline: the guard on fresh samples of the current model, for `trainer.prompts_per_step` training
        prompts (cycling through them); they are judged, never added to the data."""
        if not self.cfg.guard.enabled:
            return {}
        judged = self.collect(self.collector.launch(self.step, self.next_prompts())).judged
        return self.monitor.check_guard(self.step, judged)

    # ================================================================== data
    def next_prompts(self) -> list[Any]:
        return ray_get(self.data.next_prompts.remote(self.cfg.trainer.prompts_per_step))

    def collect(self, pending: Pending) -> Collected:
        collected = self.collector.finish(pending)
        if collected.first_rollout is not None and self.step % self.cfg.logger.image_every == 0:
            self.monitor.log_step_images(self.step, collected.first_rollout, collected.first_judged)
        return collected

    def add_to_buffer(self, judged: list[JudgedSample], replay_at: int | None = None) -> dict[str, float]:
        started = time.perf_counter()
        metrics = ray_get(self.data.add_groups.remote(group_by_prompt(judged), self.step, replay_at))
        metrics["time/pair_s"] = time.perf_counter() - started
        return metrics

    def due_replay(self, when: int) -> bool:
        return ray_get(self.data.replay_due.remote(when))

    def replay_discard_pool(self, when: int) -> dict[str, float]:
        """Algorithm 2: the pooled prompts regenerated with the current model; what they recover is added.
        (Offline runs' guard checks fresh samples at every epoch's end instead, `fresh_guard_check`.)"""
        prompts = ray_get(self.data.replay_prompts.remote())
        judged = self.collect(self.collector.launch(self.step, prompts)).judged
        metrics = self.add_to_buffer(judged, replay_at=when)
        return {f"replay/{k.split('/')[-1]}": v for k, v in metrics.items()}

    # ================================================================== learning
    def learner_step(self) -> dict[str, float]:
        """One step of the configured algorithm on what the training-data actor holds; nothing usable yet
        (every group all-accept or all-reject, or too stale): skip, count, go on."""
        version = self.learner.versions()[0]
        items, counts = self.algorithm.take(version, max_staleness(self.cfg.trainer))
        self.trained = bool(items)
        if not items:
            self.skipped_batches += 1
            return {**counts, "train/skipped_batches": float(self.skipped_batches), "time/train_s": 0.0}
        started = time.perf_counter()
        try:
            metrics = self.algorithm.train(items, self.step)
        except Exception as err:  # the learner's error, e.g. a non-finite loss; weights were not touched
            if is_actor_death(err):
                raise
            raise self.safeguards.learner_failed(err) from err
        self.safeguards.check_divergence(metrics)
        metrics.update(counts)
        metrics.update({"time/train_s": time.perf_counter() - started, "train/skipped_batches": float(self.skipped_batches)})
        metrics["train/staleness_max"] = float(max(self.algorithm.lags(items, version)))
        return metrics

    def push_weights(self) -> dict[str, float]:
        stats = self.sync.push()
        return stats.metrics() if stats is not None else {}

    # ================================================================== bookkeeping
    def end_of_step(self, judged: list[JudgedSample], metrics: dict[str, float]) -> None:
        cfg = self.cfg.trainer
        metrics.update(self.monitor.check_guard(self.step, judged))
        add_idle_fractions(metrics, len(self.collector.rollout), len(self.collector.judges))
        metrics.update(ray_get(self.data.metrics.remote()))
        metrics["actors/restarts"] = float(self.collector.restarts)
        self.step += 1
        if self.step % cfg.eval_every == 0:
            metrics.update(self.monitor.evaluate_all(f"step{self.step}", self.step))
        self.logger.log(self.step, metrics)
        self.progress.update(1)
        loss = metrics.get("train/loss")  # a skipped step has no loss: say so rather than show nan
        self.progress.set_postfix(
            loss="skipped" if loss is None else f"{loss:.3f}", non=f"{metrics.get('data/nonunified', float('nan')):.2f}"
        )
        if self.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()
        self.safeguards.stop_if_requested()

    def finish(self) -> None:
        self.push_weights()
        self.logger.log(self.step, self.monitor.evaluate_all("final", self.step))
        self.save_checkpoint()
        export = self.collector.on_first_rollout("export", str(self.run_dir / FINAL_MODEL))
        (self.run_dir / FINAL_RECORD).write_text(json.dumps({"step": self.step, "path": FINAL_MODEL}))
        self.progress.write(finish_message(self.step, self.run_dir, self.logger, export))

    def driver_state(self) -> DriverState:
        m = self.monitor
        data = ray_get(self.data.state_dict.remote())
        divergence = self.safeguards.divergence_state()
        return DriverState(self.step, data, m.guard.state_dict(), m.probe, m.fixed_images, self.skipped_batches,
                           self.logger.rows, divergence)  # fmt: skip

    def save_checkpoint(self) -> Path:
        """This step's checkpoint; one already written for it is never written again."""
        return self.checkpoints.intact(self.step) or self.checkpoints.save(
            self.driver_state(), self.learner, self.config_yaml
        )


def max_staleness(trainer: Any) -> int | None:
    """Sync: strictly on-policy (0). Async: the configured lag. Offline: a fixed data set, no bound."""
    if trainer.mode == "offline":
        return None
    return 0 if trainer.sync == "sync" else trainer.max_staleness


def add_idle_fractions(metrics: dict[str, float], n_rollout: int, n_judges: int) -> None:
    """The share of the step each role waited: busy seconds (summed over a role's actors) over its capacity."""
    step_s = metrics.get("step_s", 0.0) or 1e-9
    metrics["idle/rollout"] = 1.0 - metrics.pop("busy/rollout_s", 0.0) / (n_rollout * step_s)
    metrics["idle/judge"] = 1.0 - metrics.pop("busy/judge_s", 0.0) / (n_judges * step_s)
    metrics["idle/learner"] = 1.0 - metrics.get("time/train_s", 0.0) / step_s


def finish_message(steps: int, run_dir: Path, logger: Any, export: Any) -> str:
    return (
        f"\nrun finished: {steps} steps\n  run directory: {run_dir}\n  metrics: {logger.path}\n"
        f"  images: {run_dir / 'images'}\n  exported model (HF layout): {export}\n"
        f"  wandb files: {logger.wandb_dir or 'wandb off'}\n"
        f"  plots: rayunify report {run_dir}"
    )
