"""Golden runs: a short seeded online run, an online LoRA run with broadcast pushes and a short offline C-SFT
run must reproduce the `metrics.jsonl` rows (every loss, reward, count and version; wall-clock times
excluded) and the exported weights recorded in `tests/golden/`. They pin the driver's behaviour while its
code moves.

They hold on any x86-64 CPU: the runs (`tests/golden_runs.py`) execute in a fresh process under
`rayunify.numerics.PORTABLE_ENV` (torch's plain kernels, MKL's compatible code path, oneDNN at SSE4.1, libm
without FMA, one thread per process), and every worker is checked to have run that way. Counts, verdicts,
versions and keys must match exactly; floats to a relative 1e-6 (a behaviour change moves them by far more;
the tolerance only spares a last bit that a compiler or libm version might still round differently); each
exported tensor by its dtype, shape, sum, sum of squares and a signed sum.

A deliberate change of behaviour rewrites the records: `RAYUNIFY_UPDATE_GOLDEN=1 pytest tests/test_golden.py`
(and say why in the commit).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rayunify.numerics import is_portable, portable_env

pytestmark = pytest.mark.kernels  # figures of trained models: rerun under a second kernel setting

TESTS = Path(__file__).parent
GOLDEN = TESTS / "golden"
UPDATE = os.environ.get("RAYUNIFY_UPDATE_GOLDEN") == "1"
REL_TOL, ABS_TOL = 1e-6, 1e-9
sys.path.insert(0, str(TESTS))
from golden_runs import RUNS  # noqa: E402


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> Path:
    """Every golden run, done once in a fresh process with portable numerics."""
    out = tmp_path_factory.mktemp("golden")
    env = portable_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS.parent), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, str(TESTS / "golden_runs.py"), str(out)], env=env, timeout=1200,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, f"golden runs failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return out


def close(got, want) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        if math.isnan(got) or math.isnan(want):
            return math.isnan(got) and math.isnan(want)
        return math.isclose(got, want, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return type(got) is type(want) and got == want


def differences(got: dict, want: dict) -> dict:
    return {k: (got[k], want[k]) for k in want if not close(got[k], want[k])}


def test_every_process_of_the_golden_runs_used_portable_numerics(produced: Path):
    report = json.loads((produced / "kernels.json").read_text())
    assert is_portable(report["driver"]), report["driver"]
    assert is_portable(report["worker"]), report["worker"]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_golden_run_is_reproduced(produced: Path, name: str):
    record = json.loads((produced / f"{name}.json").read_text())
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"golden record rewritten: {path}")
    golden = json.loads(path.read_text())
    rows, want_rows = record["metrics"], golden["metrics"]
    assert len(rows) == len(want_rows), "number of logged rows changed"
    for i, (got, want) in enumerate(zip(rows, want_rows, strict=True)):
        assert sorted(got) == sorted(want), f"row {i}: keys differ: {sorted(set(got) ^ set(want))}"
        diff = differences(got, want)
        assert not diff, f"row {i} (step {want.get('step')}): {diff}"
    assert sorted(record["weights"]) == sorted(golden["weights"]), "exported tensors differ in names"
    for tensor, want in golden["weights"].items():
        diff = differences(record["weights"][tensor], want)
        assert not diff, f"exported tensor {tensor}: {diff}"


def test_a_changed_figure_fails_the_comparison():
    """The tolerance spares last bits, not behaviour: a loss off in its 5th digit, a count off by one or a
    tensor summary moved by a single element's change is a difference."""
    assert not differences({"loss": 0.6931471805599453}, {"loss": 0.6931471805599453 * (1 + 1e-8)})
    assert differences({"loss": 0.69315}, {"loss": 0.69314})
    assert differences({"pairs": 3}, {"pairs": 4})
    assert differences({"pairs": 3.0}, {"pairs": 3})  # a type change is a change
    import torch
    from golden_runs import tensor_summary

    weights = torch.randn(64, 32)
    nudged = weights.clone()
    nudged[5, 7] += 1e-3
    assert differences(tensor_summary(nudged), tensor_summary(weights))
