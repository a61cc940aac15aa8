"""Janus's understanding side: the paper's question about an image, answered greedily, with the soft score
P("1") read from the same logits; and the image encoder that base training reuses.

A mixin of `JanusUnifiedModel` (which holds `model`, `processor`, `tokenizer` and the answer's token ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rayunify.judges import question
from rayunify.models.base import TeacherForcedJudge, check_judge_batch, token_positions
from rayunify.models.prompt_fit import judge_texts
from rayunify.types import Judgement


class JanusJudging:
    model: Any  # JanusForConditionalGeneration
    processor: Any
    tokenizer: Any
    answer_prefix_ids: list[int]
    one_id: int
    zero_id: int
    pad_id: int
    eos_id: int
    device: torch.device

    # ------------------------------------------------------------------ judging
    def judge_inputs(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], answers: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Processor inputs for the paper's question about each (image, prompt), optionally with answers."""
        check_judge_batch(images, prompts)
        texts = judge_texts(self.processor, prompts, answers)
        enc = self.processor(text=texts, images=list(images), padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def judge_teacher_forced(self, inputs: dict[str, torch.Tensor], last: int) -> TeacherForcedJudge:
        seen: list[torch.Tensor] = []
        hook = self._vision_model.register_forward_hook(lambda module, args, out: seen.append(out.last_hidden_state))
        try:
            logits = self.model(**inputs, logits_to_keep=last).logits
        finally:
            hook.remove()
        return TeacherForcedJudge(logits=logits, vision_features=seen[-1])

    @torch.no_grad()
    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[str], max_new_tokens: int = 8) -> list[Judgement]:
        """Greedy answer → verdict; P("1") read at the digit position, teacher-forced where the answer strays."""
        enc = self.judge_inputs(images, prompts)
        answers, digit_logits = self._greedy_answer(enc, max_new_tokens)
        strayed = [i for i, d in enumerate(digit_logits) if d is None]
        if strayed:
            forced = self._teacher_forced_digit_logits({k: v[strayed] for k, v in enc.items()})
            for i, logits in zip(strayed, forced, strict=True):
                digit_logits[i] = logits
        return [
            Judgement(verdict=question.parse_verdict(a), score=question.soft_score(*d), answer=a, judge="self")
            for a, d in zip(answers, digit_logits, strict=True)
        ]

    def _greedy_answer(self, enc, max_new_tokens: int):
        from transformers import DynamicCache

        mask = enc["attention_mask"]
        cache = DynamicCache(config=self.model.config.text_config)
        out = self.model(**enc, position_ids=token_positions(mask), cache=cache, use_cache=True, logits_to_keep=1)
        rows = mask.shape[0]
        prefix = self.answer_prefix_ids
        generated: list[list[int]] = [[] for _ in range(rows)]
        digit_logits: list[tuple[float, float] | None] = [None] * rows
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        positions = token_positions(mask)[:, -1:]
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            if step == len(prefix):
                for i in range(rows):
                    if generated[i] == prefix:
                        digit_logits[i] = (float(logits[i, self.one_id]), float(logits[i, self.zero_id]))
            next_token = logits.argmax(-1).masked_fill(done, self.pad_id)
            for i, tok in enumerate(next_token.tolist()):
                if not done[i]:
                    generated[i].append(tok)
            done |= next_token == self.eos_id
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            mask = F.pad(mask, (0, 1), value=1)
            positions = positions + 1
            out = self.model(
                input_ids=next_token[:, None], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
            )
        answers = [self.tokenizer.decode(g, skip_special_tokens=True) for g in generated]
        return answers, digit_logits

    def _teacher_forced_digit_logits(self, enc) -> list[tuple[float, float]]:
        prefix = torch.tensor(self.answer_prefix_ids, device=self.device).expand(enc["input_ids"].shape[0], -1)
        ids = torch.cat([enc["input_ids"], prefix], dim=1)
        mask = F.pad(enc["attention_mask"], (0, prefix.shape[1]), value=1)
        out = self.model(
            input_ids=ids, pixel_values=enc["pixel_values"], attention_mask=mask, position_ids=token_positions(mask), logits_to_keep=1
        )
        logits = out.logits[:, -1].float()
        return [(float(row[self.one_id]), float(row[self.zero_id])) for row in logits]

    # ------------------------------------------------------------------ the image encoder (base training)
    @property
    def _vision_model(self):
        return self.model.model.vision_model

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def vision_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return self._vision_model(pixel_values=pixels.to(self.device)).last_hidden_state

    def vision_features_shape(self) -> tuple[int, int]:
        config = self._vision_model.config
        return config.image_size // config.patch_size, config.hidden_size

    def vision_parameters(self) -> list[torch.nn.Parameter]:
        return list(self._vision_model.parameters())
