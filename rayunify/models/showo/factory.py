"""Show-o configurations we can build without a hub: a tiny random one for tests, and the real shapes.

A Show-o folder as rayunify reads and writes it (the public layout, plus the two parts the public code
fetches from elsewhere kept beside it):
    config.json          the diffusers-style Showo config (`_class_name: Showo`, vocab_size, llm_vocab_size,
                         num_vq_tokens, mask_token_id, w_clip_vit, …)
    *.safetensors        the weights: `showo.model.*`, `showo.lm_head.*` (and `mm_projector.*` with CLIP)
    llm/                 the Phi config and tokenizer (microsoft/phi-1_5's files)   = model.tokenizer_path
    vq/                  MAGVIT-v2's config and weights (showlab/magvitv2)           = model.vq_path
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from rayunify.judges import question
from rayunify.models.showo.magvit import MagvitArch, MAGVITv2

# The tokens Show-o adds to Phi's tokenizer, in its order: [PAD] first, then these (ids llm_vocab_size…+9).
SPECIAL_TOKENS = (
    "<|soi|>",
    "<|eoi|>",
    "<|sov|>",
    "<|eov|>",
    "<|t2i|>",
    "<|mmu|>",
    "<|t2v|>",
    "<|v2v|>",
    "<|lvg|>",
)
PAD = "[PAD]"
END_OF_TEXT = "<|endoftext|>"  # Phi's BOS, EOS and end of an answer


@dataclass(frozen=True)
class ShowoArch:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 512
    qk_layernorm: bool = False
    text_vocab_size: int = 400  # the tiny tokenizer's trained size (Phi's is 50,295)
    max_text_len: int = 32  # Show-o: 128 (the prompt is `<|t2i|>` + this many, left-padded)
    default_steps: int = 8
    magvit: MagvitArch = field(
        default_factory=lambda: MagvitArch(
            ch=32,
            encoder_ch_mult=(1, 1, 2),
            encoder_res_blocks=(1, 1, 1),
            decoder_ch_mult=(1, 1, 2),
            decoder_res_blocks=(1, 1, 1),
            attn_resolutions=(),
            resolution=32,
            bits=6,
        )  # fmt: skip
    )

    @property
    def num_image_tokens(self) -> int:
        return (self.magvit.resolution // self.magvit.downsample) ** 2


FACTORY_VERSION = 1
TINY_SHOWO = ShowoArch()
# Show-o at 512 px: Phi-1.5 (24 layers, 2048 wide, 32 heads, MLP 8192) over 129 + 1,026 positions, MAGVIT-v2
# at 512 px (1,024 codes of 13 bits); 50 steps as the public 512 demo. qk_layernorm stays Phi-1.5's (off):
# the public Showo class builds its backbone from microsoft/phi-1_5's config unchanged.
SHOWO_512 = ShowoArch(
    hidden_size=2048, intermediate_size=8192, num_layers=24, num_heads=32, max_positions=2048,
    text_vocab_size=50295, max_text_len=128, default_steps=50, magvit=MagvitArch(resolution=512),
)  # fmt: skip
SHOWO_256 = replace(SHOWO_512, default_steps=18, magvit=MagvitArch(resolution=256))


def phi_config(arch: ShowoArch, vocab_size: int):
    from transformers import PhiConfig

    return PhiConfig(
        vocab_size=vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
        max_position_embeddings=arch.max_positions, qk_layernorm=arch.qk_layernorm,
    )  # fmt: skip


def showo_config(arch: ShowoArch, llm_vocab_size: int) -> dict:
    """The Showo config.json: the public fields, with vocab = text + [PAD] + 9 specials + codes + mask."""
    vocab = llm_vocab_size + 1 + len(SPECIAL_TOKENS) + arch.magvit.codebook_size + 1
    return {
        "_class_name": "Showo", "w_clip_vit": False, "vocab_size": vocab, "llm_vocab_size": llm_vocab_size,
        "llm_model_path": "llm", "codebook_size": arch.magvit.codebook_size, "num_vq_tokens": arch.num_image_tokens,
        "load_from_showo": True, "mask_token_id": vocab - 1, "max_text_len": arch.max_text_len,
        "default_steps": arch.default_steps,
    }  # fmt: skip


def train_text_tokenizer(arch: ShowoArch):
    """A byte-level BPE standing in for Phi's (CodeGen) tokenizer: `<|endoftext|>` is BOS, EOS and UNK,
    and, like Phi's, it adds no special tokens itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        question.SYSTEM_PROMPT, question.JUDGE_QUESTION, question.answer_text(question.Verdict.ACCEPT),
        question.answer_text(question.Verdict.REJECT), "USER: \n ASSISTANT: a photo of a red circle left of a blue square",
    ] * 4  # fmt: skip
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=arch.text_vocab_size, special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT, padding_side="left"
    )
    # A small corpus yields fewer merges than a real vocabulary: unused tokens give the embedding and the head
    # their real shapes (Show-o-512's 58,498 rows), so timings and memory on this architecture are real.
    tokenizer.add_tokens([f"<|unused_{i}|>" for i in range(arch.text_vocab_size - len(tokenizer))])
    return tokenizer


def build_showo(arch: ShowoArch = TINY_SHOWO, seed: int = 0):
    """(Phi backbone with Show-o's vocabulary, MAGVIT-v2, base text tokenizer, Showo config), random, offline."""
    from transformers import PhiForCausalLM

    tokenizer = train_text_tokenizer(arch)
    config = showo_config(arch, llm_vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    phi = PhiForCausalLM(phi_config(arch, config["vocab_size"])).eval()
    vq = MAGVITv2(arch.magvit).eval()
    return phi, vq, tokenizer, config


def save_showo_dir(path: Path, phi, vq: MAGVITv2, tokenizer, config: dict) -> None:
    """Write the layout in the module docstring."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=1))
    state = {f"showo.{k}": v.contiguous() for k, v in phi.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    phi.config.save_pretrained(path / "llm")
    tokenizer.save_pretrained(path / "llm")
    vq.save_pretrained(path / "vq")


def cached_tiny_showo_dir(arch: ShowoArch = TINY_SHOWO, seed: int = 0) -> Path:
    """A saved tiny random Show-o, keyed by a hash of its architecture and seed (under $RAYUNIFY_CACHE)."""
    from rayunify.models.base import cache_root

    key = hashlib.sha256(
        json.dumps([asdict(arch), seed, FACTORY_VERSION], sort_keys=True).encode()
    ).hexdigest()[:12]
    path = cache_root() / f"showo-tiny-{key}"
    if not (path / "config.json").is_file():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_showo_dir(tmp, *build_showo(arch, seed=seed))
        os.replace(tmp, path) if not path.exists() else shutil.rmtree(tmp)
    return path


def build_showo_model(arch: ShowoArch = TINY_SHOWO, seed: int = 0, dtype=torch.float32, device="cpu", **kwargs):
    """A random `ShowoUnifiedModel` of `arch` in memory (no folder), e.g. for benchmarks on real shapes."""
    from rayunify.models.showo.loading import ShowoModule, ShowoParts
    from rayunify.models.showo.model import ShowoUnifiedModel
    from rayunify.models.showo.sequences import ShowoVocab

    with torch.device(device):  # initialise where it will run
        phi, vq, tokenizer, config = build_showo(arch, seed=seed)
    vocab = ShowoVocab.from_tokenizer(tokenizer, config)
    module = ShowoModule(phi.to(dtype), vq.to(dtype)).eval()
    return ShowoUnifiedModel(ShowoParts(module, tokenizer, vocab, config, Path("llm"), Path("vq")), **kwargs)
