"""The subprocess helpers shared by the Ray launcher and the vLLM judge's server manager, and the model
directory check shared by the policy's model family and the hf_vlm judge."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from rayunify.checkpoints import check_model_dir
from rayunify.config import load_config
from rayunify.procs import ProcessExited, free_port, stop_process_group, wait_for_http_ok

# Stands in for the vLLM environment's interpreter: answers 200 on any path, on the --port it is given.
FAKE_VLLM_PYTHON = """#!{python}
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])

class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{{}}")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Ok).serve_forever()
"""


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(script: str, log_path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(["sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_wait_for_http_ok_names_a_server_that_exited_or_never_answered(tmp_path):
    log = tmp_path / "server.log"
    exited = _start("echo the port is taken; exit 3", log)
    with pytest.raises(ProcessExited, match="toy server exited with 3:\nthe port is taken") as err:
        wait_for_http_ok(exited, "http://127.0.0.1:9/", 30, name="toy server", log_path=log)
    assert "the port is taken" in err.value.log
    silent = _start("echo starting; sleep 30", log)
    try:
        with pytest.raises(TimeoutError, match="toy server not up after 1 s .*\nstarting"):
            wait_for_http_ok(silent, f"http://127.0.0.1:{free_port()}/", 1, name="toy server", log_path=log)
    finally:
        stop_process_group(silent, timeout_s=5)
    assert not _group_alive(silent.pid)


def test_stop_process_group_stops_the_children_too(tmp_path):
    leader = _start("sleep 60 & sleep 60 & wait", tmp_path / "log")
    stop_process_group(leader, timeout_s=5)
    assert leader.returncode is not None and not _group_alive(leader.pid)
    stop_process_group(leader, timeout_s=5)  # twice is fine
    # A leader that ignores TERM (and its children) is killed after the timeout.
    stubborn = _start("trap '' TERM; sleep 60 & wait", tmp_path / "log")
    stop_process_group(stubborn, timeout_s=0.5, term_leader_only=True)
    assert not _group_alive(stubborn.pid)


def test_vllm_servers_start_share_and_stop_a_server_and_register_atexit_on_first_start(tmp_path):
    from rayunify.judges.vllm import VLLMJudge, VLLMServers

    python = tmp_path / "python"
    python.write_text(FAKE_VLLM_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    cfg = load_config(None, ["judge.type=vllm", "judge.model=m", f"judge.python={python}", "judge.start_timeout_s=60"])
    servers = VLLMServers()
    before = atexit._ncallbacks()
    first, second = VLLMJudge(cfg.judge, servers), VLLMJudge(cfg.judge, servers)
    assert atexit._ncallbacks() == before  # building a judge starts nothing
    try:
        url = first.base_url()
        assert second.base_url() == url and first.server is second.server
        assert atexit._ncallbacks() == before + 1
        with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
            assert response.status == 200
        pid = first.server.process.pid
    finally:
        servers.stop_all()
    assert not _group_alive(pid)
    atexit.unregister(servers.stop_all)


def test_importing_the_vllm_judge_registers_nothing_at_exit():
    code = (
        "import atexit; names = []; register = atexit.register\n"
        "atexit.register = lambda fn, *a, **k: names.append(f\"{fn.__module__}.{fn.__qualname__}\") or register(fn, *a, **k)\n"
        "import rayunify.judges.vllm; print(names)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "rayunify" not in done.stdout, done.stdout


def test_model_dir_check_names_the_family_it_needs(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert check_model_dir(tmp_path, role="hf_vlm judge") == tmp_path
    with pytest.raises(ValueError, match="model_type='llava'; the janus family needs 'janus'"):
        check_model_dir(tmp_path, family="janus")
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete checkpoint directory .*: missing tokenizer"):
        check_model_dir(tmp_path, family="janus")


def test_free_ports_come_from_below_the_ephemeral_range_and_fall_back_without_it(monkeypatch, tmp_path):
    """Ports the kernel hands out (bind to 0) are the ones outgoing connections reuse, which is how a learner
    rendezvous once lost its port before binding it; ours come from between Ray's worker ports and that range."""
    from rayunify import procs

    monkeypatch.setattr(procs, "_EPHEMERAL_RANGE", tmp_path / "range")
    (tmp_path / "range").write_text("32768\t60999\n")
    ports = procs.free_ports(32)
    assert len(set(ports)) == 32 and all(20000 <= p < 32768 for p in ports)
    (tmp_path / "range").unlink()  # not Linux, or no /proc: whatever the kernel picks
    assert len(set(procs.free_ports(8))) == 8
