"""Which collective backend a broadcast weight push uses: a rule of the config alone (GPUs per actor), so
the config validates it and the driver applies it without importing the actors' torch.distributed code."""

from __future__ import annotations

from collections.abc import Sequence


def push_backend(learner_gpus: float, receiver_gpus: Sequence[float]) -> str:
    """The push group's backend from the GPUs per actor of its members (learner rank 0, each receiver role).

    nccl when every member holds whole GPUs: Ray then gives each actor devices of its own. gloo (the bytes
    through host memory) when any member has none, since a CPU-only member cannot join an NCCL group. A
    fractional share may put two members on one device, and NCCL refuses two ranks of a group on one GPU:
    refused here (no CUDA-IPC transport exists yet); the object-store transport works in that placement.
    """
    members = [learner_gpus, *receiver_gpus]
    if any(g == 0 for g in members):
        return "gloo"
    if any(g < 1 for g in members):
        raise ValueError(
            f"a broadcast push needs distinct GPUs for the learner and every actor that takes pushes "
            f"(GPUs per actor: learner {learner_gpus}, receivers {list(receiver_gpus)}); a fractional share can put "
            "two of them on one GPU, where NCCL cannot connect them. Give each whole GPUs, or use "
            "learner.weight_transport=object_store"
        )
    return "nccl"
