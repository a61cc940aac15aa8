"""The plugin registries as several threads of one process see them (a suite runner resolves its runs'
configs from a thread pool)."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter, so the plugins really are loaded by the racing threads. The plugin modules import
# torch, which takes long enough for a thread that does not wait to find the registry half filled.
_RACE = """
import threading
from rayunify.builtins import JUDGES, MODELS, PROMPT_SOURCES

errors, barrier = [], threading.Barrier(8)

def look_up():
    barrier.wait()
    try:
        PROMPT_SOURCES["shapes_v2"], JUDGES["shapes_checker"], MODELS["shapes-v2"]
    except Exception as err:
        errors.append(repr(err))

threads = [threading.Thread(target=look_up) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("errors:", errors)
raise SystemExit(1 if errors else 0)
"""


def test_concurrent_first_look_ups_all_see_every_plugin():
    result = subprocess.run([sys.executable, "-c", _RACE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
