"""What a resumed run may change: the config a checkpoint was written with against the one resuming it.

Keys listed in MUTABLE (and everything under them) may change on resume: how long to train, the learning
rate, evaluation and checkpoint cadence, logging, the Ray cluster and the actors' resources. Every other key
shapes what the checkpoint holds (model, algorithm, prompts and their order, sampling, curriculum, learner
ranks, ZeRO stage, seeds) and a change to it refuses the resume. Pure: dicts in, lists of keys out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MUTABLE = (
    "trainer.steps", "trainer.epochs", "trainer.eval_every", "trainer.eval_prompts", "trainer.eval_samples_per_prompt",
    "trainer.checkpoint_every", "trainer.keep_checkpoints",
    "learner.lr", "learner.weight_decay", "learner.grad_clip", "learner.push_timeout_s", "learner.num_cpus",
    "learner.resources",
    "rollout.num_actors", "rollout.num_cpus", "rollout.num_gpus", "rollout.resources", "rollout.max_rows",
    "judge_actors",
    "guard.stop_on_alarm", "guard.divergence",
    "logger", "ray",
)  # fmt: skip
# How this start was asked for and where the directory lies (a run directory may be moved): never compared.
IGNORED = ("trainer.resume", "trainer.overwrite", "trainer.output_dir", "trainer.run_name")
_ABSENT = object()


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.key} ({_show(self.old)} → {_show(self.new)})"


@dataclass(frozen=True)
class ConfigChanges:
    refused: list[Change]  # keys that cannot change on resume
    allowed: list[Change]  # keys that may, reported at the start

    def refusal(self, checkpoint: str) -> str:
        keys = "; ".join(c.describe() for c in self.refused)
        return (
            f"cannot resume from {checkpoint}: the config changes keys a resumed run must keep: {keys}. Put them "
            "back, or start a new run under another trainer.run_name"
        )

    def report(self) -> str:
        return "resume with changed settings: " + "; ".join(c.describe() for c in self.allowed)


def compare(saved: dict[str, Any], current: dict[str, Any]) -> ConfigChanges:
    """`saved`, `current`: configs as `Config.model_dump(mode="json")` gives them (or as config.yaml holds)."""
    old, new = _flatten(saved), _flatten(current)
    changes = [
        Change(key, old.get(key, _ABSENT), new.get(key, _ABSENT))
        for key in sorted(set(old) | set(new))
        if old.get(key, _ABSENT) != new.get(key, _ABSENT) and key not in IGNORED
    ]
    # A switched variant (algorithm.type dpo → sft) changes all its keys: the switch alone says it.
    switched = [c.key[: -len("type")] for c in changes if c.key.endswith(".type")]
    changes = [c for c in changes if not any(c.key.startswith(p) and c.key != p + "type" for p in switched)]
    refused = [c for c in changes if not is_mutable(c.key)]
    return ConfigChanges(refused, [c for c in changes if is_mutable(c.key)])


def is_mutable(key: str) -> bool:
    return any(key == m or key.startswith(m + ".") for m in MUTABLE)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return flat


def _show(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)
