"""Online DPO steps without Ray: the rollout worker, judge worker, training-data service and one learner rank
that the Ray actors wrap, driven in one process — generate, judge, pair, reference log-probs, a one-rank
DeepSpeed ZeRO-2 step (NCCL world of one on CUDA, gloo on CPU), weight push to the rollout model and the
live self-judge.

For the lent GPU machine, which has torch, transformers and peft but no Ray. All three roles share one
device here, so the push is the object-store transport's pack → check → copy path (`build_update`,
`apply_weight_update`) without the object store in between; a broadcast needs one process per member.
The judge is the model itself (live weights) with every verdict then replaced by a seeded coin flip: the
self-judge's full cost is paid and random weights still give DPO pairs.

    python benchmarks/gpu_online_steps.py --arch janus-pro-1b            # CUDA, bf16, random weights
    python benchmarks/gpu_online_steps.py --model builtin:tiny --steps 2  # CPU mechanics (what the test runs)

Reports images/s over the steps after warm-up, each phase's share of step time, push GB/s (bytes delivered
to both receivers over the push's wall time) and peak GPU memory (all roles together). Last line:
`online_steps ratio=<images/s of whole steps over images/s of the generate phase alone>`, i.e. the share of
the rollout's own rate that the full sequential loop keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

PHASES = ("generate", "judge", "pair", "reference", "train", "push")


def overrides(args: argparse.Namespace, model_path: str, cuda: bool) -> list[str]:
    return [
        f"model.path={model_path}", f"model.dtype={'bfloat16' if cuda else 'float32'}",
        f"model.device={'cuda' if cuda else 'cpu'}", f"model.trainable={'lora' if args.lora else 'language_model'}",
        "judge.type=noisy", "judge.base.type=self", "judge.base.weights=live", "judge.random_fraction=1.0",
        "algorithm.type=dpo", "prompts.n_train=64", "prompts.n_eval=4", f"sampling.samples_per_prompt={args.n}",
        "sampling.guidance_scale=5.0", f"rollout.max_rows={args.max_rows}", f"learner.batch_size={args.batch}",
        "learner.lr=1e-5", "learner.zero_stage=2", f"learner.bf16={str(cuda).lower()}", "guard.enabled=false",
        f"trainer.prompts_per_step={args.prompts}", "trainer.sync=sync",
    ]  # fmt: skip


def random_model_dir(arch_name: str, device: str) -> str:
    """A random-weight model of `arch_name` saved in the HF layout (the workers load models from directories);
    built on `device` in bf16 on CUDA, so a 1B-class model takes seconds."""
    from rayunify.models.janus.factory import JANUS_PRO_1B, TINY, build_janus

    arch = {"janus-pro-1b": JANUS_PRO_1B, "tiny": TINY}[arch_name]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, processor = build_janus(arch, seed=0, dtype=dtype, device=device)
    path = tempfile.mkdtemp(prefix=f"rayunify-{arch_name}-")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return path


def sync_device() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Roles:
    """The plain classes behind the Ray actors, each built as the driver's start-up builds it."""

    def __init__(self, cfg: Any, num_cpus: float):
        from rayunify.actors.learner import LearnerWorker
        from rayunify.actors.learner_setup import deepspeed_config, keeps_reference, learner_loss, make_policy
        from rayunify.actors.workers import JudgeWorker, RolloutWorker
        from rayunify.procs import LOOPBACK, free_port
        from rayunify.prompts import curriculum_levels, load_prompts
        from rayunify.training_data import TrainingData

        as_dict = cfg.model_dump(mode="json")
        train, _ = load_prompts(cfg.prompts)
        self.data = TrainingData(train, cfg.curriculum, curriculum_levels(train, cfg.curriculum.levels), seed=cfg.trainer.seed)
        self.rollout = RolloutWorker(as_dict, num_cpus=num_cpus)
        self.judge = JudgeWorker(as_dict, num_cpus=num_cpus)
        self.learner = LearnerWorker(
            rank=0, world_size=1, master_addr=LOOPBACK, master_port=free_port(),
            model_factory=partial(make_policy, as_dict, keep_reference_copy=keeps_reference(cfg)),
            loss_fn=learner_loss(cfg), ds_config=deepspeed_config(cfg),
            optimizer_kwargs={"lr": cfg.learner.lr, "weight_decay": cfg.learner.weight_decay}, seed=cfg.trainer.seed,
        )  # fmt: skip
        self.setup_info = self.learner.setup()
        torch.set_num_threads(max(1, int(num_cpus)))  # each worker set its own count; one process holds all three


class OnlineSteps:
    """Algorithm 1's online step in one process, phase by phase, as `Trainer.train_online` runs it (sync)."""

    def __init__(self, cfg: Any, roles: Roles):
        self.cfg, self.roles = cfg, roles
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        sync_device()  # CUDA work is asynchronous: a phase ends when its kernels have
        self.seconds[name] = time.perf_counter() - start

    def step(self, step: int) -> dict[str, float]:
        from rayunify.batching import chunk_seed

        self.seconds = {}
        r, cfg, n = self.roles, self.cfg, self.cfg.sampling.samples_per_prompt
        seed = chunk_seed(cfg.trainer.seed, step, 0)
        started = time.perf_counter()
        with self.phase("generate"):
            rollout = r.rollout.generate(r.data.next_prompts(cfg.trainer.prompts_per_step), n, seed, 0)
        with self.phase("judge"):
            judged, _, _ = r.judge.judge_rollout(rollout, 0.0, seed)
        with self.phase("pair"):
            groups: dict[str, list[Any]] = {}
            for item in judged:
                groups.setdefault(item.sample.prompt.prompt_id, []).append(item)
            r.data.add_groups(list(groups.values()), step)
            pairs = r.data.sample("pair", cfg.learner.batch_size, r.learner.version, 0)
        train = self.train(pairs) if pairs else {}
        push = self.push() if train else {}
        row = {f"{k}_s": v for k, v in self.seconds.items()}
        return {"step": step, "step_s": time.perf_counter() - started, "images": len(judged), "pairs": len(pairs), **row, **train, **push}

    def train(self, pairs: list[Any]) -> dict[str, float]:
        from rayunify.actors.policy import TrainBatch, reference_logps_fn
        from rayunify.batching import make_batch

        learner = self.roles.learner
        with self.phase("reference"):
            chosen, rejected = learner.compute(reference_logps_fn, make_batch(pairs, "pair", self.cfg, TrainBatch))
            for pair, c, r in zip(pairs, chosen, rejected, strict=True):
                pair.ref_chosen_logp, pair.ref_rejected_logp = c, r
        with self.phase("train"):
            metrics = learner.train_step(make_batch(pairs, "pair", self.cfg, TrainBatch))
        return {"loss": metrics["loss"], "version": metrics["version"]}

    def push(self) -> dict[str, float]:
        r = self.roles
        with self.phase("push"):
            update, meta = r.learner.build_update()
            versions = [r.rollout.apply_weight_update(update)[0], r.judge.apply_weight_update(update)[0]]
        if versions != [meta["version"]] * 2:
            raise RuntimeError(f"receivers report versions {versions} after a push of version {meta['version']}")
        return {"push_bytes": float(meta["num_bytes"]), "push_gb_per_s": 2 * meta["num_bytes"] / self.seconds["push"] / 1e9}


def pushed_weights_match(roles: Roles) -> bool:
    """Whether the rollout's and the judge's trainable weights are now the learner's, byte for byte."""
    from rayunify.weights import tensors_checksum

    learner = roles.learner.param_checksum()
    holders = [roles.rollout.policy, roles.judge._holder_or_raise().policy]
    return all(
        tensors_checksum((n, p.detach().cpu()) for n, p in policy.named_parameters() if p.requires_grad) == learner
        for policy in holders
    )


def summarise(rows: list[dict[str, float]], warmup: int) -> dict[str, Any]:
    steady = rows[warmup:] or rows
    step_s = sum(r["step_s"] for r in steady) / len(steady)
    images = sum(r["images"] for r in steady) / len(steady)
    generate_s = sum(r["generate_s"] for r in steady) / len(steady)
    pushes = [r["push_gb_per_s"] for r in steady if "push_gb_per_s" in r]
    return {
        "steps_measured": len(steady),
        "images_per_s": images / step_s,
        "generate_only_images_per_s": images / generate_s,
        "phase_share": {p: sum(r.get(f"{p}_s", 0.0) for r in steady) / len(steady) / step_s for p in PHASES},
        "push_gb_per_s": sum(pushes) / len(pushes) if pushes else None,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["janus-pro-1b", "tiny"], help="a random-weight model of this shape")
    parser.add_argument("--model", default=None, help="a model directory or builtin:NAME instead of --arch")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="DPO pairs per learner step")
    parser.add_argument("--max-rows", type=int, default=64, help="rollout.max_rows (bounds the KV cache)")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters instead of the full language model")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (CPU)")
    parser.add_argument("--verify", action="store_true", help="check at the end that the pushes landed (sha256)")
    args = parser.parse_args(argv)
    from rayunify.config import load_config

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu with --model builtin:tiny)")
    started = time.perf_counter()
    path = args.model or random_model_dir(args.arch or "tiny", args.device)
    cfg = load_config(None, overrides(args, path, cuda))
    roles = Roles(cfg, num_cpus=args.threads)
    loop = OnlineSteps(cfg, roles)
    print(json.dumps({"setup_s": time.perf_counter() - started, "device": args.device, **roles.setup_info}), flush=True)
    rows = []
    for step in range(args.steps):
        rows.append(loop.step(step))
        print(json.dumps(rows[-1]), flush=True)
    summary = summarise(rows, args.warmup)
    if args.verify:
        summary["pushed_weights_match"] = pushed_weights_match(roles)
    print(json.dumps(summary))
    print(f"online_steps ratio={summary['images_per_s'] / summary['generate_only_images_per_s']:.2f}")


if __name__ == "__main__":
    main()
