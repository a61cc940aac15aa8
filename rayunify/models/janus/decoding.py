"""The image-token decode step of Janus's generation loop: eager steps, or one CUDA graph replayed per token.

Both decoders drive the model's own cached layer step and guided head (`JanusUnifiedModel._decode_layers`,
`_guided_logits`), so generation and teacher forcing share positions and guidance exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from rayunify.models.base import token_positions
from rayunify.models.janus.kvcache import StaticKV, bucket_span

if TYPE_CHECKING:
    from rayunify.models.janus.model import JanusUnifiedModel


# KV slots per CUDA-graph bucket: 6 graphs for a CompBench prompt + 576 image tokens; a step reads on average
# half a bucket more than it wrote.
KV_BUCKET = 128


class EagerDecoder:
    """Decodes step by step: the growing KV view is read directly (no masking of unwritten slots)."""

    def __init__(self, um: JanusUnifiedModel, hidden, cache, mask, guidance_scale: float):
        self.um, self.hidden, self.cache, self.mask = um, hidden, cache, mask
        self.scale = guidance_scale
        self.positions = token_positions(mask)[:, -1:]

    def logits(self) -> torch.Tensor:
        return self.um._guided_logits(self.hidden, self.scale)

    def advance(self, embeds: torch.Tensor) -> None:
        self.mask = F.pad(self.mask, (0, 1), value=1)
        self.positions = self.positions + 1
        if not self.um._lean_decode:
            out = self.um.language_model(
                inputs_embeds=embeds, attention_mask=self.mask, position_ids=self.positions, cache=self.cache,
                use_cache=True,
            )  # fmt: skip
            self.hidden = out.last_hidden_state[:, -1]
            return
        attend = self.mask.bool()[:, None, None, :]  # (rows, 1, q=1, keys): a new token sees every real key
        self.hidden = self.um._decode_layers(embeds, attend, self.positions, self.cache)


class GraphDecoder:
    """The decode step captured as CUDA graphs and replayed for every image token.

    At batch sizes where a step is a few hundred small kernels, launch overhead, not the GPU, sets the pace;
    a graph replays them with one launch. Shapes are fixed within a KV-length bucket: the KV buffers hold
    prompt + all image tokens, writes go to a position held in a tensor, attention reads the buffer up to
    the end of the current bucket and a mask hides the slots in it not written yet. One graph per bucket
    (captured when decoding reaches it, all in one memory pool): a step reads about the KV it has written,
    not the whole buffer, which at RL batch sizes is more bytes than the weights. `bucket=0` reads the whole
    buffer at every step (one graph).
    """

    def __init__(
        self, um: JanusUnifiedModel, hidden, cache, mask, guidance_scale: float, capture: bool = True, bucket: int = KV_BUCKET
    ):
        self.um, self.scale, self.capture, self.bucket = um, guidance_scale, capture, bucket
        self.cache = StaticKV(cache)
        self.slot = cache.length  # host-side copy of the write position: no device sync per step
        total = self.cache.capacity
        self.attend = F.pad(mask, (0, total - mask.shape[1]), value=0).bool()[:, None, None, :].contiguous()
        self.positions = token_positions(mask)[:, -1:].clone()
        self.embeds = torch.zeros(hidden.shape[0], 1, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
        self.logits_out = um._guided_logits(hidden, guidance_scale).contiguous()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = None  # one memory pool for every bucket's graph: they never replay concurrently
        self.spans: list[int] = []  # the span each step read (what bench_rollout's byte model counts)

    def logits(self) -> torch.Tensor:
        return self.logits_out

    def _body(self, span: int) -> None:
        attend = self.attend[..., :span]
        hidden = self.um._decode_layers(self.embeds, attend, self.positions, self.cache)
        self.logits_out.copy_(self.um._guided_logits(hidden, self.scale))

    def advance(self, embeds: torch.Tensor) -> None:
        # Inputs change in place, outside the graph: the new token's embedding, its mask slot and position.
        self.embeds.copy_(embeds)
        self.attend[..., self.slot] = True
        self.positions += 1
        span = bucket_span(self.slot + 1, self.bucket, self.cache.capacity)
        self.cache.span = span
        self.spans.append(span)
        if not self.capture:
            self._body(span)
        else:
            if span not in self.graphs:
                self.graphs[span] = self._capture(span)
            self.graphs[span].replay()
        self.cache.position += 1
        self.slot += 1

    def _capture(self, span: int) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body(span)  # warm-up (allocator, cuBLAS handles); rewritten identically by the first replay
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._body(span)
        return graph
