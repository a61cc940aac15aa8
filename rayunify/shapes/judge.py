"""ShapesWorld's exact checker as a judge (`judge.type: shapes_checker`, the guard's default reference).

The core reaches it only through the built-ins registry (`rayunify.builtins`). Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rayunify.shapes.checker import check_batch
from rayunify.shapes.world import Spec
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
        results = check_batch(np.stack(list(images)), [Spec.from_dict(p.spec) for p in prompts])
        return [
            Judgement(
                verdict=Verdict.ACCEPT if r.aligned else Verdict.REJECT,
                score=1.0 if r.aligned else 0.0,
                answer="; ".join(r.reasons) or "aligned",
                judge=self.name,
            )
            for r in results
        ]
