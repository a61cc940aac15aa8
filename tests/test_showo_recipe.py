"""examples/showo_512_c_sft.yaml passes the dry run on Show-o-512's architecture and on a saved tiny Show-o
folder (the guard's hf_vlm referee stood in for by a tiny Janus, as in test_recipes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayunify.config import load_config
from rayunify.train import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "showo_512_c_sft.yaml"
SAMPLE_PROMPTS = ROOT / "examples" / "prompts" / "t2i_compbench_sample"


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> list[str]:
    from rayunify.models.janus.factory import build_janus

    root = tmp_path_factory.mktemp("stand_ins")
    model, processor = build_janus()
    model.save_pretrained(root / "janus")
    processor.save_pretrained(root / "janus")
    (root / "color_train.txt").write_text("a purple kite and an orange boat\na grey owl and a pink flamingo\n")
    return [f"prompts.path={root / 'color_train.txt'}", f"prompts.eval_path={SAMPLE_PROMPTS}",
            f"guard.reference.path={root / 'janus'}"]  # fmt: skip


def test_the_recipe_states_the_paper_settings_on_show_o():
    cfg = load_config(RECIPE)
    assert cfg.model.type == "showo" and cfg.model.logprob_estimator == "masked" and cfg.model.steps == 50
    assert cfg.algorithm.type == "sft" and cfg.trainer.mode == "offline" and cfg.trainer.epochs == 20
    assert cfg.sampling.samples_per_prompt == 10 and cfg.curriculum.replay_at == [10]


def test_dry_run_on_the_show_o_512_architecture(stand_ins, capsys):
    assert main(["--config", str(RECIPE), "--dry-run", "model.path=builtin:showo-512-shape", *stand_ins]) == 0
    out = capsys.readouterr().out
    assert "showo-512-shape (architecture only" in out and "1024 image tokens" in out
    assert "dry run OK" in out


def test_dry_run_on_a_show_o_folder_and_a_missing_one(stand_ins, tmp_path, capsys):
    from rayunify.models.showo.factory import build_showo, save_showo_dir

    save_showo_dir(tmp_path / "showo", *build_showo())
    folder = [f"model.path={tmp_path / 'showo'}", "model.tokenizer_path=null", "model.vq_path=null"]
    assert main(["--config", str(RECIPE), "--dry-run", *folder, *stand_ins]) == 0
    assert "(Show-o, 64 image tokens; weights present)" in capsys.readouterr().out
    assert main(["--config", str(RECIPE), "--dry-run", *stand_ins]) == 2
    assert "model directory /models/show-o-512x512 does not exist" in capsys.readouterr().err


def test_a_show_o_built_in_sets_the_family_and_a_contradiction_is_refused():
    from rayunify.config import ConfigError

    assert load_config(None, ["model.path=builtin:showo-512-shape"]).model.type == "showo"
    with pytest.raises(ConfigError, match="is a showo model but model.type='janus': set model.type=showo"):
        load_config(None, ["model.type=janus", "model.path=builtin:showo-512-shape"])
