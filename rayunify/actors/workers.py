"""The model-holding roles: rollout (generation) and judge (understanding). Plain classes; the driver
wraps them as Ray actors with resources from config.

Both hold a `PolicyModule`, so they accept the learner's weight pushes name for name and refuse stale or
partial ones; both answer the one receiver protocol (`rayunify.actors.collective.WeightReceiver`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rayunify.actors import name_cpu_accelerator
from rayunify.actors.collective import ChannelSpec, ModuleReceiver, UpdateHeader
from rayunify.batching import prompt_seeds
from rayunify.config import Config
from rayunify.metrics import PROBE_GEN_LOGP, PROBE_P_YES
from rayunify.models.base import GenerationOutput
from rayunify.types import JudgedSample, Judgement, Prompt, Sample
from rayunify.weights import WeightUpdate


def _limit_threads(num_cpus: float) -> None:
    # Several model-holding actors share the machine; torch's default of "all cores each" oversubscribes.
    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    name_cpu_accelerator()  # every model-holding actor starts here


def prompts_per_call(cfg: Config, n: int | None = None) -> int | None:
    """Whole prompts per generate call under rollout.max_rows (CFG twins count); None: no bound. The driver
    hands a chunk to its rollout actor in parts of this many prompts, so no actor holds more at once."""
    if cfg.rollout.max_rows is None:
        return None
    return max(1, cfg.rollout.max_rows // cfg.sampling.rows_per_prompt(n))


@dataclass
class Rollout:
    """A chunk of generated samples with their decoded images (for the judge and for logging only)."""

    chunk: int
    samples: list[Sample]
    images: np.ndarray  # (len(samples), H, W, 3) uint8
    generate_s: float
    decode_s: float
    first_row: int = 0  # samples of its chunk before this part (a chunk handed over in parts)


class ModelHolder(ModuleReceiver):
    """Shared by rollout and judge roles: builds the unified model and takes weight pushes into it."""

    def __init__(self, config: dict[str, Any], num_cpus: float = 1.0):
        from rayunify.actors.policy import PolicyModule
        from rayunify.models import build_model

        _limit_threads(num_cpus)
        self.cfg = Config.model_validate(config)
        self.unified = build_model(self.cfg.model)
        self.policy = PolicyModule(self.unified)
        super().__init__(self.policy, expected_names=[n for n, p in self.policy.named_parameters() if p.requires_grad])


class RolloutWorker(ModelHolder):
    def generate(self, prompts: list[Prompt], n: int, seed: int, chunk: int, first: int = 0, after: Any = None) -> Rollout:
        """`first`: the index of prompts[0] within its chunk when the driver hands a chunk over in parts of
        whole prompts (`prompts_per_call`); seeds and sample ids are the chunk's, so a part's images are the
        ones the whole chunk in one task would draw. `after`: unused here; the driver passes an earlier
        part's judgement so that Ray starts this task only once that part is judged (a bound on the images
        waiting for the judge)."""
        start = time.perf_counter()
        out = self._generate_in_calls([p.text for p in prompts], n, seed, first)
        generated = time.perf_counter()
        images = np.concatenate([self.unified.decode_images(t) for t in out.image_tokens.split(self._rows_per_call(n))])
        tokens = out.image_tokens.cpu().numpy()
        steps = None if out.commit_steps is None else out.commit_steps.cpu().numpy()
        settings = self.cfg.sampling.settings()
        grpo = self.cfg.algorithm.type == "grpo"
        behaviour = self.behaviour_logprobs(prompts, n, out.image_tokens, out.commit_steps) if grpo else None
        samples = [
            Sample(
                sample_id=f"{seed}-{chunk}-{first * n + i}",
                prompt=prompts[i // n],
                image_tokens=tokens[i],
                policy_version=self.version,
                sampling=settings,
                behaviour_logprobs=None if behaviour is None else behaviour[i],
                commit_steps=None if steps is None else steps[i],
            )
            for i in range(len(tokens))
        ]
        return Rollout(chunk, samples, images, generated - start, time.perf_counter() - generated, first * n)

    @torch.no_grad()
    def behaviour_logprobs(
        self, prompts: list[Prompt], n: int, tokens: torch.Tensor, steps: torch.Tensor | None
    ) -> np.ndarray:
        """GRPO's behaviour log-probs (rows, T) float32: the learner's own teacher-forced pass (same
        geometry and guidance), with the weights that drew the tokens, one prompt's group at a time.

        Not generation's sampling log-probs: those are the guided distribution at temperature 1, which
        differs from what the learner scores unless geometry=cfg, temperature=1 and no top_k; a ratio
        against them would not start at 1."""
        texts = [p.text for p in prompts for _ in range(n)]
        rows = [
            behaviour_logprobs(
                self.policy, texts[i : i + n], tokens[i : i + n], self.cfg.sampling,
                None if steps is None else steps[i : i + n],
            )  # fmt: skip
            for i in range(0, len(texts), n)
        ]
        return np.concatenate(rows)

    def _rows_per_call(self, n: int) -> int:
        """Samples per generate call under rollout.max_rows (whole prompts; CFG twins count); all if None."""
        per_call = prompts_per_call(self.cfg, n)
        return 2**62 if per_call is None else per_call * n

    def _generate_in_calls(self, texts: list[str], n: int, seed: int, first: int = 0) -> GenerationOutput:
        """rollout.max_rows None: one call seeded by `seed`. Otherwise calls of whole prompts, each prompt
        seeded on its own (`prompt_seeds`, by its index in the chunk), so its images are the same whatever
        max_rows is and however the chunk is handed over."""
        settings = self.cfg.sampling.settings()
        per_call = prompts_per_call(self.cfg, n)
        if per_call is None:
            if first:
                raise ValueError("a chunk is handed over in parts only under rollout.max_rows")
            return self.unified.generate(texts, n=n, settings=settings, seed=seed)
        seeds = prompt_seeds(seed, first + len(texts))[first:]
        outs = [
            self.unified.generate(texts[i : i + per_call], n=n, settings=settings, seed=seeds[i : i + per_call])
            for i in range(0, len(texts), per_call)
        ]
        steps = None if outs[0].commit_steps is None else torch.cat([o.commit_steps for o in outs])
        return GenerationOutput(
            torch.cat([o.image_tokens for o in outs]), torch.cat([o.logprobs for o in outs]), commit_steps=steps
        )

    def evaluate(self, prompts: list[Prompt], n: int, seed: int) -> tuple[dict, list]:
        """The current model's unification report against ShapesWorld's checker (or the guard reference)."""
        from rayunify.evaluation import evaluate
        from rayunify.judges.base import build_judge

        reference = build_judge(self.cfg.guard.reference, lambda: self.unified)
        result = evaluate(self.unified, prompts, reference, n_per_prompt=n, settings=self.cfg.sampling.settings(), seed=seed)
        return result.report, result.items

    def probe(
        self, prompts: list[str], images: np.ndarray, tokens: np.ndarray, commit_steps: np.ndarray | None = None
    ) -> dict[str, float]:
        """The paper's false-positive probe: the judge's P(yes) and the generation log-likelihood of fixed
        images the base model accepted but the reference rejects. Co-improvement: both fall together. Besides
        the means, each image's figures, from which the driver takes each image's change since the start."""
        judgements = self.unified.judge(list(images), prompts)
        with torch.no_grad():
            # Copies: the arrays arrive read-only from Ray's object store, and on CPU `.to(device)` inside the
            # model is no copy, so an in-place op there would write shared memory (torch warns: undefined).
            logps = self.unified.image_logprobs(
                prompts, torch.tensor(tokens), geometry=self.cfg.sampling.geometry,
                guidance_scale=self.cfg.sampling.guidance_scale,
                commit_steps=None if commit_steps is None else torch.tensor(commit_steps),
            )  # fmt: skip
        per_image = logps.float().mean(dim=1)
        return {
            "probe/p_yes": float(np.mean([j.score for j in judgements])),
            "probe/gen_logp_per_token": float(logps.mean()),
            "probe/size": float(len(prompts)),
            PROBE_P_YES: [float(j.score) for j in judgements],  # per image, for ΔU (popped by the driver)
            PROBE_GEN_LOGP: per_image.tolist(),  # per image and token, for ΔG (popped by the driver)
        }

    def judge_images(self, prompts: list[str], images: np.ndarray) -> list[Judgement]:
        """The current model's own verdicts on given images (the driver's fixed-image check)."""
        return self.unified.judge(list(images), prompts)

    def export(self, path: str) -> str:
        self.unified.save_pretrained(path)
        return path


@torch.no_grad()
def behaviour_logprobs(
    policy: Any, texts: list[str], tokens: torch.Tensor, sampling: Any, steps: torch.Tensor | None = None
) -> np.ndarray:
    """Per-token log-probs (rows, T) float32 of `tokens` under `policy`, as the GRPO learner scores them."""
    was_training = policy.training
    policy.eval()
    try:
        logps = policy(texts, tokens, sampling.geometry, sampling.guidance_scale, steps)
    finally:
        policy.train(was_training)
    return logps.float().cpu().numpy()


class JudgeWorker:
    """The training judge (and the guard's reference judge, on a share of samples). A self-judge with
    live weights takes pushes through its model holder (`WeightReceiver`)."""

    def __init__(self, config: dict[str, Any], num_cpus: float = 1.0):
        from rayunify.judges.base import build_judge

        _limit_threads(num_cpus)
        self.cfg = Config.model_validate(config)
        self.holder: ModelHolder | None = None
        self.judge = build_judge(self.cfg.judge, self._model)
        self.reference = build_judge(self.cfg.guard.reference, self._model) if self.cfg.guard.enabled else None
        self.reward_judges = self._reward_judges()

    def _model(self):
        if self.holder is None:
            self.holder = ModelHolder(self.cfg.model_dump(mode="json"))
        return self.holder.unified

    def _reward_judges(self) -> list[tuple[Any, float]] | None:
        """GRPO's weighted reward judges; a term that repeats the training judge reuses its judgements
        (None in the judge slot), one that repeats the guard's reference shares its model. None: not GRPO,
        or the training judge alone is the reward."""
        algorithm = self.cfg.algorithm
        if algorithm.type != "grpo" or algorithm.rewards is None:
            return None
        return [(self._reward_judge(term.judge), term.weight) for term in algorithm.rewards]

    def _reward_judge(self, judge_cfg: Any) -> Any:
        from rayunify.judges.base import build_judge

        if judge_cfg == self.cfg.judge:
            return None
        if self.reference is not None and judge_cfg == self.cfg.guard.reference:
            return self.reference
        return build_judge(judge_cfg, self._model)

    def apply_weight_update(self, update: WeightUpdate) -> tuple[int, float]:
        return self._holder_or_raise().apply_weight_update(update)

    def join_push_channel(self, spec: ChannelSpec, rank: int) -> None:
        self._holder_or_raise().join_push_channel(spec, rank)

    def receive_weight_broadcast(self, header: UpdateHeader) -> tuple[int, float]:
        return self._holder_or_raise().receive_weight_broadcast(header)

    def _holder_or_raise(self) -> ModelHolder:  # a judge with no model (e.g. the checker) takes no pushes
        if self.holder is None:
            raise RuntimeError("this judge holds no model: it takes no weight pushes")
        return self.holder

    def get_version(self) -> int:
        return -1 if self.holder is None else self.holder.version

    def judge_rollout(
        self, rollout: Rollout, reference_fraction: float, seed: int
    ) -> tuple[list[JudgedSample], float, float]:
        """Judge a chunk (or a part of one); the guard's reference also scores a seeded `reference_fraction`
        of it, drawn as for the whole chunk. Returns the judged samples, the judging seconds and the
        rollout's own seconds (so the driver need not keep the rollout, images and all, to time it)."""
        start = time.perf_counter()
        prompts = [s.prompt for s in rollout.samples]
        verdicts = self._judge_in_calls(self.judge, list(rollout.images), prompts)
        references: list[Any] = [None] * len(prompts)
        if self.reference is not None and reference_fraction > 0:
            draws = np.random.default_rng(seed).random(rollout.first_row + len(prompts))[rollout.first_row :]
            chosen = np.flatnonzero(draws < reference_fraction)
            if len(chosen):
                ref = self._judge_in_calls(self.reference, [rollout.images[i] for i in chosen], [prompts[i] for i in chosen])
                for i, j in zip(chosen, ref, strict=True):
                    references[i] = j
        judged = [
            JudgedSample(sample, verdict, reference)
            for sample, verdict, reference in zip(rollout.samples, verdicts, references, strict=True)
        ]
        if self.cfg.algorithm.type == "grpo":
            self._add_rewards(judged, rollout.images)
        return judged, time.perf_counter() - start, rollout.generate_s + rollout.decode_s

    def _add_rewards(self, judged: list[JudgedSample], images: np.ndarray) -> None:
        """GRPO: every sample's reward, from the training judge's judgement or the weighted reward judges."""
        from rayunify.rewards import weighted_rewards

        own = [item.judgement for item in judged]
        terms = self.reward_judges or [(None, 1.0)]
        prompts = [item.sample.prompt for item in judged]
        per_judge = [own if judge is None else self._judge_in_calls(judge, list(images), prompts) for judge, _ in terms]
        rewards, invalid = weighted_rewards(per_judge, [w for _, w in terms], self.cfg.algorithm.reward)
        for item, reward, bad in zip(judged, rewards, invalid, strict=True):
            item.reward, item.invalid_rewards = reward, bad

    def _judge_in_calls(self, judge: Any, images: list[np.ndarray], prompts: list[Prompt]) -> list[Judgement]:
        """judge_actors.batch_size images per call (None: all at once); verdicts in the images' order."""
        size = self.cfg.judge_actors.batch_size or max(1, len(images))
        return [v for i in range(0, len(images), size) for v in judge.judge(images[i : i + size], prompts[i : i + size])]
