"""`--export`: images in the layouts the official GenEval and T2I-CompBench scorers read, checked file by file
with the expressions those scorers use to parse them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rayunify.export import ExportError, PromptImages, export_images
from rayunify.types import Prompt

FIXTURES = Path(__file__).parent / "fixtures" / "prompts"


def geneval_prompts() -> list[Prompt]:
    lines = (FIXTURES / "geneval" / "prompts" / "evaluation_metadata.jsonl").read_text().splitlines()
    return [Prompt(str(i), meta["prompt"], meta["tag"], meta) for i, meta in enumerate(map(json.loads, lines))]


def images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(n)]


def test_geneval_layout_is_what_evaluate_images_reads(tmp_path):
    prompts = geneval_prompts()
    groups = [PromptImages(p, images(4, i)) for i, p in enumerate(prompts)]
    root = export_images(groups, tmp_path, "geneval")
    folders = sorted(os.listdir(root))
    assert folders == [f"{i:0>5}" for i in range(len(prompts))]
    for folder, group in zip(folders, groups, strict=True):
        # evaluate_images.py: json.load(metadata.jsonl); images are samples/ files matching \d+\.png
        with open(root / folder / "metadata.jsonl") as f:
            assert json.load(f) == group.prompt.spec
        names = sorted(os.listdir(root / folder / "samples"))
        assert names == [f"{i:0>5}.png" for i in range(4)] and all(re.match(r"\d+\.png", n) for n in names)
        for name, image in zip(names, group.images, strict=True):
            assert np.array_equal(np.asarray(Image.open(root / folder / "samples" / name)), image)


def test_t2i_compbench_layout_is_what_its_scorers_parse(tmp_path):
    texts = {"color": ["a green bench and a blue bowl", "a red car and a white sheep"], "shape": ["a conical birthday hat and a spherical piñata"]}
    groups = [PromptImages(Prompt(t, t, c), images(10, i)) for c, ts in texts.items() for i, t in enumerate(ts)]
    root = export_images(groups, tmp_path, "t2i_compbench")
    assert sorted(os.listdir(root)) == ["color", "shape"]
    for category, prompts in texts.items():
        names = os.listdir(root / category / "samples")
        assert len(names) == 10 * len(prompts)
        # BLIP-VQA / CLIPScore: prompt = name.split('_')[0], index = int(name.split('_')[-1].split('.')[0]);
        # UniDet: split('_')[1]; numeracy: split('.png')[0].split('_')[1]
        parsed = sorted((int(n.split("_")[-1].split(".")[0]), n.split("_")[0]) for n in names)
        assert [i for i, _ in parsed] == list(range(10 * len(prompts)))  # contiguous, prompt-major
        assert [p for _, p in parsed] == [p for p in prompts for _ in range(10)]
        assert all(int(n.split("_")[1].split(".")[0]) == int(n.split(".png")[0].split("_")[1]) for n in names)


def test_exports_refuse_what_the_scorers_would_misread(tmp_path):
    with pytest.raises(ExportError, match="assume 10 per prompt"):
        export_images([PromptImages(Prompt("a", "a red car", "color"), images(4, 0))], tmp_path, "t2i_compbench")
    with pytest.raises(ExportError, match="split names on '_'"):
        export_images([PromptImages(Prompt("a", "a red_car", "color"), images(10, 0))], tmp_path, "t2i_compbench")
    with pytest.raises(ExportError, match="no GenEval metadata"):
        export_images([PromptImages(Prompt("a", "a red car", "color"), images(4, 0))], tmp_path, "geneval")
    with pytest.raises(ExportError, match="choose one of"):
        export_images([], tmp_path, "dpg")
    assert not (tmp_path / "geneval").exists() and not (tmp_path / "t2i_compbench" / "color").exists()
