"""Training data from judged groups: the paper's Algorithm 1 (arXiv 2507.16663).

For one prompt the rollout draws N images and the model's own understanding judges each. Then
  - SFT set: every ACCEPTED image;
  - DPO pair: the most positive-like accepted image vs the most negative-like rejected one, only when the
    group holds both labels;
  - discard pool: prompts with no accepted image (replayed later by curriculum.DiscardPool).

Pairing rule, exactly:
  1. INVALID verdicts (unparseable judge answers) are dropped first; they count in n_invalid only.
  2. The binary verdict is the label. A pair always joins one ACCEPT with one REJECT, never two samples of
     the same verdict, so it is well-defined even when every soft score ties (unlike pairing "sample 0 vs
     sample 1" when all scores are equal, a failure seen in other frameworks).
  3. The soft score only picks WITHIN a verdict: chosen = highest score among the accepted, rejected =
     lowest score among the rejected. Ties inside a verdict go to the smallest sample_id, so a group always
     gives the same pair whatever order it arrives in.
  4. A pair is made even if chosen_score <= rejected_score (the soft score disagreeing with the parsed
     answer): the paper labels by verdict. Both scores are kept on the pair for filtering downstream.

Pure: numpy/stdlib only, through rayunify.types.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rayunify.types import JudgedSample, PreferencePair, Prompt, Verdict


@dataclass
class GroupOutcome:
    """What one prompt's judged group contributes to training."""

    prompt: Prompt
    accepted: list[JudgedSample]  # the SFT set: every accepted image, best soft score first
    pair: PreferencePair | None  # None unless the group holds at least one accept and one reject
    discard: bool  # no accepted image: the prompt goes to the discard pool
    n_rejected: int
    n_invalid: int

    @property
    def n_valid(self) -> int:
        return len(self.accepted) + self.n_rejected


def build_group_outcome(group: Sequence[JudgedSample], created_step: int = 0) -> GroupOutcome:
    """Apply the pairing rule (module docstring) to the judged samples of ONE prompt."""
    prompt = _single_prompt(group)
    accepted = _ranked(group, Verdict.ACCEPT, best_first=True)
    rejected = _ranked(group, Verdict.REJECT, best_first=False)
    n_invalid = sum(1 for judged in group if judged.judgement.verdict == Verdict.INVALID)
    pair = _make_pair(prompt, accepted[0], rejected[0], created_step) if accepted and rejected else None
    return GroupOutcome(
        prompt=prompt,
        accepted=accepted,
        pair=pair,
        discard=not accepted,
        n_rejected=len(rejected),
        n_invalid=n_invalid,
    )


@dataclass
class PairingDataset:
    """The training data built from many groups, with the counts the driver logs."""

    sft: list[JudgedSample] = field(default_factory=list)
    pairs: list[PreferencePair] = field(default_factory=list)
    discarded: list[Prompt] = field(default_factory=list)
    outcomes: list[GroupOutcome] = field(default_factory=list)

    @property
    def discard_prompt_ids(self) -> list[str]:
        return [prompt.prompt_id for prompt in self.discarded]

    def metrics(self) -> dict[str, float]:
        n_accepted = len(self.sft)
        n_rejected = sum(outcome.n_rejected for outcome in self.outcomes)
        n_invalid = sum(outcome.n_invalid for outcome in self.outcomes)
        n_valid = n_accepted + n_rejected
        return {
            "groups": float(len(self.outcomes)),
            "samples": float(n_valid + n_invalid),
            "accepted": float(n_accepted),
            "rejected": float(n_rejected),
            "invalid": float(n_invalid),
            "pairs": float(len(self.pairs)),
            "discarded_prompts": float(len(self.discarded)),
            # The paper's non-unification score on this data: the share of the model's own images its own
            # judge rejects. Invalid answers are left out of the denominator (they are neither verdict).
            "non_unified": n_rejected / n_valid if n_valid else 0.0,
        }


def build_dataset(groups: Iterable[Sequence[JudgedSample]], created_step: int = 0) -> PairingDataset:
    """Algorithm 1 over many prompts: one GroupOutcome per group, collected into SFT set, pairs, discards."""
    dataset = PairingDataset()
    for group in groups:
        outcome = build_group_outcome(group, created_step)
        dataset.outcomes.append(outcome)
        dataset.sft.extend(outcome.accepted)
        if outcome.pair is not None:
            dataset.pairs.append(outcome.pair)
        if outcome.discard:
            dataset.discarded.append(outcome.prompt)
    return dataset


def _single_prompt(group: Sequence[JudgedSample]) -> Prompt:
    if not group:
        raise ValueError("a judged group must hold at least one sample")
    prompt = group[0].sample.prompt
    other_ids = {judged.sample.prompt.prompt_id for judged in group} - {prompt.prompt_id}
    if other_ids:
        # Mixing prompts would pair images made for different texts: a caller bug, never data.
        raise ValueError(f"a group must hold one prompt; got {prompt.prompt_id!r} and {sorted(other_ids)}")
    return prompt


def _ranked(group: Sequence[JudgedSample], verdict: Verdict, best_first: bool) -> list[JudgedSample]:
    """Samples of one verdict ordered by soft score (highest first or lowest first), ties by sample_id."""
    members = [judged for judged in group if judged.judgement.verdict == verdict]
    sign = -1.0 if best_first else 1.0
    return sorted(members, key=lambda judged: (sign * judged.judgement.score, judged.sample.sample_id))


def _make_pair(
    prompt: Prompt, chosen: JudgedSample, rejected: JudgedSample, created_step: int
) -> PreferencePair:
    return PreferencePair(
        prompt=prompt,
        chosen=chosen.sample,
        rejected=rejected.sample,
        chosen_score=chosen.judgement.score,
        rejected_score=rejected.judgement.score,
        created_step=created_step,
    )
