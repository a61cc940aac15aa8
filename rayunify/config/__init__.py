"""The one typed config tree: YAML files in configs/, plus dotted command-line overrides.

Pure (pydantic + yaml only). Every swappable part is a variant chosen by `type`; unknown keys are errors
that name the key and the keys allowed there. A file may start from another with `inherit: other.yaml`
(path relative to the file), so experiment configs only state what they change.

  base.py        strict sections and `type`-tagged variants
  judges.py      judge sections (self, built-in, python, hf_vlm, vllm, noisy)
  algorithms.py  DPO, SFT, GRPO
  tree.py        the whole run (`Config`) and its other sections
  loading.py     load_config (inherit, overrides, renamed keys, errors that explain) and dump_config
  divergence.py  the divergence guard's section (guard.divergence)
  resume.py      which keys a resumed run may change (compared with the checkpoint's config)
"""

from rayunify.config.algorithms import AlgorithmConfig, DPOConfig, GRPOConfig, RewardTermConfig, SFTConfig
from rayunify.config.base import Strict, variants
from rayunify.config.divergence import DivergenceConfig
from rayunify.config.judges import (
    HFVLMJudgeConfig,
    JudgeConfig,
    NoisyJudgeConfig,
    PythonJudgeConfig,
    SelfJudgeConfig,
    ShapesCheckerJudgeConfig,
    VLLMJudgeConfig,
)
from rayunify.config.loading import RENAMED_KEYS, ConfigError, dump_config, load_config
from rayunify.config.tree import (
    Config,
    CurriculumConfig,
    GuardConfig,
    JanusModelConfig,
    JudgeResources,
    LearnerConfig,
    LoggerConfig,
    LoraConfig,
    ModelConfig,
    PromptsConfig,
    RayConfig,
    Resources,
    RolloutResources,
    SamplingConfig,
    ShowoModelConfig,
    TrainerConfig,
)

__all__ = [
    "RENAMED_KEYS", "AlgorithmConfig", "Config", "ConfigError", "CurriculumConfig", "DivergenceConfig", "DPOConfig", "GRPOConfig",
    "GuardConfig", "HFVLMJudgeConfig", "JanusModelConfig", "JudgeConfig", "JudgeResources", "LearnerConfig",
    "LoggerConfig", "LoraConfig", "ModelConfig", "NoisyJudgeConfig", "PromptsConfig", "PythonJudgeConfig",
    "RayConfig", "Resources", "RewardTermConfig", "RolloutResources", "SFTConfig", "SamplingConfig",
    "SelfJudgeConfig", "ShapesCheckerJudgeConfig", "ShowoModelConfig",
    "Strict", "TrainerConfig", "VLLMJudgeConfig", "dump_config", "load_config", "variants",
]  # fmt: skip
