"""The driver: `python -m rayunify.train --config FILE [key=value …] [--resume[=auto]] [--overwrite] [--dry-run]`.

One process owns the loop and the logger (single controller); Ray actors do the work: rollout actors draw
images, judge actors label them, the replay-buffer actor pairs and ranks them, the DeepSpeed learner group
trains and pushes weights back. The loop is `rayunify.driver.trainer.Trainer`; this module is its command
line. Options and overrides may come in any order. What a run directory guarantees (checkpoints, resume,
the lock, signals, failure messages): docs/operations.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# A local Ray cluster must stay on loopback; Ray reads this when it is imported, so set it first.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from rayunify.config import Config, ConfigError, load_config  # noqa: E402
from rayunify.driver.checkpointer import Checkpointer, CheckpointError  # noqa: E402
from rayunify.driver.stopping import (  # noqa: E402
    STOP,
    LearnerFailure,  # noqa: E402
    RunStopped,
    StopRequested,
    graceful_stop,
    last_good,
    resume_command,
)
from rayunify.driver.trainer import Hooks, Trainer  # noqa: E402
from rayunify.guard import CoDegradationAlarm  # noqa: E402
from rayunify.health import NoTrainingSignal  # noqa: E402
from rayunify.preflight import UserError  # noqa: E402

__all__ = ["Hooks", "LearnerFailure", "Trainer", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayunify train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file under configs/ or examples/")
    parser.add_argument(
        "--resume", nargs="?", const="true", choices=["true", "auto"],
        help="continue from the newest intact checkpoint (refused if there is none); --resume=auto: or start "
        "fresh when the run directory holds no checkpoint",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="a fresh start deletes the run directory's old checkpoints"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and build every part without weights")
    parser.add_argument("--allow-over-memory", action="store_true",
                        help="with --dry-run: report a memory estimate above the GPUs' memory instead of failing")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 judge.type=self")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    # `--resume key=value` must not read the override as --resume's value: only `--resume=auto` gives one.
    argv = [("--resume=true" if a == "--resume" else a) for a in argv]
    return build_parser().parse_intermixed_args(argv)


def main(argv: list[str] | None = None, hooks: Hooks | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    flags = [f"trainer.resume={args.resume}"] if args.resume else []
    flags += ["trainer.overwrite=true"] if args.overwrite else []
    try:
        cfg = load_config(args.config, args.overrides + flags)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.dry_run:
        from rayunify.dryrun import dry_run

        return dry_run(cfg, allow_over_memory=args.allow_over_memory)
    return _train(cfg, argv, hooks)


def _train(cfg: Config, argv: list[str], hooks: Hooks | None) -> int:
    try:
        trainer = Trainer(cfg, hooks=hooks)
        with graceful_stop():  # after Ray started: its driver's own SIGTERM handler would exit at once
            trainer.run()
    except UserError as err:
        print(err, file=sys.stderr)
        return 2
    except StopRequested as err:
        print(f"\nrun {err}; resume with: {resume_command(argv)}", file=sys.stderr)
        return err.exit_code
    except (RunStopped, CheckpointError, CoDegradationAlarm, NoTrainingSignal) as err:
        print(f"\nrun stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second signal (or one before the loop began): no new checkpoint
        name = STOP.name or "SIGINT"
        root = Path(cfg.trainer.output_dir) / cfg.trainer.run_name / "checkpoints"
        last = last_good(Checkpointer(root, cfg.trainer.keep_checkpoints).newest().path)
        print(f"\nrun stopped at once by {name}; {last}; resume with: {resume_command(argv)}", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
