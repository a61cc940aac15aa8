"""What the driver measures besides training: evaluation, the false-positive probe, fixed-image re-judging,
the co-degradation guard, and the image grids and tables that go to the run directory and wandb."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayunify.config import Config
from rayunify.guard import CoDegradationAlarm, CoDegradationGuard
from rayunify.intervals import write_eval_records, write_judge_set_records
from rayunify.levels import acceptance_by_category
from rayunify.metrics import (
    PROBE_GEN_LOGP,
    PROBE_P_YES,
    VerdictRecord,
    flatten,
    judge_set_report,
    probe_changes,
    unification_metrics,
)
from rayunify.types import JudgedSample, Verdict

FIXED_KEYS = ("judge_accuracy", "judge_fpr", "judge_fnr", "nonunified", "mean_self_score", "invalid_rate", "count")


@dataclass
class ProbeSet:
    """The paper's false-positive probe: the base model's own images that its judge accepts but the
    reference rejects, frozen at the start. Co-improvement: their P(yes) and log-likelihood fall together."""

    prompts: list[str]
    images: np.ndarray  # (N, H, W, 3) uint8
    tokens: np.ndarray  # (N, T) image tokens
    commit_steps: np.ndarray | None = None  # (N, T) Show-o's commit steps (Sample.commit_steps); else None


@dataclass
class FixedImages:
    """The start evaluation's images, re-judged at every evaluation (`fixed/*`). `eval/judge_*` score the
    judge on the model's current images, which change as generation trains (a better generator's remaining
    errors are near misses, harder to reject); on fixed images only the judge can change."""

    prompts: list[str]
    categories: list[str]
    references: list[int]  # the reference judge's verdicts
    images: np.ndarray


def guard_due(cfg: Config, step: int) -> bool:
    """Online: every `guard.every` steps. Offline: whenever samples are drawn (the build, the replays and the
    fresh sample at each epoch's end), which `every` would otherwise skip by where epochs happen to end."""
    return cfg.guard.enabled and (cfg.trainer.mode == "offline" or step % cfg.guard.every == 0)


def guard_records(judged: list[JudgedSample]) -> tuple[list[VerdictRecord], list[str]]:
    """The samples the guard's reference also scored, as the guard reads them, with their prompts' texts
    (the guard clusters errors by prompt)."""
    scored = [j for j in judged if j.reference is not None]
    records = [
        VerdictRecord(j.sample.prompt.category, j.judgement.verdict, j.judgement.score, j.reference.verdict)  # type: ignore[union-attr]
        for j in scored
    ]
    return records, [j.sample.prompt.text for j in scored]


def reference_fraction(cfg: Config, step: int) -> float:
    """The share of a step's samples the guard's reference judge also scores."""
    return cfg.guard.fraction if guard_due(cfg, step) else 0.0


class Monitor:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        logger: Any,  # rayunify.runlog.RunLogger
        progress: Any,  # tqdm
        eval_prompts: list[Any],
        train_prompts: list[Any],
        on_first_rollout: Callable[..., Any],  # runs a RolloutWorker method on the actor with current weights
        save_checkpoint: Callable[[], Any],  # before a guard alarm stops the run
    ) -> None:
        self.cfg, self.run_dir, self.logger, self.progress = cfg, run_dir, logger, progress
        self.eval_prompts, self.train_prompts = eval_prompts, train_prompts
        self.on_first_rollout, self.save_checkpoint = on_first_rollout, save_checkpoint
        self.guard = CoDegradationGuard(min_agreement=cfg.guard.min_agreement, window=cfg.guard.window)
        self.probe: ProbeSet | None = None
        self.fixed_images: FixedImages | None = None
        # The fixed, labelled judge sets by metric prefix: "judgeset" on the eval prompts (trainer.judge_set_size),
        # "judgeset_train" on the training prompts (trainer.judge_set_train_size).
        self.judge_sets: dict[str, Any] = {}
        self.start_acceptance: dict[str, float] = {}  # the model's own acceptance rate per category at the start

    # ------------------------------------------------------------------ evaluation, probe, fixed images
    def start(self) -> dict[str, float]:
        """The base model's evaluation; its images also make the probe and the fixed-image set."""
        metrics, items = self.evaluate("start", 0)
        self.start_acceptance = acceptance_by_category((i.prompt.category, i.own.verdict) for i in items)
        self.probe = self._probe_set(items)
        self.fixed_images = self._fixed_images(items)
        self.judge_sets = self.load_judge_sets()
        return {**metrics, **self.probe_metrics("start")}

    def evaluate_all(self, tag: str, step: int) -> dict[str, float]:
        metrics, _ = self.evaluate(tag, step)
        return {**metrics, **self.probe_metrics(tag)}

    def evaluate(self, tag: str, step: int) -> tuple[dict[str, float], list[Any]]:
        from rayunify.evaluation import save_grid

        trainer = self.cfg.trainer
        prompts = self.eval_prompts[: trainer.eval_prompts]
        report, items = self.on_first_rollout("evaluate", prompts, trainer.eval_samples_per_prompt, trainer.seed + 99)
        path = self.run_dir / "images" / f"eval_{tag}.png"
        path.parent.mkdir(exist_ok=True)
        save_grid(items[:48], path)
        (self.run_dir / f"eval_{tag}.json").write_text(json.dumps(report, indent=2))
        write_eval_records(items, self.run_dir / f"eval_{tag}_records.jsonl")
        self.logger.log_image(step, "eval/samples", path, caption=f"step {step}")
        return flatten(report, prefix="eval/"), items

    def probe_metrics(self, tag: str) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.probe is not None:
            metrics.update(self._probe(tag))
        if self.fixed_images is not None:
            metrics.update(self._rejudge_fixed_images(self.fixed_images))
        for name, judge_set in self.judge_sets.items():
            metrics.update(self._judge_the_judge_set(name, judge_set, tag))
        return metrics

    def _probe(self, tag: str) -> dict[str, float]:
        """The probe's means, and each image's change since the start (ΔU, ΔG; `metrics.probe_changes`).
        Each evaluation's per-image figures go to probe_<tag>_records.jsonl; the start's are read back from
        there, so a resumed run compares with the same start."""
        p = self.probe
        assert p is not None
        metrics = self.on_first_rollout("probe", p.prompts, p.images, p.tokens, p.commit_steps)
        per_image = {key: metrics.pop(key) for key in (PROBE_P_YES, PROBE_GEN_LOGP)}
        with open(self.run_dir / f"probe_{tag}_records.jsonl", "w") as f:
            for i, prompt in enumerate(p.prompts):
                f.write(json.dumps({"prompt": prompt, **{key: values[i] for key, values in per_image.items()}}) + "\n")
        if tag != "start":
            metrics.update(probe_changes(self._probe_start(), per_image))
        return metrics

    def _probe_start(self) -> dict[str, list[float]]:
        with open(self.run_dir / "probe_start_records.jsonl") as f:
            rows = [json.loads(line) for line in f]
        return {key: [row[key] for row in rows] for key in (PROBE_P_YES, PROBE_GEN_LOGP)}

    def load_judge_sets(self) -> dict[str, Any]:
        """The fixed judge sets of the run's eval (and training) prompts, drawn from the starting model (cached
        on disk, so every run from the same model and split is scored on the same images, and a resumed run
        finds them again); a copy of each in the run dir."""
        wanted = {"judgeset": (self.cfg.trainer.judge_set_size, self.eval_prompts, "judge_set.npz"),
                  "judgeset_train": (self.cfg.trainer.judge_set_train_size, self.train_prompts, "judge_set_train.npz")}  # fmt: skip
        sets = {}
        for name, (size, prompts, file_name) in wanted.items():
            if size > 0:
                sets[name] = self._load_judge_set(prompts, size)
                sets[name].save(self.run_dir / file_name)
                self.progress.write(f"[{name}] {sets[name].summary()}")
        return sets

    def _load_judge_set(self, prompts: list[Any], size: int) -> Any:
        from rayunify import builtins

        source = builtins.prompt_source(self.cfg.prompts.source)
        assert source.judge_set is not None  # Config checks it
        model_dir = builtins.resolve_model_path(self.cfg.model.path, seed=self.cfg.model.builtin_seed)
        return source.judge_set(model_dir, prompts, size, self.cfg.prompts.seed, self.cfg.sampling.settings())

    def _judge_the_judge_set(self, name: str, judge_set: Any, tag: str) -> dict[str, float]:
        judgements = self.on_first_rollout("judge_images", judge_set.texts, judge_set.images)
        path = self.run_dir / f"{name}_{tag}_records.jsonl"
        write_judge_set_records(
            judge_set.texts, judge_set.categories, list(judge_set.labels), judgements, path
        )
        report = judge_set_report(
            judge_set.categories, list(judge_set.labels), [j.score for j in judgements], [j.verdict for j in judgements]
        )
        return flatten(report, prefix=f"{name}/")

    def _probe_set(self, items: list[Any]) -> ProbeSet | None:
        chosen = [i for i in items if i.own.verdict == Verdict.ACCEPT and i.reference.verdict == Verdict.REJECT]
        chosen = chosen[: self.cfg.guard.probe_size]
        if not chosen:
            return None
        steps = None if chosen[0].commit_steps is None else np.stack([i.commit_steps for i in chosen])
        return ProbeSet(
            [i.prompt.text for i in chosen], np.stack([i.image for i in chosen]), np.stack([i.tokens for i in chosen]), steps
        )

    def _fixed_images(self, items: list[Any]) -> FixedImages | None:
        if not self.cfg.trainer.eval_fixed_images or not items:
            return None
        return FixedImages(
            prompts=[i.prompt.text for i in items],
            categories=[i.prompt.category for i in items],
            references=[int(i.reference.verdict) for i in items],
            images=np.stack([i.image for i in items]),
        )

    def _rejudge_fixed_images(self, f: FixedImages) -> dict[str, float]:
        judgements = self.on_first_rollout("judge_images", f.prompts, f.images)
        records = [
            VerdictRecord(category, j.verdict, j.score, Verdict(reference))
            for category, j, reference in zip(f.categories, judgements, f.references, strict=True)
        ]
        m = unification_metrics(records)
        return {f"fixed/{k}": m[k] for k in FIXED_KEYS}

    # ------------------------------------------------------------------ the guard
    def check_guard(self, step: int, judged: list[JudgedSample]) -> dict[str, float]:
        """Agreement with the reference on this step's samples (when due); an alarm may stop the run."""
        return self.check_records(step, *guard_records(judged))

    def check_records(self, step: int, records: list[VerdictRecord], prompts: list[str]) -> dict[str, float]:
        """`check_guard` on records gathered beforehand (an offline build's chunks, kept across a resume)."""
        if not guard_due(self.cfg, step):
            return {}
        if not records:
            return {}
        verdict = self.guard.observe(records, prompts)  # errors clustered by prompt
        for alarm in verdict.alarms:
            self.progress.write(f"[guard] step {step}: {alarm}")
            if self.cfg.guard.stop_on_alarm:
                self.save_checkpoint()
                raise CoDegradationAlarm(f"{alarm} (guard.stop_on_alarm=true; checkpoint saved)")
        return verdict.metrics

    # ------------------------------------------------------------------ images of a step
    def log_step_images(self, step: int, rollout: Any, samples: list[JudgedSample]) -> None:
        from rayunify.evaluation import JudgedImage, save_grid

        items = [
            JudgedImage(s.sample.prompt, img, s.judgement, s.reference or s.judgement, s.sample.image_tokens,
                        s.sample.commit_steps)
            for s, img in zip(samples[:32], rollout.images[:32], strict=False)
        ]
        path = self.run_dir / "images" / f"step_{step:05d}.png"
        path.parent.mkdir(exist_ok=True)
        save_grid(items, path)
        self.logger.log_image(step, "rollout/samples", path)
        self.logger.log_table(
            step, "rollout/judged", ["prompt", "verdict", "p_yes", "answer"],
            [[s.sample.prompt.text, int(s.judgement.verdict), s.judgement.score, s.judgement.answer] for s in samples[:32]],
        )  # fmt: skip
