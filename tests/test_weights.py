"""Weight packing and the receiver's checks. No ray, no deepspeed."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from rayunify.actors.collective import ModuleReceiver, header_of
from rayunify.weights import (
    PartialUpdateError,
    StaleUpdateError,
    WeightUpdate,
    apply_update,
    pack_buckets,
    tensors_checksum,
    unpack_buckets,
)


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _update_from(module: torch.nn.Module, version: int, bucket_bytes: int = 1 << 20) -> WeightUpdate:
    return WeightUpdate.from_buckets(version, pack_buckets(module.named_parameters(), bucket_bytes))


def _checksum(module: torch.nn.Module) -> str:
    return tensors_checksum(module.named_parameters())


def test_pack_unpack_round_trip_mixed_dtypes_and_small_buckets():
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.randn(2, 2, 2),
        "scalar": torch.tensor(1.5),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "big": torch.randn(100),  # larger than one bucket: gets a bucket of its own
    }
    buckets = pack_buckets(tensors.items(), bucket_bytes=64)
    assert {b.dtype for b in buckets} == {"float32", "bfloat16", "int64"}
    assert len(buckets) > 3  # the 64-byte limit split the float32 tensors
    # Survives pickling (what Ray does) with names, shapes and bits intact.
    out = unpack_buckets(pickle.loads(pickle.dumps(buckets)))
    assert out.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert out[name].dtype == tensor.dtype and out[name].shape == tensor.shape
        assert torch.equal(out[name], tensor), name


def test_apply_update_copies_weights_and_returns_version():
    source, target = _mlp(0), _mlp(1)
    assert _checksum(source) != _checksum(target)
    assert apply_update(target, _update_from(source, version=3), current_version=2) == 3
    assert _checksum(source) == _checksum(target)


def test_stale_update_refused_and_weights_untouched():
    source, target = _mlp(0), _mlp(1)
    before = _checksum(target)
    for stale in (5, 4):
        with pytest.raises(StaleUpdateError, match="already has version 5"):
            apply_update(target, _update_from(source, version=stale), current_version=5)
    assert _checksum(target) == before


def test_partial_updates_refused_and_weights_untouched():
    source, target = _mlp(0), _mlp(1)
    before = _checksum(target)
    full = _update_from(source, version=1, bucket_bytes=64)  # several buckets, so one can go missing

    missing_bucket = dataclasses.replace(full, buckets=full.buckets[:-1])
    with pytest.raises(PartialUpdateError, match="inconsistent"):
        apply_update(target, missing_bucket, current_version=0)

    wrong_count = dataclasses.replace(full, total_count=full.total_count + 1)
    with pytest.raises(PartialUpdateError, match="inconsistent"):
        apply_update(target, wrong_count, current_version=0)

    # Self-consistent but covering only part of what the receiver expects.
    subset = WeightUpdate.from_buckets(1, pack_buckets(list(source.named_parameters())[:2], 1 << 20))
    with pytest.raises(PartialUpdateError, match="missing"):
        apply_update(target, subset, current_version=0, expected_names=dict(target.named_parameters()))

    wrong_shape = _update_from(torch.nn.Sequential(torch.nn.Linear(8, 17)), version=1)
    with pytest.raises(PartialUpdateError, match="shape"):
        apply_update(target, wrong_shape, current_version=0)

    unknown = WeightUpdate.from_buckets(1, pack_buckets([("nope.weight", torch.zeros(2))], 1 << 20))
    with pytest.raises(PartialUpdateError, match="lacks"):
        apply_update(target, unknown, current_version=0)

    corrupted = _update_from(source, version=1)
    corrupted.buckets[0].data[:4] ^= 0xFF
    with pytest.raises(PartialUpdateError, match="checksum"):
        apply_update(target, corrupted, current_version=0)

    assert _checksum(target) == before


def test_update_casts_to_receiver_dtype():
    source, target = _mlp(0), _mlp(1).to(torch.bfloat16)
    apply_update(target, _update_from(source, version=1), current_version=0)
    for (_, s), (_, t) in zip(source.named_parameters(), target.named_parameters(), strict=True):
        assert torch.equal(s.to(torch.bfloat16), t)


def test_module_receiver_answers_the_receiver_protocol():
    """`ModuleReceiver` is what real actors (ModelHolder) and the Ray tests' stand-ins run."""
    source, target = _mlp(0), _mlp(1)
    receiver = ModuleReceiver(target, expected_names=[name for name, _ in target.named_parameters()])
    version, seconds = receiver.apply_weight_update(_update_from(source, version=1))
    assert (version, receiver.get_version()) == (1, 1) and seconds >= 0
    assert _checksum(source) == _checksum(target)
    with pytest.raises(StaleUpdateError):
        receiver.apply_weight_update(_update_from(source, version=1))
    with pytest.raises(RuntimeError, match="before join_push_channel"):
        receiver.receive_weight_broadcast(header_of(_update_from(source, version=2)))
    assert receiver.get_version() == 1
