"""Show-o's understanding branch as rayunify's self-judge: the paper's question about an image in Show-o's MMU
prompt, batched. Images go through MAGVIT-v2 to codes; rows are left-padded with padding-aware positions (a
row reads exactly as it would alone, where Show-o's positions start at 0); the mask is causal plus the whole
image block. Prefill, then cached greedy decoding; the soft score P("1") is read from the same logits at the
digit position, teacher-forced where the greedy answer strays from "The score is"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from rayunify.judges import question
from rayunify.models.base import TeacherForcedJudge, check_judge_batch, token_positions
from rayunify.models.showo.masks import additive, mmu_attention
from rayunify.models.showo.sequences import ShowoVocab, mmu_sequences
from rayunify.types import Judgement


class ShowoJudgeMixin:
    if TYPE_CHECKING:  # provided by ShowoUnifiedModel
        parts: Any
        vocab: ShowoVocab
        tokenizer: Any
        @property
        def phi(self) -> Any: ...

        @property
        def _dtype(self) -> torch.dtype: ...

        @property
        def device(self) -> torch.device: ...

        def tokenize(self, text: str) -> list[int]: ...

    def _init_judge(self) -> None:
        self.answer_prefix_ids, self.one_id, self.zero_id = question.answer_token_ids(self.tokenize)

    def image_codes(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 (H, W, 3) images → MAGVIT-v2 codes (B, N). Images of another size are resized as Show-o's
        image_transform does (shorter side to the tokenizer's resolution, bicubic, then a centre crop)."""
        side = self.parts.module.vq.arch.resolution
        pixels = torch.as_tensor(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        height, width = pixels.shape[-2:]
        if (height, width) != (side, side):
            scale = side / min(height, width)
            size = (max(side, round(height * scale)), max(side, round(width * scale)))
            pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            top, left = (size[0] - side) // 2, (size[1] - side) // 2
            pixels = pixels[..., top : top + side, left : left + side]
        return self.parts.module.vq.encode_codes(pixels * 2 - 1)  # MAGVIT casts to its own dtype

    def judge_inputs(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], answers: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        check_judge_batch(images, prompts)
        questions = [question.judge_question(p) for p in prompts]
        ids, valid, block_end = mmu_sequences(
            self.tokenizer, self.vocab, self.image_codes(images).cpu(), questions, answers
        )
        return {
            "input_ids": ids.to(self.device),
            "valid": valid.to(self.device),
            "block_end": block_end.to(self.device),
        }

    def _mmu_forward(self, inputs: dict[str, torch.Tensor], cache=None, last: int = 1):
        mask = additive(mmu_attention(inputs["valid"], inputs["block_end"]), self._dtype)
        return self.phi(
            input_ids=inputs["input_ids"], attention_mask=mask, position_ids=token_positions(inputs["valid"]),
            cache=cache, use_cache=cache is not None, logits_to_keep=last,
        )  # fmt: skip

    def judge_teacher_forced(self, inputs: dict[str, torch.Tensor], last: int) -> TeacherForcedJudge:
        raise NotImplementedError(
            "Show-o's judge is not trained from scratch here (no base training for this family)"
        )

    @torch.no_grad()
    def judge(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], max_new_tokens: int = 8
    ) -> list[Judgement]:
        inputs = self.judge_inputs(images, prompts)
        answers, digit_logits, _ = self._greedy_answer(inputs, max_new_tokens)
        strayed = [i for i, d in enumerate(digit_logits) if d is None]
        if strayed:
            forced = self.teacher_forced_digit_logits(
                [images[i] for i in strayed], [prompts[i] for i in strayed]
            )
            for i, logits in zip(strayed, forced, strict=True):
                digit_logits[i] = logits
        return [
            Judgement(
                verdict=question.parse_verdict(a), score=question.soft_score(*d), answer=a, judge="self"
            )
            for a, d in zip(answers, digit_logits, strict=True)
        ]

    @torch.no_grad()
    def _greedy_answer(self, inputs: dict[str, torch.Tensor], max_new_tokens: int):
        """Greedy answers (text), (logit "1", logit "0") where the answer began with the prefix, and token ids."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.phi.config)
        logits = self._mmu_forward(inputs, cache).logits[:, -1].float()
        valid, rows = inputs["valid"], inputs["valid"].shape[0]
        generated: list[list[int]] = [[] for _ in range(rows)]
        digit_logits: list[tuple[float, float] | None] = [None] * rows
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        positions = token_positions(valid)[:, -1:]
        for step in range(max_new_tokens):
            if step == len(self.answer_prefix_ids):
                for i in range(rows):
                    if generated[i] == self.answer_prefix_ids:
                        digit_logits[i] = (float(logits[i, self.one_id]), float(logits[i, self.zero_id]))
            next_token = logits.argmax(-1).masked_fill(done, self.vocab.pad)
            for i, tok in enumerate(next_token.tolist()):
                if not done[i]:
                    generated[i].append(tok)
            done |= next_token == self.vocab.eos
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            valid = F.pad(valid, (0, 1), value=True)
            positions = positions + 1
            mask = additive(valid[:, None, None, :], self._dtype)  # the new token sees every real key
            out = self.phi(
                input_ids=next_token[:, None],
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1].float()
        answers = [self.tokenizer.decode(g, skip_special_tokens=True) for g in generated]
        return answers, digit_logits, generated

    @torch.no_grad()
    def teacher_forced_digit_logits(
        self, images: Sequence[np.ndarray], prompts: Sequence[str]
    ) -> list[tuple[float, float]]:
        """(logit "1", logit "0") after the question followed by the answer prefix, in one forward."""
        inputs = self.judge_inputs(images, prompts)
        prefix = torch.tensor(self.answer_prefix_ids, device=self.device).expand(
            inputs["input_ids"].shape[0], -1
        )
        forced = {
            "input_ids": torch.cat([inputs["input_ids"], prefix], dim=1),
            "valid": F.pad(inputs["valid"], (0, prefix.shape[1]), value=True),
            "block_end": inputs["block_end"],
        }
        logits = self._mmu_forward(forced).logits[:, -1].float()
        return [(float(row[self.one_id]), float(row[self.zero_id])) for row in logits]
