"""The memory estimate against the GPUs a recipe names: the worst-packed GPU, the fixes offered when it does
not fit, and every shipped recipe fitting its own GPU by its own estimate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rayunify import preflight, sizing
from rayunify.config import load_config
from rayunify.dryrun import model_shape, run_shape
from rayunify.train import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "examples").glob("*.yaml"))
SAMPLE = ROOT / "examples" / "prompts" / "t2i_compbench_sample"


def architecture(recipe: Path) -> str:
    """The built-in architecture (no weights) of the model a recipe names."""
    name = recipe.stem
    return "builtin:showo-512-shape" if "showo" in name else f"builtin:janus-pro-{'7b' if '7b' in name else '1b'}-shape"


def recipe_estimate(recipe: Path, *extra: str):
    cfg = load_config(recipe, [f"model.path={architecture(recipe)}", *extra])
    config = preflight.check_model(cfg, need_weights=False).config
    shape = model_shape(cfg, config)
    return cfg, shape, run_shape(cfg, shape)


def test_worst_gpu_packs_fractional_actors_up_to_one_gpu():
    tenants = [
        sizing.GpuTenant("learner rank", 4, 1, 30.0),
        sizing.GpuTenant("rollout actor", 4, 0.5, 20.0),
        sizing.GpuTenant("judge actor", 4, 0.5, 25.0),
    ]
    assert sizing.worst_gpu(tenants) == (50.0, "2 x judge actor (25.0 GiB each)")
    shared = [sizing.GpuTenant("learner rank", 1, 0.4, 30.0), sizing.GpuTenant("rollout actor", 1, 0.4, 20.0),
              sizing.GpuTenant("judge actor", 1, 0.2, 10.0)]  # fmt: skip
    assert sizing.worst_gpu(shared)[0] == 60.0
    assert sizing.over_memory(shared, 79.0) is None and "60.0 GiB" in sizing.over_memory(shared, 40.0)


def test_gpu_margin_adds_context_fragmentation_and_nccl():
    terms = {"weights": 10.0, "activations": 10.0}
    margin = sizing.with_gpu_margin(terms, nccl=True)["gpu_margin"]
    assert margin == pytest.approx(sizing.CUDA_CONTEXT_GIB + 0.1 * 20 + sizing.NCCL_GIB)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_names_its_gpu_and_fits_it_by_its_own_estimate(recipe):
    cfg, shape, run = recipe_estimate(recipe)
    assert cfg.ray.gpu_memory_gib, f"{recipe.name} sets no ray.gpu_memory_gib"
    named = re.findall(r"(\d+) GB GPU|GPUs of (\d+) GB", recipe.read_text())
    assert named, f"{recipe.name}: its comment names no GPU"
    gb = int("".join(named[0]))
    assert cfg.ray.gpu_memory_gib <= 0.995 * gb  # an "80 GB" H100 holds 79.6 GiB (81,559 MiB)
    problem = sizing.fit_problem(cfg, shape, run, preflight.judge_holds_model(cfg), cfg.ray.gpu_memory_gib)
    assert problem is None, f"{recipe.name}: {problem}"


def test_over_memory_fails_the_dry_run_with_the_fixes_that_fit(capsys):
    recipe = ROOT / "examples" / "janus_pro_1b_sft.yaml"
    args = ["--config", str(recipe), "--dry-run", f"model.path={architecture(recipe)}", f"prompts.path={SAMPLE}/color_val.txt",
            f"prompts.eval_path={SAMPLE}/shape_val.txt", "guard.reference.type=self", "learner.batch_size=64"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "dry run FAILED: memory: one GPU may hold learner rank" in err
    assert "any one of these fits: " in err and "learner.batch_size=8 (" in err and "--allow-over-memory" in err
    assert main([*args, "--allow-over-memory"]) == 0
    assert "OVER 79.6 GiB GPUs, going on (--allow-over-memory)" in capsys.readouterr().out


def test_offline_rollout_rows_come_from_the_build_chunk_bounded_by_max_rows():
    recipe = ROOT / "examples" / "janus_pro_1b_sft.yaml"
    _, _, unbounded = recipe_estimate(recipe, "rollout.max_rows=null", "trainer.build_chunk_prompts=256")
    assert unbounded.rollout_rows == 256 * 10 * 2  # a chunk's prompts x samples x CFG twins in one call
    _, _, bounded = recipe_estimate(recipe, "rollout.max_rows=100")
    assert bounded.rollout_rows == 100 and bounded.rollout_prompts == 5


def test_when_no_single_change_fits_a_combination_is_named():
    recipe = ROOT / "examples" / "janus_pro_7b_sft.yaml"
    cfg, shape, run = recipe_estimate(recipe, "learner.batch_size=64", "rollout.max_rows=null")
    problem = sizing.fit_problem(cfg, shape, run, preflight.judge_holds_model(cfg), 79.6)
    assert "2 x rollout actor (448.5 GiB each)" in problem
    fix = problem.split("this fits: ")[1]
    assert "rollout.max_rows=" in fix and " and learner." in fix and "together" in fix
