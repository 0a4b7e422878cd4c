"""AIR's shared candidate pool (``air_candidates="pool"``), its float32 option
(``air_precision``), the relabel worker's reference set and its compiled kernel (``air_kernel``).

The pool keeps the reference trajectories' returns under shared prior candidates between
requests; every number it hands to the AIR decision must equal the returns computed from
scratch for the same candidates, and the decision must be AIR's (percentile, then
advantage) for those candidates. The reference set must be the N most recent
trajectories, the new ones included, across the worker's refreshes (issue 10).
"""

from __future__ import annotations

import dataclasses
import math
import uuid

import numpy as np
import pytest
import ray

from envs.point import PointReacher
from envs.testing import TestGoal, TestLinear
from hindsight.config import ConfigError, load_config
from relabel_service.core import RelabelRequest, Trajectory
from relabel_service.strategies import StrategyConfig, make_strategy
from relabel_service.strategies import kernels as K
from relabel_service.strategies.pool import CandidatePool
from relabel_service.worker import RelabelWorker, most_recent

GOAL, LINEAR = TestGoal(), TestLinear()


def random_trajs(family, n: int, seed: int, t0: float = 0.0, prefix: str = "t") -> list[Trajectory]:
    """n trajectories of random steps (ragged lengths), created at t0, t0 + 1, ..."""
    rng = np.random.default_rng(seed)
    tasks = family.sample_tasks(rng, n)
    out = []
    for i in range(n):
        T = int(rng.integers(1, family.horizon + 1))
        out.append(Trajectory(
            episode_id=f"{prefix}{seed}-{i}", worker_id=0, policy_version=0, family=family.name,
            task=tasks[i], obs=rng.uniform(-1, 1, (T + 1, family.obs_dim)),
            actions=rng.uniform(-1, 1, (T, family.action_dim)), rewards=np.zeros(T),
            terminated=np.zeros(T, dtype=bool), truncated=True,
            reward_inputs=np.zeros((T, family.reward_input_dim)), created_at=t0 + i,
        ))
    return out


@pytest.mark.parametrize("family", [GOAL, LINEAR], ids=["nonlinear", "linear"])
def test_pool_returns_equal_returns_from_scratch(family):
    """Sliding window of N = 12 references, M = 3 new per request, K = 9, refresh 4."""
    trajs = random_trajs(family, 40, seed=1)
    pool = CandidatePool(size=8, refresh=4)
    rng = np.random.default_rng(0)
    seen_tasks = []
    for hi in range(12, 40, 3):
        new, reference = trajs[hi - 3 : hi], trajs[hi - 12 : hi]
        own = np.stack([t.task for t in new])
        cands, R_new, R_ref = pool.returns(family, new, reference, own, 0.9, rng, num_candidates=9)
        assert cands.shape == (9, family.task_dim)
        np.testing.assert_array_equal(cands[-3:], own)  # the batch's own tasks come last
        np.testing.assert_allclose(R_ref, K.discounted_returns(family, reference, cands, 0.9), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(R_new, K.discounted_returns(family, new, cands, 0.9), rtol=1e-12, atol=1e-12)
        seen_tasks.append(pool.tasks.copy())
    # incremental: after the first request only the 3 new rows and 2 = ceil(8/4) columns per request
    requests = len(seen_tasks)
    assert pool.rows_computed == 12 + 3 * (requests - 1)
    assert pool.columns_computed == math.ceil(8 / 4) * (requests - 1)
    # the whole pool is renewed every `refresh` requests, and only the oldest tasks change
    first, after_one, after_four = seen_tasks[0], seen_tasks[1], seen_tasks[4]
    assert (np.any(first != after_one, axis=1)).sum() == 2
    assert np.all(np.any(first != after_four, axis=1))


@pytest.mark.parametrize("max_elements", [1 << 24, 40], ids=["one-call", "chunked"])
@pytest.mark.parametrize("family", [GOAL, PointReacher()], ids=["test_goal", "point_reacher"])
def test_pool_returns_equal_returns_from_scratch_for_any_reference_sets(family, max_elements):
    """Reference sets that are not a sliding window: random subsets in random order, the
    new trajectories inside or outside them, trajectories that leave and come back. The
    pool's kept steps (non-linear families) must give the returns from scratch, also when
    they are evaluated in chunks."""
    trajs = random_trajs(family, 30, seed=3)
    pool = CandidatePool(size=6, refresh=2)
    rng, pick = np.random.default_rng(0), np.random.default_rng(1)
    for call in range(12):
        ids = pick.permutation(30)
        reference = [trajs[i] for i in ids[: int(pick.integers(5, 15))]]
        new = [trajs[i] for i in ids[int(pick.integers(2, 14)) :][:3]]  # some in the reference, some not
        own = np.stack([t.task for t in new])
        cands, R_new, R_ref = pool.returns(family, new, reference, own, 0.9, rng, num_candidates=8,
                                           max_elements=max_elements)
        np.testing.assert_allclose(R_ref, K.discounted_returns(family, reference, cands, 0.9), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(R_new, K.discounted_returns(family, new, cands, 0.9), rtol=1e-12, atol=1e-300)
        assert len(pool) == len({t.episode_id for t in [*reference, *new]})


def naive_air_choice(family, new, reference, cands, discount):
    R_ref = K.discounted_returns_naive(family, reference, cands, discount)
    out = []
    for traj in new:
        R = K.discounted_returns_naive(family, [traj], cands, discount)[0]
        out.append(max(range(len(cands)), key=lambda k: (np.sum(R[k] >= R_ref[:, k]) / len(reference), R[k], -k)))
    return out


@pytest.mark.parametrize("family", [GOAL, LINEAR], ids=["nonlinear", "linear"])
def test_air_pool_decides_as_air_on_its_candidates(family):
    trajs = random_trajs(family, 30, seed=2)
    cfg = StrategyConfig(num_candidates=10, air_candidates="pool", air_pool_refresh=3)
    strategy = make_strategy("air", cfg)
    for hi in range(8, 30, 2):
        new, reference = trajs[hi - 2 : hi], trajs[max(0, hi - 8) : hi]
        result = strategy(RelabelRequest(family, new, discount=family.discount, reference=reference),
                          np.random.default_rng(hi))
        cands = strategy.keywords["pool"].tasks[:8]
        cands = np.concatenate([cands, np.stack([t.task for t in new])])
        expect = naive_air_choice(family, new, reference, cands, family.discount)
        np.testing.assert_array_equal(result.stats["chosen_index"][:, 0], expect)
        np.testing.assert_allclose(result.stats["chosen_tasks"][:, 0], cands[expect])
        assert result.stats["num_candidates"] == 10


def test_air_percentiles_direct_count_equals_sort(monkeypatch):
    rng = np.random.default_rng(0)
    R_ref = rng.normal(size=(60, 9)).round(1)  # rounded: many ties
    R_new = np.concatenate([R_ref[:3], rng.normal(size=(4, 9)).round(1)])
    direct = K.air_percentiles(R_new, R_ref)
    monkeypatch.setattr(K, "AIR_DIRECT_COUNT_MAX", 0)
    np.testing.assert_array_equal(K.air_percentiles(R_new, R_ref), direct)
    loop = [[np.sum(R_new[m, k] >= R_ref[:, k]) / 60 for k in range(9)] for m in range(7)]
    np.testing.assert_array_equal(direct, loop)


def test_pool_config_is_checked():
    with pytest.raises(ValueError, match="air_candidates"):
        StrategyConfig(air_candidates="shared")
    with pytest.raises(ValueError, match="air_pool_refresh"):
        StrategyConfig(air_pool_refresh=0)


# ---- air_precision="float32" (point_reacher) -----------------------------------------------------
class RecordingPointReacher(PointReacher):
    """point_reacher that records the ``float32`` flag of every segment_returns call."""

    def __init__(self) -> None:
        self.float32_calls: list[bool] = []

    def segment_returns(self, steps, tasks, weights, lengths, float32=False):
        self.float32_calls.append(float32)
        return super().segment_returns(steps, tasks, weights, lengths, float32=float32)


@pytest.mark.parametrize("candidates", ["fresh", "pool"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_air_precision_reaches_the_family_from_the_config(candidates, precision):
    # from the experiment config (as `--set` writes it) through make_strategy to every
    # segment_returns call AIR makes, fresh candidates and pool alike
    cfg = load_config(None, [f"relabel.strategy_cfg.air_precision={precision}",
                             f"relabel.strategy_cfg.air_candidates={candidates}"]).relabel.strategy_cfg
    assert cfg.air_precision == precision
    family = RecordingPointReacher()
    trajs = random_trajs(family, 12, seed=4)
    strategy = make_strategy("air", dataclasses.replace(cfg, num_candidates=6))
    for hi in (8, 10, 12):
        strategy(RelabelRequest(family, trajs[hi - 2 : hi], discount=family.discount, reference=trajs[:hi]),
                 np.random.default_rng(hi))
    assert len(family.float32_calls) >= 3 and set(family.float32_calls) == {precision == "float32"}


def test_air_float32_decisions_use_float32_returns():
    # the same request under both precisions: the percentiles come from returns within
    # the float32 tolerance, and the chosen tasks are AIR's choice for those returns
    family = PointReacher()
    trajs = random_trajs(family, 40, seed=5)
    request = RelabelRequest(family, trajs[-4:], discount=family.discount, reference=trajs)
    out = {p: make_strategy("air", StrategyConfig(num_candidates=20, air_precision=p))(request, np.random.default_rng(0))
           for p in ("float64", "float32")}
    assert np.mean(out["float32"].stats["chosen_index"] == out["float64"].stats["chosen_index"]) >= 0.75
    cands = family.sample_tasks(np.random.default_rng(0), 16)
    R64 = K.discounted_returns(family, trajs, cands, family.discount)
    R32 = K.discounted_returns(family, trajs, cands, family.discount, float32=True)
    assert not np.array_equal(R32, R64)
    np.testing.assert_allclose(R32, R64, rtol=1e-5, atol=1e-5)


def test_air_precision_is_checked():
    with pytest.raises(ValueError, match="air_precision"):
        StrategyConfig(air_precision="float16")
    with pytest.raises(ConfigError, match="air_precision"):  # a misspelt key names the real one
        load_config(None, ["relabel.strategy_cfg.air_precison=float32"])
    with pytest.raises(ConfigError, match="air_precision: float32 applies to point_reacher"):
        load_config(None, ["env.family=point_trajectory", "relabel.strategy_cfg.air_precision=float32"])
    with pytest.raises(ConfigError, match="air_precision: float32 applies to point_reacher"):
        load_config(None, ["relabel.strategy_cfg.air_precision=float32", "env.family_kwargs={reward_bias: 1.0}"])
    # a strategy handed a family without float32 returns refuses rather than ignoring it
    trajs = random_trajs(GOAL, 4, seed=6)
    strategy = make_strategy("air", StrategyConfig(num_candidates=4, air_precision="float32"))
    with pytest.raises(ValueError, match="no float32 segment_returns"):
        strategy(RelabelRequest(GOAL, trajs[:2], discount=0.9, reference=trajs), np.random.default_rng(0))


def test_most_recent_keeps_the_newest_oldest_first():
    trajs = random_trajs(GOAL, 6, seed=3)
    shuffled = [trajs[i] for i in (4, 0, 5, 2, 1, 3)] + trajs[:2]  # duplicates count once
    assert [t.episode_id for t in most_recent(shuffled, 4)] == [t.episode_id for t in trajs[2:]]
    assert [t.episode_id for t in most_recent(trajs[:3], 10)] == [t.episode_id for t in trajs[:3]]
    assert most_recent(trajs, 0) == []


# ---- the relabel worker on a real store ----------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.ray
def test_worker_reference_is_the_n_most_recent_across_refreshes(ray_session, tmp_path):
    """N = 10, 4 new trajectories per call, a refresh every 3 calls: before every call the
    store holds exactly what the worker has read, so the reference set must be the store's
    10 newest (the new ones included) whether or not the call refreshed."""
    from relabel_service.store.actor import start_store

    store = start_store(tmp_path, 2, name_prefix=f"pool-{uuid.uuid4().hex[:8]}")
    try:
        worker = RelabelWorker(
            worker_id=0, family="test_goal", strategy="air",
            strategy_cfg=StrategyConfig(num_candidates=6, reference_size=10), store=store,
            shard_ids=[0, 1], discount=0.9, seed=0, batch_trajectories=4, reference_refresh=3,
        )
        everything: list[Trajectory] = []
        for call in range(7):
            batch = random_trajs(GOAL, 4, seed=10 + call, t0=100.0 * call, prefix="c")
            store.append_many(batch)
            everything += batch
            out, stats = worker.relabel(wait_s=5.0)
            # read all 4 (2 shards x up to 4 each), relabeled against the 10 newest
            assert stats["trajectories"] == 4, stats
            newest = sorted(everything, key=lambda t: t.created_at)[-10:]
            assert [t.episode_id for t in worker.reference] == [t.episode_id for t in newest], call
            assert stats["strategy_stats"]["num_reference"] == float(min(10, len(everything)))
    finally:
        store.shutdown()


def test_backoff_doubles_to_its_cap_and_resets():
    from relabel_service.worker import Backoff

    b = Backoff(first=0.01, most=0.04)
    pauses = []
    for _ in range(4):
        pauses.append(b.pause)
        b.wait(0.0)  # the call's deadline has passed: no sleep, the pause still grows
    assert pauses == [0.01, 0.02, 0.04, 0.04]
    b.reset()
    assert b.pause == 0.01


@pytest.mark.ray
def test_an_idle_worker_backs_off_and_a_read_with_data_resets_it(ray_session, tmp_path):
    """Empty shards: the worker's pause between reads grows to POLL_MAX_S within a call and
    stays there across calls; the first read that finds data returns it and resets it."""
    from relabel_service.store.actor import start_store
    from relabel_service.worker import POLL_FIRST_S, POLL_MAX_S

    store = start_store(tmp_path, 2, name_prefix=f"poll-{uuid.uuid4().hex[:8]}")
    try:
        worker = RelabelWorker(worker_id=0, family="test_goal", strategy="none", strategy_cfg=StrategyConfig(),
                               store=store, shard_ids=[0, 1], discount=0.9, seed=0, batch_trajectories=4)
        out, stats = worker.relabel(wait_s=0.5)
        assert out is None and stats["trajectories"] == 0
        assert worker.backoff.pause == POLL_MAX_S
        out, stats = worker.relabel(wait_s=0.1)  # still idle: the pause stays at its cap
        assert out is None and worker.backoff.pause == POLL_MAX_S
        store.append_many(random_trajs(GOAL, 3, seed=1))
        out, stats = worker.relabel(wait_s=5.0)
        assert stats["trajectories"] == 3 and len(out) > 0
        assert worker.backoff.pause == POLL_FIRST_S
    finally:
        store.shutdown()


@pytest.mark.ray
def test_relabel_worker_with_the_compiled_kernel(ray_session, tmp_path, caplog):
    # the config's air_kernel reaches the worker's strategy: the worker compiles at start
    # (says so), and its transitions equal those of a numpy worker fed the same trajectories
    from benchmarks.relabel import synth_trajectories
    from envs import get_family
    from relabel_service.store.actor import start_store

    fam = get_family("point_trajectory")
    cfg = load_config(None, ["env.family=point_trajectory", "relabel.strategy_cfg.air_kernel=compiled",
                             "relabel.strategy_cfg.num_candidates=12", "relabel.strategy_cfg.reference_size=30"])
    outs = {}
    for kernel in ("compiled", "numpy"):
        store = start_store(tmp_path / kernel, 2, name_prefix=f"fused-{uuid.uuid4().hex[:8]}")
        try:
            caplog.clear()
            with caplog.at_level("INFO", logger="relabel_service.worker"):
                worker = RelabelWorker(
                    worker_id=0, family="point_trajectory", strategy="air",
                    strategy_cfg=dataclasses.replace(cfg.relabel.strategy_cfg, air_kernel=kernel), store=store,
                    shard_ids=[0, 1], discount=fam.discount, seed=0, batch_trajectories=8,
                )
            assert ("compiled return kernel of point_trajectory ready" in caplog.text) == (kernel == "compiled")
            batches = []
            for call in range(3):
                store.append_many(synth_trajectories(fam, 8, fam.horizon, np.random.default_rng(call),
                                                     prefix=f"w{call}-"))
                out, stats = worker.relabel(wait_s=5.0)
                assert stats["trajectories"] == 8, stats
                batches.append(out)
            outs[kernel] = batches
        finally:
            store.shutdown()
    for a, b in zip(outs["compiled"], outs["numpy"]):
        np.testing.assert_array_equal(a.task, b.task)
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_allclose(a.reward, b.reward, rtol=1e-6, atol=1e-6)  # float32 rows
