"""Portable numerics: the settings under which a CPU run computes the same floats on any x86-64 machine.

Left alone, torch picks its kernels by the host CPU (AVX-512, AVX2 or the plain build), MKL picks its own
code path (and another one on AMD than on Intel), oneDNN JITs for the widest ISA it finds, and glibc's
`exp`/`log` take an FMA variant where the CPU has FMA. Each choice changes the last bits of a float; in a
sampled run a last bit can flip a drawn token, then a verdict, then the whole run. These variables pin every
one of those choices to a code path every x86-64 CPU has, and one thread per process so no reduction is
split by the host's core count. They are read when a process starts, so they go into the environment of a
new process (a subprocess, or a Ray cluster started from it: its workers inherit them), never into a
running one.

`env $(python -m rayunify.numerics) rayunify train ...` runs a local training job this way (several times
slower). The golden runs of the test suite use it, so their records hold on any x86-64 CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PORTABLE_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",  # torch's own kernels: the build without AVX2/AVX-512
    "MKL_CBWR": "COMPATIBLE",  # MKL: one code path on Intel and AMD alike (conditional reproducibility)
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN (convolutions): no wider JIT kernels
    "DNNL_MAX_CPU_ISA": "SSE41",  # the same, under oneDNN's older name
    "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT",  # no implicit bf16/tf32 down-conversion
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-AVX,-FMA,-FMA4,-AVX512F",  # libm without FMA variants
    "OMP_NUM_THREADS": "1",  # no host-dependent split of a reduction across cores
    "MKL_NUM_THREADS": "1",
}


def portable_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with every portable setting applied."""
    env = dict(os.environ if base is None else base)
    env.update(PORTABLE_ENV)
    return env


def kernel_report() -> dict[str, str]:
    """What this process runs on: torch's CPU capability and each pinning variable as set here."""
    import torch

    report = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    report.update({name: os.environ.get(name, "") for name in PORTABLE_ENV})
    return report


def is_portable(report: Mapping[str, str]) -> bool:
    """Whether a process's `kernel_report` shows the portable settings in force."""
    return report.get("torch_cpu_capability") == "DEFAULT" and all(
        report.get(name) == value for name, value in PORTABLE_ENV.items()
    )


if __name__ == "__main__":
    print(" ".join(f"{name}={value}" for name, value in PORTABLE_ENV.items()))
