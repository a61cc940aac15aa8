"""Janus / Janus-Pro through transformers' `JanusForConditionalGeneration`, behind `UnifiedModel`.

Three hot paths live here, all batched:
- `generate`: our own CFG sampling loop (transformers' `generate(generation_mode="image")` re-prepares
  inputs, masks and processors at every one of its 576 steps; we prefill each prompt once, share that
  KV cache across the n samples, and keep the per-step work to one LM step and one head).
- `judge` (in `judging.py`): greedy answer to the paper's question plus the soft score P("1") read from
  the same logits.
- `image_logprobs`: teacher-forced log-probs of image tokens, conditional or CFG-combined.

Positions are padding-aware (cumulative attention mask), so a prompt's images and scores do not depend
on what else is in its batch; generation and teacher forcing use the same positions.
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

from rayunify.checkpoints import check_model_dir
from rayunify.judges import question
from rayunify.models.base import (
    GenerationOutput,
    LoraSettings,
    UnifiedModel,
    token_positions,
)
from rayunify.models.janus.decoding import KV_BUCKET, EagerDecoder, GraphDecoder
from rayunify.models.janus.judging import JanusJudging
from rayunify.models.janus.kvcache import PreallocatedKV
from rayunify.models.prompt_fit import generation_chats
from rayunify.types import Geometry, SamplingSettings

Trainable = Literal["language_model", "lora"]


class JanusUnifiedModel(JanusJudging, UnifiedModel):
    def __init__(self, model, processor, trainable: Trainable = "language_model", lora: LoraSettings | None = None):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.trainable = trainable
        self.peft_model: Any = None  # the peft wrapper when LoRA is on
        self.model = model
        self._freeze_all_but_language_model()
        if trainable == "lora":
            self._add_lora(lora or LoraSettings())
        elif trainable != "language_model":
            raise ValueError(f"model.trainable={trainable!r}: choose one of 'language_model', 'lora'")
        self.num_image_tokens = model.config.vision_config.num_image_tokens
        self._image_embedding_table: torch.Tensor | None = None
        # auto: CUDA-graph replay of the decode step on GPUs (GraphDecoder), eager steps elsewhere;
        # "static" runs the graph's fixed-shape step without capturing it (to test it on CPU).
        self.decode_mode: Literal["auto", "eager", "static", "graph"] = "auto"
        # KV slots per graph bucket: a graph step reads the cache up to the end of its bucket (0: the whole buffer).
        self.decode_bucket = KV_BUCKET
        lm = self.language_model
        self._lean_decode = all(hasattr(lm, a) for a in ("layers", "norm", "rotary_emb")) and (
            lm.config._attn_implementation in ("sdpa", "eager")
        )
        cfg = model.config.text_config
        self.max_length = cfg.max_position_embeddings
        self.bos_id = self.tokenizer.bos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.end_of_answer = self.tokenizer.eos_token
        self.boi_id = self.tokenizer.convert_tokens_to_ids(self.tokenizer.boi_token)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.answer_prefix_ids, self.one_id, self.zero_id = question.answer_token_ids(encode)

    # ------------------------------------------------------------------ construction, saving
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        trainable: Trainable = "language_model",
        lora: LoraSettings | None = None,
    ) -> JanusUnifiedModel:
        from transformers import JanusForConditionalGeneration, JanusProcessor

        path = check_model_dir(path, family="janus")
        model = JanusForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device)  # type: ignore[arg-type]
        processor = JanusProcessor.from_pretrained(path)
        if "boi_token_id" not in (getattr(model.generation_config, "generation_kwargs", None) or {}):
            from rayunify.models.janus.factory import set_generation_defaults

            set_generation_defaults(model, processor.tokenizer)  # so plain `generate(generation_mode="image")` works
        return cls(model, processor, trainable=trainable, lora=lora)

    def save_pretrained(self, path: str | Path) -> None:
        """Standard HF layout (safetensors + processor); a LoRA adapter is merged into a copy first."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.peft_model is not None:
            merged = copy.deepcopy(self.peft_model).merge_and_unload()
            merged.save_pretrained(path)
            self.peft_model.save_pretrained(path / "adapter")
        else:
            self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    def _freeze_all_but_language_model(self) -> None:
        # The paper trains only the shared LLM backbone; vision encoder, VQ model, aligners and heads stay.
        for name, param in self.model.named_parameters():
            param.requires_grad_(name.startswith("model.language_model."))

    def _add_lora(self, lora: LoraSettings) -> None:
        from peft import LoraConfig, get_peft_model

        names = "|".join(lora.target_modules)
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=rf"model\.language_model\..*\.({names})",
        )
        self.peft_model = get_peft_model(self.model, config)
        # peft wraps in place: self.model keeps pointing at the Janus model, now with LoRA layers injected.

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def language_model(self):
        return self.model.model.language_model

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def module(self) -> torch.nn.Module:
        return self.model

    def make_reference_copy(self) -> torch.nn.Module | None:
        if self.peft_model is not None:
            return None  # the reference is the same weights with the adapter disabled
        return copy.deepcopy(self.language_model).requires_grad_(False).eval()

    def reference(self, frozen: torch.nn.Module | None = None) -> contextlib.AbstractContextManager[None]:
        if frozen is not None:
            return self._language_model_swapped_for(frozen)
        if self.peft_model is None:
            return contextlib.nullcontext()
        return self.peft_model.disable_adapter()

    @contextlib.contextmanager
    def _language_model_swapped_for(self, reference_lm: torch.nn.Module) -> Iterator[None]:
        inner = self.model.model
        live = inner.language_model
        inner.language_model = reference_lm
        try:
            yield
        finally:
            inner.language_model = live

    # ------------------------------------------------------------------ prompts
    def generation_prompt_ids(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids of "<|User|>: {prompt}\\n\\n<|Assistant|>:<begin_of_image>", as transformers builds them."""
        if len(prompts) == 0:
            raise ValueError("prompts is empty: give at least one prompt")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt {i} is empty or not a string: {prompt!r}")
        chats = generation_chats(self.processor, prompts)
        enc = self.processor(text=chats, generation_mode="image", padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        too_long = mask.sum(-1) + self.num_image_tokens > self.max_length
        if too_long.any():
            i = int(too_long.nonzero()[0])
            raise ValueError(
                f"prompt {i} is {int(mask[i].sum())} tokens; with {self.num_image_tokens} image tokens it exceeds "
                f"the model's context of {self.max_length}: {prompts[i][:80]!r}"
            )
        return ids, mask

    def _unconditional_ids(self, ids: torch.Tensor) -> torch.Tensor:
        # As transformers and Janus do: every token but BOS and <begin_of_image> becomes padding.
        keep = (ids == self.bos_id) | (ids == self.boi_id)
        return ids.masked_fill(~keep, self.pad_id)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        settings: SamplingSettings | None = None,
        seed: int | Sequence[int] | None = None,
        decode: bool = False,
        greedy: bool = False,
    ) -> GenerationOutput:
        settings = settings or SamplingSettings()
        if settings.guidance_scale < 1:
            raise ValueError(f"guidance_scale must be >= 1, got {settings.guidance_scale}")
        if n < 1:
            raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
        generator = self._generators(seed, len(prompts))
        ids, mask = self.generation_prompt_ids(prompts)
        use_cfg = settings.guidance_scale > 1
        scale = settings.guidance_scale if use_cfg else 1.0
        if self._image_embedding_side_trains():
            self._image_embedding_table = None  # built from this call's weights, once
        decoder = self._decoder(*self._prefill_for_generation(ids, mask, n, use_cfg), scale)
        rows = ids.shape[0] * n
        tokens = torch.empty(rows, self.num_image_tokens, dtype=torch.long, device=self.device)
        logprobs = torch.empty(rows, self.num_image_tokens, dtype=torch.float32, device=self.device)
        for step in range(self.num_image_tokens):
            logits = decoder.logits()
            next_token = self._pick(logits, settings, generator, greedy, n)
            tokens[:, step] = next_token
            logprobs[:, step] = torch.log_softmax(logits, -1).gather(-1, next_token[:, None]).squeeze(-1)
            if step + 1 < self.num_image_tokens:
                embeds = self._image_token_embeddings(next_token[:, None])
                decoder.advance(torch.cat([embeds, embeds]) if use_cfg else embeds)
        del decoder, logits  # frees the KV cache before the VQ decoder's activations need the memory
        images = self.decode_images(tokens) if decode else None
        return GenerationOutput(image_tokens=tokens, logprobs=logprobs, images=images)

    def _prefill_for_generation(self, ids, mask, n: int, use_cfg: bool) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """One forward over the prompts (and their unconditional twins), then the cache is shared by n samples."""
        from transformers import DynamicCache

        if use_cfg:
            ids = torch.cat([ids, self._unconditional_ids(ids)])
            mask = torch.cat([mask, mask])  # as transformers: the twin keeps the prompt's mask
        embeds = self.model.get_input_embeddings()(ids)
        cache: Any = DynamicCache(config=self.model.config.text_config)  # then a PreallocatedKV when lean
        out = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=token_positions(mask), cache=cache, use_cache=True
        )
        hidden = out.last_hidden_state[:, -1]
        if n > 1:
            cache.batch_repeat_interleave(n)
            hidden = hidden.repeat_interleave(n, dim=0)
            mask = mask.repeat_interleave(n, dim=0)
        if self._lean_decode:
            cache = PreallocatedKV(cache, extra_tokens=self.num_image_tokens)
        return hidden, cache, mask

    def _image_embedding_side_trains(self) -> bool:
        """Whether the image-token embedding or its aligner trains (e.g. base-model training): then the
        table below is stale after every optimizer step. Self-improvement freezes both."""
        inner = self.model.model
        modules = (inner.generation_embeddings, inner.generation_aligner)
        return any(p.requires_grad for m in modules for p in m.parameters())

    def _image_token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generation embeddings of image tokens, from a table built once while embedding + aligner are
        frozen (once per `generate` call while they train)."""
        if self._image_embedding_table is None:
            codebook = torch.arange(self.model.config.vq_config.num_embeddings, device=self.device)
            self._image_embedding_table = self.model.prepare_embeddings_for_image_generation(codebook).detach()
        return self._image_embedding_table[tokens]

    def _decoder(self, hidden, cache, mask, guidance_scale: float):
        mode = self.decode_mode
        if mode == "auto":
            mode = "graph" if self.device.type == "cuda" else "eager"
        if mode in ("graph", "static") and self._lean_decode:
            return GraphDecoder(self, hidden, cache, mask, guidance_scale, capture=mode == "graph", bucket=self.decode_bucket)
        return EagerDecoder(self, hidden, cache, mask, guidance_scale)

    def _decode_layers(self, embeds, attend, positions, cache) -> torch.Tensor:
        """One cached step through the decoder layers, returning the last hidden state (rows, hidden).

        For LLaMA-style stacks we call the layers directly with a ready boolean mask: the generic forward
        rebuilds causal masks and output hooks at every step, which dominates small-batch decoding.
        """
        lm = self.language_model
        hidden = embeds
        rotary = lm.rotary_emb(hidden, position_ids=positions)
        for layer in lm.layers:
            hidden = layer(hidden, attention_mask=attend, position_embeddings=rotary, cache=cache, use_cache=True)
        return lm.norm(hidden)[:, -1]

    def _guided_logits(self, hidden: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Generation-head logits; with CFG (rows [cond; uncond]) the guided uncond + s·(cond − uncond)."""
        logits = self.model.model.generation_head(hidden).float()
        if guidance_scale == 1.0:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    @staticmethod
    def _pick(logits: torch.Tensor, settings: SamplingSettings, generator, greedy: bool, n: int) -> torch.Tensor:
        """Sample one token per row; with one generator per prompt, prompt p's n rows draw from its own."""
        if greedy or settings.temperature == 0:
            return logits.argmax(-1)
        scores = logits / settings.temperature
        if settings.top_k:
            kth = scores.topk(min(settings.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if isinstance(generator, torch.Generator):
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        rows = probs.split(n)  # rows are prompt-major: prompt p owns rows p*n .. p*n+n-1
        return torch.cat([torch.multinomial(r, 1, generator=g) for r, g in zip(rows, generator, strict=True)]).squeeze(-1)

    def _generators(self, seed: int | Sequence[int] | None, num_prompts: int) -> torch.Generator | list[torch.Generator]:
        """One generator for the call (an int or None), or one per prompt (a sequence of seeds)."""
        if isinstance(seed, Sequence):
            if len(seed) != num_prompts:
                raise ValueError(f"{len(seed)} seeds for {num_prompts} prompts: give one seed, or one per prompt")
            return [torch.Generator(device=self.device).manual_seed(int(s)) for s in seed]
        generator = torch.Generator(device=self.device)
        return generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,))))

    @torch.no_grad()
    def decode_images(self, image_tokens: torch.Tensor) -> np.ndarray:
        """VQ tokens → uint8 RGB (B, H, W, 3), undoing the image processor's normalisation."""
        pixels = self.model.decode_image_tokens(image_tokens.to(self.device)).float()
        ip = self.processor.image_processor
        mean = torch.tensor(ip.image_mean, device=pixels.device)
        std = torch.tensor(ip.image_std, device=pixels.device)
        pixels = (pixels * std + mean) * 255.0
        return pixels.round().clamp(0, 255).to(torch.uint8).cpu().numpy()

    # ------------------------------------------------------------------ teacher-forced log-probs
    def image_logprobs(
        self,
        prompts: Sequence[str],
        image_tokens: torch.Tensor,
        geometry: Geometry = "conditional",
        guidance_scale: float = 5.0,
        drop_prompt: torch.Tensor | None = None,
        commit_steps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced log-probs (B, T); `drop_prompt` (B,) bool replaces those prompts by the
        unconditional one (for training the unconditional branch that guidance needs). Janus draws tokens in
        order: `commit_steps` (Show-o's) is not used."""
        image_tokens = self.checked_image_tokens(prompts, image_tokens, geometry)
        ids, mask = self.generation_prompt_ids(prompts)
        if drop_prompt is not None:
            # Classifier-free-guidance training: dropped rows see the unconditional prompt, as sampling does.
            ids = torch.where(drop_prompt.to(self.device)[:, None], self._unconditional_ids(ids), ids)
        use_cfg = geometry == "cfg" and guidance_scale != 1.0
        if use_cfg:
            ids, mask = torch.cat([ids, self._unconditional_ids(ids)]), torch.cat([mask, mask])
            image_tokens_in = torch.cat([image_tokens, image_tokens])
        else:
            image_tokens_in = image_tokens
        prompt_embeds = self.model.get_input_embeddings()(ids)
        image_embeds = self.model.prepare_embeddings_for_image_generation(image_tokens_in[:, :-1])
        embeds = torch.cat([prompt_embeds, image_embeds.to(prompt_embeds.dtype)], dim=1)
        full_mask = F.pad(mask, (0, image_tokens.shape[1] - 1), value=1)
        out = self.language_model(inputs_embeds=embeds, attention_mask=full_mask, position_ids=token_positions(full_mask))
        # The hidden state at <begin_of_image> predicts image token 0, and so on.
        hidden = out.last_hidden_state[:, ids.shape[1] - 1 :]
        logits = self._guided_logits(hidden, guidance_scale if use_cfg else 1.0)
        return torch.log_softmax(logits, -1).gather(-1, image_tokens[..., None]).squeeze(-1)
