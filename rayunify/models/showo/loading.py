"""Reading and writing a Show-o folder (layout in `showo_factory`), with a clear error for every way a folder
can be incomplete or not match itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rayunify.models.showo.magvit import MAGVITv2, load_strict, read_state_dict
from rayunify.models.showo.sequences import ShowoVocab

REQUIRED_FIELDS = ("vocab_size", "llm_vocab_size", "num_vq_tokens", "mask_token_id", "codebook_size")


class ShowoModule(torch.nn.Module):
    """Every weight of the family: `showo` (Phi with Show-o's vocabulary) and `vq` (MAGVIT-v2, frozen)."""

    def __init__(self, showo: torch.nn.Module, vq: MAGVITv2):
        super().__init__()
        self.showo = showo
        self.vq = vq


@dataclass
class ShowoParts:
    module: ShowoModule
    tokenizer: Any
    vocab: ShowoVocab
    config: dict
    tokenizer_path: Path
    vq_path: Path


def read_showo_config(path: Path) -> dict:
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"model.path={str(path)!r} has no config.json: not a Show-o checkpoint folder"
        )
    config = json.loads(file.read_text())
    if config.get("_class_name") != "Showo":
        raise ValueError(
            f"{file}: _class_name is {config.get('_class_name')!r}, expected 'Showo' (model.type=showo)"
        )
    missing = [k for k in REQUIRED_FIELDS if k not in config]
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)}")
    config.setdefault("mask_token_id", config["vocab_size"] - 1)
    if config.get("w_clip_vit"):
        raise NotImplementedError(
            f"{file}: w_clip_vit=true (Show-o's CLIP-ViT understanding variant) is not supported yet: its judge needs "
            "the CLIP vision tower; use a MAGVIT checkpoint (model.variant=magvit)"
        )
    return config


def load_parts(path: str | Path, tokenizer_path: str | Path | None = None, vq_path: str | Path | None = None,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> ShowoParts:  # fmt: skip
    """config.json + weights from `path`, Phi's config and tokenizer from `tokenizer_path` (default path/llm),
    MAGVIT-v2 from `vq_path` (default path/vq)."""
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    path = Path(path)
    config = read_showo_config(path)
    llm_dir = Path(tokenizer_path) if tokenizer_path else path / "llm"
    vq_dir = Path(vq_path) if vq_path else path / "vq"
    if not (llm_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"model.tokenizer_path={str(llm_dir)!r} has no config.json (Phi-1.5's config and tokenizer)"
        )
    tokenizer = AutoTokenizer.from_pretrained(llm_dir, padding_side="left")
    vocab = ShowoVocab.from_tokenizer(tokenizer, config)
    phi_config = PhiConfig.from_pretrained(llm_dir)
    phi_config.vocab_size = config["vocab_size"]
    state = _backbone_state(path)
    # Phi-1.5's config says qk_layernorm=false; follow the weights if they hold the per-head norms.
    phi_config.qk_layernorm = any(".self_attn.q_layernorm." in k for k in state)
    phi = PhiForCausalLM._from_config(phi_config, attn_implementation="sdpa")
    load_strict(phi, state, f"Show-o weights in {path}")
    vq = MAGVITv2.from_pretrained(vq_dir)
    _check_vq(vq, config, vq_dir)
    module = ShowoModule(phi.to(dtype), vq).to(device).eval()
    return ShowoParts(module, tokenizer, vocab, config, llm_dir, vq_dir)


def _backbone_state(path: Path) -> dict[str, torch.Tensor]:
    state = read_state_dict(path)
    foreign = [k for k in state if not k.startswith("showo.")]
    if foreign:
        raise ValueError(f"Show-o weights in {path} hold keys outside showo.* (e.g. {foreign[0]!r}; mm_projector.* "
                         "belongs to the CLIP variant, which is not supported)")  # fmt: skip
    return {k.removeprefix("showo."): v for k, v in state.items()}


def _check_vq(vq: MAGVITv2, config: dict, vq_dir: Path) -> None:
    tokens = (vq.arch.resolution // vq.arch.downsample) ** 2
    if vq.arch.codebook_size != config["codebook_size"] or tokens != config["num_vq_tokens"]:
        raise ValueError(
            f"MAGVIT-v2 in {vq_dir} gives {tokens} codes of {vq.arch.codebook_size} per image; config.json says "
            f"num_vq_tokens={config['num_vq_tokens']}, codebook_size={config['codebook_size']}"
        )


def save_parts(path: str | Path, module: Any, parts: ShowoParts) -> None:
    """config.json + model.safetensors (showo.*) in `path`, Phi's config and tokenizer in path/llm, MAGVIT-v2
    in path/vq."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(parts.config, indent=1))
    state = {f"showo.{k}": v.detach().contiguous().cpu() for k, v in module.showo.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    module.showo.config.save_pretrained(path / "llm")
    parts.tokenizer.save_pretrained(path / "llm")
    module.vq.save_pretrained(path / "vq")
