"""The ShapesWorld base model's recipe: its architecture, data mix and training settings, the named sizes,
the prompt split it trains on, and the key its cached copies are filed under.

Train and eval prompts split ShapesWorld's meanings 2 : 1 with `prompt_seed` 0, as `configs/shapes/*.yaml`
do (n_train 192, n_eval 96): any `generate_prompts(2k, k, seed=0)` eval list is held out from the base
model's training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from rayunify.models.janus.factory import JanusArch
from rayunify.shapes.vq import VQTrainConfig
from rayunify.shapes.world import IMAGE_SIZE, held_out_split
from rayunify.types import Prompt

# Bump when training or saving changes, so cached base models are retrained.
BASE_VERSION = 4

# UnderstandingMix's sources in the order the batch draws them (new ones go last: appending a zero share
# leaves numpy's draws, and so every base trained before, unchanged).
MIX_SOURCES = ("clean", "corrupted", "one_attribute_away", "random_prompt", "own", "opposite_relation")


@dataclass(frozen=True)
class UnderstandingMix:
    """Where the judge's training images come from. Each understanding batch is half accepted, half
    rejected images (by the checker); these are the shares of the candidate sources."""

    clean: float = 0.3  # VQ reconstruction of a render of the prompt (nearly always accepted)
    corrupted: float = 0.35  # the same, with some tokens replaced (random codes or a block of another image)
    one_attribute_away: float = 0.25  # a render of a spec that differs in one attribute
    random_prompt: float = 0.1  # a render of a random other prompt
    own: float = 0.6  # the model's own recent samples (once there are some; see BaseConfig.own_*)
    # A render of a relation prompt's two objects in each other's places (the opposite relation), the
    # generator's commonest position mistake and the one its judge missed most; other prompts draw a
    # one-attribute-away spec instead.
    opposite_relation: float = 0.0
    # True: own samples enter the half-accepted, half-rejected balance like every other source. False: own
    # rows keep the rate at which the model's images are right, so the judge learns how often its own
    # generator fails (the prior it faces when it judges its own images); the other rows stay balanced.
    own_balanced: bool = True
    # How one_attribute_away negatives are drawn: each kind of change equally often (True) or each changed
    # spec equally often (False), see one_attribute_away.
    negatives_by_kind: bool = False
    max_corrupted_tokens: int = 10  # replace 1..this many of the 64 tokens


@dataclass(frozen=True)
class BaseConfig:
    """The base model and its training recipe. Steps, not wall-clock time, set the length, so a seed gives
    the same model whatever the machine's load."""

    arch: JanusArch
    vq: VQTrainConfig
    steps: int = 1500
    gen_batch: int = 24  # images per step for the generation loss
    und_batch: int = 32  # (image, prompt, verdict) examples per step for the understanding loss
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    prompt_dropout: float = 0.1  # classifier-free guidance: share of generation rows trained without prompt
    und_weight: float = 1.0  # understanding loss (per-example sum over answer tokens) vs mean image-token NLL
    caption_weight: float = 1.0  # loss on the prompt's words in the question, for accepted images only
    fan_in_init: bool = True  # re-initialise linear and conv layers at PyTorch's fan-in scale
    # The model's own samples as judge training images (mix.own), drawn as evaluation draws them
    # (guidance_scale, temperature 1): from own_start x steps on, own_batch new ones every own_every steps.
    own_start: float = 0.15
    own_every: int = 5
    own_batch: int = 16
    own_buffer: int = 256  # the most recent samples kept
    # The vision tower's own objective (see PatchProbe): alone for vision_pretrain_steps before the joint
    # steps, then added to every joint step's loss with weight patch_weight.
    vision_pretrain_steps: int = 400
    patch_weight: float = 1.0
    mix: UnderstandingMix = field(default_factory=UnderstandingMix)
    # Share of generation rows whose image shows a spec one attribute away from its prompt, as web alt-text
    # misdescribes images: the gap of a real unified model comes from generation data this noisy, while
    # the judge's labels here stay exact. 0 for the default base (perfect renders, nothing for the model's
    # own filtered samples to add); see SIZES["noisy"].
    caption_noise: float = 0.0
    # Sampling weight of each category (CATEGORIES order) for training prompts: the hard, numerous
    # two-object categories get most of the data, the easy ones enough to be learnt.
    category_weights: tuple[float, ...] = (0.08, 0.14, 0.08, 0.14, 0.28, 0.28)
    n_train_prompts: int = 1044  # every train-side text of the 2:1 split
    n_eval_prompts: int = 96
    prompt_seed: int = 0
    guidance_scale: float = 3.0  # saved as the model's default; `rayunify eval` uses 3 as well
    threads: int = 2  # torch CPU threads while training (results depend on it)
    # Which ShapesWorld the base draws, judges and trains on: "v1" (`world`) or "v2" (`world_v2`). A v2 base
    # trains on v2's train split (every text) and keeps `n_eval_prompts` validation texts as its eval list.
    world: str = "v1"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def arch_for(vq: VQTrainConfig, hidden_size: int, num_layers: int, vision_hidden: int, vision_layers: int) -> JanusArch:
    """A JanusArch for 32x32 ShapesWorld images whose grids and VQ fields match the tokenizer `vq`:
    understanding patches of 4x4 px (8x8 = 64) line up with the 64 image tokens."""
    return JanusArch(
        hidden_size=hidden_size, intermediate_size=3 * hidden_size, num_layers=num_layers, num_heads=4,
        num_kv_heads=4, max_positions=256, vocab_size=512, image_size=IMAGE_SIZE,
        patch_size=IMAGE_SIZE // vq.tokens_per_side, vision_hidden=vision_hidden, vision_layers=vision_layers,
        vision_heads=2, vq_embed_dim=vq.embed_dim, vq_codebook=vq.num_embeddings, vq_base_channels=vq.base_channels,
        vq_channel_multiplier=vq.channel_multiplier, vq_latent_channels=vq.latent_channels,
        gen_aligner_dim=hidden_size,
    )  # fmt: skip


_BASE_VQ = VQTrainConfig()
_TEST_VQ = dataclasses.replace(VQTrainConfig.tiny(), steps=300)
SIZES: dict[str, BaseConfig] = {
    "base": BaseConfig(arch=arch_for(_BASE_VQ, 128, 4, 64, 2), vq=_BASE_VQ),
    # The base trained on noisy captions: half its generation rows' images are one attribute away from the
    # prompt. Its generation is weak because its data is, while its judge learns from exact labels: the
    # situation the paper's method is for (see README, "Where self-supervision has something to add").
    "noisy": BaseConfig(arch=arch_for(_BASE_VQ, 128, 4, 64, 2), vq=_BASE_VQ, caption_noise=0.5),
    # ShapesWorld v2 (docs/shapes-v2.md): v1's recipe on v2's train split, every text of it, for 2,000 steps
    # (the best of the recipes tried on the validation split).
    "v2": BaseConfig(
        arch=arch_for(_BASE_VQ, 128, 4, 64, 2), vq=_BASE_VQ, world="v2", n_train_prompts=100_000, steps=2000
    ),
    # For tests: the same pipeline in well under two minutes; the model is not meant to be good.
    "test": BaseConfig(
        arch=arch_for(_TEST_VQ, 64, 2, 32, 1),
        vq=_TEST_VQ,
        steps=30,
        vision_pretrain_steps=10,
        gen_batch=8,
        und_batch=8,
        warmup=5,
        n_train_prompts=96,
        n_eval_prompts=16,
    ),
}
SIZES["v2-test"] = dataclasses.replace(SIZES["test"], world="v2")


def size_config(size: str) -> BaseConfig:
    if size not in SIZES:
        raise ValueError(f"unknown ShapesWorld base size {size!r}; choose one of: {', '.join(SIZES)}")
    return SIZES[size]


def split_prompts(cfg: BaseConfig) -> tuple[list[Prompt], list[Prompt]]:
    """Train and eval prompts: v1's 2 : 1 split of meanings (`held_out_split`), or v2's train split (every
    text, or the first `n_train_prompts` in turn by category when that is fewer) and validation texts."""
    if cfg.world == "v1":
        return held_out_split(cfg.n_train_prompts, cfg.n_eval_prompts, cfg.prompt_seed)
    from rayunify.shapes.splits_v2 import prompt_split_v2, split_pools_v2

    n_train = min(cfg.n_train_prompts, sum(map(len, split_pools_v2("train", cfg.prompt_seed).values())))
    return prompt_split_v2(n_train, cfg.n_eval_prompts, cfg.prompt_seed, eval_split="validation")


def cache_key(cfg: BaseConfig, seed: int) -> str:
    recipe = cfg.to_dict()
    if recipe["world"] == "v1":
        del recipe["world"]  # added with v2: v1 recipes keep the key (and the shipped base its directory)
    payload = json.dumps([recipe, seed, BASE_VERSION], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
