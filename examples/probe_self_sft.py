"""Does rejection-sampling SFT on the model's *correct* own images help a ShapesWorld base? A plain-loop probe
(no Ray, no DeepSpeed, no self-judge) that separates "the judge supervises badly" from "training on own
samples hurts this model":

    python examples/probe_self_sft.py --model builtin:shapes-base --lr 1e-4 --data-guidance 3

1. samples `--n` images for each of the experiments' 192 train prompts at `--data-guidance`;
2. keeps those ShapesWorld's checker accepts (an oracle judge: precision 100%);
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
from rayunify.models.janus import JanusUnifiedModel
from rayunify.shapes.checker import check_batch
from rayunify.shapes.world import Spec, generate_prompts
from rayunify.types import Prompt, SamplingSettings


def sample(um: JanusUnifiedModel, prompts: list[Prompt], n: int, guidance: float, seed: int):
    """(image tokens, checker verdicts), n images per prompt, grouped by prompt."""
    with torch.no_grad():
        out = um.generate([p.text for p in prompts], n=n, settings=SamplingSettings(guidance_scale=guidance), seed=seed, decode=True)
    specs = [Spec.from_dict(p.spec) for p in prompts for _ in range(n)]
    return out.image_tokens, np.array([r.aligned for r in check_batch(out.images, specs)])


def accuracy(um: JanusUnifiedModel, prompts: list[Prompt]) -> str:
    um.model.eval()
    return " ".join(f"g{g:g} {sample(um, prompts, 4, g, seed=123)[1].mean():.3f}" for g in (3.0, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:shapes-base")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--data-guidance", type=float, default=3.0)
    parser.add_argument("--prompt-dropout", type=float, default=0.0)
    parser.add_argument("--geometry", choices=["conditional", "cfg"], default="conditional",
                        help="train log-probs under the conditional model or the guided one (at --data-guidance)")
    parser.add_argument("--trainable", choices=["language_model", "lora"], default="language_model")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    um = JanusUnifiedModel.from_pretrained(resolve_model_path(args.model), trainable=args.trainable)
    train, held_out = generate_prompts(192, 96, seed=0)
    print(f"before: held-out {accuracy(um, held_out)} | train {accuracy(um, train)}", flush=True)
    tokens, accepted = sample(um, train, args.n, args.data_guidance, seed=0)
    texts = [p.text for p in train for _ in range(args.n)]
    keep = np.nonzero(accepted)[0]
    print(f"checker-accepted training images: {len(keep)} of {len(accepted)}", flush=True)
    params = [p for p in um.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(0)
    um.model.train()
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
