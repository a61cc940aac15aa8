"""The Ray runtime on a real local cluster: actor groups, DeepSpeed learner ranks, and the driver's one
weight-push path (`WeightSync`) into receivers that run the real receiver code (`ModuleReceiver`).

A tiny MLP stands in for the model, so these tests exercise the infrastructure only; most of their time
is starting actor processes, hence the shared module-scoped learner group.
"""

from __future__ import annotations

import os
import sys
import time

# Read when ray is imported: keeps every Ray address on 127.0.0.1. Token auth is pointless for a
# loopback-only test cluster, and turning it off keeps the tests from writing ~/.ray/auth_token.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ray._private import ray_constants  # noqa: E402

from rayunify.actors.collective import ModuleReceiver  # noqa: E402
from rayunify.actors.group import ActorGroup  # noqa: E402
from rayunify.actors.learner_group import LearnerGroup  # noqa: E402
from rayunify.driver.weight_sync import WeightSync  # noqa: E402
from rayunify.weights import StaleUpdateError, tensors_checksum  # noqa: E402

IN, HIDDEN, OUT = 8, 16, 4
SEED = 0


def tiny_mlp():
    """The model factory: the first layer stays frozen, like Janus's vision tower beside the trained LLM."""
    model = torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, OUT),
    )
    return model, lambda name: not name.startswith("0.")


def mse_loss(model, batch):
    pred = model(batch["x"])
    return ((pred - batch["y"]) ** 2).mean(), {"pred_abs": pred.abs().mean().item()}


def make_batch(seed: int, nan: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, IN, generator=gen)
    if nan:
        x[0, 0] = float("nan")
    return {"x": x, "y": torch.randn(16, OUT, generator=gen)}


def ds_config(stage: int) -> dict:
    return {"train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": stage}}


class MLPReceiver(ModuleReceiver):
    """Stands in for a rollout actor: holds the same model and takes weight pushes exactly as one does."""

    def __init__(self, seed: int = SEED) -> None:
        torch.manual_seed(seed)
        self.model, trainable = tiny_mlp()
        super().__init__(self.model, expected_names=[n for n, _ in self.model.named_parameters() if trainable(n)])

    def checksum(self) -> str:
        return tensors_checksum(self.model.named_parameters())


class DiesInBroadcast(MLPReceiver):
    """A receiver whose process exits as the bytes of a broadcast start to flow (the others are inside it)."""

    def receive_weight_broadcast(self, header):
        os._exit(1)


def start_receivers(n: int, cls: type = MLPReceiver) -> list:
    receivers = [ray.remote(cls).options(num_cpus=0.25).remote() for _ in range(n)]
    ray.get([r.get_version.remote() for r in receivers])  # started, so a push's time is the push alone
    return receivers


class Counter:
    def __init__(self, start: int, step: int = 1) -> None:
        self.value, self.step = start, step

    def bump(self) -> int:
        return self.add(self.step)

    def add(self, n: int) -> int:
        self.value += n
        return self.value

    def die(self) -> None:
        os._exit(1)


@pytest.fixture(scope="module")
def ray_cluster():
    if ray_constants.ENABLE_RAY_CLUSTER:
        pytest.fail(
            "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set: it would leave loopback"
        )
    # Workers cannot import this test module (tests/ is not on their path): ship its code by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    start = time.perf_counter()
    # address="local": a new cluster even if someone's `ray start` head is recorded in /tmp/ray.
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    print(f"\nray.init: {time.perf_counter() - start:.1f} s")
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def zero2_pair(ray_cluster):
    """Two ZeRO-2 ranks over gloo, shared by the tests below (starting ranks dominates the run time)."""
    start = time.perf_counter()
    group = LearnerGroup(
        2, tiny_mlp, mse_loss, ds_config(2), optimizer_kwargs={"lr": 1e-2}, num_cpus_per_rank=0.5, seed=SEED
    )
    print(f"2-rank ZeRO-2 group up in {time.perf_counter() - start:.1f} s; per rank {group.setup_info}")
    yield group
    group.kill()


def test_actor_group_runs_and_restarts_a_dead_actor(ray_cluster):
    group = ActorGroup(
        Counter, 2, num_cpus=0.25, kwargs={"step": 10}, rank_kwargs=[{"start": 0}, {"start": 100}]
    )
    try:
        assert group.run("bump") == [10, 110]
        assert ray.get(group.async_run_each("add", [1, 2])) == [11, 112]
        # An actor dying mid-call: the driver sees RayActorError on the in-flight ref.
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(group.actors[1].die.remote())
        assert group.alive() == [True, False]
        group.restart(1)
        # The new actor has the old constructor arguments and fresh state.
        assert group.run("bump") == [21, 110] and group.restarts == [0, 1]
    finally:
        group.kill()


def test_two_ranks_step_and_stay_bit_identical(zero2_pair):
    before = zero2_pair.param_checksums()
    assert before[0] == before[1]  # same seed, same initial weights
    for step in range(2):
        metrics = zero2_pair.train_step([make_batch(10 * step), make_batch(10 * step + 1)])
    print(f"2-rank ZeRO-2 train step: {metrics['step_s'] * 1000:.0f} ms")
    after = zero2_pair.param_checksums()
    assert after[0] != before[0], "a step must change the parameters"
    assert after[0] == after[1], "ZeRO-2 ranks drifted apart"
    assert metrics["version"] == 2 and zero2_pair.versions() == [2, 2]
    assert {"loss", "pred_abs", "step_s"} <= metrics.keys()


def test_nan_loss_raises_on_every_rank_and_changes_nothing(zero2_pair):
    before, versions = zero2_pair.param_checksums(), zero2_pair.versions()
    # Only rank 1 sees the NaN: both ranks must still refuse (else rank 0 would hang in backward).
    refs = zero2_pair.async_train_step([make_batch(7), make_batch(8, nan=True)])
    for ref in refs:
        with pytest.raises(FloatingPointError, match="non-finite loss"):
            ray.get(ref)
    assert zero2_pair.param_checksums() == before and zero2_pair.versions() == versions
    # The engine is still usable afterwards.
    assert zero2_pair.train_step([make_batch(7), make_batch(8)])["version"] == versions[0] + 1


def test_checkpoint_round_trip_restores_params_and_version(zero2_pair, tmp_path):
    zero2_pair.train_step([make_batch(1), make_batch(2)])
    saved_sum, saved_version = zero2_pair.param_checksums(), zero2_pair.versions()
    zero2_pair.save_checkpoint(str(tmp_path), "step_x", {"consumed_prompts": 42})
    zero2_pair.train_step([make_batch(3), make_batch(4)])
    assert zero2_pair.param_checksums() != saved_sum
    client_state = zero2_pair.load_checkpoint(str(tmp_path))  # tag from DeepSpeed's "latest" file
    assert client_state["consumed_prompts"] == 42
    assert zero2_pair.param_checksums() == saved_sum and zero2_pair.versions() == saved_version
    # Optimizer state came back too: the same batch from the same state gives the same weights.
    zero2_pair.train_step([make_batch(3), make_batch(4)])
    again = zero2_pair.param_checksums()
    zero2_pair.load_checkpoint(str(tmp_path), tag="step_x")
    zero2_pair.train_step([make_batch(3), make_batch(4)])
    assert zero2_pair.param_checksums() == again


def test_load_missing_checkpoint_is_an_error(zero2_pair, tmp_path):
    with pytest.raises(FileNotFoundError, match="no DeepSpeed checkpoint"):
        zero2_pair.load_checkpoint(str(tmp_path / "nothing"))


def test_zero3_single_rank_push_to_receiver(ray_cluster):
    learner = LearnerGroup(
        1, tiny_mlp, mse_loss, ds_config(3), optimizer_kwargs={"lr": 1e-2}, num_cpus_per_rank=0.5
    )
    receiver = ray.remote(MLPReceiver).options(num_cpus=0.25).remote()
    try:
        print(f"1-rank ZeRO-3 group up; {learner.setup_info[0]}")
        assert ray.get(receiver.checksum.remote()) == learner.group.run("param_checksum", False)[0]
        learner.train_step([make_batch(0)])
        sync = WeightSync(learner, lambda: [receiver], bucket_mb=0.001)  # ~1 KiB buckets: several, to exercise them
        stats = sync.push()
        print(f"ZeRO-3 push: {stats}")
        assert stats is not None and (
            stats.version == 1
            and stats.num_tensors == 4
            and stats.num_bytes == 4 * (16 * 16 + 16 + 4 * 16 + 4)
        )
        assert ray.get(receiver.get_version.remote()) == 1
        # Gathered ZeRO-3 weights reached the receiver bit for bit (frozen layer included, same seed).
        assert ray.get(receiver.checksum.remote()) == learner.group.run("param_checksum", False)[0]
        assert sync.push() is None  # the learner has not stepped: nothing to push

        # The same version again (from a sync that has not pushed yet) is stale: refused, receiver untouched.
        before = ray.get(receiver.checksum.remote())
        with pytest.raises(StaleUpdateError, match="already has version 1"):
            WeightSync(learner, lambda: [receiver]).push()
        assert ray.get(receiver.checksum.remote()) == before and ray.get(receiver.get_version.remote()) == 1
    finally:
        ray.kill(receiver)
        learner.kill()


def test_push_from_two_ranks_to_two_receivers(zero2_pair):
    receivers = start_receivers(2)
    try:
        zero2_pair.train_step([make_batch(5), make_batch(6)])
        stats = WeightSync(zero2_pair, lambda: receivers).push()
        assert stats is not None
        print(f"2-rank ZeRO-2 push to 2 receivers: {stats}")
        expected = zero2_pair.group.run("param_checksum", False)[0]
        assert ray.get([r.checksum.remote() for r in receivers]) == [expected, expected]
        assert ray.get([r.get_version.remote() for r in receivers]) == [stats.version] * 2
    finally:
        for r in receivers:
            ray.kill(r)


def test_broadcast_push_over_gloo_matches_the_learner_refuses_stale_and_reforms_after_a_restart(zero2_pair):
    """learner.weight_transport=broadcast: learner rank 0 and two receivers form a gloo group of their own
    (beside the learners' DeepSpeed world); the header goes by RPC, the bytes by broadcast."""
    receivers = start_receivers(2)
    try:
        sync = WeightSync(zero2_pair, lambda: receivers, transport="broadcast", bucket_mb=0.001, timeout_s=60)
        zero2_pair.train_step([make_batch(7), make_batch(8)])
        stats = sync.push()  # forms the group, then broadcasts (several buckets)
        print(f"2-rank ZeRO-2 broadcast push to 2 receivers: {stats}")
        expected = zero2_pair.group.run("param_checksum", False)[0]
        assert stats is not None and sync.generation == 1
        assert ray.get([r.checksum.remote() for r in receivers]) == [expected, expected]
        assert ray.get([r.get_version.remote() for r in receivers]) == [stats.version] * 2

        # Re-forming the group works, and a repeated version is refused by the receivers before any
        # weight changes.
        with pytest.raises(StaleUpdateError, match="already has version"):
            WeightSync(zero2_pair, lambda: receivers, transport="broadcast", timeout_s=60).push()
        assert ray.get([r.checksum.remote() for r in receivers]) == [expected, expected]

        # A receiver restarted (fresh state, version 0): it catches up at once, and the next push forms a
        # new group, since the old one names the dead actor.
        ray.kill(receivers[1], no_restart=True)
        receivers[1] = start_receivers(1)[0]
        sync.replaced(receivers[1], takes_push=True)
        assert ray.get(receivers[1].checksum.remote()) == expected
        zero2_pair.train_step([make_batch(9), make_batch(10)])
        stats = sync.push()
        expected = zero2_pair.group.run("param_checksum", False)[0]
        assert stats is not None and sync.generation == 2
        assert ray.get([r.checksum.remote() for r in receivers]) == [expected, expected]
        assert ray.get([r.get_version.remote() for r in receivers]) == [stats.version] * 2
    finally:
        for r in receivers:
            ray.kill(r)


def test_a_receiver_dying_mid_broadcast_is_noticed_within_the_push_timeout_and_the_push_retried(zero2_pair):
    """learner.push_timeout_s: the group's collective and the driver's wait are bounded by it; the dead
    receiver is restarted (the driver's restart seam), the group re-formed, and the push retried once."""
    receivers = start_receivers(1) + start_receivers(1, DiesInBroadcast)
    restarted = []

    def restart_dead():
        receivers[1] = start_receivers(1)[0]
        restarted.append(receivers[1])
        sync.replaced(receivers[1], takes_push=True)

    timeout_s = 5.0
    sync = WeightSync(zero2_pair, lambda: receivers, "broadcast", bucket_mb=0.001, timeout_s=timeout_s,
                      restart_dead=restart_dead)  # fmt: skip
    try:
        zero2_pair.train_step([make_batch(11), make_batch(12)])
        start = time.perf_counter()
        stats = sync.push()
        elapsed = time.perf_counter() - start
        print(f"push with a receiver lost mid-broadcast: {elapsed:.1f} s (timeout {timeout_s} s)")
        assert stats is not None and len(restarted) == 1
        assert elapsed < 6 * timeout_s  # the group's 300 s default would be far beyond
        expected = zero2_pair.group.run("param_checksum", False)[0]
        assert ray.get([r.checksum.remote() for r in receivers]) == [expected, expected]
        assert ray.get([r.get_version.remote() for r in receivers]) == [stats.version] * 2

        zero2_pair.train_step([make_batch(13), make_batch(14)])
        stats = sync.push()  # the next push forms a group of every receiver again
        expected = zero2_pair.group.run("param_checksum", False)[0]
        assert ray.get([r.checksum.remote() for r in receivers]) == [expected, expected]
    finally:
        for r in receivers:
            ray.kill(r)


class DiesInApply(MLPReceiver):
    """A receiver whose process exits as an object-store push reaches it (e.g. its node was lost)."""

    def apply_weight_update(self, update):
        os._exit(1)


def test_a_receiver_dying_in_an_object_store_push_is_restarted_and_handed_the_same_update(zero2_pair):
    receivers = start_receivers(1) + start_receivers(1, DiesInApply)
    restarted = []

    def restart_dead():
        receivers[1] = start_receivers(1)[0]
        restarted.append(receivers[1])
        sync.replaced(receivers[1], takes_push=True)

    sync = WeightSync(zero2_pair, lambda: receivers, restart_dead=restart_dead)
    try:
        zero2_pair.train_step([make_batch(21), make_batch(22)])
        stats = sync.push()
        assert stats is not None and len(restarted) == 1
        expected = zero2_pair.group.run("param_checksum", False)[0]
        assert ray.get([r.checksum.remote() for r in receivers]) == [expected, expected]
        assert ray.get([r.get_version.remote() for r in receivers]) == [stats.version] * 2
    finally:
        for r in receivers:
            ray.kill(r)


def test_a_taken_rendezvous_port_costs_a_retry_not_the_run(ray_cluster, monkeypatch):
    """CI once lost every learner test to EADDRINUSE: rank 0's port was taken between picking and binding.
    Here the first port handed out is held by a listening socket; the group must come up on a second one."""
    import socket

    from rayunify.actors import learner_group

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real_run_on_bundle = learner_group.run_on_bundle
    picked: list[tuple[str, int]] = []

    def first_port_taken(pg, index, fn):
        picked.append(("127.0.0.1", taken.getsockname()[1]) if not picked else real_run_on_bundle(pg, index, fn))
        return picked[-1]

    monkeypatch.setattr(learner_group, "run_on_bundle", first_port_taken)
    try:
        learner = LearnerGroup(1, tiny_mlp, mse_loss, ds_config(2), optimizer_kwargs={"lr": 1e-2}, num_cpus_per_rank=0.5)
    finally:
        taken.close()
    try:
        assert len(picked) == 2 and picked[1][1] != picked[0][1]
        assert learner.train_step([make_batch(0)])["version"] == 1
    finally:
        learner.kill()
