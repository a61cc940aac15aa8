"""Trains several ShapesWorld base recipes side by side and scores each on the held-out prompts.

Each variant is the default base config with some fields changed, given as JSON:

    python examples/sweep_base.py --out runs/base_sweep --device cuda --parallel 8 \
        --variant 'default={}' --variant 'deep={"arch.num_layers": 6, "steps": 1100}' \
        --variant 'hard={"category_weights": [0.05, 0.08, 0.05, 0.1, 0.36, 0.36]}'

Keys are `BaseConfig` fields, `mix.<field>` for `UnderstandingMix`, and `arch.hidden_size`,
`arch.num_layers`, `arch.vision_hidden`, `arch.vision_layers` (the architecture is rebuilt with `arch_for`
so its grids still fit the tokenizer). `--vq-from DIR` reuses the tokenizer of a trained base (all variants
then share the default's exact VQ); otherwise it is trained once here. The step count, not the device, is
the recipe: a variant found on a GPU is then trained as `rayunify shapes-base` does, on 2 CPU cores, where
the 15-minute budget holds (`rayunify shapes-base` reports the time).

Writes `<out>/<variant>/` (the model and its eval.json) and `<out>/results.json`, and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ARCH_KEYS = ("hidden_size", "num_layers", "vision_hidden", "vision_layers")


def variant_config(overrides: dict[str, Any]):
    """The default base config with `overrides` applied (see the module docstring for the keys)."""
    from rayunify.shapes.recipe import SIZES, arch_for

    cfg = SIZES["base"]
    fields = {k: v for k, v in overrides.items() if "." not in k}
    mix = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("mix.")}
    arch = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("arch.")}
    unknown = [k for k in overrides if "." in k and not k.startswith(("mix.", "arch."))]
    unknown += [f"arch.{k}" for k in arch if k not in ARCH_KEYS]
    unknown += [f"mix.{k}" for k in mix if k not in {f.name for f in dataclasses.fields(cfg.mix)}]
    unknown += [k for k in fields if k not in {f.name for f in dataclasses.fields(cfg)}]
    if unknown:
        raise ValueError(f"unknown variant keys: {', '.join(unknown)}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if mix:
        fields["mix"] = dataclasses.replace(cfg.mix, **mix)
    if arch:
        current = {k: getattr(cfg.arch, k) for k in ARCH_KEYS}
        fields["arch"] = arch_for(cfg.vq, **{**current, **arch})
    return dataclasses.replace(cfg, **fields)


def load_vq(base_dir: str):
    from transformers import JanusForConditionalGeneration

    return JanusForConditionalGeneration.from_pretrained(base_dir).model.vqmodel.eval()


def run_variant(name: str, overrides: dict[str, Any], args: argparse.Namespace, vq_file: str) -> dict[str, Any]:
    """Trains one variant and scores it (in a worker process of its own)."""
    import torch
    from transformers import JanusVQVAE

    from rayunify.config import JanusModelConfig
    from rayunify.evaluation import evaluate, write_eval
    from rayunify.models import build_model
    from rayunify.shapes.base_training import train_base
    from rayunify.shapes.cache import EVAL_PROMPTS_FILE
    from rayunify.shapes.judge import ShapesCheckerJudge
    from rayunify.shapes.world import load_prompts_jsonl
    from rayunify.types import SamplingSettings

    cfg = variant_config(overrides)
    if args.threads:
        cfg = dataclasses.replace(cfg, threads=args.threads)
    vq = JanusVQVAE(cfg.vq.janus_config())
    vq.load_state_dict(torch.load(vq_file, map_location="cpu"))
    out = Path(args.out) / name
    started = time.perf_counter()
    train_base(out, seed=args.seed, progress=False, config=cfg, device=args.device, vq=vq.eval())
    train_s = time.perf_counter() - started
    model = build_model(JanusModelConfig(path=str(out), device=args.device))
    prompts = load_prompts_jsonl(out / EVAL_PROMPTS_FILE)[: args.n_prompts]  # the held-out side of its split
    result = evaluate(
        model, prompts, ShapesCheckerJudge(), n_per_prompt=args.n_per_prompt,
        settings=SamplingSettings(guidance_scale=cfg.guidance_scale), seed=0,
    )  # fmt: skip
    write_eval(result, out)
    report = result.report
    return {
        "variant": name, "overrides": overrides, "train_s": round(train_s, 1),
        "overall": report["overall"], "category_mean": report["category_mean"],
        "gen_by_category": {c: r["gen_accuracy"] for c, r in report.items() if c not in ("overall", "category_mean")},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--variant", action="append", required=True, help="NAME=JSON of overrides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1, help="variants trained at once")
    parser.add_argument("--vq-from", help="a trained base model directory whose VQ tokenizer to reuse")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads per variant (default: the config's)")
    parser.add_argument("--n-prompts", type=int, default=96)
    parser.add_argument("--n-per-prompt", type=int, default=8)
    args = parser.parse_args()
    variants = dict(_parse_variant(v) for v in args.variant)
    for overrides in variants.values():
        variant_config(overrides)  # a typo fails here, before anything trains
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vq_file = str(out / "vq.pt")
    _save_vq(args, vq_file)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.parallel, mp_context=context) as pool:
        futures = {pool.submit(run_variant, name, o, args, vq_file): name for name, o in variants.items()}
        results = []
        for future in as_completed(futures):  # results.json grows as variants finish: a cut-off sweep keeps them
            try:
                results.append(future.result())
            except Exception as error:  # one broken variant must not lose the others' results
                results.append({"variant": futures[future], "error": repr(error)})
            (out / "results.json").write_text(json.dumps(results, indent=2))
            print(_table(results[-1:]), flush=True)
    print(_table(results))


def _parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--variant must be NAME=JSON, got {text!r}")
    return name, json.loads(overrides or "{}")


def _save_vq(args: argparse.Namespace, vq_file: str) -> None:
    import torch

    from rayunify.shapes.recipe import SIZES
    from rayunify.shapes.vq import train_vq

    vq = load_vq(args.vq_from) if args.vq_from else train_vq(SIZES["base"].vq, seed=args.seed, device=args.device)
    torch.save({k: v.cpu() for k, v in vq.state_dict().items()}, vq_file)


def _table(results: list[dict[str, Any]]) -> str:
    keys = ("judge_accuracy", "judge_fpr", "judge_fnr", "gen_accuracy", "nonunified", "weak_generation")
    lines = ["| variant | " + " | ".join(keys) + " | gen (category mean) | train s |", "|---" * (len(keys) + 3) + "|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error']} |")
            continue
        cells = [f"{r['overall'][k]:.3f}" for k in keys]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['category_mean']['gen_accuracy']:.3f} | {r['train_s']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
