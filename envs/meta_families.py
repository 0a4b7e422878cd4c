"""HFR's meta-RL task families (Hindsight Foresight Relabeling, on PEARL).

Formulas, constants, seeds and task-list sizes follow the HFR reference code
(``michaelwan11/hfr: rlkit/envs/*.py``, ``configs/*.json``; REFERENCE-CODE §1c, §5):

``cheetah_vel``         HalfCheetah-v5, run at v* ~ U[0, 3]: r = -|v_x - v*| - 0.05 ||a||^2.
``cheetah_vel_sparse``  same, r = (-|v_x - v*| if |v_x - v*| <= 0.3 else -2) + 2 - 0.05 ||a||^2.
``cheetah_highdim``     HalfCheetah-v5 with root x in obs: r = w . (s' - mean) / std - 0.05 ||a||^2,
                        w ~ U[-1, 1]^18; linear. mean/std: ``envs/data/cheetah_highdim_stats.json``
                        (``python -m envs.stats cheetah_highdim``).
``ant_goal_sparse``     Ant-v5 at gear 30 (the reference's low-gear-ratio ant): reach a goal on the
                        half circle of radius 2; goal term 4 - L1 distance within 0.8 of the goal,
                        else its value at the origin; - 0.005 ||a||^2 - contact cost + 0.05.
``four_corners``        2-D point, p <- p + a/10: 0 and done within 0.2 of the goal corner, -3 in the
                        goal quadrant's trap square, else -1; success = reaching the goal.

Task lists: the reference builds ``n_tasks`` tasks with a fixed legacy numpy seed (``np.random.seed``)
and the launcher takes the first ``n_train_tasks`` for meta-training and the last
``n_eval_tasks`` for meta-test; ``_task_list`` rebuilds exactly those lists with
``np.random.RandomState(seed)`` (the same Mersenne-Twister stream), so our train and test tasks
are the reference's, value for value. 100/30 (disjoint) for the MuJoCo families; Four-Corners
trains and tests on the same four corners (4/4).

Actions: the reference wraps every env in rlkit's NormalizedBoxEnv, which maps [-1, 1] to the
env's action box and clips; all ranges here are [-1, 1] (Four-Corners: scaled by 0.1), so the
costs are computed on ``clip(a, -1, 1)`` and MuJoCo's ctrlrange clamps the dynamics alike.

reward_inputs per family (what the observation lacks):
    cheetah_vel, cheetah_vel_sparse   [v_x]            x displacement of the root / dt (I = 1)
    cheetah_highdim                   none: s' is the observation                     (I = 0)
    ant_goal_sparse                   [contact cost]   0.5e-3 sum(clip(cfrc_ext, -1, 1)^2) (I = 1)
    four_corners                      none: the post-step position is the observation  (I = 0)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Mapping

import gymnasium as gym
import numpy as np

from envs.core import StepBatch, TaskFamily
from envs.mujoco_families import MujocoTaskEnv, _MujocoFamily

#: NormalizedBoxEnv clips actions to [-1, 1] before the env computes its control cost
_ACTION_LOW, _ACTION_HIGH = -1.0, 1.0


def _sq_norm_clipped(action: Any) -> np.ndarray:
    a = np.clip(np.asarray(action, dtype=np.float64), _ACTION_LOW, _ACTION_HIGH)
    return np.sum(np.square(a), axis=-1)


class _HFRMujocoFamily(_MujocoFamily):
    """Shared parts of HFR's MuJoCo families: H = 200 (``max_path_length``), gamma 0.99,
    100 train / 30 test tasks from a list of 130 (``n_tasks`` in ``configs/*.json``)."""

    horizon = 200
    discount = 0.99
    meta = True
    num_train_tasks = 100
    num_test_tasks = 30
    num_eval_tasks = 30
    #: n_tasks of the reference config: the list that train and test tasks are cut from
    num_listed_tasks: ClassVar[int] = 130
    #: the legacy numpy seed the reference env sets before building its task list
    list_seed: ClassVar[int]


# ---- Cheetah-Vel and Cheetah-Vel-Sparse ------------------------------------------------


class CheetahVelEnv(MujocoTaskEnv):
    """HalfCheetah-v5 with HFR's 20-d observation [qpos[1:] (8), qvel (9), torso position (3)];
    reward_inputs [v_x] = root x displacement / dt over the step (the reference's forward_vel)."""

    def __init__(self, family: TaskFamily, task: np.ndarray, env: gym.Env):
        super().__init__(family, task, env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (family.obs_dim,), np.float64)
        self._torso = self.sim.model.body("torso").id

    def _observe(self, inner_obs: np.ndarray) -> np.ndarray:
        # The reference appends get_body_com("torso"); we read the torso body position of the
        # current qpos (mujoco-py's xpos lagged one physics substep behind qpos).
        self._fresh_kinematics()
        torso = self.sim.data.xpos[self._torso]
        return np.concatenate([np.asarray(inner_obs, dtype=np.float64), torso])

    def _before_step(self) -> np.ndarray:
        return self.sim.data.qpos[:1].copy()

    def _reward_inputs(self, before: np.ndarray) -> np.ndarray:
        return np.array([(self.sim.data.qpos[0] - before[0]) / self.sim.dt])


class CheetahVel(_HFRMujocoFamily):
    """HFR Cheetah-Vel (``half_cheetah_vel.py: HalfCheetahVelEnv``, ``configs/cheetah-vel.json``).

    Task z = (v*,), v* ~ U[0, 3] (the code's range; its docstring says [0, 2]). With the
    forward velocity v_x (root x displacement / dt):
        r = -|v_x - v*| - 0.05 ||clip(a)||^2          (ctrl cost 0.5 * 1e-1 * ||a||^2)
    Never terminates. Task list: legacy seed 3, 130 draws of U[0, 3]; train = first 100,
    test = last 30.
    """

    name = "cheetah_vel"
    obs_dim = 20
    action_dim = 6
    task_dim = 1
    reward_input_dim = 1
    list_seed = 3
    ctrl_cost_weight: ClassVar[float] = 0.05
    velocity_range: ClassVar[tuple[float, float]] = (0.0, 3.0)
    env_id = "HalfCheetah-v5"
    env_class = CheetahVelEnv

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(*self.velocity_range, size=(n, 1))

    def _task_list(self) -> np.ndarray:
        rs = np.random.RandomState(self.list_seed)
        return rs.uniform(*self.velocity_range, size=self.num_listed_tasks)[:, None]

    def _forward_reward(self, v_x: np.ndarray, target: np.ndarray) -> np.ndarray:
        return -np.abs(v_x - target)

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        v_x = np.asarray(steps.reward_inputs, dtype=np.float64)[..., 0]
        ctrl = self.ctrl_cost_weight * _sq_norm_clipped(steps.action)
        return self._forward_reward(v_x, tasks[..., 0]) - ctrl


class CheetahVelSparse(CheetahVel):
    """HFR Cheetah-Vel-Sparse (``half_cheetah_vel.py: HalfCheetahVelEnvSparse``).

    The dense forward term f = -|v_x - v*| is sparsified (``sparsify_rewards``, goal_radius 0.3):
        r = (f if f >= -0.3 else -2) + 2 - 0.05 ||clip(a)||^2
    so the forward part is in [1.7, 2] within 0.3 of v* and 0 outside. Task list: legacy
    seed 1, 130 draws of U[0, 3].
    """

    name = "cheetah_vel_sparse"
    list_seed = 1
    goal_radius: ClassVar[float] = 0.3

    def _forward_reward(self, v_x: np.ndarray, target: np.ndarray) -> np.ndarray:
        dense = -np.abs(v_x - target)
        return np.where(dense < -self.goal_radius, -2.0, dense) + 2.0


# ---- Cheetah-Highdim -------------------------------------------------------------------


#: normalisation statistics of cheetah_highdim's observation, written by ``python -m envs.stats``
HIGHDIM_STATS_PATH = Path(__file__).with_name("data") / "cheetah_highdim_stats.json"


class CheetahHighdimEnv(MujocoTaskEnv):
    """HalfCheetah-v5 with the root x position in the observation: [qpos (9), qvel (9)]."""

    def _reward_inputs(self, before: np.ndarray) -> np.ndarray:
        return np.zeros(0)


class CheetahHighdim(_HFRMujocoFamily):
    """HFR Cheetah-Highdim (``half_cheetah_high_dim.py``, ``configs/cheetah-highdim.json``).

    Task z = w ~ U[-1, 1]^18; on the post-step observation s' = [qpos, qvel] (18):
        r = w . (s' - mean) / std - 0.05 ||clip(a)||^2
    Linear: phi = [(s' - mean) / std, -0.05 ||clip(a)||^2] (D = 19) and task_weights(w) = [w, 1],
    so r = task_weights . phi exactly; the 18 task weights are HFR's d = 18 and the control cost
    rides along as a 19th feature with the fixed weight 1.

    mean/std: the reference loads them from its ``HCstate-state.pkl``; we compute ours with
    ``python -m envs.stats cheetah_highdim`` (uniform random actions from HalfCheetah-v5 resets,
    see ``envs/stats.py``) and ship them in ``envs/data/cheetah_highdim_stats.json``; another file
    can be given as ``stats_path``. Never terminates. Task list: legacy seed 1, 130 draws of
    U[-1, 1]^18.
    """

    name = "cheetah_highdim"
    obs_dim = 18
    action_dim = 6
    task_dim = 18
    reward_input_dim = 0
    linear = True
    feature_dim = 19
    list_seed = 1
    ctrl_cost_weight: ClassVar[float] = 0.05
    env_id = "HalfCheetah-v5"
    env_kwargs: ClassVar[Mapping[str, Any]] = {"exclude_current_positions_from_observation": False}
    env_class = CheetahHighdimEnv

    def __init__(self, stats_path: str | None = None):
        path = Path(stats_path) if stats_path is not None else HIGHDIM_STATS_PATH
        if not path.exists():
            raise FileNotFoundError(
                f"cheetah_highdim: normalisation statistics {path} not found; "
                "write them with `python -m envs.stats cheetah_highdim`"
            )
        stats = json.loads(path.read_text())
        self.stats_path = str(path)
        self.state_mean = np.asarray(stats["mean"], dtype=np.float64)
        self.state_std = np.asarray(stats["std"], dtype=np.float64)
        for key, arr in (("mean", self.state_mean), ("std", self.state_std)):
            if arr.shape != (self.obs_dim,) or not np.isfinite(arr).all():
                raise ValueError(f"cheetah_highdim: {key} in {path} must be {self.obs_dim} finite numbers")
        if not (self.state_std > 0).all():
            raise ValueError(f"cheetah_highdim: std in {path} must be positive")

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(n, self.task_dim))

    def _task_list(self) -> np.ndarray:
        # the reference draws one U[-1, 1]^18 vector per task from the seeded global stream
        rs = np.random.RandomState(self.list_seed)
        return rs.uniform(-1.0, 1.0, size=(self.num_listed_tasks, self.task_dim))

    def features(self, steps: StepBatch) -> np.ndarray:
        """phi [..., 19] = [(s' - mean) / std, -0.05 ||clip(a)||^2]."""
        norm = (np.asarray(steps.next_obs, dtype=np.float64) - self.state_mean) / self.state_std
        ctrl = -self.ctrl_cost_weight * _sq_norm_clipped(steps.action)
        return np.concatenate([norm, ctrl[..., None]], axis=-1)

    def task_weights(self, tasks: np.ndarray) -> np.ndarray:
        tasks = self.check_tasks(tasks)
        return np.concatenate([tasks, np.ones((len(tasks), 1))], axis=-1)

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        phi = self.features(steps)
        return np.sum(phi[..., :-1] * tasks, axis=-1) + phi[..., -1]


# ---- Ant-Goal-Sparse -------------------------------------------------------------------


class AntGoalEnv(MujocoTaskEnv):
    """Ant-v5 with the x-y position in the observation and the reference's gear ratio 30.

    Observation [qpos (15), qvel (14), clip(cfrc_ext[1:], -1, 1) (78)] = 107 (the reference's
    113 also lists the world body's six contact entries, which are always 0).
    reward_inputs [contact cost] after the step.
    """

    def __init__(self, family: TaskFamily, task: np.ndarray, env: gym.Env):
        super().__init__(family, task, env)
        # the reference's low_gear_ratio_ant.xml is Gymnasium's ant.xml with every motor at
        # gear 30 instead of 150 (plus render-only sites); the gear is a model parameter that
        # mj_step reads each step, so setting it here is the same model
        self.sim.model.actuator_gear[:, 0] = AntGoalSparse.gear

    def _reward_inputs(self, before: np.ndarray) -> np.ndarray:
        cfrc = np.clip(self.sim.data.cfrc_ext, -1.0, 1.0)
        return np.array([AntGoalSparse.contact_cost_weight * np.sum(np.square(cfrc))])


class AntGoalSparse(_HFRMujocoFamily):
    """HFR Ant-Goal, sparse (``ant_goal.py: AntGoalEnv``, ``sparse=True``; ``configs/ant-goal.json``).

    Task z = goal g (2); goals on the half circle of radius 2. On the post-step torso position
    p = s'[0:2] (the reference reads get_body_com("torso"); we read qpos[0:2], the same body
    without mujoco-py's one-substep lag):
        goal term  g_r = 4 - |p_x - g_x| - |p_y - g_y|    if ||p - g|| <= 0.8
                   g_r = 4 - |g_x| - |g_y|                otherwise (its value at the origin)
        r = g_r - 0.005 ||clip(a)||^2 - 0.5e-3 sum(clip(cfrc_ext, -1, 1)^2) + 0.05
    (ctrl cost 0.5 * 1e-2 ||a / scaling||^2 with scaling 1 for ctrlrange [-1, 1]).
    Terminates, task-independently, when unhealthy: state not finite or torso z outside
    [0.2, 1.0] (as the reference and Ant-v5). Task list: angles linspace(0, pi, 130), goals
    2 (cos, sin), rows shuffled with legacy seed 1; train = first 100, test = last 30.
    The prior ``sample_tasks``: angle ~ U[0, pi] on the same half circle.
    """

    name = "ant_goal_sparse"
    obs_dim = 107
    action_dim = 8
    task_dim = 2
    reward_input_dim = 1
    list_seed = 1
    radius: ClassVar[float] = 2.0
    goal_band: ClassVar[float] = 0.8
    ctrl_cost_weight: ClassVar[float] = 0.005
    contact_cost_weight: ClassVar[float] = 0.5e-3
    survive_reward: ClassVar[float] = 0.05
    gear: ClassVar[float] = 30.0
    healthy_z_range: ClassVar[tuple[float, float]] = (0.2, 1.0)
    env_id = "Ant-v5"
    env_kwargs: ClassVar[Mapping[str, Any]] = {"exclude_current_positions_from_observation": False}
    env_class = AntGoalEnv

    def _goals(self, angles: np.ndarray) -> np.ndarray:
        return self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._goals(rng.uniform(0.0, np.pi, size=n))

    def _task_list(self) -> np.ndarray:
        goals = self._goals(np.linspace(0.0, np.pi, num=self.num_listed_tasks))
        np.random.RandomState(self.list_seed).shuffle(goals)  # shuffles the rows
        return goals

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        p = np.asarray(steps.next_obs, dtype=np.float64)[..., :2]
        contact_cost = np.asarray(steps.reward_inputs, dtype=np.float64)[..., 0]
        dist = np.linalg.norm(p - tasks, axis=-1)
        near = 4.0 - np.sum(np.abs(p - tasks), axis=-1)
        far = 4.0 - np.sum(np.abs(tasks), axis=-1)
        goal_reward = np.where(dist > self.goal_band, far, near)
        ctrl_cost = self.ctrl_cost_weight * _sq_norm_clipped(steps.action)
        return goal_reward - ctrl_cost - contact_cost + self.survive_reward

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        state = np.asarray(steps.next_obs, dtype=np.float64)[..., :29]  # qpos, qvel
        z = state[..., 2]
        low, high = self.healthy_z_range
        healthy = np.isfinite(state).all(axis=-1) & (z >= low) & (z <= high)
        return np.broadcast_to(~healthy, np.broadcast_shapes(z.shape, tasks.shape[:-1]))


# ---- Four-Corners ----------------------------------------------------------------------


class FourCornersEnv(gym.Env):
    """HFR ``point_robot.py: FourCorners``: obs = position (x, y), start at the origin,
    p <- p + 0.1 clip(a, -1, 1) (NormalizedBoxEnv maps [-1, 1] onto the [-0.1, 0.1] box), no
    walls. Reward and termination come from the family; ``info["success"]`` each step."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, family: "FourCorners", task: np.ndarray):
        self.family = family
        self.task = np.zeros(family.task_dim)
        self.set_task(task)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._p = np.zeros(2)
        self._t = 0

    def set_task(self, task: np.ndarray) -> None:
        self.task = self.family.check_tasks(np.asarray(task)[None])[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._p = np.zeros(2)
        self._t = 0
        return self._p.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(2)
        obs = self._p.copy()
        self._p = self._p + self.family.step_scale * np.clip(a, _ACTION_LOW, _ACTION_HIGH)
        self._t += 1
        steps = StepBatch(obs[None], a[None], self._p[None].copy(), np.zeros((1, 0)))
        task = self.task[None]
        reward = float(self.family.rewards_for(steps, task)[0])
        terminated = bool(self.family.terminals_for(steps, task)[0])
        success = bool(self.family.success_for(steps, task)[0])
        truncated = self._t >= self.family.horizon
        return self._p.copy(), reward, terminated, truncated, {"reward_inputs": np.zeros(0), "success": success}


class FourCorners(TaskFamily):
    """HFR Four-Corners (``point_robot.py: FourCorners``, ``configs/four-corners.json``).

    Task z = goal corner g in the reference's order (-1,-1), (1,1), (1,-1), (-1,1); the same
    four tasks are the train and the test list (n_tasks 4, 4 train, 4 eval). On the post-step
    position p = s':
        ||p - g|| <= 0.2        r = 0, done, success
        p in g's trap square    r = -3
        otherwise               r = -1
    The trap is the open square 0.1 < |x|, |y| < 0.5 in the goal's quadrant, chosen as the
    reference's if-chain does: goal (-1,-1) -> (-,-), (1,1) -> (+,+), (1,-1) -> (+,-), any other
    goal -> (-,+). H = 20, gamma 0.9. The prior ``sample_tasks`` draws a corner uniformly.
    """

    name = "four_corners"
    obs_dim = 2
    action_dim = 2
    task_dim = 2
    reward_input_dim = 0
    horizon = 20
    discount = 0.9
    task_dependent_termination = True
    meta = True
    num_train_tasks = 4
    num_test_tasks = 4
    num_eval_tasks = 4
    has_success = True
    step_scale: ClassVar[float] = 0.1
    goal_radius: ClassVar[float] = 0.2
    trap_range: ClassVar[tuple[float, float]] = (0.1, 0.5)
    corners: ClassVar[np.ndarray] = np.array([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])

    def _task_list(self) -> np.ndarray:
        return self.corners.copy()

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.corners[rng.integers(len(self.corners), size=n)]

    def success_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        p = np.asarray(steps.next_obs, dtype=np.float64)
        return np.linalg.norm(p - tasks, axis=-1) <= self.goal_radius

    def _in_trap(self, p: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        gx, gy = tasks[..., 0], tasks[..., 1]
        plus_x = (gx == 1.0) & ((gy == 1.0) | (gy == -1.0))  # goals (1, 1) and (1, -1)
        minus_y = (gy == -1.0) & ((gx == -1.0) | (gx == 1.0))  # goals (-1, -1) and (1, -1)
        sx, sy = np.where(plus_x, 1.0, -1.0), np.where(minus_y, -1.0, 1.0)
        lo, hi = self.trap_range
        u, v = sx * p[..., 0], sy * p[..., 1]
        return (u > lo) & (u < hi) & (v > lo) & (v < hi)

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        p = np.asarray(steps.next_obs, dtype=np.float64)
        miss = np.where(self._in_trap(p, tasks), -3.0, -1.0)
        return np.where(self.success_fn(steps, tasks), 0.0, miss)

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self.success_fn(steps, tasks)

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        env = FourCornersEnv(self, task)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env
