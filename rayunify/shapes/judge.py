"""ShapesWorld's exact checker as a judge (`judge.type: shapes_checker`, the guard's default reference).

The core reaches it only through the built-ins registry (`rayunify.builtins`). Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rayunify.shapes.checker import CheckResult, check_batch
from rayunify.shapes.checker_v2 import check_batch_v2
from rayunify.shapes.world import Spec
from rayunify.shapes.world_v2 import SpecV2, is_v2_spec
from rayunify.types import Judgement, Prompt, Verdict


class ShapesCheckerJudge:
    """Exact verdicts from ShapesWorld's checker; needs each prompt's `spec`."""

    name = "shapes_checker"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        missing = [p.prompt_id for p in prompts if p.spec is None]
        if missing:
            raise ValueError(
                f"the shapes_checker judge needs ShapesWorld prompts with a spec; {len(missing)} have none "
                f"(first: {missing[0]}). Use another judge type for free-text prompts."
            )
        results = check_any_world(np.stack(list(images)), prompts)
        return [
            Judgement(
                verdict=Verdict.ACCEPT if r.aligned else Verdict.REJECT,
                score=1.0 if r.aligned else 0.0,
                answer="; ".join(r.reasons) or "aligned",
                judge=self.name,
            )
            for r in results
        ]


def check_any_world(images: np.ndarray, prompts: Sequence[Prompt]) -> list[CheckResult]:
    """v1's checker for v1 specs, v2's for v2 specs (`"world": "v2"`), in the prompts' order."""
    v2 = [i for i, p in enumerate(prompts) if is_v2_spec(p.spec)]
    if not v2:  # v1 alone: exactly the call v1 always made
        return check_batch(images, [Spec.from_dict(p.spec) for p in prompts])
    v1 = [i for i in range(len(prompts)) if i not in set(v2)]
    results: list[CheckResult | None] = [None] * len(prompts)
    for indices, checker, spec_type in ((v1, check_batch, Spec), (v2, check_batch_v2, SpecV2)):
        if indices:
            found = checker(images[indices], [spec_type.from_dict(prompts[i].spec) for i in indices])
            for i, result in zip(indices, found, strict=True):
                results[i] = result
    return results  # type: ignore[return-value]
