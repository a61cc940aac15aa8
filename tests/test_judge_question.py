"""The judge's question (`rayunify.judges.question`): the question, answer parsing, soft scores and token lookup."""

from __future__ import annotations

import numpy as np
import pytest

from rayunify.judges import question
from rayunify.types import Verdict


# ---------------------------------------------------------------------------------------------- parsing
def test_question_and_choice_parsing():
    assert question.format_question(None, "a red circle.") == question.judge_question("a red circle")
    assert question.format_question("Is this {prompt}? Yes or no.", "a cat.") == "Is this a cat? Yes or no."
    assert question.parse_choice("The score is 1") == Verdict.ACCEPT
    assert question.parse_choice("The score is 0.") == Verdict.REJECT
    assert question.parse_choice("The score is 1. No, the score is 0.") == Verdict.INVALID
    yes_no = r"\b(yes|no)\b"
    assert question.parse_choice("Yes, it does.", f"(?i){yes_no}", "yes", "no") == Verdict.ACCEPT
    assert question.parse_choice("no", yes_no, "yes", "no") == Verdict.REJECT
    assert question.parse_choice("maybe", yes_no, "yes", "no") == Verdict.INVALID
    assert question.parse_choice("yes and no", yes_no, "yes", "no") == Verdict.INVALID


def test_choice_score_adds_forms_and_bounds_missing_answers():
    half = np.log(0.5)
    assert question.choice_score([(" 1", half), ("1", half), ("0", np.log(1e-9))]) == pytest.approx(1.0, abs=1e-6)
    assert question.choice_score([("1", np.log(0.3)), (" 0", np.log(0.1))]) == pytest.approx(0.75)
    # "0" is missing: it is at most as likely as the least likely listed token (here "x").
    assert question.choice_score([("1", np.log(0.6)), ("x", np.log(0.2))]) == pytest.approx(0.75)
    assert question.choice_score([("a", -1.0), ("b", -2.0)]) is None


def test_choice_token_ids_split_after_the_common_prefix():
    vocab = {"The": 1, " score": 2, " is": 3, " 1": 4, " 0": 5, " yes": 6, " no": 7}

    def encode(text: str) -> list[int]:
        out, rest = [], text
        while rest:
            token = max((t for t in vocab if rest.startswith(t)), key=len)
            out.append(vocab[token])
            rest = rest[len(token) :]
        return out

    assert question.choice_token_ids(encode, "The score is") == ([1, 2, 3], 4, 5)
    assert question.choice_token_ids(encode, "The score is", "yes", "no") == ([1, 2, 3], 6, 7)
    with pytest.raises(ValueError, match="cannot tell"):
        question.choice_token_ids(encode, "The score is", "1", "1")



def test_tokenizer_phrases_become_one_token_and_leave_the_text_unchanged(tmp_path):
    from transformers import AutoTokenizer

    from rayunify.models.janus.factory import default_corpus
    from rayunify.models.janus.tokenizer import train_tokenizer

    phrases = question.fixed_prefix_phrases()
    tokenizer = train_tokenizer(default_corpus(), vocab_size=512, phrases=phrases)
    plain = train_tokenizer(default_corpus(), vocab_size=512)
    text = question.SYSTEM_PROMPT + "<|User|>: " + question.judge_question("a red circle")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    plain_ids = plain(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == question.SYSTEM_PROMPT
    assert len(ids) == len(plain_ids) - len(plain(question.SYSTEM_PROMPT, add_special_tokens=False)["input_ids"]) + 1
    assert ids[1:] == plain_ids[-(len(ids) - 1) :]  # the rest tokenizes exactly as without the phrase
    assert tokenizer.decode(ids) == text
    tokenizer.save_pretrained(tmp_path)  # the phrase survives the HF round trip
    assert AutoTokenizer.from_pretrained(tmp_path)(text, add_special_tokens=False)["input_ids"] == ids


@pytest.mark.parametrize("answer", ["The score is 1 or 0", "the score is 1/0", "The score is 0 or 1.", "score is 1, 0"])
def test_an_answer_offering_both_digits_is_invalid(answer):
    assert question.parse_verdict(answer) == Verdict.INVALID


def test_a_later_number_does_not_void_the_verdict():
    assert question.parse_verdict("The score is 1. The image shows 10 cats.") == Verdict.ACCEPT
    assert question.parse_verdict("The score is 0 (1 cat is missing)") == Verdict.REJECT
