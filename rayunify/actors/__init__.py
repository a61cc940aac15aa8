"""The Ray layer: actor groups on placement groups, the DeepSpeed learner, and the model-holding roles."""

import os


def name_cpu_accelerator() -> None:
    """On an actor without a GPU, tell DeepSpeed so (DS_ACCELERATOR=cpu) before anything imports it: the
    learner does, and rollout and judge actors do through transformers when they export. DeepSpeed then skips
    its detection and the 'Setting accelerator to CPU' warning it would print in every such actor."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
