"""The real-model recipes in examples/ build end to end (`--dry-run`) when pointed at a saved tiny Janus.

Each recipe names real paths (/models/Janus-Pro-7B, a T2I-CompBench checkout, Qwen2.5-VL); the test swaps in a
tiny random Janus saved here (also standing in for the guard's hf_vlm referee: Janus is an image-text-to-text
model too) and the shipped sample prompt files, and leaves every other setting as shipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayunify.config import load_config
from rayunify.train import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "examples").glob("janus_pro_*.yaml"))
SAMPLE_PROMPTS = ROOT / "examples" / "prompts" / "t2i_compbench_sample"


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory) -> Path:
    from rayunify.models.janus.factory import build_janus

    path = tmp_path_factory.mktemp("models") / "tiny-janus"
    model, processor = build_janus()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "color_train.txt"
    path.write_text("a purple kite and an orange boat\na grey owl and a pink flamingo\na white cat on a black mat\n")
    return path


def overrides(model: Path, prompts: Path, recipe: Path | None = None) -> list[str]:
    return [
        f"model.path={model}",
        f"prompts.path={prompts}",
        f"prompts.eval_path={SAMPLE_PROMPTS}",
        f"guard.reference.path={model}",
        *reward_overrides(recipe, model),
    ]


def reward_overrides(recipe: Path | None, model: Path) -> list[str]:
    """GRPO's reward judges as shipped, with the tiny Janus standing in for every hf_vlm referee."""
    rewards = (yaml.safe_load(recipe.read_text()).get("algorithm") or {}).get("rewards") if recipe else None
    if not rewards:
        return []
    for term in rewards:
        if term["judge"]["type"] == "hf_vlm":
            term["judge"]["path"] = str(model)
    return [f"algorithm.rewards={json.dumps(rewards)}"]


def test_there_are_six_janus_pro_recipes():
    assert {p.stem for p in RECIPES} == {
        "janus_pro_1b_sft", "janus_pro_7b_sft", "janus_pro_1b_dpo", "janus_pro_7b_dpo", "janus_pro_7b_online_dpo_lora",
        "janus_pro_7b_grpo_lora",
    }  # fmt: skip


def test_the_paper_recipe_states_the_paper_settings():
    cfg = load_config(ROOT / "examples" / "janus_pro_7b_sft.yaml")
    assert cfg.sampling.samples_per_prompt == 10 and cfg.trainer.epochs == 20 and cfg.trainer.mode == "offline"
    assert cfg.curriculum.type == "replay" and cfg.curriculum.replay_at == [10]
    assert cfg.model.trainable == "language_model" and cfg.algorithm.type == "sft"
    assert cfg.sampling.guidance_scale == 5.0 and cfg.sampling.temperature == 1.0
    assert cfg.prompts.source == "file" and cfg.prompts.format == "t2i_compbench"
    dpo = load_config(ROOT / "examples" / "janus_pro_1b_dpo.yaml")
    assert dpo.algorithm.type == "dpo" and dpo.algorithm.nll_weight > 0 and dpo.trainer.epochs == 30
    assert dpo.curriculum.replay_at == [10]
    online = load_config(ROOT / "examples" / "janus_pro_7b_online_dpo_lora.yaml")
    assert online.trainer.mode == "online" and online.trainer.sync == "async" and online.model.trainable == "lora"
    assert online.learner.num_gpus >= 1 and online.rollout.num_gpus >= 1
    grpo = load_config(ROOT / "examples" / "janus_pro_7b_grpo_lora.yaml")
    assert grpo.algorithm.type == "grpo" and grpo.trainer.mode == "online" and grpo.model.trainable == "lora"
    assert [t.judge.type for t in grpo.algorithm.rewards or []] == ["self", "hf_vlm"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_dry_run_on_a_tiny_janus(recipe, tiny_janus, prompt_file, capsys):
    assert main(["--config", str(recipe), "--dry-run", *overrides(tiny_janus, prompt_file, recipe)]) == 0
    out = capsys.readouterr().out
    assert "dry run OK: every part checks out" in out
    assert f"model: {tiny_janus} (weights present)" in out
    assert f"guard.reference: hf_vlm {tiny_janus}" in out
    assert "(t2i_compbench): 3 prompts; color 3" in out and "train: 3 prompts (color 3)" in out
    assert "memory per learner GPU (estimate)" in out


def test_python_m_entrypoint_dry_run(tiny_janus, prompt_file):
    """The exact command the README, the cluster manifests and the Slurm script run."""
    recipe = ROOT / "examples" / "janus_pro_7b_sft.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "rayunify.train", "--config", str(recipe), "--dry-run", *overrides(tiny_janus, prompt_file)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run OK" in done.stdout


def test_dry_run_names_a_missing_model_directory(capsys):
    recipe = ROOT / "examples" / "janus_pro_7b_sft.yaml"
    assert main(["--config", str(recipe), "--dry-run"]) == 2
    assert "dry run FAILED: model directory /models/Janus-Pro-7B does not exist" in capsys.readouterr().err


def test_dry_run_needs_no_weights_only_config_and_tokenizer(tiny_janus, prompt_file, tmp_path, capsys):
    weightless = tmp_path / "Janus-Pro-7B"
    weightless.mkdir()
    for f in tiny_janus.iterdir():
        if not f.name.endswith(".safetensors"):
            (weightless / f.name).write_bytes(f.read_bytes())
    recipe = ROOT / "examples" / "janus_pro_7b_sft.yaml"
    assert main(["--config", str(recipe), "--dry-run", *overrides(weightless, prompt_file)]) == 0
    assert f"model: {weightless} (no weights: enough for a dry run)" in capsys.readouterr().out


def test_dry_run_of_the_7b_architecture_sizes_memory_per_gpu(prompt_file, tiny_janus, capsys):
    recipe = ROOT / "examples" / "janus_pro_7b_sft.yaml"
    args = ["--config", str(recipe), "--dry-run", *overrides(tiny_janus, prompt_file), "model.path=builtin:janus-pro-7b-shape"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "model size: 6.99 B parameters, language model 6.49 B" in out and "576 image tokens" in out
    learner = next(line for line in out.splitlines() if line.startswith("memory per learner GPU"))
    assert "weights 3.3" in learner and "optimizer 18.1" in learner  # ZeRO-3 over 4 ranks, bf16 + fp32 Adam


@pytest.mark.parametrize(
    "extra,message",
    [
        (["model.path=builtin:nonsense"], "unknown built-in model; choose one of builtin:tiny"),
        (["guard.reference.type=shapes_checker"], "guard.reference: shapes_checker cannot score these prompts"),
    ],
)
def test_dry_run_refuses_what_the_run_would_hit(extra, message, tiny_janus, prompt_file, capsys):
    recipe = ROOT / "examples" / "janus_pro_7b_sft.yaml"
    assert main(["--config", str(recipe), "--dry-run", *overrides(tiny_janus, prompt_file), *extra]) == 2
    assert message in capsys.readouterr().err


def test_dry_run_says_when_this_machine_cannot_hold_the_actors(tiny_janus, prompt_file, capsys):
    recipe = ROOT / "examples" / "janus_pro_7b_sft.yaml"
    assert main(["--config", str(recipe), "--dry-run", *overrides(tiny_janus, prompt_file), "ray.num_cpus=4"]) == 0
    assert "NOT on this machine as a local cluster: the run asks for 40 CPU" in capsys.readouterr().out
