"""`rayunify` command line: train, eval, report, and the commands plugins add (ShapesWorld: shapes-base)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rayunify import builtins


class OneLineParser(argparse.ArgumentParser):
    """A bad option is one line naming it (exit 2), not a usage block; `--help` still shows the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def seed_int(text: str) -> int:
    return _whole_number(text, 0)


def build_parser() -> argparse.ArgumentParser:
    """The `rayunify` parser (`train` parses its own arguments: `rayunify.train.build_parser`)."""
    parser = OneLineParser(prog="rayunify", description="Self-improvement of unified multimodal models.")
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
    ev.add_argument("--samples", type=positive_int, help="images per prompt (default trainer.eval_samples_per_prompt)")
    ev.add_argument("--split", choices=["eval", "train"], default="eval", help="which side of the prompt set")
    ev.add_argument("--max-prompts", type=positive_int, help="only the first N prompts of the (stratified) split")
    ev.add_argument("--export", choices=["geneval", "t2i_compbench"], help="also write images for that scorer")
    ev.add_argument("--seed", type=seed_int, default=0, help="seeds the images drawn (the same seed, the same images)")
    ev.add_argument(
        "--judge-set-model", help="the model whose samples make the fixed judge set (trainer.judge_set_size > 0); "
        "default: with --run, the run's starting model; else the model evaluated",
    )  # fmt: skip
    ev.add_argument("--out", required=True, help="output directory: eval.json, verdicts.jsonl, samples.png, exports")
    ev.add_argument("overrides", nargs="*", help="dotted overrides, e.g. prompts.eval_path=... rollout.num_actors=4")

    for name, command in builtins.COMMANDS.items():  # plugins' commands, e.g. ShapesWorld's shapes-base
        command.add_arguments(sub.add_parser(name, help=command.help))

    rep = sub.add_parser("report", help="plots and a markdown summary of one or more runs")
    rep.add_argument("runs", nargs="+", help="run directories (each with its metrics.jsonl)")
    rep.add_argument("--out", default=None, help="where plots and the markdown summary go (default: <first run>/report)")
    rep.add_argument(
        "--intervals", action="store_true",
        help="95%% intervals from a paired bootstrap over prompts; runs named <recipe>_s<seed> pool as one recipe",
    )
    rep.add_argument("--baseline", help="with --intervals: compare every recipe's end figures with this recipe's")
    rep.add_argument(
        "--compare", action="append", default=[], metavar="RECIPE:AGAINST",
        help="with --intervals: RECIPE's end figures minus AGAINST's (repeatable)",
    )

    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["train"]:
        from rayunify.train import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["eval"]:  # options and dotted overrides in any order
        return _eval(_subparser(parser, "eval").parse_intermixed_args(argv[1:]))
    args = parser.parse_args(argv)
    if args.command == "report":
        from rayunify.report import write_report

        pairs = [_recipe_pair(text) for text in args.compare]
        print(
            write_report(
                args.runs, args.out, intervals=args.intervals, baseline=args.baseline, comparisons=pairs
            )
        )
        return 0
    return builtins.COMMANDS[args.command].run(args)


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
        _check_judge_set_model(judge_set_model, cfg.trainer.judge_set_size)
        samples = args.samples if args.samples is not None else cfg.trainer.eval_samples_per_prompt
        settings = EvalSettings(samples, args.split, args.max_prompts, args.export, args.seed, judge_set_model=judge_set_model)
        path = eval_job(cfg, args.out, settings)
    except (ConfigError, UserError, ExportError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 2
    report = json.loads(path.read_text())
    print(json.dumps({k: report[k] for k in ("overall", "category_mean")}, indent=2))
    print(f"wrote {path}, {path.parent / 'verdicts.jsonl'} and {path.parent / 'samples.png'}")
    return 0


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _check_judge_set_model(path: str | None, size: int) -> None:
    from rayunify.builtins import is_builtin
    from rayunify.preflight import UserError

    if path and size > 0 and not is_builtin(path) and not Path(path).is_dir():
        raise UserError(f"--judge-set-model {path}: no such model directory")


def _recipe_pair(text: str) -> tuple[str, str]:
    name, sep, against = text.partition(":")
    if not sep or not name or not against:
        raise SystemExit(f"--compare {text!r}: expected RECIPE:AGAINST, e.g. c_sft:sft")
    return name, against


if __name__ == "__main__":
    raise SystemExit(main())
