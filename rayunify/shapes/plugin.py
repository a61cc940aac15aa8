"""ShapesWorld as a plugin: its base models, prompt source, checker judge and `rayunify shapes-base`,
registered into `rayunify.builtins` (the core imports nothing from `rayunify.shapes`).

Every entry imports its implementation on first use: registering costs nothing and pulls in no torch.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rayunify.builtins import (
    BuiltinCommand,
    BuiltinModel,
    BuiltinPromptSource,
    register_command,
    register_judge,
    register_model,
    register_prompt_source,
)

if TYPE_CHECKING:
    from rayunify.types import Judge, Prompt

BASE_SIZES = ("base", "noisy", "test", "v2", "v2-test")


def _shapes_model(size: str) -> Callable[[int], str]:
    def directory(seed: int) -> str:
        from rayunify.shapes.cache import cached_base_dir

        return str(cached_base_dir(size, seed=seed))

    return directory


def _existing_shapes_model(size: str) -> Callable[[int], str | None]:
    def existing(seed: int) -> str | None:
        from rayunify.shapes.cache import existing_base_dir

        found = existing_base_dir(size, seed)
        return None if found is None else str(found)

    return existing


def _shapes_prompts(n_train: int, n_eval: int, seed: int, categories: Sequence[str] | None, eval_split: str | None):
    from rayunify.shapes.splits import prompt_split

    return prompt_split(n_train, n_eval, seed=seed, categories=categories, eval_split=eval_split)


def _shapes_v2_prompts(n_train: int, n_eval: int, seed: int, categories: Sequence[str] | None, eval_split: str | None):
    from rayunify.shapes.splits_v2 import prompt_split_v2

    return prompt_split_v2(n_train, n_eval, seed=seed, categories=categories, eval_split=eval_split)


def _shapes_judge_set(model_dir: str, prompts: Sequence[Prompt], size: int, seed: int, settings: Any) -> Any:
    from rayunify.shapes.judge_set import cached_judge_set

    return cached_judge_set(model_dir, prompts, size, seed, settings)


def _shapes_check_categories(categories: Sequence[str]) -> list[str]:
    from rayunify.shapes.world import check_categories  # numpy only

    return check_categories(categories)


def _shapes_checker(cfg: Any) -> Judge:
    from rayunify.shapes.judge import ShapesCheckerJudge

    return ShapesCheckerJudge()


def _shapes_checker_problem(prompts: Sequence[Prompt]) -> str | None:
    from rayunify.shapes.world import Spec
    from rayunify.shapes.world_v2 import SpecV2, is_v2_spec

    for prompt in prompts:
        try:
            (SpecV2 if is_v2_spec(prompt.spec) else Spec).from_dict(prompt.spec)
        except ValueError as err:
            return f"prompt {prompt.text!r} has no ShapesWorld spec ({err}); use another judge for free-text prompts"
    return None


def _base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the model directory to write (HF layout)")
    parser.add_argument(
        "--verify", action="store_true", help="train into --out and compare with the shipped base of the same recipe"
    )
    parser.add_argument("--size", choices=list(BASE_SIZES), default="base", help="the recipe: builtin:shapes-<size>")
    parser.add_argument("--seed", type=int, default=0, help="the base's seed (model.builtin_seed)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the cached built-in bases train on cpu")


def _train_base(args: argparse.Namespace) -> int:
    from rayunify.shapes.base_training import train_base

    train_base(args.out, size=args.size, seed=args.seed, device=args.device)
    if not args.verify:
        return 0
    from rayunify.shapes.cache import compare_with_shipped

    report = compare_with_shipped(args.out, args.size, args.seed)
    print(json.dumps(report, indent=2))
    return 0 if report["identical_weights"] else 1


def register() -> None:
    for size, description in (
        ("base", "the ShapesWorld base model (trained on first use)"),
        ("noisy", "the ShapesWorld base trained on noisy captions"),
        ("test", "a small ShapesWorld base for tests"),
        ("v2", "the ShapesWorld v2 base model"),
        ("v2-test", "a small ShapesWorld v2 base for tests"),
    ):
        register_model(f"shapes-{size}", BuiltinModel(description, _shapes_model(size), existing=_existing_shapes_model(size)))
    register_prompt_source(
        "shapes",
        BuiltinPromptSource(
            "ShapesWorld's generator (held-out split of meanings)",
            _shapes_prompts,
            _shapes_check_categories,
            ("test", "validation"),  # rayunify.shapes.splits.EVAL_SPLITS (not imported: numpy stays unloaded)
            _shapes_judge_set,
        ),
    )
    register_prompt_source(
        "shapes_v2",
        BuiltinPromptSource(
            "ShapesWorld v2: more shapes, colours and sizes; train / validation / test split by meaning",
            _shapes_v2_prompts,
            _shapes_check_categories,
            ("validation", "test"),  # rayunify.shapes.splits_v2.EVAL_SPLITS_V2 (numpy stays unloaded)
            _shapes_judge_set,
        ),
    )
    register_judge("shapes_checker", _shapes_checker, _shapes_checker_problem)
    register_command(
        "shapes-base", BuiltinCommand("train the ShapesWorld base model from scratch", _base_arguments, _train_base)
    )
