"""The dry run (and the run's own preflight) checks what the run will load or need: every judge role, the
model family against the built-in's, prompt lengths against each family's text slot and context, and this
machine's real CPUs, GPUs and memory. Each problem is one line (exit 2), never a traceback minutes in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rayunify.config import load_config
from rayunify.train import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "prompts" / "t2i_compbench_sample"
REFEREE = ["guard.reference.type=python", "guard.reference.import_path=fixture_judges:brighter_than_half"]


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prompts")
    (root / "color_train.txt").write_text(
        "a purple kite and an orange boat\na grey owl and a pink flamingo\n"
    )
    (root / "long_train.txt").write_text("a " + "very " * 300 + "long prompt\na white cat on a black mat\n")
    return {name: root / f"{name}_train.txt" for name in ("color", "long")}


def files(prompts: Path) -> list[str]:
    return ["prompts.source=file", f"prompts.path={prompts}", f"prompts.eval_path={SAMPLE}"]


def dry_run(capsys, *overrides: str) -> tuple[int, str, str]:
    code = main(["--dry-run", *overrides])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_referee_is_checked_with_the_guard_off(capsys, prompt_files):
    """The evaluations judge with guard.reference even when the guard is off: ShapesWorld's checker cannot
    score free-text prompts, which the run would hit loading it for the start evaluation."""
    code, _, err = dry_run(
        capsys, "model.path=builtin:tiny", "guard.enabled=false", *files(prompt_files["color"])
    )
    assert code == 2
    assert "guard.reference (the evaluations' referee): shapes_checker cannot score these prompts" in err
    code, out, _ = dry_run(
        capsys, "model.path=builtin:tiny", "guard.enabled=false", *files(prompt_files["color"]), *REFEREE
    )
    assert code == 0 and "guard.reference (the evaluations' referee): python:fixture_judges" in out


def test_the_real_run_refuses_the_same_referee_before_any_actor_starts(tmp_path, prompt_files):
    import ray

    from rayunify.preflight import UserError
    from rayunify.train import Trainer

    cfg = load_config(None, ["model.path=builtin:tiny", "guard.enabled=false", *files(prompt_files["color"]),
                             f"trainer.output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(UserError, match="shapes_checker cannot score these prompts"):
        Trainer(cfg)
    assert not ray.is_initialized()


def test_a_show_o_built_in_needs_no_model_type(capsys):
    code, out, _ = dry_run(capsys, "model.path=builtin:showo-tiny")
    assert (
        code == 0
        and "config OK" in out
        and "a tiny random Show-o" in out
        and "Show-o's text slot holds 30" in out
    )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["model.type=janus", "model.path=builtin:showo-tiny"],
            "'builtin:showo-tiny' is a showo model but model.type='janus'",
        ),
        (
            ["model.type=showo", "model.path=builtin:tiny"],
            "'builtin:tiny' is a janus model but model.type='showo'",
        ),
    ],
)
def test_a_family_that_contradicts_the_built_in_is_one_line(capsys, overrides, message):
    code, _, err = dry_run(capsys, *overrides)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "model,limit",
    [
        ("builtin:showo-tiny", "tokens: Show-o's text slot holds 30 (max_text_len 32 in "),
        ("builtin:tiny", "beyond Janus's context of 512 (model.path=builtin:tiny)"),
    ],
)
def test_a_prompt_longer_than_the_model_takes_is_named_with_the_limit(capsys, prompt_files, model, limit):
    code, _, err = dry_run(capsys, f"model.path={model}", *files(prompt_files["long"]), *REFEREE)
    assert code == 2
    line = next(x for x in err.splitlines() if x.startswith("dry run FAILED"))
    assert "prompt 'a very very very" in line and limit in line


def test_the_real_run_checks_prompt_lengths_before_any_actor_starts(tmp_path, prompt_files):
    import ray

    from rayunify.preflight import UserError
    from rayunify.train import Trainer

    cfg = load_config(None, ["model.path=builtin:showo-tiny", *files(prompt_files["long"]), *REFEREE,
                             f"trainer.output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(UserError, match="Show-o's text slot holds 30"):
        Trainer(cfg)
    assert not ray.is_initialized()


def test_the_report_names_this_machine_as_it_is(capsys, prompt_files):
    """Not the logical CPUs a local cluster declares for the actors (40 for a recipe on a 2-core machine)."""
    code, out, _ = dry_run(
        capsys, "--config", str(ROOT / "examples" / "janus_pro_7b_sft.yaml"), "model.path=builtin:janus-pro-7b-shape",
        *files(prompt_files["color"])[1:], *REFEREE,
    )  # fmt: skip
    assert code == 0
    cores = len(os.sched_getaffinity(0))
    machine = next(x for x in out.splitlines() if x.startswith("this machine: "))
    assert machine.startswith(f"this machine: {cores} CPU cores, ") and " GiB memory, GPUs: " in machine
    if cores < 40:  # the recipe's actors ask for 40 CPUs
        assert f"a local cluster would declare 40 logical CPUs on these {cores} cores" in out
    assert "prompt lengths: not checked (an architecture has no tokenizer" in out
