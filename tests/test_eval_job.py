"""`rayunify eval` on prompt files as users have them: figures with intervals, one verdict line per image, a
bounded grid, and images exported for the official scorers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_runs import start_local_cluster

from rayunify.config import load_config
from rayunify.eval_job import EvalSettings, eval_job
from rayunify.export import ExportError

FIXTURES = Path(__file__).parent / "fixtures" / "prompts"
GENEVAL = FIXTURES / "geneval" / "prompts" / "evaluation_metadata.jsonl"
DATASET = FIXTURES / "T2I-CompBench" / "examples" / "dataset"


def config(*overrides: str):
    return load_config(None, [
        "model.path=builtin:tiny", "sampling.guidance_scale=2.0", "guard.reference.type=python",
        "guard.reference.import_path=fixture_judges:brighter_than_half", "prompts.source=file", *overrides,
    ])  # fmt: skip


def test_geneval_prompts_give_figures_with_intervals_and_the_official_layout(tmp_path):
    cfg = config(f"prompts.path={DATASET}/color_train.txt", f"prompts.eval_path={GENEVAL}")
    path = eval_job(cfg, tmp_path, EvalSettings(samples=2, export="geneval", chunk_prompts=5))
    report = json.loads(path.read_text())
    assert report["overall"]["count"] == 24 and report["settings"]["prompts"] == 12
    assert set(report) >= {"overall", "category_mean", "intervals", "settings", "counting", "color_attr"}
    lo, hi = report["intervals"]["overall"]["gen_accuracy"]
    assert lo <= report["overall"]["gen_accuracy"] <= hi
    lines = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert len(lines) == 24 and sorted({line["sample"] for line in lines}) == [0, 1]
    assert all(line["reference"]["judge"] == "python:fixture_judges:brighter_than_half" for line in lines)
    folders = sorted((tmp_path / "geneval").iterdir())
    assert len(folders) == 12 and all(len(list((f / "samples").iterdir())) == 2 for f in folders)
    tags = [json.loads((f / "metadata.jsonl").read_text())["tag"] for f in folders]
    assert sorted(set(tags)) == sorted({json.loads(line)["tag"] for line in GENEVAL.read_text().splitlines()})
    assert (tmp_path / "samples.png").is_file()


def test_compbench_export_needs_ten_images_and_says_so_before_generating(tmp_path):
    cfg = config(f"prompts.path={DATASET}/color_train.txt", f"prompts.eval_path={DATASET}/*_val.txt")
    with pytest.raises(ExportError, match="evaluate with --samples 10"):
        eval_job(cfg, tmp_path / "out", EvalSettings(samples=4, export="t2i_compbench"))
    assert not (tmp_path / "out").exists()


def test_on_rollout_actors_the_figures_are_those_of_one_process(tmp_path):
    """Chunks spread over two rollout actors on a local Ray cluster draw the same images (seed per chunk) and
    come back in order: verdicts and figures equal the in-process run's."""
    import ray

    start_local_cluster(2)
    try:
        common = [f"prompts.path={DATASET}/color_train.txt", f"prompts.eval_path={GENEVAL}", "rollout.num_cpus=1"]
        settings = EvalSettings(samples=2, chunk_prompts=3)
        local = json.loads(eval_job(config(*common), tmp_path / "local", settings).read_text())
        spread = json.loads(eval_job(config(*common, "rollout.num_actors=2"), tmp_path / "ray", settings).read_text())
    finally:
        ray.shutdown()
    lines = [[json.loads(x) for x in (tmp_path / d / "verdicts.jsonl").read_text().splitlines()] for d in ("ray", "local")]
    assert len(lines[0]) == len(lines[1]) == 24
    for a, b in zip(*lines, strict=True):  # the same images; soft scores to float noise (other thread counts)
        assert (a["prompt_id"], a["sample"], a["own"]["verdict"], a["reference"]["verdict"]) == (
            b["prompt_id"], b["sample"], b["own"]["verdict"], b["reference"]["verdict"])
        assert abs(a["own"]["score"] - b["own"]["score"]) < 1e-5 and abs(a["reference"]["score"] - b["reference"]["score"]) < 1e-6
    assert spread["overall"]["gen_accuracy"] == local["overall"]["gen_accuracy"]
