"""vllm: a VLM behind vLLM's OpenAI-compatible server, asked the same question as hf_vlm.

vLLM pins its own torch and transformers, so it never shares the main install: the server runs from its
own Python environment (`judge.python`), started here (`VLLMServer`, one per launch setting and process),
or is already running (`judge.url`). `VLLMJudge` is the HTTP client.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import io
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rayunify.judges import question
from rayunify.judges.base import as_pil, check_pairs
from rayunify.procs import free_port, log_tail, stop_process_group, wait_for_http_ok
from rayunify.types import Judgement, Prompt, Verdict

if TYPE_CHECKING:
    from rayunify.config import VLLMJudgeConfig

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
        self.python = check_python(python)
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
            wait_for_http_ok(
                self.process, f"{self.url}/models", self.start_timeout_s, name=f"vLLM server at {self.url}",
                log_path=self.log_path,
            )  # fmt: skip
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

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return log_tail(self.log_path, chars)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server and everything it started (its own process group); safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_process_group(process, timeout_s)
        with contextlib.suppress(OSError):  # its tail is already in any error raised about it
            os.remove(self.log_path)


def check_python(python: str) -> str:
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise FileNotFoundError(
            f"vllm judge: python={python!r} is not an executable; point it at the vLLM environment's interpreter "
            "(README, 'External judges')"
        )
    return python


class VLLMServers:
    """The servers this process started, one per launch setting: every judge built from the same config
    shares one. All are stopped at interpreter exit (registered when the first one starts)."""

    def __init__(self) -> None:
        self._servers: dict[tuple[Any, ...], VLLMServer] = {}
        self._lock = threading.Lock()
        self._stop_at_exit = False

    def shared(self, cfg: VLLMJudgeConfig) -> VLLMServer:
        assert cfg.python is not None
        key = (cfg.python, cfg.model, cfg.host, cfg.port, tuple(cfg.server_args), tuple(sorted(cfg.server_env.items())))
        with self._lock:
            server = self._servers.get(key)
            if server is None or not server.running():
                server = VLLMServer(
                    cfg.python, cfg.model, cfg.host, cfg.port, cfg.server_args, cfg.server_env, cfg.start_timeout_s
                )
                if not self._stop_at_exit:
                    atexit.register(self.stop_all)
                    self._stop_at_exit = True
                server.start()
                self._servers[key] = server
            return server

    def stop_all(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.stop()
            self._servers.clear()


PROCESS_SERVERS = VLLMServers()


class VLLMJudge:
    """A VLM behind vLLM's OpenAI-compatible chat API: the same question, prefix and parsing as hf_vlm.

    The prefix is sent as an unfinished assistant message (`continue_final_message`), so the server decodes
    the answer after it; the first answer token's top log-probs give the soft score. `batch_size` requests are
    in flight at once (vLLM batches them itself).
    """

    def __init__(self, cfg: VLLMJudgeConfig, servers: VLLMServers = PROCESS_SERVERS):
        self.cfg = cfg
        if cfg.url is None:
            check_python(cfg.python or "")
        self.name = f"vllm:{Path(cfg.model).name or cfg.model}"
        self.servers = servers
        self.server: VLLMServer | None = None

    def base_url(self) -> str:
        if self.cfg.url is not None:
            return self.cfg.url.rstrip("/")
        if self.server is None:
            self.server = self.servers.shared(self.cfg)
        return self.server.url

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        check_pairs(images, prompts, self.name)
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
        as_pil(image).save(buffer, format="PNG")
        data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        text = question.format_question(self.cfg.question, prompt)
        content = [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": text}]
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
        score = question.choice_score(top, self.cfg.yes_token, self.cfg.no_token) if top else None
        if self.cfg.verdict_from == "score":
            verdict = Verdict.INVALID if score is None else Verdict(int(score >= 0.5))
        else:
            verdict = question.parse_choice(answer, self.cfg.verdict_pattern, self.cfg.yes_token, self.cfg.no_token)
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
