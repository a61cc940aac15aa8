"""Offline-build memory: the peak memory of a build of 2,000 prompts × 10 images against one of 200 × 10, on the
tiny random Janus (builtin:tiny), with the build streaming (rollout.max_rows and trainer.build_chunk_prompts).

Each build runs in a subprocess of its own: a fresh local Ray cluster, the run's actors (training data,
rollout, judge, learner) and the build alone (`OfflineBuild.run`: no evaluation, no training). A sampler
thread sums the proportional set size (PSS: a shared page is split between the processes that map it, so
Ray's object store and the shared libraries count once) of the processes doing the build's work every
0.2 s: the driver, the rollout, judge and training-data actors, and the raylet (it holds the object store
that carries images from rollout to judge). The figure is the peak of that sum. The learner (it holds its
model but does nothing during a build) and Ray's other processes (GCS, idle workers, agents) are left out
of it; their peaks are printed per role, and the peak of everything but the learner is printed too.
Throughput: judged images per second of the build.

The judge is the tiny model's own understanding forward (the judge actor's real work, in calls of
judge_actors.batch_size images) with its verdicts replaced by seeded coin flips (a random model answers
nothing parsable), so SFT samples and pairs form as with a working judge. Prompts: a generated file of
distinct texts (ShapesWorld holds fewer than 2,000). The guard is off (its checker needs ShapesWorld specs).

    python benchmarks/bench_build.py                 # 200 and 2,000 prompts, streaming
    python benchmarks/bench_build.py --unbounded     # also both without max_rows and build chunks

Last line: `build memory ratio=<peak of the large build over the small one>` (streaming; goal <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLES = 10
PART_PROMPTS = 10  # prompts per generate call: 10 x 10 samples x 2 CFG rows = rollout.max_rows 200
CHUNK_PROMPTS = 200
N_EVAL = 4
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon"]


def write_prompts(path: Path, count: int) -> None:
    lines = [f"a {COLOURS[i % 8]} {SHAPES[i // 8 % 5]} number {i}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n")


def overrides(prompts: int, out: str, streaming: bool) -> list[str]:
    bounds = [f"rollout.max_rows={PART_PROMPTS * SAMPLES * 2}", f"trainer.build_chunk_prompts={CHUNK_PROMPTS}",
              "judge_actors.batch_size=200"] if streaming else ["trainer.build_chunk_prompts=null"]  # fmt: skip
    return [
        "model.path=builtin:tiny", "judge.type=noisy", "judge.base.type=self", "judge.random_fraction=1.0",
        "prompts.source=file", f"prompts.path={out}/prompts.txt", f"prompts.n_train={prompts}",
        f"prompts.n_eval={N_EVAL}", f"sampling.samples_per_prompt={SAMPLES}", "sampling.guidance_scale=3.0",
        "rollout.num_cpus=1", "judge_actors.num_cpus=1", "learner.num_cpus=1", "ray.num_cpus=3",
        "algorithm.type=sft", "trainer.mode=offline", "guard.enabled=false", "logger.type=jsonl",
        "logger.image_every=100000", f"trainer.output_dir={out}", "trainer.run_name=build", *bounds,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- memory
def pss_kb(pid: int) -> int:
    """The process's proportional set size (kB), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def role(pid: int) -> str:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    for name, key in (("learner", "LearnerWorker"), ("rollout", "RolloutWorker"), ("judge", "JudgeWorker"),
                      ("data", "TrainingData"), ("raylet", "/raylet")):  # fmt: skip
        if key in title:
            return name
    return "ray-other" if pid != os.getpid() else "driver"


WORK = ("driver", "rollout", "judge", "data", "raylet")  # the processes whose memory the figure sums


class Sampler(threading.Thread):
    """Peak of the summed PSS of this process and its descendants (the local Ray cluster), by role."""

    def __init__(self, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every_s, self.stop = every_s, threading.Event()
        self.peak_kb = self.peak_all_kb = 0  # the working processes; everything but the learner
        self.role_peaks_kb: dict[str, int] = {}

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.is_set():
            by_role: dict[str, int] = {}
            for pid in [me.pid, *(child.pid for child in me.children(recursive=True))]:
                name = role(pid)
                by_role[name] = by_role.get(name, 0) + pss_kb(pid)
            self.peak_kb = max(self.peak_kb, sum(kb for name, kb in by_role.items() if name in WORK))
            self.peak_all_kb = max(self.peak_all_kb, sum(kb for name, kb in by_role.items() if name != "learner"))
            for name, kb in by_role.items():
                self.role_peaks_kb[name] = max(self.role_peaks_kb.get(name, 0), kb)
            self.stop.wait(self.every_s)


# ---------------------------------------------------------------------------------------------- one build
def one_build(prompts: int, streaming: bool) -> dict:
    from rayunify.config import load_config
    from rayunify.train import Trainer

    sampler = Sampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as out:
        write_prompts(Path(out) / "prompts.txt", prompts + N_EVAL)
        trainer = Trainer(load_config(None, overrides(prompts, out, streaming)))
        try:
            started = time.perf_counter()
            trainer.build.run()
            seconds = time.perf_counter() - started
            groups = json.loads((Path(out) / "build" / "metrics.jsonl").read_text().splitlines()[-1])["data/groups"]
        finally:
            trainer.resources.close()
    sampler.stop.set()
    sampler.join()
    return {
        "prompts": int(groups),
        "images": int(groups) * SAMPLES,
        "build_s": seconds,
        "images_per_s": groups * SAMPLES / seconds,
        "peak_mb": sampler.peak_kb / 1024,
        "peak_all_mb": sampler.peak_all_kb / 1024,
        "roles_mb": {k: v / 1024 for k, v in sorted(sampler.role_peaks_kb.items()) if k != "gone"},
    }


def in_subprocess(prompts: int, streaming: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", str(prompts)] + ([] if streaming else ["--no-streaming"])
    done = subprocess.run(cmd, capture_output=True, text=True)
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"build of {prompts} prompts failed (exit {done.returncode})")
    return json.loads(results[-1][len("RESULT ") :])


def report(name: str, r: dict) -> None:
    roles = ", ".join(f"{k} {v:.0f}" for k, v in r["roles_mb"].items())
    print(f"{name:>10} {r['prompts']:5d} prompts x {SAMPLES}: {r['build_s']:7.1f} s, {r['images_per_s']:6.1f} images/s, "
          f"peak PSS {r['peak_mb']:6.0f} MB ({r['peak_all_mb']:.0f} MB with Ray's other processes; peaks per role, "
          f"MB: {roles})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--unbounded", action="store_true", help="also build without max_rows and build chunks")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a subprocess's single build
    parser.add_argument("--no-streaming", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(one_build(args.one, streaming=not args.no_streaming)), flush=True)
        return
    print(f"tiny Janus, {SAMPLES} images per prompt; streaming: rollout.max_rows={PART_PROMPTS * SAMPLES * 2}, "
          f"build_chunk_prompts={CHUNK_PROMPTS}, judge_actors.batch_size=200; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    results = {}
    for streaming in (True, False) if args.unbounded else (True,):
        label = "streaming" if streaming else "unbounded"
        for size in (args.small, args.large):
            results[label, size] = in_subprocess(size, streaming)
            report(label, results[label, size])
    small, large = results["streaming", args.small], results["streaming", args.large]
    if args.unbounded:
        ratio = results["unbounded", args.large]["peak_mb"] / results["unbounded", args.small]["peak_mb"]
        print(f"unbounded build memory ratio={ratio:.2f} (before streaming)")
    print(f"throughput: {small['images_per_s']:.1f} images/s ({args.small} prompts), "
          f"{large['images_per_s']:.1f} images/s ({args.large} prompts)")  # fmt: skip
    everything = large["peak_all_mb"] / small["peak_all_mb"]
    print(f"with Ray's other processes counted: ratio {everything:.2f}")
    print(f"build memory ratio={large['peak_mb'] / small['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
