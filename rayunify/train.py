"""The driver: `python -m rayunify.train --config FILE [key=value …] [--resume] [--dry-run]`.

One process owns the loop and the logger (single controller); Ray actors do the work:
rollout actors draw images, judge actors label them, the replay-buffer actor pairs and ranks them, the
DeepSpeed learner group trains and pushes weights back. `Trainer.run` reads like the algorithm; the
mechanics (chunking, failure handling, checkpoints) sit in small methods below it.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
import zlib
from functools import partial
from pathlib import Path
from typing import Any

from rayunify.config import Config, ConfigError, dump_config, load_config
from rayunify.guard import CoDegradationAlarm, CoDegradationGuard
from rayunify.metrics import VerdictRecord, flatten, unification_metrics
from rayunify.types import JudgedSample, Verdict

# Keep a local Ray cluster on loopback (NOTES §4); must be set before ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


class LearnerFailure(RuntimeError):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayunify train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file under configs/ or examples/")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="validate and build every part without weights")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 judge.type=self")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides + (["trainer.resume=true"] if args.resume else []))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.dry_run:
        from rayunify.dryrun import dry_run

        return dry_run(cfg)
    try:
        Trainer(cfg).run()
    except (LearnerFailure, CoDegradationAlarm) as err:
        print(f"\nrun stopped: {err}", file=sys.stderr)
        return 1
    return 0


class Trainer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.run_dir = Path(cfg.trainer.output_dir) / cfg.trainer.run_name
        self.dpo = cfg.algorithm.type == "dpo"
        self.step = 0
        self.last_update_ref: Any = None
        self.pushed_version = 0
        self.push_group_formed = False  # learner.weight_transport=broadcast: (re-)formed before a push
        self.push_group_generation = 0
        self.guard = CoDegradationGuard(min_agreement=cfg.guard.min_agreement, window=cfg.guard.window)
        self.probe: dict[str, Any] | None = None
        self.fixed_images: dict[str, Any] | None = None
        self.skipped_batches = 0
        self.actor_restarts = 0

    # ================================================================== the algorithm
    def run(self) -> None:
        self.setup()
        try:
            if self.cfg.trainer.mode == "online":
                self.train_online()
            else:
                self.train_offline()
            self.finish()
        finally:
            self.teardown()

    def train_online(self) -> None:
        cfg = self.cfg.trainer
        pending = self.launch_collection(self.step, self.next_prompts())
        while self.step < cfg.steps:
            started = time.perf_counter()
            judged, timings = self.finish_collection(pending)  # generate + judge (this step's prompts)
            data_metrics = self.add_to_buffer(judged)  # Algorithm 1 pairing, difficulty, discard pool
            if cfg.sync == "async" and self.step + 1 < cfg.steps:
                pending = self.launch_collection(self.step + 1, self.next_prompts())  # overlaps training
            train_metrics = self.learner_step()  # DPO or SFT on a difficulty-ranked batch
            push_metrics = self.push_weights() if (self.step + 1) % cfg.push_every == 0 else {}
            if self.due_replay(self.step):  # Algorithm 2: regenerate the discard pool with the current model
                data_metrics.update(self.replay_discard_pool(self.step))
            if cfg.sync == "sync" and self.step + 1 < cfg.steps:
                pending = self.launch_collection(self.step + 1, self.next_prompts())
            timings["step_s"] = time.perf_counter() - started
            self.end_of_step(judged, {**data_metrics, **train_metrics, **push_metrics, **timings})

    def train_offline(self) -> None:
        """The paper's recipe: build the dataset once, train `epochs` passes, replay at curriculum epochs."""
        cfg = self.cfg.trainer
        if self.step == 0:
            prompts = ray_get(self.data.all_prompts.remote())
            judged, _ = self.finish_collection(self.launch_collection(0, prompts))
            # The only freshly judged samples of an offline run are the build's and the replays': the guard
            # checks those (its reference already scored a share of them).
            self.logger.log(0, {**self.add_to_buffer(judged), **self.check_guard_if_due(0, judged)})
        size = ray_get(self.data.size.remote("pair" if self.dpo else "sft"))
        steps_per_epoch = max(1, math.ceil(size / self.cfg.learner.batch_size))
        total = cfg.epochs * steps_per_epoch
        self.progress.reset(total=total)
        self.progress.update(self.step)
        while self.step < total:
            started = time.perf_counter()
            epoch, metrics = self.step // steps_per_epoch, {}
            if self.step % steps_per_epoch == 0 and self.due_replay(epoch):
                metrics.update(self.replay_discard_pool(epoch, check_guard=True))
            metrics.update(self.learner_step())
            if (self.step + 1) % cfg.push_every == 0:
                metrics.update(self.push_weights())
            metrics.update({"epoch": float(epoch), "step_s": time.perf_counter() - started})
            self.end_of_step([], metrics)

    # ================================================================== set-up and tear-down
    def setup(self) -> None:
        from rayunify.prompts import load_prompts
        from rayunify.runlog import RunLogger

        resume = self.cfg.trainer.resume and self.latest_checkpoint() is not None
        if not resume and self.run_dir.exists():
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, self.run_dir / "config.yaml")
        self.train_prompts, self.eval_prompts = load_prompts(self.cfg.prompts)
        self.resolve_builtin_model()
        self.started_ray = init_ray(self.cfg)
        self.build_actors()
        self.logger = RunLogger(self.run_dir, self.cfg, resume=resume)
        self.progress = make_progress(self.cfg.trainer.steps)
        if resume:
            self.restore()
        else:
            self.evaluate_and_probe()

    def resolve_builtin_model(self) -> None:
        """Build a built-in model (e.g. the ShapesWorld base) once, here, with its progress bar on the
        console; the actors then load the cached directory instead of racing to build it."""
        from rayunify.builtins import is_builtin, resolve_model_path

        if is_builtin(self.cfg.model.path):
            path = resolve_model_path(self.cfg.model.path, seed=self.cfg.trainer.seed)
            self.cfg = self.cfg.model_copy(update={"model": self.cfg.model.model_copy(update={"path": path})})

    def build_actors(self) -> None:
        import ray

        from rayunify.actors.group import ActorGroup
        from rayunify.actors.learner import LearnerGroup
        from rayunify.actors.workers import JudgeWorker, RolloutWorker
        from rayunify.prompts import curriculum_levels
        from rayunify.replay import TrainingData

        cfg, as_dict = self.cfg, self.cfg.model_dump(mode="json")
        cur = cfg.curriculum
        levels = curriculum_levels(self.train_prompts, cur.levels)
        self.data = (
            ray.remote(TrainingData)
            .options(num_cpus=0)
            .remote(
                self.train_prompts, cur.type, cur.replay_at, cur.priority_alpha, cur.admit_threshold,
                cur.smoothing, levels, seed=cfg.trainer.seed,
            )
        )  # fmt: skip
        self.rollout = ActorGroup(
            RolloutWorker, cfg.rollout.num_actors, num_cpus=cfg.rollout.num_cpus, num_gpus=cfg.rollout.num_gpus,
            kwargs={"config": as_dict, "num_cpus": cfg.rollout.num_cpus}, name="rollout",
        )  # fmt: skip
        self.judges = ActorGroup(
            JudgeWorker, cfg.judging.num_actors, num_cpus=cfg.judging.num_cpus, num_gpus=cfg.judging.num_gpus,
            kwargs={"config": as_dict, "num_cpus": cfg.judging.num_cpus}, name="judge",
        )  # fmt: skip
        self.learner = LearnerGroup(
            cfg.learner.num_ranks,
            partial(make_policy, as_dict, keep_reference_copy=self.dpo),
            learner_loss(cfg),
            deepspeed_config(cfg),
            optimizer_kwargs={"lr": cfg.learner.lr, "weight_decay": cfg.learner.weight_decay},
            num_cpus_per_rank=cfg.learner.num_cpus,
            num_gpus_per_rank=cfg.learner.num_gpus,
            seed=cfg.trainer.seed,
        )
        self.rollout.wait_ready()
        self.judges.wait_ready()
        self.live_judges = self.judges_take_pushes()

    def judges_take_pushes(self) -> bool:
        judge = self.cfg.judge
        base = getattr(judge, "base", judge)
        return base.type == "self" and base.weights == "live"

    def receivers(self) -> list[Any]:
        return self.rollout.actors + (self.judges.actors if self.live_judges else [])

    def teardown(self) -> None:
        import ray

        for group in ("rollout", "judges", "learner"):
            if hasattr(self, group):
                getattr(self, group).kill()
        if hasattr(self, "logger"):
            self.logger.close()
        if hasattr(self, "progress"):
            self.progress.close()
        if getattr(self, "started_ray", False):
            ray.shutdown()

    # ================================================================== collection (generate + judge)
    def next_prompts(self) -> list[Any]:
        return ray_get(self.data.next_prompts.remote(self.cfg.trainer.prompts_per_step))

    def launch_collection(self, step: int, prompts: list[Any]) -> dict[int, tuple[list[Any], Any, Any]]:
        """Split prompts over rollout actors; each chunk's judge task waits on its rollout (no driver hop)."""
        actors = len(self.rollout)
        size = max(1, math.ceil(len(prompts) / actors))
        chunks = [prompts[i : i + size] for i in range(0, len(prompts), size)]
        return {c: self.launch_chunk(step, c, chunk) for c, chunk in enumerate(chunks)}

    def launch_chunk(self, step: int, chunk: int, prompts: list[Any]) -> tuple[list[Any], Any, Any]:
        seed = chunk_seed(self.cfg.trainer.seed, step, chunk)
        rollout = self.rollout.actors[chunk % len(self.rollout)]
        judge = self.judges.actors[chunk % len(self.judges)]
        fraction = self.cfg.guard.fraction if self.guard_due(step) else 0.0
        gen_ref = rollout.generate.remote(prompts, self.cfg.sampling.samples_per_prompt, seed, chunk)
        judge_ref = judge.judge_rollout.remote(gen_ref, fraction, seed)
        return prompts, gen_ref, judge_ref

    def finish_collection(self, pending: dict[int, tuple[list[Any], Any, Any]], retries: int = 3):
        """Wait for every chunk; a chunk whose rollout or judge actor died is re-run on a restarted actor,
        so every prompt is processed exactly once."""
        judged: list[JudgedSample] = []
        generate_s, judge_s = [], []
        for chunk, (prompts, gen_ref, judge_ref) in sorted(pending.items()):
            for attempt in range(retries + 1):
                try:
                    samples, seconds = ray_get(judge_ref)
                    rollout = ray_get(gen_ref)
                    break
                except ActorDied:
                    if attempt == retries:
                        raise
                    self.restart_dead_actors()
                    _, gen_ref, judge_ref = self.launch_chunk(self.step, chunk, prompts)
            judged.extend(samples)
            generate_s.append(rollout.generate_s + rollout.decode_s)
            judge_s.append(seconds)
            if chunk == 0 and self.step % self.cfg.logger.image_every == 0:
                self.log_step_images(rollout, samples)
        return judged, {
            "time/generate_s": max(generate_s, default=0.0),
            "time/judge_s": max(judge_s, default=0.0),
            "busy/rollout_s": sum(generate_s),
            "busy/judge_s": sum(judge_s),
        }

    def on_first_rollout(self, method: str, *args: Any) -> Any:
        """Evaluation, probe and export run on rollout actor 0 (it holds the current weights); if it died,
        it is restarted, brought to the current weights, and the call is made again."""
        try:
            return ray_get(getattr(self.rollout.actors[0], method).remote(*args))
        except ActorDied:
            self.restart_dead_actors()
            return ray_get(getattr(self.rollout.actors[0], method).remote(*args))

    def restart_dead_actors(self) -> int:
        """Restart every dead rollout/judge actor and bring it to the current weights."""
        restarted = 0
        for group in (self.rollout, self.judges):
            for index, alive in enumerate(group.alive()):
                if alive:
                    continue
                actor = group.restart(index)
                restarted += 1
                takes_push = group is self.rollout or self.live_judges
                if takes_push and self.pushed_version > 0:
                    ray_get(actor.apply_weight_update.remote(self.catch_up_update()))
                self.push_group_formed = False  # a member is new: the broadcast group forms again
        if not restarted:
            raise RuntimeError("a task failed but every actor is alive: not an actor failure")
        self.actor_restarts += restarted
        return restarted

    def add_to_buffer(self, judged: list[JudgedSample], replay_at: int | None = None) -> dict[str, float]:
        started = time.perf_counter()
        groups: dict[str, list[JudgedSample]] = {}
        for item in judged:
            groups.setdefault(item.sample.prompt.prompt_id, []).append(item)
        metrics = ray_get(self.data.add_groups.remote(list(groups.values()), self.step, replay_at))
        metrics["time/pair_s"] = time.perf_counter() - started
        return metrics

    def due_replay(self, when: int) -> bool:
        return ray_get(self.data.replay_due.remote(when))

    def replay_discard_pool(self, when: int, check_guard: bool = False) -> dict[str, float]:
        """check_guard: offline runs, whose steps judge nothing else (online steps check their own samples)."""
        prompts = ray_get(self.data.replay_prompts.remote())
        judged, _ = self.finish_collection(self.launch_collection(self.step, prompts))
        metrics = self.add_to_buffer(judged, replay_at=when)
        guard = self.check_guard_if_due(self.step, judged) if check_guard else {}
        return {**{f"replay/{k.split('/')[-1]}": v for k, v in metrics.items()}, **guard}

    # ================================================================== learning
    def learner_step(self) -> dict[str, float]:
        from rayunify.actors.policy import TrainBatch

        cfg = self.cfg
        version = self.learner_version()
        staleness = self.max_staleness()
        kind = "pair" if self.dpo else "sft"
        items = ray_get(self.data.sample.remote(kind, cfg.learner.batch_size, version, staleness))
        if not items:  # no usable pair yet (e.g. every group all-accept or all-reject): skip, count, go on
            self.skipped_batches += 1
            return {"train/skipped_batches": float(self.skipped_batches), "time/train_s": 0.0}
        if self.dpo:
            self.fill_reference_logps(items)
        shards = split(items, cfg.learner.num_ranks)
        batches = [make_batch(shard, kind, cfg, TrainBatch) for shard in shards]
        started = time.perf_counter()
        try:
            metrics = self.learner.train_step(batches)
        except Exception as err:  # the learner's error, e.g. a non-finite loss; weights were not touched
            raise self.learner_failed(err) from err
        lags = [version - (it.policy_version if kind == "pair" else it.sample.policy_version) for it in items]
        out = {f"train/{k}": v for k, v in metrics.items()}
        out.update({"time/train_s": time.perf_counter() - started, "train/batch": float(len(items))})
        out.update({"train/staleness_max": float(max(lags)), "train/skipped_batches": float(self.skipped_batches)})
        return out

    def max_staleness(self) -> int | None:
        """Sync: strictly on-policy (0). Async: the configured lag. Offline: a fixed data set, no bound."""
        trainer = self.cfg.trainer
        if trainer.mode == "offline":
            return None
        return 0 if trainer.sync == "sync" else trainer.max_staleness

    def fill_reference_logps(self, pairs: list[Any]) -> None:
        """Reference log-probs once per pair (stored in the buffer), or every time with reference=recompute."""
        from rayunify.actors.policy import TrainBatch, reference_logps_fn
        from rayunify.replay import pair_key

        recompute = self.cfg.algorithm.reference == "recompute"
        todo = [p for p in pairs if recompute or p.ref_chosen_logp is None]
        if not todo:
            return
        batch = make_batch(todo, "pair", self.cfg, TrainBatch)
        chosen, rejected = ray_get(self.learner.group.actors[0].compute.remote(reference_logps_fn, batch))
        for pair, c, r in zip(todo, chosen, rejected, strict=True):
            pair.ref_chosen_logp, pair.ref_rejected_logp = c, r
        if not recompute:
            ray_get(self.data.store_reference.remote([pair_key(p) for p in todo], chosen, rejected))

    def learner_failed(self, err: Exception) -> LearnerFailure:
        """End the run with a clear message; checkpoint now if the learner is still alive."""
        where = "no new checkpoint (the learner is gone)"
        try:
            where = f"checkpoint written: {self.save_checkpoint()}"
        except Exception:  # noqa: BLE001 - the learner may be dead; the last periodic checkpoint remains
            latest = self.latest_checkpoint()
            if latest is not None:
                where = f"resume from {latest}"
        cause = getattr(err, "cause", None) or err
        return LearnerFailure(f"learner failed at step {self.step}: {cause}; {where}; rerun with --resume.")

    def push_by_object_store(self) -> tuple[Any, dict[str, Any], list[tuple[int, float]]]:
        update_ref, meta_refs = self.learner.async_build_update()
        meta = ray_get(meta_refs)[0]
        return update_ref, meta, ray_get([r.apply_weight_update.remote(update_ref) for r in self.receivers()])

    def push_by_broadcast(self) -> tuple[None, dict[str, Any], list[tuple[int, float]]]:
        self.form_push_group()
        header_ref, meta_refs = self.learner.async_prepare_broadcast()
        meta = ray_get(meta_refs)[0]
        send = self.learner.group.actors[0].send_broadcast.remote(header_ref)
        applied = ray_get([r.receive_weight_broadcast.remote(header_ref) for r in self.receivers()])
        ray_get(send)
        return None, meta, applied

    def form_push_group(self) -> None:
        if self.push_group_formed:
            return
        backend = "nccl" if self.cfg.learner.num_gpus > 0 else "gloo"
        self.learner.form_push_channel(self.receivers(), backend=backend, generation=self.push_group_generation)
        self.push_group_generation += 1
        self.push_group_formed = True

    def learner_version(self) -> int:
        return self.learner.versions()[0]

    def catch_up_update(self) -> Any:
        """The update a restarted actor applies: the last pushed one (object store), or with the broadcast
        transport, which keeps no copy, the learner's current weights (at most `max_staleness` ahead)."""
        if self.last_update_ref is not None:
            return self.last_update_ref
        return self.learner.async_build_update()[0]

    def push_weights(self) -> dict[str, float]:
        """Pack once on rank 0; receivers check versions. Object store: one RPC per receiver with the same
        ObjectRef. Broadcast: the header by RPC, the bytes by a collective in a group of their own."""
        if self.learner_version() == self.pushed_version:
            return {}  # the learner skipped its step(s): the actors already hold these weights
        started = time.perf_counter()
        broadcast = self.cfg.learner.weight_transport == "broadcast"
        update_ref, meta, applied = self.push_by_broadcast() if broadcast else self.push_by_object_store()
        versions = [version for version, _ in applied]
        if any(v != meta["version"] for v in versions):
            raise RuntimeError(f"receivers report versions {versions} after a push of version {meta['version']}")
        self.last_update_ref = update_ref
        self.pushed_version = meta["version"]
        apply_s = max(seconds for _, seconds in applied)
        return {
            # The push's own cost (pack on rank 0 + apply on the slowest receiver); in async mode the wall
            # time also includes waiting for a rollout actor to finish the generation it is running.
            "time/push_s": meta["pack_s"] + apply_s,
            "time/push_wall_s": time.perf_counter() - started,
            "push/bytes": float(meta["num_bytes"]),
            "push/tensors": float(meta["num_tensors"]),
            "push/version": float(meta["version"]),
        }

    # ================================================================== evaluation, guard, probe
    def guard_due(self, step: int) -> bool:
        return self.cfg.guard.enabled and step % self.cfg.guard.every == 0

    def evaluate(self, tag: str) -> tuple[dict[str, float], list[Any]]:
        from rayunify.evaluation import save_grid

        prompts = self.eval_prompts[: self.cfg.trainer.eval_prompts]
        n = self.cfg.trainer.eval_samples_per_prompt
        report, items = self.on_first_rollout("evaluate", prompts, n, self.cfg.trainer.seed + 99)
        path = self.run_dir / "images" / f"eval_{tag}.png"
        path.parent.mkdir(exist_ok=True)
        save_grid(items[:48], path)
        (self.run_dir / f"eval_{tag}.json").write_text(__import__("json").dumps(report, indent=2))
        self.logger.log_image(self.step, "eval/samples", path, caption=f"step {self.step}")
        return flatten(report, prefix="eval/"), items

    def evaluate_and_probe(self) -> None:
        metrics, items = self.evaluate("start")
        self.build_probe(items)
        self.keep_fixed_images(items)
        metrics.update(self.probe_metrics())
        self.logger.log(0, metrics)

    def probe_metrics(self) -> dict[str, float]:
        metrics = self.run_probe() if self.probe else {}
        if self.fixed_images:
            metrics.update(self.rejudge_fixed_images())
        return metrics

    def build_probe(self, items: list[Any]) -> None:
        """Frozen set of the base model's own images that its judge accepts but the reference rejects."""
        import numpy as np

        chosen = [i for i in items if i.own.verdict == Verdict.ACCEPT and i.reference.verdict == Verdict.REJECT]
        chosen = chosen[: self.cfg.guard.probe_size]
        if not chosen:
            return
        self.probe = {
            "prompts": [i.prompt.text for i in chosen],
            "images": np.stack([i.image for i in chosen]),
            "tokens": np.stack([i.tokens for i in chosen]),
        }

    def run_probe(self) -> dict[str, float]:
        assert self.probe is not None
        p = self.probe
        return self.on_first_rollout("probe", p["prompts"], p["images"], p["tokens"])

    def keep_fixed_images(self, items: list[Any]) -> None:
        """The start evaluation's images, re-judged at every evaluation (`fixed/*`). `eval/judge_*` score the
        judge on the model's current images, which change as generation trains (a better generator's
        remaining errors are near misses, harder to reject); on fixed images only the judge can change."""
        import numpy as np

        if not self.cfg.trainer.eval_fixed_images or not items:
            return
        self.fixed_images = {
            "prompts": [i.prompt.text for i in items],
            "categories": [i.prompt.category for i in items],
            "references": [int(i.reference.verdict) for i in items],
            "images": np.stack([i.image for i in items]),
        }

    def rejudge_fixed_images(self) -> dict[str, float]:
        f = self.fixed_images
        assert f is not None
        judgements = self.on_first_rollout("judge_images", f["prompts"], f["images"])
        records = [
            VerdictRecord(category, j.verdict, j.score, Verdict(reference))
            for category, j, reference in zip(f["categories"], judgements, f["references"], strict=True)
        ]
        m = unification_metrics(records)
        keys = ("judge_accuracy", "judge_fpr", "judge_fnr", "nonunified", "mean_self_score", "invalid_rate", "count")
        return {f"fixed/{k}": m[k] for k in keys}

    def check_guard_if_due(self, step: int, judged: list[JudgedSample]) -> dict[str, float]:
        return self.check_guard(judged) if self.guard_due(step) else {}

    def check_guard(self, judged: list[JudgedSample]) -> dict[str, float]:
        records = [
            VerdictRecord(j.sample.prompt.category, j.judgement.verdict, j.judgement.score, j.reference.verdict)
            for j in judged
            if j.reference is not None
        ]
        if not records:
            return {}
        verdict = self.guard.observe(records)
        for alarm in verdict.alarms:
            self.progress.write(f"[guard] step {self.step}: {alarm}")
            if self.cfg.guard.stop_on_alarm:
                self.save_checkpoint()
                raise CoDegradationAlarm(f"{alarm} (guard.stop_on_alarm=true; checkpoint saved)")
        return verdict.metrics

    def log_step_images(self, rollout: Any, samples: list[JudgedSample]) -> None:
        from rayunify.evaluation import JudgedImage, save_grid

        items = [
            JudgedImage(s.sample.prompt, img, s.judgement, s.reference or s.judgement, s.sample.image_tokens)
            for s, img in zip(samples[:32], rollout.images[:32], strict=False)
        ]
        path = self.run_dir / "images" / f"step_{self.step:05d}.png"
        path.parent.mkdir(exist_ok=True)
        save_grid(items, path)
        self.logger.log_image(self.step, "rollout/samples", path)
        self.logger.log_table(
            self.step, "rollout/judged", ["prompt", "verdict", "p_yes", "answer"],
            [[s.sample.prompt.text, int(s.judgement.verdict), s.judgement.score, s.judgement.answer] for s in samples[:32]],
        )  # fmt: skip

    # ================================================================== bookkeeping per step
    def end_of_step(self, judged: list[JudgedSample], metrics: dict[str, float]) -> None:
        cfg = self.cfg.trainer
        metrics.update(self.check_guard_if_due(self.step, judged))
        step_s = metrics.get("step_s", 0.0) or 1e-9
        n_roll, n_judge = len(self.rollout), len(self.judges)
        metrics["idle/rollout"] = 1.0 - metrics.pop("busy/rollout_s", 0.0) / (n_roll * step_s)
        metrics["idle/judge"] = 1.0 - metrics.pop("busy/judge_s", 0.0) / (n_judge * step_s)
        metrics["idle/learner"] = 1.0 - metrics.get("time/train_s", 0.0) / step_s
        metrics.update(ray_get(self.data.metrics.remote()))
        metrics["actors/restarts"] = float(self.actor_restarts)
        self.step += 1
        if self.step % cfg.eval_every == 0:
            eval_metrics, _ = self.evaluate(f"step{self.step}")
            metrics.update(eval_metrics)
            metrics.update(self.probe_metrics())
        self.logger.log(self.step, metrics)
        self.progress.update(1)
        self.progress.set_postfix(
            loss=f"{metrics.get('train/loss', float('nan')):.3f}", non=f"{metrics.get('data/nonunified', float('nan')):.2f}"
        )
        if self.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()

    def finish(self) -> None:
        self.push_weights()
        metrics, _ = self.evaluate("final")
        metrics.update(self.probe_metrics())
        self.logger.log(self.step, metrics)
        self.save_checkpoint()
        export = self.on_first_rollout("export", str(self.run_dir / "final_model"))
        self.progress.write(
            f"\nrun finished: {self.step} steps\n  run directory: {self.run_dir}\n  metrics: {self.logger.path}\n"
            f"  images: {self.run_dir / 'images'}\n  exported model (HF layout): {export}\n"
            f"  wandb files: {self.logger.wandb_dir or 'wandb off'}\n"
            f"  plots: rayunify report {self.run_dir}"
        )

    # ================================================================== checkpoints
    def save_checkpoint(self) -> Path:
        import torch

        root = self.run_dir / "checkpoints"
        path = root / f"step_{self.step:06d}"
        path.mkdir(parents=True, exist_ok=True)
        self.learner.save_checkpoint(str(path / "learner"), tag="learner")
        state = {
            "step": self.step,
            "data": ray_get(self.data.state_dict.remote()),
            "guard": self.guard.state_dict(),
            "probe": self.probe,
            "fixed_images": self.fixed_images,
            "skipped_batches": self.skipped_batches,
        }
        torch.save(state, path / "driver.pt")
        (root / "latest.tmp").write_text(path.name)
        os.replace(root / "latest.tmp", root / "latest")
        for old in sorted(p for p in root.glob("step_*") if p != path)[: -self.cfg.trainer.keep_checkpoints + 1 or None]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def latest_checkpoint(self) -> Path | None:
        marker = self.run_dir / "checkpoints" / "latest"
        if not marker.is_file():
            return None
        path = marker.parent / marker.read_text().strip()
        return path if (path / "driver.pt").is_file() else None

    def restore(self) -> None:
        """Learner, buffer, curriculum, guard and step from the latest checkpoint; then weights are re-pushed
        to every actor before anything is generated."""
        import torch

        path = self.latest_checkpoint()
        assert path is not None
        self.learner.load_checkpoint(str(path / "learner"), tag="learner")
        state = torch.load(path / "driver.pt", weights_only=False)
        ray_get(self.data.load_state_dict.remote(state["data"]))
        self.guard.load_state_dict(state["guard"])
        self.probe = state["probe"]
        self.fixed_images = state.get("fixed_images")  # absent in checkpoints written before it existed
        self.skipped_batches = state["skipped_batches"]
        self.step = state["step"]
        self.progress.update(self.step)
        if self.learner_version() > 0:
            self.push_weights()
        self.progress.write(f"resumed from {path} at step {self.step}")


# ====================================================================== helpers (module level: picklable)
class ActorDied(Exception):
    """Stands for Ray's actor-death errors (resolved lazily so this module imports without ray)."""


def ray_get(ref: Any) -> Any:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as err:
        raise ActorDied(str(err)) from err
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ray.exceptions.RayActorError):
            raise ActorDied(str(err)) from err
        raise


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """Seeds depend only on (run seed, step, chunk): a re-run chunk or a resumed run draws the same images."""
    return zlib.crc32(f"{seed}/{step}/{chunk}".encode())


def split(items: list[Any], parts: int) -> list[list[Any]]:
    size = math.ceil(len(items) / parts)
    shards = [items[i * size : (i + 1) * size] for i in range(parts)]
    return [s if s else items[:1] for s in shards]  # every rank must step (collectives), even on a tiny batch


def make_batch(items: list[Any], kind: str, cfg: Config, batch_cls: Any) -> Any:
    import numpy as np
    import torch

    common = {"geometry": cfg.sampling.geometry, "guidance_scale": cfg.sampling.guidance_scale}
    if kind == "sft":
        tokens = torch.as_tensor(np.stack([it.sample.image_tokens for it in items]))
        return batch_cls(prompts=[it.sample.prompt.text for it in items], chosen=tokens, **common)
    ref_c = [p.ref_chosen_logp for p in items]
    ref_r = [p.ref_rejected_logp for p in items]
    return batch_cls(
        prompts=[p.prompt.text for p in items],
        chosen=torch.as_tensor(np.stack([p.chosen.image_tokens for p in items])),
        rejected=torch.as_tensor(np.stack([p.rejected.image_tokens for p in items])),
        ref_chosen=None if None in ref_c else torch.tensor(ref_c),
        ref_rejected=None if None in ref_r else torch.tensor(ref_r),
        **common,
    )


def make_policy(config: dict[str, Any], keep_reference_copy: bool):
    """The learner's model factory: the unified model as a PolicyModule, and which parameters train."""
    from rayunify.actors.policy import PolicyModule
    from rayunify.models import build_model

    cfg = Config.model_validate(config)
    unified = build_model(cfg.model, seed=cfg.trainer.seed)
    module = PolicyModule(unified, keep_reference_copy=keep_reference_copy)
    return module, {name for name, p in module.named_parameters() if p.requires_grad}


def learner_loss(cfg: Config):
    from rayunify.actors.policy import dpo_loss_fn, sft_loss_fn

    a = cfg.algorithm
    if a.type == "sft":
        return sft_loss_fn
    return partial(dpo_loss_fn, beta=a.beta, loss_type=a.loss_type, label_smoothing=a.label_smoothing, nll_weight=a.nll_weight)


def deepspeed_config(cfg: Config) -> dict[str, Any]:
    learner = cfg.learner
    per_rank = max(1, math.ceil(learner.batch_size / learner.num_ranks))
    return {
        "train_micro_batch_size_per_gpu": per_rank,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": learner.grad_clip,
        "zero_optimization": {"stage": learner.zero_stage},
        "bf16": {"enabled": learner.bf16},
    }


def init_ray(cfg: Config) -> bool:
    """Connect to a cluster (`ray.address`, or RAY_ADDRESS inside `ray job submit`) or start a local one.
    Returns whether we started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    needed = (
        cfg.rollout.num_actors * cfg.rollout.num_cpus
        + cfg.judging.num_actors * cfg.judging.num_cpus
        + cfg.learner.num_ranks * cfg.learner.num_cpus
    )
    # Logical CPUs: actors limit their own threads, so asking for more than the cores is fine locally.
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, math.ceil(needed))
    # A private loopback cluster for this run: no token file, no usage report, never someone else's cluster.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level="ERROR")
    return True


def make_progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="rayunify", unit="step", dynamic_ncols=True)


if __name__ == "__main__":
    raise SystemExit(main())
