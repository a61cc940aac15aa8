"""The driver: `python -m rayunify.train --config FILE [key=value …] [--resume] [--dry-run]`.

One process owns the loop and the logger (single controller); Ray actors do the work: rollout actors draw
images, judge actors label them, the replay-buffer actor pairs and ranks them, the DeepSpeed learner group
trains and pushes weights back. The loop is `rayunify.driver.trainer.Trainer`; this module is its command
line.
"""

from __future__ import annotations

import argparse
import os
import sys

# A local Ray cluster must stay on loopback; Ray reads this when it is imported, so set it first.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from rayunify.config import ConfigError, load_config  # noqa: E402
from rayunify.driver.trainer import Hooks, LearnerFailure, Trainer  # noqa: E402
from rayunify.guard import CoDegradationAlarm  # noqa: E402
from rayunify.preflight import UserError  # noqa: E402

__all__ = ["Hooks", "LearnerFailure", "Trainer", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayunify train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file under configs/ or examples/")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="validate and build every part without weights")
    parser.add_argument("--allow-over-memory", action="store_true",
                        help="with --dry-run: report a memory estimate above the GPUs' memory instead of failing")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 judge.type=self")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides + (["trainer.resume=true"] if args.resume else []))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.dry_run:
        from rayunify.dryrun import dry_run

        return dry_run(cfg, allow_over_memory=args.allow_over_memory)
    try:
        Trainer(cfg).run()
    except UserError as err:
        print(err, file=sys.stderr)
        return 2
    except (LearnerFailure, CoDegradationAlarm) as err:
        print(f"\nrun stopped: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
