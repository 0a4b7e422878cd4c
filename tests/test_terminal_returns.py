"""Terminal-aware returns: R(tau|z) stops where tau would have ended under z.

One hand-built reacher_goal trajectory of 10 steps (gamma = 0.99, margin 0.02) whose
PRE-step fingertip (obs[6:8], what the reward tests) is
    t = 0, 1        far from every goal
    t = 2           at g1, then it wanders on
    t = 3, 4        far
    t = 5 .. 9      at g2 (and stays)
Under each task the reward is -1 per step until the goal (0 there), and the episode would
have ended at the goal:
    g0 (never reached)  -sum_{t<10} .99^t            = -9.56179   (-10 undiscounted)
    g1 (t = 2)          -1 - .99                      = -1.99      (-2)
                        (summing all 10 steps: -9.56179 + .99^2 = -8.58169, -9)
    g2 (t = 5)          -(1 + .99 + .99^2 + .99^3 + .99^4) = -4.90099501  (-5)
So a return that ignores the terminal ranks g2 above g1; the terminal-aware one ranks g1
first, and every strategy that scores returns (AIR, Advantage, max-reward, HIPI) must
follow it.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.core import alive_mask
from envs.mujoco_families import ReacherGoal
from relabel_service.core import RelabelRequest, Trajectory
from relabel_service.strategies import StrategyConfig, make_strategy
from relabel_service.strategies import kernels as K

MARGIN = 0.02
G0, G1, G2 = (0.15, 0.0), (0.0, 0.1), (-0.1, 0.0)
TASKS = np.array([[*G0, MARGIN], [*G1, MARGIN], [*G2, MARGIN]])
FAR = (0.2, 0.2)
GAMMA = ReacherGoal.discount  # 0.99

R_AWARE = np.array([-(1 - GAMMA**10) / (1 - GAMMA), -1 - GAMMA, -sum(GAMMA**t for t in range(5))])
R_FULL = np.array([R_AWARE[0], R_AWARE[0] + GAMMA**2, R_AWARE[2]])


class TwoGoalPrior(ReacherGoal):
    """reacher_goal whose prior alternates g1, g2: candidate sets are known exactly."""

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return TASKS[1 + np.arange(n) % 2]


def traj_through(tips, task, episode: str = "hand") -> Trajectory:
    """A reacher_goal trajectory whose pre-step fingertips are ``tips`` [T, 2]."""
    tips = np.asarray(tips, dtype=np.float64)
    T = len(tips)
    obs = np.zeros((T + 1, 8))
    obs[:T, 6:8] = tips
    obs[T, 6:8] = tips[-1]
    return Trajectory(
        episode_id=episode, worker_id=0, policy_version=0, family="reacher_goal",
        task=np.asarray(task, dtype=np.float64), obs=obs, actions=np.zeros((T, 2)),
        rewards=np.full(T, 999.0), terminated=np.zeros(T, dtype=bool), truncated=True,
        reward_inputs=np.zeros((T, 0)), created_at=0.0,
    )


HAND = traj_through([FAR, FAR, G1, FAR, FAR, G2, G2, G2, G2, G2], TASKS[0])


def test_hand_trajectory_returns_stop_at_the_first_terminal():
    fam = ReacherGoal(margin=MARGIN)
    np.testing.assert_allclose(R_AWARE, [-9.56179249, -1.99, -4.90099501], atol=1e-8)
    np.testing.assert_allclose(K.discounted_returns(fam, [HAND], TASKS, GAMMA)[0], R_AWARE, rtol=1e-12)
    np.testing.assert_allclose(K.discounted_returns_naive(fam, [HAND], TASKS, GAMMA)[0], R_AWARE, rtol=1e-12)
    per = K.discounted_returns_per_trajectory(fam, [HAND], TASKS[None], GAMMA)[0]
    np.testing.assert_allclose(per, R_AWARE, rtol=1e-12)
    # undiscounted (HIPI Eq. 7): -10, -2, -5
    np.testing.assert_allclose(K.discounted_returns(fam, [HAND], TASKS, 1.0)[0], [-10.0, -2.0, -5.0])


def test_alive_mask_hand_table():
    # two trajectories (lengths 3 and 4), two tasks; the terminating step itself counts
    term = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [0, 0], [1, 1], [0, 1]], dtype=bool)
    expect = np.array([[1, 1], [1, 0], [0, 0], [1, 1], [0, 1], [0, 1], [0, 0]], dtype=bool)
    np.testing.assert_array_equal(alive_mask(term, np.array([3, 4])), expect)


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_equals_naive_on_random_goal_hits(seed):
    # fingertips and goals on a coarse grid so that goals are hit, left and re-hit often
    fam = ReacherGoal(margin=MARGIN)
    rng = np.random.default_rng(seed)
    grid = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]])
    trajs = [
        traj_through(grid[rng.integers(4, size=T)], [*grid[rng.integers(4)], MARGIN], f"r{i}")
        for i, T in enumerate(rng.integers(1, 12, size=6))
    ]
    tasks = np.concatenate([grid, np.full((4, 1), MARGIN)], axis=1)
    naive = K.discounted_returns_naive(fam, trajs, tasks, GAMMA)
    np.testing.assert_allclose(K.discounted_returns(fam, trajs, tasks, GAMMA), naive, rtol=1e-12)
    np.testing.assert_allclose(K.discounted_returns(fam, trajs, tasks, GAMMA, max_elements=9), naive, rtol=1e-12)
    per_tasks = np.broadcast_to(tasks, (len(trajs),) + tasks.shape)
    np.testing.assert_allclose(K.discounted_returns_per_trajectory(fam, trajs, per_tasks, GAMMA), naive, rtol=1e-12)


def _zero_values(obs0: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    return np.zeros(tasks.shape[:2])


@pytest.mark.parametrize("name", ["air", "advantage", "max_reward"])
def test_gh_strategies_choose_the_goal_passed_early(name):
    # candidates: 2 prior samples (g1, g2) + the own task g0. With the terminal-aware
    # returns g1 (-1.99) beats g2 (-4.90); summing every stored step would pick g2.
    # AIR with N = 1 ties every percentile at 1 and breaks the tie by R - V (V = 0).
    fam = TwoGoalPrior(margin=MARGIN)
    request = RelabelRequest(fam, [HAND], discount=GAMMA, reference=[HAND], value_fn=_zero_values)
    result = make_strategy(name, StrategyConfig(num_candidates=3))(request, np.random.default_rng(0))
    np.testing.assert_array_equal(result.stats["chosen_tasks"].reshape(-1, 3), TASKS[1:2])
    if name != "air":
        np.testing.assert_allclose(result.stats["chosen_score"].ravel(), [R_AWARE[1]], rtol=1e-12)
        np.testing.assert_allclose(result.stats["original_score"], [R_AWARE[0]], rtol=1e-12)


def test_hipi_scores_terminal_aware_returns():
    # three trajectories commanding g0, g1, g2: the hand one, one that never reaches a goal,
    # one that sits on g1. Undiscounted terminal-aware R_ij (rows i, columns psi_j):
    #   hand   [-10, -2, -5]        (ignoring terminals the middle entry would be -9)
    #   never  [-10, -10, -10]
    #   on g1  [-10,  0, -10]
    fam = ReacherGoal(margin=MARGIN)
    never = traj_through([FAR] * 10, TASKS[1], "never")
    on_g1 = traj_through([G1] * 10, TASKS[2], "on_g1")
    R = np.array([[-10.0, -2.0, -5.0], [-10.0, -10.0, -10.0], [-10.0, 0.0, -10.0]])
    R_ignoring = R.copy()
    R_ignoring[0, 1] = -9.0
    q = np.exp(K.hipi_log_probs(R))
    assert not np.allclose(q, np.exp(K.hipi_log_probs(R_ignoring)), atol=1e-3)
    strategy = make_strategy("hipi", StrategyConfig())
    for seed in range(20):
        result = strategy(RelabelRequest(fam, [HAND, never, on_g1], discount=GAMMA), np.random.default_rng(seed))
        chosen = result.stats["chosen_index"]
        np.testing.assert_allclose(result.stats["chosen_probability"], q[np.arange(3), chosen], rtol=1e-9)
        np.testing.assert_allclose(result.stats["original_probability"], np.diag(q), rtol=1e-9)
