"""External VLM judges: hf_vlm on a tiny random LLaVA built here; vllm against a real vLLM server when a
vLLM environment is present.

The vLLM tests need a separate environment with vLLM (README, "External judges"): set RAYUNIFY_VLLM_PYTHON
to its interpreter. They are `slow` (each starts a server) and skipped without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from judge_samples import random_images, text_prompts

from rayunify.checkpoints import check_model_dir
from rayunify.config import ConfigError, load_config
from rayunify.judges import question
from rayunify.judges.base import build_judge
from rayunify.judges.hf_vlm import PROCESS_VLMS, HFVLMJudge
from rayunify.judges.vllm import PROCESS_SERVERS, VLLMJudge
from rayunify.types import Verdict

VLLM_PYTHON = os.environ.get("RAYUNIFY_VLLM_PYTHON", "")




# ---------------------------------------------------------------------------------------------- hf_vlm
def save_tiny_llava(path: str | Path, seed: int = 0, image_size: int = 32, patch: int = 8) -> Path:
    """A random tiny LLaVA (CLIP vision + Llama text) with an in-process tokenizer, saved in the llava-hf hub
    layout, which both transformers and vLLM load. Offline and small. Also used to try the vLLM judge by hand."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from rayunify.models.janus.factory import default_corpus
    from rayunify.models.janus.tokenizer import IMAGE, JANUS_CHAT_TEMPLATE, train_tokenizer

    tokenizer = train_tokenizer(default_corpus(), vocab_size=512)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        image_size=image_size, patch_size=patch, projection_dim=64,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=(image_size // patch) ** 2, vision_feature_select_strategy="default",
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", chat_template=JANUS_CHAT_TEMPLATE, num_additional_image_tokens=1,
    )  # fmt: skip
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    # transformers 5 writes the vision tower as vision_tower.*; hub checkpoints (and vLLM) use
    # vision_tower.vision_model.*, which transformers also loads.
    weights = load_file(path / "model.safetensors")
    renamed = {
        ("vision_tower.vision_model." + k.removeprefix("vision_tower.") if k.startswith("vision_tower.") else k): v
        for k, v in weights.items()
    }
    save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("vlm") / "tiny-llava")


def hf_vlm_judge(path: Path, *overrides: str) -> HFVLMJudge:
    cfg = load_config(None, ["judge.type=hf_vlm", f"judge.path={path}", "judge.dtype=float32", *overrides])
    judge = build_judge(cfg.judge)
    assert isinstance(judge, HFVLMJudge)
    return judge


def test_hf_vlm_directory_errors_name_what_is_missing(tiny_llava, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_dir(tmp_path / "nowhere", role="hf_vlm judge")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    (partial / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    (partial / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        hf_vlm_judge(partial)
    message = str(err.value)
    assert "incomplete hf_vlm judge directory" in message
    assert "1 of the 2 weight shards in model.safetensors.index.json (first: model-00002-of-00002.safetensors)" in message
    assert "tokenizer" in message and "image processor" in message
    assert check_model_dir(tiny_llava, role="hf_vlm judge") == tiny_llava


def test_hf_vlm_judge_counts_invalid_answers_and_batches_like_single(tiny_llava):
    judge = hf_vlm_judge(tiny_llava, "judge.batch_size=3")
    images, prompts = random_images(5), text_prompts(5)
    batch = judge.judge(images, prompts)
    assert len(batch) == 5 and all(0.0 <= j.score <= 1.0 for j in batch)
    # A random model does not answer "The score is 1/0": every such answer is INVALID, none is guessed.
    assert all(j.answer.startswith("The score is") for j in batch)
    assert [j.verdict for j in batch] == [question.parse_verdict(j.answer) for j in batch]
    assert sum(j.verdict == Verdict.INVALID for j in batch) >= 3
    single = [judge.judge([i], [p])[0] for i, p in zip(images, prompts, strict=True)]
    assert [j.answer for j in single] == [j.answer for j in batch]
    assert [j.score for j in single] == pytest.approx([j.score for j in batch], abs=1e-5)


def _force_answer(judge: HFVLMJudge, token_id: int):
    """Make the (cached) tiny model always write `token_id`: a bias on its output head."""
    import torch

    model, _ = judge.loaded()
    original = model.lm_head

    class Biased(torch.nn.Module):
        def forward(self, hidden):
            logits = original(hidden)
            logits[..., token_id] += 100.0
            return logits

    model.lm_head = Biased()
    return lambda: setattr(model, "lm_head", original)


def test_hf_vlm_judge_reads_forced_verdicts_and_soft_scores(tiny_llava):
    judge = hf_vlm_judge(tiny_llava)
    images, prompts = random_images(3), text_prompts(3)
    _, processor = judge.loaded()
    _, yes_ids, no_ids = judge.answer_ids(processor)
    for ids, verdict, score in ((yes_ids, Verdict.ACCEPT, 1.0), (no_ids, Verdict.REJECT, 0.0)):
        spoken = [i for i in ids if processor.tokenizer.decode([i]).startswith(" ")]  # " 1": parses after "is"
        restore = _force_answer(judge, spoken[0])
        try:
            out = judge.judge(images, prompts)
        finally:
            restore()
        assert [j.verdict for j in out] == [verdict] * 3, [j.answer for j in out]
        assert [j.score for j in out] == pytest.approx([score] * 3, abs=1e-6)


def test_hf_vlm_judge_score_mode_and_custom_question(tiny_llava):
    by_score = hf_vlm_judge(tiny_llava, "judge.verdict_from=score").judge(random_images(4), text_prompts(4))
    assert all(j.verdict == Verdict(int(j.score >= 0.5)) for j in by_score)
    yes_no = hf_vlm_judge(
        tiny_llava, "judge.question=Is this {prompt}? Answer yes or no.", "judge.answer_prefix=",
        "judge.yes_token=yes", "judge.no_token=no", r"judge.verdict_pattern=(?i)\b(yes|no)\b",
    ).judge(random_images(2), text_prompts(2))  # fmt: skip
    assert all(0.0 <= j.score <= 1.0 and j.verdict == Verdict.INVALID for j in yes_no)
    with pytest.raises(ConfigError, match="must contain \\{prompt\\}"):
        load_config(None, ["judge.type=hf_vlm", "judge.path=x", "judge.question=no placeholder"])


def test_hf_vlm_is_a_guard_reference_too(tiny_llava):
    cfg = load_config(None, ["guard.reference.type=hf_vlm", f"guard.reference.path={tiny_llava}"])
    assert isinstance(build_judge(cfg.guard.reference), HFVLMJudge)
    cfg = load_config(None, ["judge.type=noisy", "judge.base.type=hf_vlm", f"judge.base.path={tiny_llava}"])
    assert cfg.judge.base.type == "hf_vlm"


def test_hf_vlm_judge_runs_a_saved_tiny_janus(tmp_path):
    """Janus is an image-text-to-text model too: the same judge (AutoModelForImageTextToText) loads it."""
    from rayunify.models.janus.factory import build_janus

    model, processor = build_janus()
    model.save_pretrained(tmp_path / "janus")
    processor.save_pretrained(tmp_path / "janus")
    judge = hf_vlm_judge(tmp_path / "janus", "judge.batch_size=2")
    out = judge.judge(random_images(3), text_prompts(3))
    assert len(out) == 3 and all(0.0 <= j.score <= 1.0 and j.answer.startswith("The score is") for j in out)


# ---------------------------------------------------------------------------------------------- vllm
def test_vllm_judge_config_errors_and_request():
    with pytest.raises(ConfigError, match="needs url .* or python"):
        load_config(None, ["judge.type=vllm", "judge.model=m"])
    with pytest.raises(FileNotFoundError, match="is not an executable"):
        build_judge(load_config(None, ["judge.type=vllm", "judge.model=m", "judge.python=/no/python"]).judge)
    judge = build_judge(load_config(None, ["judge.type=vllm", "judge.model=m", "judge.url=http://127.0.0.1:9/v1"]).judge)
    assert isinstance(judge, VLLMJudge)
    body = judge.request_body(random_images(1)[0], "a red circle")
    user, assistant = body["messages"]
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert user["content"][1]["text"] == question.judge_question("a red circle")
    assert assistant == {"role": "assistant", "content": "The score is"}
    assert body["continue_final_message"] and not body["add_generation_prompt"] and body["temperature"] == 0.0
    with pytest.raises(ConnectionError, match="cannot reach the vLLM server"):
        judge.judge(random_images(1), text_prompts(1))  # nothing listens on port 9


@pytest.mark.slow
@pytest.mark.skipif(not os.access(VLLM_PYTHON or "/nonexistent", os.X_OK), reason="set RAYUNIFY_VLLM_PYTHON to a vLLM env")
def test_vllm_judge_serves_a_tiny_vlm_and_agrees_with_hf_vlm(tmp_path):
    """A real vLLM server from its own environment, started and stopped by the judge; in float32 its soft
    scores and answers match the hf_vlm judge's on the same model."""
    path = save_tiny_llava(tmp_path / "tiny-llava")
    vocab = len(PROCESS_VLMS.load(path, None, "float32", "cpu")[1].tokenizer)
    cfg = load_config(None, [
        "judge.type=vllm", f"judge.model={path}", f"judge.python={VLLM_PYTHON}", f"judge.top_logprobs={vocab}",
        f"judge.server_args=[--dtype, float32, --max-model-len, '512', --enforce-eager, --max-logprobs, '{vocab}']",
        "judge.server_env={VLLM_CPU_KVCACHE_SPACE: '1', HF_HUB_OFFLINE: '1'}", "judge.start_timeout_s=600",
    ]).judge  # fmt: skip
    judge = build_judge(cfg)
    images, prompts = random_images(6), text_prompts(6)
    try:
        served = judge.judge(images, prompts)
        pid = judge.server.process.pid
    finally:
        PROCESS_SERVERS.stop_all()
    local = hf_vlm_judge(path).judge(images, prompts)
    assert [j.score for j in served] == pytest.approx([j.score for j in local], abs=2e-3)
    assert [j.verdict for j in served] == [j.verdict for j in local]
    assert all(a.answer.startswith(b.answer[:14]) for a, b in zip(served, local, strict=True))
    gone = subprocess.run(["sh", "-c", f"kill -0 -{pid}"], capture_output=True)
    assert gone.returncode != 0, "the server's process group outlived stop_all()"


@pytest.mark.slow
@pytest.mark.skipif(not os.access(VLLM_PYTHON or "/nonexistent", os.X_OK), reason="set RAYUNIFY_VLLM_PYTHON to a vLLM env")
def test_vllm_server_dies_with_a_killed_parent(tmp_path):
    """A judge actor killed with SIGKILL runs no atexit: the server's watchdog must stop it anyway."""
    path = save_tiny_llava(tmp_path / "tiny-llava")
    script = textwrap.dedent(f"""
        from rayunify.judges.vllm import VLLMServer
        server = VLLMServer({VLLM_PYTHON!r}, {str(path)!r}, args=["--enforce-eager", "--max-model-len", "512"],
                            env={{"VLLM_CPU_KVCACHE_SPACE": "1"}}, start_timeout_s=600)
        server.start()
        print(server.process.pid, flush=True)
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    group = int(done.stdout.split()[0])
    for _ in range(60):
        if subprocess.run(["sh", "-c", f"kill -0 -{group} 2>/dev/null"]).returncode != 0:
            break
        subprocess.run(["sleep", "1"])
    else:
        subprocess.run(["sh", "-c", f"kill -KILL -{group}"])
        pytest.fail("the vLLM server outlived the process that started it")


