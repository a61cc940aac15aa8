"""Run every CPU benchmark and write the *Measured* table from what they print, so no figure is hand-copied.

Each benchmark runs in a subprocess of its own (this checkout's `rayunify` first on the path) with a time
limit. Its row takes the `summary:` lines it prints (else its last plain line) and every `<name> ratio=`
line. Above the table: when, at which commit, the CPU, its cores, the load average at the start and the
end (other jobs slow every figure down; the line says so when the machine was busy), and the versions of
the packages the figures depend on. Written to docs/measured.md, and into the documentation's Speed page
(docs/speed.md, its *Measured* section) between

    <!-- measured:begin -->  and  <!-- measured:end -->

    python benchmarks/write_measured.py                    # what `make bench` runs
    python benchmarks/write_measured.py --only bench_judge --no-page

A benchmark that fails or runs out of time gets a row saying so; the others still run. Exit status 1 then.
Last line: `measured ratio=<benchmarks that finished over benchmarks run>`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEED_PAGE = ROOT / "docs" / "speed.md"  # the site's Speed page holds the Measured table
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
PACKAGES = ("torch", "transformers", "peft", "deepspeed", "ray", "numpy")
RATIO = re.compile(r"^[\w ]+ ratio=\S+$")


@dataclass(frozen=True)
class Benchmark:
    script: str
    args: tuple[str, ...]
    what: str  # what the row measures, for the table
    timeout_s: float = 420.0


# The lead's quiet-machine budget for all of them together is about 6 minutes.
BENCHMARKS = (
    Benchmark("bench_rollout.py", ("--batch", "2", "8", "--repeats", "2"), "rollout: tiny Janus at 144 image tokens, CFG 5, n=4"),
    Benchmark("bench_judge.py", (), "judge: 32 ShapesWorld renders, random tiny Janus and the ShapesWorld base"),
    Benchmark("bench_shapes.py", ("--shipped",), "ShapesWorld checker, and the shipped base's VQ round trip"),
    Benchmark("bench_pipeline.py", ("--quick", "--steps", "6", "--warmup", "2"), "pipeline: tiny Janus, coin-flip judge, 8 prompts x 4 images a step", 900.0),  # fmt: skip
    Benchmark("bench_showo_rollout.py", (), "Show-o rollout: small random Show-o, 64 codes, 16 steps, batch 1 and 4"),
    Benchmark("bench_build.py", (), "offline build memory: 2,000 vs 200 prompts x 10 images, tiny Janus", 900.0),
)


@dataclass
class Result:
    benchmark: Benchmark
    returncode: int
    seconds: float
    figure: str
    ratios: list[str]


def run_benchmark(bench: Benchmark, directory: Path = ROOT / "benchmarks") -> Result:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    # A session of its own: a benchmark out of time is stopped with everything it started (its Ray
    # cluster's GCS and raylet, its spawned roles), not just its own process.
    proc = subprocess.Popen(
        [sys.executable, str(directory / bench.script), *bench.args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=bench.timeout_s)
    except subprocess.TimeoutExpired:
        from rayunify.procs import stop_process_group

        stop_process_group(proc, timeout_s=20)
        proc.communicate()
        return Result(bench, -1, time.perf_counter() - start, f"did not finish within {bench.timeout_s:.0f} s", [])
    seconds = time.perf_counter() - start
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["(no output)"])[-1]
        return Result(bench, proc.returncode, seconds, f"failed (exit {proc.returncode}): {last[:300]}", [])
    return Result(bench, 0, seconds, figure_of(lines), [line for line in lines if RATIO.match(line)])


def figure_of(lines: list[str]) -> str:
    """The benchmark's `summary:` lines, else its last line that is neither JSON nor a ratio."""
    summaries = [line.removeprefix("summary:").strip() for line in lines if line.startswith("summary:")]
    if summaries:
        return "; ".join(summaries)
    plain = [line for line in lines if not line.startswith("{") and not RATIO.match(line)]
    return plain[-1] if plain else "(no figure printed)"


def machine_line(load_start: float, load_end: float) -> str:
    cores = os.cpu_count() or 1
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor())
    versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    busy = " (the machine was busy: figures are slower and noisier than on an idle one)" if load_start > 0.5 * cores else ""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {when} at commit {_commit()} by `make bench` on {cpu or 'an unknown CPU'}, {cores} cores; load "
        f"average (1 min) {load_start:.2f} at the start, {load_end:.2f} at the end{busy}. Python "
        f"{platform.python_version()}, {versions}."
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def table(results: list[Result], header: str) -> str:
    rows = [
        f"| `{r.benchmark.script}{''.join(' ' + a for a in r.benchmark.args)}`: {r.benchmark.what} | {_cell(r.figure)} "
        f"| {_cell(', '.join(r.ratios) or '-')} | {r.seconds:.0f} |"
        for r in results
    ]
    return "\n".join([header, "", "| benchmark | figure | against its baseline, same run | s |", "|---|---|---|---|", *rows])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def replace_between_markers(text: str, block: str) -> str:
    """`text` with what lies between the measured markers replaced by `block` (markers kept)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the page needs exactly one {BEGIN} followed by one {END} around the Measured table")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="benchmark names (e.g. bench_judge) to run; default: all")
    parser.add_argument("--no-page", action="store_true", help="write docs/measured.md only (not docs/speed.md)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "measured.md"))
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if (ROOT / "benchmarks" / b.script).exists()]  # bench_build may be absent
    if args.only:
        chosen = [b for b in chosen if b.script.removesuffix(".py") in args.only]
    load_start = os.getloadavg()[0]
    results = []
    for bench in chosen:
        print(f"running {bench.script} {' '.join(bench.args)}", flush=True)
        results.append(run_benchmark(bench))
        print(f"  {results[-1].seconds:.0f} s: {results[-1].figure}", flush=True)
    block = table(results, machine_line(load_start, os.getloadavg()[0]))
    Path(args.out).write_text(f"<!-- written by benchmarks/write_measured.py (make bench): do not edit -->\n{block}\n")
    print(f"wrote {args.out}")
    finished = sum(r.returncode == 0 for r in results)
    if not args.no_page:
        try:
            SPEED_PAGE.write_text(replace_between_markers(SPEED_PAGE.read_text(), block))
            print(f"updated {SPEED_PAGE}")
        except ValueError as err:
            print(f"{SPEED_PAGE.relative_to(ROOT)} not updated: {err}", file=sys.stderr)
            finished = -1
    print(f"measured ratio={max(0, finished) / max(1, len(results)):.2f}")
    return 0 if finished == len(results) else 1  # a failed benchmark, or a page without its markers


if __name__ == "__main__":
    sys.exit(main())
