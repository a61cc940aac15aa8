"""What a judge's accept threshold on its soft score would do, read from `rayunify eval`'s verdicts.jsonl.

    rayunify eval --config configs/shapes/co_degradation.yaml --samples 4 --out runs/val \
        prompts.eval_split=validation trainer.judge_set_size=0
    python examples/accept_threshold_sweep.py runs/val/verdicts.jsonl --thresholds 0.5 0.2 0.1 0.05 0.02

For each threshold on the own judge's score P(yes): the share of images it would accept, its true- and
false-positive rates against the reference verdict, balanced accuracy, and the precision of the accepted
images (what SFT would train on). Choose `judge.accept_threshold` on a validation split, not on test.
Images the reference could not score are left out and counted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_scored(path: Path) -> tuple[list[tuple[float, bool]], int]:
    """(own score, reference accepts) per image, and how many images the reference left unscored."""
    scored, unscored = [], 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            score, reference = float(row["own"]["score"]), int(row["reference"]["verdict"])
        except (KeyError, TypeError, ValueError) as error:
            raise SystemExit(f"{path}:{number}: not a verdicts.jsonl row of `rayunify eval` ({error})") from error
        if reference in (0, 1):
            scored.append((score, reference == 1))
        else:
            unscored += 1
    return scored, unscored


def sweep_row(scored: list[tuple[float, bool]], threshold: float) -> str:
    accepted = [right for score, right in scored if score >= threshold]
    right = sum(r for _, r in scored)
    wrong = len(scored) - right
    tpr = sum(accepted) / right if right else float("nan")
    fpr = (len(accepted) - sum(accepted)) / wrong if wrong else float("nan")
    precision = sum(accepted) / len(accepted) if accepted else float("nan")
    share = len(accepted) / len(scored)
    return f"| {threshold:g} | {share:.3f} | {tpr:.3f} | {fpr:.3f} | {(tpr + 1 - fpr) / 2:.3f} | {precision:.3f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("verdicts", type=Path, help="verdicts.jsonl written by `rayunify eval`")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01])
    args = parser.parse_args()
    scored, unscored = read_scored(args.verdicts)
    if not scored:
        raise SystemExit(f"{args.verdicts}: no image the reference scored")
    right = sum(r for _, r in scored)
    print(f"{len(scored)} images, {right / len(scored):.3f} right by the reference; {unscored} left unscored\n")
    print("| threshold | accepted | true-positive rate | false-positive rate | balanced accuracy | precision |")
    print("|---|---|---|---|---|---|")
    for threshold in args.thresholds:
        print(sweep_row(scored, threshold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
