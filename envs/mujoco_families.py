"""Task families on Gymnasium's MuJoCo v5 environments.

``half_cheetah_mo``  GH HalfCheetahMultiObjective: r = w . phi, linear, d = 4.
``ant_direction``    GH AntDirection (sparse): run within 15 degrees of a commanded heading.
``walker_linear``    HIPI Walker with linear features, d = 7, adapted to Walker2d-v5.
``reacher_goal``     HIPI-style sparse goal reaching with Reacher-v5's fingertip; a goal family.

Each env is the standard ``gym.make(<id>-v5, max_episode_steps=horizon)`` (default reset
noise, TimeLimit at the family horizon) inside a ``gym.Wrapper`` that records
``info["reward_inputs"]`` [I] each step from ``env.unwrapped.data`` and replaces the reward
(and termination) with the family's reward / termination of the step it just took
(``step_reward`` / ``step_terminal``: the family's own reward function on the unbatched
step), so env reward == family reward by construction. The wrapped env's own ``info`` keys
(``x_velocity``, ``reward_ctrl``, ...) are passed through unchanged; they describe
Gymnasium's reward, not the family's.

Rollout workers use ``step_into`` instead of ``step``: the same simulator step
(``do_simulation``, the same observation and reward inputs, bit for bit) written into
rows the worker preallocated, without the Gymnasium wrapper stack, the info dict or the
reward; the worker rewards each whole trajectory with one batched ``rewards_for`` call
at its end, and only a family whose episodes can end early (``has_terminal``) has its
termination evaluated per step.

reward_inputs per family (what the observation lacks):
    half_cheetah_mo  [v_x, qpos[1], qvel[2]]                        after the step (I = 3)
    ant_direction    [v_x, v_y, contact_cost, torso z]              after the step (I = 4)
    walker_linear    [height-.5, v_x, foot dx, dz+.7, left dx, dz+.7]  BEFORE the step (I = 6)
    reacher_goal     none: the pre-step fingertip xy is in obs[6:8]   (I = 0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping, cast

import gymnasium as gym
import numpy as np

from envs.core import SEGMENT_BLOCK_ELEMENTS, StepBatch, TaskFamily, segment_blocks
from envs.reference_tasks import HALF_CHEETAH_EVAL_TASKS

if TYPE_CHECKING:
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

_COS_15_DEG = float(np.cos(np.deg2rad(15.0)))


class MujocoTaskEnv(gym.Wrapper):
    """A standard Gymnasium MuJoCo env whose reward and termination come from a family.

    Subclasses read the simulator (``self.sim.data``) in ``_before_step`` (called before the
    physics step) and ``_reward_inputs`` (after it); reacher also replaces the observation.
    """

    def __init__(self, family: TaskFamily, task: np.ndarray, env: gym.Env):
        # mujoco is imported here, with the first env (``gym.make`` has imported it by then),
        # not with the module: a process that only names these families (a relabel worker,
        # a store shard, a worker of another family) never loads the simulator (~0.25 s)
        import mujoco

        super().__init__(env)
        self._mj = mujoco
        self._sim = cast("MujocoEnv", env.unwrapped)
        self.family = family
        self.task = np.zeros(family.task_dim)
        self.set_task(task)
        self._obs = np.zeros(family.obs_dim)
        self._t = 0  # steps since reset (the time limit of ``step_into``)

    @property
    def sim(self) -> "MujocoEnv":
        # cached: ``self.env.unwrapped`` walks the Gymnasium wrapper chain on every access
        return self._sim

    def _fresh_kinematics(self) -> None:
        """Recompute body positions (xpos) from the current qpos.

        After ``mj_step`` the xpos arrays still hold the kinematics of the last substep's
        *start*, one physics substep behind qpos. This only rewrites derived arrays, which the
        next ``mj_step`` recomputes anyway, so the dynamics are unchanged.
        """
        self._mj.mj_kinematics(self.sim.model, self.sim.data)

    def set_task(self, task: np.ndarray) -> None:
        """Command a new task [Z]: rewards use it from the next step on (reacher moves its
        target marker at the next reset)."""
        self.task = self.family.check_tasks(np.asarray(task)[None])[0]

    # ---- hooks -----------------------------------------------------------------------
    def _observe(self, inner_obs: np.ndarray) -> np.ndarray:
        """The family's observation [O] (default: the wrapped env's)."""
        return np.asarray(inner_obs, dtype=np.float64).copy()

    def _on_reset(self) -> None:
        """Adjust the freshly reset simulator (default: nothing)."""

    def _before_step(self) -> np.ndarray:
        """What must be read from the simulator before it steps (default: nothing)."""
        return np.zeros(0)

    def _reward_inputs(self, before: np.ndarray) -> np.ndarray:
        """reward_inputs [I] of the step just taken, given ``_before_step``'s result."""
        raise NotImplementedError

    # ---- gym API -----------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        inner_obs, info = self.env.reset(seed=seed, options=options)
        self._on_reset()
        self._obs = self._observe(inner_obs)
        self._t = 0
        return self._obs.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64)
        before = self._before_step()
        # The wrapped env's reward and termination are replaced by the family's below.
        inner_obs, _, _, truncated, info = self.env.step(action)
        self._t += 1
        next_obs = self._observe(inner_obs)
        reward_inputs = np.asarray(self._reward_inputs(before), dtype=np.float64)
        fam, task = self.family, self.task
        reward = fam.step_reward(self._obs, a, next_obs, reward_inputs, task)
        terminated = fam.step_terminal(self._obs, a, next_obs, reward_inputs, task) if fam.has_terminal else False
        self._obs = next_obs
        truncated = bool(truncated) or self._t >= fam.horizon
        return next_obs.copy(), reward, terminated, truncated, {**info, "reward_inputs": reward_inputs}

    def step_into(self, action: np.ndarray, obs_out: np.ndarray, reward_inputs_out: np.ndarray) -> tuple[bool, bool]:
        """The rollout workers' step: like ``step`` but writes the next observation [O] and
        the reward inputs [I] into the given rows and returns only (terminated, truncated).

        The simulator step is the wrapped env's (``do_simulation``'s three MuJoCo calls), so
        states, observations and reward inputs equal ``step``'s; the time limit is the family horizon. No reward:
        the worker computes the trajectory's rewards in one call at its end. Termination is
        evaluated only for families that have one. Do not mix with ``step`` inside an
        episode (``step_into`` bypasses the Gymnasium TimeLimit counter)."""
        sim = self.sim
        before = self._before_step()
        # = Gymnasium's MujocoEnv.do_simulation without its per-step shape check (which
        # copies the action): set ctrl, step frame_skip times, then rnePostConstraint so
        # that force quantities (cfrc_ext) are current. ``action`` must have shape [A].
        data = sim.data
        data.ctrl[:] = action
        self._mj.mj_step(sim.model, data, nstep=sim.frame_skip)
        self._mj.mj_rnePostConstraint(sim.model, data)
        self._t += 1
        self._observe_into(obs_out)
        self._write_reward_inputs(before, reward_inputs_out)
        fam = self.family
        terminated = False
        if fam.has_terminal:
            terminated = fam.step_terminal(self._obs, action, obs_out, reward_inputs_out, self.task)
        self._obs[:] = obs_out
        return terminated, self._t >= fam.horizon

    def _observe_into(self, out: np.ndarray) -> None:
        """Write the family's observation of the current state into ``out`` [O]."""
        out[:] = self._observe(self.sim._get_obs())

    def _write_reward_inputs(self, before: Any, out: np.ndarray) -> None:
        """Write the reward inputs [I] of the step just taken into ``out``."""
        out[:] = self._reward_inputs(before)


class _MujocoFamily(TaskFamily):
    """A family on a Gymnasium MuJoCo env: ``make_env`` wraps ``gym.make(env_id)``."""

    env_id: ClassVar[str]
    env_kwargs: ClassVar[Mapping[str, Any]] = {}
    env_class: ClassVar[type[MujocoTaskEnv]]

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        inner = gym.make(self.env_id, max_episode_steps=self.horizon, **self.env_kwargs)
        env = self.env_class(self, task, inner)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

# ---- HalfCheetahMultiObjective ---------------------------------------------------------


class HalfCheetahMOEnv(MujocoTaskEnv):
    """HalfCheetah-v5; reward_inputs [v_x, qpos[1], qvel[2]] after the step."""

    def _before_step(self) -> float:
        return float(self.sim.data.qpos[0])

    def _reward_inputs(self, before: float) -> np.ndarray:
        data = self.sim.data
        v_x = (data.qpos[0] - before) / self.sim.dt  # as Gymnasium's info["x_velocity"]
        return np.array([v_x, data.qpos[1], data.qvel[2]])

    # the hot path without temporaries: HalfCheetah-v5's observation is [qpos[1:], qvel]
    def _observe_into(self, out: np.ndarray) -> None:
        data = self.sim.data
        n = data.qpos.shape[0] - 1
        out[:n] = data.qpos[1:]
        out[n:] = data.qvel

    def _write_reward_inputs(self, before: float, out: np.ndarray) -> None:
        data = self.sim.data
        out[0] = (data.qpos[0] - before) / self.sim.dt
        out[1] = data.qpos[1]
        out[2] = data.qvel[2]


class HalfCheetahMultiObjective(_MujocoFamily):
    """GH HalfCheetahMultiObjective (``halfcheetahhard``, ``HalfCheetahRelabelerMoreFeatures``).

    phi = [v_x (x displacement / dt), -0.1 ||a||^2, rootz height qpos[1], rooty angular
    velocity qvel[2]] (the last two after the step); r = w . phi. Task w: N(0, I_4) with
    |.| of components 1 and 2 (ctrl and height weights >= 0), normalised to unit norm.
    Never terminates; H = 1000. Eval tasks: GH's 25 fixed hard latents
    (``envs.reference_tasks.HALF_CHEETAH_EVAL_TASKS``).
    """

    name = "half_cheetah_mo"
    obs_dim = 17
    action_dim = 6
    task_dim = 4
    reward_input_dim = 3
    horizon = 1000
    discount = 0.99
    linear = True
    feature_dim = 4
    env_id = "HalfCheetah-v5"
    env_class = HalfCheetahMOEnv

    def eval_tasks(self) -> np.ndarray:
        """GH's 25 fixed hard latents (``HALF_CHEETAH_HARD_LATENT`` of the GH code), [25, 4]."""
        return HALF_CHEETAH_EVAL_TASKS.copy()

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        w = rng.normal(size=(n, 4))
        w[:, 1:3] = np.abs(w[:, 1:3])
        return w / np.linalg.norm(w, axis=-1, keepdims=True)

    def features(self, steps: StepBatch) -> np.ndarray:
        """phi [..., 4] of steps with fields [..., X]."""
        ri = np.asarray(steps.reward_inputs, dtype=np.float64)
        ctrl = -0.1 * np.sum(np.square(np.asarray(steps.action, dtype=np.float64)), axis=-1)
        return np.stack([ri[..., 0], ctrl, ri[..., 1], ri[..., 2]], axis=-1)

    def task_weights(self, tasks: np.ndarray) -> np.ndarray:
        return self.check_tasks(tasks)

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return np.sum(self.features(steps) * tasks, axis=-1)


# ---- AntDirection ----------------------------------------------------------------------


class AntDirectionEnv(MujocoTaskEnv):
    """Ant-v5 without contact forces in obs; reward_inputs [v_x, v_y, contact_cost, torso z]."""

    def __init__(self, family: TaskFamily, task: np.ndarray, env: gym.Env):
        super().__init__(family, task, env)
        self._torso = self.sim.model.body("torso").id  # Ant-v5's main body

    def _before_step(self) -> np.ndarray:
        return self.sim.data.xpos[self._torso][:2].copy()

    def _reward_inputs(self, before: np.ndarray) -> np.ndarray:
        data = self.sim.data
        # = info["x_velocity"], ["y_velocity"]: Gymnasium (and GH) difference xpos as mj_step
        # leaves it (one substep behind qpos); we keep that so the numbers match theirs.
        v_xy = (data.xpos[self._torso][:2] - before) / self.sim.dt
        contact_cost = AntDirection.contact_cost_weight * np.sum(np.square(np.clip(data.cfrc_ext, -1.0, 1.0)))
        state = self.sim.state_vector()
        # Ant-v5 is unhealthy when the state is not finite or torso z leaves [0.2, 1]; a NaN z
        # records the former so that terminal_fn sees both.
        z = state[2] if np.isfinite(state).all() else np.nan
        return np.array([v_xy[0], v_xy[1], contact_cost, z])


class AntDirection(_MujocoFamily):
    """GH AntDirection, sparse (``antdirectionnewsparse``, ``AntDirectionRelabelerNewSparse``).

    Task theta ~ U[-pi, pi]. With the torso velocity v_xy (COM displacement / dt):
        r = ||v_xy|| 1[cos(angle(v_xy, theta)) > cos 15deg] - 0.5 ||a||^2
            - 0.5e-3 sum(clip(cfrc_ext, -1, 1)^2) + 1
    Terminates (task-independently) when unhealthy: torso z outside [0.2, 1.0], as Ant-v5.
    Eval tasks: GH's 25 evenly spaced headings. H = 1000.
    """

    name = "ant_direction"
    obs_dim = 27
    action_dim = 8
    task_dim = 1
    reward_input_dim = 4
    horizon = 1000
    discount = 0.99
    contact_cost_weight: ClassVar[float] = 0.5e-3
    healthy_z_range: ClassVar[tuple[float, float]] = (0.2, 1.0)
    env_id = "Ant-v5"
    env_kwargs: ClassVar[Mapping[str, Any]] = {"include_cfrc_ext_in_observation": False}
    env_class = AntDirectionEnv

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-np.pi, np.pi, size=(n, 1))

    def eval_tasks(self) -> np.ndarray:
        """GH's fixed headings: linspace(-pi, pi, 25, endpoint=False) + pi/25, [25, 1]."""
        n = self.num_eval_tasks
        return (np.linspace(-np.pi, np.pi, n, endpoint=False) + np.pi / n)[:, None]

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        ri = np.asarray(steps.reward_inputs, dtype=np.float64)
        a = np.asarray(steps.action, dtype=np.float64)
        v_x, v_y, contact_cost = ri[..., 0], ri[..., 1], ri[..., 2]
        theta = tasks[..., 0]
        speed = np.hypot(v_x, v_y)
        # cos(angle(v, theta)) > cos 15deg, written without dividing by the speed (0 at rest)
        on_course = v_x * np.cos(theta) + v_y * np.sin(theta) > _COS_15_DEG * speed
        ctrl_cost = 0.5 * np.sum(np.square(a), axis=-1)
        return np.where(on_course, speed, 0.0) - ctrl_cost - contact_cost + 1.0

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        z = np.asarray(steps.reward_inputs, dtype=np.float64)[..., 3]
        low, high = self.healthy_z_range
        unhealthy = ~((z >= low) & (z <= high))  # NaN (non-finite state) is unhealthy
        return np.broadcast_to(unhealthy, np.broadcast_shapes(z.shape, tasks.shape[:-1]))


# ---- Walker (HIPI, linear) -------------------------------------------------------------


class WalkerLinearEnv(MujocoTaskEnv):
    """Walker2d-v5 without termination; reward_inputs = the 6 state features of s_t."""

    def __init__(self, family: TaskFamily, task: np.ndarray, env: gym.Env):
        super().__init__(family, task, env)
        model = self.sim.model
        self._torso = model.body("torso").id
        self._feet = (model.body("foot").id, model.body("foot_left").id)

    def _before_step(self) -> np.ndarray:
        self._fresh_kinematics()
        data = self.sim.data
        torso = data.xpos[self._torso]
        offsets = [data.xpos[f][[0, 2]] - torso[[0, 2]] - WalkerLinear.foot_reference for f in self._feet]
        return np.concatenate([[torso[2] - 0.5, data.qvel[0]], *offsets])

    def _reward_inputs(self, before: np.ndarray) -> np.ndarray:
        return before  # HIPI rewards the pre-step state s_t


class WalkerLinear(_MujocoFamily):
    """HIPI ``WalkerTaskDistribution`` (linear features) adapted to Walker2d-v5.

    phi(s_t, a_t) = [torso height - 0.5, v_x, right foot (dx, dz) - (0, -0.7),
                     left foot (dx, dz) - (0, -0.7), ||a||^2]          r = w . phi
    on the PRE-step state s_t as HIPI does. HIPI reads dm_control's ``orientations`` entries
    for the "foot" features; we use what its labels say: foot body (``foot``, ``foot_left``)
    positions relative to the torso body in the x-z plane, minus HIPI's (0, -0.7); standing
    at reset that is about (0.19, -0.55) per foot (torso 1.25 above the feet) and the height
    feature about 0.75. Torso height is the torso body's world z (= qpos[1]); v_x the root
    slide velocity qvel[0] (dm's rootx qvel), unclipped.
    Task w ~ U[-1, 1]^7 except the ctrl weight w[6] ~ U[-1, 0]. No termination (HIPI uses
    none; Walker2d-v5's unhealthy termination is switched off); H = 100.
    """

    name = "walker_linear"
    obs_dim = 17
    action_dim = 6
    task_dim = 7
    reward_input_dim = 6
    horizon = 100
    discount = 0.99
    num_eval_tasks = 30  # HIPI: 30 eval episodes on fresh tasks
    linear = True
    feature_dim = 7
    foot_reference: ClassVar[np.ndarray] = np.array([0.0, -0.7])
    env_id = "Walker2d-v5"
    env_kwargs: ClassVar[Mapping[str, Any]] = {"terminate_when_unhealthy": False}
    env_class = WalkerLinearEnv

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        high = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
        return rng.uniform(-1.0, high, size=(n, 7))

    def features(self, steps: StepBatch) -> np.ndarray:
        """phi [..., 7] of steps with fields [..., X]."""
        ri = np.asarray(steps.reward_inputs, dtype=np.float64)
        a2 = np.sum(np.square(np.asarray(steps.action, dtype=np.float64)), axis=-1, keepdims=True)
        return np.concatenate([ri[..., :6], a2], axis=-1)

    def task_weights(self, tasks: np.ndarray) -> np.ndarray:
        return self.check_tasks(tasks)

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return np.sum(self.features(steps) * tasks, axis=-1)


# ---- Reacher goal (HIPI) ---------------------------------------------------------------


#: (step, task) pairs per block of reacher_goal's ``segment_returns``: its scratch buffers
#: (1 MiB each) are reused from block to block, so a block can be larger than the point
#: families' fresh temporaries; ~10 numpy calls per block are then a small share
REACH_BLOCK_ELEMENTS = 1 << 17


def _first_at_goal(points: np.ndarray, tasks: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Index within its segment of each segment's first point at each task's goal, L_m if
    none: points [B, 2] in segments of lengths [M], tasks (g_x, g_y, margin) [K, 3] shared
    by every segment or [M, K, 3] each segment's own -> int [M, K].

    At the goal: ||p - g|| < margin, decided on the squared distance against
    ``sqrt_less_bound(margin)``. Blocks of about ``REACH_BLOCK_ELEMENTS`` (point, task)
    pairs are written into scratch buffers allocated once per call (fresh temporaries of
    this size cost a page fault per page on every block here): shared tasks [K, b] with
    the points along each row; own tasks [n, K, L] per run of n segments, the points
    padded with NaN (never at a goal) to the longest segment. Only the pairs at a goal
    (a few percent) are then looked at, one ``np.minimum.at``."""
    M, K = len(lengths), tasks.shape[-2]
    px, py = np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1])
    gx, gy = np.ascontiguousarray(tasks[..., 0]), np.ascontiguousarray(tasks[..., 1])  # [K] or [M, K]
    bound = sqrt_less_bound(tasks[..., 2])
    first = np.repeat(lengths[:, None], K, axis=1)
    if tasks.ndim == 2:
        starts = np.cumsum(lengths) - lengths
        seg = np.repeat(np.arange(M), lengths)  # [B] segment of each point
        blocks = [(s0, s1) for _, _, s0, s1 in segment_blocks(lengths, K, REACH_BLOCK_ELEMENTS)]
        shapes = [(K, s1 - s0) for s0, s1 in blocks]
    else:
        L = int(lengths.max()) if M else 0
        inside = np.arange(L) < lengths[:, None]  # [M, L]
        qx, qy = np.full((M, L), np.nan), np.full((M, L), np.nan)
        qx[inside], qy[inside] = px, py
        n = max(1, REACH_BLOCK_ELEMENTS // max(K * L, 1))
        blocks = [(m0, min(M, m0 + n)) for m0 in range(0, M, n)]
        shapes = [(m1 - m0, K, L) for m0, m1 in blocks]
    size = max((int(np.prod(shape)) for shape in shapes), default=0)
    scratch_x, scratch_y, scratch_hit = np.empty(size), np.empty(size), np.empty(size, dtype=bool)
    for (lo, hi), shape in zip(blocks, shapes):
        x, y, hit = (a[: int(np.prod(shape))].reshape(shape) for a in (scratch_x, scratch_y, scratch_hit))
        if tasks.ndim == 2:
            dx = np.subtract(gx[:, None], px[lo:hi], out=x)
            dy = np.subtract(gy[:, None], py[lo:hi], out=y)
            limit = bound[:, None]
        else:
            dx = np.subtract(gx[lo:hi, :, None], qx[lo:hi, None, :], out=x)
            dy = np.subtract(gy[lo:hi, :, None], qy[lo:hi, None, :], out=y)
            limit = bound[lo:hi, :, None]
        dx *= dx
        dy *= dy
        dx += dy
        at_goal = np.flatnonzero(np.less(dx, limit, out=hit))
        if tasks.ndim == 2:
            k, s = np.divmod(at_goal, shape[1])
            m = seg[lo + s]
            np.minimum.at(first, (m, k), lo + s - starts[m])
        else:
            mk, t = np.divmod(at_goal, shape[2])
            m, k = np.divmod(mk, K)
            np.minimum.at(first, (lo + m, k), t)
    return first


def sqrt_less_bound(bound: np.ndarray) -> np.ndarray:
    """t [...] such that ``np.sqrt(s) < bound`` equals ``s < t`` for every float64 s >= 0.

    A distance test ||v|| < m on the squared norm s, with the decisions of the square root
    kept exactly: the correctly rounded sqrt is monotone, so {s : fl(sqrt(s)) < m} is the
    set of doubles below the smallest s with fl(sqrt(s)) >= m, which lies within a few ulps
    of m * m; t starts there and moves up while sqrt(t) < m, then down while the double
    below it still reaches m. m <= 0 (or NaN): no distance is below it, t = 0."""
    m = np.asarray(bound, dtype=np.float64)
    positive = m > 0
    t = np.where(positive, m * m, 0.0)
    for step_to, wrong in ((np.inf, lambda t: np.sqrt(t) < m), (0.0, lambda t: np.sqrt(np.nextafter(t, 0.0)) >= m)):
        for _ in range(8):
            move = positive & wrong(t)
            if not move.any():
                break
            t = np.where(move, np.nextafter(t, step_to), t)
        else:
            raise AssertionError("sqrt_less_bound: the bound is more than 8 ulps from m * m")
    return t


class ReacherGoalEnv(MujocoTaskEnv):
    """Reacher-v5 with a task-free observation [cos q (2), sin q (2), qdot (2), fingertip xy (2)].

    Reacher-v5's own observation holds its random target; ours leaves the target out (the
    learner appends the task) and adds the fingertip position. At reset the (collision-free,
    motionless) target body is moved to the task's goal so that renders show it.
    """

    def __init__(self, family: TaskFamily, task: np.ndarray, env: gym.Env):
        super().__init__(family, task, env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (family.obs_dim,), np.float64)
        self._fingertip = self.sim.model.body("fingertip").id

    def _observe(self, inner_obs: np.ndarray) -> np.ndarray:
        self._fresh_kinematics()  # the fingertip of this qpos (Reacher-v5's own obs lags a substep)
        data = self.sim.data
        q = data.qpos[:2]
        return np.concatenate([np.cos(q), np.sin(q), data.qvel[:2], data.xpos[self._fingertip][:2]])

    def _on_reset(self) -> None:
        qpos, qvel = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()
        qpos[2:], qvel[2:] = self.task[:2], 0.0
        self.sim.set_state(qpos, qvel)

    def _reward_inputs(self, before: np.ndarray) -> np.ndarray:
        return np.zeros(0)


class ReacherGoal(_MujocoFamily):
    """HIPI ``ReacherTaskDistribution`` on Reacher-v5, with goals for the fingertip.

    Task z = (g_x, g_y, margin): the goal g = r (cos, sin) phi with phi ~ U[-pi, pi] and
    r ~ U[0.05, 0.2] (HIPI's annulus, here in fingertip space instead of HIPI's accidental
    joint space); the margin is ``margin`` (default 0.02, about Reacher-v5's target radius
    .009 plus fingertip radius .01) or, with ``margin_range=(lo, hi)``, U[lo, hi] per task.
    On the PRE-step fingertip position p = obs[6:8] (HIPI evaluates s_t):
        r = 1[||p - g|| < margin] - 1,   terminated = ||p - g|| < margin.
    A goal family: achieved_goal = the pre-step fingertip xy, so a step relabeled with its own
    achieved goal gets r = 0. H = 100.
    """

    name = "reacher_goal"
    obs_dim = 8
    action_dim = 2
    task_dim = 3
    reward_input_dim = 0
    horizon = 100
    discount = 0.99
    num_eval_tasks = 30  # HIPI: 30 eval episodes on fresh tasks
    goal_dim = 2
    task_dependent_termination = True
    env_id = "Reacher-v5"
    env_class = ReacherGoalEnv

    def __init__(self, margin: float = 0.02, margin_range: tuple[float, float] | None = None):
        if margin <= 0 or (margin_range is not None and not 0 <= margin_range[0] <= margin_range[1]):
            raise ValueError(f"reacher_goal: bad margin {margin} / margin_range {margin_range}")
        self.margin = float(margin)
        self.margin_range = margin_range

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        phi = rng.uniform(-np.pi, np.pi, size=n)
        r = rng.uniform(0.05, 0.2, size=n)
        if self.margin_range is None:
            margin = np.full(n, self.margin)
        else:
            margin = rng.uniform(*self.margin_range, size=n)
        return np.stack([r * np.cos(phi), r * np.sin(phi), margin], axis=-1)

    def achieved_goal(self, steps: StepBatch) -> np.ndarray:
        """The pre-step fingertip position [..., 2] (what the reward tests)."""
        return np.asarray(steps.obs, dtype=np.float64)[..., 6:8]

    def with_goal(self, tasks: np.ndarray, goals: np.ndarray) -> np.ndarray:
        out = np.array(tasks, dtype=np.float64)
        out[..., :2] = goals
        return out

    def _at_goal(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        dist = np.linalg.norm(self.achieved_goal(steps) - tasks[..., :2], axis=-1)
        return dist < tasks[..., 2]

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self._at_goal(steps, tasks).astype(np.float64) - 1.0

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self._at_goal(steps, tasks)

    def segment_returns(self, steps: StepBatch, tasks: np.ndarray, weights: np.ndarray,
                        lengths: np.ndarray, float32: bool = False) -> np.ndarray:
        """``TaskFamily.segment_returns`` from each segment's first step at the goal.

        The reward is -1 on every step before the goal and 0 at it, where the episode ends
        (``terminal_fn``), so a segment's return under z is minus the sum of its weights
        before its first step at z's goal, all of them if it never gets there. Per (step,
        task) that is one squared distance compared with the task's ``sqrt_less_bound`` of
        its margin (the decisions of ||p - g|| < margin exactly; ``_first_at_goal``); the
        sums of weights are running sums along each segment, so segments with the same
        weights that reach their goals at the same step get the same return (AIR's ties),
        as in the step-by-step sum."""
        self.check_float32(float32)
        tasks = self.check_segment_tasks(tasks, len(lengths))
        w = np.asarray(weights, dtype=np.float64)
        lengths = np.asarray(lengths, dtype=np.int64)
        assert w.shape == (len(steps),), (w.shape, len(steps))
        first = _first_at_goal(self.achieved_goal(steps), tasks, lengths)  # [M, K] in 0 .. L_m
        # before[m, j]: the sum of segment m's first j weights, j = 0 .. L_m (a running sum
        # along each row of the weights padded with zeros after the segment's end)
        L = int(lengths.max()) if len(lengths) else 0
        padded = np.zeros((len(lengths), L + 1))
        padded[:, 1:][np.arange(L) < lengths[:, None]] = w
        before = np.cumsum(padded, axis=1)
        return 0.0 - np.take_along_axis(before, first, axis=1)
