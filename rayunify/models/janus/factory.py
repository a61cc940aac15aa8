"""Janus configs we can build without a hub: tiny random models for tests, and the real shapes for timing.

`build_janus(arch, corpus)` returns a random-init `JanusForConditionalGeneration` and a `JanusProcessor`
with an in-process tokenizer and `JanusImageProcessorPil` (no torchvision). `JANUS_PRO_1B` is the real
Janus-Pro-1B architecture (weights random): timings on it are real timings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from rayunify.judges import question
from rayunify.models.base import cache_root
from rayunify.models.janus.tokenizer import IMAGE, JANUS_CHAT_TEMPLATE, train_tokenizer


@dataclass(frozen=True)
class JanusArch:
    """The sizes that matter; everything else takes transformers' Janus defaults."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 512
    vocab_size: int = 512  # target size of the trained tokenizer
    image_size: int = 32  # pixels; also the understanding encoder's input size
    patch_size: int = 8  # understanding patches; image_size // patch_size = VQ grid side
    vision_hidden: int = 32
    vision_layers: int = 1
    vision_heads: int = 2
    vq_embed_dim: int = 8
    vq_codebook: int = 64
    vq_base_channels: int = 32
    vq_channel_multiplier: tuple[int, ...] = (1, 1, 1, 1)  # 2^(len-1) = pixels per token side
    vq_latent_channels: int = 32
    gen_aligner_dim: int = 64

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        return self.grid**2


# Bump when what the factory saves changes, so cached built-in models are rebuilt.
FACTORY_VERSION = 3
TINY = JanusArch()
# Janus-Pro-1B (deepseek-community/Janus-Pro-1B config.json): 24-layer 2048-wide LLaMA, SigLIP-L/16 at 384,
# 16384-entry VQ codebook, 576 image tokens.
JANUS_PRO_1B = JanusArch(
    hidden_size=2048, intermediate_size=5632, num_layers=24, num_heads=16, num_kv_heads=16, max_positions=16384,
    vocab_size=102400, image_size=384, patch_size=16, vision_hidden=1024, vision_layers=24, vision_heads=16,
    vq_embed_dim=8, vq_codebook=16384, vq_base_channels=128, vq_channel_multiplier=(1, 1, 2, 2, 4),
    vq_latent_channels=256, gen_aligner_dim=2048,
)  # fmt: skip
# Janus-Pro-7B: the same vision and VQ parts around a 30-layer 4096-wide LLaMA.
JANUS_PRO_7B = replace(
    JANUS_PRO_1B, hidden_size=4096, intermediate_size=11008, num_layers=30, num_heads=32, num_kv_heads=32,
    gen_aligner_dim=4096,
)  # fmt: skip


def default_corpus() -> list[str]:
    """Text the tiny tokenizer should know as whole words: the judge's question, answers and chat markup."""
    return [
        question.SYSTEM_PROMPT,
        question.JUDGE_QUESTION,
        question.answer_text(question.Verdict.ACCEPT),
        question.answer_text(question.Verdict.REJECT),
        "a photo of a red circle to the left of a blue square",
    ] * 4


def build_processor(arch: JanusArch, corpus: Iterable[str] | None = None, phrases: Iterable[str] = ()):
    from transformers import JanusImageProcessorPil, JanusProcessor

    tokenizer = train_tokenizer(list(corpus or default_corpus()), vocab_size=arch.vocab_size, phrases=phrases)
    image_processor = JanusImageProcessorPil(
        size={"height": arch.image_size, "width": arch.image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=JANUS_CHAT_TEMPLATE,
        use_default_system_prompt=True,
        num_image_tokens=arch.num_image_tokens,
    )


def janus_config(arch: JanusArch, tokenizer=None):
    """The transformers config of `arch`; without a tokenizer (architecture only, e.g. for sizing on the meta
    device) the special-token ids stay unset."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    ids = {} if tokenizer is None else {
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }  # fmt: skip
    text = LlamaConfig(
        vocab_size=max(len(tokenizer or ()), arch.vocab_size),  # the real embedding shape, even if few ids are used
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_positions,
        **ids,
    )
    vision = JanusVisionConfig(
        hidden_size=arch.vision_hidden,
        num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        projection_dim=arch.hidden_size,
        num_image_tokens=arch.num_image_tokens,
    )
    vq = JanusVQVAEConfig(
        embed_dim=arch.vq_embed_dim,
        num_embeddings=arch.vq_codebook,
        base_channels=arch.vq_base_channels,
        channel_multiplier=list(arch.vq_channel_multiplier),
        latent_channels=arch.vq_latent_channels,
        num_res_blocks=1 if arch.hidden_size < 1024 else 2,
        projection_dim=arch.gen_aligner_dim,
        image_token_embed_dim=arch.hidden_size,
    )
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        **({} if tokenizer is None else {"image_token_id": tokenizer.convert_tokens_to_ids(IMAGE)}),
    )


def build_janus(
    arch: JanusArch = TINY, corpus: Iterable[str] | None = None, seed: int = 0, dtype=torch.float32, device="cpu"
):
    """A random-init Janus model and its processor, fully offline and deterministic for a seed."""
    from transformers import JanusForConditionalGeneration

    processor = build_processor(arch, corpus)
    config = janus_config(arch, processor.tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):  # initialise where it will run: a 1B model inits in seconds on a GPU
        model = JanusForConditionalGeneration(config).to(dtype)
    set_generation_defaults(model, processor.tokenizer)
    model.eval()
    return model, processor


def set_generation_defaults(model, tokenizer, guidance_scale: float = 5.0) -> None:
    """What transformers' image generation reads from the generation config (boi id, pad, guidance)."""
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.bos_token_id = tokenizer.bos_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.guidance_scale = guidance_scale
    gc.generation_kwargs = {"boi_token_id": tokenizer.convert_tokens_to_ids(tokenizer.boi_token)}
    # Marked as our own settings: transformers re-derives (and drops generation_kwargs from) configs that
    # say they came from the model config.
    gc._from_model_config = False


def arch_dict(arch: JanusArch) -> dict:
    return asdict(arch)


def cached_tiny_dir(arch: JanusArch = TINY, seed: int = 0) -> Path:
    """A saved tiny random Janus (HF layout), keyed by a hash of its architecture and seed."""
    key = hashlib.sha256(json.dumps([arch_dict(arch), seed, FACTORY_VERSION], sort_keys=True).encode()).hexdigest()[:12]
    path = cache_root() / f"tiny-{key}"
    if not (path / "config.json").is_file():
        model, processor = build_janus(arch, seed=seed)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        os.replace(tmp, path) if not path.exists() else shutil.rmtree(tmp)
    return path
