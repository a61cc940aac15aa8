"""The trained ShapesWorld bases on disk: a model directory's layout, and one cached copy per (recipe, seed)."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from rayunify.models.base import cache_root
from rayunify.shapes.recipe import cache_key, size_config

log = logging.getLogger(__name__)

# Bases shipped with the package, each under the name its recipe hashes to (`cache_key`): used while the recipe
# is unchanged, so a first `make demo` starts in seconds; any change to the recipe trains a fresh one instead.
SHIPPED = Path(__file__).parent / "shipped"
INFO_FILE = "shapes_base.json"  # written last: its presence marks a complete model directory
EVAL_PROMPTS_FILE = "eval_prompts.jsonl"
TRAIN_PROMPTS_FILE = "train_prompts.jsonl"


def base_dir_name(size: str, seed: int) -> str:
    """The directory name of a base: its size and the hash of the recipe (and seed) that makes it."""
    return f"shapes-{size}-{cache_key(size_config(size), seed)}"


def existing_base_dir(size: str = "base", seed: int = 0) -> Path | None:
    """The base of `size` and `seed` if it is shipped or already cached; None if it would be trained."""
    name = base_dir_name(size, seed)
    for path in (SHIPPED / name, cache_root() / name):
        if (path / INFO_FILE).is_file():
            return path
    return None


def cached_base_dir(size: str = "base", seed: int = 0, progress: bool = True) -> Path:
    """The base model of `size` and `seed`: the shipped one if its recipe is unchanged, else trained on first
    use and cached under `cache_root()`.

    Several processes may ask at once (a Ray job's rollout, judge and learner actors start together): a file
    lock lets one train while the others wait, and the model is trained into a temporary directory and
    moved into place atomically, so nobody ever sees half a model.
    """
    from rayunify.shapes import base_training  # which imports this module's file names

    name = base_dir_name(size, seed)
    if (SHIPPED / name / INFO_FILE).is_file():
        return SHIPPED / name
    path = cache_root() / name
    if (path / INFO_FILE).is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (path / INFO_FILE).is_file():  # someone else may have finished while we waited
                log.info("training the ShapesWorld %s base model (seed %d) into %s", size, seed, path)
                tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    base_training.train_base(tmp, size=size, seed=seed, progress=progress)
                    shutil.rmtree(path, ignore_errors=True)  # a leftover without INFO_FILE is not a model
                    os.replace(tmp, path)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def compare_with_shipped(trained: str | Path, size: str = "base", seed: int = 0) -> dict:
    """A freshly trained base against the shipped one of the same recipe: whether every tensor is identical,
    and otherwise both models' held-out figures side by side (the same prompts, images and checker)."""
    shipped = SHIPPED / base_dir_name(size, seed)
    if not (shipped / INFO_FILE).is_file():
        raise FileNotFoundError(f"no shipped base for size={size} seed={seed} (looked for {shipped})")
    identical = _tensors(shipped) == _tensors(Path(trained))
    report: dict = {"shipped": str(shipped), "trained": str(trained), "identical_weights": identical}
    if not identical:
        report["shipped_eval"], report["trained_eval"] = _held_out_figures(shipped), _held_out_figures(Path(trained))
    return report


def _tensors(model_dir: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {name: t.numpy().tobytes() for name, t in load_file(model_dir / "model.safetensors").items()}


def _held_out_figures(model_dir: Path) -> dict[str, float]:
    from rayunify.config import JanusModelConfig
    from rayunify.evaluation import evaluate
    from rayunify.models import build_model
    from rayunify.shapes.judge import ShapesCheckerJudge
    from rayunify.shapes.world import load_prompts_jsonl
    from rayunify.types import SamplingSettings

    prompts = load_prompts_jsonl(model_dir / EVAL_PROMPTS_FILE)
    model = build_model(JanusModelConfig(path=str(model_dir)))
    result = evaluate(model, prompts, ShapesCheckerJudge(), n_per_prompt=8, settings=SamplingSettings(guidance_scale=3.0))
    return {k: result.report["overall"][k] for k in ("gen_accuracy", "judge_accuracy", "nonunified")}
