"""Discrete task sets: any family restricted to a fixed list of its tasks, one-hot coded.

HIPI relabels over finite task sets as well as continuous ones (HIPI §6.1 "More general
task distributions": 2-D reacher with 32 fixed goals, one-hot task; hopper-discrete; the
desk's nine tasks in §6.2). Here that is an option of every family:

    fam = get_family("reacher_goal", discrete_tasks=32)            # 32 goals drawn with seed 0
    fam = get_family("maze", discrete_task_list=[[1, 1], [31, 1]])  # an explicit list
    fam = get_family("reacher_discrete")                           # HIPI's reacher-discrete
    fam = get_family("maze_discrete4")                              # <base>_discrete<N>: N drawn, seed 0
    fam.task_table                 # [N, Z_base]: what each one-hot task means
    fam.rewards(steps, np.eye(N))  # [B, N]: every step under every task of the set

A task is a one-hot vector e_n [N]; its reward is the base family's under task_table[n]:
    r(s, a, s' | e_n) = r_base(s, a, s' | task_table[n])
computed as r_base(..., e @ task_table), so one batched base call serves any batch of
one-hot tasks. The prior is uniform over the N tasks and the evaluation set is all N of them
(each once, in order), so eval_tasks()[0] is "the first task" (HIPI Fig. 8's biased task
with ``reward_bias`` / ``bias_tasks="eval_task"``).

Every relabeling strategy runs unchanged over such a family: candidates drawn from the
prior are members of the set, and returns under them are base returns. HER does not apply
(a reached state is not in general one of the N goals), so the family is not a goal family.
A linear base stays linear: task_weights(e) = e @ w_base(task_table).

Name: ``<base>_discrete<N>`` (or the registered name, ``reacher_discrete``), so stored
trajectories name a family whose dimensions ``get_family`` can rebuild (the store checks
them): ``get_family("<base>_discrete<N>")`` is the base with N tasks drawn with seed 0.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.core import StepBatch, TaskFamily

#: keyword arguments of ``get_family`` that make a family discrete (the rest go to the family)
DISCRETE_KWARGS = ("discrete_tasks", "discrete_task_list", "discrete_seed")

#: class attributes copied from the base family (name, task_dim, goal_dim, eval size change)
_COPIED = (
    "obs_dim", "action_dim", "reward_input_dim", "horizon", "discount", "linear",
    "feature_dim", "timeout_is_terminal", "task_dependent_termination", "eval_seed", "requires",
)


def draw_task_table(base: TaskFamily, n: int, seed: int = 0) -> np.ndarray:
    """n tasks of ``base`` drawn from its prior with a fixed seed: [n, Z_base] (HIPI drew its
    32 reacher goals with seed 0)."""
    if n < 1:
        raise ValueError(f"discrete_tasks must be >= 1, got {n}")
    return base.sample_tasks(np.random.default_rng(seed), n)


class DiscreteTaskFamily(TaskFamily):
    """``base`` over the fixed task list ``task_table`` [N, Z_base]; tasks are one-hot [N]."""

    def __init__(self, base: TaskFamily, task_table: np.ndarray, name: str | None = None):
        table = np.asarray(task_table, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != base.task_dim or len(table) < 1:
            raise ValueError(
                f"discrete task list for {base.name!r} must have shape [N >= 1, {base.task_dim}], got {table.shape}"
            )
        self.base = base
        self.task_table = base.check_tasks(table)
        for attr in _COPIED:
            setattr(self, attr, getattr(base, attr))
        self.task_dim = len(table)
        self.name = name or f"{base.name}_discrete{len(table)}"
        self.num_eval_tasks = len(table)
        self.goal_dim = 0

    def __getattr__(self, name: str) -> Any:
        # family-specific helpers (walls, margin, ...) come from the base; guarded for unpickling
        if name.startswith("__") or name in ("base", "task_table"):
            raise AttributeError(name)
        return getattr(self.base, name)

    # ---- one-hot <-> base tasks -----------------------------------------------------------
    def base_tasks(self, tasks: np.ndarray) -> np.ndarray:
        """The base task of each one-hot task: [..., N] -> [..., Z_base] (e @ task_table)."""
        return np.asarray(tasks, dtype=np.float64) @ self.task_table

    def index_of(self, tasks: np.ndarray) -> np.ndarray:
        """Which task of the set each row is: [K, N] -> int [K]; raises on a non-one-hot row."""
        tasks = self.check_tasks(tasks)
        onehot = np.all((tasks == 0.0) | (tasks == 1.0), axis=1) & (tasks.sum(axis=1) == 1.0)
        if not onehot.all():
            bad = int(np.flatnonzero(~onehot)[0])
            raise ValueError(f"family {self.name!r} (discrete): task {bad} is not one-hot: {tasks[bad]}")
        return np.argmax(tasks, axis=1)

    # ---- TaskFamily ------------------------------------------------------------------------
    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.eye(self.task_dim)[rng.integers(self.task_dim, size=n)]

    def eval_tasks(self) -> np.ndarray:
        """Every task of the set once, in order: the identity [N, N]."""
        return np.eye(self.task_dim)

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self.base.reward_fn(steps, self.base_tasks(tasks))

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self.base.terminal_fn(steps, self.base_tasks(tasks))

    def features(self, steps: StepBatch) -> np.ndarray:
        if not self.linear:
            return super().features(steps)  # the error names this family
        return self.base.features(steps)

    def task_weights(self, tasks: np.ndarray) -> np.ndarray:
        """Linear base: e @ w_base(task_table) [K, D]."""
        if not self.linear:
            return super().task_weights(tasks)
        return self.check_tasks(tasks) @ np.asarray(self.base.task_weights(self.task_table), dtype=np.float64)

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        n = int(self.index_of(np.asarray(task)[None])[0])
        return DiscreteTaskEnv(self.base.make_env(self.task_table[n], seed=seed), self)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "discrete_tasks": int(self.task_dim), "base_task_dim": int(self.base.task_dim)}


class DiscreteTaskEnv(gym.Wrapper):
    """The base family's env, retasked with one-hot tasks (``set_task`` decodes them)."""

    def __init__(self, env: gym.Env, family: DiscreteTaskFamily):
        super().__init__(env)
        self.family = family

    def set_task(self, task: np.ndarray) -> None:
        n = int(self.family.index_of(np.asarray(task)[None])[0])
        self.env.get_wrapper_attr("set_task")(self.family.task_table[n])


def discrete_from_kwargs(base_cls: type[TaskFamily], kwargs: dict[str, Any]) -> TaskFamily | None:
    """Build the discrete family when ``kwargs`` name one (the discrete keys are popped out of
    ``kwargs``; the rest build the base); None when there are none."""
    given = {k: kwargs.pop(k) for k in DISCRETE_KWARGS if k in kwargs}
    if not given:
        return None
    if ("discrete_tasks" in given) == ("discrete_task_list" in given):
        raise ValueError("give exactly one of discrete_tasks (a count) and discrete_task_list (the tasks)")
    base = base_cls(**kwargs)
    kwargs.clear()
    if "discrete_task_list" in given:
        if "discrete_seed" in given:
            raise ValueError("discrete_seed applies to discrete_tasks, not to an explicit discrete_task_list")
        return DiscreteTaskFamily(base, np.asarray(given["discrete_task_list"], dtype=np.float64))
    return DiscreteTaskFamily(base, draw_task_table(base, int(given["discrete_tasks"]), int(given.get("discrete_seed", 0))))


class ReacherDiscrete(DiscreteTaskFamily):
    """HIPI ``reacher-discrete`` (HIPI §6.1, Fig. 6 left): ``reacher_goal`` over 32 fixed goals
    drawn with seed 0 from its annulus prior (radius U[0.05, 0.2]), one-hot task [32]."""

    name = "reacher_discrete"
    obs_dim = 8
    action_dim = 2
    task_dim = 32
    reward_input_dim = 0
    horizon = 100
    discount = 0.99
    task_dependent_termination = True
    num_goals = 32

    def __init__(self, margin: float = 0.02, seed: int = 0):
        from envs.mujoco_families import ReacherGoal

        base = ReacherGoal(margin=margin)
        super().__init__(base, draw_task_table(base, self.num_goals, seed), name=self.name)
