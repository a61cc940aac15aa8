"""`rayunify eval`'s arguments: each bad value is one line naming it (exit 2), options and dotted overrides go
in any order, and a cluster that can never hold the rollout actors is said at once, not after a timeout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayunify.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "prompts"
DATASET = FIXTURES / "T2I-CompBench" / "examples" / "dataset"
COMMON = [
    "model.path=builtin:tiny", "sampling.guidance_scale=2.0", "guard.reference.type=python",
    "guard.reference.import_path=fixture_judges:brighter_than_half", "prompts.source=file",
    f"prompts.path={DATASET}/color_train.txt", f"prompts.eval_path={DATASET}/color_val.txt",
]  # fmt: skip


def _one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--samples", "0", "argument --samples: must be at least 1, got 0"),
        ("--samples", "-3", "argument --samples: must be at least 1, got -3"),
        ("--samples", "two", "argument --samples: expected a whole number, got 'two'"),
        ("--max-prompts", "0", "argument --max-prompts: must be at least 1, got 0"),
        ("--split", "test", "argument --split: invalid choice: 'test'"),
        ("--seed", "-1", "argument --seed: must be at least 0, got -1"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(capsys, tmp_path, option, value, message):
    err = _one_line_error(capsys, ["eval", "--out", str(tmp_path), option, value, *COMMON])
    assert err.startswith("rayunify eval: ") and message in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_bad_override_or_config_is_one_line(capsys, tmp_path):
    assert main(["eval", "--out", str(tmp_path), *COMMON, "sampling.temperature=-1"]) == 2
    assert "sampling.temperature" in capsys.readouterr().err
    assert main(["eval", "--out", str(tmp_path), "--run", str(tmp_path / "no_such_run")]) == 2
    assert "no_such_run/config.yaml does not exist" in capsys.readouterr().err


def test_options_and_overrides_in_any_order(tmp_path, capsys):
    """Overrides before, between and after options; --samples 1 is honoured (not the default of 2)."""
    argv = [
        "eval",
        COMMON[0],
        "--samples",
        "1",
        *COMMON[1:4],
        "--out",
        str(tmp_path),
        *COMMON[4:],
        "--max-prompts",
        "2",
    ]
    assert main(argv) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["settings"]["samples"] == 1 and report["settings"]["prompts"] == 2
    assert report["overall"]["count"] == 2


def test_rollout_actors_that_no_node_can_hold_are_refused_at_once(tmp_path, capsys):
    argv = [
        "eval",
        "--out",
        str(tmp_path),
        *COMMON,
        "rollout.num_actors=2",
        "rollout.num_gpus=64",
        "ray.num_cpus=2",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the run asks for 128 GPU (rollout 2 x 64)" in err and "Traceback" not in err


def test_a_prompt_longer_than_the_text_slot_is_refused_before_generating(tmp_path, capsys):
    (tmp_path / "long_val.txt").write_text("a " + "very " * 200 + "long prompt\n")
    argv = ["eval", "--out", str(tmp_path / "out"), "--model", "builtin:showo-tiny", *COMMON[1:5],
            f"prompts.path={DATASET}/color_train.txt", f"prompts.eval_path={tmp_path / 'long_val.txt'}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "prompt 'a very very" in err and "Show-o's text slot holds 30" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
