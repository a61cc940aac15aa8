"""Does rejection-sampling SFT on the model's *correct* own images help a ShapesWorld base? A plain-loop probe
(no Ray, no DeepSpeed, no self-judge) that separates "the judge supervises badly" from "training on own
samples hurts this model":

    python examples/probe_self_sft.py --model builtin:shapes-base --lr 1e-4 --data-guidance 3

1. samples `--n` images for each of the experiments' 192 train prompts (`--n-train`) at `--data-guidance`;
2. keeps those ShapesWorld's checker accepts (an oracle judge: precision 100%), or those the model's own
   judge accepts (`--judge self`); `--judge renders` trains on fresh renders instead (perfect data);
3. trains the model on them (the paper's SFT loss, `--epochs` epochs, batch 16, AdamW at `--lr`; a share
   `--prompt-dropout` of rows sees the unconditional prompt, as base training does; `--geometry cfg` takes
   the log-probs under the guided distribution that drew the images);
4. prints the checker's generation accuracy before and after, on the 96 held-out and the train prompts,
   sampling at guidance 3 (how the experiments evaluate) and at 1 (the conditional model alone).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rayunify.models import resolve_model_path
from rayunify.models.janus.model import JanusUnifiedModel
from rayunify.shapes.checker import check_batch
from rayunify.shapes.render import render
from rayunify.shapes.vq import encode_tokens
from rayunify.shapes.world import Spec, held_out_split
from rayunify.types import Prompt, SamplingSettings, Verdict


def sample(um: JanusUnifiedModel, prompts: list[Prompt], n: int, guidance: float, seed: int, chunk: int = 64):
    """(image tokens, checker verdicts, images), n images per prompt, grouped by prompt."""
    tokens, verdicts, images = [], [], []
    for start in range(0, len(prompts), chunk):
        batch = prompts[start : start + chunk]
        with torch.no_grad():
            out = um.generate(
                [p.text for p in batch],
                n=n,
                settings=SamplingSettings(guidance_scale=guidance),
                seed=seed + start,
                decode=True,
            )
        specs = [Spec.from_dict(p.spec) for p in batch for _ in range(n)]
        tokens.append(out.image_tokens)
        verdicts += [r.aligned for r in check_batch(out.images, specs)]
        images += list(out.images)
    return torch.cat(tokens), np.array(verdicts), images


def renders(um: JanusUnifiedModel, prompts: list[Prompt], n: int) -> torch.Tensor:
    """VQ tokens of n fresh renders per prompt, grouped by prompt."""
    rng = np.random.default_rng(0)
    images = np.stack([render(Spec.from_dict(p.spec), rng) for p in prompts for _ in range(n)])
    with torch.no_grad():
        return encode_tokens(um.model.model.vqmodel, images)


def self_verdicts(
    um: JanusUnifiedModel, images: list[np.ndarray], texts: list[str], chunk: int = 512
) -> np.ndarray:
    """The model's own judge: True where it answers "The score is 1"."""
    verdicts = []
    for start in range(0, len(images), chunk):
        judged = um.judge(images[start : start + chunk], texts[start : start + chunk])
        verdicts += [j.verdict == Verdict.ACCEPT for j in judged]
    return np.array(verdicts)


def accuracy(um: JanusUnifiedModel, prompts: list[Prompt]) -> str:
    um.module().eval()
    return " ".join(f"g{g:g} {sample(um, prompts, 4, g, seed=123)[1].mean():.3f}" for g in (3.0, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:shapes-base")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--data-guidance", type=float, default=3.0)
    parser.add_argument("--prompt-dropout", type=float, default=0.0)
    parser.add_argument(
        "--geometry",
        choices=["conditional", "cfg"],
        default="conditional",
        help="train log-probs under the conditional model or the guided one (at --data-guidance)",
    )
    parser.add_argument("--trainable", choices=["language_model", "lora"], default="language_model")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=192, help="train prompts (the experiments use 192)")
    parser.add_argument(
        "--judge",
        choices=["checker", "self", "renders"],
        default="checker",
        help="who accepts the training images: the exact checker (an oracle) or the model itself; renders: "
        "no own images at all, --n fresh renders per train prompt (perfect data: what an ideal filter "
        "could at best supply)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    um = JanusUnifiedModel.from_pretrained(resolve_model_path(args.model), trainable=args.trainable)
    train, held_out = held_out_split(args.n_train, 96, seed=0)
    print(f"before: held-out {accuracy(um, held_out)} | train {accuracy(um, train)}", flush=True)
    texts = [p.text for p in train for _ in range(args.n)]
    if args.judge == "renders":
        tokens, accepted = renders(um, train, args.n), np.ones(len(texts), bool)
    else:
        tokens, accepted, images = sample(um, train, args.n, args.data_guidance, seed=0)
    if args.judge == "self":
        own = self_verdicts(um, images, texts)
        print(f"self-accepted: {own.sum()} of {len(own)}, precision {accepted[own].mean():.3f}", flush=True)
        accepted = own
    keep = np.nonzero(accepted)[0]
    print(f"{args.judge}-accepted training images: {len(keep)} of {len(accepted)}", flush=True)
    params = [p for p in um.module().parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(0)
    um.module().train()
    for _ in range(args.epochs):
        order = rng.permutation(keep)
        for start in range(0, len(order), 16):
            rows = order[start : start + 16]
            drop = torch.from_numpy(rng.random(len(rows)) < args.prompt_dropout)
            logps = um.image_logprobs(
                [texts[i] for i in rows], tokens[rows], geometry=args.geometry,
                guidance_scale=args.data_guidance, drop_prompt=drop,
            )  # fmt: skip
            loss = -logps.mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
    print(f"after:  held-out {accuracy(um, held_out)} | train {accuracy(um, train)}", flush=True)


if __name__ == "__main__":
    main()
