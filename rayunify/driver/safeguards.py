"""What keeps a run safe besides the loop itself: the training-health and divergence checks, a stop at a
step boundary on SIGINT/SIGTERM, a learner failure turned into one line with where to resume; and the two
moments that are not steps: ordering an adaptive curriculum after the start evaluation, and restoring a
checkpoint. Collaborators of `Trainer`, kept out of it so the loop stays readable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rayunify.config import Config
from rayunify.divergence import DivergenceGuard
from rayunify.driver.build import BUILD_FILE, load_build
from rayunify.driver.runtime import ray_get
from rayunify.driver.stopping import STOP, LearnerFailure, StopRequested, diverged
from rayunify.health import TrainingHealth

if TYPE_CHECKING:
    from rayunify.driver.trainer import Trainer


class Safeguards:
    """The run's checks after each step: health, divergence, stop requests and learner failures."""

    def __init__(self, trainer: Trainer, cfg: Config) -> None:
        self.t = trainer
        self.health = TrainingHealth(cfg.health, judge_name=cfg.judge.type)
        div = cfg.guard.divergence
        self.divergence = DivergenceGuard(div.spike_factor, div.collapse_factor, div.window) if div.enabled else None

    def divergence_state(self) -> dict[str, Any]:
        return self.divergence.state_dict() if self.divergence is not None else {}

    def load_divergence_state(self, state: dict[str, Any]) -> None:
        if self.divergence is not None:
            self.divergence.load_state_dict(state)

    def check_health(self, verdicts: list[Any]) -> None:
        """Warn when the judge answers off-format or nothing was trained on; stop after health.patience."""
        for warning in self.health.observe_step(self.t.step, self.t.trained, verdicts):
            self.t.progress.write(warning)

    def learner_failed(self, err: Exception) -> LearnerFailure:
        """End the run with a clear message; checkpoint now if the learner is still alive."""
        where = "no new checkpoint (the learner is gone)"
        try:
            where = f"checkpoint written: {self.t.save_checkpoint()}"
        except Exception:  # noqa: BLE001 - the learner may be dead; the last periodic checkpoint remains
            latest = self.t.checkpoints.newest().path
            if latest is not None:
                where = f"resume from {latest}"
        cause = getattr(err, "cause", None) or err
        return LearnerFailure(f"learner failed at step {self.t.step}: {cause}; {where}; rerun with --resume.")

    def check_divergence(self, metrics: dict[str, float]) -> None:
        """`guard.divergence`: a spiking or collapsed gradient norm stops the run before it is logged."""
        norm = metrics.get("train/grad_norm")
        if self.divergence is None or norm is None:
            return
        problem = self.divergence.observe(self.t.step + 1, norm, metrics.get("train/loss"))
        if problem is not None:
            raise diverged(problem, self.t.step, self.t.checkpoints)

    def stop_if_requested(self) -> None:
        """SIGINT/SIGTERM (`graceful_stop`): at a step boundary, checkpoint and stop."""
        if STOP.requested:
            build = self.t.checkpoints.root / BUILD_FILE
            path = self.t.save_checkpoint() if self.t.step > 0 else (build if build.is_file() else None)
            where = f"checkpoint {path}" if path else "nothing trained yet, no checkpoint"
            raise StopRequested(f"stopped by {STOP.name} at step {self.t.step}: {where}", STOP.signum or 0)


def order_curriculum(trainer: Trainer) -> dict[str, float]:
    """Adaptive curriculum without `curriculum.levels`: levels by the start evaluation's acceptance rate,
    highest first (file order breaks ties), said on stdout and logged as curriculum/level/<category>."""
    from rayunify.levels import levels_by_acceptance
    from rayunify.prompts import curriculum_levels

    cur = trainer.cfg.curriculum
    if cur.type != "adaptive":
        return {}
    file_order = curriculum_levels(trainer.train_prompts, cur.levels)
    if cur.levels is not None:  # the user's order wins
        trainer.progress.write(f"curriculum levels as configured, easiest first: {', '.join(file_order)}")
        return {f"curriculum/level/{category}": float(level) for level, category in enumerate(file_order)}
    order = levels_by_acceptance(file_order, trainer.monitor.start_acceptance)
    ray_get(trainer.data.set_levels.remote(order.levels))
    trainer.progress.write(order.describe())
    return order.metrics()


def restore(trainer: Trainer) -> None:
    """Learner, buffer, curriculum, guard and step from the latest checkpoint (or, with none yet, from an
    offline build's checkpoint: the learner has not stepped); then weights are re-pushed to every actor
    before anything is generated."""
    path = trainer.resumed_from
    build = load_build(trainer.checkpoints.root / BUILD_FILE)
    if build is not None:
        trainer.build.progress = build[1]  # a step checkpoint comes after the build: it is finished
    if path is not None:
        state = trainer.checkpoints.load(path, trainer.learner)
    else:
        assert build is not None
        path, state = trainer.checkpoints.root / BUILD_FILE, build[0]
    ray_get(trainer.data.load_state_dict.remote(state.data))
    trainer.monitor.guard.load_state_dict(state.guard)
    trainer.monitor.probe, trainer.monitor.fixed_images = state.probe, state.fixed_images
    trainer.monitor.judge_sets = trainer.monitor.load_judge_sets()
    trainer.skipped_batches, trainer.step = state.skipped_batches, state.step
    trainer.safeguards.load_divergence_state(state.divergence)
    dropped = trainer.logger.rewind(state.log_rows)
    if dropped is not None:
        trainer.progress.write(f"metrics rows logged after {path.name} moved to {dropped}")
    trainer.progress.update(trainer.step)
    trainer.push_weights()  # nothing to push when the learner never stepped
    trainer.progress.write(f"resumed from {path} at step {trainer.step}")
