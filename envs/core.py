"""Vocabulary of task families.

A *task family* is a task prior p(z) plus a reward r(s, a, s' | z) (and, where ending
depends on the task, a termination rule) over one shared dynamics. Families are plain
numpy objects: no Ray, no torch, so every reward is a pure batched function.

    fam = get_family("point_reacher")
    tasks = fam.sample_tasks(np.random.default_rng(0), 100)          # [K, Z]
    R = fam.rewards(steps, tasks)                                    # [B, K]

Shapes (letters used in every docstring of this package):
    B  recorded steps          K  tasks          Z  task_dim
    O  obs_dim                 A  action_dim     I  reward_input_dim
    D  feature_dim (linear families only)        G  goal_dim (goal families only)

Each family writes its reward *once*, for broadcastable arrays (``reward_fn``), and the
base class derives the two batched forms from it:

* ``rewards(steps, tasks[K, Z]) -> [B, K]``   every step under every task (AIR, HIPI);
* ``rewards_for(steps, tasks[B, Z]) -> [B]``  each step under its own task (HER, HIPI-RL).

Whatever the reward needs that the observation lacks (x-velocity, contact cost, the
post-step fingertip position, ...) is recorded per step in ``reward_inputs`` so that any
stored step can be rewarded under any task later, without the simulator.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np


class StepBatch(NamedTuple):
    """B recorded steps; everything a family needs to reward them under any task."""

    obs: np.ndarray  # [B, O] observation before the step
    action: np.ndarray  # [B, A]
    next_obs: np.ndarray  # [B, O] observation after the step
    reward_inputs: np.ndarray  # [B, I] per-step quantities the observation lacks

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def expand(self) -> "StepBatch":
        """Insert a task axis after the batch axis: arrays [B, 1, ...] (for [B, K] rewards)."""
        return StepBatch(*(np.asarray(x)[:, None] for x in self))


class UnknownFamilyError(KeyError):
    """Raised for a family name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class TaskFamily:
    """Base class of every task family.

    Subclasses set the class attributes and implement ``reward_fn``, ``_sample_tasks``
    and ``make_env``; ``terminal_fn``, ``features``, ``task_weights`` and
    ``achieved_goal`` where they apply.
    """

    name: ClassVar[str]
    obs_dim: ClassVar[int]
    action_dim: ClassVar[int]
    task_dim: ClassVar[int]
    reward_input_dim: ClassVar[int]
    horizon: ClassVar[int]
    discount: ClassVar[float]
    #: r = task_weights(z) . features(step)  (discounted returns are then dot products)
    linear: ClassVar[bool] = False
    feature_dim: ClassVar[int] = 0
    #: a goal family supports HER: achieved_goal(steps) and with_goal(tasks, goals)
    goal_dim: ClassVar[int] = 0
    #: GH point envs store the time-limit step as terminal (REFERENCE-CODE §8)
    timeout_is_terminal: ClassVar[bool] = False
    #: whether ``terminal_fn`` depends on the task (sparse goals end on success)
    task_dependent_termination: ClassVar[bool] = False
    #: size of the fixed, seeded evaluation task set
    num_eval_tasks: ClassVar[int] = 25
    eval_seed: ClassVar[int] = 12345

    # ---- to implement -------------------------------------------------------------
    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Reward for broadcastable arrays: steps fields [..., X], tasks [..., Z] -> [...]."""
        raise NotImplementedError

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Termination for broadcastable arrays -> bool [...]. Default: never."""
        shape = np.broadcast_shapes(steps.action.shape[:-1], tasks.shape[:-1])
        return np.zeros(shape, dtype=bool)

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        """A Gymnasium env for one task whose reward equals ``rewards_for`` on its steps.

        Its ``info`` carries ``"reward_inputs"`` ([I]) every step.
        """
        raise NotImplementedError

    def set_env_task(self, env: gym.Env, task: np.ndarray) -> None:
        """Point an env made by ``make_env`` at another task (takes effect at its next reset).

        Rollout workers keep one env per slot and retask it per episode instead of building
        a new simulator each time. Every family's env has a ``set_task(task)`` method;
        ``get_wrapper_attr`` finds it through any Gymnasium wrappers.
        """
        task = np.asarray(task, dtype=np.float64)
        if task.shape != (self.task_dim,):
            raise ValueError(f"family {self.name!r}: a task has shape ({self.task_dim},), got {task.shape}")
        env.get_wrapper_attr("set_task")(task)

    # ---- derived, batched ----------------------------------------------------------
    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n tasks from the prior p(z): [n, Z] float64."""
        tasks = np.asarray(self._sample_tasks(rng, n), dtype=np.float64)
        assert tasks.shape == (n, self.task_dim), tasks.shape
        return tasks

    def eval_tasks(self) -> np.ndarray:
        """The family's fixed, seeded evaluation set: [num_eval_tasks, Z]."""
        return self.sample_tasks(np.random.default_rng(self.eval_seed), self.num_eval_tasks)

    def rewards(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Every step under every task in one call: [B, K]."""
        tasks = self.check_tasks(tasks)
        return self.reward_fn(steps.expand(), tasks[None, :, :])

    def rewards_for(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Each step under its own task: tasks [B, Z] -> [B]."""
        tasks = self.check_tasks(tasks)
        return self.reward_fn(steps, tasks)

    def terminals(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Termination of every step under every task: bool [B, K]."""
        tasks = self.check_tasks(tasks)
        return np.broadcast_to(
            self.terminal_fn(steps.expand(), tasks[None, :, :]), (len(steps), len(tasks))
        )

    def terminals_for(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Termination of each step under its own task: bool [B]."""
        tasks = self.check_tasks(tasks)
        return np.broadcast_to(self.terminal_fn(steps, tasks), (len(steps),))

    def features(self, steps: StepBatch) -> np.ndarray:
        """Linear families: phi(s, a, s') [B, D] with r = task_weights(z) . phi."""
        raise TypeError(f"family {self.name!r} is not linear: it has no features()")

    def task_weights(self, tasks: np.ndarray) -> np.ndarray:
        """Linear families: the weight vector of each task [K, D]."""
        raise TypeError(f"family {self.name!r} is not linear: it has no task_weights()")

    def achieved_goal(self, steps: StepBatch) -> np.ndarray:
        """Goal families: the goal each step achieved [B, G] (for HER)."""
        raise TypeError(f"family {self.name!r} is not a goal family: it has no achieved_goal()")

    def with_goal(self, tasks: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Goal families: tasks [B, Z] with their goal part replaced by goals [B, G]."""
        raise TypeError(f"family {self.name!r} is not a goal family: it has no with_goal()")

    # ---- helpers ----------------------------------------------------------------------
    def check_tasks(self, tasks: Any) -> np.ndarray:
        tasks = np.asarray(tasks, dtype=np.float64)
        if tasks.ndim != 2 or tasks.shape[1] != self.task_dim:
            raise ValueError(
                f"family {self.name!r}: tasks must have shape [K, {self.task_dim}], got {tasks.shape}"
            )
        return tasks

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "task_dim": self.task_dim,
            "reward_input_dim": self.reward_input_dim,
            "horizon": self.horizon,
            "discount": self.discount,
            "linear": self.linear,
            "feature_dim": self.feature_dim,
            "goal_dim": self.goal_dim,
        }
