"""`rayunify eval`: score any checkpoint on any prompt set with any judge, outside a training run.

It reads the same config tree as training (`model`, `prompts`, `sampling`, `guard.reference` as the
referee), generates `samples` images per prompt, has the model judge its own images and the referee judge
them too, and writes into `--out` (refused if it holds an earlier evaluation: nothing is mixed or
overwritten):
- `eval.json`: pooled and category-mean figures and one entry per category, with 95% intervals from a
  bootstrap over prompt texts (`intervals`; a split's repeats of one text resample together), with
  `trainer.judge_set_size` > 0 the judge on the fixed judge set (`judgeset`: AUROC, balanced accuracy),
  and the settings that produced them;
- `verdicts.jsonl`: one line per image (prompt, category, sample, both verdicts and scores);
- `samples.png`: a bounded grid of thumbnails with both verdicts;
- with `--export geneval|t2i_compbench`: the images in the folder layout the benchmark's official scorer
  reads (`rayunify.export`).
Prompts are processed in chunks (streamed to disk as they finish), in this process or, when
`rollout.num_actors` > 1, spread over that many rollout actors on the Ray cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rayunify import preflight
from rayunify.config import Config
from rayunify.evaluation import JudgedImage, save_grid
from rayunify.export import BenchmarkExporter, PromptImages
from rayunify.metrics import VerdictRecord, bootstrap_intervals, by_category, judge_set_report
from rayunify.preflight import UserError
from rayunify.types import Prompt

GRID_IMAGES = 48


@dataclass(frozen=True)
class EvalSettings:
    samples: int
    split: Literal["eval", "train"] = "eval"
    max_prompts: int | None = None
    export: str | None = None
    seed: int = 0
    # The model whose own samples make the fixed judge set: the run's starting model, so that a trained
    # model is scored on the images its run was; None: the model being evaluated.
    judge_set_model: str | None = None
    chunk_prompts: int = 16  # prompts per generate call (× samples × 2 rows with guidance)


def eval_job(cfg: Config, out_dir: str | Path, settings: EvalSettings) -> Path:
    """Everything above, checked first (model, prompts, referee, export layout) so nothing fails half-way."""
    out = Path(out_dir)
    refuse_earlier_outputs(out)
    preflight.check_model(cfg, need_weights=True)
    prompt_set = preflight.check_prompts(cfg)
    print("\n".join(prompt_set.describe()))  # the per-file report `rayunify train` prints
    prompts = (prompt_set.eval if settings.split == "eval" else prompt_set.train)[: settings.max_prompts]
    if not prompts:
        raise preflight.UserError(f"the {settings.split} split has no prompts to evaluate")
    preflight.check_prompt_lengths(cfg, prompts)
    preflight.check_judge("guard.reference", cfg.guard.reference, prompts)
    exporter = None
    if settings.export:
        exporter = BenchmarkExporter(out, settings.export, prompts, settings.samples, prompt_set.origins)
        print(exporter.describe())
    out.mkdir(parents=True, exist_ok=True)
    chunks = [prompts[i : i + settings.chunk_prompts] for i in range(0, len(prompts), settings.chunk_prompts)]
    records, texts, grid = [], [], []
    with open(out / "verdicts.jsonl", "w") as verdicts, _progress(len(prompts)) as progress:
        for items in _judged_chunks(cfg, chunks, settings):
            for sample, item in _numbered(items):
                verdicts.write(json.dumps(_verdict_line(item, sample)) + "\n")
                records.append(VerdictRecord(item.prompt.category, item.own.verdict, item.own.score, item.reference.verdict))
                texts.append(item.prompt.text)  # the bootstrap's unit: repeats of a text are one prompt
            if exporter is not None:
                exporter.write(_by_prompt(items))
            grid.extend(items[: GRID_IMAGES - len(grid)])
            progress.update(len(items) // settings.samples)
    report: dict[str, Any] = dict(by_category(records))
    report["intervals"] = bootstrap_intervals(records, texts, seed=settings.seed)
    if cfg.trainer.judge_set_size > 0:
        report["judgeset"] = _judge_set_report(cfg, prompt_set.eval, settings)
    report["settings"] = {**asdict(settings), "model": cfg.model.path, "referee": cfg.guard.reference.type,
                          "prompts": len(prompts), "sampling": cfg.sampling.model_dump(mode="json")}  # fmt: skip
    (out / "eval.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    save_grid(grid, out / "samples.png")
    return out / "eval.json"


# What an evaluation writes into --out: a folder holding any of them holds an earlier evaluation.
OUTPUTS = ("eval.json", "verdicts.jsonl", "samples.png", "geneval", "t2i_compbench")


def refuse_earlier_outputs(out: Path) -> None:
    """An evaluation never overwrites or mixes with an earlier one: the benchmark scorers would read old and
    new images together, and the old figures would be replaced without a word."""
    found = [name for name in OUTPUTS if (out / name).exists()]
    if found:
        raise UserError(f"--out {out} already holds an earlier evaluation ({', '.join(found)}): give a new --out "
                        "(or remove those first); nothing was written")  # fmt: skip


def _judge_set_report(cfg: Config, prompts: list[Prompt], settings: EvalSettings) -> dict[str, dict[str, float]]:
    """The evaluated model's judge on the fixed judge set of the eval prompts (the set a training run with
    this config logged as judgeset/*), pooled and per category."""
    from rayunify import builtins
    from rayunify.models import build_model

    source = builtins.prompt_source(cfg.prompts.source)
    assert source.judge_set is not None  # Config checks it
    model_dir = builtins.resolve_model_path(settings.judge_set_model or cfg.model.path, seed=cfg.model.builtin_seed)
    judge_set = source.judge_set(model_dir, prompts, cfg.trainer.judge_set_size, cfg.prompts.seed, cfg.sampling.settings())
    model = build_model(cfg.model)
    judgements = [
        j
        for start in range(0, len(judge_set.texts), settings.chunk_prompts)
        for j in model.judge(list(judge_set.images[start : start + settings.chunk_prompts]),
                             judge_set.texts[start : start + settings.chunk_prompts])
    ]  # fmt: skip
    return judge_set_report(
        judge_set.categories, list(judge_set.labels), [j.score for j in judgements], [j.verdict for j in judgements]
    )


def _judged_chunks(cfg: Config, chunks: list[list[Prompt]], settings: EvalSettings) -> Iterator[list[JudgedImage]]:
    """Each chunk's judged images, in chunk order. Chunk i is drawn with seed + i wherever it runs, so the
    images do not depend on how many actors share the work."""
    if cfg.rollout.num_actors > 1:
        yield from _on_ray(cfg, chunks, settings)
        return
    from rayunify.evaluation import evaluate
    from rayunify.judges.base import build_judge
    from rayunify.models import build_model

    model = build_model(cfg.model)
    referee = build_judge(cfg.guard.reference, lambda: model)
    for index, chunk in enumerate(chunks):
        result = evaluate(model, chunk, referee, settings.samples, cfg.sampling.settings(), settings.seed + index)
        yield result.items


def _on_ray(cfg: Config, chunks: list[list[Prompt]], settings: EvalSettings) -> Iterator[list[JudgedImage]]:
    import ray

    from rayunify.actors.cluster import init_ray, stop_ray
    from rayunify.actors.group import ActorGroup
    from rayunify.actors.workers import RolloutWorker

    started = init_ray(cfg)
    try:  # a placement that can never be met is one line now, not a wait that ends in a timeout
        preflight.check_cluster(cfg, [n["Resources"] for n in ray.nodes() if n["Alive"]], roles=("rollout",))
    except preflight.UserError:
        if started:
            stop_ray()
        raise
    group = ActorGroup(
        RolloutWorker, cfg.rollout.num_actors, num_cpus=cfg.rollout.num_cpus, num_gpus=cfg.rollout.num_gpus,
        resources=cfg.rollout.resources,
        kwargs={"config": cfg.model_dump(mode="json"), "num_cpus": cfg.rollout.num_cpus}, name="eval",
    )  # fmt: skip
    try:
        pending = {
            group.actors[i % len(group)].evaluate.remote(chunk, settings.samples, settings.seed + i): i
            for i, chunk in enumerate(chunks)
        }
        done: dict[int, list[JudgedImage]] = {}
        next_chunk = 0
        while pending or done:
            if next_chunk in done:  # hand chunks on in order as soon as the next one is in
                yield done.pop(next_chunk)
                next_chunk += 1
                continue
            ready, _ = ray.wait(list(pending), num_returns=1)
            done[pending.pop(ready[0])] = ray.get(ready[0])[1]
    finally:
        group.kill()
        if started:
            stop_ray()


def _numbered(items: Sequence[JudgedImage]) -> Iterator[tuple[int, JudgedImage]]:
    seen: dict[str, int] = {}
    for item in items:
        sample = seen.get(item.prompt.prompt_id, 0)
        seen[item.prompt.prompt_id] = sample + 1
        yield sample, item


def _by_prompt(items: Sequence[JudgedImage]) -> list[PromptImages]:
    groups: dict[str, PromptImages] = {}
    for item in items:
        groups.setdefault(item.prompt.prompt_id, PromptImages(item.prompt, []))
        groups[item.prompt.prompt_id].images.append(item.image)  # type: ignore[attr-defined]
    return list(groups.values())


def _verdict_line(item: JudgedImage, sample: int) -> dict[str, Any]:
    def judgement(j: Any) -> dict[str, Any]:
        return {"verdict": int(j.verdict), "score": j.score, "answer": j.answer, "judge": j.judge}

    return {
        "prompt_id": item.prompt.prompt_id, "prompt": item.prompt.text, "category": item.prompt.category,
        "sample": sample, "own": judgement(item.own), "reference": judgement(item.reference),
    }  # fmt: skip


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="rayunify eval", unit="prompt", dynamic_ncols=True)


def run_model_path(run_dir: str | Path) -> tuple[str, str]:
    """The newest finished state of a run directory, and a line naming it: its exported final_model when no
    intact checkpoint is newer (final.json records the final model's step), else the newest intact
    checkpoint, exported once to `checkpoint_models/<step>` (so a run that was stopped, or resumed past its
    final model, is scored as it is now)."""
    from rayunify.driver.checkpointer import Checkpointer

    run = Path(run_dir)
    final = run / "final_model"
    record = run / "final.json"
    final_step = json.loads(record.read_text())["step"] if record.is_file() else None
    found = Checkpointer(run / "checkpoints", keep=1).newest()
    has_final = (final / "config.json").is_file()
    if has_final and (found.step is None or (final_step is not None and final_step >= found.step)):
        return str(final), f"scoring {final} (the finished run, step {final_step if final_step is not None else '?'})"
    if found.path is None:
        why = f" ({'; '.join(found.skipped)})" if found.skipped else ""
        raise FileNotFoundError(f"run directory {run} has neither final_model/ nor an intact checkpoint{why}")
    target = run / "checkpoint_models" / found.path.name
    if not (target / "config.json").is_file():
        export_checkpoint(run, found.path, target)
    newer = f", newer than final_model's step {final_step}" if has_final else ""
    return str(target), f"scoring checkpoint {found.path.name} (step {found.step}{newer}), exported to {target}"


def export_checkpoint(run: Path, checkpoint: Path, target: Path) -> None:
    """The learner's weights of a checkpoint, in the HF layout: the run's model built as configured, its
    trainable module loaded with the checkpoint's module state (ZeRO stages 0-2 keep it whole on rank 0)."""
    import torch

    from rayunify.actors.policy import PolicyModule
    from rayunify.config import load_config
    from rayunify.models import build_model

    states = checkpoint / "learner" / "learner" / "mp_rank_00_model_states.pt"
    if not states.is_file():
        raise FileNotFoundError(
            f"{states} is missing: checkpoints of ZeRO-3 runs are sharded; score the run's final_model instead"
        )
    recorded = checkpoint / "config.yaml"  # the config the checkpoint was written with
    cfg = load_config(recorded if recorded.is_file() else run / "config.yaml")
    unified = build_model(cfg.model)
    module_state = torch.load(states, map_location="cpu", weights_only=False)["module"]  # the run's own file
    PolicyModule(unified).load_state_dict(module_state)
    unified.save_pretrained(target)
