"""The base model's training objectives beyond image-token NLL: the judge's answer and caption loss, the
vision tower's patch objective, and the learning-rate schedule. Both losses reach the model only through
the `UnifiedModel` interface."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rayunify.judges import question
from rayunify.models.base import UnifiedModel
from rayunify.shapes.checker import perceive_batch
from rayunify.shapes.world import COLOURS, IMAGE_SIZE, SHAPES
from rayunify.types import Verdict


class PatchProbe:
    """The vision tower's own objective, standing in for the image-text pretraining a real Janus's SigLIP
    encoder comes with: a linear head on the tower's output predicts, for each understanding patch, the
    colour and the shape of the object the checker sees over it (or background). The head is discarded
    after training; the saved model is a plain Janus.

    Why: with the judge's one-bit answer and the caption as the only signals reaching the tower, the judge
    stayed at chance on held-out renders for hundreds of steps; with this loss (and the tower pretrained on
    it) it tells matching prompts from random and from one-attribute-away ones early on (see README).
    """

    def __init__(self, um: UnifiedModel):
        self.um = um
        self.grid, width = um.vision_features_shape()
        self.colours = {c: i + 1 for i, c in enumerate(COLOURS)}  # 0: background
        self.shapes = {s: i + 1 for i, s in enumerate(SHAPES)}  # 0: background, len+1: a blob of no shape
        n_classes = (len(self.colours) + 1) + (len(self.shapes) + 2)  # colour classes, then shape classes
        self.head = torch.nn.Linear(width, n_classes).to(um.device)

    def loss_on(self, images: list[np.ndarray]) -> torch.Tensor:
        """Runs the tower alone on `images` and returns the patch loss."""
        return self.loss(self.um.vision_features(images), images)

    def loss(self, features: torch.Tensor, images: list[np.ndarray]) -> torch.Tensor:
        """The patch loss on the tower's `features` (B, patches, width) of `images`."""
        if len(features) != len(images):
            raise RuntimeError(f"PatchProbe: features of {len(features)} images for {len(images)} images")
        colour, shape = (t.to(self.um.device) for t in self.targets(images))
        logits = self.head(features).flatten(0, 1)
        n_colour = len(self.colours) + 1
        cross_entropy = torch.nn.functional.cross_entropy
        return cross_entropy(logits[:, :n_colour], colour.flatten()) + cross_entropy(logits[:, n_colour:], shape.flatten())

    def targets(self, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(colour, shape) class per patch, row-major: those of the object whose bounding box covers the
        patch (the smaller object where boxes overlap), as the checker perceives it."""
        cell = IMAGE_SIZE // self.grid
        colour = np.zeros((len(images), self.grid, self.grid), np.int64)
        shape = np.zeros_like(colour)
        for i, objects in enumerate(perceive_batch(np.stack(images))):
            for obj in sorted(objects, key=lambda o: -o.area):
                x0, y0, w, h = obj.box
                rows, cols = slice(y0 // cell, (y0 + h - 1) // cell + 1), slice(x0 // cell, (x0 + w - 1) // cell + 1)
                colour[i, rows, cols] = self.colours.get(obj.colour, 0)
                shape[i, rows, cols] = self.shapes.get(obj.shape, len(self.shapes) + 1)
        return torch.from_numpy(colour.reshape(len(images), -1)), torch.from_numpy(shape.reshape(len(images), -1))


@dataclass
class JudgeLosses:
    answer: torch.Tensor  # summed over the answer's tokens, mean over examples
    caption: torch.Tensor  # mean over the prompt's tokens of accepted examples
    accuracy: torch.Tensor  # of the digit, no gradient
    vision_features: torch.Tensor  # the vision tower's output in the same forward (for the patch loss)


class JudgeLoss:
    """Teacher-forced loss of the judge's answer (" The score is 1/0" + EOS) to the paper's question, plus
    a caption loss on the prompt's words inside the question for accepted images.

    The answer loss is summed over its tokens (so the one informative token, the digit, has full weight)
    and averaged over examples. The caption loss is free (same forward) and dense: where the image shows
    the prompt, each of its words is predictable from the image, which teaches the model to read colours,
    shapes, counts and places far faster than one bit per example does.
    """

    def __init__(self, um: UnifiedModel):
        self.um = um
        answers = {v: um.tokenize(self._answer(v)) for v in Verdict if v != Verdict.INVALID}
        self.n_answer = len(answers[Verdict.ACCEPT])
        if len(answers[Verdict.REJECT]) != self.n_answer:
            raise ValueError("the two judge answers must have the same token length")
        # Everything after the prompt in the judge sequence is fixed text of a fixed length.
        probe = "a circle"
        blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        enc = um.judge_inputs([blank], [probe], [self._answer(Verdict.ACCEPT)])
        row, words = enc["input_ids"][0].tolist(), self._prompt_ids(probe)
        ends = [i + len(words) for i in range(len(row) - len(words) + 1) if row[i : i + len(words)] == words]
        self.suffix = len(row) - ends[-1]

    def _answer(self, verdict: Verdict) -> str:
        return question.answer_text(verdict) + self.um.end_of_answer

    def _prompt_ids(self, text: str) -> list[int]:
        # As `question.judge_question` writes it, after "describe"; byte-level BPE splits at the spaces.
        return self.um.tokenize(" " + text.strip().rstrip("."))

    def __call__(self, images, prompts, verdicts) -> JudgeLosses:
        enc = self.um.judge_inputs(images, prompts, [self._answer(v) for v in verdicts])
        words = [self._prompt_ids(p) for p in prompts]
        keep = self.suffix + max(map(len, words)) + 1
        forward = self.um.judge_teacher_forced(enc, last=keep)
        logits = forward.logits[:, :-1].float()
        targets = enc["input_ids"][:, -(keep - 1) :]
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        answer_loss = per_token[:, -self.n_answer :].sum(-1).mean()
        caption = torch.zeros_like(per_token, dtype=torch.bool)
        end = per_token.shape[1] - self.suffix
        for i, (w, verdict) in enumerate(zip(words, verdicts, strict=True)):
            if verdict == Verdict.ACCEPT:
                caption[i, end - len(w) : end] = True
                if targets[i, end - len(w) : end].tolist() != w:
                    raise RuntimeError(f"prompt tokens not where expected in the judge sequence: {prompts[i]!r}")
        caption_loss = per_token[caption].mean() if caption.any() else per_token.sum() * 0.0
        with torch.no_grad():
            digit = -2  # "... is", [digit], EOS
            accuracy = (logits[:, digit].argmax(-1) == targets[:, digit]).float().mean()
        return JudgeLosses(answer_loss, caption_loss, accuracy, forward.vision_features)


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 5%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
