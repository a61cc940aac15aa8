"""Rollout speed: our CFG generation loop vs transformers' `generate(generation_mode="image")`.

Same model, prompts, batch and sampling settings, measured in the same run. Prints image tokens/s for
both and the ratio; on a known GPU also the share of the memory-bandwidth bound reached. The bound: each
decode step must read every language-model weight once and the KV cache filled so far (prompt plus, on
average, half the image tokens, for every row: prompts × n, doubled by CFG's unconditional twins);
`weights_only_fraction` leaves the cache out, as small batches may.

Bytes moved per decode step, a model that holds on any device: the bound's bytes (weights plus the filled
KV), the graph decoder's before KV-length buckets (weights plus the whole preallocated buffer, prompt + all
image tokens, at every step) and with them (weights plus the filled KV rounded up to a bucket); on a GPU
the timings show the same gain.

    python benchmarks/bench_rollout.py                       # CPU, tiny Janus
    python benchmarks/bench_rollout.py --arch janus-pro-1b --dtype bfloat16 --device cuda --batch 4 16 64

A batch that runs out of GPU memory is reported as such (null timings) and the next one still runs.

Last line: `rollout ratio=<ours over transformers>` at the largest batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from rayunify.models.janus.decoding import KV_BUCKET
from rayunify.models.janus.factory import JANUS_PRO_1B, TINY, build_janus
from rayunify.models.janus.kvcache import bucket_span
from rayunify.models.janus.model import JanusUnifiedModel
from rayunify.types import SamplingSettings

ARCHS = {
    "tiny": dataclasses.replace(TINY, image_size=48, patch_size=4, vq_channel_multiplier=(1, 1, 1)),  # 144 tokens
    "janus-pro-1b": JANUS_PRO_1B,
}
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}  # bytes/s, HBM3 / HBM3e


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (allocations, kernels)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def kv_bytes_per_slot(um: JanusUnifiedModel) -> int:
    """Keys and values of every layer for one token of one row."""
    cfg = um.language_model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    element = next(um.language_model.parameters()).element_size()
    return cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * element


def decode_step_bytes(um: JanusUnifiedModel, rows: int, prompt_tokens: int) -> tuple[int, int]:
    """(language-model weight bytes, mean KV-cache bytes) one decode step must read for `rows` rows."""
    weights = sum(p.numel() * p.element_size() for p in um.language_model.parameters())
    return weights, rows * (prompt_tokens + um.num_image_tokens // 2) * kv_bytes_per_slot(um)


def bytes_moved_per_step(um: JanusUnifiedModel, rows: int, prompt_tokens: int) -> dict[str, float]:
    """Mean bytes one decode step reads (weights + KV) for the bound, the whole-buffer graph decoder and the
    bucketed one, and the two decoders' bytes over the bound's."""
    weights, _ = decode_step_bytes(um, rows, prompt_tokens)
    per_slot = kv_bytes_per_slot(um)
    capacity = prompt_tokens + um.num_image_tokens
    filled = range(prompt_tokens + 1, capacity)  # slots written when each of the decode steps reads
    mean = lambda spans: sum(spans) / len(spans)  # noqa: E731
    read = {
        "bound": mean(list(filled)),
        "full_buffer": float(capacity),
        "bucketed": mean([bucket_span(f, um.decode_bucket or KV_BUCKET, capacity) for f in filled]),
    }
    moved = {name: weights + rows * slots * per_slot for name, slots in read.items()}
    return {
        **{f"step_bytes_{name}": value for name, value in moved.items()},
        "moved_over_bound_before": moved["full_buffer"] / moved["bound"],
        "moved_over_bound_after": moved["bucketed"] / moved["bound"],
    }


def bandwidth_fractions(um: JanusUnifiedModel, seconds: float, rows: int, prompt_tokens: int) -> dict[str, float | None]:
    """Share of the bandwidth bound reached, with and without the KV cache's reads (None off known GPUs)."""
    peak = None
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)
    if peak is None:
        return {"bound_fraction": None, "weights_only_fraction": None}
    weights, kv = decode_step_bytes(um, rows, prompt_tokens)
    step_seconds = seconds / um.num_image_tokens
    return {"bound_fraction": (weights + kv) / step_seconds / peak, "weights_only_fraction": weights / step_seconds / peak}


def timed_or_oom(fn, device: str, repeats: int) -> float | None:
    """Best time, or None when the batch does not fit in GPU memory."""
    try:
        return timed(fn, device, repeats)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def run(
    arch_name: str, dtype: str, device: str, batches: list[int], n: int, repeats: int, whole_buffer: bool = False
) -> list[dict]:
    model, processor = build_janus(ARCHS[arch_name], seed=0, dtype=getattr(torch, dtype), device=device)
    um = JanusUnifiedModel(model, processor)
    settings = SamplingSettings(guidance_scale=5.0)
    rows = []
    for batch in batches:
        prompts = [f"a photo of {i} red circles and a blue square" for i in range(batch)]
        enc = processor(
            text=[
                processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": p}]}], add_generation_prompt=True)
                for p in prompts
            ],
            generation_mode="image",
            padding=True,
            return_tensors="pt",
        ).to(device)

        def theirs(enc=enc):
            model.generate(**enc, generation_mode="image", do_sample=True, top_k=0, num_return_sequences=n, guidance_scale=5.0)

        def ours(prompts=prompts):
            um.generate(prompts, n=n, settings=settings, seed=0)

        t_theirs = timed_or_oom(theirs, device, repeats)
        t_whole = None
        if whole_buffer and device == "cuda":  # the same graph decoder reading the whole KV buffer every step
            um.decode_bucket = 0
            try:
                t_whole = timed_or_oom(ours, device, repeats)
            finally:
                um.decode_bucket = KV_BUCKET
        try:
            t_ours = timed_or_oom(ours, device, repeats)
        except RuntimeError as err:  # report the eager path rather than nothing if graph capture fails
            print(f"graph decode failed ({err}); timing eager decode", flush=True)
            um.decode_mode = "eager"
            t_ours = timed_or_oom(ours, device, repeats)
        tokens = batch * n * um.num_image_tokens
        cfg_rows = batch * n * 2  # CFG: every sample has its unconditional twin
        row = {
            "arch": arch_name, "dtype": dtype, "device": device, "prompts": batch, "n": n,
            "transformers_tok_s": tokens / t_theirs if t_theirs else None,
            "ours_tok_s": tokens / t_ours if t_ours else None,
            "ours_whole_buffer_tok_s": tokens / t_whole if t_whole else None,
            "ratio": t_theirs / t_ours if t_theirs and t_ours else None,
            **(bandwidth_fractions(um, t_ours, cfg_rows, enc["input_ids"].shape[1]) if t_ours else {}),
            **bytes_moved_per_step(um, cfg_rows, enc["input_ids"].shape[1]),
            "decode": um.decode_mode, "out_of_memory": [k for k, t in (("transformers", t_theirs), ("ours", t_ours)) if t is None],
        }  # fmt: skip
        if device == "cuda":
            row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        rows.append(row)
        print(json.dumps(row))
    return rows


def summary_cell(row: dict) -> str:
    where = f"{row['prompts']} prompts x {row['n']}"
    if row["ratio"] is None:
        return f"{where}: out of memory ({', '.join(row['out_of_memory'])})"
    bound = f", {row['bound_fraction']:.0%} of the bandwidth bound" if row.get("bound_fraction") else ""
    whole = f", {row['ours_whole_buffer_tok_s']:,.0f} reading the whole KV buffer" if row.get("ours_whole_buffer_tok_s") else ""
    return f"{where}: {row['ratio']:.2f}x ({row['ours_tok_s']:,.0f} vs {row['transformers_tok_s']:,.0f} tokens/s{bound}{whole})"


def profile_decode(arch_name: str, dtype: str, device: str, prompts: int, n: int, path: str) -> None:
    """One generate call of ours under torch.profiler, the decode step run uncaptured ("static": the same
    fixed-shape step the CUDA graph replays, with its kernels visible one by one); operators by device time."""
    from torch.profiler import ProfilerActivity, profile

    model, processor = build_janus(ARCHS[arch_name], seed=0, dtype=getattr(torch, dtype), device=device)
    um = JanusUnifiedModel(model, processor)
    um.decode_mode = "static"
    texts = [f"a photo of {i} red circles and a blue square" for i in range(prompts)]
    um.generate(texts, n=n, settings=SamplingSettings(guidance_scale=5.0), seed=0)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        um.generate(texts, n=n, settings=SamplingSettings(guidance_scale=5.0), seed=0)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    with open(path, "w") as out:
        out.write(f"{arch_name} {dtype} {device}: {prompts} prompts x {n}, decode uncaptured\n")
        out.write(prof.key_averages().table(sort_by=key, row_limit=30))
    print(f"decode profile written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile-prompts", type=int, help="also profile one generate call at this many prompts")
    parser.add_argument("--profile-out", default="decode_profile.txt")
    parser.add_argument("--whole-buffer", action="store_true",
                        help="on CUDA, also time the graph decoder reading the whole KV buffer (no buckets)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (see bench_judge: two threads "
                        "on a shared 2-core machine spend their time waiting for each other)")  # fmt: skip
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = run(args.arch, args.dtype, args.device, args.batch, args.n, args.repeats, args.whole_buffer)
    if args.profile_prompts:
        profile_decode(args.arch, args.dtype, args.device, args.profile_prompts, args.n, args.profile_out)
    measured = [r for r in rows if r["ratio"] is not None]
    threads = f"; {torch.get_num_threads()} torch thread(s)" if args.device == "cpu" else ""
    for r in rows:
        print(f"bytes per decode step at {r['prompts']} prompts x {r['n']} ({2 * r['prompts'] * r['n']} rows): bound "
              f"{r['step_bytes_bound'] / 1e6:,.1f} MB, whole-buffer graph {r['step_bytes_full_buffer'] / 1e6:,.1f} MB "
              f"({r['moved_over_bound_before']:.2f}x the bound), bucketed graph {r['step_bytes_bucketed'] / 1e6:,.1f} MB "
              f"({r['moved_over_bound_after']:.2f}x)")  # fmt: skip
    print("summary: ours vs transformers' generate: " + ", ".join(summary_cell(r) for r in rows) + threads)
    print(f"rollout ratio={measured[-1]['ratio']:.2f}" if measured else "rollout ratio=nan")


if __name__ == "__main__":
    main()
