"""Relabeling kernels and strategies: formulas vs plain loops, hand-computed tables, properties.

Hand-computed cases use ``test_linear`` trajectories of ONE step, so a return is just
R(tau|w) = w . phi with phi = [x', y', -||a||^2] of that step and the answers can be
worked out on paper (see the comments next to each table).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import family_names, get_family
from envs.testing import TestGoal, TestLinear
from relabel_service.core import RelabelRequest, RelabelResult, Trajectory, concat_steps
from relabel_service.strategies import (
    STRATEGIES,
    StrategyConfig,
    UnknownStrategyError,
    get_strategy,
    make_strategy,
    strategy_names,
    to_transitions,
)
from relabel_service.strategies import kernels as K

GOAL, LINEAR = TestGoal(), TestLinear()
FAST = settings(max_examples=40, deadline=None)


# ---- trajectory builders -----------------------------------------------------------------------
def rollout(family, task, seed: int, length: int | None = None) -> Trajectory:
    """A real episode of ``family.make_env`` with uniform random actions (cut to ``length``)."""
    rng = np.random.default_rng(seed)
    env = family.make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terms, inputs = [obs], [], [], [], []
    truncated = False
    while True:
        a = rng.uniform(-1, 1, family.action_dim)
        obs, r, term, trunc, info = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(r)
        terms.append(term)
        inputs.append(info["reward_inputs"])
        if term or trunc or (length is not None and len(actions) == length):
            truncated = bool(trunc)
            break
    return Trajectory(
        episode_id=f"{family.name}-{seed}",
        worker_id=0,
        policy_version=0,
        family=family.name,
        task=np.asarray(task, dtype=np.float64),
        obs=np.asarray(observations, dtype=np.float64),
        actions=np.asarray(actions, dtype=np.float64),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminated=np.asarray(terms, dtype=bool),
        truncated=truncated,
        reward_inputs=np.asarray(inputs, dtype=np.float64).reshape(len(actions), -1),
        created_at=0.0,
    )


def rollouts(family, n: int, seed: int, ragged: bool = False) -> list[Trajectory]:
    rng = np.random.default_rng(seed)
    tasks = family.sample_tasks(rng, n)
    lengths = rng.integers(1, family.horizon + 1, n) if ragged else [None] * n
    return [rollout(family, tasks[i], seed * 1000 + i, lengths[i]) for i in range(n)]


def synthetic(family, episode: int, next_obs, actions, task, truncated=True) -> Trajectory:
    """A trajectory with the given post-step observations [T, 2] and actions [T, 2]."""
    next_obs = np.asarray(next_obs, dtype=np.float64)
    T = len(next_obs)
    obs = np.concatenate([np.zeros((1, 2)), next_obs])
    return Trajectory(
        episode_id=f"ep{episode}",
        worker_id=0,
        policy_version=0,
        family=family.name,
        task=np.asarray(task, dtype=np.float64),
        obs=obs,
        actions=np.asarray(actions, dtype=np.float64).reshape(T, 2),
        rewards=np.full(T, 999.0),  # sentinel: shows which rewards were recomputed
        terminated=np.zeros(T, dtype=bool),
        truncated=truncated,
        reward_inputs=np.zeros((T, 0)),
        created_at=0.0,
    )


def tagged(episode: int, length: int) -> Trajectory:
    """test_goal trajectory whose observation at step t is (episode, t): the goal achieved
    by step t (post-step) is (episode, t + 1); its stored task (-1 - episode, -1) differs
    from every achievable goal."""
    obs = np.stack([np.full(length + 1, episode), np.arange(length + 1)], axis=1).astype(float)
    traj = synthetic(GOAL, episode, obs[1:], np.zeros((length, 2)), [-1.0 - episode, -1.0])
    return dataclasses.replace(traj, obs=obs)


# ---- discounted returns: fast paths == naive ---------------------------------------------------
class NonLinearView(TestLinear):
    """test_linear rewards without the linear flag: forces the generic segment-sum path."""

    __test__ = False
    linear = False


@pytest.mark.parametrize("family", [LINEAR, GOAL, NonLinearView()], ids=["linear", "goal", "linear-as-generic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discounted_returns_fast_equals_naive(family, seed):
    trajs = rollouts(family, 6, seed, ragged=True)
    tasks = family.sample_tasks(np.random.default_rng(seed + 100), 7)
    naive = K.discounted_returns_naive(family, trajs, tasks, family.discount)
    fast = K.discounted_returns(family, trajs, tasks, family.discount)
    assert fast.shape == (6, 7)
    np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)
    # chunked evaluation (a chunk per trajectory or two) gives the same numbers
    chunked = K.discounted_returns(family, trajs, tasks, family.discount, max_elements=15)
    np.testing.assert_allclose(chunked, naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", [LINEAR, GOAL], ids=["linear", "goal"])
def test_discounted_returns_per_trajectory_equals_naive(family):
    trajs = rollouts(family, 5, 3, ragged=True)
    tasks = family.sample_tasks(np.random.default_rng(7), 5 * 4).reshape(5, 4, -1)
    naive = np.concatenate(
        [K.discounted_returns_naive(family, [t], tasks[i], 0.8) for i, t in enumerate(trajs)]
    )
    for max_elements in (K.DEFAULT_MAX_ELEMENTS, 9):
        fast = K.discounted_returns_per_trajectory(family, trajs, tasks, 0.8, max_elements)
        np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", family_names())
def test_discounted_returns_fast_equals_naive_on_every_family(name):
    # random steps of each registered family's widths: checks each family's linear
    # features / task_weights against its reward_fn, and the generic path otherwise
    family = get_family(name)
    rng = np.random.default_rng(0)
    trajs = []
    for i, T in enumerate([1, 7, 3]):
        obs = rng.normal(size=(T + 1, family.obs_dim))
        traj = synthetic(GOAL, i, np.zeros((T, 2)), np.zeros((T, 2)), [0.0, 0.0])
        trajs.append(dataclasses.replace(
            traj, family=name, obs=obs, actions=rng.uniform(-1, 1, (T, family.action_dim)),
            reward_inputs=rng.normal(size=(T, family.reward_input_dim)),
        ))
    tasks = family.sample_tasks(rng, 5)
    naive = K.discounted_returns_naive(family, trajs, tasks, family.discount)
    np.testing.assert_allclose(K.discounted_returns(family, trajs, tasks, family.discount), naive, rtol=1e-10, atol=1e-10)
    per = K.discounted_returns_per_trajectory(family, trajs, np.broadcast_to(tasks, (3,) + tasks.shape), family.discount)
    np.testing.assert_allclose(per, naive, rtol=1e-10, atol=1e-10)


def test_feature_sum_cache_is_a_pure_memo():
    trajs = rollouts(LINEAR, 30, 8, ragged=True)
    cache = K.FeatureSumCache(capacity=12)
    tasks = LINEAR.sample_tasks(np.random.default_rng(0), 6)
    for lo in range(0, 20, 4):  # a sliding window, as the relabel worker's reference set
        window = trajs[lo : lo + 10]
        np.testing.assert_allclose(
            K.discounted_returns(LINEAR, window, tasks, 0.9, cache=cache),
            K.discounted_returns_naive(LINEAR, window, tasks, 0.9),
            rtol=1e-12, atol=1e-12,
        )
        assert len(cache) <= 12
    assert cache.hits == 4 * 6 and cache.misses == 10 + 4 * 4
    # another discount is another entry; another family object empties the cache
    K.discounted_returns(LINEAR, trajs[:2], tasks, 0.5, cache=cache)
    assert cache.misses == 10 + 4 * 4 + 2
    K.discounted_returns(TestLinear(), trajs[:2], tasks, 0.5, cache=cache)
    assert len(cache) == 2


def test_air_with_cache_equals_without():
    trajs = rollouts(LINEAR, 40, 9, ragged=True)
    cached = make_strategy("air", StrategyConfig(num_candidates=12))
    for lo in range(0, 30, 3):
        request = RelabelRequest(LINEAR, trajs[lo : lo + 3], discount=0.9, reference=trajs[max(0, lo - 10) : lo + 3])
        a = cached(request, np.random.default_rng(lo))
        b = STRATEGIES["air"](request, np.random.default_rng(lo), StrategyConfig(num_candidates=12))
        np.testing.assert_array_equal(a.stats["chosen_index"], b.stats["chosen_index"])
        np.testing.assert_array_equal(a.stats["chosen_percentile"], b.stats["chosen_percentile"])


def test_steps_kept_between_calls_give_the_same_returns():
    # a non-linear family: the cache keeps the last call's trajectories laid end to end; a
    # sliding window (oldest leave, newest join) reuses the kept ones' steps, anything else
    # lays them out again; the returns are those of a fresh concatenation, bit for bit
    trajs = rollouts(GOAL, 30, 9, ragged=True)
    tasks = GOAL.sample_tasks(np.random.default_rng(0), 7)
    cache = K.FeatureSumCache()
    windows = [(0, 10), (3, 14), (3, 14), (8, 20), (8, 12), (25, 30), (0, 30), (1, 5)]
    for lo, hi in windows:
        got = K.discounted_returns(GOAL, trajs[lo:hi], tasks, 0.9, cache=cache)
        np.testing.assert_array_equal(got, K.discounted_returns(GOAL, trajs[lo:hi], tasks, 0.9))
        steps, lengths, weights = cache.laid_out(GOAL, trajs[lo:hi], 0.9)
        expect = concat_steps(trajs[lo:hi])
        for a, b in zip(steps, expect):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(lengths, [t.length for t in trajs[lo:hi]])
        np.testing.assert_array_equal(weights, K.discount_weights(lengths, 0.9))
    # trajectories reused, per window (the returns' call, then laid_out's on the same list):
    # 0+10, 7+11, 11+11, 6+12, then (8, 12) after (8, 20) 0+4 (a kept run must end the last
    # list), (25, 30) 0+5, (0, 30) 0+30, (1, 5) 0+4
    assert cache.steps_reused == 111
    before = cache.steps_reused
    K.discounted_returns(GOAL, trajs[2:6], tasks, 0.8, cache=cache)  # another discount: laid out again
    assert cache.steps_reused == before


def test_discounted_returns_recover_recorded_rewards():
    # under its own task, R with gamma = 1 is the sum of the rewards the env gave
    trajs = rollouts(GOAL, 4, 5)
    own = np.stack([t.task for t in trajs])
    R = K.discounted_returns(GOAL, trajs, own, 1.0)
    np.testing.assert_allclose(np.diag(R), [t.rewards.sum() for t in trajs], rtol=1e-12)


def test_segment_sum_handles_empty_segments():
    x = np.arange(6.0)[:, None]
    np.testing.assert_array_equal(K.segment_sums(x, np.array([0, 2, 0, 4, 0]))[:, 0], [0, 1, 0, 14, 0])


# ---- AIR kernels ----------------------------------------------------------------------------------
def percentiles_loop(R_new, R_ref):
    M, Kc = R_new.shape
    out = np.zeros((M, Kc))
    for m in range(M):
        for k in range(Kc):
            out[m, k] = sum(R_new[m, k] >= R_ref[i, k] for i in range(len(R_ref))) / len(R_ref)
    return out


def select_loop(P, A, m):
    out = []
    for row_p, row_a in zip(P, A):
        keys = sorted(range(len(row_p)), key=lambda k: (-row_p[k], -row_a[k], k))
        out.append(keys[:m])
    return np.array(out)


int_matrix = lambda rows, cols: st.lists(  # noqa: E731  (small integers force ties)
    st.lists(st.integers(-3, 3), min_size=cols, max_size=cols), min_size=rows, max_size=rows
)


@FAST
@given(st.data(), st.integers(1, 6), st.integers(1, 8), st.integers(1, 5))
def test_air_percentiles_equal_loop(data, M, N, Kc):
    R_new = np.array(data.draw(int_matrix(M, Kc)), dtype=float)
    R_ref = np.array(data.draw(int_matrix(N, Kc)), dtype=float)
    np.testing.assert_array_equal(K.air_percentiles(R_new, R_ref), percentiles_loop(R_new, R_ref))


@FAST
@given(st.data(), st.integers(1, 5), st.integers(1, 6))
def test_air_select_equals_loop(data, M, Kc):
    P = np.array(data.draw(int_matrix(M, Kc)), dtype=float) / 3
    A = np.array(data.draw(int_matrix(M, Kc)), dtype=float)
    m = data.draw(st.integers(1, Kc))
    np.testing.assert_array_equal(K.air_select(P, A, m), select_loop(P, A, m))
    np.testing.assert_array_equal(K.air_select(P, A, 1), select_loop(P, A, 1))  # (m = 1: its own path)
    # AIR needs advantages only where percentiles tie: whatever the candidates outside
    # air_ties_to_break get (here huge ones), air_select chooses as with the true ones
    for k in {1, m}:
        need = K.air_ties_to_break(P, k)
        decoy = np.where(need, A, 1e9)
        np.testing.assert_array_equal(K.air_select(P, decoy, k), select_loop(P, A, k))
        if k == 1:  # only rows whose best percentile is shared need any
            top = P == P.max(axis=1, keepdims=True)
            np.testing.assert_array_equal(need.any(axis=1), top.sum(axis=1) > 1)


def test_air_evaluates_values_only_for_tied_candidates():
    # test_linear rollouts with a small reference set, so some trajectories tie at their best
    # percentile: a counting value_fn sees exactly the tied pairs (some, not all), and the
    # decisions are those of V on every pair (test_air_equals_naive's definition)
    family = LINEAR
    reference = rollouts(family, 12, 11, ragged=True)
    new = reference[:6]
    seen = []

    def counting(obs0, tasks):
        seen.append(tasks.shape[0] * tasks.shape[1])
        return value_weights(family)(obs0, tasks)

    cfg = StrategyConfig(num_candidates=10)
    request = RelabelRequest(family, new, discount=family.discount, reference=reference, value_fn=counting)
    result = make_strategy("air", cfg)(request, np.random.default_rng(3))
    everywhere = RelabelRequest(family, new, discount=family.discount, reference=reference,
                                value_fn=value_weights(family))
    rng = np.random.default_rng(3)  # the same candidates, V from every pair by hand
    own = np.stack([t.task for t in new])
    cands = np.concatenate([family.sample_tasks(rng, 10 - len(new)), own])
    R_ref = K.discounted_returns(family, reference, cands, family.discount)
    R_new = K.discounted_returns(family, new, cands, family.discount)
    P = K.air_percentiles(R_new, R_ref)
    V = everywhere.value_fn(np.stack([t.obs[0] for t in new]), np.repeat(cands[None], len(new), 0))
    np.testing.assert_array_equal(result.stats["chosen_index"], K.air_select(P, R_new - V, 1))
    ties = K.air_ties_to_break(P, 1)
    assert 0 < sum(seen) == result.stats["value_evaluations"] == ties.sum() < len(new) * 10


def test_air_select_takes_one_with_infinite_advantages_as_the_sort_does():
    # m = 1 takes an argmax among the top-percentile ties when every advantage is finite;
    # otherwise the sort, where +inf leads and -inf trails as any other value would
    P = np.array([[1.0, 1.0, 0.5, 1.0], [0.5, 1.0, 1.0, 0.0]])
    A = np.array([[0.0, np.inf, 9.0, 1.0], [5.0, -np.inf, -np.inf, 1.0]])
    np.testing.assert_array_equal(K.air_select(P, A, 1), [[1], [1]])
    np.testing.assert_array_equal(K.air_select(P, A, 1), select_loop(P, A, 1))
    np.testing.assert_array_equal(K.air_select(P, np.full_like(A, 2.0), 1), [[0], [1]])  # ties: lowest index


def test_air_percentiles_large_random():
    rng = np.random.default_rng(0)
    R_ref = rng.normal(size=(50, 20)).round(1)
    R_new = np.concatenate([R_ref[:5], rng.normal(size=(5, 20)).round(1)])
    np.testing.assert_array_equal(K.air_percentiles(R_new, R_ref), percentiles_loop(R_new, R_ref))


@pytest.mark.parametrize("M", [K.AIR_SORTED_QUERIES_MIN - 1, K.AIR_SORTED_QUERIES_MIN, 100])
def test_air_percentiles_by_search_equal_the_count(M):
    # past AIR_DIRECT_COUNT_MAX comparisons the counts come from sorted columns (and from
    # AIR_SORTED_QUERIES_MIN new rows on, sorted queries); rounded values force ties, and
    # some new returns equal reference ones exactly
    rng = np.random.default_rng(M)
    N, Kc = 400, 60
    assert M * N * Kc > K.AIR_DIRECT_COUNT_MAX
    R_ref = rng.normal(size=(N, Kc)).round(1)
    R_new = np.concatenate([R_ref[:10], rng.normal(size=(M - 10, Kc)).round(1)])
    expect = np.count_nonzero(R_ref[None, :, :] <= R_new[:, None, :], axis=1) / N
    np.testing.assert_array_equal(K.air_percentiles(R_new, R_ref), expect)


# Three trajectories and three tasks, worked out by hand. Each trajectory has one step, so
# R[m, k] = w_k . phi_m with w_0, w_1, w_2 the unit vectors (the batch's own tasks):
#   tau0: x'=(1, 0), a=(0, 0) -> phi = (1, 0,  0)
#   tau1: x'=(0, 1), a=(0, 0) -> phi = (0, 1,  0)
#   tau2: x'=(1, 1), a=(1, 0) -> phi = (1, 1, -1)
#   R = [[1, 0, 0], [0, 1, 0], [1, 1, -1]]
# Reference = the three (N = 3). P[m, k] = #{i : R[m, k] >= R[i, k]} / 3:
#   column 0 (1, 0, 1): 3/3, 1/3, 3/3   column 1 (0, 1, 1): 1/3, 3/3, 3/3
#   column 2 (0, 0, -1): 3/3, 3/3, 1/3
#   P = [[1, 1/3, 1], [1/3, 1, 1], [1, 1, 1/3]]
# "V = 0": ties break by return. tau0: k=0 (R 1) beats k=2 (R 0) -> 0. tau1: k=1 (R 1)
#   beats k=2 (R 0) -> 1. tau2: k=0 and k=1 tie in percentile AND return -> lowest index 0.
# "V = 2 w[0]": V[m] = (2, 0, 0), A = R - V. tau0: A = (-1, 0, 0), candidates {0, 2} -> 2.
#   tau1: A = (-2, 1, 0), candidates {1, 2} -> 1. tau2: A = (-1, 1, -1), {0, 1} -> 1.
# "reference + tau3": tau3 has x'=(2, 0), a=0, phi=(2, 0, 0) and only sits in the reference
#   (N = 4). column 0 (1, 0, 1, 2): 3/4, 1/4, 3/4; column 1 (0, 1, 1, 0): 2/4, 4/4, 4/4;
#   column 2 (0, 0, -1, 0): 4/4, 4/4, 1/4. tau0 now peaks only at k=2 -> 2; tau1: k=1 and
#   k=2 at 1, R 1 vs 0 -> 1; tau2: k=1 alone at 1 -> 1.
W = np.eye(3)
HAND = [
    synthetic(LINEAR, 0, [[1, 0]], [[0, 0]], W[0]),
    synthetic(LINEAR, 1, [[0, 1]], [[0, 0]], W[1]),
    synthetic(LINEAR, 2, [[1, 1]], [[1, 0]], W[2]),
]
TAU3 = synthetic(LINEAR, 3, [[2, 0]], [[0, 0]], W[0])
AIR_TABLE = [
    # id, reference, value weights c (V(s0, w) = w . c), chosen, chosen percentiles
    ("V=0-ties-by-return", HAND, None, [0, 1, 0], [1, 1, 1]),
    ("V=2w0-ties-by-advantage", HAND, [2, 0, 0], [2, 1, 1], [1, 1, 1]),
    ("reference-adds-tau3", HAND + [TAU3], None, [2, 1, 1], [1, 1, 1]),
    # a trajectory listed twice in the reference set counts once (same answer as row 1)
    ("duplicated-reference-counts-once", HAND + HAND, None, [0, 1, 0], [1, 1, 1]),
]


def test_hand_returns_and_percentiles():
    R = K.discounted_returns(LINEAR, HAND, W, 0.9)
    np.testing.assert_array_equal(R, [[1, 0, 0], [0, 1, 0], [1, 1, -1]])
    np.testing.assert_allclose(
        K.air_percentiles(R, R), [[1, 1 / 3, 1], [1 / 3, 1, 1], [1, 1, 1 / 3]], rtol=1e-15
    )


@pytest.mark.parametrize("reference,c,chosen,pct", [r[1:] for r in AIR_TABLE], ids=[r[0] for r in AIR_TABLE])
def test_air_hand_table(reference, c, chosen, pct):
    value_fn = None if c is None else (lambda obs0, tasks: tasks @ np.asarray(c, dtype=float))
    request = RelabelRequest(LINEAR, HAND, discount=0.9, reference=reference, value_fn=value_fn)
    # K = 3 = M: the candidates are exactly the batch's own tasks (no prior samples)
    result = make_strategy("air", StrategyConfig(num_candidates=3))(request, np.random.default_rng(0))
    np.testing.assert_array_equal(result.stats["chosen_index"][:, 0], chosen)
    np.testing.assert_array_equal(result.stats["chosen_percentile"][:, 0], pct)
    assert [i for i, _ in result.copies] == [0, 1, 2] and result.keep_original
    for (i, step_tasks), k in zip(result.copies, chosen):
        np.testing.assert_array_equal(step_tasks, W[k][None])
    assert result.stats["relabeled_fraction"] == pytest.approx(np.mean(np.array(chosen) != [0, 1, 2]))


# ---- Advantage / max-reward kernels -----------------------------------------------------------------
# Hand table (R as above, V = 2 w[0] so V = (2, 0, 0) per row): A = R - V =
#   [[-1, 0, 0], [-2, 1, 0], [-1, 1, -1]] -> top-1 = [1, 1, 1] (tau0: k=1 and k=2 tie at 0
#   -> lower index 1); max-reward argmax R = [0, 1, 0] (tau2 ties k=0, k=1 -> 0).
def test_advantage_and_max_reward_hand_table():
    R = np.array([[1, 0, 0], [0, 1, 0], [1, 1, -1]], dtype=float)
    V = np.tile([2.0, 0, 0], (3, 1))
    A = K.advantage_scores(R, V)
    np.testing.assert_array_equal(A, [[-1, 0, 0], [-2, 1, 0], [-1, 1, -1]])
    np.testing.assert_array_equal(K.top_m(A, 1)[:, 0], [1, 1, 1])
    np.testing.assert_array_equal(K.top_m(A, 2), [[1, 2], [1, 2], [1, 0]])
    np.testing.assert_array_equal(K.max_reward_select(R), [0, 1, 0])


@FAST
@given(st.data(), st.integers(1, 5), st.integers(1, 6))
def test_top_m_equals_loop(data, M, Kc):
    S = np.array(data.draw(int_matrix(M, Kc)), dtype=float)
    m = data.draw(st.integers(1, Kc))
    expect = [sorted(range(Kc), key=lambda k: (-row[k], k))[:m] for row in S]
    np.testing.assert_array_equal(K.top_m(S, m), expect)
    np.testing.assert_array_equal(K.max_reward_select(S), [e[0] for e in expect])


# ---- HIPI kernel --------------------------------------------------------------------------------------
def hipi_loop(R, temperature, partition):
    B, J = R.shape
    logits = [[R[i][j] / temperature for j in range(J)] for i in range(B)]
    if partition:
        for j in range(J):
            log_z = math.log(sum(math.exp(logits[i][j]) for i in range(B)) / B)
            for i in range(B):
                logits[i][j] -= log_z
    out = np.zeros((B, J))
    for i in range(B):
        norm = math.log(sum(math.exp(x) for x in logits[i]))
        out[i] = [x - norm for x in logits[i]]
    return out


# Hand table: R = log A, A = [[1, 2, 1], [1, 2, 3], [2, 4, 4]] (column sums 4, 8, 8).
#   Without partition, q(j|i) = A_ij / sum_j A_ij:
#     [1, 2, 1]/4 = [.25, .5, .25]; [1, 2, 3]/6; [2, 4, 4]/10 = [.2, .4, .4].
#   With partition, Z_j ∝ column sum, q(j|i) ∝ A_ij / colsum_j:
#     row 0: [1/4, 2/8, 1/8] -> [2/5, 2/5, 1/5]; row 1: [1/4, 2/8, 3/8] -> [2/7, 2/7, 3/7];
#     row 2: [2/4, 4/8, 4/8] -> [1/3, 1/3, 1/3].
HIPI_A = np.array([[1, 2, 1], [1, 2, 3], [2, 4, 4]], dtype=float)
HIPI_TABLE = [
    ("no-partition", False, [[1 / 4, 1 / 2, 1 / 4], [1 / 6, 2 / 6, 3 / 6], [1 / 5, 2 / 5, 2 / 5]]),
    ("partition", True, [[2 / 5, 2 / 5, 1 / 5], [2 / 7, 2 / 7, 3 / 7], [1 / 3, 1 / 3, 1 / 3]]),
]


@pytest.mark.parametrize("partition,q", [r[1:] for r in HIPI_TABLE], ids=[r[0] for r in HIPI_TABLE])
def test_hipi_hand_table(partition, q):
    np.testing.assert_allclose(np.exp(K.hipi_log_probs(np.log(HIPI_A), 1.0, partition)), q, rtol=1e-12)


@FAST
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 6), st.sampled_from([0.3, 1.0, 4.0]), st.booleans())
def test_hipi_log_probs_equal_loop_and_sum_to_one(seed, B, J, temperature, partition):
    R = np.random.default_rng(seed).normal(scale=5.0, size=(B, J))
    log_q = K.hipi_log_probs(R, temperature, partition)
    np.testing.assert_allclose(log_q, hipi_loop(R, temperature, partition), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.exp(log_q).sum(axis=1), 1.0, rtol=1e-12)
    # the torch version (used by the learner) is the same formula
    log_q_t = K.hipi_log_probs(torch.from_numpy(R), temperature, partition)
    np.testing.assert_allclose(log_q_t.numpy(), log_q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("column", [0, 2])
def test_constant_on_one_task_leaves_hipi_unchanged_but_moves_max_reward(column):
    # Adding c to every return under task j (e.g. a reward bias, HIPI Fig. 7b) is absorbed
    # by log Z_j; without the partition function and in max-reward relabeling it pulls
    # everything to task j.
    R = np.log(HIPI_A)
    shifted = R.copy()
    shifted[:, column] += 10.0
    np.testing.assert_allclose(K.hipi_log_probs(shifted), K.hipi_log_probs(R), atol=1e-12)
    assert not np.allclose(K.hipi_log_probs(shifted, partition=False), K.hipi_log_probs(R, partition=False))
    assert list(K.max_reward_select(R)) != [column] * 3
    assert list(K.max_reward_select(shifted)) == [column] * 3


def test_sample_categorical_frequencies():
    q = np.array([[0.1, 0.6, 0.3], [0.5, 0.0, 0.5]])
    with np.errstate(divide="ignore"):
        log_q = np.log(q)
    draws = np.stack([K.sample_categorical(log_q, np.random.default_rng(s)) for s in range(4000)])
    for row in range(2):
        freq = np.bincount(draws[:, row], minlength=3) / len(draws)
        np.testing.assert_allclose(freq, q[row], atol=0.03)
    assert not np.any(draws[:, 1] == 1)  # probability 0 (log -inf) is never drawn


# ---- HER ---------------------------------------------------------------------------------------------
@FAST
@given(
    st.lists(st.integers(1, 12), min_size=1, max_size=6),
    st.integers(0, 2**31),
    st.integers(1, 5),
    st.one_of(st.none(), st.integers(1, 4)),
)
def test_her_future_indices_same_episode_later_or_equal(lengths, seed, k, window):
    lengths = np.array(lengths)
    ends = np.cumsum(lengths)
    steps = np.arange(ends[-1])
    idx = K.her_future_goal_indices(lengths, steps, np.random.default_rng(seed), k, window)
    assert idx.shape == (k, len(steps))
    episode = np.searchsorted(ends, steps, side="right")
    assert np.all(idx >= steps)
    assert np.all(np.searchsorted(ends, idx, side="right") == episode)
    if window is not None:
        assert np.all(idx <= steps + window - 1)
    np.testing.assert_array_equal(K.her_final_goal_indices(lengths, steps), ends[episode] - 1)


def her_request(lengths):
    trajs = [tagged(e, n) for e, n in enumerate(lengths)]
    return trajs, RelabelRequest(GOAL, trajs, discount=0.9)


@FAST
@given(
    st.lists(st.integers(1, 10), min_size=1, max_size=5),
    st.integers(0, 2**31),
    st.sampled_from(["her_final", "her_future"]),
    st.sampled_from([0.0, 0.5, 1.0]),
    st.one_of(st.none(), st.integers(1, 3)),
)
def test_her_goals_come_from_own_trajectory(lengths, seed, name, ratio, window):
    trajs, request = her_request(lengths)
    cfg = StrategyConfig(her_k=3, her_relabel_ratio=ratio, her_future_window=window)
    result = make_strategy(name, cfg)(request, np.random.default_rng(seed))
    assert len(result.copies) == len(trajs) * (1 if name == "her_final" else 3)
    for i, step_tasks in result.copies:
        T = trajs[i].length
        assert step_tasks.shape == (T, 2)
        stored = np.all(step_tasks == trajs[i].task, axis=1)
        if ratio == 0.0:
            assert stored.all()  # ratio 0 returns the stored tasks
        if ratio == 1.0:
            assert not stored.any()
        for t in np.flatnonzero(~stored):
            episode, reached = step_tasks[t]  # goal (e, j + 1) was achieved by step j
            assert episode == i
            if name == "her_final":
                assert reached == T
            else:
                assert t + 1 <= reached <= T
                if window is not None:
                    assert reached <= t + window


def test_her_needs_goal_family():
    request = RelabelRequest(LINEAR, HAND, discount=0.9)
    with pytest.raises(TypeError, match="test_linear"):
        STRATEGIES["her_future"](request, np.random.default_rng(0))


def test_her_final_goals_kernel():
    trajs = [tagged(0, 3), tagged(1, 5)]
    np.testing.assert_array_equal(K.her_final_goals(GOAL, trajs), [[0, 3], [1, 5]])


# ---- strategies end to end vs naive re-implementations -----------------------------------------------
def value_weights(family):
    c = np.linspace(-1.0, 1.0, family.task_dim)
    return lambda obs0, tasks: (tasks @ c) + obs0[:, :1] * 0.5


@pytest.mark.parametrize("family", [LINEAR, GOAL], ids=["linear", "goal"])
@pytest.mark.parametrize("with_values", [False, True], ids=["V=0", "V"])
def test_air_equals_naive(family, with_values):
    reference = rollouts(family, 12, 11, ragged=True)
    new = reference[:4]  # the caller's reference set includes the new trajectories
    value_fn = value_weights(family) if with_values else None
    cfg = StrategyConfig(num_candidates=10)
    request = RelabelRequest(family, new, discount=family.discount, reference=reference, value_fn=value_fn)
    result = make_strategy("air", cfg)(request, np.random.default_rng(3))

    # naive: draw the same candidates, then the definition pair by pair
    rng = np.random.default_rng(3)
    own = np.stack([t.task for t in new])
    cands = np.concatenate([family.sample_tasks(rng, 10 - len(new)), own])
    R_ref = K.discounted_returns_naive(family, reference, cands, family.discount)
    expect = []
    for m, traj in enumerate(new):
        R = K.discounted_returns_naive(family, [traj], cands, family.discount)[0]
        V = value_fn(traj.obs[:1], cands[None])[0] if value_fn else np.zeros(len(cands))
        best = max(
            range(len(cands)),
            key=lambda k: (np.sum(R[k] >= R_ref[:, k]) / len(reference), R[k] - V[k], -k),
        )
        expect.append(best)
    np.testing.assert_array_equal(result.stats["chosen_index"][:, 0], expect)
    for (i, step_tasks), k in zip(result.copies, expect):
        np.testing.assert_array_equal(step_tasks, np.repeat(cands[k][None], new[i].length, 0))


@pytest.mark.parametrize("candidates", ["fresh", "pool"])
@pytest.mark.parametrize("family", [LINEAR, GOAL], ids=["linear", "goal"])
def test_air_with_more_new_trajectories_than_candidates_decides_k_at_a_time(family, candidates):
    # K = 4 candidates, M = 10 new trajectories: GH's "K - M prior samples plus the M own
    # tasks" would give 10 candidates; the request is decided as the requests of 4, 4 and 2
    # (same reference set, one rng carried along), each with 4 candidates
    reference = rollouts(family, 14, 11, ragged=True)
    new = reference[2:12]
    cfg = StrategyConfig(num_candidates=4, air_candidates=candidates)
    whole = make_strategy("air", cfg)(RelabelRequest(family, new, discount=family.discount, reference=reference),
                                      np.random.default_rng(5))
    rng, strategy = np.random.default_rng(5), make_strategy("air", cfg)
    parts = [strategy(RelabelRequest(family, new[i:j], discount=family.discount, reference=reference), rng)
             for i, j in ((0, 4), (4, 8), (8, 10))]
    assert whole.stats["num_candidates"] == 4.0 and whole.stats["chunks"] == 3.0
    assert all(p.stats["num_candidates"] == 4.0 for p in parts)
    np.testing.assert_array_equal(whole.stats["chosen_index"],
                                  np.concatenate([p.stats["chosen_index"] for p in parts]))
    assert whole.stats["chosen_index"].shape == (10, 1) and whole.stats["chosen_index"].max() <= 3
    expected = [(i + off, t) for p, off in zip(parts, (0, 4, 8)) for i, t in p.copies]
    assert [i for i, _ in whole.copies] == [i for i, _ in expected] == list(range(10))
    for (_, a), (_, b) in zip(whole.copies, expected):
        np.testing.assert_array_equal(a, b)
    fractions = [p.stats["relabeled_fraction"] for p in parts]
    assert whole.stats["relabeled_fraction"] == pytest.approx((4 * fractions[0] + 4 * fractions[1] + 2 * fractions[2]) / 10)
    # the transitions of the chunked request: the originals, then one copy per trajectory
    batch = to_transitions(family, new, whole)
    assert len(batch) == 2 * sum(t.length for t in new)


@pytest.mark.parametrize("name", ["advantage", "max_reward"])
@pytest.mark.parametrize("family", [LINEAR, GOAL], ids=["linear", "goal"])
def test_per_trajectory_strategies_equal_naive(name, family):
    new = rollouts(family, 5, 21, ragged=True)
    value_fn = value_weights(family)
    request = RelabelRequest(family, new, discount=family.discount, value_fn=value_fn)
    result = make_strategy(name, StrategyConfig(num_candidates=8))(request, np.random.default_rng(4))

    rng = np.random.default_rng(4)
    fresh = family.sample_tasks(rng, 5 * 7).reshape(5, 7, -1)
    expect_copies = []
    for m, traj in enumerate(new):
        cands = np.concatenate([fresh[m], traj.task[None]])
        R = K.discounted_returns_naive(family, [traj], cands, family.discount)[0]
        score = R - value_fn(traj.obs[:1], cands[None])[0] if name == "advantage" else R
        best = max(range(8), key=lambda k: (score[k], -k))
        assert result.stats["chosen_index"][m, 0] == best
        if best != 7:  # choosing the original adds no copy (GH stores it once)
            expect_copies.append((m, cands[best]))
    assert [i for i, _ in result.copies] == [i for i, _ in expect_copies]
    for (_, step_tasks), (_, task) in zip(result.copies, expect_copies):
        assert np.all(step_tasks == task)


def test_advantage_requires_value_fn():
    with pytest.raises(ValueError, match="advantage"):
        STRATEGIES["advantage"](RelabelRequest(LINEAR, HAND, discount=0.9), np.random.default_rng(0))


@pytest.mark.parametrize("partition", [True, False])
@pytest.mark.parametrize("discounted", [False, True])
def test_hipi_strategy_uses_eq7_distribution(partition, discounted):
    new = rollouts(GOAL, 6, 31)
    cfg = StrategyConfig(partition=partition, temperature=0.5, hipi_discounted=discounted)
    result = make_strategy("hipi", cfg)(RelabelRequest(GOAL, new, discount=0.9), np.random.default_rng(5))
    own = np.stack([t.task for t in new])
    R = K.discounted_returns_naive(GOAL, new, own, 0.9 if discounted else 1.0)
    q = np.exp(hipi_loop(R, 0.5, partition))
    chosen = result.stats["chosen_index"]
    np.testing.assert_allclose(result.stats["chosen_probability"], q[np.arange(6), chosen], rtol=1e-9)
    assert [i for i, _ in result.copies] == list(range(6)) and result.keep_original
    for i, step_tasks in result.copies:
        assert np.all(step_tasks == own[chosen[i]])


def test_hipi_strategy_samples_follow_q():
    new = rollouts(GOAL, 3, 41)
    strategy = make_strategy("hipi", StrategyConfig(temperature=0.3))
    request = RelabelRequest(GOAL, new, discount=0.9)
    draws = np.stack([strategy(request, np.random.default_rng(s)).stats["chosen_index"] for s in range(3000)])
    R = K.discounted_returns_naive(GOAL, new, np.stack([t.task for t in new]), 1.0)
    q = np.exp(hipi_loop(R, 0.3, True))
    for i in range(3):
        np.testing.assert_allclose(np.bincount(draws[:, i], minlength=3) / 3000, q[i], atol=0.035)


def test_random_and_none():
    new = rollouts(LINEAR, 3, 51)
    request = RelabelRequest(LINEAR, new, discount=0.9)
    assert STRATEGIES["none"](request, np.random.default_rng(0)).copies == []
    result = STRATEGIES["random"](request, np.random.default_rng(0))
    expect = LINEAR.sample_tasks(np.random.default_rng(0), 3)
    assert result.keep_original and [i for i, _ in result.copies] == [0, 1, 2]
    for i, step_tasks in result.copies:
        np.testing.assert_array_equal(step_tasks, np.repeat(expect[i][None], new[i].length, 0))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_same_seed_twice_is_identical_and_empty_request_is_fine(name):
    family = GOAL if name.startswith("her") else LINEAR
    new = rollouts(family, 4, 61)
    request = RelabelRequest(family, new, discount=0.9, reference=new, value_fn=value_weights(family))
    a = STRATEGIES[name](request, np.random.default_rng(9))
    b = STRATEGIES[name](request, np.random.default_rng(9))
    assert [i for i, _ in a.copies] == [i for i, _ in b.copies]
    for (_, x), (_, y) in zip(a.copies, b.copies):
        np.testing.assert_array_equal(x, y)
    empty = STRATEGIES[name](RelabelRequest(family, [], discount=0.9, value_fn=value_weights(family)),
                             np.random.default_rng(0))
    assert empty.copies == []
    assert len(to_transitions(family, [], empty)) == 0


def test_registry_names_nearest_on_typo():
    assert strategy_names() == sorted(STRATEGIES)
    with pytest.raises(UnknownStrategyError, match="'air'"):
        get_strategy("airr")
    with pytest.raises(KeyError):
        make_strategy("her-future")


# ---- transitions ----------------------------------------------------------------------------------------
class TimeoutGoal(TestGoal):
    __test__ = False
    timeout_is_terminal = True


class ReachGoal(TestGoal):
    """Ends when the post-step position is within 0.5 of the goal (task-dependent)."""

    __test__ = False
    task_dependent_termination = True

    def terminal_fn(self, steps, tasks):
        return np.linalg.norm(steps.next_obs - tasks, axis=-1) < 0.5


@pytest.mark.parametrize("family", [GOAL, TimeoutGoal(), ReachGoal()], ids=["goal", "timeout-terminal", "reach-terminal"])
@pytest.mark.parametrize("name", ["her_future", "random", "none"])
def test_to_transitions_recomputes_copies(family, name):
    trajs = [dataclasses.replace(tagged(e, n), truncated=bool(e % 2)) for e, n in enumerate([3, 5, 2])]
    trajs = [dataclasses.replace(t, obs=t.obs / 10.0) for t in trajs]  # positions in the unit box
    result = STRATEGIES[name](RelabelRequest(family, trajs, discount=0.9), np.random.default_rng(0))
    batch = to_transitions(family, trajs, result)
    n_orig = sum(t.length for t in trajs) if result.keep_original else 0
    assert len(batch) == n_orig + sum(len(st_) for _, st_ in result.copies)
    assert all(x.dtype == np.float32 for x in batch)
    # originals keep the recorded (sentinel) rewards and their stored task
    assert np.all(batch.reward[:n_orig] == 999.0)
    copies = [trajs[i] for i, _ in result.copies]
    if copies:
        steps = concat_steps(copies)
        tasks = np.concatenate([t for _, t in result.copies])
        np.testing.assert_allclose(batch.reward[n_orig:], family.rewards_for(steps, tasks), rtol=1e-6)
        np.testing.assert_array_equal(batch.task[n_orig:], tasks.astype(np.float32))
        np.testing.assert_array_equal(batch.obs[n_orig:], steps.obs.astype(np.float32))
        expect_term = family.terminals_for(steps, tasks).copy()
        if family.timeout_is_terminal:
            ends = np.cumsum([t.length for t in copies]) - 1
            expect_term[ends] |= np.array([t.truncated for t in copies])
        np.testing.assert_array_equal(batch.terminated[n_orig:], expect_term.astype(np.float32))
    orig_term = batch.terminated[:n_orig]
    if n_orig and family.timeout_is_terminal:
        assert orig_term.sum() == sum(t.truncated for t in trajs)  # the last step of truncated ones
    elif n_orig:
        assert orig_term.sum() == 0


def test_to_transitions_rejects_wrong_step_tasks():
    traj = tagged(0, 3)
    with pytest.raises(ValueError, match="step_tasks"):
        to_transitions(GOAL, [traj], RelabelResult(copies=[(0, np.zeros((2, 2)))]))


def test_to_transitions_carries_reward_inputs():
    """Originals and copies keep their steps' reward inputs (HIPI-RL re-rewards them in the
    learner); copies' rewards are computed from them."""
    fam = get_family("half_cheetah_mo")
    rng = np.random.default_rng(0)
    trajs = []
    for e, T in enumerate([3, 4]):
        ri = np.arange(T * fam.reward_input_dim, dtype=float).reshape(T, -1) + 100.0 * e  # tagged
        trajs.append(Trajectory(
            episode_id=f"ep{e}", worker_id=0, policy_version=0, family=fam.name,
            task=fam.sample_tasks(rng, 1)[0], obs=rng.normal(size=(T + 1, fam.obs_dim)),
            actions=rng.uniform(-1, 1, size=(T, fam.action_dim)), rewards=np.full(T, 999.0),
            terminated=np.zeros(T, dtype=bool), truncated=True, reward_inputs=ri, created_at=0.0,
        ))
    result = STRATEGIES["random"](RelabelRequest(fam, trajs, discount=0.99), np.random.default_rng(1))
    batch = to_transitions(fam, trajs, result)
    copies = [trajs[i] for i, _ in result.copies]
    expect = np.concatenate([t.reward_inputs for t in trajs + copies]).astype(np.float32)
    assert batch.reward_inputs.shape == (len(batch), fam.reward_input_dim)
    np.testing.assert_array_equal(batch.reward_inputs, expect)
    n_orig = sum(t.length for t in trajs)
    steps = concat_steps(copies)
    tasks = np.concatenate([t for _, t in result.copies])
    np.testing.assert_allclose(batch.reward[n_orig:], fam.rewards_for(steps, tasks), rtol=1e-6)
    assert to_transitions(fam, [], result.__class__(copies=[])).reward_inputs.shape == (0, 3)
