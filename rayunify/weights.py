"""Weight push from the learner to rollout / judge actors.

The core is transport-agnostic and imports neither ray nor deepspeed: the learner packs its trainable
tensors into a few flat buckets (one `WeightUpdate`), the transport moves that one object, and each
receiver checks it and copies it into its module with `apply_update`. Buckets hold raw bytes as numpy
arrays because Ray hands numpy arrays to readers straight from the object store without a copy; torch
tensors would be pickled and copied once more per receiver.

A receiver, not the sender, decides whether an update applies: it refuses a stale one (version not newer
than its own) and a partial one (a tensor missing, extra, or of the wrong shape) before touching any
weight, so a failed push leaves the receiver on its previous, consistent version.

The transports (one ObjectRef per push, or a collective broadcast) live in the Ray layer: the driver's
`WeightSync` is the one path that pushes, and every receiver answers one protocol
(`rayunify.actors.collective.WeightReceiver`). A receiver should pass `expected_names` (its trainable
names) so that a self-consistent but incomplete update is refused too.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_BUCKET_MB = 256


class WeightUpdateError(ValueError):
    """A weight update that must not be applied. The receiver's weights are untouched."""


class StaleUpdateError(WeightUpdateError):
    """The update is not newer than the receiver's weights."""


class PartialUpdateError(WeightUpdateError):
    """The update does not cover exactly the receiver's expected tensors, with the right shapes."""


@dataclass
class Bucket:
    """Tensors of one dtype, flattened into one contiguous byte buffer.

    Tensor i occupies elements [offsets[i], offsets[i] + prod(shapes[i])) of `data` viewed as `dtype`.
    """

    dtype: str  # torch dtype name without "torch.", e.g. "bfloat16"
    data: np.ndarray  # uint8, contiguous
    names: list[str]
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    checksum: int = 0

    @property
    def num_bytes(self) -> int:
        return int(self.data.nbytes)


@dataclass
class WeightUpdate:
    """Everything a receiver needs to move to `version`: the buckets plus what it must check them against."""

    version: int
    buckets: list[Bucket]
    names: tuple[str, ...]
    total_count: int
    created_at: float = field(default_factory=time.time)

    @classmethod
    def from_buckets(cls, version: int, buckets: Sequence[Bucket]) -> WeightUpdate:
        names = tuple(name for b in buckets for name in b.names)
        return cls(version=version, buckets=list(buckets), names=names, total_count=len(names))

    @property
    def num_bytes(self) -> int:
        return sum(b.num_bytes for b in self.buckets)


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise WeightUpdateError(f"unknown dtype {name!r} in weight update")
    return dtype


def _bytes_checksum(data: np.ndarray) -> int:
    """A cheap integrity check of a bucket's bytes (sum of 32-bit words mod 2**64).

    Integer sums are order independent, so sender and receiver agree whatever their thread counts;
    a float sum would not. This catches truncation and wrong buffers, not deliberate tampering.
    """
    usable = data.nbytes - data.nbytes % 4
    words = int(data[:usable].view(np.uint32).sum(dtype=np.uint64))
    tail = int(data[usable:].sum(dtype=np.uint64))
    return (words + tail + data.nbytes) % (1 << 64)


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)


def _flush(dtype: torch.dtype, items: list[tuple[str, torch.Tensor]]) -> Bucket:
    total = sum(t.numel() * t.element_size() for _, t in items)
    data = np.empty(total, dtype=np.uint8)
    out = torch.from_numpy(data)
    names, shapes, offsets = [], [], []
    byte_pos, elem_pos = 0, 0
    for name, tensor in items:
        n = tensor.numel() * tensor.element_size()
        out[byte_pos : byte_pos + n].copy_(_as_bytes(tensor))
        names.append(name)
        shapes.append(tuple(tensor.shape))
        offsets.append(elem_pos)
        byte_pos += n
        elem_pos += tensor.numel()
    dtype_name = str(dtype).removeprefix("torch.")
    return Bucket(dtype_name, data, names, shapes, offsets, _bytes_checksum(data))


def pack_buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> list[Bucket]:
    """Pack tensors into per-dtype buckets of about `bucket_bytes` each (a bigger tensor gets its own)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    pending: dict[torch.dtype, list[tuple[str, torch.Tensor]]] = {}
    pending_bytes: dict[torch.dtype, int] = {}
    buckets: list[Bucket] = []
    for name, tensor in named_tensors:
        n = tensor.numel() * tensor.element_size()
        items = pending.setdefault(tensor.dtype, [])
        if items and pending_bytes[tensor.dtype] + n > bucket_bytes:
            buckets.append(_flush(tensor.dtype, items))
            items.clear()
            pending_bytes[tensor.dtype] = 0
        items.append((name, tensor))
        pending_bytes[tensor.dtype] = pending_bytes.get(tensor.dtype, 0) + n
    buckets.extend(_flush(dtype, items) for dtype, items in pending.items() if items)
    return buckets


def unpack_buckets(buckets: Sequence[Bucket], verify: bool = True) -> dict[str, torch.Tensor]:
    """Name -> tensor views into the buckets (no copy; read-only when they come from Ray's object store)."""
    out: dict[str, torch.Tensor] = {}
    for bucket in buckets:
        if verify and _bytes_checksum(bucket.data) != bucket.checksum:
            raise PartialUpdateError(
                f"bucket of {bucket.dtype} holding {bucket.names[:3]}... fails its checksum"
            )
        with warnings.catch_warnings():
            # Arrays from the object store are read-only; we only ever read these views.
            warnings.filterwarnings("ignore", message=".*not writable.*")
            flat = torch.from_numpy(bucket.data).view(_dtype_from_name(bucket.dtype))
        for name, shape, offset in zip(bucket.names, bucket.shapes, bucket.offsets, strict=True):
            if name in out:
                raise PartialUpdateError(f"tensor {name!r} appears twice in the update")
            numel = int(np.prod(shape)) if shape else 1
            if offset + numel > flat.numel():
                raise PartialUpdateError(f"tensor {name!r} runs past the end of its bucket")
            out[name] = flat[offset : offset + numel].view(shape)
    return out


def apply_update(
    module: torch.nn.Module,
    update: WeightUpdate,
    current_version: int,
    expected_names: Iterable[str] | None = None,
) -> int:
    """Copy `update` into `module`'s parameters and return the new version.

    Refuses (raises, weights untouched) a stale update, one whose buckets disagree with its own name
    list or count, one that names a parameter the module lacks or has another shape, and, when
    `expected_names` is given, one that does not cover exactly those names. Every check runs before the
    first copy.
    """
    if update.version <= current_version:
        raise StaleUpdateError(
            f"refusing weight update version {update.version}: receiver already has version {current_version}"
        )
    tensors = unpack_buckets(update.buckets)
    names = set(update.names)
    if len(tensors) != update.total_count or len(names) != update.total_count or set(tensors) != names:
        raise PartialUpdateError(
            f"update version {update.version} is inconsistent: {len(tensors)} tensors in buckets, "
            f"{len(names)} names, total_count {update.total_count}"
        )
    if expected_names is not None:
        _check_same_names(set(expected_names), names, update.version)
    params = dict(module.named_parameters())
    unknown = sorted(names - set(params))
    if unknown:
        raise PartialUpdateError(
            f"update version {update.version} names {len(unknown)} tensors the receiver lacks: {unknown[:5]}"
        )
    for name, tensor in tensors.items():
        if params[name].shape != tensor.shape:
            raise PartialUpdateError(
                f"update version {update.version}: {name!r} has shape {tuple(tensor.shape)}, "
                f"receiver expects {tuple(params[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)  # copy_ also casts, e.g. fp32 learner -> bf16 rollout model
    return update.version


def _check_same_names(expected: set[str], got: set[str], version: int) -> None:
    missing, extra = sorted(expected - got), sorted(got - expected)
    if missing or extra:
        raise PartialUpdateError(
            f"update version {version} does not match the receiver: missing {missing[:5]} "
            f"({len(missing)} in all), unexpected {extra[:5]} ({len(extra)} in all)"
        )


def tensors_checksum(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over names, shapes, dtypes and bytes: equal iff the tensors are bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(_as_bytes(tensor).numpy().tobytes())
    return digest.hexdigest()
