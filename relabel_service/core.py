"""Vocabulary of the relabeling service: trajectories, relabel requests and results.

    traj = Trajectory(episode_id="w0-e17", ..., obs=obs, actions=acts, ...)
    req = RelabelRequest(family=fam, new=[traj], reference=recent, discount=0.97)
    res = STRATEGIES["air"](req, np.random.default_rng(0))    # -> RelabelResult

Shapes:
    T  steps of one trajectory     M  new trajectories in a request
    N  reference trajectories      K  candidate tasks
    Z  task_dim   O obs_dim   A action_dim   I reward_input_dim
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np

from envs.core import StepBatch, TaskFamily


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One episode as recorded by a rollout worker (the unit the store holds)."""

    episode_id: str  # unique across workers and restarts
    worker_id: int
    policy_version: int
    family: str
    task: np.ndarray  # [Z] the commanded task
    obs: np.ndarray  # [T+1, O]
    actions: np.ndarray  # [T, A]
    rewards: np.ndarray  # [T] under the commanded task
    terminated: np.ndarray  # [T] bool
    truncated: bool  # the episode hit its time limit
    reward_inputs: np.ndarray  # [T, I]
    created_at: float  # unix seconds
    task_id: int = -1  # meta families: row of the commanded task in family.train_tasks(); -1 otherwise
    phase: str = ""  # meta-RL collection phase: "initial" | "prior" | "posterior" | "extra_rl" ("" otherwise)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    def steps(self) -> StepBatch:
        """The T recorded steps as a StepBatch (rewardable under any task)."""
        return StepBatch(self.obs[:-1], self.actions, self.obs[1:], self.reward_inputs)


def concat_steps(trajs: Sequence[Trajectory]) -> StepBatch:
    """All steps of several trajectories in one StepBatch: fields [sum T_i, ...]."""
    return StepBatch(
        np.concatenate([t.obs[:-1] for t in trajs]),
        np.concatenate([t.actions for t in trajs]),
        np.concatenate([t.obs[1:] for t in trajs]),
        np.concatenate([t.reward_inputs for t in trajs]),
    )


#: V(s0, z) for a batch: obs0 [M, O], tasks [M, K, Z] -> [M, K]
ValueFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass
class RelabelRequest:
    """Everything a strategy may use; the relabel worker fills it from the store."""

    family: TaskFamily
    new: Sequence[Trajectory]  # M trajectories to relabel
    discount: float
    reference: Sequence[Trajectory] = ()  # N past trajectories (AIR's reference set)
    value_fn: ValueFn | None = None  # Advantage / AIR tie-break; None -> V = 0


@dataclasses.dataclass
class RelabelResult:
    """What a strategy decided.

    ``copies[c] = (i, step_tasks)``: trajectory ``new[i]`` relabeled with one task per step,
    ``step_tasks`` [T_i, Z] (trajectory-level strategies repeat one task; HER varies it).
    ``keep_original``: whether the original trajectory is also sent to the learner.
    ``stats``: arrays and scalars for logging (chosen percentiles, probabilities, ...).
    """

    copies: list[tuple[int, np.ndarray]]
    keep_original: bool = True
    stats: dict[str, np.ndarray | float] = dataclasses.field(default_factory=dict)


class RelabelStrategy(Protocol):
    """A pure function: request + explicit RNG -> result. Registered by name."""

    def __call__(self, request: RelabelRequest, rng: np.random.Generator) -> RelabelResult: ...


class TransitionBatch(NamedTuple):
    """Relabeled (or original) transitions on their way to the learner: numpy, float32."""

    obs: np.ndarray  # [B, O]
    action: np.ndarray  # [B, A]
    reward: np.ndarray  # [B]
    next_obs: np.ndarray  # [B, O]
    terminated: np.ndarray  # [B] float32 in {0, 1}
    task: np.ndarray  # [B, Z]
    reward_inputs: np.ndarray  # [B, I] so the learner can re-reward a step (HIPI-RL)

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @staticmethod
    def concat(batches: Sequence["TransitionBatch"]) -> "TransitionBatch":
        return TransitionBatch(*(np.concatenate(xs) for xs in zip(*batches)))
