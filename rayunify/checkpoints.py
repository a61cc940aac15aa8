"""The one check of a transformers model directory, run before anything loads from it.

What is missing gets named here, not found deep inside transformers after minutes of loading (a
half-downloaded 7B or 72B model is the usual case). The policy's model family and the hf_vlm judge both
call it. Pure: json and pathlib only.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def check_model_dir(
    path: str | Path, *, role: str | None = None, family: str | None = None, complete: bool = True
) -> Path:
    """`path` as a Path, once it holds a config, complete weights, a tokenizer and an image processor.

    `role` names whose directory it is in errors (e.g. "hf_vlm judge"; None: the policy's checkpoint);
    `family`, when given, is the `model_type` its config.json must declare. `complete=False` asks only what a
    dry run needs, config.json and a tokenizer, so a recipe can be checked before the weights are downloaded.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{role + ': ' if role else ''}model directory {path} does not exist")
    missing = _missing_parts(path, complete)
    if missing:
        raise FileNotFoundError(f"incomplete {role or 'checkpoint'} directory {path}: missing {'; '.join(missing)}")
    if family is not None:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type != family:
            raise ValueError(f"{path}/config.json has model_type={model_type!r}; the {family} family needs {family!r}")
    return path


def has_weights(path: str | Path) -> bool:
    return any((Path(path) / f).is_file() for f in WEIGHT_FILES)


def _missing_parts(path: Path, complete: bool) -> list[str]:
    """What a model directory lacks, one readable item per part (weights and image processor only when
    `complete`)."""
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    weights = [f for f in WEIGHT_FILES if (path / f).is_file()]
    if complete and not weights:
        missing.append("weights (one of " + ", ".join(WEIGHT_FILES) + ")")
    for index in (f for f in weights if complete and f.endswith(".index.json")):
        shards = set(json.loads((path / index).read_text()).get("weight_map", {}).values())
        absent = sorted(s for s in shards if not (path / s).is_file())
        if absent:
            missing.append(f"{len(absent)} of the {len(shards)} weight shards in {index} (first: {absent[0]})")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (" + " / ".join(TOKENIZER_FILES) + ")")
    if complete and not any((path / f).is_file() for f in IMAGE_PROCESSOR_FILES):
        missing.append("image processor (" + " / ".join(IMAGE_PROCESSOR_FILES) + ")")
    return missing
