"""Prompt sources: T2I-CompBench++ category files, GenEval metadata, plain files, globs and directories, HF
`datasets` (when installed), with errors that name the file and line (or the dataset row)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rayunify.config import ConfigError, load_config
from rayunify.prompts import load_prompts, read_hf_dataset, read_prompt_file, read_prompt_source

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "prompts" / "t2i_compbench_sample"
HAS_DATASETS = importlib.util.find_spec("datasets") is not None

GENEVAL = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "counting", "include": [{"class": "cat", "count": 2}], "prompt": "a photo of two cats"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
]


def prompts_cfg(*overrides: str):
    return load_config(None, list(overrides)).prompts


def test_t2i_compbench_category_comes_from_the_file_name(tmp_path):
    (tmp_path / "3d_spatial_train.txt").write_text("a cube in front of a ball\n\n  a cone behind a box  \n")
    (tmp_path / "non_spatial_val.txt").write_text("a man holding an umbrella\n")
    prompts = read_prompt_source(tmp_path / "*.txt")
    assert [(p.category, p.text) for p in prompts] == [
        ("3d_spatial", "a cube in front of a ball"),
        ("3d_spatial", "a cone behind a box"),
        ("non_spatial", "a man holding an umbrella"),
    ]
    # A name that is no T2I-CompBench++ category is a plain list under auto, a category if asked for.
    (tmp_path / "mine.txt").write_text("a red bird\n")
    assert read_prompt_file(tmp_path / "mine.txt")[0].category == "default"
    assert read_prompt_file(tmp_path / "mine.txt", "t2i_compbench")[0].category == "mine"


def test_shipped_sample_directory_loads_with_four_categories():
    prompts = read_prompt_source(SAMPLE)
    assert {p.category for p in prompts} == {"color", "shape", "spatial", "numeracy"}
    assert len(prompts) == 20 and len({p.prompt_id for p in prompts}) == 20


def test_geneval_metadata_category_is_the_tag(tmp_path):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in GENEVAL) + "\n")
    prompts = read_prompt_file(path)
    assert [(p.category, p.text) for p in prompts] == [(r["tag"], r["prompt"]) for r in GENEVAL]
    path.write_text(json.dumps(GENEVAL[0]) + "\n" + json.dumps({"tag": "colors", "include": []}) + "\n")
    with pytest.raises(ValueError, match=r"evaluation_metadata.jsonl:2: GenEval metadata needs a non-empty string 'prompt'"):
        read_prompt_file(path)


@pytest.mark.parametrize(
    "name,content,fmt,message",
    [
        ("p.jsonl", '{"prompt": "a cat"}\n{"prompt": \n', "auto", r"p.jsonl:2: not valid JSON"),
        ("p.jsonl", '{"prompt": "a cat"}\n["a dog"]\n', "jsonl", r"p.jsonl:2: expected a JSON object, got list"),
        ("p.jsonl", '{"prompt": "a cat"}\n\n{"category": "x"}\n', "jsonl", r"p.jsonl:3: expected an object with a non-empty"),
        ("p.jsonl", '{"tag": "a", "include": [], "prompt": "x"}\n{"tag": 3, "prompt": "y"}\n', "auto", r"p.jsonl:2: GenEval"),
        ("color_val.txt", "\n  \n", "auto", r"color_val.txt holds no prompt"),
        ("p.csv", "a cat\n", "auto", r"cannot tell the format of prompt file .*p.csv.*set prompts.format"),
    ],
)
def test_malformed_lines_name_file_line_and_reason(tmp_path, name, content, fmt, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_prompt_file(tmp_path / name, fmt)


def test_bad_utf8_names_the_line(tmp_path):
    (tmp_path / "color_val.txt").write_bytes(b"a red cat\na \xff blue dog\n")
    with pytest.raises(ValueError, match=r"color_val.txt:2: not UTF-8 text"):
        read_prompt_file(tmp_path / "color_val.txt")


def test_empty_and_missing_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompt_source(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        read_prompt_source(tmp_path / "*_train.txt")
    with pytest.raises(FileNotFoundError, match="holds no .txt or .jsonl file"):
        read_prompt_source(tmp_path)


def test_load_prompts_from_files_subsets_by_seed_and_dedupes(tmp_path):
    (tmp_path / "color_train.txt").write_text("".join(f"a red thing {i}\n" for i in range(30)) + "a red thing 0\n")
    (tmp_path / "shape_train.txt").write_text("".join(f"a round thing {i}\n" for i in range(30)))
    cfg = prompts_cfg("prompts.source=file", f"prompts.path={tmp_path}/*_train.txt", f"prompts.eval_path={SAMPLE}",
                      "prompts.n_train=20", "prompts.n_eval=6")  # fmt: skip
    train, evaluation = load_prompts(cfg)
    assert len(train) == 20 and len({p.text for p in train}) == 20
    assert {p.category for p in train} == {"color", "shape"}  # a seeded sample, not the first file's head
    assert len(evaluation) == 6 and evaluation[0].category == "color"
    again, _ = load_prompts(cfg)
    assert again == train
    other, _ = load_prompts(cfg.model_copy(update={"seed": 1}))
    assert other != train
    held_in, held_out = load_prompts(prompts_cfg("prompts.source=file", f"prompts.path={SAMPLE}"))
    assert len(held_in) == 16 and len(held_out) == 4  # no eval source: a fifth held out, never trained on
    assert not {p.prompt_id for p in held_in} & {p.prompt_id for p in held_out}


def test_prompt_config_requires_the_source_location():
    with pytest.raises(ConfigError, match="prompts.dataset is required"):
        prompts_cfg("prompts.source=hf_dataset")
    with pytest.raises(ConfigError, match="prompts.format"):
        prompts_cfg("prompts.format=csv")


def test_hf_dataset_without_datasets_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match="needs the `datasets` package.*pip install datasets"):
        read_hf_dataset("some/name", "train")


@pytest.mark.skipif(not HAS_DATASETS, reason="the `datasets` package is not installed (it is optional)")
def test_hf_dataset_from_a_saved_local_dataset(tmp_path):
    import datasets

    rows = {"text": ["a red car", "two dogs", "a red car", "a cat on a mat"], "kind": ["color", "count", "color", "spatial"]}
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows),
        "test": datasets.Dataset.from_dict({"text": ["a blue bird"], "kind": ["color"]}),
    })  # fmt: skip
    splits.save_to_disk(str(tmp_path / "ds"))
    cfg = prompts_cfg("prompts.source=hf_dataset", f"prompts.dataset={tmp_path / 'ds'}", "prompts.column=text",
                      "prompts.category_column=kind", "prompts.eval_split=test")  # fmt: skip
    train, evaluation = load_prompts(cfg)
    assert [(p.text, p.category) for p in train] == [("a red car", "color"), ("two dogs", "count"), ("a cat on a mat", "spatial")]
    assert [p.text for p in evaluation] == ["a blue bird"]
    with pytest.raises(ValueError, match=r"has no column 'prompt' \(columns: text, kind\)"):
        read_hf_dataset(str(tmp_path / "ds"), "train")
    with pytest.raises(ValueError, match=r"has no split 'validation' \(splits: train, test\)"):
        read_hf_dataset(str(tmp_path / "ds"), "validation", "text")
    datasets.Dataset.from_dict({"text": ["ok", ""]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"row 1: column 'text' is not a non-empty string"):
        read_hf_dataset(str(tmp_path / "bad"), "train", "text")


def test_shapes_prompts_of_chosen_categories_and_only_for_shapes(tmp_path):
    cfg = load_config(None, ["prompts.categories=[single_object,colour]", "prompts.n_train=500", "prompts.n_eval=96"])
    train, evaluation = load_prompts(cfg.prompts)
    assert (len(train), len(evaluation)) == (14, 7)  # every text the two categories hold on each side
    assert {p.category for p in train + evaluation} == {"single_object", "colour"}
    path = tmp_path / "p.txt"
    path.write_text("a red square\n")
    with pytest.raises(ConfigError, match="prompts.categories applies to source=shapes only"):
        load_config(None, ["prompts.source=file", f"prompts.path={path}", "prompts.categories=[colour]"])


def test_one_jsonl_reader_with_each_sources_own_ids(tmp_path):
    """ShapesWorld's saved prompt files go through the same JSONL reader as any prompt file: read as a plain
    file they keep the file scheme's ids; read as ShapesWorld prompts they come back exactly as generated."""
    from rayunify.shapes.world import generate_prompts, load_prompts_jsonl, save_prompts_jsonl

    generated, _ = generate_prompts(12, 0, seed=0)
    path = tmp_path / "shapes.jsonl"
    save_prompts_jsonl(path, generated)
    assert load_prompts_jsonl(path) == generated
    plain = read_prompt_file(path)
    assert [(p.text, p.category, p.spec) for p in plain] == [(p.text, p.category, p.spec) for p in generated]
    assert not any(p.prompt_id.startswith("shapes-") for p in plain)
    assert all(p.prompt_id.startswith("shapes-") for p in generated)
