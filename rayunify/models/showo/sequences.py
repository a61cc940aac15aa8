"""Show-o's token layout: ids of its special tokens, prompt sequences and image blocks.

Vocabulary (public Show-o): Phi's text tokens [0, llm_vocab_size), then `[PAD]` and the nine task/boundary
tokens, then the image codes at `code_offset` = llm_vocab_size + 10, then the mask token (vocab_size − 1).

Image tokens in rayunify's loop (`GenerationOutput.image_tokens`, `Sample.image_tokens`) are plain MAGVIT-v2
codes in [0, K); the sampling step that committed each one travels beside them as a field of its own
(`GenerationOutput.commit_steps`, `Sample.commit_steps`) through the buffer, the pairs and the learner's
batches, for the `trajectory` estimator to replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rayunify.models.showo.factory import PAD, SPECIAL_TOKENS


@dataclass(frozen=True)
class ShowoVocab:
    pad: int
    soi: int
    eoi: int
    t2i: int
    mmu: int
    bos: int
    eos: int
    code_offset: int
    codebook_size: int
    mask: int

    @classmethod
    def from_tokenizer(cls, tokenizer, config: dict) -> ShowoVocab:
        """Add `[PAD]` and the special tokens as Show-o does, and check the ids against the Showo config."""
        tokenizer.add_special_tokens({"pad_token": PAD})
        tokenizer.add_tokens(list(SPECIAL_TOKENS))
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD, *SPECIAL_TOKENS)}
        offset = len(tokenizer)
        expected = config["llm_vocab_size"] + 1 + len(SPECIAL_TOKENS)
        if offset != expected or sorted(ids.values()) != list(range(offset - len(ids), offset)):
            raise ValueError(
                f"the tokenizer has {offset} tokens with [PAD] and Show-o's specials; config.json's llm_vocab_size="
                f"{config['llm_vocab_size']} needs {expected}: tokenizer_path holds a different tokenizer"
            )
        vocab = cls(
            pad=ids[PAD], soi=ids["<|soi|>"], eoi=ids["<|eoi|>"], t2i=ids["<|t2i|>"], mmu=ids["<|mmu|>"],
            bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, code_offset=offset,
            codebook_size=config["codebook_size"], mask=config["mask_token_id"],
        )  # fmt: skip
        if vocab.mask != offset + vocab.codebook_size or config["vocab_size"] != vocab.mask + 1:
            raise ValueError(
                f"config.json: vocab_size={config['vocab_size']}, mask_token_id={config['mask_token_id']} do not follow "
                f"from llm_vocab_size={config['llm_vocab_size']} and codebook_size={vocab.codebook_size}"
            )
        return vocab

    def image_ids(self, state: torch.Tensor) -> torch.Tensor:
        """Sampler state (codes, −1 where masked) → vocabulary ids."""
        return torch.where(state < 0, self.mask, state + self.code_offset)



def t2i_prefixes(tokenizer, vocab: ShowoVocab, prompts: Sequence[str], max_text_len: int) -> torch.Tensor:
    """(B, max_text_len + 1) `[PAD]* <|t2i|> bos text eos`, left-padded as Show-o's T2I prompt; "" gives
    the unconditional prompt `<|t2i|> bos eos`."""
    rows = []
    for i, prompt in enumerate(prompts):
        text = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        ids = [vocab.t2i, vocab.bos, *text, vocab.eos]
        if len(ids) > max_text_len + 1:
            raise ValueError(
                f"prompt {i} is {len(text)} tokens; Show-o's text slot holds {max_text_len - 2}: {prompt[:80]!r}"
            )
        rows.append([vocab.pad] * (max_text_len + 1 - len(ids)) + ids)
    return torch.tensor(rows, dtype=torch.long)


def image_block(vocab: ShowoVocab, image_ids: torch.Tensor) -> torch.Tensor:
    """(B, N + 2) `<|soi|> image <|eoi|>`."""
    rows = image_ids.shape[0]
    soi = torch.full((rows, 1), vocab.soi, dtype=torch.long, device=image_ids.device)
    eoi = torch.full((rows, 1), vocab.eoi, dtype=torch.long, device=image_ids.device)
    return torch.cat([soi, image_ids, eoi], dim=1)


def mmu_sequences(
    tokenizer,
    vocab: ShowoVocab,
    image_codes: torch.Tensor,
    questions: Sequence[str],
    answers: Sequence[str] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded `<|mmu|> <|soi|> image <|eoi|> bos USER: \\n{question} ASSISTANT:{answer}` rows (the public
    MMU prompt of the MAGVIT variant): (ids, valid, index of each row's <|eoi|>)."""
    rows = []
    for i, q in enumerate(questions):
        text = tokenizer(
            "USER: \n" + q + " ASSISTANT:" + (answers[i] if answers else ""), add_special_tokens=False
        )
        codes = (image_codes[i] + vocab.code_offset).tolist()
        rows.append([vocab.mmu, vocab.soi, *codes, vocab.eoi, vocab.bos, *text["input_ids"]])
    length = max(len(r) for r in rows)
    ids = torch.tensor([[vocab.pad] * (length - len(r)) + r for r in rows], dtype=torch.long)
    pads = torch.tensor([length - len(r) for r in rows])
    valid = torch.arange(length)[None, :] >= pads[:, None]
    return ids, valid, pads + image_codes.shape[1] + 2
