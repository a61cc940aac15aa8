"""Pipeline throughput: the Ray trainer (sync and async) vs a plain sequential loop doing the same work.

Same model, judge, prompts, batch and algorithm (online DPO), measured in the same run. The sequential
baseline is one process: generate → judge → pair → DPO step → (no push needed), with torch's AdamW.
Throughput counts judged images per second of steady-state step time (set-up excluded for both). Also
reports the weight push's share of step time, with LoRA (only adapters travel) and without, through the
object store and through a broadcast (learner.weight_transport=broadcast).

    python benchmarks/bench_pipeline.py                     # tiny Janus, coin-flip judge (mechanics only)
    python benchmarks/bench_pipeline.py --model builtin:shapes-base --judge self

Last line: `pipeline ratio=<async pipeline over sequential>`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


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


def steady_state(rows: list[dict], warmup: int) -> tuple[float, float]:
    """(mean step seconds, mean push seconds) over the steps after `warmup`."""
    steps = [r for r in rows if "step_s" in r][warmup:]
    return (
        sum(r["step_s"] for r in steps) / len(steps),
        sum(r.get("time/push_s", 0.0) for r in steps) / len(steps),
    )


def run_ray(args, mode: str, out: str, *extra: str) -> dict:
    from rayunify.config import load_config
    from rayunify.train import Trainer

    cfg = load_config(None, overrides(args, mode, out, f"trainer.sync={mode}", *extra))
    Trainer(cfg).run()
    rows = [json.loads(line) for line in (Path(out) / mode / "metrics.jsonl").read_text().splitlines()]
    step_s, push_s = steady_state(rows, args.warmup)
    return {"mode": mode, "step_s": step_s, "images_per_s": args.prompts * args.n / step_s, "push_share": push_s / step_s}


def run_sequential(args) -> dict:
    """The same work in one process, one phase after another."""
    import torch

    from rayunify.actors.policy import PolicyModule, TrainBatch, dpo_loss_fn, reference_logps_fn
    from rayunify.batching import chunk_seed, make_batch
    from rayunify.config import load_config
    from rayunify.judges.base import build_judge
    from rayunify.models import build_model
    from rayunify.prompts import load_prompts
    from rayunify.training_data import TrainingData
    from rayunify.types import JudgedSample, Sample

    cfg = load_config(None, overrides(args, "sequential", tempfile.mkdtemp()))
    unified = build_model(cfg.model)
    policy = PolicyModule(unified, keep_reference_copy=True)
    judge = build_judge(cfg.judge, lambda: unified)
    train, _ = load_prompts(cfg.prompts)
    data = TrainingData(train, seed=0)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.learner.lr)
    settings = cfg.sampling.settings()
    times = []
    for step in range(args.steps):
        started = time.perf_counter()
        prompts = data.next_prompts(args.prompts)
        out = unified.generate([p.text for p in prompts], n=args.n, settings=settings, seed=chunk_seed(0, step, 0), decode=True)
        samples = [
            Sample(f"{step}-{i}", prompts[i // args.n], out.image_tokens[i].numpy(), step, settings)
            for i in range(len(out.image_tokens))
        ]
        verdicts = judge.judge(list(out.images), [s.prompt for s in samples])
        groups: dict[str, list[JudgedSample]] = {}
        for sample, verdict in zip(samples, verdicts, strict=True):
            groups.setdefault(sample.prompt.prompt_id, []).append(JudgedSample(sample, verdict))
        data.add_groups(list(groups.values()), step)
        pairs = data.sample("pair", cfg.learner.batch_size, step, 0)
        if pairs:
            batch = make_batch(pairs, "pair", cfg, TrainBatch)
            chosen, rejected = reference_logps_fn(policy, batch)
            batch.ref_chosen, batch.ref_rejected = torch.tensor(chosen), torch.tensor(rejected)
            a = cfg.algorithm
            loss, _ = dpo_loss_fn(policy, batch, beta=a.beta, loss_type=a.loss_type, label_smoothing=a.label_smoothing, nll_weight=a.nll_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    step_s = sum(times[args.warmup :]) / len(times[args.warmup :])
    return {"mode": "sequential", "step_s": step_s, "images_per_s": args.prompts * args.n / step_s, "push_share": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--judge", choices=["coin", "self"], default="coin")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="bench-pipeline-")
    rows = [run_sequential(args), run_ray(args, "sync", out), run_ray(args, "async", out)]
    lora = run_ray(args, "async", out + "/lora", "model.trainable=lora", "model.lora.rank=8")
    lora["mode"] = "async+lora"
    rows.append(lora)
    broadcast = run_ray(args, "async", out + "/broadcast", "learner.weight_transport=broadcast")
    broadcast["mode"] = "async+broadcast"
    rows.append(broadcast)
    for row in rows:
        print(json.dumps(row))
    sequential = rows[0]["images_per_s"]
    print(
        f"cores: {os.cpu_count()}; push share of step time: full LM {rows[2]['push_share']:.1%} (object store), "
        f"{broadcast['push_share']:.1%} (broadcast), LoRA {lora['push_share']:.1%}"
    )
    print(f"sync ratio={rows[1]['images_per_s'] / sequential:.2f}")
    print(f"pipeline ratio={rows[2]['images_per_s'] / sequential:.2f}")


if __name__ == "__main__":
    main()
