"""Show-o (Phi backbone, mask-predict over MAGVIT-v2 codes) behind `UnifiedModel`.

- `generate`: MaskGIT sampling with classifier-free guidance. The text prefix (129 positions in Show-o) is
  run once: its rows are causal and never see the image, so its keys and values are the same at every step;
  each step runs only the image block (`<|soi|>` image `<|eoi|>`) over the cached prefix.
- `image_logprobs`: the `trajectory` or `masked` estimator (see `showo_sampling`) under the conditional or
  guided logits; one full forward over prefix + block per evaluated state, with gradients.
- `judge`: the MMU prompt, batched (left-padded, padding-aware positions), prefill then cached greedy decoding.

Guidance follows rayunify's convention for every family: guided = uncond + s · (cond − uncond), which is
Show-o's (1 + w) · cond − w · uncond with w = s − 1 (Show-o's 512 demo: w = 5, i.e. guidance_scale 6).
`SamplingSettings.temperature` is Show-o's masking temperature (the Gumbel noise on confidences); codes are
always drawn from the guided distribution itself, and `top_k` is not part of Show-o's sampler.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from rayunify.models.base import GenerationOutput, UnifiedModel
from rayunify.models.showo.judge import ShowoJudgeMixin
from rayunify.models.showo.loading import ShowoParts, load_parts, save_parts
from rayunify.models.showo.masks import additive, t2i_attention
from rayunify.models.showo.sampling import masked_logprobs, prompt_mask, sample, trajectory_logprobs
from rayunify.models.showo.sequences import ShowoVocab, image_block, t2i_prefixes
from rayunify.types import Geometry, SamplingSettings

Estimator = Literal["trajectory", "masked"]
SHOWO_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]


class PrefixKV:
    """A read-only cache of the text prefix's keys and values: each layer's call returns prefix + the new
    block's keys and values, and stores nothing (the block is recomputed at every sampling step)."""

    def __init__(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        self.layers = list(layers)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.layers[layer_idx]
        return torch.cat([keys, key_states], dim=2), torch.cat([values, value_states], dim=2)


class ShowoUnifiedModel(ShowoJudgeMixin, UnifiedModel):
    def __init__(
        self, parts: ShowoParts, trainable: str = "language_model", lora: Any = None, estimator: Estimator = "trajectory",
        steps: int | None = None, mask_seed: int = 0,
    ):  # fmt: skip
        if estimator not in ("trajectory", "masked"):
            raise ValueError(f"model.logprob_estimator={estimator!r}: choose 'trajectory' or 'masked'")
        self.parts = parts
        self.tokenizer = parts.tokenizer
        self.vocab: ShowoVocab = parts.vocab
        self.num_image_tokens = parts.config["num_vq_tokens"]
        self.max_text_len = parts.config.get("max_text_len", 128)
        self.steps = (
            steps or parts.config.get("default_steps") or (50 if self.num_image_tokens >= 1024 else 18)
        )
        self.estimator: Estimator = estimator
        self.mask_seed = mask_seed
        self.end_of_answer = self.tokenizer.eos_token
        self.peft_model: Any = None
        for name, param in parts.module.named_parameters():
            param.requires_grad_(name.startswith("showo."))  # the backbone trains; MAGVIT-v2 stays frozen
        if trainable == "lora":
            self._add_lora(lora)
        elif trainable != "language_model":
            raise ValueError(f"model.trainable={trainable!r}: choose one of 'language_model', 'lora'")
        self._init_judge()

    @classmethod
    def from_pretrained(cls, path: str | Path, tokenizer_path: str | None = None, vq_path: str | None = None,
                        dtype: torch.dtype = torch.float32, device: str = "cpu", **kwargs) -> ShowoUnifiedModel:  # fmt: skip
        return cls(load_parts(path, tokenizer_path, vq_path, dtype=dtype, device=device), **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        """The public layout (module `showo_loading`); a LoRA adapter is merged into a copy first."""
        module = self.parts.module
        if self.peft_model is not None:
            module = copy.deepcopy(self.peft_model).merge_and_unload()
            self.peft_model.save_pretrained(Path(path) / "adapter")
        save_parts(path, module, self.parts)

    def _add_lora(self, lora: Any) -> None:
        from peft import LoraConfig, get_peft_model

        wanted = list(lora.target_modules) if lora is not None else SHOWO_LORA_TARGETS
        present = {name.rsplit(".", 1)[-1] for name, _ in self.phi.model.layers.named_modules()}
        missing = [t for t in wanted if t not in present]
        if missing:
            raise ValueError(f"model.lora.target_modules: {', '.join(missing)} name no layer of Show-o's Phi backbone "
                             f"(its linear layers: {', '.join(SHOWO_LORA_TARGETS)})")  # fmt: skip
        targets = "|".join(wanted)
        config = LoraConfig(
            r=lora.rank if lora is not None else 16, lora_alpha=lora.alpha if lora is not None else 32,
            lora_dropout=lora.dropout if lora is not None else 0.0, target_modules=rf"showo\.model\.layers\..*\.({targets})",
        )  # fmt: skip
        self.peft_model = get_peft_model(self.parts.module, config)  # injects in place into parts.module

    # ------------------------------------------------------------------ interface basics
    @property
    def device(self) -> torch.device:
        return next(self.parts.module.parameters()).device

    @property
    def phi(self):
        return self.parts.module.showo

    def module(self) -> torch.nn.Module:
        return self.parts.module

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.parts.module.named_parameters() if p.requires_grad]

    def make_reference_copy(self) -> torch.nn.Module | None:
        if self.peft_model is not None:
            return None  # the adapter disabled is the reference
        return copy.deepcopy(self.phi).requires_grad_(False).eval()

    def reference(self, frozen: torch.nn.Module | None = None) -> contextlib.AbstractContextManager[None]:
        if frozen is not None:
            return self._backbone_swapped_for(frozen)
        return self.peft_model.disable_adapter() if self.peft_model is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def _backbone_swapped_for(self, frozen: torch.nn.Module) -> Iterator[None]:
        live = self.parts.module.showo
        self.parts.module.showo = frozen
        try:
            yield
        finally:
            self.parts.module.showo = live

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------------ the backbone on Show-o sequences
    def _prefixes(self, prompts: Sequence[str]) -> torch.Tensor:
        if len(prompts) == 0:
            raise ValueError("prompts is empty: give at least one prompt")
        return t2i_prefixes(self.tokenizer, self.vocab, prompts, self.max_text_len).to(self.device)

    def _code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head restricted to the image codes (Show-o samples only among them)."""
        head = self.phi.lm_head
        lo, hi = self.vocab.code_offset, self.vocab.code_offset + self.vocab.codebook_size
        bias = head.bias[lo:hi] if head.bias is not None else None
        return F.linear(hidden, head.weight[lo:hi], bias).float()

    def full_forward_code_logits(self, prefixes: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(rows, N, K) code logits of one Show-o T2I sequence per row: prefix + block, its 4D mask, positions
        0…L−1, every position recomputed (the training path, and the reference loop of the benchmark)."""
        ids = torch.cat([prefixes, image_block(self.vocab, self.vocab.image_ids(state))], dim=1)
        mask = additive(t2i_attention(ids, self.vocab.pad, self.vocab.soi, self.vocab.eoi), self._dtype)
        positions = torch.arange(ids.shape[1], device=ids.device)[None].expand_as(ids)
        hidden = self.phi.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        start = prefixes.shape[1] + 1
        return self._code_logits(hidden[:, start : start + self.num_image_tokens])

    @property
    def _dtype(self) -> torch.dtype:
        return self.phi.model.embed_tokens.weight.dtype

    def _guided(self, logits_fn, prefixes: torch.Tensor, uncond: torch.Tensor | None, scale: float):
        """A sampler logits function: conditional alone, or uncond + s · (cond − uncond) over twin rows."""
        if uncond is None:
            return lambda state: logits_fn(prefixes, state)
        both = torch.cat([prefixes, uncond])

        def guided(state: torch.Tensor) -> torch.Tensor:
            cond, free = logits_fn(both, torch.cat([state, state])).chunk(2)
            return free + scale * (cond - free)

        return guided

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], n: int = 1, settings: SamplingSettings | None = None,
        seed: int | Sequence[int] | None = None, decode: bool = False, greedy: bool = False,
    ) -> GenerationOutput:  # fmt: skip
        settings = settings or SamplingSettings()
        self._check_settings(settings, n)
        generators = self._generators(seed, len(prompts))
        prefixes = self._prefixes(prompts).repeat_interleave(n, dim=0)
        use_cfg = settings.guidance_scale > 1
        uncond = self._prefixes([""]).expand(prefixes.shape[0], -1) if use_cfg else None
        logits_fn = self._guided(self.cached_code_logits_fn(), prefixes, uncond, settings.guidance_scale)
        path = sample(
            logits_fn,
            prefixes.shape[0],
            self.num_image_tokens,
            self.steps,
            generators,
            settings.temperature,
            greedy,
        )
        images = self.decode_images(path.codes) if decode else None
        return GenerationOutput(
            image_tokens=path.codes, logprobs=path.logprobs, images=images, commit_steps=path.commit_steps
        )

    def _check_settings(self, settings: SamplingSettings, n: int) -> None:
        if settings.guidance_scale < 1:
            raise ValueError(
                f"guidance_scale must be >= 1 (Show-o's w = guidance_scale - 1), got {settings.guidance_scale}"
            )
        if settings.top_k is not None:
            raise ValueError("sampling.top_k: Show-o's mask-predict sampler has no top-k; leave it unset")
        if n < 1:
            raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")

    def cached_code_logits_fn(self):
        """logits_fn(prefixes, state) that runs each distinct prefix once and only the image block per step."""
        cache: dict[str, Any] = {}

        def logits(prefixes: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            if cache.get("prefixes") is None or not torch.equal(cache["prefixes"], prefixes):
                cache["prefixes"], cache["kv"] = prefixes, self._prefill(prefixes)
            return self._block_logits(prefixes, cache["kv"], state)

        return logits

    def _prefill(self, prefixes: torch.Tensor) -> PrefixKV:
        from transformers import DynamicCache

        unique, inverse = torch.unique(prefixes, dim=0, return_inverse=True)  # CFG twins share one prefix
        mask = additive(t2i_attention(unique, self.vocab.pad, self.vocab.soi, self.vocab.eoi), self._dtype)
        positions = torch.arange(unique.shape[1], device=unique.device)[None].expand_as(unique)
        kv = DynamicCache(config=self.phi.config)
        self.phi.model(
            input_ids=unique, attention_mask=mask, position_ids=positions, cache=kv, use_cache=True
        )
        layers: list[Any] = list(kv.layers)
        return PrefixKV([(layer.keys[inverse], layer.values[inverse]) for layer in layers])

    def _block_logits(self, prefixes: torch.Tensor, kv: PrefixKV, state: torch.Tensor) -> torch.Tensor:
        block = image_block(self.vocab, self.vocab.image_ids(state))
        ids = torch.cat([prefixes, block], dim=1)
        mask = t2i_attention(ids, self.vocab.pad, self.vocab.soi, self.vocab.eoi)[:, :, prefixes.shape[1] :]
        positions = torch.arange(prefixes.shape[1], ids.shape[1], device=ids.device)[None].expand_as(block)
        hidden = self.phi.model(
            input_ids=block, attention_mask=additive(mask, self._dtype), position_ids=positions, cache=kv
        ).last_hidden_state
        return self._code_logits(hidden[:, 1 : 1 + self.num_image_tokens])

    def _generators(self, seed: int | Sequence[int] | None, num_prompts: int) -> list[torch.Generator]:
        """One generator per prompt: from the sequence of seeds, or all from one seed (same call, same images)."""
        if isinstance(seed, Sequence):
            if len(seed) != num_prompts:
                raise ValueError(
                    f"{len(seed)} seeds for {num_prompts} prompts: give one seed, or one per prompt"
                )
            seeds = [int(s) for s in seed]
        else:
            base = int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)))
            seeds = [base + 7919 * i for i in range(num_prompts)]
        return [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    @torch.no_grad()
    def decode_images(self, image_tokens: torch.Tensor) -> np.ndarray:
        """Image tokens (MAGVIT-v2 codes) → uint8 RGB (B, H, W, 3) through MAGVIT-v2."""
        codes = image_tokens.to(self.device)
        pixels = self.parts.module.vq.decode_codes(codes).float()
        pixels = ((pixels.clamp(-1, 1) + 1) / 2 * 255).permute(0, 2, 3, 1)
        return pixels.to(torch.uint8).cpu().numpy()  # truncated, as the public demo's astype(uint8)

    # ------------------------------------------------------------------ log-probs for the losses
    def image_logprobs(
        self, prompts: Sequence[str], image_tokens: torch.Tensor, geometry: Geometry = "conditional",
        guidance_scale: float = 5.0, drop_prompt: torch.Tensor | None = None,
        commit_steps: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """(B, N) per-position log-probs under the configured estimator (0 where it scores nothing)."""
        image_tokens = self.checked_image_tokens(prompts, image_tokens, geometry)
        prefixes = self._prefixes(prompts)
        uncond_row = self._prefixes([""])
        if drop_prompt is not None:
            prefixes = torch.where(drop_prompt.to(self.device)[:, None], uncond_row, prefixes)
        use_cfg = geometry == "cfg" and guidance_scale != 1.0
        uncond = uncond_row.expand_as(prefixes) if use_cfg else None
        logits_fn = self._guided(self.full_forward_code_logits, prefixes, uncond, guidance_scale)
        codes = image_tokens
        if self.estimator == "masked":
            mask = torch.stack([prompt_mask(p, self.num_image_tokens, self.mask_seed) for p in prompts]).to(
                self.device
            )
            return masked_logprobs(logits_fn, codes, mask)
        if commit_steps is None:
            raise ValueError("the trajectory estimator needs the commit steps of Show-o's sampler "
                             "(Sample.commit_steps); these tokens came without them: use "
                             "model.logprob_estimator=masked")  # fmt: skip
        return trajectory_logprobs(logits_fn, codes, commit_steps.to(self.device))
