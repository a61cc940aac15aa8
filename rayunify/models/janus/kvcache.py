"""A preallocated KV cache for the image-token decode loop.

transformers' DynamicCache concatenates every layer's keys and values at every step: O(length) copies
per step, which at Janus's 576 steps and large batches moves gigabytes per step on a GPU. This cache
allocates each layer's buffers once (prompt + all image tokens) and writes each new step in place; the
attention reads a view of the filled part. It implements the one method LLaMA-style attention calls.
"""

from __future__ import annotations

import torch


class PreallocatedKV:
    def __init__(self, prefilled, extra_tokens: int):
        """Copy a prefilled cache (one with `.layers[i].keys/.values`) into buffers with room to grow."""
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.length = 0
        for layer in prefilled.layers:
            k, v = layer.keys, layer.values
            rows, heads, length, dim = k.shape
            # Zeros, not new_empty: StaticKV's attention reads the unwritten slots under a mask, and a masked
            # weight of 0 times leftover NaN memory is NaN (CI once sampled from NaN logits this way).
            key_buffer = k.new_zeros(rows, heads, length + extra_tokens, dim)
            value_buffer = v.new_zeros(rows, heads, length + extra_tokens, v.shape[-1])
            key_buffer[:, :, :length] = k
            value_buffer[:, :, :length] = v
            self.keys.append(key_buffer)
            self.values.append(value_buffer)
            self.length = length
        self._written = [self.length] * len(self.keys)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        start = self._written[layer_idx]
        end = start + key_states.shape[-2]
        if end > self.keys[layer_idx].shape[-2]:
            raise RuntimeError(f"KV cache full: {end} tokens > {self.keys[layer_idx].shape[-2]} allocated")
        self.keys[layer_idx][:, :, start:end] = key_states
        self.values[layer_idx][:, :, start:end] = value_states
        self._written[layer_idx] = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]


class StaticKV:
    """Fixed-shape variant for CUDA graphs: writes at a position held in a tensor; attention reads the first
    `span` slots of the buffer (a host-side int, a whole number of buckets covering what is written) and a
    mask hides the written-to-be slots inside it. Shapes change only when `span` crosses a bucket, so one
    graph serves every step of a bucket, and a step reads what has been written, not the whole buffer."""

    def __init__(self, preallocated: PreallocatedKV):
        self.keys, self.values = preallocated.keys, preallocated.values
        device = self.keys[0].device
        self.position = torch.tensor([preallocated.length], dtype=torch.long, device=device)
        self.span = self.capacity

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[-2]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.keys[layer_idx].index_copy_(2, self.position, key_states)
        self.values[layer_idx].index_copy_(2, self.position, value_states)
        return self.keys[layer_idx][:, :, : self.span], self.values[layer_idx][:, :, : self.span]


def bucket_span(filled: int, bucket: int, capacity: int) -> int:
    """Slots a step reads once `filled` slots hold keys: the next multiple of `bucket` (0: the whole buffer),
    never more than the buffer holds."""
    if bucket <= 0:
        return capacity
    return min(capacity, -(-filled // bucket) * bucket)
