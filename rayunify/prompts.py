"""Prompt sources: ShapesWorld's generator, or files (JSONL / TXT). Pure: no torch, ray or deepspeed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rayunify.config import PromptsConfig
from rayunify.types import Prompt


def load_prompts(cfg: PromptsConfig) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval) prompts as the config says; a file source without eval_path evaluates on train."""
    if cfg.source == "shapes":
        from rayunify.shapes.world import generate_prompts

        return generate_prompts(cfg.n_train, cfg.n_eval, seed=cfg.seed)
    assert cfg.path is not None
    train = read_prompt_file(cfg.path)
    evaluation = read_prompt_file(cfg.eval_path) if cfg.eval_path else train[: cfg.n_eval]
    return train[: cfg.n_train], evaluation[: cfg.n_eval]


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """.txt: one prompt per line. .jsonl: objects with "prompt" (and optional "category", "spec")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        prompts = [_jsonl_prompt(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
    else:
        prompts = [_text_prompt(line.strip()) for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompt")
    return prompts


def _text_prompt(text: str, category: str = "default", spec: dict | None = None) -> Prompt:
    prompt_id = hashlib.sha1(text.encode()).hexdigest()[:12]
    return Prompt(prompt_id=prompt_id, text=text, category=category, spec=spec)


def _jsonl_prompt(path: Path, number: int, line: str) -> Prompt:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        raise ValueError(f"{path}:{number}: expected an object with a non-empty string field 'prompt'")
    spec = data.get("spec")
    if spec is not None:
        from rayunify.shapes.world import Spec

        try:
            Spec.from_dict(spec)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: bad spec: {err}") from None
    return _text_prompt(data["prompt"].strip(), str(data.get("category", "default")), spec)
