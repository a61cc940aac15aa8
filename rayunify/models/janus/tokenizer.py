"""An offline tokenizer with Janus's special tokens and chat template, trained in-process.

No hub access is possible here, so tiny models and the ShapesWorld base get a byte-level BPE tokenizer
trained on a small corpus in a fraction of a second. Byte-level means any prompt still tokenizes (no
unknown tokens); the corpus only decides which words become single tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Janus-Pro's own special tokens, so code written against the tiny tokenizer runs unchanged on the real one.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE = "<image_placeholder>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
USER = "<|User|>"
ASSISTANT = "<|Assistant|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IMAGE, BOI, EOI, USER, ASSISTANT]

# The conversation format of Janus-Pro (the one transformers' conversion script installs), written as a
# Jinja template: "<|User|>: {text}\n\n<|Assistant|>:" with images as <image_placeholder> in the user turn.
JANUS_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ '<|User|>: ' }}"
    "{%- elif message['role'] | lower == 'assistant' -%}{{ '<|Assistant|>: ' }}"
    "{%- else -%}{{ message['role'] | capitalize ~ ': ' }}{%- endif -%}"
    "{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' -%}"
    "{%- if not loop.first -%}{{ '\n' }}{%- endif -%}<image_placeholder>{%- if not loop.last -%}{{ '\n' }}{%- endif -%}"
    "{%- elif content['type'] == 'text' -%}{{ content['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if not loop.last or add_generation_prompt -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ '\n\n' }}{%- else -%}<｜end▁of▁sentence｜>{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|Assistant|>:{%- endif -%}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512, phrases: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` and wrap it with Janus's special tokens.

    Each of `phrases` (fixed texts every sequence repeats, such as the judge's system prompt) becomes one
    ordinary token: the text the model reads is unchanged, the sequence is shorter.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    bpe.add_tokens([AddedToken(p, normalized=False) for p in phrases])
    bos_id = bpe.token_to_id(BOS)
    # Janus prepends BOS to every sequence (its LLaMA tokenizer does too).
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=4096,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
    )
    tokenizer.chat_template = JANUS_CHAT_TEMPLATE
    return tokenizer
