"""What the preflight checks and the dry run need to know about a Show-o run, without loading weights.

`check_showo_model` answers for `model.type=showo`: an architecture (`builtin:showo-512-shape`), a built-in
model, or a Show-o folder (config.json, Phi's config and tokenizer, MAGVIT-v2's config; and the weights unless
a dry run). `showo_model_shape` counts parameters on the meta device for the memory estimate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayunify import builtins
from rayunify.models.showo.factory import ShowoArch
from rayunify.models.showo.loading import read_showo_config
from rayunify.models.showo.magvit import MagvitArch

WEIGHT_SUFFIXES = ("*.safetensors", "*.bin")


def check_showo_model(cfg: Any, need_weights: bool) -> tuple[str, ShowoArch | None]:
    """(description, architecture or None for a built-in whose architecture is its own business)."""
    path = cfg.model.path
    arch = builtins.builtin_architecture(path)
    if arch is not None:
        if need_weights:
            builtins.builtin_model(path)  # raises: an architecture alone cannot train
        if not isinstance(arch, ShowoArch):
            raise ValueError(f"model.path={path!r} is a Janus architecture; model.type=showo needs a Show-o one")
        return f"{path} (architecture only, random weights on the meta device)", arch
    if builtins.is_builtin(path):
        return f"{path}: {builtins.builtin_model(path).description}", None
    return _check_folder(Path(path), cfg.model.tokenizer_path, cfg.model.vq_path, need_weights)


def _check_folder(path: Path, tokenizer_path: str | None, vq_path: str | None, need_weights: bool):
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    config = read_showo_config(path)
    llm = Path(tokenizer_path) if tokenizer_path else path / "llm"
    vq = Path(vq_path) if vq_path else path / "vq"
    missing = [str(p) for p in (llm / "config.json", vq / "config.json") if not p.is_file()]
    if not any((llm / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        missing.append(f"{llm}/tokenizer files")
    weighted = {d: any(d.glob(s) for s in WEIGHT_SUFFIXES) for d in (path, vq)}
    if need_weights:
        missing += [f"{d}/*.safetensors (weights)" for d, present in weighted.items() if not present]
    if missing:
        raise FileNotFoundError(f"incomplete Show-o folder {path}: missing {'; '.join(missing)}")
    arch = _folder_arch(config, json.loads((llm / "config.json").read_text()), json.loads((vq / "config.json").read_text()))
    note = "weights present" if all(weighted.values()) else "no weights: enough for a dry run"
    return f"{path} (Show-o, {config['num_vq_tokens']} image tokens; {note})", arch


def _folder_arch(config: dict, phi: dict, vq: dict) -> ShowoArch:
    fields = vq.get("rayunify_arch", {})
    magvit = MagvitArch(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    return ShowoArch(
        hidden_size=phi["hidden_size"], intermediate_size=phi["intermediate_size"], num_layers=phi["num_hidden_layers"],
        num_heads=phi["num_attention_heads"], max_positions=phi.get("max_position_embeddings", 2048),
        qk_layernorm=phi.get("qk_layernorm", False), text_vocab_size=config["llm_vocab_size"],
        max_text_len=config.get("max_text_len", 128), magvit=magvit,
        default_steps=config.get("default_steps") or (50 if config["num_vq_tokens"] >= 1024 else 18),
    )  # fmt: skip


def showo_model_shape(cfg: Any, arch: ShowoArch) -> Any:
    """Parameter counts from Phi + MAGVIT-v2 built on the meta device."""
    import torch
    from transformers import PhiForCausalLM

    from rayunify.models.showo.factory import phi_config, showo_config
    from rayunify.models.showo.magvit import MAGVITv2
    from rayunify.sizing import ModelShape

    vocab = showo_config(arch, arch.text_vocab_size)["vocab_size"]
    with torch.device("meta"):
        phi = PhiForCausalLM(phi_config(arch, vocab))
        vq = MAGVITv2(arch.magvit)
    phi_params = sum(p.numel() for p in phi.parameters())
    return ModelShape(
        total_params=phi_params + sum(p.numel() for p in vq.parameters()),
        language_model_params=phi_params,
        trainable_params=_lora_params(phi, cfg) if cfg.model.trainable == "lora" else phi_params,
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_kv_heads=arch.num_heads,
        head_dim=arch.hidden_size // arch.num_heads,
        num_image_tokens=arch.num_image_tokens,
        prompt_tokens=arch.max_text_len + 3,
    )


def _lora_params(phi: Any, cfg: Any) -> int:
    import torch

    targets = set(cfg.model.lora.target_modules)
    return sum(
        cfg.model.lora.rank * (m.in_features + m.out_features)
        for name, m in phi.model.layers.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    )


def estimator_note(cfg: Any, arch: ShowoArch) -> str:
    """What the log-prob estimator costs the learner (the memory estimate assumes one forward per sequence)."""
    if cfg.model.logprob_estimator == "masked":
        return "log-probs: masked estimator, one forward per sequence"
    steps = cfg.model.steps or arch.default_steps
    return (
        f"log-probs: trajectory estimator, {steps} forwards per sequence (activations kept for each: about "
        f"{steps}x the estimate below; model.logprob_estimator=masked takes one)"
    )
