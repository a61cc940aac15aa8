"""Exports walked exactly as the official scorers walk them (read from github.com/djghosh13/geneval and
github.com/Karine-Huang/T2I-CompBench; each walk below names the file and function it mirrors), on every
category, full and partial, with prompts drawn in the evaluation's shuffled order and written chunk by chunk
as `rayunify eval` writes them. Every image's pixels encode its own prompt and sample, so a walk that pairs
an image with another prompt's text (or line) fails here."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rayunify.config import load_config
from rayunify.export import BenchmarkExporter, ExportError, PromptImages
from rayunify.prompts import PromptSet, load_prompt_set

FIXTURES = Path(__file__).parent / "fixtures" / "prompts"
COMPBENCH = FIXTURES / "t2i_compbench_all"  # every category's val file, cut from the official files
GENEVAL = FIXTURES / "geneval" / "prompts" / "evaluation_metadata.jsonl"  # two prompts of each of its six tags
CATEGORIES = ["3d_spatial", "color", "complex", "non_spatial", "numeracy", "shape", "spatial", "texture"]
CHUNK = 3  # prompts per write, as eval_job streams them


# ---------------------------------------------------------------------------------------------- the walks
def geneval_evaluate_images(imagedir: Path) -> list[tuple[str, dict]]:
    """geneval `evaluation/evaluate_images.py`, main(): every digit-named subfolder, its metadata.jsonl read
    with json.load, every file of its samples/ that matches r"\\d+\\.png"."""
    results = []
    for subfolder in os.listdir(imagedir):
        folderpath = os.path.join(imagedir, subfolder)
        if not os.path.isdir(folderpath) or not subfolder.isdigit():
            continue
        with open(os.path.join(folderpath, "metadata.jsonl")) as fp:
            metadata = json.load(fp)
        for imagename in os.listdir(os.path.join(folderpath, "samples")):
            imagepath = os.path.join(folderpath, "samples", imagename)
            if os.path.isfile(imagepath) and re.match(r"\d+\.png", imagename):
                results.append((imagepath, metadata))
    return results


def geneval_summary(results: list[tuple[str, dict]]) -> tuple[int, dict[str, int]]:
    """geneval `evaluation/summary_scores.py`: prompts are the groups of the results' 'metadata' column (the
    metadata as a JSON string), tasks the groups of 'tag'. Returns (prompts, images per tag)."""
    prompts = {json.dumps(metadata) for _, metadata in results}
    tags: dict[str, int] = {}
    for _, metadata in results:
        tags[metadata["tag"]] = tags.get(metadata["tag"], 0) + 1
    return len(prompts), tags


def blip_vqa(out_dir: Path) -> list[tuple[int, str, str]]:
    """T2I-CompBench `BLIPvqa_eval/BLIP_vqa.py`, Create_annotation_for_BLIP(): samples/ listed, sorted by
    int(name.split("_")[-1].split('.')[0]); question_id = sorted position; the question comes from
    name.split('_')[0]. main() sizes its reward array by len(os.listdir(samples)). (question_id, prompt, path)."""
    file_names = os.listdir(os.path.join(out_dir, "samples"))
    assert len(file_names) == len(os.listdir(os.path.join(out_dir, "samples")))
    file_names.sort(key=lambda x: int(x.split("_")[-1].split(".")[0]))
    return [(cnt, name.split("_")[0], os.path.join(out_dir, "samples", name)) for cnt, name in enumerate(file_names)]


def clip_similarity(outpath: Path) -> list[tuple[int, str, str]]:
    """T2I-CompBench `CLIPScore_eval/CLIP_similarity.py`, main(): the same sort by the last '_' field;
    prompt = file_name.split("_")[0]; question_id = position in that order."""
    file_names = os.listdir(os.path.join(outpath, "samples"))
    file_names.sort(key=lambda x: int(x.split("_")[-1].split(".")[0]))
    return [(i, name.split("_")[0], os.path.join(outpath, "samples", name)) for i, name in enumerate(file_names)]


def unidet(outpath: Path, question_id: str) -> list[tuple[int, str, str]]:
    """T2I-CompBench `UniDet_eval/experts/obj_detection/generate_dataset.py` (and `generate_dataset_3d.py`),
    Dataset.__init__: samples/ sorted by int(x.split("_")[1].split('.')[0]) (the SECOND field), results listed
    in that order. `2D_spatial_eval.py` / `3D_spatial_eval.py` main(): prompt = name.split('_')[0],
    question_id = int(name.split('_')[-1].split('.')[0]); `numeracy_eval.py` main():
    int(name.split(".png")[0].split("_")[1])."""
    data_imgs = os.listdir(os.path.join(outpath, "samples"))
    data_imgs.sort(key=lambda x: int(x.split("_")[1].split(".")[0]))
    parse = {
        "last_field": lambda name: int(name.split("_")[-1].split(".")[0]),
        "numeracy": lambda name: int(name.split(".png")[0].split("_")[1]),
    }[question_id]
    return [(parse(name), name.split("_")[0], os.path.join(outpath, "samples", name)) for name in data_imgs]


def unidet_3d_depth_paths(outpath: str, image_path: str) -> tuple[str, str]:
    """T2I-CompBench `UniDet_eval/3D_spatial_eval.py`: the depth pass saves each map under
    labels/depth/<path[-3]>/<path[-2]>/<name>.png; the detection pass (`generate_dataset_3d.py`) reads it from
    os.path.join(outpath, 'labels', 'depth', outpath.split('/')[-1]) + '/<path[-2]>/<name>.png'. (saved, read)."""
    parts = image_path.split("/")
    saved = os.path.join(outpath, "labels", "depth", parts[-3], parts[-2], parts[-1])
    read = os.path.join(outpath, "labels", "depth", outpath.split("/")[-1]) + f"/{parts[-2]}/{parts[-1]}"
    return os.path.normpath(saved), os.path.normpath(read)


def three_in_one(data_path: Path, results: int) -> list[str]:
    """T2I-CompBench `3_in_1_eval/3_in_1.py`, main(): complex_val.txt's readlines(), each cut at its first '.'
    and lowercased; results i*10 .. (i+1)*10 - 1 of BLIP-VQA, UniDet 2D and CLIPScore belong to line i (numpy
    raises when the result lists are shorter). Returns the line each result position belongs to."""
    with open(data_path / "complex_val.txt") as f:
        data = [i.strip("\n").split(".")[0].lower() for i in f.readlines()]
    num = 10
    assert results == num * len(data), "3_in_1.py: a result list shorter than 10 per line fails to broadcast"
    return [data[j // num] for j in range(num * len(data))]


# ---------------------------------------------------------------------------------------------- the export
def image_for(text: str, sample: int) -> np.ndarray:
    seed = int(hashlib.sha1(f"{text}#{sample}".encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def is_image_of(path: str, text: str, sample: int) -> bool:
    return np.array_equal(np.asarray(Image.open(path)), image_for(text, sample))


def export(tmp_path: Path, prompt_set: PromptSet, fmt: str, samples: int, max_prompts: int | None = None) -> Path:
    """What eval_job does: the eval prompts in the evaluation's order, written chunk by chunk."""
    prompts = prompt_set.eval[:max_prompts]
    exporter = BenchmarkExporter(tmp_path, fmt, prompts, samples, prompt_set.origins)
    for start in range(0, len(prompts), CHUNK):
        exporter.write([PromptImages(p, [image_for(p.text, s) for s in range(samples)]) for p in prompts[start : start + CHUNK]])
    return exporter.root


def prompt_set(eval_path: Path | str, *overrides: str) -> PromptSet:
    return load_prompt_set(load_config(None, [
        "prompts.source=file", f"prompts.path={COMPBENCH}/spatial_train.txt", f"prompts.eval_path={eval_path}",
        "prompts.n_eval=2400", "prompts.seed=3", *overrides,
    ]).prompts)  # fmt: skip


def file_lines(category: str) -> list[str]:
    return [line.strip() for line in (COMPBENCH / f"{category}_val.txt").read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------- T2I-CompBench
def assert_pairs_each_image_with_its_prompt(walked: list[tuple[int, str, str]], category: str) -> None:
    lines = file_lines(category)
    for _, prompt, path in walked:
        index = int(path.rsplit("_", 1)[1].split(".")[0])
        assert lines[index // 10] == prompt and is_image_of(path, prompt, index % 10), path


def test_full_t2i_compbench_export_is_read_right_by_every_scorer_on_every_category(tmp_path):
    full = prompt_set(f"{COMPBENCH}/*_val.txt")
    complex_order = [p.text for p in full.eval if p.category == "complex"]
    assert complex_order != file_lines("complex")  # the evaluation's order is shuffled: the export must not follow it
    root = export(tmp_path, full, "t2i_compbench", samples=10)
    assert sorted(os.listdir(root)) == CATEGORIES
    for category in CATEGORIES:
        folder = root / category
        expected = len(file_lines(category)) * 10
        for walked in (blip_vqa(folder), clip_similarity(folder), unidet(folder, "last_field")):
            assert [q for q, _, _ in walked] == list(range(expected))  # positions and parsed ids agree
            assert_pairs_each_image_with_its_prompt(walked, category)
        assert [q for q, _, _ in unidet(folder, "numeracy")] == list(range(expected))


def test_full_complex_export_pairs_every_image_with_its_own_line_in_3_in_1(tmp_path):
    root = export(tmp_path, prompt_set(f"{COMPBENCH}/*_val.txt"), "t2i_compbench", samples=10) / "complex"
    attribute, spatial, action = blip_vqa(root), unidet(root, "last_field"), clip_similarity(root)
    assert [p for _, _, p in attribute] == [p for _, _, p in spatial] == [p for _, _, p in action]
    lines = three_in_one(COMPBENCH, len(attribute))
    for position, (_, prompt, path) in enumerate(attribute):
        assert prompt.split(".")[0].lower() == lines[position] and is_image_of(path, prompt, position % 10)


def test_3d_spatial_depth_maps_are_found_where_they_were_saved(tmp_path):
    root = export(tmp_path, prompt_set(f"{COMPBENCH}/3d_spatial_val.txt"), "t2i_compbench", samples=10)
    outpath = str(root / "3d_spatial")  # no trailing slash: with one, the detection pass looks in labels/depth/
    for _, _, path in unidet(Path(outpath), "last_field"):
        saved, read = unidet_3d_depth_paths(outpath, path)
        assert saved == read


def test_partial_export_pairs_every_image_with_its_prompt_in_every_scorer(tmp_path):
    partial = prompt_set(COMPBENCH / "*_val.txt", "prompts.n_eval=16")  # 2 of each category's 4-5 lines
    with pytest.raises(ExportError, match=r"3-in-1 scorer pairs line i of .*complex_val.txt.*needs all 5 lines"):
        export(tmp_path, partial, "t2i_compbench", samples=10)
    assert not (tmp_path / "t2i_compbench").exists()
    without_complex = prompt_set(COMPBENCH / "*[!x]_val.txt", "prompts.n_eval=14")  # the docs' glob: all but complex
    root = export(tmp_path, without_complex, "t2i_compbench", samples=10)
    assert sorted(os.listdir(root)) == [c for c in CATEGORIES if c != "complex"]
    for category in os.listdir(root):
        lines = {p.prompt_id: p for p in without_complex.eval if p.category == category}
        assert len(lines) == 2 and len(file_lines(category)) > 2  # a real part of the file
        for walked in (blip_vqa(root / category), clip_similarity(root / category), unidet(root / category, "last_field")):
            assert len(walked) == 20
            assert_pairs_each_image_with_its_prompt(walked, category)
        # gaps in the indices: UniDet's question_id is the parsed index, BLIP's the position; same image order
        assert [p for _, _, p in unidet(root / category, "last_field")] == [p for _, _, p in blip_vqa(root / category)]


def test_complex_export_that_3_in_1_cannot_pair_is_refused_with_the_reason(tmp_path):
    complex_only = prompt_set(f"{COMPBENCH}/complex_val.txt")
    with pytest.raises(ExportError, match=r"lacks 1 \(line \d\).*leave complex_val.txt out"):
        export(tmp_path, complex_only, "t2i_compbench", samples=10, max_prompts=4)  # --max-prompts 4 of 5
    with pytest.raises(ExportError, match="assume 10 per prompt"):
        export(tmp_path, complex_only, "t2i_compbench", samples=4)  # not every line with 10 images
    repeated = tmp_path / "complex_val.txt"  # a repeated line is read once, so its position stays empty
    lines = (COMPBENCH / "complex_val.txt").read_bytes().splitlines()
    repeated.write_bytes(b"\r\n".join([*lines, lines[0]]))
    with pytest.raises(ExportError, match=r"lacks 1 \(line 6\)"):
        export(tmp_path, prompt_set(repeated), "t2i_compbench", samples=10)
    assert not (tmp_path / "t2i_compbench").exists()


def test_a_second_export_into_the_same_folder_is_refused_and_the_first_is_untouched(tmp_path):
    got = prompt_set(f"{COMPBENCH}/color_val.txt")
    root = export(tmp_path, got, "t2i_compbench", samples=10)
    before = sorted(os.listdir(root / "color" / "samples"))
    with pytest.raises(ExportError, match="holds an earlier export"):
        export(tmp_path, got, "t2i_compbench", samples=10)
    assert sorted(os.listdir(root / "color" / "samples")) == before and len(before) == 40


# ---------------------------------------------------------------------------------------------- GenEval
@pytest.mark.parametrize("max_prompts", [None, 5])
def test_geneval_export_is_read_right_by_evaluate_images_and_summary_scores(tmp_path, max_prompts):
    got = load_prompt_set(load_config(None, [
        "prompts.source=file", f"prompts.path={COMPBENCH}/color_val.txt", f"prompts.eval_path={GENEVAL}",
        "prompts.n_eval=553", "prompts.seed=1",
    ]).prompts)  # fmt: skip
    root = export(tmp_path, got, "geneval", samples=4, max_prompts=max_prompts)
    exported = got.eval[:max_prompts]
    results = geneval_evaluate_images(root)
    assert len(results) == 4 * len(exported)
    lines = GENEVAL.read_text().splitlines()
    for path, metadata in results:
        folder = Path(path).parent.parent.name
        assert json.loads(lines[int(folder)]) == metadata  # folder N holds line N, as GenEval's generator writes
        assert is_image_of(path, metadata["prompt"], int(Path(path).stem))
    prompts, tags = geneval_summary(results)
    assert prompts == len(exported)
    assert tags == {tag: 4 * sum(p.category == tag for p in exported) for tag in {p.category for p in exported}}
    if max_prompts is None:
        assert set(tags) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
