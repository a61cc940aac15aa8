"""Trains the ShapesWorld image tokenizer: transformers' JanusVQVAE, 32x32 RGB <-> 8x8 = 64 tokens.

Janus decodes tokens through L2-normalised codebook entries (`get_codebook_entry`) while its
`quantize.forward` searches unnormalised distances, so `JanusVQVAE.encode` does not invert `decode`. We
therefore train LlamaGen-style with normalised latents *and* codebook (nearest neighbour by cosine,
straight-through gradient, codebook loss + 0.25 x commitment loss) and encode with `encode_tokens`;
`decode_tokens` is plain `vq.decode` (then clamped to [0, 255] as Janus's postprocess does), so a Janus model
that emits our tokens decodes them exactly as in training. Pixels live in [-1, 1], i.e. Janus-Pro's image
processor settings (image_mean = image_std = 0.5; transformers' class default is CLIP's, so set them).

Three choices make a small tokenizer learn fast enough for CPUs (each raised the share of round trips the
checker accepts, measured on the tiny recipe):
- Pixel loss: binary cross-entropy on LOGIT_SCALE x output. Every channel of every ShapesWorld pixel is 0 or
  255, so the decoder may overshoot: the clamp makes confident pixels exact and edges crisp, where an L1/L2
  loss blurs every edge it is unsure of into a rounded blob (small circles and squares become one shape).
- Convolutions keep PyTorch's fan-in init: transformers' N(0, 0.02) is 4x too small for 32-channel convs.
- `num_res_blocks=0`: the encoder keeps only its strided convs and middle block (the decoder still has one
  residual block a level), so a step costs about half. NOTE: a Janus model that loads these weights must
  build its VQ config from this one (`janus_config()`), num_res_blocks included.
Unused codes are re-seeded from the batch's latents every `dead_code_every` steps, so the whole codebook
stays in play.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers.models.janus.configuration_janus import JanusVQVAEConfig
from transformers.models.janus.modeling_janus import JanusVQVAE

from rayunify.shapes.render import render
from rayunify.shapes.world import CATEGORIES, IMAGE_SIZE, all_specs

LOGIT_SCALE = 4.0  # decoder output 1 (white) = logit 4, i.e. probability 0.98


@dataclass(frozen=True)
class VQTrainConfig:
    """Tokenizer shape and training recipe. `len(channel_multiplier) - 1` halvings take 32 px to a grid of
    32 / 2**(len - 1) tokens a side (8 for three levels: 64 tokens of 4x4 px)."""

    base_channels: int = 32  # a multiple of 32: Janus's GroupNorm uses 32 groups
    channel_multiplier: tuple[int, ...] = (1, 1, 2)
    num_res_blocks: int = 0  # per encoder level; the decoder has one more
    latent_channels: int = 64
    embed_dim: int = 8  # code vector size (8 learnt faster than 16 or 32)
    num_embeddings: int = 512  # codebook size = image-token vocabulary
    steps: int = 2400
    batch_size: int = 16  # more small steps beat fewer big ones here
    learning_rate: float = 2e-3
    commitment_beta: float = 0.25
    dead_code_every: int = 50  # steps between re-seeding codes no image used since the last re-seed

    @classmethod
    def tiny(cls) -> VQTrainConfig:
        """For tests: same geometry, a lighter network and a short run; its round trips pass the checker
        far less often than the full recipe's."""
        return cls(latent_channels=32, num_embeddings=256, steps=700, batch_size=8)

    def __post_init__(self) -> None:
        if self.base_channels % 32:
            raise ValueError(
                f"base_channels must be a multiple of 32 (GroupNorm groups), got {self.base_channels}"
            )
        if IMAGE_SIZE % 2 ** (len(self.channel_multiplier) - 1):
            raise ValueError(f"channel_multiplier {self.channel_multiplier} does not divide {IMAGE_SIZE} px")
        # With no encoder blocks nothing widens the channels before Janus's middle block, which expects
        # base_channels * channel_multiplier[-2] of them.
        if self.num_res_blocks == 0 and self.channel_multiplier[-2] != 1:
            raise ValueError("num_res_blocks=0 needs channel_multiplier[-2] == 1, e.g. (1, 1, 2)")

    @property
    def tokens_per_side(self) -> int:
        return IMAGE_SIZE // 2 ** (len(self.channel_multiplier) - 1)

    def janus_config(self) -> JanusVQVAEConfig:
        return JanusVQVAEConfig(
            base_channels=self.base_channels,
            channel_multiplier=list(self.channel_multiplier),
            num_res_blocks=self.num_res_blocks,
            latent_channels=self.latent_channels,
            embed_dim=self.embed_dim,
            num_embeddings=self.num_embeddings,
            num_patches=self.tokens_per_side,
            dropout=0.0,
        )


def images_to_pixels(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def pixels_to_images(pixels: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float -> (B, H, W, 3) uint8; values beyond [-1, 1] (the BCE-trained decoder overshoots
    where it is sure) are clamped."""
    scaled = ((pixels.detach().float() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def normalized_latents(vq: JanusVQVAE, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, T, D) unit-length latents, tokens in row-major order (as `decode` expects)."""
    latents = vq.quant_conv(vq.encoder(pixels))
    return F.normalize(latents.flatten(2).transpose(1, 2), dim=-1)


def normalized_codebook(vq: JanusVQVAE) -> torch.Tensor:
    return F.normalize(vq.quantize.embedding.weight, dim=-1)


def nearest_codes(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Token ids (B, T): for unit vectors the nearest code is the one with the largest dot product."""
    return (latents @ codebook.T).argmax(-1)


def decode_latents(vq: JanusVQVAE, quantized: torch.Tensor) -> torch.Tensor:
    """(B, T, D) code vectors -> pixels; the same path as `vq.decode` after its codebook lookup."""
    side = vq.quantize.quant_state_dims[0]
    grid = quantized.transpose(1, 2).reshape(quantized.shape[0], -1, side, side)
    return vq.decoder(vq.post_quant_conv(grid))


@torch.no_grad()
def encode_tokens(vq: JanusVQVAE, images: np.ndarray) -> torch.Tensor:
    """(B, 32, 32, 3) uint8 -> (B, 64) int64 token ids on the CPU, by normalised nearest neighbour."""
    pixels = images_to_pixels(images).to(vq.device)
    return nearest_codes(normalized_latents(vq, pixels), normalized_codebook(vq)).cpu()


@torch.no_grad()
def decode_tokens(vq: JanusVQVAE, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, 64) token ids -> (B, 32, 32, 3) uint8 images, through Janus's own `decode` (then clamped, as
    Janus's image postprocess does)."""
    ids = torch.as_tensor(tokens, dtype=torch.long, device=vq.device)
    return pixels_to_images(vq.decode(ids).cpu())  # type: ignore[arg-type]  # a long tensor is what LongTensor means


def random_training_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """Images of random prompts, category first (uniformly) so that the few counting scenes with 3-4
    objects are as common as the hundreds of two-object ones."""
    specs_by_category = [all_specs(c) for c in CATEGORIES]
    images = []
    for _ in range(n):
        specs = specs_by_category[rng.integers(len(specs_by_category))]
        images.append(render(specs[rng.integers(len(specs))], rng))
    return np.stack(images)


def train_vq(
    cfg: VQTrainConfig,
    seed: int,
    progress: bool = True,
    device: str = "cpu",
    num_threads: int = 1,
    images: Callable[[int, np.random.Generator], np.ndarray] = random_training_images,
) -> JanusVQVAE:
    """Trains a JanusVQVAE on freshly rendered images and returns it in eval mode, on `device`.

    The same seed gives the same weights on the same device and torch build. Training runs on `num_threads`
    torch threads (restored afterwards): one by default, which makes the result independent of the core
    count and, on a shared machine, is faster than two threads that keep waiting for each other. The
    caller's global torch RNG is left untouched. `images(n, rng)` draws each batch (ShapesWorld v2 passes
    its own world's images)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        return _train(cfg, seed, progress, device, images)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    cfg: VQTrainConfig, seed: int, progress: bool, device: str, images: Callable[[int, np.random.Generator], np.ndarray]
) -> JanusVQVAE:
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vq = JanusVQVAE(cfg.janus_config())
        # transformers initialises every conv with N(0, 0.02), far below fan-in scale for these small convs
        # (a 3x3x32 conv wants ~0.08): signals fade and training crawls. PyTorch's own init trains much faster.
        for module in vq.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.reset_parameters()
    vq.to(device)  # type: ignore[arg-type]
    with torch.no_grad():  # start on the unit sphere the codes live on, like the re-seeded ones
        vq.quantize.embedding.weight.copy_(normalized_codebook(vq))
    vq.train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=cfg.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine_with_warmup(step, cfg.steps))
    used = torch.zeros(cfg.num_embeddings, dtype=torch.bool)
    bar = tqdm(range(cfg.steps), desc="train VQ", disable=not progress)
    for step in bar:
        pixels = images_to_pixels(images(cfg.batch_size, rng)).to(device)
        loss, recon_loss, latents, tokens = _vq_losses(vq, pixels, cfg.commitment_beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        used[tokens.flatten().cpu()] = True
        if (step + 1) % cfg.dead_code_every == 0 and step + 1 < cfg.steps:
            _reseed_unused_codes(vq, used, latents.detach(), rng)
            used.zero_()
        bar.set_postfix(recon=f"{recon_loss.item():.4f}", refresh=False)
    return vq.eval()


def _vq_losses(
    vq: JanusVQVAE, pixels: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """VQ-VAE loss (van den Oord et al. 2017, eq. 3) on unit vectors, with BCE as the reconstruction term:
    BCE(LOGIT_SCALE * x_hat, (x + 1) / 2) + ||sg[z] - e||^2 + beta ||z - sg[e]||^2, and the straight-through
    estimator for the decoder input."""
    latents = normalized_latents(vq, pixels)
    codebook = normalized_codebook(vq)
    tokens = nearest_codes(latents.detach(), codebook.detach())
    # A one-hot matmul rather than codebook[tokens]: indexing's backward scatters with atomic adds, whose
    # order (and so the result) varies between runs.
    quantized = F.one_hot(tokens, codebook.shape[0]).to(codebook.dtype) @ codebook
    codebook_loss = F.mse_loss(quantized, latents.detach())
    commitment_loss = F.mse_loss(latents, quantized.detach())
    straight_through = latents + (quantized - latents).detach()
    reconstruction = decode_latents(vq, straight_through)
    recon_loss = F.binary_cross_entropy_with_logits(reconstruction * LOGIT_SCALE, (pixels + 1) / 2)
    return recon_loss + codebook_loss + beta * commitment_loss, recon_loss, latents, tokens


@torch.no_grad()
def _reseed_unused_codes(
    vq: JanusVQVAE, used: torch.Tensor, latents: torch.Tensor, rng: np.random.Generator
) -> None:
    dead = torch.nonzero(~used).flatten()
    if dead.numel() == 0:
        return
    pool = latents.reshape(-1, latents.shape[-1])
    picks = torch.from_numpy(rng.integers(pool.shape[0], size=dead.numel())).to(pool.device)
    vq.quantize.embedding.weight[dead.to(pool.device)] = pool[picks]


def _cosine_with_warmup(step: int, total: int, warmup: int = 20) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
