"""Trains the ShapesWorld base model: a small Janus, from scratch, that draws ShapesWorld images and judges them.

The self-improvement methods need a starting model that *contradicts itself*: its understanding branch is
better than its generation, so it rejects a good share of its own images, and rightly so. `train_base` makes
one in minutes on a CPU:

1. trains the VQ tokenizer (`vq.train_vq`): 32x32 images <-> 8x8 = 64 tokens;
2. trains a BPE tokenizer on every prompt text and the judge's texts, so each word is one token;
3. builds a `JanusForConditionalGeneration` whose grids match the tokenizer (understanding: 64 patches of
   4x4 px; generation: 64 image tokens), copies the VQ weights in (frozen from then on), pretrains the
   vision tower alone on a per-patch objective (`objectives.PatchProbe`) and trains the rest jointly,
   each step on
   - generation: NLL of the VQ tokens of fresh renders of train prompts, with classifier-free-guidance
     prompt dropout (so guidance works when sampling);
   - understanding: the paper's judge question answered " The score is 1/0" + EOS, labelled by the exact
     checker, half accepted and half rejected (`data.ShapesData`), and, from `own_start` of the steps on,
     the model's own samples for train prompts, drawn as evaluation draws them: without these the judge
     stays at chance on the model's own images however long it trains on renders;
   - the patch objective on the understanding batch's images (same forward as the judge's).
4. saves it in the HF layout with `shapes_base.json` (config, timings, losses) and the prompt splits.

After construction the loop reaches the model only through the `UnifiedModel` interface.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rayunify.judges import question
from rayunify.models.base import UnifiedModel
from rayunify.models.janus.factory import build_processor, janus_config, set_generation_defaults
from rayunify.shapes.cache import EVAL_PROMPTS_FILE, INFO_FILE, TRAIN_PROMPTS_FILE
from rayunify.shapes.data import ShapesData
from rayunify.shapes.objectives import JudgeLoss, PatchProbe, cosine_schedule
from rayunify.shapes.recipe import BASE_VERSION, BaseConfig, size_config, split_prompts
from rayunify.shapes.vq import train_vq
from rayunify.shapes.world import save_prompts_jsonl
from rayunify.shapes.worlds import world_ops
from rayunify.types import SamplingSettings, Verdict


def train_base(
    out: str | Path,
    size: str = "base",
    seed: int = 0,
    progress: bool = True,
    config: BaseConfig | None = None,
    device: str = "cpu",
    vq=None,
) -> Path:
    """Trains the base model of `size` (or `config`) from scratch and saves it to `out` (HF layout).

    Deterministic for a seed on a given machine, torch build, device and `config.threads`. The caller's
    torch RNG and thread count are restored afterwards. `vq`: an already trained tokenizer for `config.vq`
    to reuse (a sweep over recipes trains it once); trained here when None. `device`: where the VQ and the
    model train ("cuda" for a GPU; the data is rendered and checked on the CPU either way).
    """
    cfg = config or size_config(size)
    out = Path(out)
    vq_given = vq is not None
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if vq is None:
                vq = train_vq(cfg.vq, seed=seed, progress=progress, device=device, images=world_ops(cfg.world).vq_images)
            vq = vq.to(device)
            vq_seconds = time.perf_counter() - started
            train_prompts, eval_prompts = split_prompts(cfg)
            um = _build_model(cfg, vq, seed)
            um.module().to(device)
            data = ShapesData(vq, train_prompts, cfg, np.random.default_rng([seed, 1]))
            history = _train(um, data, cfg, np.random.default_rng([seed, 2]), progress)
    finally:
        torch.set_num_threads(threads)
    train_seconds = time.perf_counter() - started - vq_seconds
    um.module().eval()
    um.save_pretrained(out)
    save_prompts_jsonl(out / EVAL_PROMPTS_FILE, eval_prompts)
    if cfg.world == "v1":  # v2's 20,630 would take 6 MB of a shipped base; `split_prompts(cfg)` remakes them
        save_prompts_jsonl(out / TRAIN_PROMPTS_FILE, train_prompts)
    info = {
        "version": BASE_VERSION,
        "size": size if config is None else "custom",
        "seed": seed,
        "device": device,
        "vq_given": vq_given,  # the tokenizer was handed in (e.g. by a sweep), not trained here
        "config": cfg.to_dict(),
        "timings": {
            "vq_s": round(vq_seconds, 1),
            "joint_s": round(train_seconds, 1),
            "total_s": round(time.perf_counter() - started, 1),
        },
        "train_loss": history,
        "prompts": {"train": len(train_prompts), "eval": len(eval_prompts), "eval_file": EVAL_PROMPTS_FILE},
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return out


def tokenizer_corpus(world: str = "v1") -> list[str]:
    """Every text of the ShapesWorld `world` as it appears after "<|User|>:" and inside the judge question,
    plus the judge's fixed texts, so each word becomes a single token."""
    texts = world_ops(world).texts()
    fixed = [question.SYSTEM_PROMPT] + [question.answer_text(v) for v in (Verdict.ACCEPT, Verdict.REJECT)]
    return [f": {t}" for t in texts] + [question.judge_question(t) for t in texts] + fixed * 20


def _build_model(cfg: BaseConfig, vq, seed: int) -> UnifiedModel:
    """A Janus whose grids fit the tokenizer `vq`, its VQ weights copied in and frozen, the rest trainable."""
    from transformers import JanusForConditionalGeneration, JanusVQVAEConfig

    from rayunify.models.janus.model import JanusUnifiedModel

    arch = cfg.arch
    wanted = {
        "grid": cfg.vq.tokens_per_side, "vq_embed_dim": cfg.vq.embed_dim, "vq_codebook": cfg.vq.num_embeddings,
        "vq_base_channels": cfg.vq.base_channels, "vq_channel_multiplier": cfg.vq.channel_multiplier,
        "vq_latent_channels": cfg.vq.latent_channels, "gen_aligner_dim": arch.hidden_size,
    }  # fmt: skip
    wrong = [f"{k}={getattr(arch, k)!r} (needs {v!r})" for k, v in wanted.items() if getattr(arch, k) != v]
    if wrong:
        raise ValueError(f"config.arch does not fit config.vq: {', '.join(wrong)}; build it with arch_for()")
    processor = build_processor(arch, tokenizer_corpus(cfg.world), phrases=question.fixed_prefix_phrases())
    config = janus_config(arch, processor.tokenizer)
    # The generation side must be exactly the trained tokenizer, plus the projections into the LM.
    vq_config = cfg.vq.janus_config().to_dict()
    vq_config.update(projection_dim=arch.gen_aligner_dim, image_token_embed_dim=arch.hidden_size)
    config.vq_config = JanusVQVAEConfig(**{k: v for k, v in vq_config.items() if k not in ("model_type", "transformers_version")})
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config)
    if cfg.fan_in_init:
        _fan_in_init(model)
    model.model.vqmodel.load_state_dict(vq.state_dict())
    with torch.no_grad():  # image-token input embeddings start as the VQ's own code vectors (similar codes close)
        codebook = torch.nn.functional.normalize(vq.quantize.embedding.weight, dim=-1)
        model.model.generation_embeddings.weight.copy_(codebook)
    set_generation_defaults(model, processor.tokenizer, guidance_scale=cfg.guidance_scale)
    um = JanusUnifiedModel(model, processor)
    # Base training trains everything but the tokenizer (JanusUnifiedModel freezes all but the LM).
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith("model.vqmodel."))
    return um


def _fan_in_init(model) -> None:
    """PyTorch's own (fan-in scaled) init for every linear and conv layer: transformers' N(0, 0.02) is far
    below fan-in scale for layers this narrow, and with it the language model took very long to start
    reading the image at all (its caption loss stayed at its text-only level)."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.reset_parameters()


def _train(um: UnifiedModel, data: ShapesData, cfg: BaseConfig, rng: np.random.Generator, progress: bool) -> dict[str, Any]:
    probe = PatchProbe(um)
    pretrain = _pretrain_vision(probe, data, cfg, progress)
    history = _train_jointly(um, probe, data, cfg, rng, progress)
    return {"vision_pretrain_patch": pretrain, **history}


def _pretrain_vision(probe: PatchProbe, data: ShapesData, cfg: BaseConfig, progress: bool) -> list[float]:
    """The patch objective alone on the vision tower: cheap (no language model), and the joint steps then
    start from an image encoder whose features already say what lies where. Returns the mean patch loss
    of each tenth of the steps."""
    params = [*probe.um.vision_parameters(), *probe.head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    losses = []
    for _ in tqdm(range(cfg.vision_pretrain_steps), desc="pretrain vision", disable=not progress):
        images = data.understanding_batch(cfg.und_batch)[0]
        loss = probe.loss_on(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
    return [round(float(np.mean(chunk)), 5) for chunk in np.array_split(losses, 10) if len(chunk)]


def _train_jointly(um: UnifiedModel, probe: PatchProbe, data: ShapesData, cfg: BaseConfig, rng: np.random.Generator, progress: bool) -> dict[str, Any]:
    model = um.module()
    params = [p for p in model.parameters() if p.requires_grad] + list(probe.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_schedule(step, cfg.steps, cfg.warmup))
    judge_loss = JudgeLoss(um)
    model.train()
    keys = ("gen", "und", "caption", "patch", "und_acc")
    history: dict[str, list[float]] = {"step": [], **{k: [] for k in keys}}
    window: dict[str, list[float]] = {k: [] for k in keys}
    log_every = max(cfg.steps // 50, 1)
    bar = tqdm(range(cfg.steps), desc="train base", disable=not progress)
    own_from = int(cfg.own_start * cfg.steps) if cfg.mix.own > 0 else cfg.steps
    for step in bar:
        if step >= own_from and (step - own_from) % cfg.own_every == 0:
            _add_own_samples(um, data, cfg, seed=int(rng.integers(2**31)))
        prompts, tokens = data.generation_batch(cfg.gen_batch)
        drop = torch.from_numpy(rng.random(len(prompts)) < cfg.prompt_dropout)
        gen_loss = -um.image_logprobs(prompts, tokens, drop_prompt=drop).mean()
        und_batch = data.understanding_batch(cfg.und_batch)
        judged = judge_loss(*und_batch)
        und_loss, caption_loss, und_acc = judged.answer, judged.caption, judged.accuracy
        patch_loss = probe.loss(judged.vision_features, und_batch[0])
        loss = gen_loss + cfg.und_weight * und_loss + cfg.caption_weight * caption_loss + cfg.patch_weight * patch_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        for key, value in zip(keys, (gen_loss, und_loss, caption_loss, patch_loss, und_acc), strict=True):
            window[key].append(value.item())
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            history["step"].append(step + 1)
            for key in keys:
                history[key].append(round(float(np.mean(window[key])), 5))
                window[key].clear()
            bar.set_postfix(gen=history["gen"][-1], und=history["und"][-1], und_acc=history["und_acc"][-1])
    return history


@torch.no_grad()
def _add_own_samples(um: UnifiedModel, data: ShapesData, cfg: BaseConfig, seed: int) -> None:
    """Samples images for random train prompts as evaluation does and hands them to the judge's data."""
    prompts = data.sample_prompts(cfg.own_batch)
    um.module().eval()
    out = um.generate([p.text for p in prompts], n=1, settings=SamplingSettings(guidance_scale=cfg.guidance_scale), seed=seed, decode=True)
    um.module().train()
    assert out.images is not None  # decode=True
    data.add_own(prompts, out.images)
