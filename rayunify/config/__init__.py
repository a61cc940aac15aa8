"""The one typed config tree: YAML files in configs/, plus dotted command-line overrides.

Pure (pydantic + yaml only). Every swappable part is a variant chosen by `type`; unknown keys are errors
that name the key and the keys allowed there. A file may start from another with `inherit: other.yaml`
(path relative to the file), so experiment configs only state what they change.

  base.py        strict sections and `type`-tagged variants
  judges.py      judge sections (self, built-in, python, hf_vlm, vllm, noisy)
  algorithms.py  DPO, SFT, GRPO
  health.py      when a run that trains nothing warns and stops
  models.py      the model section (Janus, Show-o, LoRA)
  resources.py   CPUs, GPUs and custom Ray resources per actor
  transport.py   the broadcast push's backend (a rule of the config alone)
  tree.py        the whole run (`Config`) and its other sections
  loading.py     load_config (inherit, overrides, renamed keys, errors that explain) and dump_config
  divergence.py  the divergence guard's section (guard.divergence)
  resume.py      which keys a resumed run may change (compared with the checkpoint's config)
"""

from rayunify.config.algorithms import AlgorithmConfig, DPOConfig, GRPOConfig, RewardTermConfig, SFTConfig
from rayunify.config.base import Strict, variants
from rayunify.config.divergence import DivergenceConfig
from rayunify.config.health import HealthConfig
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
from rayunify.config.models import JanusModelConfig, LoraConfig, ModelConfig, ShowoModelConfig
from rayunify.config.resources import JudgeResources, Resources, RolloutResources
from rayunify.config.tree import (
    Config,
    CurriculumConfig,
    GuardConfig,
    LearnerConfig,
    LoggerConfig,
    PromptsConfig,
    RayConfig,
    SamplingConfig,
    TrainerConfig,
)

__all__ = [
    "RENAMED_KEYS", "AlgorithmConfig", "Config", "ConfigError", "CurriculumConfig", "DivergenceConfig", "DPOConfig",
    "GRPOConfig", "GuardConfig", "HFVLMJudgeConfig", "HealthConfig", "JanusModelConfig", "JudgeConfig", "JudgeResources",
    "LearnerConfig",
    "LoggerConfig", "LoraConfig", "ModelConfig", "NoisyJudgeConfig", "PromptsConfig", "PythonJudgeConfig",
    "RayConfig", "Resources", "RewardTermConfig", "RolloutResources", "SFTConfig", "SamplingConfig",
    "SelfJudgeConfig", "ShapesCheckerJudgeConfig", "ShowoModelConfig",
    "Strict", "TrainerConfig", "VLLMJudgeConfig", "dump_config", "load_config", "variants",
]  # fmt: skip
