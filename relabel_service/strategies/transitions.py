"""Turn a strategy's decision into learner transitions, rewards recomputed in one call.

    result = strategy(request, rng)
    batch = to_transitions(request.family, request.new, result)   # TransitionBatch, float32

Originals (when ``result.keep_original``) keep their recorded rewards and terminations.
Every copy's steps are rewarded under their new per-step tasks by ONE
``family.rewards_for`` call and terminated by ONE ``family.terminals_for`` call over all
copies. Families with ``timeout_is_terminal`` (GH point envs, REFERENCE-CODE §8) also
mark the last step of a truncated episode terminal, for originals and copies alike.
Every row carries its step's ``reward_inputs`` so the learner can re-reward it under
other tasks (HIPI-RL, ``learner/sac/hipi_rl.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from envs.core import StepBatch, TaskFamily
from relabel_service.core import RelabelResult, TransitionBatch, Trajectory, concat_steps
from relabel_service.strategies.kernels import trajectory_lengths


def _timeout_terminals(family: TaskFamily, trajs: Sequence[Trajectory],
                       lengths: np.ndarray | None = None) -> np.ndarray:
    """bool [S]: True at the last step of truncated episodes if the family says so
    (``lengths`` [M]: the trajectories' lengths, when the caller has them)."""
    if lengths is None:
        lengths = trajectory_lengths(trajs)
    flags = np.zeros(int(lengths.sum()), dtype=bool)
    if family.timeout_is_terminal and len(trajs):
        last = np.cumsum(lengths) - 1
        truncated = np.fromiter((t.truncated for t in trajs), dtype=bool, count=len(trajs)) & (lengths > 0)
        flags[last[truncated]] = True
    return flags


def _batch(steps: StepBatch, reward, terminated, task) -> TransitionBatch:
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    return TransitionBatch(
        obs=f32(steps.obs),
        action=f32(steps.action),
        reward=f32(reward),
        next_obs=f32(steps.next_obs),
        terminated=f32(terminated),
        task=f32(task),
        reward_inputs=f32(steps.reward_inputs),
    )


def empty_transitions(family: TaskFamily) -> TransitionBatch:
    """A TransitionBatch with zero rows and the family's widths."""
    z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    return TransitionBatch(
        z(0, family.obs_dim), z(0, family.action_dim), z(0), z(0, family.obs_dim), z(0),
        z(0, family.task_dim), z(0, family.reward_input_dim),
    )


def to_transitions(
    family: TaskFamily, trajs: Sequence[Trajectory], result: RelabelResult
) -> TransitionBatch:
    """Originals (if kept) then copies, in ``result.copies`` order: [B] rows, float32."""
    parts = []
    lengths = trajectory_lengths(trajs)
    laid_out = None  # the trajectories' steps end to end, made once for originals and copies
    if result.keep_original and len(trajs):
        laid_out = concat_steps(trajs)
        parts.append(
            _batch(
                laid_out,
                np.concatenate([t.rewards for t in trajs]),
                np.concatenate([t.terminated for t in trajs]).astype(bool)
                | _timeout_terminals(family, trajs, lengths),
                np.repeat(np.stack([np.asarray(t.task) for t in trajs]), lengths, axis=0),
            )
        )
    if result.copies:
        index = [i for i, _ in result.copies]
        sources = [trajs[i] for i in index]
        for (i, step_tasks), traj in zip(result.copies, sources):
            if np.shape(step_tasks) != (traj.length, family.task_dim):
                raise ValueError(
                    f"copy of trajectory {i}: step_tasks has shape {np.shape(step_tasks)}, "
                    f"expected {(traj.length, family.task_dim)}"
                )
        # one copy of every trajectory in order (AIR with m = 1, random): the originals' steps
        same = laid_out is not None and index == list(range(len(trajs)))
        steps = laid_out if same else concat_steps(sources)
        source_lengths = lengths if same else lengths[np.asarray(index, dtype=np.int64)]
        tasks = family.check_tasks(np.concatenate([t for _, t in result.copies]))  # [S, Z]
        reward = family.rewards_for(steps, tasks)
        terminated = family.terminals_for(steps, tasks) | _timeout_terminals(family, sources, source_lengths)
        parts.append(_batch(steps, reward, terminated, tasks))
    return TransitionBatch.concat(parts) if parts else empty_transitions(family)
