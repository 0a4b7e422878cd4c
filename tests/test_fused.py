"""The compiled return kernels of the point families (``envs/fused.py``, AIR's
``air_kernel="compiled"``): the same returns as the definition, the same AIR decisions as the
numpy path, the numpy path wherever they do not apply or cannot be compiled, and the config
that turns them on (through a relabel worker on a real store: tests/test_air_pool.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from benchmarks.relabel import synth_trajectories
from envs import fused, get_family
from envs.core import StepBatch, TaskFamily
from hindsight.config import ConfigError, load_config
from relabel_service.core import RelabelRequest
from relabel_service.strategies import make_strategy
from relabel_service.strategies.config import StrategyConfig

POINT = ["point_trajectory", "point_reacher"]


def walks(fam: TaskFamily, M: int, T: int, seed: int) -> StepBatch:
    """M random walks of T steps around the start (positions within [-1, 1]^2)."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((M * T, fam.obs_dim))
    obs[:, :2] = np.clip(np.cumsum(rng.normal(scale=0.15, size=(M, T, 2)), axis=1), -1, 1).reshape(-1, 2)
    nxt = obs.copy()
    nxt[:, :2] = np.clip(obs[:, :2] + rng.normal(scale=0.05, size=(M * T, 2)), -1, 1)
    return StepBatch(obs, rng.uniform(-1, 1, (M * T, fam.action_dim)), nxt, np.zeros((M * T, fam.reward_input_dim)))


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    for name in POINT:
        assert fused.warm_up(get_family(name)), fused.failure()


@pytest.mark.parametrize("name", POINT)
def test_compiled_returns_equal_the_definition(name):
    # 37 segments of the family's horizon at its discount, and again with every segment's
    # weights its own; against the base class's definition (rewards x weights, segment sums)
    # and the numpy override, to the order of the additions
    fam = get_family(name)
    M, T = 37, fam.horizon
    steps = walks(fam, M, T, seed=1)
    tasks = fam.sample_tasks(np.random.default_rng(2), 23)
    lengths = np.full(M, T)
    for weights in (np.tile(fam.discount ** np.arange(T), M), np.random.default_rng(3).uniform(0.1, 1, M * T)):
        numpy_path = fam.segment_returns(steps, tasks, weights, lengths)
        definition = TaskFamily.segment_returns(fam, steps, tasks, weights, lengths)
        with fused.enabled():
            got = fam.segment_returns(steps, tasks, weights, lengths)
        assert got.shape == (M, len(tasks))
        np.testing.assert_allclose(got, definition, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, numpy_path, rtol=1e-12, atol=0)
        if name == "point_trajectory":  # positions behind a task's start give exactly 0, never -0
            assert np.all(got >= 0.0) and not np.any(np.signbit(got))
    # sizes of one (one segment, one step, one task) are padded, not compiled again
    for M, T, K in ((1, T, 3), (4, 1, 3), (1, 1, 1), (3, 2, 1)):
        steps = walks(fam, M, T, seed=M + T + K)
        tasks = fam.sample_tasks(np.random.default_rng(K), K)
        weights = np.random.default_rng(4).uniform(0.1, 1, M * T)
        with fused.enabled():
            got = fam.segment_returns(steps, tasks, weights, np.full(M, T))
        np.testing.assert_allclose(got, TaskFamily.segment_returns(fam, steps, tasks, weights, np.full(M, T)),
                                   rtol=1e-12, atol=1e-12)


def test_compiled_returns_hand_case():
    # PointTrajectory, task theta = 0, d = 1, amp = 0: a step at (.5, 0) is alpha = .5 on the
    # curve, 0.5 / (.05 sqrt(2 pi)) = 3.989422804; one at (-.3, 0) is behind the start: 0.
    # Two 2-step segments with weights (1, .9): (ahead, behind) and (behind, ahead)
    fam = get_family("point_trajectory")
    obs = np.array([[0.5, 0, 0], [-0.3, 0, 0], [-0.3, 0, 0], [0.5, 0, 0]])
    steps = StepBatch(obs, np.zeros((4, 2)), obs, np.zeros((4, 0)))
    with fused.enabled():
        got = fam.segment_returns(steps, np.array([[0.0, 1.0, 0.0]]), np.array([1, 0.9, 1, 0.9]), np.array([2, 2]))
    np.testing.assert_allclose(got[:, 0], [3.989422804, 0.9 * 3.989422804], rtol=1e-9)


@pytest.mark.parametrize("name", POINT)
def test_uneven_segments_and_per_segment_tasks_take_the_numpy_path(name, monkeypatch):
    # the kernels need equal-length segments and shared tasks; elsewhere segment_returns
    # gives the numpy path's bits with the switch on, and the kernels are never called
    fam = get_family(name)
    steps = walks(fam, 6, fam.horizon, seed=4)
    B = len(steps)
    lengths = np.array([fam.horizon - 3, fam.horizon + 3, 0, *[fam.horizon] * 4])
    weights = np.random.default_rng(5).uniform(0.1, 1, B)
    tasks = fam.sample_tasks(np.random.default_rng(6), 5)
    own = np.stack([np.roll(tasks, m, axis=0) for m in range(6)])
    expected = [fam.segment_returns(steps, tasks, weights, lengths),
                fam.segment_returns(steps, own, weights, np.full(6, fam.horizon))]
    calls = []
    monkeypatch.setattr(fused, "_kernel", lambda *a: calls.append(a))
    with fused.enabled():
        got = [fam.segment_returns(steps, tasks, weights, lengths),
               fam.segment_returns(steps, own, weights, np.full(6, fam.horizon))]
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert calls == []


def test_float32_runs_the_kernel_in_float32():
    # air_precision="float32" with air_kernel="compiled": point_reacher's kernel in float32,
    # within float32 rounding of the numpy float32 path and within the bound that path is
    # held to against float64 (1e-5 (1 + |R|), tests/test_envs.py)
    fam = get_family("point_reacher")
    M, T = 37, fam.horizon
    steps = walks(fam, M, T, seed=7)
    args = (steps, fam.sample_tasks(np.random.default_rng(8), 23), np.tile(fam.discount ** np.arange(T), M),
            np.full(M, T))
    numpy32, exact = fam.segment_returns(*args, float32=True), fam.segment_returns(*args)
    assert fused.warm_up(fam, float32=True), fused.failure()
    with fused.enabled():
        got = fam.segment_returns(*args, float32=True)
        again64 = fam.segment_returns(*args)
    assert "point_reacher/float32" in fused._compiled  # the float32 kernel ran, not the numpy path
    np.testing.assert_allclose(got, numpy32, rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(got - exact) <= 1e-5 * (1 + np.abs(exact)))
    assert not np.array_equal(got, exact)  # float32 terms, not the float64 kernel
    np.testing.assert_allclose(again64, exact, rtol=1e-12, atol=0)  # the float64 kernel is untouched


def test_the_switch_is_scoped():
    assert not fused.active()
    with fused.enabled():
        assert fused.active()
        with fused.enabled(False):
            assert not fused.active()
        assert fused.active()
    assert not fused.active()


@pytest.mark.parametrize("candidates", ["fresh", "pool"])
@pytest.mark.parametrize("name", POINT)
def test_air_decisions_are_the_numpy_paths(name, candidates):
    # a sliding window of requests at N = 60, K = 20, 4 new per request: the compiled kernel
    # changes nothing AIR decides (returns differ in the last bits only)
    fam = get_family(name)
    stream = synth_trajectories(fam, 60 + 5 * 4, fam.horizon, np.random.default_rng(9), prefix="d")
    base = StrategyConfig(num_candidates=20, reference_size=60, air_candidates=candidates, air_pool_refresh=3)
    out = {}
    for kernel in ("numpy", "compiled"):
        strategy = make_strategy("air", dataclasses.replace(base, air_kernel=kernel))
        out[kernel] = []
        for r in range(5):
            hi = 60 + (r + 1) * 4
            request = RelabelRequest(fam, stream[hi - 4 : hi], discount=fam.discount, reference=stream[hi - 60 : hi])
            out[kernel].append(strategy(request, np.random.default_rng(r)).stats)
    for a, b in zip(out["numpy"], out["compiled"]):
        np.testing.assert_array_equal(a["chosen_index"], b["chosen_index"])
        np.testing.assert_array_equal(a["chosen_tasks"], b["chosen_tasks"])
        np.testing.assert_array_equal(a["chosen_percentile"], b["chosen_percentile"])


def test_air_kernel_config_is_checked():
    with pytest.raises(ValueError, match="air_kernel"):
        StrategyConfig(air_kernel="numba")
    with pytest.raises(ConfigError, match="air_kernel"):  # a misspelt key names the real one
        load_config(None, ["relabel.strategy_cfg.air_kernal=compiled"])
    with pytest.raises(ConfigError, match="air_kernel: compiled applies to point_trajectory and point_reacher"):
        load_config(None, ["env.family=half_cheetah_mo", "relabel.strategy_cfg.air_kernel=compiled"])
    cfg = load_config(None, ["env.family=point_trajectory", "relabel.strategy_cfg.air_kernel=compiled"])
    assert cfg.relabel.strategy_cfg.air_kernel == "compiled"


def test_without_a_compiler_the_numpy_path_runs_and_says_why(tmp_path):
    # a fresh process whose inductor sees no C++ compiler and no cache: warm_up reports
    # failure, the reason names the error, it is logged once, and AIR's returns are numpy's
    script = textwrap.dedent("""
        import logging, numpy as np
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        from envs import fused, get_family
        from envs.core import StepBatch
        fam = get_family("point_trajectory")
        assert not fused.warm_up(fam)
        assert fused.failure(), fused.failure()
        obs = np.random.default_rng(0).uniform(-1, 1, (30, 3))
        steps = StepBatch(obs, np.zeros((30, 2)), obs, np.zeros((30, 0)))
        args = (steps, fam.sample_tasks(np.random.default_rng(1), 4), np.ones(30), np.full(2, 15))
        with fused.enabled():
            assert not fused.active()
            got = fam.segment_returns(*args)
        assert np.array_equal(got, fam.segment_returns(*args))
        assert not fused.warm_up(get_family("point_reacher"))
        print("FAILURE", fused.failure())
    """)
    env = {**os.environ, "CXX": "/nonexistent/bin/c++", "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILURE" in proc.stdout
    assert proc.stderr.count("compiled return kernels unavailable") == 1, proc.stderr
