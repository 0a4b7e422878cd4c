"""Tiny task families for tests and smoke runs: 2-D point, numpy only, 10-step episodes.

``test_goal``   reach a goal g in [-1, 1]^2: r = -||p' - g|| on the post-step position;
                a goal family (HER applies), never terminates.
``test_linear`` r = w . [x', y', -||a||^2] with w on the unit sphere: a linear family, so
                AIR's discounted-feature-sum fast path can be checked against the naive form.
``test_meta_goal`` a meta family (PEARL / HFR pipeline tests): goals on the circle of radius
                0.8, fixed lists of 6 train and 3 test goals; r = -||p' - g||, success
                ||p' - g|| <= 0.2 (optionally ending the episode: ``terminate_on_success``).

Dynamics: p <- clip(p + a / 5, -1, 1), start at the origin, obs = p, H = 10, gamma = 0.9.

Fault injection (``hindsight chaos``): with ``fault_dir=DIR`` (a family kwarg), the env
that first sees a file ``DIR/raise``, ``DIR/stall`` or ``DIR/nan`` claims it (an atomic
rename, so exactly one env acts on it) and raises, sleeps for the number of seconds the
file holds, or gives its round one NaN reward. Rollout workers only: an eval actor does
not look.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.core import StepBatch, TaskFamily

_STEP_SCALE = 0.2
FAULTS = ("raise", "stall", "nan")


class InjectedFault(RuntimeError):
    """Raised by a test env on request (``fault_dir``): a chaos fault, not a bug."""


def _claim_fault(fault_dir: str) -> tuple[str, str] | None:
    """(fault, file content) of a fault file this process claimed, or None."""
    for name in FAULTS:
        src = Path(fault_dir) / name
        if not src.exists():
            continue
        dst = src.with_name(f"{name}.claimed-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(src, dst)  # atomic: one claimant
        except OSError:
            continue
        return name, dst.read_text().strip()
    return None


class _PointEnv(gym.Env):
    """A 2-D point whose reward comes from its family's ``rewards_for``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, family: TaskFamily, task: np.ndarray):
        self.family = family
        self.task = np.asarray(task, dtype=np.float64)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._p = np.zeros(2)
        self._t = 0

    def set_task(self, task: np.ndarray) -> None:
        self.task = np.asarray(task, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._p = np.zeros(2)
        self._t = 0
        return self._p.copy(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs = self._p.copy()
        self._p = np.clip(self._p + _STEP_SCALE * a, -1.0, 1.0)
        self._t += 1
        steps = StepBatch(obs[None], a[None], self._p[None].copy(), np.zeros((1, 0)))
        reward = float(self.family.rewards_for(steps, self.task[None])[0])
        terminated = bool(self.family.terminals_for(steps, self.task[None])[0])
        truncated = self._t >= self.family.horizon
        info: dict[str, Any] = {"reward_inputs": np.zeros(0)}
        if self.family.has_success:
            info["success"] = bool(self.family.success_for(steps, self.task[None])[0])
        if self.family.fault_dir:
            fault = _claim_fault(self.family.fault_dir)
            if fault is not None:
                name, arg = fault
                if name == "raise":
                    raise InjectedFault(f"injected env fault at step {self._t} (fault_dir {self.family.fault_dir})")
                if name == "stall":
                    time.sleep(float(arg or 3600))
                if name == "nan":
                    self.family.nan_pending = True
        return self._p.copy(), reward, terminated, truncated, info


class _TestPoint(TaskFamily):
    obs_dim = 2
    action_dim = 2
    task_dim = 2
    reward_input_dim = 0
    horizon = 10
    discount = 0.9
    num_eval_tasks = 8
    fault_dir: str | None = None
    nan_pending = False

    def __init__(self, fault_dir: str | None = None):
        self.fault_dir = fault_dir

    def rewards_for(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        r = super().rewards_for(steps, tasks)
        # an injected NaN reward lands in the round's batched reward call (a round has
        # many steps; the env's own one-step call does not take it)
        if self.nan_pending and len(steps) > 1:
            self.nan_pending = False
            r = np.array(r, dtype=np.float64)
            r[0] = np.nan
        return r

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        env = _PointEnv(self, task)
        env.reset(seed=seed)
        return env


class TestGoal(_TestPoint):
    """Reach g: r = -||p' - g||. Task = goal, uniform in [-1, 1]^2."""

    __test__ = False  # not a pytest class
    name = "test_goal"
    goal_dim = 2

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(n, 2))

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return -np.linalg.norm(steps.next_obs - tasks, axis=-1)

    def achieved_goal(self, steps: StepBatch) -> np.ndarray:
        return np.asarray(steps.next_obs)

    def with_goal(self, tasks: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return np.array(goals, dtype=np.float64)


class TestLinear(_TestPoint):
    """r = w . phi, phi = [x', y', -||a||^2], w uniform on the unit sphere in R^3."""

    __test__ = False
    name = "test_linear"
    task_dim = 3
    linear = True
    feature_dim = 3

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        w = rng.normal(size=(n, 3))
        return w / np.linalg.norm(w, axis=-1, keepdims=True)

    def features(self, steps: StepBatch) -> np.ndarray:
        a2 = np.sum(np.square(steps.action), axis=-1, keepdims=True)
        return np.concatenate([steps.next_obs, -a2], axis=-1)

    def task_weights(self, tasks: np.ndarray) -> np.ndarray:
        return self.check_tasks(tasks)

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return np.sum(self.features(steps) * tasks, axis=-1)


class TestMetaGoal(_TestPoint):
    """A tiny meta family: reach a goal g on the circle of radius 0.8, r = -||p' - g||.

    Fixed task list (seed ``list_seed``): 9 goals at uniform random angles, the first 6 for
    meta-training and the last 3 held out (disjoint). The prior ``sample_tasks`` draws goals
    at uniform angles on the same circle. Success: ||p' - g|| <= 0.2 on the post-step
    position; with ``terminate_on_success`` it also ends the episode (as Four-Corners does).
    """

    __test__ = False
    name = "test_meta_goal"
    meta = True
    num_train_tasks = 6
    num_test_tasks = 3
    num_eval_tasks = 3
    has_success = True
    radius: ClassVar[float] = 0.8
    success_radius: ClassVar[float] = 0.2
    list_seed: ClassVar[int] = 7

    def __init__(self, terminate_on_success: bool = False):
        self.terminate_on_success = bool(terminate_on_success)
        self.task_dependent_termination = self.terminate_on_success

    def _goals(self, angles: np.ndarray) -> np.ndarray:
        return self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    def _task_list(self) -> np.ndarray:
        n = self.num_train_tasks + self.num_test_tasks
        return self._goals(np.random.default_rng(self.list_seed).uniform(0.0, 2 * np.pi, size=n))

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._goals(rng.uniform(0.0, 2 * np.pi, size=n))

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return -np.linalg.norm(steps.next_obs - tasks, axis=-1)

    def success_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return np.linalg.norm(steps.next_obs - tasks, axis=-1) <= self.success_radius

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        if self.terminate_on_success:
            return self.success_fn(steps, tasks)
        return super().terminal_fn(steps, tasks)
