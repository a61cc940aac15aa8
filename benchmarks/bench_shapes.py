"""ShapesWorld benchmark: checker throughput and the full-size VQ tokenizer's round-trip quality.

Prints the checker's images/s on one process, trains `VQTrainConfig()` (timed; --shipped takes the shipped
base's tokenizer instead), and the share of fresh rendered images whose decode(encode(x)) still passes the
checker (target >= 98%), per category too. Then the same for ShapesWorld v2 (`world_v2`): its checker's
images/s, and its round trips through the same tokenizer (with --v2-vq, one trained on v2 images instead:
the shipped base's VQ never saw v2's new shapes and colours).
`shapes ratio=...` is v1's checker images/s over the 1,000 images/s target; the last line,
`shapes_v2 ratio=...`, is v2's checker images/s over v1's, measured on the same machine in the same run.

    python benchmarks/bench_shapes.py [--tiny | --shipped | --v2-vq] [--steps N] [--images 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from rayunify.shapes import CATEGORIES, check_batch, rendered_cases
from rayunify.shapes.checker_v2 import check_batch_v2
from rayunify.shapes.render_v2 import random_training_images_v2, rendered_cases_v2


def checker_images_per_second(images: np.ndarray, specs: list, repeats: int = 3, checker=check_batch) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        checker(images, specs)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def pass_rates(images: np.ndarray, specs: list, checker=check_batch) -> tuple[float, dict[str, float]]:
    passed = np.array([r.aligned for r in checker(images, specs)])
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
    parser.add_argument("--v2-vq", action="store_true", help="train the VQ on ShapesWorld v2 images instead")
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
        vq = train_vq(cfg, seed=0, **({"images": random_training_images_v2} if args.v2_vq else {}))
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
    v2_images_per_s = report_v2(vq, args.images, what)
    print(f"shapes_v2 ratio={v2_images_per_s / images_per_s:.2f}")


def report_v2(vq, n_images: int, what: str) -> float:
    """v2's checker speed and its round trips through `vq`; returns the checker's images/s."""
    from rayunify.shapes.vq import decode_tokens, encode_tokens

    images, specs = rendered_cases_v2(2000, seed=1)
    images_per_s = checker_images_per_second(images, specs, checker=check_batch_v2)
    print(f"v2 checker: {images_per_s:.0f} images/s (batch of {len(images)}, one process)")
    fresh, fresh_specs = rendered_cases_v2(n_images, seed=12345)
    rate, by_category = pass_rates(decode_tokens(vq, encode_tokens(vq, fresh)), fresh_specs, check_batch_v2)
    print(f"v2: VQ round trip passes the v2 checker: {rate:.2%} of {len(fresh)} fresh v2 images")
    for category, r in by_category.items():
        print(f"  {category:20s} {r:.2%}")
    print(f"summary: v2 checker {images_per_s:,.0f} images/s; {what}: its round trip passes on {rate:.1%} of v2 images")
    return images_per_s


if __name__ == "__main__":
    main()
