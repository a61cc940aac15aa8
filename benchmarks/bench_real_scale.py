"""Every role at Janus-Pro-1B's real width, vocabulary, 384 px and 576 image tokens, against the memory estimate.

Each role runs in its own process on the Janus-Pro-1B architecture with random weights (bfloat16 where the CPU
has it), at three of the 24 layers: rollout (prompts × 2 images, CFG, decoded to pixels), the self-judge, the
learner (DPO on one pair: LoRA, and full fine-tuning under ZeRO-2 and ZeRO-3, a one-rank DeepSpeed engine on
gloo) and the reference pass. Peak resident memory above the process's baseline (imports and tokenizer) is
read from the kernel's high-water mark, reset before each phase so that terms can be told apart: weights
(after the model is built), the learner's state (master copies, gradients, optimizer moments, the frozen
reference), and each phase's transient peak (activations, the rollout's decode loop and VQ decode, logits).
Peak memory is fitted linearly in the layer count, extrapolated to 24 layers, checked once against a
full-depth run of one role, and compared with `rayunify.sizing`'s estimate for the same config, term by term.

    python benchmarks/bench_real_scale.py --results runs/real-scale   # 2, 4, 6 layers (learners 1, 2, 3), as docs/real-scale.md
    python benchmarks/bench_real_scale.py --layers 1 --full-check none --roles judge reference
    python benchmarks/bench_real_scale.py --worker learner_zero2 --at 2   # one role, one depth (JSON line)

What CPU cannot show (CUDA context, the caching allocator's fragmentation, NCCL buffers) is the margin
`rayunify.sizing.with_gpu_margin` adds on top; see docs/real-scale.md. Last line:
`sizing ratio=<measured/estimated>` for the role furthest from 1 (extrapolated to the full depth).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROLES = ("rollout", "judge", "learner_lora", "learner_zero2", "learner_zero3", "reference")
FULL_DEPTH = 24
PROMPT = "a photo of a purple kite to the left of an orange boat"
GIB = 2**30


# --------------------------------------------------------------------------------------------- measuring
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss() -> int:
    return _status_kib("VmRSS") * 1024


def reset_peak() -> None:
    """Reset the kernel's high-water mark (VmHWM) to the current resident size (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak() -> int:
    return _status_kib("VmHWM") * 1024


class Meter:
    """Resident bytes above a baseline at named points, and each phase's peak above its start."""

    def __init__(self) -> None:
        self.base = rss()
        self.points: dict[str, int] = {}

    def mark(self, name: str) -> None:
        self.points[name] = rss() - self.base

    def phase(self, name: str, fn):
        start = rss()
        reset_peak()
        out = fn()
        self.points[f"{name}_peak"] = peak() - self.base
        self.points[f"{name}_transient"] = peak() - start
        return out


# --------------------------------------------------------------------------------------------- one role
def role_config(role: str):
    from rayunify.config import Config

    learner = {"num_ranks": 1, "bf16": True, "batch_size": 1, "zero_stage": 3 if role == "learner_zero3" else 2}
    return Config.model_validate({
        "model": {"path": "builtin:janus-pro-1b-shape", "dtype": "bfloat16",
                  "trainable": "lora" if role == "learner_lora" else "language_model"},
        "algorithm": {"type": "dpo", "reference": "stored"},
        "sampling": {"samples_per_prompt": 2, "guidance_scale": 5.0, "geometry": "conditional"},
        "trainer": {"prompts_per_step": 1, "judge_set_size": 0},
        "judge_actors": {"batch_size": 2},
        "learner": learner,
    })  # fmt: skip


def build(layers: int, cfg):
    import torch
    from transformers import JanusForConditionalGeneration

    from rayunify.models.janus.factory import (
        JANUS_PRO_1B,
        build_processor,
        janus_config,
        set_generation_defaults,
    )
    from rayunify.models.janus.model import JanusUnifiedModel, LoraSettings

    arch = replace(JANUS_PRO_1B, num_layers=layers)
    processor = build_processor(arch)
    meter = Meter()  # baseline: interpreter, torch, transformers, tokenizer
    config = janus_config(arch, processor.tokenizer)
    torch.manual_seed(0)
    model = JanusForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    set_generation_defaults(model, processor.tokenizer)
    lora = LoraSettings(**cfg.model.lora.model_dump())
    um = JanusUnifiedModel(model, processor, trainable=cfg.model.trainable, lora=lora)
    meter.mark("weights")
    return um, config, meter


def run_rollout(um, cfg, meter: Meter) -> None:
    """One generate call with decoding, as a rollout actor makes it; its decode loop (the image-token
    table, the KV cache) and its VQ decode to pixels are told apart by closing the loop's peak when the VQ
    decoder starts. Both are measured above the call's start."""
    from rayunify.types import SamplingSettings

    settings = SamplingSettings(guidance_scale=cfg.sampling.guidance_scale)
    prompts = [PROMPT] * cfg.trainer.prompts_per_step
    vq_decode = um.decode_images
    call_start = rss()

    def metered_vq_decode(tokens):
        meter.points["decode_loop_transient"] = peak() - call_start
        reset_peak()
        images = vq_decode(tokens)
        meter.points["vq_decode_transient"] = peak() - call_start
        return images

    um.decode_images = metered_vq_decode
    meter.phase("generate", lambda: um.generate(prompts, n=cfg.sampling.samples_per_prompt, settings=settings, seed=0, decode=True))
    meter.points["generate_transient"] = max(meter.points["decode_loop_transient"], meter.points["vq_decode_transient"])
    meter.points["generate_peak"] = call_start - meter.base + meter.points["generate_transient"]


def run_judge(um, cfg, meter: Meter) -> None:
    import numpy as np

    size = um.model.config.vision_config.image_size
    images = [np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8) for i in range(cfg.judge_actors.batch_size)]
    meter.phase("judge", lambda: um.judge(images, [PROMPT] * len(images)))


def _pair_batch(um, cfg):
    import torch

    from rayunify.actors.policy import TrainBatch

    g = torch.Generator().manual_seed(0)
    tokens = lambda: torch.randint(0, um.model.config.vq_config.num_embeddings, (1, um.num_image_tokens), generator=g)  # noqa: E731
    return TrainBatch(prompts=[PROMPT], chosen=tokens(), rejected=tokens(), ref_chosen=torch.zeros(1), ref_rejected=torch.zeros(1),
                      geometry=cfg.sampling.geometry, guidance_scale=cfg.sampling.guidance_scale)  # fmt: skip


def run_reference(um, cfg, meter: Meter) -> None:
    import torch

    from rayunify.actors.policy import PolicyModule, reference_logps_fn

    module = PolicyModule(um)
    batch = _pair_batch(um, cfg)
    with torch.no_grad():
        meter.phase("reference", lambda: reference_logps_fn(module, batch))


def run_learner(um, cfg, meter: Meter) -> None:
    import socket

    from rayunify.actors.learner import LearnerWorker
    from rayunify.actors.learner_setup import deepspeed_config, keeps_reference, learner_loss
    from rayunify.actors.policy import PolicyModule

    module = PolicyModule(um, keep_reference_copy=keeps_reference(cfg) and cfg.model.trainable != "lora")
    meter.mark("reference_copy")
    spec = {n for n, p in module.named_parameters() if p.requires_grad}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = LearnerWorker(0, 1, "127.0.0.1", port, lambda: (module, spec), learner_loss(cfg), deepspeed_config(cfg),
                           optimizer_kwargs={"lr": cfg.learner.lr})  # fmt: skip
    meter.phase("engine", worker.setup)
    meter.mark("engine")
    batch = _pair_batch(um, cfg)
    meter.phase("step1", lambda: worker.train_step(batch))
    meter.mark("state")
    meter.phase("step2", lambda: worker.train_step(batch))


def worker_main(role: str, layers: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    cfg = role_config(role)
    started = time.perf_counter()
    um, config, meter = build(layers, cfg)
    runner = {"rollout": run_rollout, "judge": run_judge, "reference": run_reference}.get(role, run_learner)
    runner(um, cfg, meter)
    # The kernel's high-water mark since the last reset, or a phase's peak if one was higher before it.
    peaks = [v for k, v in meter.points.items() if k.endswith("_peak")]
    meter.points["total_peak"] = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - meter.base, *peaks])
    result = {"role": role, "layers": layers, "seconds": time.perf_counter() - started,
              "cpu_seconds": time.process_time(), "bytes": meter.points}  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------- estimate
def estimate(role: str, layers: int) -> dict[str, float]:
    """`rayunify.sizing`'s terms (GiB) for this role and config, without the GPU-only margin."""
    from rayunify import sizing
    from rayunify.dryrun import model_shape, run_shape
    from rayunify.models.janus.factory import JANUS_PRO_1B, janus_config

    cfg = role_config(role)
    shape = model_shape(cfg, janus_config(replace(JANUS_PRO_1B, num_layers=layers)))
    run = run_shape(cfg, shape)
    if role == "rollout":  # the VQ decoder's own peak too, which the total counts only beyond the loop's
        images = cfg.trainer.prompts_per_step * cfg.sampling.samples_per_prompt
        return {**sizing.rollout_memory(shape, run), "vq_pixels": sizing.vq_decode_bytes(shape, images, run.dtype) / GIB}
    if role == "judge":
        return sizing.judge_memory(shape, run)
    if role == "reference":
        return sizing.reference_memory(shape, run)
    return sizing.learner_memory(shape, run)


def measured_terms(role: str, b: dict[str, int]) -> dict[str, float]:
    """The measured counterparts of the estimate's terms (GiB), where a phase isolates them."""
    g = {k: v / GIB for k, v in b.items()}
    if role == "rollout":
        return {"weights": g["weights"], "decode_loop": g["decode_loop_transient"], "vq_decode": g["vq_decode_transient"]}
    if role == "judge":
        return {"weights": g["weights"], "activations": g["judge_transient"]}
    if role == "reference":
        return {"weights": g["weights"], "activations": g["reference_transient"]}
    return {
        "weights": g["weights"],
        "reference_copy": g["reference_copy"] - g["weights"],
        "optimizer": g["state"] - g["reference_copy"],  # master copies and moments, kept between steps
        "gradients+buffers+activations": g["step2_transient"],  # what a step adds on top
    }


def estimate_terms(role: str, est: dict[str, float]) -> dict[str, float]:
    if role == "rollout":
        # Both phases are measured above the call's start, so each holds the embedding table built in it.
        return {"weights": est["weights"], "decode_loop": est["image_embeddings"] + est["decode_loop"],
                "vq_decode": est["image_embeddings"] + est["vq_pixels"]}  # fmt: skip
    if role in ("judge", "reference"):
        return {"weights": est["weights"], "activations": est["activations"]}
    return {
        "weights": est["weights"],
        "reference_copy": est["reference_copy"],
        "optimizer": est["optimizer"],
        "gradients+buffers+activations": est["gradients"] + est["buffers"] + est["activations"],
    }


# --------------------------------------------------------------------------------------------- driver
def run_role(role: str, layers: int, threads: int, results: Path | None) -> dict:
    """One role at one depth in a fresh process (its result kept under `results` and reused from there)."""
    kept = results / f"{role}-{layers}.json" if results else None
    if kept and kept.is_file():
        return json.loads(kept.read_text())
    cmd = [sys.executable, __file__, "--worker", role, "--at", str(layers), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{role} at {layers} layers failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    if kept:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(result))
    return result


def fit(points: dict[int, float], at: int) -> float:
    """Least squares line through (layers, value), evaluated at `at` (exact through two points)."""
    xs, ys = list(points), list(points.values())
    if len(xs) == 1:
        return ys[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my + slope * (at - mx)


def fit_residual(points: dict[int, float]) -> float:
    """The largest distance of a measured depth from the fitted line (0 through two points): how far
    memory is from linear in the layer count, which the extrapolation to 24 layers assumes."""
    return max(abs(y - fit(points, x)) for x, y in points.items())


def rollout_total(terms: dict[int, dict[str, float]], target: int) -> float:
    """A generate call's peak at `target` layers from its phases: the weights and the decode loop (the KV
    cache) grow with depth and are fitted; the VQ decode runs on the tokens after the cache is freed, so it
    does not depend on the language model's depth and is averaged over the depths (fitting its run-to-run
    spread, a few hundredths of a GiB on CPU, would multiply it by the distance to 24 layers). The call's
    peak is the larger phase."""
    fitted = lambda name: fit({d: t[name] for d, t in terms.items()}, target)  # noqa: E731
    vq = sum(t["vq_decode"] for t in terms.values()) / len(terms)
    return fitted("weights") + max(fitted("decode_loop"), vq)


def term_at(points: dict[int, float], target: int, role: str, name: str) -> float:
    """A term at `target` layers: fitted, but the rollout's VQ decode averaged (see `rollout_total`)."""
    if role == "rollout" and name == "vq_decode":
        return sum(points.values()) / len(points)
    return fit(points, target)


def summarise(role: str, runs: list[dict], target: int) -> dict:
    from rayunify import sizing

    by_depth = {r["layers"]: r for r in runs}
    measured = {d: measured_terms(role, r["bytes"]) for d, r in by_depth.items()}
    estimates = {d: estimate(role, d) for d in by_depth}
    estimated = {d: estimate_terms(role, e) for d, e in estimates.items()}
    totals = {d: r["bytes"]["total_peak"] / GIB for d, r in by_depth.items()}
    est_totals = {d: sizing.total({k: v for k, v in e.items() if k != "vq_pixels"}) for d, e in estimates.items()}  # a part of the call's peak, not a term
    terms = {name: {"measured": term_at({d: m[name] for d, m in measured.items()}, target, role, name),
                    "estimate": term_at({d: e[name] for d, e in estimated.items()}, target, role, name)}
             for name in measured[min(measured)]}  # fmt: skip
    total, est = fit(totals, target), fit(est_totals, target)
    if role == "rollout" and len(by_depth) > 1:
        total, est = rollout_total(measured, target), rollout_total(estimated, target)
    return {"role": role, "measured_gib": {d: round(v, 3) for d, v in totals.items()}, "at": target,
            "extrapolated_gib": total, "estimate_gib": est, "ratio": total / est, "terms": terms,
            "fit_residual_gib": fit_residual(totals),
            "seconds": {d: round(r["seconds"], 1) for d, r in by_depth.items()},
            "cpu_seconds": {d: round(r.get("cpu_seconds", 0), 1) for d, r in by_depth.items()}}  # fmt: skip


def print_table(rows: list[dict]) -> None:
    print(f"| role | measured GiB (layers: GiB) | fit residual | extrapolated to {rows[0]['at']} | estimate | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = ", ".join(f"{d}: {v:.2f}" for d, v in r["measured_gib"].items())
        print(f"| {r['role']} | {cells} | {r['fit_residual_gib']:.3f} | {r['extrapolated_gib']:.2f} | {r['estimate_gib']:.2f} | "
              f"{r['ratio']:.3f} |")  # fmt: skip
    for r in rows:
        parts = ", ".join(f"{n} {t['measured']:.2f}/{t['estimate']:.2f}" for n, t in r["terms"].items())
        print(f"terms {r['role']} (measured/estimated GiB at {r['at']} layers): {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6], help="depths measured, then fitted")
    parser.add_argument("--learner-layers", type=int, nargs="+",
                        help="depths for the learner roles (default: half of each of --layers, at least 1); their "
                        "optimizer state makes them the largest")  # fmt: skip
    parser.add_argument("--full-check", default="reference", choices=[*ROLES, "none"],
                        help="the role also run at all 24 layers to check the extrapolation")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write every run and summary here")
    parser.add_argument("--results", type=Path, help="keep each role's measurement here and reuse it when present")
    parser.add_argument("--worker", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--at", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, args.at, args.threads)
    started = time.perf_counter()
    target = FULL_DEPTH if len(args.layers) > 1 else args.layers[0]  # one depth: compare there, no extrapolation
    rows, runs = [], []
    for role in args.roles:
        depths = args.layers
        if role.startswith("learner"):
            depths = args.learner_layers or sorted({max(1, depth // 2) for depth in args.layers})
        role_runs = [run_role(role, depth, args.threads, args.results) for depth in depths]
        runs += role_runs
        rows.append(summarise(role, role_runs, target))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    if args.full_check != "none" and target == FULL_DEPTH:
        full = run_role(args.full_check, FULL_DEPTH, args.threads, args.results)
        runs.append(full)
        row = next(r for r in rows if r["role"] == args.full_check)
        got = full["bytes"]["total_peak"] / GIB
        print(f"full-depth check, {args.full_check} at {FULL_DEPTH} layers: measured {got:.2f} GiB, "
              f"extrapolated {row['extrapolated_gib']:.2f} GiB ({row['extrapolated_gib'] / got - 1:+.1%}), "
              f"{full['seconds']:.0f} s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": rows}, indent=1))
    print(f"wall clock {time.perf_counter() - started:.0f} s, {args.threads} torch thread(s) per role")
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1) if r["ratio"] >= 1 else abs(1 / r["ratio"] - 1))
    print(f"sizing ratio={worst['ratio']:.3f}")


if __name__ == "__main__":
    main()
