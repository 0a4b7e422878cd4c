"""The Generalized Hindsight point environments, in numpy (no MuJoCo).

``point_trajectory``  GH PointTrajectory (launcher name ``pointmass2``): follow a sine-shaped
                      path of direction theta, length d and amplitude amp; rewarded on the
                      PRE-step position (GH ``PointMassBestRandomRelabeler``, power 1).
``point_reacher``     GH PointReacher (``pointreacherobs``): a velocity-controlled point that
                      trades off reaching a goal, spending energy and avoiding an obstacle,
                      rewarded on the POST-step position (GH ``ReacherRelabelerWithGoalAndObs``).

Both rewards read only the observation and the action, so ``reward_inputs`` is empty (I = 0).
The episode ends by time limit only; the env reports it as ``truncated`` and, because the
observation carries t/H, the family sets ``timeout_is_terminal`` so the time-limit step is
stored as terminal as GH does (REFERENCE-CODE §8). Actions outside [-1, 1] are clipped for
the dynamics only; the reward sees the action as given, which is the one a rollout stores.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import gymnasium as gym
import numpy as np

from envs import fastmath, fused
from envs.core import SEGMENT_BLOCK_ELEMENTS, StepBatch, TaskFamily, segment_blocks, segment_sums, weighted_segment_sums

_NO_REWARD_INPUTS = np.zeros(0)
_SQRT_2PI = float(np.sqrt(2.0 * np.pi))
_LN10 = float(np.log(10.0))


def _distances(centers: np.ndarray, points: np.ndarray) -> np.ndarray:
    """||p_b - q_c|| for centers [..., C, 2], points [..., B, 2] -> [..., C, B] (the steps
    along each row), as ``np.linalg.norm`` of the difference computes it (the same
    rounding, no [..., C, B, 2] temporary)."""
    dx = centers[..., :, None, 0] - points[..., None, :, 0]
    dy = centers[..., :, None, 1] - points[..., None, :, 1]
    dx *= dx
    dy *= dy
    dx += dy
    return np.sqrt(dx, out=dx)


def _blocked_term_sums(
    terms: Callable[[np.ndarray, np.ndarray], np.ndarray],
    columns: int,
    points: np.ndarray,
    tasks: np.ndarray,
    weights: np.ndarray,
    lengths: np.ndarray,
) -> np.ndarray:
    """sum_{s in segment m} weights[s] X[c, s] -> [M, C], where X = terms(points, tasks)
    holds the C = ``columns`` per-(step, task) terms of a family's reward: points [..., b, P],
    tasks [..., K, Z] -> [..., C, b] (``tasks`` may be any per-task parameters computed
    once per call, e.g. PointReacher's goals and obstacles [..., 2K, 2]).

    tasks [K, Z] are shared by every segment; tasks [M, K, Z] are each segment's own
    (advantage relabeling's per-trajectory candidates), a block of equal-length segments
    then one batched call. Blocks of whole segments hold at most SEGMENT_BLOCK_ELEMENTS
    float64 terms, or as many bytes of the points' dtype (twice the terms in float32), so
    the passes over them stay in cache."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.empty((len(lengths), columns))
    max_elements = max(1, SEGMENT_BLOCK_ELEMENTS * 8 // points.dtype.itemsize)
    for m0, m1, s0, s1 in segment_blocks(lengths, columns, max_elements):
        if tasks.ndim == 2:
            out[m0:m1] = weighted_segment_sums(terms(points[s0:s1], tasks), weights[s0:s1], lengths[m0:m1])
            continue
        n, L = m1 - m0, int(lengths[m0])
        if L > 0 and np.all(lengths[m0:m1] == L):
            x = terms(points[s0:s1].reshape(n, L, -1), tasks[m0:m1])  # [n, C, L]
            out[m0:m1] = np.einsum("mcl,ml->mc", x, weights[s0:s1].reshape(n, L))
            continue
        start = s0
        for m in range(m0, m1):
            stop = start + int(lengths[m])
            out[m] = terms(points[start:stop], tasks[m]) @ weights[start:stop]
            start = stop
    return out


class _GHPointEnv(gym.Env):
    """A GH point env for one task; reward and termination come from its family.

    Subclasses set the spaces and implement ``_initial_obs`` and ``_transition``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, family: TaskFamily, task: np.ndarray):
        self.family = family
        self.task = np.zeros(family.task_dim)
        self.set_task(task)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (family.action_dim,), np.float32)
        self._t = 0
        self._obs = self._initial_obs()

    def set_task(self, task: np.ndarray) -> None:
        """Command a new task [Z]; rewards use it from the next step on."""
        self.task = self.family.check_tasks(np.asarray(task)[None])[0]

    def _initial_obs(self) -> np.ndarray:
        raise NotImplementedError

    def _transition(self, obs: np.ndarray, action: np.ndarray, t: int) -> np.ndarray:
        """Next observation [O] from obs [O], clipped action [A] and the new step count t."""
        raise NotImplementedError

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._obs = self._initial_obs()
        return self._obs.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(self.family.action_dim)
        self._t += 1
        next_obs = self._transition(self._obs, np.clip(a, -1.0, 1.0), self._t)
        # the family's reward of this one step (unbatched: ``TaskFamily.step_reward``)
        fam = self.family
        reward = fam.step_reward(self._obs, a, next_obs, _NO_REWARD_INPUTS, self.task)
        terminated = fam.has_terminal and fam.step_terminal(self._obs, a, next_obs, _NO_REWARD_INPUTS, self.task)
        truncated = self._t >= self.family.horizon
        self._obs = next_obs
        return next_obs.copy(), reward, terminated, truncated, {"reward_inputs": _NO_REWARD_INPUTS.copy()}


class _GHPointFamily(TaskFamily):
    """Shared parts of the two GH point families."""

    reward_input_dim = 0
    timeout_is_terminal = True  # GH stores the time-limit step as terminal (REFERENCE-CODE §8)


# ---- PointTrajectory -------------------------------------------------------------------


class PointTrajectoryEnv(_GHPointEnv):
    """GH ``point_robot_new``: obs (x, y, t/H), start at the origin, p <- clip(p + a/10, ±1)."""

    def __init__(self, family: TaskFamily, task: np.ndarray):
        self.observation_space = gym.spaces.Box(
            np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 1.0]), dtype=np.float64
        )
        super().__init__(family, task)

    def _initial_obs(self) -> np.ndarray:
        return np.zeros(3)

    def _transition(self, obs: np.ndarray, action: np.ndarray, t: int) -> np.ndarray:
        p = np.clip(obs[:2] + action / 10.0, -1.0, 1.0)
        return np.array([p[0], p[1], t / self.family.horizon])


class PointTrajectory(_GHPointFamily):
    """GH PointTrajectory: trace the curve y' = amp sin(pi x'/d) in a frame rotated by theta.

    Task z = (theta, d, amp), theta ~ U[-pi, pi], d ~ U[.75, 1], amp ~ U[-.25, .25].
    On the PRE-step position (x, y) = obs[:2]:
        (x', y') = R(theta) (x, y),  R = [[cos, -sin], [sin, cos]]
        alpha = x'/d
        r = alpha * N(y' - amp sin(pi x'/d); 0, sigma=.05)   if alpha >= 0 else 0
    (peak 1/(.05 sqrt(2 pi)) = 7.98 per unit alpha; GH adds 1e-12 to alpha, which we drop).
    """

    name = "point_trajectory"
    compiled_returns = True
    obs_dim = 3
    action_dim = 2
    task_dim = 3
    horizon = 15
    discount = 0.9
    # GH evaluates on random prior tasks, 5000 eval steps per epoch: 333 episodes of 15
    num_eval_tasks = 333
    sigma: ClassVar[float] = 0.05

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform([-np.pi, 0.75, -0.25], [np.pi, 1.0, 0.25], size=(n, 3))

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        obs = np.asarray(steps.obs, dtype=np.float64)
        x, y = obs[..., 0], obs[..., 1]
        theta, d, amp = tasks[..., 0], tasks[..., 1], tasks[..., 2]
        c, s = np.cos(theta), np.sin(theta)
        xr, yr = c * x - s * y, s * x + c * y  # GH: obs[:2].dot(R.T)
        alpha = xr / d
        dev = (yr - amp * np.sin(np.pi * xr / d)) / self.sigma
        pdf = np.exp(-0.5 * dev**2) / (self.sigma * _SQRT_2PI)
        return np.where(alpha >= 0.0, alpha * pdf, 0.0)

    def segment_returns(self, steps: StepBatch, tasks: np.ndarray, weights: np.ndarray,
                        lengths: np.ndarray, float32: bool = False) -> np.ndarray:
        """``TaskFamily.segment_returns`` in blocks that stay in cache: a block's rotated
        coordinates are two [K, 2] x [2, b] products, and 1 / (sigma sqrt(2 pi)) multiplies
        the [M, K] sums (the reward is alpha N(...) where alpha >= 0, else 0). Float64
        only: many returns are Gaussian tails (~1e-100) that float32 flushes to 0, and
        their order decides AIR's percentiles."""
        self.check_float32(float32)
        tasks = self.check_segment_tasks(tasks, len(lengths))
        p = np.asarray(steps.obs, dtype=np.float64)[:, :2]  # [B, 2] pre-step position
        sums = fused.point_trajectory_sums(p, tasks, weights, lengths, self.sigma) if fused.active() else None
        if sums is not None:  # AIR's air_kernel="compiled" (envs/fused.py)
            return sums / (self.sigma * _SQRT_2PI)
        sums = _blocked_term_sums(self._terms, tasks.shape[-2], p, tasks, np.asarray(weights, dtype=np.float64),
                                  lengths)
        return sums / (self.sigma * _SQRT_2PI)

    def _terms(self, p: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """sigma sqrt(2 pi) r for positions p [..., b, 2], tasks [..., K, 3] -> [..., K, b].

        The sine and the exp, nearly all of the cost, run through ``envs.fastmath`` (torch's
        vectorised float64 kernels, within an ulp of numpy's and 2-3x as fast on an AVX2
        CPU) on every pair; the pairs behind the task's start (alpha < 0) then get alpha = 0.
        That is cheaper than numpy's sine and exp on the pairs ahead alone (about half):
        a masked numpy loop runs once per contiguous run of its mask. The operations are
        the plain expression's, in its order (tests/test_envs.py)."""
        theta, d, amp = tasks[..., 0, None], tasks[..., 1, None], tasks[..., 2, None]  # [..., K, 1]
        c, s = np.cos(theta), np.sin(theta)
        pt = np.swapaxes(p, -1, -2)  # [..., 2, b]
        xr = np.concatenate([c, -s], axis=-1) @ pt  # [..., K, b]: x' = c x - s y
        dev = np.concatenate([s, c], axis=-1) @ pt  # y' = s x + c y
        arg = xr * (np.pi / d)
        fastmath.sin_(arg)
        arg *= amp
        dev -= arg  # y' - amp sin(pi x' / d)
        dev *= dev
        dev *= -0.5 / self.sigma**2
        fastmath.exp_(dev)  # sigma sqrt(2 pi) * pdf, in [0, 1]
        xr /= d  # alpha
        np.maximum(xr, 0.0, out=xr)  # (a NaN stays NaN)
        dev *= xr  # behind the start: exp(.) * 0 = +0
        return dev

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        env = PointTrajectoryEnv(self, task)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env


# ---- PointReacher ----------------------------------------------------------------------


class PointReacherEnv(_GHPointEnv):
    """GH ``point_reacher_env``: obs (x, y, vx, vy, t/H), start all zeros,
    v <- clip(v + a/20, ±.25), p <- clip(p + v, ±1)."""

    def __init__(self, family: TaskFamily, task: np.ndarray):
        high = np.array([1.0, 1.0, 0.25, 0.25, 1.0])
        low = np.array([-1.0, -1.0, -0.25, -0.25, 0.0])
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float64)
        super().__init__(family, task)

    def _initial_obs(self) -> np.ndarray:
        return np.zeros(5)

    def _transition(self, obs: np.ndarray, action: np.ndarray, t: int) -> np.ndarray:
        v = np.clip(obs[2:4] + action / 20.0, -0.25, 0.25)
        p = np.clip(obs[:2] + v, -1.0, 1.0)
        return np.array([p[0], p[1], v[0], v[1], t / self.family.horizon])


class PointReacher(_GHPointFamily):
    """GH PointReacher: weighted trade-off of reaching, energy and obstacle safety.

    Task z = (u, v, theta_g, r_g, theta_o, r_o): u ~ U[0, .25], v ~ U[.5, 1],
    theta ~ U[-pi, pi], r ~ U[.15, .3]. Goal g = r_g (cos, sin) theta_g, obstacle o likewise;
    weights c = (cos th sin ph, sin th sin ph, cos ph), th = 2 pi u, ph = arccos(2v - 1)
    (all >= 0). On the POST-step position e = next_obs[:2] and the action a:
        r = c0 (0.2 - ||e - g||) + c1 (-||a||) + c2 log10(||e - o|| + .01) / 5

    A goal family for HER (GH Fig. 4b's baseline relabels "the goal portion of the latent"):
    the achieved goal of a step is the post-step position e, the point the reach term
    measures; ``with_goal`` writes a position g into the task as its polar goal coordinates
    (theta_g = atan2(g_y, g_x), r_g = ||g||, which may leave the prior's r_g range
    [.15, .3]: the reward is defined for any goal) and keeps the other components, the
    reward weights (u, v) and the obstacle (theta_o, r_o), as the trajectory commanded them.
    """

    name = "point_reacher"
    float32_returns = True
    compiled_returns = True
    obs_dim = 5
    action_dim = 2
    task_dim = 6
    goal_dim = 2
    horizon = 20
    discount = 0.97
    # GH evaluates on random prior tasks, 1000 eval steps per epoch: 50 episodes of 20
    num_eval_tasks = 50

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        low = [0.0, 0.5, -np.pi, 0.15, -np.pi, 0.15]
        high = [0.25, 1.0, np.pi, 0.3, np.pi, 0.3]
        return rng.uniform(low, high, size=(n, 6))

    @staticmethod
    def weights(tasks: np.ndarray) -> np.ndarray:
        """Reward weights c [..., 3] of tasks [..., 6] (GH ``latent_to_coeffs``)."""
        th = 2.0 * np.pi * tasks[..., 0]
        ph = np.arccos(2.0 * tasks[..., 1] - 1.0)
        return np.stack([np.cos(th) * np.sin(ph), np.sin(th) * np.sin(ph), np.cos(ph)], axis=-1)

    @staticmethod
    def goal(tasks: np.ndarray) -> np.ndarray:
        """Goal position [..., 2] of tasks [..., 6]."""
        return tasks[..., 3:4] * np.stack([np.cos(tasks[..., 2]), np.sin(tasks[..., 2])], axis=-1)

    @staticmethod
    def obstacle(tasks: np.ndarray) -> np.ndarray:
        """Obstacle position [..., 2] of tasks [..., 6]."""
        return tasks[..., 5:6] * np.stack([np.cos(tasks[..., 4]), np.sin(tasks[..., 4])], axis=-1)

    def achieved_goal(self, steps: StepBatch) -> np.ndarray:
        """The post-step position e [..., 2] (what the reach term compares with the goal)."""
        return np.asarray(steps.next_obs, dtype=np.float64)[..., :2]

    def with_goal(self, tasks: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """tasks [..., 6] with the goal moved to the positions goals [..., 2] (polar
        theta_g, r_g); weights and obstacle unchanged."""
        out = np.array(tasks, dtype=np.float64)
        goals = np.asarray(goals, dtype=np.float64)
        out[..., 2] = np.arctan2(goals[..., 1], goals[..., 0])
        out[..., 3] = np.linalg.norm(goals, axis=-1)
        return out

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        e = np.asarray(steps.next_obs, dtype=np.float64)[..., :2]
        a = np.asarray(steps.action, dtype=np.float64)
        c = self.weights(tasks)
        reach = 0.2 - np.linalg.norm(e - self.goal(tasks), axis=-1)
        energy = -np.linalg.norm(a, axis=-1)
        safety = np.log10(np.linalg.norm(e - self.obstacle(tasks), axis=-1) + 0.01) / 5.0
        return c[..., 0] * reach + c[..., 1] * energy + c[..., 2] * safety

    def segment_returns(self, steps: StepBatch, tasks: np.ndarray, weights: np.ndarray,
                        lengths: np.ndarray, float32: bool = False) -> np.ndarray:
        """``TaskFamily.segment_returns`` term by term: with W, E, D_k, S_k the weighted sums
        of 1, ||a||, ||e - g_k|| and log10(||e - o_k|| + .01),

            sum_t w_t r_t = c0 (0.2 W - D_k) - c1 E + c2 S_k / 5,

        so only the two distances and one log are evaluated per (step, task), in blocks
        that stay in cache (log10 as log / ln 10: the same to a few ulp; in float64 the
        log is torch's vectorised one, ``envs.fastmath``, 4x numpy's on an AVX2 CPU); the
        goals and obstacles are computed once per call, not once per block.

        ``float32`` (AIR's ``air_precision="float32"``, off by default): the two distances,
        the log and their weighted sums D_k, S_k in float32, about 1.5x as fast; W, E,
        the weights c and the combination stay float64. The returns then differ from
        float64 by about 1e-6 (within 1e-5 (1 + |R|) at the GH settings, checked in
        tests/test_envs.py), enough to reorder returns that float64 separates by less."""
        tasks = self.check_segment_tasks(tasks, len(lengths))
        dtype = np.float32 if float32 else np.float64
        w = np.asarray(weights, dtype=np.float64)
        K = tasks.shape[-2]
        e = np.asarray(steps.next_obs, dtype=np.float64)[:, :2].astype(dtype)  # [B, 2] post-step position
        goals, obstacles = self.goal(tasks), self.obstacle(tasks)
        fast = fused.point_reacher_sums(e, goals, obstacles, w, lengths, float32) if fused.active() else None
        if fast is not None:  # AIR's air_kernel="compiled" (envs/fused.py)
            sums = np.concatenate(fast, axis=1)
        else:
            centers = np.concatenate([goals, obstacles], axis=-2).astype(dtype)  # [..., 2K, 2]
            sums = _blocked_term_sums(self._terms, 2 * K, e, centers, w.astype(dtype), lengths)  # [M, 2K]: D, S ln 10
        total = segment_sums(w, lengths)[:, None]  # [M, 1]
        a = np.asarray(steps.action, dtype=np.float64)
        energy = segment_sums(w * np.sqrt(a[:, 0] * a[:, 0] + a[:, 1] * a[:, 1]), lengths)[:, None]  # ||a||
        c = self.weights(tasks)  # [..., K, 3]
        return (c[..., 0] * (0.2 * total - sums[:, :K]) - c[..., 1] * energy
                + (c[..., 2] / (5.0 * _LN10)) * sums[:, K:])

    @staticmethod
    def _terms(e: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """||e - g_k|| then log(||e - o_k|| + .01) for positions e [..., b, 2] and the
        goals then the obstacles of K tasks, centers [..., 2K, 2] -> [..., 2K, b]."""
        K = centers.shape[-2] // 2
        dist = _distances(centers, e)  # [..., 2K, b]
        safety = dist[..., K:, :]
        safety += 0.01
        fastmath.log_(safety)  # float64: torch's vectorised log (envs/fastmath.py); float32: numpy's
        return dist

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        env = PointReacherEnv(self, task)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env
