"""MAGVIT-v2 as Show-o uses it: a VQGAN-style convolutional encoder/decoder around a lookup-free quantizer.

The lookup-free quantizer has no learned codebook: a code is the sign pattern of the `bits`-channel latent
(bit i, most significant first, is 1 where channel i > 0), so 13 bits give 8,192 codes and code → latent is
its ±1 vector. Module and parameter names follow the public checkpoint (`encoder.down.0.block.0.conv1.weight`,
`decoder.up.4.upsample.conv.weight`, `quantize.embedding`, …) so its state dict loads as is. Pixels in [−1, 1].
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MagvitArch:
    """The public model's architecture by default (its constructor takes no arguments)."""

    ch: int = 128
    encoder_ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    encoder_res_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_res_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    attn_resolutions: tuple[int, ...] = (5,)
    resolution: int = 256
    bits: int = 13  # z channels = code bits

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the feature map's positions, with 1×1 convolutions as projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).reshape(b, c, h * w).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as the public model


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: residual blocks (each followed by attention at `attn_resolutions`), then an
    optional `downsample` (encoder) or `upsample` (decoder)."""

    def __init__(self, in_ch: int, out_ch: int, blocks: int, attention: bool):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(in_ch if i == 0 else out_ch, out_ch) for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(blocks if attention else 0))
        self.resample: str | None = None  # the name of the submodule that changes resolution, if any

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h if self.resample is None else getattr(self, self.resample)(h)


class Middle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, arch: MagvitArch):
        super().__init__()
        mults = (1, *arch.encoder_ch_mult)
        self.conv_in = nn.Conv2d(3, arch.ch, 3, padding=1)
        self.down = nn.ModuleList()
        size = arch.resolution
        for i, blocks in enumerate(arch.encoder_res_blocks):
            level = Level(arch.ch * mults[i], arch.ch * mults[i + 1], blocks, size in arch.attn_resolutions)
            if i != len(arch.encoder_res_blocks) - 1:
                level.downsample = Downsample(arch.ch * mults[i + 1])  # the public name
                level.resample = "downsample"
                size //= 2
            self.down.append(level)
        top = arch.ch * mults[-1]
        self.mid = Middle(top)
        self.norm_out = _norm(top)
        self.conv_out = nn.Conv2d(top, arch.bits, 3, padding=1)
        self.quant_conv = nn.Conv2d(arch.bits, arch.bits, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


class Decoder(nn.Module):
    def __init__(self, arch: MagvitArch):
        super().__init__()
        mults = arch.decoder_ch_mult
        levels = len(mults)
        channels = arch.ch * mults[-1]
        size = arch.resolution // 2 ** (levels - 1)
        self.post_quant_conv = nn.Conv2d(arch.bits, arch.bits, 1)
        self.conv_in = nn.Conv2d(arch.bits, channels, 3, padding=1)
        self.mid = Middle(channels)
        ups: list[Level] = []
        for i in reversed(range(levels)):
            level = Level(
                channels, arch.ch * mults[i], arch.decoder_res_blocks[i], size in arch.attn_resolutions
            )
            channels = arch.ch * mults[i]
            if i != 0:
                level.upsample = Upsample(channels)  # the public name
                level.resample = "upsample"
                size *= 2
            ups.insert(0, level)
        self.up = nn.ModuleList(ups)  # index = resolution level, run from the coarsest
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(self.post_quant_conv(z)))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LookupFreeQuantizer(nn.Module):
    embedding: torch.Tensor
    power_vals: torch.Tensor

    def __init__(self, bits: int):
        super().__init__()
        powers = 2 ** torch.arange(bits - 1, -1, -1)
        codes = torch.arange(2**bits)
        self.register_buffer("embedding", ((codes[:, None] // powers) % 2).float() * 2 - 1)  # (K, bits) ±1
        self.register_buffer("power_vals", powers)

    def codes(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, bits, h, w) latent → (B, h·w) codes: the sign bits, most significant first."""
        bits = (latent > 0).long()
        return (bits * self.power_vals[None, :, None, None]).sum(1).flatten(1)

    def latent(self, codes: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, h·w) codes → (B, bits, h, w) ±1 latent (square unless `shape` says otherwise)."""
        side = math.isqrt(codes.shape[-1])
        h, w = shape or (side, side)
        return self.embedding[codes].view(codes.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()


class MAGVITv2(nn.Module):
    def __init__(self, arch: MagvitArch | None = None):
        super().__init__()
        self.arch = arch or MagvitArch()
        self.encoder = Encoder(self.arch)
        self.decoder = Decoder(self.arch)
        self.quantize = LookupFreeQuantizer(self.arch.bits)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.weight.dtype

    @torch.no_grad()
    def encode_codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [−1, 1] → (B, H·W / downsample²) codes. Pixels are cast to the tokenizer's own dtype:
        it need not be the language model's (a real-weights load keeps MAGVIT in float32 under a bf16 Phi)."""
        return self.quantize.codes(self.encoder(pixels.to(self.dtype)))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → (B, 3, H, W) pixels, nominally in [−1, 1], in the tokenizer's dtype."""
        return self.decoder(self.quantize.latent(codes).to(self.dtype))

    # ---------------------------------------------------------------- files
    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(
            json.dumps({"_class_name": "MAGVITv2", "rayunify_arch": asdict(self.arch)}, indent=1)
        )
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MAGVITv2:
        """A directory with config.json and the weights (safetensors or a torch .bin); the public config has
        no architecture fields, so the public architecture is the default."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.vq_path={str(path)!r} has no config.json (expected a MAGVIT-v2 directory)"
            )
        fields = json.loads((path / "config.json").read_text()).get("rayunify_arch", {})
        arch: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        model = cls(MagvitArch(**arch))
        load_strict(model, read_state_dict(path), f"MAGVIT-v2 weights in {path}")
        return model.eval().requires_grad_(False)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every *.safetensors file in `path`, else every *.bin; a clear error when there is neither."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if files:
        return {k: v for f in files for k, v in load_file(str(f)).items()}
    bins = sorted(path.glob("*.bin"))
    if not bins:
        raise FileNotFoundError(f"{path} has no *.safetensors or *.bin weights")
    return {k: v for f in bins for k, v in torch.load(f, map_location="cpu", weights_only=True).items()}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load with every key accounted for: missing or unexpected keys name the first few and fail."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{what} do not match the model: {str(err)[:500]}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (e.g. {', '.join(result.missing_keys[:3])})")
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected (e.g. {', '.join(result.unexpected_keys[:3])})"
        )
    if problems:
        raise ValueError(f"{what} do not match the model: {'; '.join(problems)}")
