"""Pipeline throughput: the overlap that rollout/learner pipelining can buy, and the Ray trainer's per-step time.

Two measurements, same model, judge, prompts, batch and online DPO, each against a baseline in the same run:

1. Overlap gain, without Ray: the sequential loop (generate -> judge -> pair -> reference -> DPO step, torch's
   AdamW) in one process, against the same pieces split in two processes, each pinned to a core of its own
   (`os.sched_setaffinity`, one torch thread each): one generates and judges step k+1 while the other
   learns on step k and then pushes (pack -> check -> copy, as the object-store push does); samples lag
   the learner by one version, as in async mode. Baselines: the sequential loop pinned to one core with one
   thread, on both cores with one thread (free to move to the idler core) and with two threads (torch's own
   intra-op parallelism); the fastest is what one loop gets from these two cores, and `pipeline ratio` is
   the pinned pipeline over it.
2. The Ray trainer, sync and async, for online DPO and GRPO (per-step time, images/s, each phase's time), and
   the push's share of step time through the object store, a broadcast and LoRA. Ray actors get 1 logical
   CPU each and set 1 torch thread (rollout and judge: `torch.set_num_threads`; the learner: Ray sets
   OMP_NUM_THREADS to the actor's CPUs). `ray async ratio` is the async trainer over the fastest sequential
   loop of (1).

What it can and cannot show on a 2-core machine: (1) is the ceiling of overlap, max(collect, learn) against
their sum, with nothing else competing; it shrinks to nothing when other jobs take the cores. (2) runs three
actors, the driver, Ray's raylet and GCS on the two cores the sequential loop uses alone: it cannot show an
overlap gain there (the actors queue for the same cores), only Ray's overheads and per-step times; the
pipeline pays off when roles have hardware of their own (GPUs, nodes). Under load, the two-thread loop is
the fragile one: its threads wait for each other whenever another job holds a core, so a ratio against a
two-thread baseline taken under load flatters the pipeline. Throughput counts judged images per second of steady-state step time (set-up
and `--warmup` steps excluded everywhere).

    python benchmarks/bench_pipeline.py                     # tiny Janus, coin-flip judge (mechanics only)
    python benchmarks/bench_pipeline.py --model builtin:shapes-base --judge self

Last line: `pipeline ratio=<pinned pipeline over the fastest sequential loop on the same two cores>`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def overrides(args, run_name: str, out: str, *extra: str) -> list[str]:
    judge = (
        ["judge.type=self"]
        if args.judge == "self"
        else ["judge.type=noisy", "judge.base.type=shapes_checker", "judge.random_fraction=1.0"]
    )
    return [
        f"model.path={args.model}", *judge, "prompts.n_train=64", "prompts.n_eval=4",
        f"sampling.samples_per_prompt={args.n}", "sampling.guidance_scale=3.0",
        "rollout.num_cpus=1", "judge_actors.num_cpus=1", f"learner.batch_size={args.batch}", "learner.lr=1e-4",
        f"trainer.steps={args.steps}", f"trainer.prompts_per_step={args.prompts}", "trainer.eval_every=100000",
        "trainer.eval_prompts=4", "trainer.eval_samples_per_prompt=1", "trainer.checkpoint_every=100000",
        f"trainer.output_dir={out}", f"trainer.run_name={run_name}", "logger.type=jsonl",
        "logger.image_every=100000", "guard.enabled=false", *extra,
    ]  # fmt: skip


# ============================================================================ 1. overlap, without Ray
class Loop:
    """The sequential loop's pieces in one process. The sequential baseline runs collect and learn back to
    back on one model; the overlap run collects in one process and learns in another, pushing after each step."""

    def __init__(self, args, collects: bool, learns: bool):
        import torch

        from rayunify.actors.collective import ModuleReceiver
        from rayunify.actors.policy import PolicyModule
        from rayunify.config import load_config
        from rayunify.judges.base import build_judge
        from rayunify.models import build_model
        from rayunify.prompts import load_prompts
        from rayunify.training_data import TrainingData

        self.args = args
        self.cfg = load_config(None, overrides(args, "sequential", tempfile.mkdtemp()))
        self.unified = build_model(self.cfg.model)
        self.policy = PolicyModule(self.unified, keep_reference_copy=learns)
        self.judge = build_judge(self.cfg.judge, lambda: self.unified) if collects else None
        self.data = TrainingData(load_prompts(self.cfg.prompts)[0], seed=0)
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.cfg.learner.lr) if learns else None
        self.receiver = ModuleReceiver(self.policy, [n for n, p in self.policy.named_parameters() if p.requires_grad])

    def collect(self, step: int) -> list[list[Any]]:
        """Generate and judge one step's prompts; judged samples grouped by prompt."""
        from rayunify.batching import chunk_seed
        from rayunify.types import JudgedSample, Sample

        a, settings = self.args, self.cfg.sampling.settings()
        prompts = self.data.next_prompts(a.prompts)
        out = self.unified.generate([p.text for p in prompts], n=a.n, settings=settings, seed=chunk_seed(0, step, 0), decode=True)
        samples = [
            Sample(f"{step}-{i}", prompts[i // a.n], out.image_tokens[i].numpy(), self.receiver.version, settings)
            for i in range(len(out.image_tokens))
        ]
        assert self.judge is not None
        verdicts = self.judge.judge(list(out.images), [s.prompt for s in samples])
        groups: dict[str, list[Any]] = {}
        for sample, verdict in zip(samples, verdicts, strict=True):
            groups.setdefault(sample.prompt.prompt_id, []).append(JudgedSample(sample, verdict))
        return list(groups.values())

    def learn(self, groups: list[list[Any]], step: int, pack: bool) -> Any:
        """Pair, reference log-probs, one DPO step; with `pack`, the weight update for the other process."""
        import torch

        from rayunify.actors.policy import TrainBatch, dpo_loss_fn, reference_logps_fn
        from rayunify.batching import make_batch
        from rayunify.weights import DEFAULT_BUCKET_MB, WeightUpdate, pack_buckets

        self.data.add_groups(groups, step)
        pairs = self.data.sample("pair", self.cfg.learner.batch_size, self.receiver.version, 1)
        if not pairs:
            return None
        batch = make_batch(pairs, "pair", self.cfg, TrainBatch)
        chosen, rejected = reference_logps_fn(self.policy, batch)
        batch.ref_chosen, batch.ref_rejected = torch.tensor(chosen), torch.tensor(rejected)
        a = self.cfg.algorithm
        loss, _ = dpo_loss_fn(self.policy, batch, beta=a.beta, loss_type=a.loss_type, label_smoothing=a.label_smoothing, nll_weight=a.nll_weight)
        assert self.optimizer is not None
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.receiver.version += 1
        if not pack:
            return None
        named = [(n, p.detach()) for n, p in self.policy.named_parameters() if p.requires_grad]
        return WeightUpdate.from_buckets(self.receiver.version, pack_buckets(named, int(DEFAULT_BUCKET_MB * 2**20)))


def _pin(cores: set[int], threads: int) -> None:
    import torch

    os.sched_setaffinity(0, cores)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def sequential_role(args, control, cores: set[int], threads: int) -> None:
    _pin(cores, threads)
    loop = Loop(args, collects=True, learns=True)
    control.send("ready")
    control.recv()
    stamps = []
    for step in range(args.steps):
        loop.learn(loop.collect(step), step, pack=False)
        stamps.append(time.perf_counter())
    control.send(stamps)


def rollout_role(args, control, core: int, peer) -> None:
    """Generates and judges step k+1 while the learner trains on step k; takes its push, then hands over."""
    _pin({core}, 1)
    loop = Loop(args, collects=True, learns=False)
    control.send("ready")
    control.recv()
    stamps = []
    for step in range(args.steps):
        groups = loop.collect(step)
        if step > 0:
            update = peer.recv()
            if update is not None:
                loop.receiver.apply_weight_update(update)
        peer.send(groups)
        stamps.append(time.perf_counter())
    peer.recv()
    control.send(stamps)


def learner_role(args, control, core: int, peer) -> None:
    _pin({core}, 1)
    loop = Loop(args, collects=False, learns=True)
    control.send("ready")
    control.recv()
    for step in range(args.steps):
        peer.send(loop.learn(peer.recv(), step, pack=True))


def _receive(conn, procs: list, timeout_s: float = 900.0) -> Any:
    """The next message on `conn`; a role that died (or a silent one) raises instead of hanging the run."""
    deadline = time.monotonic() + timeout_s
    while not conn.poll(1.0):
        dead = [p for p in procs if p.exitcode not in (None, 0)]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"a benchmark role failed (exit codes {[p.exitcode for p in procs]}) or went silent")
    return conn.recv()


def run_roles(args, roles: list[tuple[Any, tuple]]) -> list[float]:
    """Start each role as target(args, control pipe, *its arguments), release them together once all are
    built, and return the step stamps the first role sends back."""
    ctx = mp.get_context("spawn")
    controls, procs = [], []
    for target, extra in roles:
        here, there = ctx.Pipe()
        procs.append(ctx.Process(target=target, args=(args, there, *extra), daemon=True))
        controls.append(here)
    for proc in procs:
        proc.start()
    try:
        for control in controls:
            _receive(control, procs)  # built and ready
        for control in controls:
            control.send("go")
        return _receive(controls[0], procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def timed_steps(args, stamps: list[float]) -> float:
    """Mean seconds per step after `--warmup` steps (the first stamp closes step 0)."""
    return (stamps[-1] - stamps[args.warmup - 1]) / (len(stamps) - args.warmup)


def overlap_rows(args) -> list[dict]:
    """The sequential loop on one core and on two, then the two-process pipeline, one core each."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    ctx = mp.get_context("spawn")
    rows = []
    variants = (
        ("sequential, 1 core, 1 thread", cores[:1], 1),
        ("sequential, 2 cores, 1 thread", cores, 1),  # free to move to whichever core is idle
        ("sequential, 2 cores, 2 threads", cores, 2),
    )
    for label, used, threads in variants:
        stamps = progress(label, run_roles, args, [(sequential_role, (set(used), threads))])
        rows.append(row(args, label, timed_steps(args, stamps)))
    peer_rollout, peer_learner = ctx.Pipe()
    stamps = progress("pipelined", run_roles, args, [(rollout_role, (cores[0], peer_rollout)), (learner_role, (cores[1], peer_learner))])
    rows.append(row(args, "pipelined, rollout and learner on a core each, 1 thread each", timed_steps(args, stamps)))
    return rows


def row(args, mode: str, step_s: float, **extra: float) -> dict:
    return {"mode": mode, "step_s": step_s, "images_per_s": args.prompts * args.n / step_s, **extra}


# ============================================================================ 2. the Ray trainer
PHASES = ("time/generate_s", "time/judge_s", "time/pair_s", "time/train_s", "time/push_s")


def steady_state(rows: list[dict], warmup: int) -> dict[str, float]:
    """Mean step seconds and mean seconds of each phase over the steps after `warmup`."""
    steps = [r for r in rows if "step_s" in r][warmup:]
    return {k: sum(r.get(k, 0.0) for r in steps) / len(steps) for k in ("step_s", *PHASES)}


def run_ray(args, label: str, out: str, *extra: str) -> dict:
    from rayunify.config import load_config
    from rayunify.train import Trainer

    run_name = label.replace(" ", "_").replace("+", "_")
    cfg = load_config(None, overrides(args, run_name, out, *extra))
    Trainer(cfg).run()
    logged = [json.loads(line) for line in (Path(out) / run_name / "metrics.jsonl").read_text().splitlines()]
    times = steady_state(logged, args.warmup)
    phases = {k.split("/")[1]: round(v, 4) for k, v in times.items() if k in PHASES}
    return row(args, label, times["step_s"], push_share=times["time/push_s"] / times["step_s"], **phases)


def ray_rows(args) -> list[dict]:
    """One local cluster for every run (each run's actors are torn down before the next starts)."""
    import ray

    from rayunify.actors.cluster import init_ray
    from rayunify.config import load_config

    out = tempfile.mkdtemp(prefix="bench-pipeline-")
    init_ray(load_config(None, overrides(args, "cluster", out)))
    grpo = ["algorithm.type=grpo", f"learner.batch_size={args.prompts}"]
    runs = [("dpo sync", "trainer.sync=sync"), ("dpo async", "trainer.sync=async"),
            ("grpo sync", *grpo, "trainer.sync=sync"), ("grpo async", *grpo, "trainer.sync=async")]  # fmt: skip
    if not args.quick:
        runs += [("dpo async+lora", "trainer.sync=async", "model.trainable=lora", "model.lora.rank=8"),
                 ("dpo async+broadcast", "trainer.sync=async", "learner.weight_transport=broadcast")]  # fmt: skip
    try:
        return [progress(label, run_ray, args, label, out, *extra) for label, *extra in runs]
    finally:
        ray.shutdown()


def progress(label: str, fn, *args: Any) -> Any:
    """Run fn(*args) and say on stderr how long it took (the figures themselves go to stdout)."""
    started = time.perf_counter()
    result = fn(*args)
    print(f"[bench_pipeline] {label}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return result


def best_sequential(seq: list[dict]) -> float:
    """Images/s of the fastest sequential loop (every variant but the last row, the pipeline)."""
    return max(r["images_per_s"] for r in seq[:-1])


def summary(seq: list[dict], ray_runs: list[dict]) -> str:
    one, unpinned, two, piped = seq
    by = {r["mode"]: r for r in ray_runs}
    parts = [
        f"sequential loop {one['images_per_s']:.0f} images/s on 1 core, {unpinned['images_per_s']:.0f} on 2 cores "
        f"with 1 thread, {two['images_per_s']:.0f} with 2 threads; {piped['images_per_s']:.0f} pipelined on a core "
        f"each ({piped['images_per_s'] / best_sequential(seq):.2f}x the fastest loop)",
        "Ray per step: " + ", ".join(f"{m} {r['step_s']:.2f} s ({r['images_per_s']:.0f} images/s)" for m, r in by.items()),
    ]
    if "dpo async+lora" in by:
        parts.append(
            f"push share: {by['dpo async']['push_share']:.1%} object store, "
            f"{by['dpo async+broadcast']['push_share']:.1%} broadcast, {by['dpo async+lora']['push_share']:.1%} LoRA"
        )
    return "summary: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--judge", choices=["coin", "self"], default="coin")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="leave out the LoRA and broadcast push runs")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("the overlap measurement needs two cores")
    seq = overlap_rows(args)
    ray_runs = ray_rows(args)
    for r in seq + ray_runs:
        print(json.dumps(r))
    print(summary(seq, ray_runs))
    print(f"ray async ratio={ray_runs[1]['images_per_s'] / best_sequential(seq):.2f}")
    print(f"pipeline ratio={seq[-1]['images_per_s'] / best_sequential(seq):.2f}")


if __name__ == "__main__":
    main()
