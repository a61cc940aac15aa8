"""The official benchmark files as they are: the prompts T2I-CompBench's train and val files share are dropped
from training and reported, a file that is not what its format says is a one-line error naming file and
line, `rayunify eval` reports the files as `train` does and never writes over an earlier evaluation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rayunify.config import ConfigError, load_config
from rayunify.eval_job import EvalSettings, eval_job
from rayunify.export import BenchmarkExporter, ExportError
from rayunify.preflight import UserError, check_prompts
from rayunify.prompts import load_prompt_set, read_prompt_source

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "prompts"
COMPBENCH = FIXTURES / "t2i_compbench_all"
GENEVAL = FIXTURES / "geneval" / "prompts" / "evaluation_metadata.jsonl"
SHARED = ["a boy on the top of a wallet", "a giraffe on the right of a wallet"]  # in spatial_train and spatial_val
RECIPE = ROOT / "examples" / "janus_pro_7b_sft.yaml"


def recipe(*overrides: str, dataset: Path = COMPBENCH):
    """The README's recipe on a T2I-CompBench dataset folder, with the README's full evaluation."""
    return load_config(RECIPE, [
        f"prompts.path={dataset}/*_train.txt", f"prompts.eval_path={dataset}/*_val.txt", "prompts.n_eval=2400",
        *overrides,
    ])  # fmt: skip


def test_prompts_in_both_spatial_files_are_dropped_from_training_and_reported():
    got = load_prompt_set(recipe().prompts)
    assert {p.text for p in got.eval} >= set(SHARED) and not {p.text for p in got.train} & set(SHARED)
    assert [p.text for p in got.train] == ["a balloon on the top of a giraffe", "a suitcase on the top of a frog"]
    report = "\n".join(got.describe())
    assert "spatial_train.txt (t2i_compbench): 4 prompts, 2 also in the eval files dropped from training" in report
    assert f"train: dropped 2 of 4 prompts that are also eval prompts (prompts.overlap=drop; refuse or keep are " \
           f"the alternatives): {SHARED[0]!r}, {SHARED[1]!r}" in report  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_the_recipe_and_the_full_evaluation_are_accepted_whatever_the_seed(seed):
    got = check_prompts(recipe(f"prompts.seed={seed}"))
    assert len(got.eval) == 33 and not {p.prompt_id for p in got.train} & {p.prompt_id for p in got.eval}
    with pytest.raises(UserError, match=r"^prompts: 2 of 33 eval prompts are also training prompts.*overlap=drop"):
        check_prompts(recipe(f"prompts.seed={seed}", "prompts.overlap=refuse"))
    kept = check_prompts(recipe(f"prompts.seed={seed}", "prompts.overlap=keep"))
    assert len(kept.train) == 4 and any("(prompts.overlap=keep)" in note for note in kept.notes)


def test_the_old_allow_overlap_key_names_its_replacement():
    with pytest.raises(ConfigError, match=r"prompts.allow_overlap was replaced by prompts.overlap.*keep"):
        load_config(None, ["prompts.allow_overlap=true"])


def test_geneval_metadata_where_t2i_compbench_is_set_is_a_one_line_error(tmp_path):
    # The recipe sets format: t2i_compbench for prompts.path; GenEval's metadata given there.
    with pytest.raises(UserError) as err:
        check_prompts(recipe(f"prompts.path={GENEVAL}"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"prompts: {GENEVAL}:1: a JSON dict in a t2i_compbench prompt file: this is GenEval metadata")
    plain = tmp_path / "mine.txt"
    plain.write_text('a red bird\n{"prompt": "a cat"}\n')
    with pytest.raises(ValueError, match=r"mine.txt:2: a JSON dict in a txt prompt file: this is JSONL"):
        read_prompt_source(plain)
    plain.write_text("a red bird\n[a cat in brackets]\n{not json either}\n")  # text that only looks like JSON
    assert len(read_prompt_source(plain)) == 3


def test_a_geneval_folder_where_its_metadata_file_is_meant_is_refused(tmp_path):
    folder = tmp_path / "geneval" / "prompts"  # the repository's prompts/ folder: metadata, class names, texts
    folder.mkdir(parents=True)
    shutil.copy(GENEVAL, folder / "evaluation_metadata.jsonl")
    (folder / "object_names.txt").write_text("person\nbicycle\ncar\n")
    (folder / "generation_prompts.txt").write_text("a photo of a bench\na photo of a cow\n")
    with pytest.raises(UserError, match=r"mixes GenEval metadata .* with other prompt files \(generation_prompts.txt, "
                       r"object_names.txt\), which would become prompts of their own"):  # fmt: skip
        check_prompts(load_config(None, ["prompts.source=file", f"prompts.path={COMPBENCH}/color_val.txt",
                                         f"prompts.eval_path={folder}"]))  # fmt: skip
    with pytest.raises(UserError, match=r"is a folder; format geneval reads one file: give .*evaluation_metadata.jsonl"):
        check_prompts(load_config(None, ["prompts.source=file", f"prompts.path={COMPBENCH}/color_val.txt",
                                         f"prompts.eval_path={folder}", "prompts.eval_format=geneval"]))  # fmt: skip


@pytest.mark.parametrize(
    "line,problem",
    [
        ({"tag": "counting", "prompt": "a photo of two cats"}, r"needs 'include', the objects its scorer looks for"),
        ({"tag": "colors", "include": [{"class": "car"}], "prompt": "a red car"}, r"'include' holds .*integer 'count'"),
        ({"tag": "colors", "include": {"class": "car", "count": 1}, "prompt": "a red car"}, r"'include' must be a list"),
        ({"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"count": 3}], "prompt": "2 cats"},
         r"'exclude' holds .*string 'class'"),
    ],
)
def test_geneval_metadata_without_its_fields_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text(GENEVAL.read_text().splitlines()[0] + "\n" + json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=rf"evaluation_metadata.jsonl:2: GenEval metadata {problem}"):
        read_prompt_source(path, "geneval")


def eval_config(*overrides: str):
    return load_config(None, [
        "model.path=builtin:tiny", "guard.reference.type=python", "guard.reference.import_path=fixture_judges:brighter_than_half",
        "prompts.source=file", f"prompts.path={COMPBENCH}/spatial_train.txt", f"prompts.eval_path={COMPBENCH}/*_val.txt",
        *overrides,
    ])  # fmt: skip


def test_eval_prints_the_file_report_and_refuses_an_export_3_in_1_cannot_pair(tmp_path, capsys):
    with pytest.raises(ExportError, match="3-in-1 scorer pairs line i of"):
        eval_job(eval_config("prompts.n_eval=16"), tmp_path / "out", EvalSettings(samples=10, export="t2i_compbench"))
    printed = capsys.readouterr().out
    assert "prompt file" in printed and "spatial_train.txt (t2i_compbench): 4 prompts, 2 also in the eval files" in printed
    assert "eval: 16 prompts" in printed and not (tmp_path / "out").exists()


@pytest.mark.parametrize("earlier", ["eval.json", "verdicts.jsonl", "t2i_compbench"])
def test_eval_into_a_folder_holding_an_earlier_evaluation_is_refused_before_anything(tmp_path, earlier):
    out = tmp_path / "out"
    out.mkdir()
    (out / earlier).write_text("the first run's")
    with pytest.raises(UserError, match=rf"--out .*out already holds an earlier evaluation \({earlier}\).*nothing was written"):
        eval_job(eval_config(), out, EvalSettings(samples=10, export="t2i_compbench"))
    assert os.listdir(out) == [earlier] and (out / earlier).read_text() == "the first run's"


OFFICIAL = os.environ.get("RAYUNIFY_T2I_COMPBENCH_DATASET")  # a checkout's examples/dataset folder


@pytest.mark.skipif(not OFFICIAL, reason="set RAYUNIFY_T2I_COMPBENCH_DATASET to T2I-CompBench's examples/dataset")
def test_the_readme_full_evaluation_of_the_official_files_is_accepted_and_exportable(tmp_path):
    dataset = Path(str(OFFICIAL))
    got = check_prompts(recipe(dataset=dataset))
    assert len(got.eval) == 2400 and {p.category for p in got.eval} == {
        "3d_spatial", "color", "complex", "non_spatial", "numeracy", "shape", "spatial", "texture"}  # fmt: skip
    assert any(note.startswith("train: dropped 2 of 5559 prompts") for note in got.notes)
    BenchmarkExporter(tmp_path, "t2i_compbench", got.eval, 10, got.origins)  # every complex line: 3-in-1 pairs it
