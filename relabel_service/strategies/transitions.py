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


def _timeout_terminals(family: TaskFamily, trajs: Sequence[Trajectory]) -> np.ndarray:
    """bool [S]: True at the last step of truncated episodes if the family says so."""
    parts = []
    for traj in trajs:
        flag = np.zeros(traj.length, dtype=bool)
        if family.timeout_is_terminal and traj.truncated and traj.length:
            flag[-1] = True
        parts.append(flag)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


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
    if result.keep_original and len(trajs):
        parts.append(
            _batch(
                concat_steps(trajs),
                np.concatenate([t.rewards for t in trajs]),
                np.concatenate([t.terminated for t in trajs]).astype(bool)
                | _timeout_terminals(family, trajs),
                np.concatenate([np.repeat(np.asarray(t.task)[None], t.length, 0) for t in trajs]),
            )
        )
    if result.copies:
        sources = [trajs[i] for i, _ in result.copies]
        for (i, step_tasks), traj in zip(result.copies, sources):
            if np.shape(step_tasks) != (traj.length, family.task_dim):
                raise ValueError(
                    f"copy of trajectory {i}: step_tasks has shape {np.shape(step_tasks)}, "
                    f"expected {(traj.length, family.task_dim)}"
                )
        steps = concat_steps(sources)
        tasks = family.check_tasks(np.concatenate([t for _, t in result.copies]))  # [S, Z]
        reward = family.rewards_for(steps, tasks)
        terminated = family.terminals_for(steps, tasks) | _timeout_terminals(family, sources)
        parts.append(_batch(steps, reward, terminated, tasks))
    return TransitionBatch.concat(parts) if parts else empty_transitions(family)
