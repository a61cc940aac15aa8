"""hf_vlm: any transformers vision-language model from a local directory, asked the paper's question.

For example Qwen2.5-VL as the guard's reference, as the paper's external judge. It asks the same question and
reads the same answer format as the self-judge (`judges.question`), so its verdicts and soft scores mean the
same thing. The model loads on the first `judge` call; building the judge only checks its directory.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rayunify.checkpoints import check_model_dir
from rayunify.judges import question
from rayunify.judges.base import as_pil, check_pairs, load_callable
from rayunify.types import Judgement, Prompt, Verdict

if TYPE_CHECKING:
    from rayunify.config import HFVLMJudgeConfig


class VLMCache:
    """Loaded (model, processor) pairs, one per (directory, class, dtype, device), loaded under a lock.

    The trainer builds the guard's reference judge again at every evaluation, and a 7B judge must not be
    loaded again each time: judges share the process' cache (`PROCESS_VLMS`) unless given their own.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str | None, str, str], tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def load(self, path: str | Path, model_class: str | None, dtype: str, device: str) -> tuple[Any, Any]:
        key = (str(Path(path).resolve()), model_class, dtype, device)
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = _load_vlm(path, model_class, dtype, device)
            return self._loaded[key]


PROCESS_VLMS = VLMCache()


def _load_vlm(path: str | Path, model_class: str | None, dtype: str, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoProcessor

    model = _vlm_class(model_class).from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    # The answer is decoded after the prompt, so every row's prompt must end at the same column.
    processor.tokenizer.padding_side = "left"
    return model, processor


def _vlm_class(model_class: str | None) -> Any:
    import transformers

    if model_class is None:
        return transformers.AutoModelForImageTextToText
    if ":" in model_class:
        return load_callable(model_class)
    if not hasattr(transformers, model_class):
        raise ValueError(f"hf_vlm judge: model_class={model_class!r} is neither a transformers class nor 'module:Class'")
    return getattr(transformers, model_class)


def _auto_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFVLMJudge:
    """A transformers VLM asked the paper's question (or `question`), batched.

    The answer prefix ("The score is") is teacher-forced, then the answer is decoded greedily: the logits of
    the first decoded position give the soft score P(yes) / (P(yes) + P(no)), the decoded text the verdict.
    """

    def __init__(self, cfg: HFVLMJudgeConfig, device: str | None = None, cache: VLMCache = PROCESS_VLMS):
        self.cfg = cfg
        self.path = check_model_dir(cfg.path, role="hf_vlm judge")
        self.device = device or _auto_device(cfg.device)
        self.cache = cache
        self.name = f"hf_vlm:{self.path.name}"
        self._ids: tuple[list[int], list[int], list[int]] | None = None  # answer prefix; yes and no token ids

    def loaded(self) -> tuple[Any, Any]:
        """(model, processor), loaded on first use."""
        return self.cache.load(self.path, self.cfg.model_class, self.cfg.dtype, self.device)

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        check_pairs(images, prompts, self.name)
        out: list[Judgement] = []
        for start in range(0, len(images), self.cfg.batch_size):
            chunk = slice(start, start + self.cfg.batch_size)
            out.extend(self._judge_batch(images[chunk], prompts[chunk]))
        return out

    def _judge_batch(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        import torch

        model, processor = self.loaded()
        enc = self._inputs(processor, images, prompts)
        _, yes_ids, no_ids = self.answer_ids(processor)
        steps = 1 if self.cfg.verdict_from == "score" else self.cfg.max_new_tokens
        tokenizer = processor.tokenizer
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )  # fmt: skip
        first = out.logits[0].float()  # the position right after the teacher-forced prefix
        lp_yes, lp_no = first[:, yes_ids].logsumexp(-1).tolist(), first[:, no_ids].logsumexp(-1).tolist()
        decoded = tokenizer.batch_decode(out.sequences[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return [
            self._judgement(text, question.soft_score(y, n)) for text, y, n in zip(decoded, lp_yes, lp_no, strict=True)
        ]

    def _judgement(self, continuation: str, score: float) -> Judgement:
        answer = f"{self.cfg.answer_prefix}{continuation}"
        if self.cfg.verdict_from == "score":
            verdict = Verdict.ACCEPT if score >= 0.5 else Verdict.REJECT
        else:
            verdict = question.parse_choice(answer, self.cfg.verdict_pattern, self.cfg.yes_token, self.cfg.no_token)
        return Judgement(verdict=verdict, score=score, answer=answer, judge=self.name)

    def _chat(self, processor: Any, prompt: str) -> str:
        text = question.format_question(self.cfg.question, prompt)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        try:
            return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except ValueError as err:  # transformers raises this when the directory has no chat template
            raise ValueError(f"hf_vlm judge {self.path}: cannot build the chat prompt: {err}") from None

    def answer_ids(self, processor: Any, chat: str | None = None) -> tuple[list[int], list[int], list[int]]:
        """The prefix's token ids, and every token that reads as the yes / the no answer.

        P(yes) sums " 1" and "1" (and "Yes", "yes" for a yes/no judge): which form a model writes is a
        tokenizer detail, and vLLM's top log-probs count them the same way, so both judges agree.
        """
        if self._ids is None:
            tokenizer = processor.tokenizer
            chat = chat if chat is not None else self._chat(processor, "a photo")
            # "<|Assistant|>:" wants " The score is", "assistant\n" wants "The score is": match the template.
            space = " " if self.cfg.answer_prefix and chat and not chat[-1].isspace() else ""
            encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
            prefix, yes_id, no_id = question.choice_token_ids(
                encode, space + self.cfg.answer_prefix, self.cfg.yes_token, self.cfg.no_token
            )
            words = [w.strip().casefold() for w in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]
            yes, no = self.cfg.yes_token.casefold(), self.cfg.no_token.casefold()
            yes_ids = sorted({yes_id, *(i for i, w in enumerate(words) if w == yes)})
            no_ids = sorted({no_id, *(i for i, w in enumerate(words) if w == no)})
            self._ids = prefix, yes_ids, no_ids
        return self._ids

    def _inputs(self, processor: Any, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> dict[str, Any]:
        """Processor inputs with the answer prefix's token ids appended (the same ids for every row)."""
        import torch

        texts = [self._chat(processor, p.text) for p in prompts]
        prefix, _, _ = self.answer_ids(processor, texts[0])
        # The chat template writes the special tokens it wants (BOS included, if any): add none on top, as
        # transformers' apply_chat_template(tokenize=True) and vLLM's chat API do, so both judges see one input.
        pixels = [as_pil(i) for i in images]
        enc = dict(processor(text=texts, images=pixels, padding=True, add_special_tokens=False, return_tensors="pt"))
        ids = enc["input_ids"]
        rows, extra = ids.shape[0], len(prefix)
        for key, value in enc.items():
            # Per-token tensors (input ids, attention mask, token types) grow by the prefix; images do not.
            if isinstance(value, torch.Tensor) and value.shape[:2] == ids.shape and key != "input_ids":
                fill = 1 if key == "attention_mask" else 0
                enc[key] = torch.cat([value, value.new_full((rows, extra), fill)], dim=1)
        enc["input_ids"] = torch.cat([ids, torch.tensor([prefix] * rows, dtype=ids.dtype)], dim=1)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}
