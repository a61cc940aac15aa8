"""The config tree: every shipped file validates, overrides work, and mistakes name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayunify.config import Config, ConfigError, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for d in ("configs", "examples") for p in (ROOT / d).rglob("*.y*ml"))


def test_there_are_shipped_configs():
    assert any(p.parent.name == "configs" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates(path):
    assert isinstance(load_config(path), Config)


def test_experiment_suites_are_valid_runs_with_distinct_directories():
    """examples/run_shapes_experiments.py --suite: every run's config and overrides load, and no two runs
    of a suite write to the same directory."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_shapes_experiments", ROOT / "examples" / "run_shapes_experiments.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for suite, runs in script.SUITES.items():
        dirs = [script.run_dir_of(script.CONFIGS / f"{config}.yaml", overrides) for _, config, overrides in runs]
        assert len(set(dirs)) == len(runs), suite
        assert [d.name for d in dirs] == [name for name, _, _ in runs], suite
    for suite, pairs in script.COMPARISONS.items():
        names = {name for name, _, _ in script.SUITES[suite]}
        assert {n for pair in pairs for n in pair} <= names, suite


def test_dotted_overrides_and_variant_switch():
    cfg = load_config(None, ["model.lora.rank=8", "judge.type=python", "judge.import_path=pkg.mod:fn", "learner.lr=3e-4"])
    assert cfg.model.lora.rank == 8 and cfg.learner.lr == 3e-4
    assert cfg.judge.type == "python" and cfg.judge.import_path == "pkg.mod:fn"
    cfg = load_config(None, ["judge.type=noisy", "judge.flip_fraction=0.5", "judge.base.type=shapes_checker"])
    assert cfg.judge.flip_fraction == 0.5 and cfg.judge.base.type == "shapes_checker"


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.lora.rnk=3", "unknown key 'model.lora.rnk' (allowed here: alpha, dropout, rank, target_modules)"),
        ("trainer.stepz=3", "unknown key 'trainer.stepz'"),
        ("judge.type=selff", "'self', 'shapes_checker', 'python', 'noisy'"),
        ("algorithm.loss_type=foo", "algorithm.loss_type: Input should be 'sigmoid', 'robust', 'ipo' or 'hinge'"),
        ("model.type=chameleon", "'janus'"),
        ("learner.zero_stage=5", "learner.zero_stage"),
        ("prompts.source=file", "prompts.path is required"),
        ("prompts.categories=[colour,squares]", "prompts.categories: Value error, unknown ShapesWorld category 'squares'"),
        ("judge.flip_fraction=0.3", "unknown key 'judge.flip_fraction'"),
        ("nosuchsection.x=1", "unknown key 'nosuchsection'"),
        ("trainer", "must look like key.path=value"),
    ],
)
def test_mistakes_name_the_key_and_the_choices(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_inherit_merge_and_file_errors(tmp_path):
    (tmp_path / "base.yaml").write_text("trainer:\n  steps: 7\n  seed: 3\njudge:\n  type: self\n  weights: frozen\n")
    (tmp_path / "child.yaml").write_text("inherit: base.yaml\ntrainer:\n  steps: 9\njudge:\n  type: shapes_checker\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.trainer.steps == 9 and cfg.trainer.seed == 3 and cfg.judge.type == "shapes_checker"
    (tmp_path / "bad.yaml").write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "typo.yaml").write_text("trainer:\n  stpes: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.*\n.*unknown key 'trainer.stpes'"):
        load_config(tmp_path / "typo.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["judge.type=noisy", "judge.always_accept=true", "curriculum.type=adaptive"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


# ---------------------------------------------------------------------------------------------- GRPO
def test_grpo_defaults_and_a_full_file(tmp_path):
    cfg = load_config(None, ["algorithm.type=grpo"])
    a = cfg.algorithm
    assert (a.type, a.reward, a.rewards, a.scale_rewards) == ("grpo", "score", None, True)
    assert (a.clip_eps, a.clip_eps_high, a.beta, a.ppo_epochs, a.mini_batch_size) == (0.2, None, 0.0, 1, None)

    (tmp_path / "dpo.yaml").write_text("algorithm:\n  type: dpo\n  loss_type: ipo\n  beta: 0.5\n")
    (tmp_path / "grpo.yaml").write_text(
        "inherit: dpo.yaml\n"
        "algorithm:\n"
        "  type: grpo\n  reward: verdict\n  scale_rewards: false\n  clip_eps: 0.2\n  clip_eps_high: 0.28\n"
        "  beta: 0.04\n  ppo_epochs: 2\n  mini_batch_size: 16\n"
        "  rewards:\n"
        "    - {judge: {type: self}, weight: 0.7}\n"
        "    - judge: {type: python, import_path: pkg.mod:fn}\n"
    )
    cfg = load_config(tmp_path / "grpo.yaml")
    a = cfg.algorithm
    assert a.type == "grpo" and a.reward == "verdict" and a.scale_rewards is False  # the dpo keys are gone
    assert (a.clip_eps_high, a.beta, a.ppo_epochs, a.mini_batch_size) == (0.28, 0.04, 2, 16)
    assert a.rewards is not None and [(r.judge.type, r.weight) for r in a.rewards] == [("self", 0.7), ("python", 1.0)]
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    "override,message",
    [
        ("algorithm.clip_eps_high=0.1", "algorithm.clip_eps_high=0.1 must be >= algorithm.clip_eps=0.2"),
        ("algorithm.beta=-0.1", "algorithm.beta: Input should be greater than or equal to 0"),
        ("algorithm.rewards=[]", "algorithm.rewards is an empty list"),
        ("algorithm.clip_eps=0", "algorithm.clip_eps: Input should be greater than 0"),
        ("algorithm.clip_eps=1.5", "algorithm.clip_eps: Input should be less than 1"),
        ("algorithm.reward=soft", "algorithm.reward: Input should be 'score' or 'verdict'"),
        ("algorithm.ppo_epochs=0", "algorithm.ppo_epochs: Input should be greater than 0"),
        ("algorithm.mini_batch_size=0", "algorithm.mini_batch_size: Input should be greater than 0"),
        ("algorithm.rewards=[{weight: 1}]", "algorithm.rewards.0.judge: Field required"),
        ("algorithm.rewards=[{judge: {type: self}, weight: 0}]", "algorithm.rewards.0.weight: Value error, weight must be"),
        ("algorithm.rewards=[{judge: {type: selff}}]", "algorithm.rewards.0.judge: Input tag 'selff'"),
        ("algorithm.loss_type=sigmoid", "unknown key 'algorithm.loss_type' (allowed here: beta, clip_eps, clip_eps_high"),
    ],
)
def test_grpo_mistakes_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["algorithm.type=grpo", override])
    assert message in str(err.value)
