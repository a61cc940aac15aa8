"""ShapesWorld benchmark: checker throughput and the full-size VQ tokenizer's round-trip quality.

Prints the checker's images/s on one process, trains `VQTrainConfig()` (timed; --shipped takes the shipped
base's tokenizer instead), and the share of fresh rendered images whose decode(encode(x)) still passes the
checker (target >= 98%), per category too.
The last line, `shapes ratio=...`, is the checker's images/s over the 1,000 images/s target.

    python benchmarks/bench_shapes.py [--tiny | --shipped] [--steps N] [--images 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from rayunify.shapes import CATEGORIES, check_batch, rendered_cases


def checker_images_per_second(images: np.ndarray, specs: list, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        check_batch(images, specs)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def pass_rates(images: np.ndarray, specs: list) -> tuple[float, dict[str, float]]:
    passed = np.array([r.aligned for r in check_batch(images, specs)])
    k = len(CATEGORIES)
    return float(passed.mean()), {c: float(passed[i::k].mean()) for i, c in enumerate(CATEGORIES)}


def shipped_vq():
    """The trained tokenizer inside `builtin:shapes-base` (the shipped copy while its recipe is unchanged)."""
    from rayunify.config import JanusModelConfig
    from rayunify.models import build_model

    return build_model(JanusModelConfig(path="builtin:shapes-base"), device="cpu").model.model.vqmodel.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the test-sized VQ instead of the full one")
    parser.add_argument("--shipped", action="store_true", help="the shipped ShapesWorld base's VQ, not a new one")
    parser.add_argument("--steps", type=int, help="override the number of training steps")
    parser.add_argument("--images", type=int, default=1000, help="fresh images for the round-trip pass rate")
    args = parser.parse_args()

    images, specs = rendered_cases(2000, seed=1)
    images_per_s = checker_images_per_second(images, specs)
    print(f"checker: {images_per_s:.0f} images/s (batch of {len(images)}, one process)")

    from rayunify.shapes.vq import VQTrainConfig, decode_tokens, encode_tokens, train_vq  # torch: import late

    start = time.perf_counter()
    if args.shipped:
        vq, what = shipped_vq(), "the shipped base's VQ (no training)"
    else:
        cfg = VQTrainConfig.tiny() if args.tiny else VQTrainConfig()
        if args.steps:
            cfg = dataclasses.replace(cfg, steps=args.steps)
        print(cfg)
        vq = train_vq(cfg, seed=0)
        what = f"{'test-sized' if args.tiny else 'full-size'} VQ trained in {time.perf_counter() - start:.0f} s"
        print(f"VQ train time: {time.perf_counter() - start:.1f} s")

    fresh, fresh_specs = rendered_cases(args.images, seed=12345)
    start = time.perf_counter()
    reconstructions = decode_tokens(vq, encode_tokens(vq, fresh))
    print(f"encode+decode: {len(fresh) / (time.perf_counter() - start):.0f} images/s")
    rate, by_category = pass_rates(reconstructions, fresh_specs)
    print(f"VQ round trip passes the checker: {rate:.2%} of {len(fresh)} fresh images (target 98%)")
    for category, r in by_category.items():
        print(f"  {category:20s} {r:.2%}")
    print(
        f"summary: checker {images_per_s:,.0f} images/s on one process; {what}: its round trip passes the "
        f"checker on {rate:.1%} of {len(fresh)} fresh images"
    )
    print(f"shapes ratio={images_per_s / 1000:.3f}")


if __name__ == "__main__":
    main()
