"""Reward bias on task families (HIPI Fig. 8 / ALGORITHMS.md §6 "Fig. 7b").

The bias adds exactly b to the biased tasks' rewards and nothing elsewhere, in every form
of the reward (``rewards``, ``rewards_for``, linear features, the env's per-step reward);
HIPI's relabeling distribution with the partition function is unchanged by it while the
ablation without log Z and max-reward relabeling move to the biased tasks; the bias is
reachable from a config through ``env.family_kwargs``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from envs import FAMILIES, get_family
from envs.bias import BiasedFamily, RewardBias
from envs.core import StepBatch, TaskFamily
from relabel_service.core import Trajectory
from relabel_service.strategies import kernels

B = 2.5
#: fast families (MuJoCo ones are covered by half_cheetah_mo, a few steps only)
FAMILIES_UNDER_TEST = ["test_goal", "test_linear", "point_reacher", "point_trajectory", "half_cheetah_mo"]
MAX_STEPS = 12


def _episode(fam: TaskFamily, task: np.ndarray, seed: int) -> tuple[StepBatch, np.ndarray]:
    """Steps and env rewards of one episode (random actions, at most MAX_STEPS steps)."""
    env = fam.make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(MAX_STEPS, fam.action_dim))
    rec: dict[str, list] = {"obs": [], "act": [], "next": [], "ri": [], "r": []}
    for a in actions:
        next_obs, r, te, tr, info = env.step(a)
        for k, v in zip(rec, (obs, a, next_obs, info["reward_inputs"], r)):
            rec[k].append(np.asarray(v, dtype=np.float64))
        obs = next_obs
        if te or tr:
            break
    steps = StepBatch(*(np.stack(rec[k]) for k in ("obs", "act", "next", "ri")))
    return steps, np.array(rec["r"])


def _tasks_both_sides(fam: TaskFamily, n: int = 8) -> np.ndarray:
    """n prior tasks, the first half with z[0] > 0 and the rest with z[0] <= 0 (if the prior allows)."""
    tasks = fam.sample_tasks(np.random.default_rng(1), 400)
    pos, neg = tasks[tasks[:, 0] > 0], tasks[tasks[:, 0] <= 0]
    if len(neg) == 0:  # a prior on one side only (point_reacher's u >= 0): move the threshold
        return tasks[:n]
    return np.concatenate([pos[: n // 2], neg[: n - n // 2]])


def _threshold(tasks: np.ndarray) -> float:
    return 0.0 if (tasks[:, 0] <= 0).any() else float(np.median(tasks[:, 0]))


# ---- the bias is exactly b on the biased tasks --------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES_UNDER_TEST)
def test_bias_adds_b_to_biased_tasks_only(name):
    base = get_family(name)
    tasks = _tasks_both_sides(base)
    thr = _threshold(tasks)
    fam = get_family(name, reward_bias=B, bias_threshold=thr)
    assert isinstance(fam, BiasedFamily) and fam.name == name
    mask = tasks[:, 0] > thr
    assert mask.any() and (~mask).any()
    np.testing.assert_array_equal(fam.bias_mask(tasks), mask)

    steps, _ = _episode(base, tasks[0], seed=3)
    delta = fam.rewards(steps, tasks) - base.rewards(steps, tasks)  # [B, K]
    np.testing.assert_allclose(delta, np.broadcast_to(B * mask, delta.shape), atol=1e-12)
    own = np.resize(tasks, (len(steps), tasks.shape[1]))  # each step its own task
    delta_for = fam.rewards_for(steps, own) - base.rewards_for(steps, own)
    np.testing.assert_allclose(delta_for, B * (own[:, 0] > thr), atol=1e-12)
    # termination, prior and dims are the base family's
    np.testing.assert_array_equal(fam.terminals(steps, tasks), base.terminals(steps, tasks))
    np.testing.assert_array_equal(fam.sample_tasks(np.random.default_rng(5), 3), base.sample_tasks(np.random.default_rng(5), 3))
    assert fam.describe()["reward_bias"] == B and fam.horizon == base.horizon


@pytest.mark.parametrize("name", FAMILIES_UNDER_TEST)
def test_env_reward_matches_family_reward(name):
    """The biased env's reward = base env's + b (biased task) or + 0, equal to ``rewards_for``."""
    base = get_family(name)
    tasks = _tasks_both_sides(base, 2)
    thr = _threshold(tasks)
    fam = get_family(name, reward_bias=B, bias_threshold=thr)
    for task in tasks:
        steps, r_base = _episode(base, task, seed=7)
        steps_b, r_biased = _episode(fam, task, seed=7)
        np.testing.assert_allclose(steps_b.next_obs, steps.next_obs)  # same dynamics
        np.testing.assert_allclose(r_biased - r_base, B * float(task[0] > thr), atol=1e-9)
        np.testing.assert_allclose(r_biased, fam.rewards_for(steps_b, np.repeat(task[None], len(steps_b), 0)), atol=1e-9)


def test_set_env_task_retasks_the_bias_and_the_env():
    fam = get_family("test_goal", reward_bias=B)
    env = fam.make_env(np.array([0.5, 0.5]), seed=0)
    env.reset(seed=0)
    _, r_in, *_ = env.step(np.zeros(2))
    fam.set_env_task(env, np.array([-0.5, 0.5]))  # leaves the biased half-space
    _, r_out, *_ = env.step(np.zeros(2))
    # at the origin: -||g|| under each goal, + b only for the first
    assert r_in == pytest.approx(-np.hypot(0.5, 0.5) + B)
    assert r_out == pytest.approx(-np.hypot(0.5, 0.5))


def test_linear_family_stays_linear_with_the_bias_as_a_feature():
    base = get_family("test_linear")
    fam = get_family("test_linear", reward_bias=B)
    assert fam.linear and fam.feature_dim == base.feature_dim + 1
    tasks = _tasks_both_sides(base)
    steps, _ = _episode(base, tasks[0], seed=2)
    np.testing.assert_allclose(fam.features(steps) @ fam.task_weights(tasks).T, fam.rewards(steps, tasks), atol=1e-12)
    # AIR's fast path (discounted feature sums) equals the naive returns, bias included
    trajs = [_trajectory(fam, t, seed=i) for i, t in enumerate(tasks[:3])]
    np.testing.assert_allclose(
        kernels.discounted_returns(fam, trajs, tasks, 0.9), kernels.discounted_returns_naive(fam, trajs, tasks, 0.9),
        atol=1e-10,
    )


def test_eval_task_bias_is_one_task():
    fam = get_family("test_goal", reward_bias=B, bias_tasks="eval_task", bias_task_index=2)
    ev = fam.eval_tasks()
    np.testing.assert_array_equal(fam.bias_mask(ev), np.arange(len(ev)) == 2)
    assert fam.bias_mask(ev[2].astype(np.float32)[None])[0]  # a float32 copy still matches
    assert not fam.bias_mask(ev[2][None] + 1e-3)[0]
    steps, _ = _episode(get_family("test_goal"), ev[0], seed=0)
    delta = fam.rewards(steps, ev) - get_family("test_goal").rewards(steps, ev)
    np.testing.assert_allclose(delta, np.broadcast_to(B * (np.arange(len(ev)) == 2), delta.shape), atol=1e-12)


def test_all_tasks_bias_is_a_shift():
    fam = get_family("test_goal", reward_bias=-1.0, bias_tasks="all")
    tasks = fam.sample_tasks(np.random.default_rng(0), 5)
    steps, _ = _episode(fam, tasks[0], seed=0)
    np.testing.assert_allclose(fam.rewards(steps, tasks) - get_family("test_goal").rewards(steps, tasks), -1.0)


def test_no_bias_is_the_plain_family_and_bad_options_are_errors():
    assert type(get_family("test_goal", reward_bias=0.0)) is FAMILIES["test_goal"]
    assert type(get_family("test_goal")) is FAMILIES["test_goal"]
    with pytest.raises(ValueError, match="bias_tasks"):
        get_family("test_goal", reward_bias=1.0, bias_tasks="first")
    with pytest.raises(ValueError, match="bias_dim"):
        get_family("test_goal", reward_bias=0.0, bias_dim=5)  # checked even at b = 0
    with pytest.raises(ValueError, match="bias_task_index"):
        get_family("test_goal", reward_bias=1.0, bias_tasks="eval_task", bias_task_index=99)
    with pytest.raises(TypeError):
        get_family("test_goal", reward_bias=1.0, bias_typo=1)  # other kwargs still reach the family


def test_biased_family_pickles():
    fam = get_family("point_reacher", reward_bias=B)
    again = pickle.loads(pickle.dumps(fam))
    assert again.bias == fam.bias and again.name == "point_reacher"
    tasks = fam.sample_tasks(np.random.default_rng(0), 4)
    np.testing.assert_array_equal(again.weights(tasks), fam.weights(tasks))  # helpers reach the base


# ---- relabeling under the bias (HIPI Fig. 8) ---------------------------------------------------
def _trajectory(fam: TaskFamily, task: np.ndarray, seed: int) -> Trajectory:
    steps, rewards = _episode(fam, task, seed)
    T = len(steps)
    return Trajectory(
        episode_id=f"e{seed}", worker_id=0, policy_version=0, family=fam.name, task=np.asarray(task),
        obs=np.concatenate([steps.obs, steps.next_obs[-1:]]), actions=steps.action, rewards=rewards,
        terminated=np.zeros(T, dtype=bool), truncated=True, reward_inputs=steps.reward_inputs, created_at=0.0,
    )


def test_hipi_with_partition_ignores_the_bias_max_reward_does_not():
    base = get_family("test_goal")
    fam = get_family("test_goal", reward_bias=100.0)  # biased: goals with x > 0
    tasks = _tasks_both_sides(base, 8)  # the batch's own tasks = HIPI's candidates
    trajs = [_trajectory(base, t, seed=i) for i, t in enumerate(tasks)]  # all T = 10
    mask = fam.bias_mask(tasks)
    # HIPI Eq. 7 scores the undiscounted sum of rewards
    R0 = kernels.discounted_returns(base, trajs, tasks, 1.0)
    Rb = kernels.discounted_returns(fam, trajs, tasks, 1.0)
    np.testing.assert_allclose(Rb - R0, np.broadcast_to(100.0 * 10 * mask, R0.shape), atol=1e-9)

    # with log Z(psi) the per-task constant cancels: the same q(psi | tau)
    np.testing.assert_allclose(
        np.exp(kernels.hipi_log_probs(Rb)), np.exp(kernels.hipi_log_probs(R0)), atol=1e-9
    )
    # without it (the Fig. 8 ablation) all the mass moves to the biased tasks
    q_ablation = np.exp(kernels.hipi_log_probs(Rb, partition=False))
    assert np.all(q_ablation[:, mask].sum(axis=1) > 0.999)
    assert not np.allclose(q_ablation, np.exp(kernels.hipi_log_probs(R0, partition=False)))

    # max-reward (GH Eq. 6): every trajectory now picks a biased task; unbiased it did not
    chosen0, chosen_b = kernels.max_reward_select(R0), kernels.max_reward_select(Rb)
    assert np.all(mask[chosen_b])
    assert not np.array_equal(chosen0, chosen_b)


# ---- config path --------------------------------------------------------------------------
def test_bias_from_config_overrides():
    from hindsight.config import load_config

    cfg = load_config(None, ["env.family=test_goal", "env.family_kwargs.reward_bias=2.0"])
    assert cfg.env.family_kwargs == {"reward_bias": 2.0}
    fam = get_family(cfg.env.family, **cfg.env.family_kwargs)
    assert isinstance(fam, BiasedFamily) and fam.bias == RewardBias(reward_bias=2.0)
    goals = np.array([[0.5, 0.0], [-0.5, 0.0]])
    steps = StepBatch(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 0)))
    np.testing.assert_allclose(fam.rewards(steps, goals), [[-0.5 + 2.0, -0.5]])

    cfg = load_config(None, [
        "env.family=test_goal", "env.family_kwargs.reward_bias=1", "env.family_kwargs.bias_tasks=eval_task",
    ])
    fam = get_family(cfg.env.family, **cfg.env.family_kwargs)
    assert fam.bias.bias_tasks == "eval_task" and fam.bias.reward_bias == 1.0
    assert fam.bias_mask(fam.eval_tasks()).sum() == 1
