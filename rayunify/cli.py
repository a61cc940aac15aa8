"""`rayunify` command line: train, eval, shapes-base, report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="rayunify", description="Self-improvement of unified multimodal models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="run the trainer (see `rayunify train --help`)", add_help=False)

    ev = sub.add_parser(
        "eval", help="score a checkpoint: generation accuracy, non-unification and judge quality, with intervals",
        description="Reads the same config tree as training (model, prompts, sampling, guard.reference as the "
        "referee); dotted overrides work as for `rayunify train`.",
    )  # fmt: skip
    ev.add_argument("--config", help="YAML config (e.g. the recipe a model was trained with)")
    ev.add_argument(
        "--run", help="a run directory: its config.yaml and its newest finished state (final_model, or a newer intact "
        "checkpoint), named on stderr"
    )
    ev.add_argument("--model", help="shorthand for model.path=... (HF directory or builtin:NAME)")
    ev.add_argument("--samples", type=int, help="images per prompt (default trainer.eval_samples_per_prompt)")
    ev.add_argument("--split", choices=["eval", "train"], default="eval", help="which side of the prompt set")
    ev.add_argument("--max-prompts", type=int, help="only the first N prompts of the (stratified) split")
    ev.add_argument("--export", choices=["geneval", "t2i_compbench"], help="also write images for that scorer")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--judge-set-model", help="the model whose samples make the fixed judge set (trainer.judge_set_size > 0); "
        "default: with --run, the run's starting model; else the model evaluated",
    )  # fmt: skip
    ev.add_argument("--out", required=True)
    ev.add_argument("overrides", nargs="*", help="dotted overrides, e.g. prompts.eval_path=... rollout.num_actors=4")

    base = sub.add_parser("shapes-base", help="train the ShapesWorld base model from scratch")
    base.add_argument("--out", required=True)
    base.add_argument(
        "--verify", action="store_true", help="train into --out and compare with the shipped base of the same recipe"
    )
    base.add_argument("--size", choices=["base", "noisy", "test"], default="base")
    base.add_argument("--seed", type=int, default=0)
    base.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the cached built-in bases train on cpu")

    rep = sub.add_parser("report", help="plots and a markdown summary of one or more runs")
    rep.add_argument("runs", nargs="+")
    rep.add_argument("--out", default=None)
    rep.add_argument(
        "--intervals", action="store_true",
        help="95%% intervals from a paired bootstrap over prompts; runs named <recipe>_s<seed> pool as one recipe",
    )
    rep.add_argument("--baseline", help="with --intervals: compare every recipe's end figures with this recipe's")
    rep.add_argument(
        "--compare", action="append", default=[], metavar="RECIPE:AGAINST",
        help="with --intervals: RECIPE's end figures minus AGAINST's (repeatable)",
    )

    if argv[:1] == ["train"]:
        from rayunify.train import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["eval"]:  # options and overrides in any order
        return _eval(ev.parse_intermixed_args(argv[1:]))
    args = parser.parse_args(argv)
    if args.command == "shapes-base":
        from rayunify.shapes.base_training import train_base

        train_base(args.out, size=args.size, seed=args.seed, device=args.device)
        if not args.verify:
            return 0
        from rayunify.shapes.cache import compare_with_shipped

        report = compare_with_shipped(args.out, args.size, args.seed)
        print(json.dumps(report, indent=2))
        return 0 if report["identical_weights"] else 1
    if args.command == "report":
        from rayunify.report import write_report

        pairs = [_recipe_pair(text) for text in args.compare]
        print(
            write_report(
                args.runs, args.out, intervals=args.intervals, baseline=args.baseline, comparisons=pairs
            )
        )
        return 0
    return 2


def _eval(args: argparse.Namespace) -> int:
    from rayunify.config import ConfigError, load_config
    from rayunify.eval_job import EvalSettings, eval_job, run_model_path
    from rayunify.export import ExportError
    from rayunify.preflight import UserError

    try:
        overrides = list(args.overrides)
        config = args.config
        judge_set_model = args.judge_set_model
        if args.run:
            config = config or str(Path(args.run) / "config.yaml")
            judge_set_model = judge_set_model or load_config(str(Path(args.run) / "config.yaml")).model.path
            model_path, scoring = run_model_path(args.run)
            print(scoring, file=sys.stderr)
            overrides.insert(0, f"model.path={model_path}")
        if args.model:
            overrides.append(f"model.path={args.model}")
        cfg = load_config(config, overrides)
        samples = args.samples or cfg.trainer.eval_samples_per_prompt
        settings = EvalSettings(samples, args.split, args.max_prompts, args.export, args.seed, judge_set_model=judge_set_model)
        path = eval_job(cfg, args.out, settings)
    except (ConfigError, UserError, ExportError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 2
    report = json.loads(path.read_text())
    print(json.dumps({k: report[k] for k in ("overall", "category_mean")}, indent=2))
    print(f"wrote {path}, {path.parent / 'verdicts.jsonl'} and {path.parent / 'samples.png'}")
    return 0


def _recipe_pair(text: str) -> tuple[str, str]:
    name, sep, against = text.partition(":")
    if not sep or not name or not against:
        raise SystemExit(f"--compare {text!r}: expected RECIPE:AGAINST, e.g. c_sft:sft")
    return name, against


if __name__ == "__main__":
    raise SystemExit(main())
