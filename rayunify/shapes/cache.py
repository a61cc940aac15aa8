"""The trained ShapesWorld bases on disk: a model directory's layout, and one cached copy per (recipe, seed)."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from rayunify.models.factory import cache_root
from rayunify.shapes.recipe import cache_key, size_config

log = logging.getLogger(__name__)

INFO_FILE = "shapes_base.json"  # written last: its presence marks a complete model directory
EVAL_PROMPTS_FILE = "eval_prompts.jsonl"
TRAIN_PROMPTS_FILE = "train_prompts.jsonl"


def cached_base_dir(size: str = "base", seed: int = 0, progress: bool = True) -> Path:
    """The base model of `size` and `seed`, trained on first use and cached under `cache_root()`.

    Several processes may ask at once (a Ray job's rollout, judge and learner actors start together): a file
    lock lets one train while the others wait, and the model is trained into a temporary directory and
    moved into place atomically, so nobody ever sees half a model.
    """
    from rayunify.shapes import base_training  # which imports this module's file names

    cfg = size_config(size)
    path = cache_root() / f"shapes-{size}-{cache_key(cfg, seed)}"
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
