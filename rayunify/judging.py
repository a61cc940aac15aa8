"""Judges: anything that turns (image, prompt) pairs into `Judgement`s, chosen by `judge.type` in config.

- self: the model's own understanding branch (the paper), live or frozen weights;
- shapes_checker: ShapesWorld's exact checker (ground truth; the guard's default reference);
- python: user code `module:callable`, fn(images, prompts, **kwargs) -> (verdicts, scores);
- noisy: wraps another judge and flips / randomises / always accepts, to cause co-degradation on purpose;
- hf_vlm: any transformers vision-language model from a local directory (e.g. Qwen2.5-VL as the guard's
  reference, as the paper's external judge);
- vllm: a VLM behind vLLM's OpenAI-compatible server, which runs from its own Python environment (vLLM pins
  its own torch and transformers: it never shares the main install).

External judges ask the same question and read the same answer format as the self-judge (`rayunify.judges`),
so their verdicts and soft scores mean the same thing. They load lazily, on the first `judge` call: building
one (as the dry run does) only checks its directory or interpreter.

No ray or deepspeed here: the judge actor wraps one of these.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import importlib
import io
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rayunify import judges
from rayunify.builtins import build_builtin_judge
from rayunify.judges import parse_verdict
from rayunify.launch import free_port
from rayunify.types import Judgement, Prompt, Verdict

if TYPE_CHECKING:
    from rayunify.config import HFVLMJudgeConfig, NoisyJudgeConfig, PythonJudgeConfig, VLLMJudgeConfig
    from rayunify.models.base import UnifiedModel


class Judge(Protocol):
    name: str

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]: ...


class SelfJudge:
    """The unified model judging its own images with the paper's question."""

    def __init__(self, model: UnifiedModel, max_new_tokens: int = 8, batch_size: int = 64):
        self.model = model
        self.name = "self"
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        out: list[Judgement] = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            texts = [p.text for p in prompts[chunk]]
            out.extend(self.model.judge(images[chunk], texts, max_new_tokens=self.max_new_tokens))
        return out


class ShapesCheckerJudge:
    """Exact verdicts from ShapesWorld's checker; needs each prompt's `spec`."""

    name = "shapes_checker"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        from rayunify.shapes.checker import check_batch
        from rayunify.shapes.world import Spec

        missing = [p.prompt_id for p in prompts if p.spec is None]
        if missing:
            raise ValueError(
                f"the shapes_checker judge needs ShapesWorld prompts with a spec; {len(missing)} have none "
                f"(first: {missing[0]}). Use another judge type for free-text prompts."
            )
        results = check_batch(np.stack(list(images)), [Spec.from_dict(p.spec) for p in prompts])
        return [
            Judgement(
                verdict=Verdict.ACCEPT if r.aligned else Verdict.REJECT,
                score=1.0 if r.aligned else 0.0,
                answer="; ".join(r.reasons) or "aligned",
                judge=self.name,
            )
            for r in results
        ]


class PythonJudge:
    """User code by import path. Verdicts may be bools, 0/1 or answer strings ("The score is 1")."""

    def __init__(self, import_path: str, kwargs: dict[str, Any] | None = None):
        self.fn = load_callable(import_path)
        self.kwargs = kwargs or {}
        self.name = f"python:{import_path}"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        result = self.fn(list(images), [p.text for p in prompts], **self.kwargs)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"judge {self.name} must return (verdicts, scores), got {type(result).__name__}")
        verdicts, scores = result
        if len(verdicts) != len(images) or len(scores) != len(images):
            raise ValueError(
                f"judge {self.name} returned {len(verdicts)} verdicts and {len(scores)} scores for {len(images)} images"
            )
        return [
            Judgement(verdict=_as_verdict(v), score=float(np.clip(s, 0.0, 1.0)), answer=str(v), judge=self.name)
            for v, s in zip(verdicts, scores, strict=True)
        ]


class NoisyJudge:
    """Poor supervision: corrupts a share of a base judge's verdicts (seeded, so experiments repeat)."""

    def __init__(self, base: Judge, flip_fraction=0.0, random_fraction=0.0, always_accept=False, seed=0):
        self.base = base
        self.flip_fraction = flip_fraction
        self.random_fraction = random_fraction
        self.always_accept = always_accept
        self.seed = seed
        self.name = f"noisy({base.name})"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        verdicts = self.base.judge(images, prompts)
        return [self._corrupt(j, img, p) for j, img, p in zip(verdicts, images, prompts, strict=True)]

    def _corrupt(self, j: Judgement, image: np.ndarray, prompt: Prompt) -> Judgement:
        if self.always_accept:
            return Judgement(Verdict.ACCEPT, 1.0, j.answer, self.name)
        # The noise is a function of (seed, image, prompt), not of call order: a re-run chunk, another
        # actor or a resumed run corrupts the same samples the same way.
        rng = np.random.default_rng([self.seed, zlib.crc32(np.ascontiguousarray(image).tobytes()), zlib.crc32(prompt.text.encode())])
        draw = rng.random()
        if draw < self.flip_fraction and j.verdict != Verdict.INVALID:
            flipped = Verdict.REJECT if j.verdict == Verdict.ACCEPT else Verdict.ACCEPT
            return Judgement(flipped, 1.0 - j.score, j.answer, self.name)
        if draw < self.flip_fraction + self.random_fraction:
            accept = bool(rng.random() < 0.5)
            return Judgement(Verdict.ACCEPT if accept else Verdict.REJECT, float(accept), j.answer, self.name)
        return Judgement(j.verdict, j.score, j.answer, self.name)


# ---------------------------------------------------------------------------------------------- external VLMs
VLM_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip
VLM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
VLM_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def check_vlm_dir(path: str | Path) -> Path:
    """An hf_vlm judge's directory, checked before anything loads: what is missing gets named here, not found
    deep inside transformers after minutes of loading (a half-downloaded 72B model is the usual case)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"hf_vlm judge: model directory {path} does not exist (the judge's `path`)")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    weights = [f for f in VLM_WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        missing.append("weights (one of " + ", ".join(VLM_WEIGHT_FILES) + ")")
    for index in (f for f in weights if f.endswith(".index.json")):
        shards = set(json.loads((path / index).read_text()).get("weight_map", {}).values())
        absent = sorted(s for s in shards if not (path / s).is_file())
        if absent:
            missing.append(f"{len(absent)} of the {len(shards)} weight shards in {index} (first: {absent[0]})")
    if not any((path / f).is_file() for f in VLM_TOKENIZER_FILES):
        missing.append("tokenizer (" + " / ".join(VLM_TOKENIZER_FILES) + ")")
    if not any((path / f).is_file() for f in VLM_PROCESSOR_FILES):
        missing.append("image processor (" + " / ".join(VLM_PROCESSOR_FILES) + ")")
    if missing:
        raise FileNotFoundError(f"incomplete hf_vlm judge directory {path}: missing {'; '.join(missing)}")
    return path


# One loaded copy per (directory, class, dtype, device) and process: the trainer builds the guard's reference
# judge again at every evaluation, and a 7B judge must not be loaded again each time.
_LOADED_VLMS: dict[tuple[str, str | None, str, str], tuple[Any, Any]] = {}
_LOAD_LOCK = threading.Lock()


def load_vlm(path: str | Path, model_class: str | None, dtype: str, device: str) -> tuple[Any, Any]:
    """(model, processor) of a local transformers VLM, loaded once per process."""
    key = (str(Path(path).resolve()), model_class, dtype, device)
    with _LOAD_LOCK:
        if key not in _LOADED_VLMS:
            import torch
            from transformers import AutoProcessor

            model = _vlm_class(model_class).from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
            processor = AutoProcessor.from_pretrained(path)
            # The answer is decoded after the prompt, so every row's prompt must end at the same column.
            processor.tokenizer.padding_side = "left"
            _LOADED_VLMS[key] = (model, processor)
        return _LOADED_VLMS[key]


def _vlm_class(model_class: str | None) -> Any:
    import transformers

    if model_class is None:
        return transformers.AutoModelForImageTextToText
    if ":" in model_class:
        return load_callable(model_class)
    if not hasattr(transformers, model_class):
        raise ValueError(f"hf_vlm judge: model_class={model_class!r} is neither a transformers class nor 'module:Class'")
    return getattr(transformers, model_class)


def _auto_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _as_pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.asarray(image, dtype=np.uint8))


def _check_batch(images: Sequence[Any], prompts: Sequence[Prompt], name: str) -> None:
    if len(images) != len(prompts):
        raise ValueError(f"judge {name} got {len(images)} images for {len(prompts)} prompts")


class HFVLMJudge:
    """A transformers VLM asked the paper's question (or `question`), batched.

    The answer prefix ("The score is") is teacher-forced, then the answer is decoded greedily: the logits of
    the first decoded position give the soft score P(yes) / (P(yes) + P(no)), the decoded text the verdict.
    """

    def __init__(self, cfg: HFVLMJudgeConfig, device: str | None = None):
        self.cfg = cfg
        self.path = check_vlm_dir(cfg.path)
        self.device = device or _auto_device(cfg.device)
        self.name = f"hf_vlm:{self.path.name}"
        self._ids: tuple[list[int], list[int], list[int]] | None = None  # answer prefix; yes and no token ids

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        _check_batch(images, prompts, self.name)
        out: list[Judgement] = []
        for start in range(0, len(images), self.cfg.batch_size):
            chunk = slice(start, start + self.cfg.batch_size)
            out.extend(self._judge_batch(images[chunk], prompts[chunk]))
        return out

    def _judge_batch(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        import torch

        model, processor = load_vlm(self.path, self.cfg.model_class, self.cfg.dtype, self.device)
        enc = self._inputs(processor, images, prompts)
        _, yes_ids, no_ids = self._answer_ids(processor)
        steps = 1 if self.cfg.verdict_from == "score" else self.cfg.max_new_tokens
        tokenizer = processor.tokenizer
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )  # fmt: skip
        first = out.logits[0].float()  # the position right after the teacher-forced prefix
        lp_yes, lp_no = first[:, yes_ids].logsumexp(-1).tolist(), first[:, no_ids].logsumexp(-1).tolist()
        decoded = tokenizer.batch_decode(out.sequences[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return [
            self._judgement(text, judges.soft_score(y, n)) for text, y, n in zip(decoded, lp_yes, lp_no, strict=True)
        ]

    def _judgement(self, continuation: str, score: float) -> Judgement:
        answer = f"{self.cfg.answer_prefix}{continuation}"
        if self.cfg.verdict_from == "score":
            verdict = Verdict.ACCEPT if score >= 0.5 else Verdict.REJECT
        else:
            verdict = judges.parse_choice(answer, self.cfg.verdict_pattern, self.cfg.yes_token, self.cfg.no_token)
        return Judgement(verdict=verdict, score=score, answer=answer, judge=self.name)

    def _chat(self, processor: Any, prompt: str) -> str:
        question = judges.format_question(self.cfg.question, prompt)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        try:
            return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except ValueError as err:  # transformers raises this when the directory has no chat template
            raise ValueError(f"hf_vlm judge {self.path}: cannot build the chat prompt: {err}") from None

    def _answer_ids(self, processor: Any, chat: str | None = None) -> tuple[list[int], list[int], list[int]]:
        """The prefix's token ids, and every token that reads as the yes / the no answer.

        P(yes) sums " 1" and "1" (and "Yes", "yes" for a yes/no judge): which form a model writes is a
        tokenizer detail, and vLLM's top log-probs count them the same way, so both judges agree.
        """
        if self._ids is None:
            tokenizer = processor.tokenizer
            chat = chat if chat is not None else self._chat(processor, "a photo")
            # "<|Assistant|>:" wants " The score is", "assistant\n" wants "The score is": match the template.
            space = " " if self.cfg.answer_prefix and chat and not chat[-1].isspace() else ""
            encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
            prefix, yes_id, no_id = judges.choice_token_ids(
                encode, space + self.cfg.answer_prefix, self.cfg.yes_token, self.cfg.no_token
            )
            words = [w.strip().casefold() for w in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]
            yes, no = self.cfg.yes_token.casefold(), self.cfg.no_token.casefold()
            yes_ids = sorted({yes_id, *(i for i, w in enumerate(words) if w == yes)})
            no_ids = sorted({no_id, *(i for i, w in enumerate(words) if w == no)})
            self._ids = prefix, yes_ids, no_ids
        return self._ids

    def _inputs(self, processor: Any, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> dict[str, Any]:
        """Processor inputs with the answer prefix's token ids appended (the same ids for every row)."""
        import torch

        texts = [self._chat(processor, p.text) for p in prompts]
        prefix, _, _ = self._answer_ids(processor, texts[0])
        # The chat template writes the special tokens it wants (BOS included, if any): add none on top, as
        # transformers' apply_chat_template(tokenize=True) and vLLM's chat API do, so both judges see one input.
        pixels = [_as_pil(i) for i in images]
        enc = dict(processor(text=texts, images=pixels, padding=True, add_special_tokens=False, return_tensors="pt"))
        ids = enc["input_ids"]
        rows, extra = ids.shape[0], len(prefix)
        for key, value in enc.items():
            # Per-token tensors (input ids, attention mask, token types) grow by the prefix; images do not.
            if isinstance(value, torch.Tensor) and value.shape[:2] == ids.shape and key != "input_ids":
                fill = 1 if key == "attention_mask" else 0
                enc[key] = torch.cat([value, value.new_full((rows, extra), fill)], dim=1)
        enc["input_ids"] = torch.cat([ids, torch.tensor([prefix] * rows, dtype=ids.dtype)], dim=1)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}


# vLLM runs as `python -m vllm.entrypoints.openai.api_server` from its own environment, under a shell that
# stops it when the process that started it goes away (a Ray actor can be killed without running atexit):
# a GPU held by an orphaned server is the failure this avoids.
_SERVER_WATCHDOG = """
"$@" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server; exit 0' TERM INT
while kill -0 "$RAYUNIFY_PARENT_PID" 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 1; done
kill -TERM $server 2>/dev/null
wait $server
"""


class VLLMServer:
    """An OpenAI-compatible vLLM server on `host:port`, started from another Python environment."""

    def __init__(
        self, python: str, model: str, host: str = "127.0.0.1", port: int | None = None,
        args: Sequence[str] = (), env: dict[str, str] | None = None, start_timeout_s: float = 900.0,
    ):  # fmt: skip
        self.python = _check_python(python)
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.log_path = ""
        self.start_s = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Start the server and wait until it answers; returns its base URL (…/v1)."""
        started = time.monotonic()
        cmd = [
            self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
            "--host", self.host, "--port", str(self.port), *self.args,
        ]  # fmt: skip
        fd, self.log_path = tempfile.mkstemp(prefix="rayunify-vllm-", suffix=".log")
        os.close(fd)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["sh", "-c", _SERVER_WATCHDOG, "vllm-watchdog", *cmd], env=self._child_env(),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_s = time.monotonic() - started
        return self.url

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(
            PATH=f"{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}",  # its own `ray`, `ninja`...
            RAYUNIFY_PARENT_PID=str(os.getpid()),
            VLLM_NO_USAGE_STATS="1",  # a judge server reports nowhere
            DO_NOT_TRACK="1",
        )
        env.update(self.env)
        return env

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                if response.status == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"vLLM server at {self.url} not up after {self.start_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server and everything it started (its own process group); safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            if _group_gone(process, wait_s):
                break
        with contextlib.suppress(OSError):  # its tail is already in any error raised about it
            os.remove(self.log_path)


def _group_gone(leader: subprocess.Popen, wait_s: float) -> bool:
    """Wait until no process of the leader's group is left (vLLM's engine workers exit after the server)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        leader.poll()  # reap the leader, or it lingers as a zombie of ours
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _check_python(python: str) -> str:
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise FileNotFoundError(
            f"vllm judge: python={python!r} is not an executable; point it at the vLLM environment's interpreter "
            "(README, 'External judges')"
        )
    return python


# Servers this process started, one per launch setting: every judge built from the same config shares one.
_SERVERS: dict[tuple[Any, ...], VLLMServer] = {}
_SERVERS_LOCK = threading.Lock()


def shared_vllm_server(cfg: VLLMJudgeConfig) -> VLLMServer:
    assert cfg.python is not None
    key = (cfg.python, cfg.model, cfg.host, cfg.port, tuple(cfg.server_args), tuple(sorted(cfg.server_env.items())))
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None or server.process is None or server.process.poll() is not None:
            server = VLLMServer(
                cfg.python, cfg.model, cfg.host, cfg.port, cfg.server_args, cfg.server_env, cfg.start_timeout_s
            )
            server.start()
            _SERVERS[key] = server
        return server


@atexit.register
def stop_vllm_servers() -> None:
    with _SERVERS_LOCK:
        for server in _SERVERS.values():
            server.stop()
        _SERVERS.clear()


class VLLMJudge:
    """A VLM behind vLLM's OpenAI-compatible chat API: the same question, prefix and parsing as hf_vlm.

    The prefix is sent as an unfinished assistant message (`continue_final_message`), so the server decodes
    the answer after it; the first answer token's top log-probs give the soft score. `batch_size` requests are
    in flight at once (vLLM batches them itself).
    """

    def __init__(self, cfg: VLLMJudgeConfig):
        self.cfg = cfg
        if cfg.url is None:
            _check_python(cfg.python or "")
        self.name = f"vllm:{Path(cfg.model).name or cfg.model}"
        self.server: VLLMServer | None = None

    def base_url(self) -> str:
        if self.cfg.url is not None:
            return self.cfg.url.rstrip("/")
        if self.server is None:
            self.server = shared_vllm_server(self.cfg)
        return self.server.url

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        _check_batch(images, prompts, self.name)
        url = self.base_url()
        try:
            with ThreadPoolExecutor(max_workers=min(self.cfg.batch_size, max(1, len(images)))) as pool:
                return list(pool.map(lambda i, p: self._ask(url, i, p), images, prompts))
        except (ConnectionError, RuntimeError) as err:
            if self.server is None:
                raise
            # A server we started and that failed mid-run: its own log says why.
            raise type(err)(f"{err}\nvLLM server log (tail):\n{self.server.log_tail()}") from None

    def request_body(self, image: np.ndarray, prompt: str) -> dict[str, Any]:
        buffer = io.BytesIO()
        _as_pil(image).save(buffer, format="PNG")
        data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        question = judges.format_question(self.cfg.question, prompt)
        content = [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": question}]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        body: dict[str, Any] = {
            "model": self.cfg.model, "messages": messages, "temperature": 0.0, "logprobs": True,
            "top_logprobs": self.cfg.top_logprobs,
            "max_tokens": 1 if self.cfg.verdict_from == "score" else self.cfg.max_new_tokens,
        }  # fmt: skip
        if self.cfg.answer_prefix:
            messages.append({"role": "assistant", "content": self.cfg.answer_prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _ask(self, url: str, image: np.ndarray, prompt: Prompt) -> Judgement:
        reply = _post_json(f"{url}/chat/completions", self.request_body(image, prompt.text), self.cfg.request_timeout_s)
        choice = reply["choices"][0]
        answer = f"{self.cfg.answer_prefix}{choice['message'].get('content') or ''}"
        positions = (choice.get("logprobs") or {}).get("content") or []
        top = [(t["token"], t["logprob"]) for t in positions[0]["top_logprobs"]] if positions else []
        score = judges.choice_score(top, self.cfg.yes_token, self.cfg.no_token) if top else None
        if self.cfg.verdict_from == "score":
            verdict = Verdict.INVALID if score is None else Verdict(int(score >= 0.5))
        else:
            verdict = judges.parse_choice(answer, self.cfg.verdict_pattern, self.cfg.yes_token, self.cfg.no_token)
        if score is None:  # neither answer among the top log-probs: the verdict is all we know
            score = {Verdict.ACCEPT: 1.0, Verdict.REJECT: 0.0}.get(verdict, 0.5)
        return Judgement(verdict=verdict, score=score, answer=answer, judge=self.name)


def _post_json(url: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:2000]
        raise RuntimeError(f"vLLM server {url} answered {err.code}: {detail}") from None
    except urllib.error.URLError as err:
        raise ConnectionError(f"cannot reach the vLLM server at {url}: {err.reason}") from None


def _as_verdict(value: Any) -> Verdict:
    if isinstance(value, Verdict):
        return value
    if isinstance(value, bool | np.bool_):
        return Verdict.ACCEPT if value else Verdict.REJECT
    if isinstance(value, int | np.integer) and int(value) in (0, 1):
        return Verdict(int(value))
    if isinstance(value, str):
        return parse_verdict(value) if "score" in value.lower() else parse_verdict(f"The score is {value.strip()}")
    return Verdict.INVALID


def load_callable(import_path: str) -> Callable[..., Any]:
    """`package.module:attr` → the object, with errors that say which half failed."""
    module_name, _, attr = import_path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"import path {import_path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import module {module_name!r} for {import_path!r}: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{module_name!r} has no attribute {attr!r} (from {import_path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{import_path!r} is not callable")
    return obj


def build_judge(cfg: Any, model_factory: Callable[[], UnifiedModel] | None = None) -> Judge:
    """The one factory for `judge.type` (also used for the guard's reference judge)."""
    kind = getattr(cfg, "type", None)
    if kind == "self":
        if model_factory is None:
            raise ValueError("judge.type=self needs the unified model; no model factory was given")
        return SelfJudge(model_factory(), max_new_tokens=cfg.max_new_tokens)
    builtin = build_builtin_judge(kind, cfg)
    if builtin is not None:
        return builtin
    if kind == "python":
        py: PythonJudgeConfig = cfg
        return PythonJudge(py.import_path, py.kwargs)
    if kind == "noisy":
        noisy: NoisyJudgeConfig = cfg
        base = build_judge(noisy.base, model_factory)
        return NoisyJudge(base, noisy.flip_fraction, noisy.random_fraction, noisy.always_accept, noisy.seed)
    if kind == "hf_vlm":
        return HFVLMJudge(cfg)
    if kind == "vllm":
        return VLLMJudge(cfg)
    raise ValueError(f"judge.type={kind!r}: choose one of self, shapes_checker, python, noisy, hf_vlm, vllm")
