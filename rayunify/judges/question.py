"""The judge's question: the paper's question and system prompt, answer parsing and soft-score token lookup.

Pure (no torch, ray or deepspeed): every judge, the model's own or an external one, builds its question
and parses its answer here, so a verdict means the same thing whoever gives it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rayunify.types import Verdict

# Janus's default system prompt (transformers' JanusProcessor.DEFAULT_SYSTEM_PROMPT), which the paper's
# judge runs under.
SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language.\n\n"
)

# The paper's exact judge question q(y) (arXiv 2507.16663, §3).
JUDGE_QUESTION = (
    "Does this image describe {prompt}? If it describes the scene, score 1; if it does not fully describe, "
    "score 0. Please answer in the following format: The score is {{your score}}."
)
ANSWER_PREFIX = "The score is"

_SCORE_RE = re.compile(r"score\s+is\s*[:=]?\s*\{?\s*([01])\b", re.IGNORECASE)
# "score is 1 or 0", "score is 1/0": the other digit offered as an alternative right after the first.
_ALTERNATIVE_RE = re.compile(r"score\s+is\s*[:=]?\s*\{?\s*([01])\s*(?:or|/|\||and|,)\s*([01])\b", re.IGNORECASE)


def judge_question(prompt: str) -> str:
    """The question asked about an image generated for `prompt`."""
    return JUDGE_QUESTION.format(prompt=prompt.strip().rstrip("."))


def fixed_prefix_phrases() -> tuple[str, ...]:
    """Fixed texts that every judge sequence repeats word for word *before the image*: the system prompt.
    A tokenizer of our own may make each a single token (see `train_tokenizer`'s phrases). Causal attention
    means these tokens never see the image, so merging them costs the judge nothing; the question after
    the image stays word by word: its tokens can attend to the image (merging them too made a ShapesWorld
    judge no better)."""
    return (SYSTEM_PROMPT,)


def parse_verdict(answer: str) -> Verdict:
    """ "The score is 1" → ACCEPT, "... 0" → REJECT; anything else → INVALID, including an answer that names
    both digits after "score is" ("The score is 1 or 0", "the score is 1/0"), which commits to neither."""
    found = {m.group(1) for m in _SCORE_RE.finditer(answer)}
    found |= {m.group(2) for m in _ALTERNATIVE_RE.finditer(answer)}
    if found == {"1"}:
        return Verdict.ACCEPT
    if found == {"0"}:
        return Verdict.REJECT
    return Verdict.INVALID


def soft_score(logit_one: float, logit_zero: float) -> float:
    """P("1") / (P("1") + P("0")) from the two logits at the answer position, computed stably."""
    import math

    diff = logit_zero - logit_one
    if diff > 50:
        return 0.0
    return 1.0 / (1.0 + math.exp(diff))


def answer_text(verdict: Verdict) -> str:
    """The judge's answer as the model should write it after "<|Assistant|>:" (used to train judges too)."""
    return f" {ANSWER_PREFIX} {int(verdict == Verdict.ACCEPT)}"


def answer_token_ids(
    encode: Callable[[str], Sequence[int]], prefix: str = " " + ANSWER_PREFIX
) -> tuple[list[int], int, int]:
    """Token ids of the teacher-forced answer prefix and of the "1" and "0" that follow it.

    Tokenizers differ in how "The score is 1" splits (" 1" vs " " + "1"), so take the longest common token
    prefix of the two full answers: what follows it is the digit token in each.
    """
    return choice_token_ids(encode, prefix, yes="1", no="0")


def format_question(template: str | None, prompt: str) -> str:
    """An external judge's question: `template` with {prompt}, or the paper's question when None."""
    if template is None:
        return judge_question(prompt)
    return template.replace("{prompt}", prompt.strip().rstrip("."))


def parse_choice(answer: str, pattern: str | None = None, yes: str = "1", no: str = "0") -> Verdict:
    """Verdict from an answer: `pattern`'s first group must read `yes` or `no` (case-insensitive).

    With no pattern this is `parse_verdict` ("The score is 1"). As there, an answer that says both, neither
    or something else is INVALID: counted, never guessed.
    """
    if pattern is None:
        return parse_verdict(answer)
    found = {m.group(1).strip().casefold() for m in re.finditer(pattern, answer) if m.group(1) is not None}
    if found == {yes.casefold()}:
        return Verdict.ACCEPT
    if found == {no.casefold()}:
        return Verdict.REJECT
    return Verdict.INVALID


def choice_token_ids(
    encode: Callable[[str], Sequence[int]], prefix: str, yes: str = "1", no: str = "0"
) -> tuple[list[int], int, int]:
    """Like `answer_token_ids`, for any prefix and answer pair: (prefix ids, yes id, no id).

    The ids after the longest common token prefix of "{prefix} {yes}" and "{prefix} {no}" are the two answer
    tokens; teacher-forcing the common part and reading those two logits gives the soft score.
    """
    sep = " " if prefix else ""
    with_yes, with_no = encode(f"{prefix}{sep}{yes}"), encode(f"{prefix}{sep}{no}")
    common = 0
    while common < min(len(with_yes), len(with_no)) and with_yes[common] == with_no[common]:
        common += 1
    if common >= len(with_yes) or common >= len(with_no):
        raise ValueError(f"the tokenizer cannot tell {prefix}{sep}{yes!r} from {prefix}{sep}{no!r} apart")
    return list(with_yes[:common]), with_yes[common], with_no[common]


def choice_score(top_logprobs: Sequence[tuple[str, float]], yes: str = "1", no: str = "0") -> float | None:
    """P(yes) / (P(yes) + P(no)) from a server's top log-probs at the answer position, or None if neither shows.

    Tokens are compared without surrounding spaces (" 1" and "1" are both the answer 1, and their masses add
    up). An answer missing from the list is less likely than everything listed, so it gets the smallest
    listed log-prob: an upper bound, which pulls the score towards 0.5 rather than inventing certainty.
    """
    import math

    def mass(word: str) -> float | None:
        lps = [lp for token, lp in top_logprobs if token.strip().casefold() == word.casefold()]
        if not lps:
            return None
        peak = max(lps)
        return peak + math.log(sum(math.exp(lp - peak) for lp in lps))

    lp_yes, lp_no = mass(yes), mass(no)
    if lp_yes is None and lp_no is None:
        return None
    floor = min(lp for _, lp in top_logprobs)
    return soft_score(floor if lp_yes is None else lp_yes, floor if lp_no is None else lp_no)
