"""A constant reward bias on some tasks of any family (HIPI Fig. 8, "Fig. 7b" in ALGORITHMS.md §6).

HIPI shows the partition function matters by corrupting the rewards of one task with a
constant: relabeling with log Z(psi) is unaffected (a per-task constant cancels in
R_ij - log Z_j), the ablation without it relabels disproportionately to the biased task.
Here the bias is a wrapper around any registered family, reached through ``get_family``
and therefore through a run's ``env.family_kwargs``:

    fam = get_family("test_goal", reward_bias=2.0)                      # half-space z[0] > 0
    fam = get_family("half_cheetah_mo", reward_bias=5.0, bias_tasks="eval_task", bias_task_index=0)
    hindsight train --family point_reacher --set env.family_kwargs.reward_bias=5

    r_b(s, a, s' | z) = r(s, a, s' | z) + b * 1[z in biased set]

Which tasks are "biased" (task spaces are continuous, so "one task" needs a definition):

``half_space`` (default)  z[bias_dim] > bias_threshold: a region holding a fixed fraction of
                          the prior (half of it for a prior symmetric about the threshold),
                          so the bias actually fires during training.
``eval_task``             the single task eval_tasks()[bias_task_index] of the family's fixed,
                          seeded evaluation list (HIPI biased "the first task", the velocity
                          sampled first): matched componentwise within ``bias_atol``. A
                          continuous prior almost never draws it, so this form is for fixed
                          task lists (evaluation, HIPI's candidate set = the batch's tasks).
``all``                   every task: a pure shift of the reward (a sanity check; every
                          strategy's ranking of tasks is unchanged by it).

Everything else is the base family's: dynamics, prior, termination, goals, name (so runs,
SAC defaults and stored trajectories keep working). ``rewards``, ``rewards_for`` and the
env's per-step reward all include the bias. A linear family stays linear: the bias is one
more feature (constant 1) whose task weight is b * 1[z biased], so AIR's discounted-feature
fast path stays exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from envs.core import StepBatch, TaskFamily

#: keyword arguments of ``get_family`` that configure the bias (the rest go to the family)
BIAS_KWARGS = ("reward_bias", "bias_tasks", "bias_dim", "bias_threshold", "bias_task_index", "bias_atol")

#: class attributes of the TaskFamily contract copied from the base family
_COPIED = (
    "name", "obs_dim", "action_dim", "task_dim", "reward_input_dim", "horizon", "discount",
    "linear", "feature_dim", "goal_dim", "timeout_is_terminal", "task_dependent_termination",
    "num_eval_tasks", "eval_seed", "meta", "num_train_tasks", "num_test_tasks", "has_success", "requires",
)


@dataclasses.dataclass(frozen=True)
class RewardBias:
    """Which tasks get a constant added to their reward, and how much."""

    reward_bias: float = 0.0
    """b: added to the reward of every step under a biased task (0: no bias, no wrapper)."""
    bias_tasks: Literal["half_space", "eval_task", "all"] = "half_space"
    """half_space: z[bias_dim] > bias_threshold; eval_task: the task
    eval_tasks()[bias_task_index]; all: every task."""
    bias_dim: int = 0
    """half_space: the task component compared with the threshold."""
    bias_threshold: float = 0.0
    """half_space: tasks with z[bias_dim] strictly above it are biased."""
    bias_task_index: int = 0
    """eval_task: index into the family's fixed evaluation task list."""
    bias_atol: float = 1e-6
    """eval_task: a task matches when every component is within this of the biased task
    (tasks travel as float64, but a float32 copy still matches)."""

    def __post_init__(self) -> None:
        if self.bias_tasks not in ("half_space", "eval_task", "all"):
            raise ValueError(
                f"bias_tasks must be 'half_space', 'eval_task' or 'all', got {self.bias_tasks!r}"
            )
        if not np.isfinite(self.reward_bias):
            raise ValueError(f"reward_bias must be finite, got {self.reward_bias}")
        if self.bias_atol < 0:
            raise ValueError(f"bias_atol must be >= 0, got {self.bias_atol}")

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "RewardBias | None":
        """Pop the bias keys out of ``kwargs`` (mutated); None when none was given."""
        given = {k: kwargs.pop(k) for k in BIAS_KWARGS if k in kwargs}
        if not given:
            return None
        if "reward_bias" in given:
            given["reward_bias"] = float(given["reward_bias"])
        return cls(**given)


class BiasedFamily(TaskFamily):
    """``base`` with b added to the reward of the biased tasks (see the module docstring).

        fam = BiasedFamily(get_family("test_goal"), RewardBias(reward_bias=2.0))
        fam.bias_mask(tasks)            # bool [K]: which tasks get b
        fam.rewards(steps, tasks)       # base rewards + b * mask  [B, K]
    """

    def __init__(self, base: TaskFamily, bias: RewardBias):
        self.base = base
        self.bias = bias
        for attr in _COPIED:
            setattr(self, attr, getattr(base, attr))
        if bias.bias_tasks == "half_space" and not 0 <= bias.bias_dim < base.task_dim:
            raise ValueError(f"bias_dim must be in [0, {base.task_dim}) for {base.name!r}, got {bias.bias_dim}")
        self._biased_task: np.ndarray | None = None
        if bias.bias_tasks == "eval_task":
            if not 0 <= bias.bias_task_index < base.num_eval_tasks:
                raise ValueError(
                    f"bias_task_index must be in [0, {base.num_eval_tasks}) for {base.name!r}, "
                    f"got {bias.bias_task_index}"
                )
            self._biased_task = base.eval_tasks()[bias.bias_task_index]  # [Z]
        if base.linear:
            self.feature_dim = base.feature_dim + 1  # the constant feature carrying the bias

    def __getattr__(self, name: str) -> Any:
        # Family-specific helpers (PointReacher.weights, env_id, ...) come from the base.
        # Guarded so that unpickling (no ``base`` yet) raises instead of recursing.
        if name.startswith("__") or name in ("base", "bias", "_biased_task"):
            raise AttributeError(name)
        return getattr(self.base, name)

    # ---- the bias --------------------------------------------------------------------
    def bias_mask(self, tasks: np.ndarray) -> np.ndarray:
        """Whether each task is biased: tasks [..., Z] -> bool [...]."""
        tasks = np.asarray(tasks, dtype=np.float64)
        kind = self.bias.bias_tasks
        if kind == "half_space":
            return tasks[..., self.bias.bias_dim] > self.bias.bias_threshold
        if kind == "eval_task":
            assert self._biased_task is not None
            return np.all(np.abs(tasks - self._biased_task) <= self.bias.bias_atol, axis=-1)
        return np.ones(tasks.shape[:-1], dtype=bool)

    def bias_of(self, tasks: np.ndarray) -> np.ndarray:
        """b * 1[task biased]: tasks [..., Z] -> [...] float64."""
        return self.bias.reward_bias * self.bias_mask(tasks).astype(np.float64)

    # ---- TaskFamily ------------------------------------------------------------------
    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return np.asarray(self.base.reward_fn(steps, tasks), dtype=np.float64) + self.bias_of(tasks)

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self.base.terminal_fn(steps, tasks)

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.base.sample_tasks(rng, n)

    def eval_tasks(self) -> np.ndarray:
        """The base family's evaluation set (a biased family is evaluated like its base)."""
        return self.base.eval_tasks()

    def eval_tasks_for(self, episodes: int | None = None) -> np.ndarray:
        return self.base.eval_tasks_for(episodes)

    def _task_list(self) -> np.ndarray:
        return self.base.task_list()

    def success_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self.base.success_fn(steps, tasks)

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        return RewardBiasEnv(self.base.make_env(task, seed=seed), self, task)

    def features(self, steps: StepBatch) -> np.ndarray:
        """Linear base: [phi, 1] [B, D + 1]."""
        phi = np.asarray(self.base.features(steps), dtype=np.float64)
        return np.concatenate([phi, np.ones(phi.shape[:-1] + (1,))], axis=-1)

    def task_weights(self, tasks: np.ndarray) -> np.ndarray:
        """Linear base: [w(z), b * 1[z biased]] [K, D + 1]."""
        tasks = self.check_tasks(tasks)
        w = np.asarray(self.base.task_weights(tasks), dtype=np.float64)
        return np.concatenate([w, self.bias_of(tasks)[:, None]], axis=-1)

    def achieved_goal(self, steps: StepBatch) -> np.ndarray:
        return self.base.achieved_goal(steps)

    def with_goal(self, tasks: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return self.base.with_goal(tasks, goals)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **dataclasses.asdict(self.bias)}


class RewardBiasEnv(gym.Wrapper):
    """The base family's env with b added to each step's reward while its task is biased.

    ``set_task`` (found by ``TaskFamily.set_env_task`` through ``get_wrapper_attr``) retasks
    both this wrapper and the env inside, so the two never disagree on the task.
    """

    def __init__(self, env: gym.Env, family: BiasedFamily, task: np.ndarray):
        super().__init__(env)
        self.family = family
        self.task = np.asarray(task, dtype=np.float64)

    def set_task(self, task: np.ndarray) -> None:
        self.task = np.asarray(task, dtype=np.float64)
        self.env.get_wrapper_attr("set_task")(task)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward) + float(self.family.bias_of(self.task)), terminated, truncated, info


def with_reward_bias(base: TaskFamily, bias: RewardBias | None) -> TaskFamily:
    """``base`` itself when there is nothing to add (no bias or b = 0), else the wrapper.

    The wrapper is built either way so that a bad ``bias_dim`` / ``bias_task_index`` is an
    error even at b = 0 (a sweep's first point)."""
    if bias is None:
        return base
    wrapped = BiasedFamily(base, bias)
    return base if bias.reward_bias == 0.0 else wrapped
