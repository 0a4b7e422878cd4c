"""GH Fetch reach (GH §5 and appendix A; REFERENCE-CODE §1a) on gymnasium-robotics' FetchReach-v4.

The optional extra ``pip install -e .[robotics]`` brings the simulator; the family itself (prior,
batched reward, goals) is pure numpy and always registered, so stored Fetch trajectories can be
relabeled anywhere. ``make_env`` raises an ImportError naming the extra when it is missing.

    fam = get_family("fetch_reach")                   # GH's setting: exp goal kernel (sparse=1)
    R = fam.rewards(steps, tasks)                     # [B, K]
    env = fam.make_env(task, seed=0)                  # needs gymnasium-robotics

Dynamics: FetchReach (gripper blocked, mocap position control a[:3] * 0.05 per step) with
``n_substeps = 100`` instead of 20 (GH: "we increase the number of solver iterations from 20 to
100 ... reduce control noise"), H = 50. Observation: the env's 10-d ``observation`` (gripper
position, finger state, velocities; no goal) plus t/H, because GH stores the time-limit step as
terminal (``timeout_is_terminal``; GH's ``--insert_time``).

Task z (8-d) = [u, v, goal xyz, obstacle xyz]: u ~ U[0, .25], v ~ U[.5, 1] (the spherical
weights of ``PointReacher``, all >= 0); goal and obstacle each from the Fetch goal sampler,
initial gripper position + U(-.25, .25)^3 (GH's ``target_range=0.25``). On the POST-step gripper
position e = next_obs[:3] (GH's ``end_effector_loc`` = achieved_goal) and the clipped action:
    d = ||e - goal||
    reach  = s exp(-d^2 / .08^2)      if s <= 1.01  (default s = 1)
             1[d < .04]               if s <= 2.01
             0.2 - d                  otherwise      (s = ``sparse``, GH's --sparse value)
    energy = -||clip(a)[:3]||
    safety = log10(||e - obstacle|| + .01) / 5
    r = c0 reach + c1 energy + c2 safety,  c = spherical(u, v)
The GH paper writes the reach term as 2 exp(-d^2/.08^2) and the safety term with the squared
distance; the GH code (``FetchReachRelabelerWithGoalAndObs``) is what is written here, and in it
s = 2 selects the indicator, not 2 exp. A goal family for HER (GH's ``HERFetchReacherRelabeler``
replaces the goal with achieved gripper positions): achieved_goal = e.

Evaluation: GH's 25 fixed latents (``FETCH_REACH_GOAL_OBS_LATENT``), with one conscious change:
their goal and obstacle coordinates lie in [-.15, .15]^3, the frame of GH's PointReacherEnv3D,
far from the Fetch workspace (REFERENCE-CODE §1a quirk), so we add the initial gripper position to
them, keeping their offsets and weights.

Compatibility: gymnasium-robotics 1.4.2 compares ``model.jnt_type`` (numpy ints) with MuJoCo's
enum inside a tuple, which MuJoCo 4's enums fail; ``_patch_joint_types`` gives that module plain
integer joint types when (and only when) the check would fail.
"""

from __future__ import annotations

import types
from typing import Any

import gymnasium as gym
import numpy as np

from envs.core import StepBatch, TaskFamily
from envs.point import PointReacher

#: FetchReach-v4's gripper position after reset (``initial_gripper_xpos``; the same every reset,
#: checked against the simulator by tests/test_fetch.py)
INITIAL_GRIPPER_XPOS = np.array([1.34181322, 0.74910098, 0.53472178])

#: GH ``FETCH_REACH_GOAL_OBS_LATENT``: [u, v, goal xyz, obstacle xyz] in GH's (off-workspace) frame
GH_EVAL_LATENTS = np.array([
    [0.10126277, 0.64245167, -0.12288969, -0.14686053, 0.11735059, -0.13659736, -0.01123568, 0.12896574],
    [0.11593337, 0.52747311, -0.06648309, -0.0328189, -0.08696408, 0.11249108, -0.0120161, 0.12197474],
    [0.21195584, 0.85319872, 0.02356424, 0.05209233, -0.05621666, -0.07906769, -0.04695785, -0.10733698],
    [0.19370129, 0.88995805, -0.11448013, -0.13860674, -0.13185864, 0.077842, 0.1087868, -0.1472574],
    [0.18305801, 0.92529714, -0.00800226, 0.14989454, -0.10410757, 0.02186971, 0.03501042, 0.09638873],
    [0.07748088, 0.75190604, -0.13242356, -0.06625009, 0.12480083, 0.04327973, 0.10611059, 0.12656837],
    [0.17014472, 0.88150262, 0.00404972, 0.11908624, 0.07916375, -0.0473274, 0.09535931, -0.13810841],
    [0.17442849, 0.72514052, -0.01490664, -0.10844539, -0.10286659, -0.04311626, 0.06946191, -0.01480412],
    [0.15044649, 0.79996474, 0.12271609, -0.10057711, -0.02883204, -0.03781833, 0.10758082, -0.03195031],
    [0.09489788, 0.77674714, -0.06656682, -0.03491745, -0.07059197, -0.03616506, 0.01504045, -0.08371065],
    [0.05882009, 0.55622796, -0.13133974, 0.13493626, -0.02308475, 0.04979635, -0.03457402, 0.13028899],
    [0.16361708, 0.52253397, -0.09097046, 0.0156797, -0.099102, -0.14591321, 0.0061053, -0.0228864],
    [0.1308834, 0.96416902, 0.07783616, -0.06216742, -0.03032225, 0.13883346, 0.00946724, -0.13853528],
    [0.06628812, 0.60416869, -0.07982975, 0.08601853, 0.08959607, -0.04094998, 0.02674868, 0.12697788],
    [0.19234786, 0.75423871, -0.09985747, 0.11755801, -0.14209721, -0.08139881, 0.02391522, 0.13879016],
    [0.1264851, 0.56274456, 0.0184108, -0.02701206, -0.12859946, 0.11180836, 0.01353848, -0.13410928],
    [0.18127899, 0.90923204, -0.11464483, 0.10944955, -0.09417341, -0.01908949, -0.13652661, -0.11127334],
    [0.07548721, 0.94683056, 0.01276596, -0.06649608, 0.06600069, 0.14547838, -0.10669247, 0.06087561],
    [0.10470897, 0.85979984, -0.02544157, 0.05826874, 0.13731775, -0.07298912, -0.1073075, 0.01707364],
    [0.03332223, 0.68292793, 0.07000028, 0.14527542, 0.05561542, -0.02434357, -0.13558749, -0.04456164],
    [0.22055881, 0.53954813, 0.05284785, 0.13026643, 0.11788479, 0.083488, 0.0265561, 0.01504394],
    [0.21291585, 0.83934703, 0.05025748, 0.0324618, -0.14475401, 0.0990384, 0.042525, 0.03291613],
    [0.22292532, 0.76991271, -0.03434346, 0.14193523, 0.1489154, 0.07295106, -0.05242912, -0.06191916],
    [0.23403862, 0.59558852, -0.00537898, 0.14266103, 0.09071622, -0.1287594, -0.09069456, -0.08365761],
    [0.12648423, 0.88088248, 0.0278666, -0.08921442, 0.09152501, 0.08517244, -0.10236554, 0.03749314],
])


def _patch_joint_types() -> None:
    """Make gymnasium-robotics' joint helpers work under MuJoCo 4 (see the module docstring)."""
    import mujoco
    from gymnasium_robotics.utils import mujoco_utils

    hinge = mujoco.mjtJoint.mjJNT_HINGE
    if np.int32(int(hinge)) in (hinge,) or isinstance(mujoco_utils.mujoco, types.SimpleNamespace):
        return
    proxy = types.SimpleNamespace(**{k: getattr(mujoco, k) for k in dir(mujoco) if not k.startswith("__")})
    proxy.mjtJoint = types.SimpleNamespace(
        **{n: int(getattr(mujoco.mjtJoint, n)) for n in ("mjJNT_FREE", "mjJNT_BALL", "mjJNT_SLIDE", "mjJNT_HINGE")}
    )
    mujoco_utils.mujoco = proxy


def _gymnasium_robotics() -> Any:
    try:
        import gymnasium_robotics
    except ModuleNotFoundError as err:
        raise ImportError(
            "family 'fetch_reach' needs gymnasium-robotics, the optional extra: pip install -e '.[robotics]'"
        ) from err
    _patch_joint_types()
    gym.register_envs(gymnasium_robotics)
    return gymnasium_robotics


class FetchReachTaskEnv(gym.Wrapper):
    """FetchReach-v4 with n_substeps 100, observation [observation (10), t/H], the family's reward.

    The env's own goal is set to the task's goal at every reset (its marker shows it); its
    reward and success flag are replaced by the family's reward."""

    def __init__(self, family: "FetchReach", task: np.ndarray, env: gym.Env):
        super().__init__(env)
        self.family = family
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (family.obs_dim,), np.float64)
        self.task = np.zeros(family.task_dim)
        self.set_task(task)
        self._t = 0
        self._obs = np.zeros(family.obs_dim)

    def set_task(self, task: np.ndarray) -> None:
        self.task = self.family.check_tasks(np.asarray(task)[None])[0]

    def _observe(self, inner: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(inner["observation"], dtype=np.float64), [self._t / self.family.horizon]])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        inner, info = self.env.reset(seed=seed, options=options)
        self.env.unwrapped.goal = FetchReach.goal(self.task).copy()
        self._t = 0
        self._obs = self._observe(inner)
        return self._obs.copy(), info

    def step(self, action: Any):
        a = np.asarray(action, dtype=np.float64).reshape(self.family.action_dim)
        inner, _, _, _, info = self.env.step(np.clip(a, -1.0, 1.0))
        self._t += 1
        next_obs = self._observe(inner)
        steps = StepBatch(self._obs[None], a[None], next_obs[None], np.zeros((1, 0)))
        reward = float(self.family.rewards_for(steps, self.task[None])[0])
        self._obs = next_obs
        truncated = self._t >= self.family.horizon
        return next_obs.copy(), reward, False, truncated, {**info, "reward_inputs": np.zeros(0)}


class FetchReach(TaskFamily):
    """GH Fetch reach (see the module docstring)."""

    name = "fetch_reach"
    obs_dim = 11
    action_dim = 4
    task_dim = 8
    reward_input_dim = 0
    horizon = 50
    discount = 0.98
    goal_dim = 3
    timeout_is_terminal = True
    requires = ("gymnasium_robotics",)  # the ``robotics`` extra
    target_range = 0.25
    env_id = "FetchReach-v4"

    def __init__(self, sparse: float = 1.0, n_substeps: int = 100):
        if not sparse > 0 or n_substeps < 1:
            raise ValueError(f"fetch_reach: need sparse > 0 and n_substeps >= 1, got {sparse}, {n_substeps}")
        self.sparse = float(sparse)
        self.n_substeps = int(n_substeps)

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        weights = rng.uniform([0.0, 0.5], [0.25, 1.0], size=(n, 2))
        points = INITIAL_GRIPPER_XPOS + rng.uniform(-self.target_range, self.target_range, size=(n, 2, 3))
        return np.concatenate([weights, points.reshape(n, 6)], axis=1)

    def eval_tasks(self) -> np.ndarray:
        """GH's 25 eval latents with goal and obstacle moved into the workspace: [25, 8]."""
        out = GH_EVAL_LATENTS.copy()
        out[:, 2:5] += INITIAL_GRIPPER_XPOS
        out[:, 5:8] += INITIAL_GRIPPER_XPOS
        return out

    @staticmethod
    def goal(tasks: np.ndarray) -> np.ndarray:
        return np.asarray(tasks)[..., 2:5]

    @staticmethod
    def obstacle(tasks: np.ndarray) -> np.ndarray:
        return np.asarray(tasks)[..., 5:8]

    def reach_term(self, d: np.ndarray) -> np.ndarray:
        """GH's distance term of ``--sparse`` s (see the module docstring)."""
        if self.sparse <= 1.01:
            return self.sparse * np.exp(-np.square(d) / 0.08**2)
        if self.sparse <= 2.01:
            return (d < 0.04).astype(np.float64)
        return 0.2 - d

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        e = np.asarray(steps.next_obs, dtype=np.float64)[..., :3]
        a = np.clip(np.asarray(steps.action, dtype=np.float64)[..., :3], -1.0, 1.0)
        c = PointReacher.weights(tasks)  # [..., 3] from (u, v) = tasks[..., :2]
        reach = self.reach_term(np.linalg.norm(e - self.goal(tasks), axis=-1))
        energy = -np.linalg.norm(a, axis=-1)
        safety = np.log10(np.linalg.norm(e - self.obstacle(tasks), axis=-1) + 0.01) / 5.0
        return c[..., 0] * reach + c[..., 1] * energy + c[..., 2] * safety

    def achieved_goal(self, steps: StepBatch) -> np.ndarray:
        """The post-step gripper position [..., 3] (GH's ``end_effector_loc``)."""
        return np.asarray(steps.next_obs, dtype=np.float64)[..., :3]

    def with_goal(self, tasks: np.ndarray, goals: np.ndarray) -> np.ndarray:
        out = np.array(tasks, dtype=np.float64)
        out[..., 2:5] = goals
        return out

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        _gymnasium_robotics()
        inner = gym.make(self.env_id, max_episode_steps=self.horizon)
        inner.unwrapped.n_substeps = self.n_substeps  # FetchReach-v4 hard-codes 20 in its constructor
        inner.unwrapped.target_range = self.target_range
        env = FetchReachTaskEnv(self, task, inner)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env
