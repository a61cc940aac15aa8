"""`rayunify` command line: train, eval, shapes-base, report."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="rayunify", description="Self-improvement of unified multimodal models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="run the trainer (see `rayunify train --help`)", add_help=False)

    ev = sub.add_parser("eval", help="generation accuracy, non-unification and judge quality of a model")
    ev.add_argument("--model", required=True, help="HF model directory or builtin:shapes-base / builtin:tiny")
    ev.add_argument("--prompts", help="JSONL prompt file (default: the eval prompts held out from the ShapesWorld base)")
    ev.add_argument("--n-per-prompt", type=int, default=4)
    ev.add_argument("--n-prompts", type=int, default=64, help="ShapesWorld eval prompts when --prompts is absent")
    ev.add_argument("--guidance-scale", type=float, default=3.0)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--out", required=True)

    base = sub.add_parser("shapes-base", help="train the ShapesWorld base model from scratch")
    base.add_argument("--out", required=True)
    base.add_argument("--size", choices=["base", "noisy", "test"], default="base")
    base.add_argument("--seed", type=int, default=0)
    base.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the cached built-in bases train on cpu")

    rep = sub.add_parser("report", help="plots and a markdown summary of one or more runs")
    rep.add_argument("runs", nargs="+")
    rep.add_argument("--out", default=None)

    if argv[:1] == ["train"]:
        from rayunify.train import main as train_main

        return train_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "eval":
        return _eval(args)
    if args.command == "shapes-base":
        from rayunify.shapes.base_training import train_base

        train_base(args.out, size=args.size, seed=args.seed, device=args.device)
        return 0
    if args.command == "report":
        from rayunify.report import write_report

        print(write_report(args.runs, args.out))
        return 0
    return 2


def _eval(args: argparse.Namespace) -> int:
    import json

    from rayunify.config import JanusModelConfig
    from rayunify.evaluation import evaluate, write_eval
    from rayunify.judging import ShapesCheckerJudge
    from rayunify.models import build_model
    from rayunify.shapes.world import held_out_split, load_prompts_jsonl
    from rayunify.types import SamplingSettings

    model = build_model(JanusModelConfig(path=args.model, device=args.device))
    # Without a file: the eval side of the ShapesWorld base's own split, never prompts it trained on.
    prompts = load_prompts_jsonl(args.prompts) if args.prompts else held_out_split(0, args.n_prompts, seed=0)[1]
    result = evaluate(
        model,
        prompts,
        ShapesCheckerJudge(),
        n_per_prompt=args.n_per_prompt,
        settings=SamplingSettings(guidance_scale=args.guidance_scale),
        seed=args.seed,
    )
    path = write_eval(result, args.out)
    print(json.dumps(result.report["overall"], indent=2))
    print(f"wrote {path} and {path.parent / 'samples.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
