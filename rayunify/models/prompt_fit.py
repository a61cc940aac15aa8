"""Whether every prompt fits the model: Show-o's text slot (`max_text_len` − 2 tokens) and, for both families,
the context that generation (prompt + image tokens) and the judge (image + the paper's question about the
prompt + its answer) take. Read from the tokenizer and configs only, no weights, so the preflight says it
before any actor starts instead of a rollout actor's ValueError minutes into a run.

The longest prompts by token count are built into the exact sequences the models build (the templates are
the same for every prompt, so the longest prompt makes the longest sequence); one line names the longest
prompt and the limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rayunify.judges import question

ANSWER_TOKENS = 8  # the judges' greedy answer: max_new_tokens
CANDIDATES = 4  # prompts built into full sequences: the longest few by token count


class PromptTooLong(ValueError):
    """A prompt the model cannot take; the message names it, its length and the limit."""


def check_prompt_fit(
    family: str, model_dir: str | Path, texts: Sequence[str], tokenizer_path: str | None = None
) -> str:
    """One line on the longest prompt against the model's limits; PromptTooLong when one does not fit."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return "prompt lengths: no prompts"
    if family == "showo":
        return _showo(Path(model_dir), unique, tokenizer_path)
    return _janus(Path(model_dir), unique)


def _longest(tokenizer: Any, texts: list[str]) -> list[tuple[int, str]]:
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])[:CANDIDATES]
    return [(lengths[i], texts[i]) for i in order]


def _refuse(text: str, tokens: int, what: str) -> PromptTooLong:
    return PromptTooLong(f"prompt {text[:80]!r}{'…' if len(text) > 80 else ''} is {tokens} tokens: {what}")


def _showo(path: Path, texts: list[str], tokenizer_path: str | None) -> str:
    from transformers import AutoTokenizer

    llm = Path(tokenizer_path) if tokenizer_path else path / "llm"
    config = json.loads((path / "config.json").read_text())
    context = json.loads((llm / "config.json").read_text()).get("max_position_embeddings", 2048)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    slot = config.get("max_text_len", 128) - 2  # `<|t2i|> bos text eos` in max_text_len + 1 positions
    longest = _longest(tokenizer, texts)
    tokens, text = longest[0]
    if tokens > slot:
        raise _refuse(
            text, tokens, f"Show-o's text slot holds {slot} (max_text_len {slot + 2} in {path}/config.json)"
        )
    for (
        count,
        candidate,
    ) in longest:  # `<|mmu|> <|soi|> image <|eoi|> bos USER: \n{question} ASSISTANT:` + answer
        chat = "USER: \n" + question.judge_question(candidate) + " ASSISTANT:"
        judged = 4 + config["num_vq_tokens"] + len(tokenizer(chat, add_special_tokens=False)["input_ids"])
        if judged + ANSWER_TOKENS > context:
            raise _refuse(candidate, count, f"judging its image takes {judged} + {ANSWER_TOKENS} answer tokens, beyond "
                          f"Show-o's context of {context}")  # fmt: skip
    return f"prompt lengths: longest {tokens} tokens, Show-o's text slot holds {slot}: {text[:60]!r}"


def _janus(path: Path, texts: list[str]) -> str:
    from transformers import JanusConfig, JanusProcessor

    processor = JanusProcessor.from_pretrained(path)
    config = JanusConfig.from_pretrained(path)
    context, image_tokens = config.text_config.max_position_embeddings, config.vision_config.num_image_tokens
    longest = _longest(processor.tokenizer, texts)
    blank = np.zeros((image_tokens, image_tokens, 3), np.uint8)  # any size: the processor resizes it
    lengths = []
    for count, text in longest:  # one at a time: no padding in the counts
        generated = processor(
            text=generation_chats(processor, [text]), generation_mode="image", return_tensors="pt"
        )
        judged = processor(text=judge_texts(processor, [text]), images=[blank], return_tensors="pt")
        gen, judge = generated["input_ids"].shape[1], judged["input_ids"].shape[1]
        if gen + image_tokens > context:
            raise _refuse(text, count, f"generating from it takes {gen} + {image_tokens} image tokens, beyond Janus's "
                          f"context of {context}")  # fmt: skip
        if judge + ANSWER_TOKENS > context:
            raise _refuse(text, count, f"judging its image takes {judge} + {ANSWER_TOKENS} answer tokens, beyond "
                          f"Janus's context of {context}")  # fmt: skip
        lengths.append(gen)
    tokens, text = longest[0]
    room = context - image_tokens - (lengths[0] - tokens)
    return f"prompt lengths: longest {tokens} tokens, Janus's context leaves {room} beside the image: {text[:60]!r}"


def generation_chats(processor: Any, prompts: Sequence[str]) -> list[str]:
    """The chat text each prompt is generated from (the processor adds <begin_of_image>)."""
    return [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": p}]}], add_generation_prompt=True
        )
        for p in prompts
    ]


def judge_texts(processor: Any, prompts: Sequence[str], answers: Sequence[str] | None = None) -> list[str]:
    """The paper's question about each prompt's image, as the judge asks it (optionally with answers)."""
    texts = []
    for i, prompt in enumerate(prompts):
        chat = processor.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": question.judge_question(prompt)}],
                }
            ],
            add_generation_prompt=True,
        )
        text = chat if processor.use_default_system_prompt else question.SYSTEM_PROMPT + chat
        texts.append(text + (answers[i] if answers is not None else ""))
    return texts
