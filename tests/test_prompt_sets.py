"""Prompt sets as users have them (fixtures cut from T2I-CompBench++ and GenEval): nothing is dropped, changed
or mixed silently; eval prompts are a balanced sample kept apart from training."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayunify.config import load_config
from rayunify.prompts import curriculum_levels, load_prompt_set, stratified_sample
from rayunify.types import Prompt

FIXTURES = Path(__file__).parent / "fixtures" / "prompts"
DATASET = FIXTURES / "T2I-CompBench" / "examples" / "dataset"
GENEVAL = FIXTURES / "geneval" / "prompts" / "evaluation_metadata.jsonl"


def prompt_set(*overrides: str):
    return load_prompt_set(load_config(None, ["prompts.source=file", *overrides]).prompts)


def test_compbench_train_and_val_files_load_with_a_report():
    got = prompt_set(f"prompts.path={DATASET}/*_train.txt", f"prompts.eval_path={DATASET}/*_val.txt")
    color = next(f for f in got.files if f.path.endswith("color_train.txt"))
    assert color.byte_order_mark and color.duplicates == 1 and color.prompts == 11  # 12 lines, one repeated
    shape = next(f for f in got.files if f.path.endswith("shape_train.txt"))
    assert shape.duplicates == 1 and shape.format == "t2i_compbench"
    texts = [p.text for p in got.train]
    assert not any("\ufeff" in t or "\r" in t for t in texts)  # BOM and CRLF gone, nothing else changed
    assert "a conical birthday hat and a spherical piñata" in texts
    assert "a big elephant and a small ladybug" in texts  # the file's last line, which has no newline
    assert {p.category for p in got.train} == {"3d_spatial", "color", "shape"}
    report = "\n".join(got.describe())
    assert "1 duplicate line(s) dropped, byte-order mark stripped" in report and "eval: 15 prompts" in report


def test_val_files_mixed_into_train_are_dropped_from_training_refused_or_kept_as_configured():
    dropped = prompt_set(f"prompts.path={DATASET}", f"prompts.eval_path={DATASET}/*_val.txt")
    assert len(dropped.train) == 23 and not {p.prompt_id for p in dropped.train} & {p.prompt_id for p in dropped.eval}
    # each val file read as training reports the lines it lost; read as eval, it loses none
    assert [len(f.in_eval) for f in dropped.files if f.path.endswith("_val.txt")] == [4, 6, 5, 0, 0, 0]
    assert any("dropped 15 of 38 prompts that are also eval prompts (prompts.overlap=drop" in n for n in dropped.notes)
    with pytest.raises(ValueError, match=r"15 of 15 eval prompts are also training prompts.*prompts.overlap=drop"):
        prompt_set(f"prompts.path={DATASET}", f"prompts.eval_path={DATASET}/*_val.txt", "prompts.overlap=refuse")
    kept = prompt_set(f"prompts.path={DATASET}", f"prompts.eval_path={DATASET}/*_val.txt", "prompts.overlap=keep")
    assert any("files of several splits (train, val)" in n for n in kept.notes)
    assert any("15 of 15 eval prompts are also training prompts" in n for n in kept.notes) and len(kept.train) == 38


def test_a_forced_train_format_does_not_apply_to_the_geneval_eval_file():
    got = prompt_set(f"prompts.path={DATASET}/color_train.txt", "prompts.format=txt", f"prompts.eval_path={GENEVAL}")
    assert {p.category for p in got.train} == {"default"}
    assert [f.format for f in got.files] == ["txt", "geneval"]
    counting = next(p for p in got.eval if p.category == "counting")
    assert counting.spec is not None and counting.spec["exclude"][0]["count"] == counting.spec["include"][0]["count"] + 1
    assert counting.text == counting.spec["prompt"]


def test_without_an_eval_source_a_balanced_split_is_held_out_and_said():
    got = prompt_set(f"prompts.path={GENEVAL}", "prompts.n_eval=6")
    assert len(got.eval) == 2 and len(got.train) == 10  # a fifth of 12, at most n_eval
    assert not {p.prompt_id for p in got.eval} & {p.prompt_id for p in got.train}
    assert any("held out of training" in n for n in got.notes)


def test_eval_sample_is_stratified_so_every_prefix_sees_every_category():
    prompts = [Prompt(f"{c}{i}", f"{c} {i}", c) for c in ("a", "b", "c") for i in range(10)]
    sample = stratified_sample(prompts, 9, seed=0)
    assert [p.category for p in sample[:3]] == ["a", "b", "c"] and len({p.prompt_id for p in sample}) == 9
    assert stratified_sample(prompts, 9, seed=0) == sample != stratified_sample(prompts, 9, seed=1)


def test_curriculum_levels_come_from_the_prompt_set():
    got = prompt_set(f"prompts.path={DATASET}/*_train.txt", f"prompts.eval_path={DATASET}/*_val.txt")
    assert curriculum_levels(got.train, None) == list(dict.fromkeys(p.category for p in got.train))
    assert curriculum_levels(got.train, ["shape", "color", "3d_spatial", "numeracy"]) == ["shape", "color", "3d_spatial"]
    with pytest.raises(ValueError, match=r"does not list the training categories \['3d_spatial'\]"):
        curriculum_levels(got.train, ["color", "shape"])
