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

and one reduced form, ``segment_returns(steps, tasks[K, Z], weights[B], lengths[M]) -> [M, K]``:
the weighted reward sums of M trajectories laid end to end under every task (AIR's
discounted returns, weights gamma^t), each stopping at its first step that terminates
under the task where termination depends on it. By default ``rewards`` (and ``terminals``)
then segment sums; a family may override it with an equal form that evaluates only its
joint terms step x task (``envs/point.py``) or, for a sparse goal, only the first step at
the goal (``reacher_goal``).

Whatever the reward needs that the observation lacks (x-velocity, contact cost, the
post-step fingertip position, ...) is recorded per step in ``reward_inputs`` so that any
stored step can be rewarded under any task later, without the simulator.

Meta-RL families (HFR / PEARL; ``fam.meta`` is True) add fixed, seeded task lists and,
where the family defines one, a batched success test (see ``MetaTaskFamily``):

    fam = get_family("cheetah_vel")
    fam.train_tasks(), fam.test_tasks()      # [100, 1], [30, 1]: the reference code's lists
    fam.train_task_index(tasks)              # int [K]: row of train_tasks(), -1 if none
    fam.success(steps, tasks)                # bool [B, K] (only where fam.has_success)
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, NamedTuple, Protocol

import gymnasium as gym
import numpy as np

#: (step, task) values per block in a family's blocked ``segment_returns``: a block's few
#: float64 temporaries (256 KiB each) stay in one core's L2 cache
SEGMENT_BLOCK_ELEMENTS = 1 << 15


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


def segment_sums(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments of x [B, ...] of the given lengths [M] -> [M, ...]
    (an empty segment sums to 0, where ``np.add.reduceat`` alone would return the next element)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    assert x.shape[0] == int(lengths.sum()), (x.shape, int(lengths.sum()))
    out = np.zeros((len(lengths),) + x.shape[1:], dtype=np.result_type(x, np.float64))
    nonempty = lengths > 0
    if nonempty.any():
        starts = np.cumsum(lengths) - lengths
        out[nonempty] = np.add.reduceat(x, starts[nonempty], axis=0)
    return out


def segment_blocks(lengths: np.ndarray, per_step: int, max_elements: int) -> Iterator[tuple[int, int, int, int]]:
    """(m0, m1, s0, s1): consecutive runs of whole segments [m0, m1) holding steps [s0, s1)
    with at most ``max_elements`` (step x per_step) values each (at least one segment)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    m0, s0, n_steps = 0, 0, 0
    for m, n in enumerate(lengths.tolist()):
        if m > m0 and (n_steps + n) * per_step > max_elements:
            yield m0, m, s0, s0 + n_steps
            m0, s0, n_steps = m, s0 + n_steps, 0
        n_steps += n
    if m0 < len(lengths):
        yield m0, len(lengths), s0, s0 + n_steps


def alive_mask(terminals: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """bool [B, K]: step t of its segment counts under task k, i.e. no earlier step of the
    segment terminated under k (the terminating step itself counts).

    terminals [B, K] bool for segments of the given lengths [M] laid end to end. One
    cumulative sum over all steps, minus its value before each segment's first step,
    gives the per-segment count of terminals up to and including t; subtracting t's own
    flag leaves the count strictly before t."""
    terminals = np.asarray(terminals, dtype=bool)
    lengths = np.asarray(lengths, dtype=np.int64)
    assert terminals.shape[0] == int(lengths.sum()), (terminals.shape, int(lengths.sum()))
    counts = np.cumsum(terminals, axis=0, dtype=np.int64)  # [B, K] inclusive, over all steps
    starts = np.cumsum(lengths) - lengths
    before = np.concatenate([np.zeros((1,) + counts.shape[1:], np.int64), counts])[starts]  # [M, K]
    return counts - np.repeat(before, lengths, axis=0) - terminals == 0


def weighted_segment_sums(x: np.ndarray, weights: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """sum_{s in segment m} weights[s] x[c, s] for x [C, B] (one row per task or term, the
    steps along the row), weights [B], lengths [M] -> [M, C].

    Rows run along the steps so that every elementwise pass over a block is long and
    contiguous however few tasks there are. Segments of one length L whose weights repeat
    (time-limited episodes, gamma^t) are one [C M, L] x [L] product; other equal lengths a
    batched product; uneven ones ``np.add.reduceat`` (x is overwritten then)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    M, (C, B) = len(lengths), x.shape
    assert B == int(lengths.sum()) and weights.shape == (B,), (x.shape, weights.shape, int(lengths.sum()))
    if M and lengths[0] > 0 and np.all(lengths == lengths[0]):
        L = int(lengths[0])
        w = weights.reshape(M, L)
        if np.array_equal(w, np.broadcast_to(w[0], w.shape)):
            return (x.reshape(C * M, L) @ w[0]).reshape(C, M).T
        return np.einsum("cml,ml->mc", x.reshape(C, M, L), w)
    x *= weights
    return segment_sums(x.T, lengths)


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
    #: ``segment_returns(..., float32=True)`` is defined (point_reacher)
    float32_returns: ClassVar[bool] = False
    #: ``segment_returns`` has a compiled kernel for shared tasks and equal-length segments
    #: (``envs/fused.py``; AIR's ``air_kernel="compiled"``): point_trajectory, point_reacher
    compiled_returns: ClassVar[bool] = False
    #: importable modules ``make_env`` needs beyond the core install (optional extras)
    requires: ClassVar[tuple[str, ...]] = ()
    #: size of the fixed, seeded evaluation task set (meta families: num_test_tasks); also
    #: the default number of eval episodes (``eval.episodes``)
    num_eval_tasks: ClassVar[int] = 25
    eval_seed: ClassVar[int] = 12345
    #: a meta-RL family: fixed train/test task lists (``task_list``, ``train_tasks``, ...)
    meta: ClassVar[bool] = False
    num_train_tasks: ClassVar[int] = 0
    num_test_tasks: ClassVar[int] = 0
    #: whether ``success_fn`` is defined (HFR reports a success rate on Four-Corners)
    has_success: ClassVar[bool] = False

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

    def _task_list(self) -> np.ndarray:
        """Meta families: every task of the fixed list [N, Z], train tasks first, test
        tasks last, in the reference code's order (REFERENCE-CODE §1c, §5)."""
        raise TypeError(f"family {self.name!r} is not a meta family: it has no task list")

    def success_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Families with ``has_success``: success of each step, broadcastable -> bool [...]."""
        raise TypeError(f"family {self.name!r} defines no success")

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
        """The family's fixed, seeded evaluation set: [num_eval_tasks, Z].

        Meta families: the held-out ``test_tasks()``."""
        if self.meta:
            return self.test_tasks()
        return self.sample_tasks(np.random.default_rng(self.eval_seed), self.num_eval_tasks)

    def eval_tasks_for(self, episodes: int | None = None) -> np.ndarray:
        """The tasks of ``episodes`` eval episodes (default ``num_eval_tasks``): [n, Z].

        Families with a fixed reference list (an overridden ``eval_tasks``: GH's 25 Cheetah
        latents and Ant headings, meta test tasks, discrete task tables) cycle it, as the GH
        code cycles its 25 latents. The others draw n distinct seeded prior samples, whose
        first ``num_eval_tasks`` are ``eval_tasks()`` (GH evaluates the point envs on random
        prior tasks, HIPI on 30 fresh tasks: no task counts twice)."""
        n = self.num_eval_tasks if episodes is None else int(episodes)
        if n < 1:
            raise ValueError(f"family {self.name!r}: eval episodes must be >= 1, got {n}")
        if self.meta or type(self).eval_tasks is not TaskFamily.eval_tasks:
            return np.resize(self.eval_tasks(), (n, self.task_dim))
        base = self.eval_tasks()
        if n <= len(base):
            return base[:n]
        extra = self.sample_tasks(np.random.default_rng([self.eval_seed, 1]), n - len(base))
        return np.concatenate([base, extra])

    # ---- meta-RL task lists and success ---------------------------------------------------
    def task_list(self) -> np.ndarray:
        """Meta families: the whole fixed task list [N, Z] float64 (a fresh copy).

        ``train_tasks()`` are its first ``num_train_tasks`` rows and ``test_tasks()`` its last
        ``num_test_tasks`` rows, as the reference launcher slices them (REFERENCE-CODE §5);
        the two overlap only where N < train + test (Four-Corners: the same 4 tasks)."""
        tasks = np.array(self._task_list(), dtype=np.float64)
        n = max(self.num_train_tasks, self.num_test_tasks)
        assert tasks.ndim == 2 and tasks.shape[1] == self.task_dim and len(tasks) >= n, tasks.shape
        return tasks

    def train_tasks(self) -> np.ndarray:
        """Meta families: the fixed meta-training tasks [num_train_tasks, Z]."""
        return self.task_list()[: self.num_train_tasks]

    def test_tasks(self) -> np.ndarray:
        """Meta families: the fixed held-out meta-test tasks [num_test_tasks, Z]."""
        return self.task_list()[len(self.task_list()) - self.num_test_tasks :]

    def train_task_index(self, tasks: np.ndarray, atol: float = 1e-6) -> np.ndarray:
        """Meta families: the row of ``train_tasks()`` equal to each task (every component
        within ``atol``, so a float32 copy still matches), or -1: tasks [K, Z] -> int64 [K]."""
        tasks = self.check_tasks(tasks)
        train = self.train_tasks()
        match = np.all(np.abs(tasks[:, None, :] - train[None, :, :]) <= atol, axis=-1)  # [K, N]
        return np.where(match.any(axis=1), match.argmax(axis=1), -1).astype(np.int64)

    def rewards(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Every step under every task in one call: [B, K]."""
        tasks = self.check_tasks(tasks)
        return self.reward_fn(steps.expand(), tasks[None, :, :])

    def rewards_for(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Each step under its own task: tasks [B, Z] -> [B]."""
        tasks = self.check_tasks(tasks)
        return self.reward_fn(steps, tasks)

    def segment_returns(self, steps: StepBatch, tasks: np.ndarray, weights: np.ndarray,
                        lengths: np.ndarray, float32: bool = False) -> np.ndarray:
        """sum_{s in segment m} weights[s] r(step s | z_mk): M segments of consecutive steps
        (lengths [M], summing to B), weights [B] -> [M, K]; tasks [K, Z] shared by every
        segment (AIR) or [M, K, Z], each segment's own (advantage, max-reward).

        ``float32``: families with ``float32_returns`` evaluate their per-(step, task) terms
        in float32 (faster; each documents its error against float64); any other family
        raises ValueError (AIR's ``air_precision="float32"``).

        Discounted returns of M trajectories laid end to end (weights gamma^t, t restarting
        at each trajectory's first step). Where termination depends on the task
        (``task_dependent_termination``), a segment's sum under z stops at its first step
        that terminates under z: that step counts, the later ones (which an episode under z
        would never have taken) do not; otherwise every step counts. Default: ``rewards``
        and ``terminals`` (shared tasks) or one ``rewards_for`` / ``terminals_for`` over
        the steps repeated K times, times the weights, masked after the first terminal
        (``alive_mask``), then segment sums. An override must equal it up to rounding
        (tests/test_envs.py checks every family against the double loop)."""
        self.check_float32(float32)
        weights = np.asarray(weights, dtype=np.float64)
        lengths = np.asarray(lengths, dtype=np.int64)
        assert weights.shape == (len(steps),), (weights.shape, len(steps))
        tasks = self.check_segment_tasks(tasks, len(lengths))
        stops = self.task_dependent_termination
        if tasks.ndim == 2:
            r = np.asarray(self.rewards(steps, tasks), dtype=np.float64)  # [B, K]
            term = self.terminals(steps, tasks) if stops else None
        else:
            K = tasks.shape[1]
            rep = StepBatch(*(np.repeat(np.asarray(x), K, axis=0) for x in steps))  # step-major [B K]
            own = tasks[np.repeat(np.arange(len(lengths)), lengths)].reshape(-1, self.task_dim)  # [B K, Z]
            r = np.asarray(self.rewards_for(rep, own), dtype=np.float64).reshape(-1, K)
            term = np.asarray(self.terminals_for(rep, own)).reshape(-1, K) if stops else None
        r = r * weights[:, None]
        if term is not None:
            r = np.where(alive_mask(term, lengths), r, 0.0)
        return segment_sums(r, lengths)

    def check_float32(self, float32: bool) -> None:
        """ValueError for ``segment_returns(..., float32=True)`` on a family without
        ``float32_returns``."""
        if float32 and not self.float32_returns:
            raise ValueError(f"family {self.name!r} has no float32 segment_returns "
                             f"(air_precision='float32' applies to point_reacher)")

    def check_segment_tasks(self, tasks: Any, num_segments: int) -> np.ndarray:
        """Tasks [K, Z] or [M, K, Z] (M = num_segments) as float64, checked."""
        tasks = np.asarray(tasks, dtype=np.float64)
        if tasks.ndim == 3 and tasks.shape[0] == num_segments:
            return self.check_tasks(tasks.reshape(-1, tasks.shape[-1])).reshape(tasks.shape)
        if tasks.ndim == 3:
            raise ValueError(f"family {self.name!r}: per-segment tasks must have shape [{num_segments}, K, "
                             f"{self.task_dim}], got {tasks.shape}")
        return self.check_tasks(tasks)

    # ---- one step, unbatched (the env's per-step reward) ------------------------------------
    def step_reward(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                    reward_inputs: np.ndarray, task: np.ndarray) -> float:
        """r(s, a, s' | z) of ONE step: fields [X], task [Z] -> float.

        The env's per-step reward. ``reward_fn`` is written for broadcastable arrays, so it
        is called on the unbatched arrays as they are: no batch axis, no task check, no
        copies (``rewards_for`` on a batch of one costs several times more). Equal to
        ``rewards_for`` on the same step (tests/test_envs.py checks every family)."""
        return float(self.reward_fn(StepBatch(obs, action, next_obs, reward_inputs), task))

    def step_terminal(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                      reward_inputs: np.ndarray, task: np.ndarray) -> bool:
        """Termination of ONE step (fields [X], task [Z]), as ``step_reward``."""
        return bool(self.terminal_fn(StepBatch(obs, action, next_obs, reward_inputs), task))

    @property
    def has_terminal(self) -> bool:
        """Whether episodes can end before the time limit (``terminal_fn`` is overridden):
        only then does a rollout evaluate termination step by step."""
        return type(self).terminal_fn is not TaskFamily.terminal_fn

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

    def success(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Families with ``has_success``: success of every step under every task, bool [B, K]."""
        tasks = self.check_tasks(tasks)
        return np.broadcast_to(
            self.success_fn(steps.expand(), tasks[None, :, :]), (len(steps), len(tasks))
        )

    def success_for(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        """Families with ``has_success``: success of each step under its own task, bool [B]."""
        tasks = self.check_tasks(tasks)
        return np.broadcast_to(self.success_fn(steps, tasks), (len(steps),))

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
            "meta": self.meta,
            "num_train_tasks": self.num_train_tasks,
            "num_test_tasks": self.num_test_tasks,
            "has_success": self.has_success,
        }


class MetaTaskFamily(Protocol):
    """What meta-RL code (PEARL, HFR, meta-test evaluation) may rely on; every ``TaskFamily``
    with ``meta = True`` provides it (non-meta families raise TypeError naming themselves).

        fam = get_family("four_corners")
        train, test = fam.train_tasks(), fam.test_tasks()   # [4, 2], [4, 2]
        R = fam.rewards(steps, train)                        # [B, 4]: relabel under any train task

    Task lists are fixed constants of the family (seeded exactly as the reference code seeds
    them), equal in every process, and a fresh copy on each call. The envs of a meta family
    report ``info["success"]`` (bool) each step when ``has_success``.
    """

    name: str
    meta: bool  # True
    num_train_tasks: int  # N_train, e.g. 100 (cheetah_vel), 4 (four_corners)
    num_test_tasks: int  # N_test, e.g. 30, 4
    has_success: bool  # success()/success_for() defined
    horizon: int  # max_path_length of the reference config
    discount: float

    def task_list(self) -> np.ndarray: ...  # [N, Z] all tasks, train first, test last
    def train_tasks(self) -> np.ndarray: ...  # [N_train, Z]
    def test_tasks(self) -> np.ndarray: ...  # [N_test, Z]
    def train_task_index(self, tasks: np.ndarray, atol: float = 1e-6) -> np.ndarray: ...  # int [K]
    def rewards(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray: ...  # [B, K]
    # one step, unbatched (the env's per-step reward; ``TaskFamily`` documents them)
    def step_reward(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                    reward_inputs: np.ndarray, task: np.ndarray) -> float: ...
    def step_terminal(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                      reward_inputs: np.ndarray, task: np.ndarray) -> bool: ...
    @property
    def has_terminal(self) -> bool: ...
    def terminals(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray: ...  # bool [B, K]
    def success(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray: ...  # bool [B, K]
    def success_for(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray: ...  # bool [B]
    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env: ...
    def set_env_task(self, env: gym.Env, task: np.ndarray) -> None: ...
