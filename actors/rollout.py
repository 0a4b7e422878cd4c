"""Rollout workers: E envs stepped in lockstep, one batched policy forward pass per step.

    worker = RolloutWorker(worker_id=0, family="point_reacher", num_envs=4, net_cfg=..., seed=0)
    trajs, stats = worker.collect_episodes(weights=(3, state_dict), random_actions=False)

A worker is a plain class; ``actors.pool`` wraps it with ``ray.remote`` and appends the
trajectories to the store. Each round runs one episode in every env slot: tasks are
sampled from the family's prior, every step makes one forward pass over the slots that
are still running, and finished episodes become ``Trajectory`` records stamped with the
policy version that produced them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import torch

from envs import get_family
from envs.core import TaskFamily
from learner.sac.networks import InferencePolicy
from relabel_service.core import Trajectory

#: (version, actor state_dict as numpy arrays)
Weights = tuple[int, dict[str, np.ndarray]]


class RolloutWorker:
    """Collects whole episodes for sampled tasks with the newest policy it was given."""

    def __init__(
        self,
        worker_id: int,
        family: str,
        num_envs: int,
        net_cfg: Any,
        seed: int,
        family_kwargs: dict | None = None,
        num_threads: int = 1,
    ):
        torch.set_num_threads(max(1, num_threads))
        self.worker_id = worker_id
        self.family: TaskFamily = get_family(family, **(family_kwargs or {}))
        # A fresh incarnation id keeps episode ids unique when the pool restarts a worker.
        self.incarnation = uuid.uuid4().hex[:8]
        self.rng = np.random.default_rng([seed, worker_id, int(self.incarnation, 16)])
        self.num_envs = num_envs
        self.envs = [
            self.family.make_env(self.family.sample_tasks(self.rng, 1)[0], seed=int(self.rng.integers(2**31)))
            for _ in range(num_envs)
        ]
        fam = self.family
        self.policy = InferencePolicy(fam.obs_dim, fam.action_dim, fam.task_dim, net_cfg)
        self.policy_version = -1
        self.episodes_done = 0
        self.torch_gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))

    # ---- weights ---------------------------------------------------------------------
    def set_weights(self, weights: Weights | None) -> None:
        if weights is None:
            return
        version, state = weights
        if version > self.policy_version:
            self.policy.load_weights(state)
            self.policy_version = int(version)

    # ---- collection ------------------------------------------------------------------
    def collect_episodes(
        self,
        weights: Weights | None = None,
        random_actions: bool = False,
        tasks: np.ndarray | None = None,
        deterministic: bool = False,
        reset_seeds: np.ndarray | None = None,
    ) -> tuple[list[Trajectory], dict[str, float]]:
        """One episode per env slot. ``tasks`` [E, Z] and ``reset_seeds`` [E] fix the tasks
        and initial states (evaluation)."""
        self.set_weights(weights)
        fam, E = self.family, self.num_envs
        if tasks is None:
            tasks = fam.sample_tasks(self.rng, E)
        tasks = np.asarray(tasks, dtype=np.float64)
        n = len(tasks)
        if n > E:
            raise ValueError(f"worker {self.worker_id}: {n} tasks for {E} env slots")
        t0 = time.perf_counter()
        H = fam.horizon
        obs = np.zeros((n, H + 1, fam.obs_dim))
        act = np.zeros((n, H, fam.action_dim))
        rew = np.zeros((n, H))
        term = np.zeros((n, H), dtype=bool)
        rin = np.zeros((n, H, fam.reward_input_dim))
        length = np.zeros(n, dtype=np.int64)
        truncated = np.zeros(n, dtype=bool)
        for i in range(n):
            fam.set_env_task(self.envs[i], tasks[i])
            seed = int(self.rng.integers(2**31)) if reset_seeds is None else int(reset_seeds[i])
            o, _ = self.envs[i].reset(seed=seed)
            obs[i, 0] = o
        alive = np.ones(n, dtype=bool)
        t = 0
        while alive.any():
            idx = np.flatnonzero(alive)
            if random_actions:
                a = self.rng.uniform(-1.0, 1.0, size=(len(idx), fam.action_dim))
            else:
                a = self.policy.act(obs[idx, t], tasks[idx], deterministic=deterministic, generator=self.torch_gen)
            for j, i in enumerate(idx):
                o, r, te, tr, info = self.envs[i].step(a[j])
                act[i, t] = a[j]
                obs[i, t + 1] = o
                rew[i, t] = r
                term[i, t] = te
                rin[i, t] = info["reward_inputs"]
                if te or tr:
                    alive[i] = False
                    length[i] = t + 1
                    truncated[i] = bool(tr and not te)
            t += 1
        now = time.time()
        trajs = []
        for i in range(n):
            T = int(length[i])
            trajs.append(
                Trajectory(
                    episode_id=f"w{self.worker_id}-{self.incarnation}-e{self.episodes_done}",
                    worker_id=self.worker_id,
                    policy_version=self.policy_version,
                    family=fam.name,
                    task=tasks[i].copy(),
                    obs=obs[i, : T + 1].copy(),
                    actions=act[i, :T].copy(),
                    rewards=rew[i, :T].copy(),
                    terminated=term[i, :T].copy(),
                    truncated=bool(truncated[i]),
                    reward_inputs=rin[i, :T].copy(),
                    created_at=now,
                )
            )
            self.episodes_done += 1
        steps = int(length.sum())
        returns = rew.sum(axis=1)
        stats = {
            "episodes": float(n),
            "env_steps": float(steps),
            "return_mean": float(returns.mean()),
            "policy_version": float(self.policy_version),
            "seconds": time.perf_counter() - t0,
        }
        return trajs, stats

    def evaluate(self, weights: Weights | None, tasks: np.ndarray, seed: int = 0) -> dict[str, Any]:
        """Deterministic policy (tanh of the mean) on fixed tasks; undiscounted returns.

        Initial states are seeded from ``seed`` and the task index, so two evaluations of
        the same weights agree.
        """
        returns, lengths, terminated = [], [], []
        seeds = np.random.default_rng(seed).integers(2**31, size=len(tasks))
        for start in range(0, len(tasks), self.num_envs):
            chunk = slice(start, start + self.num_envs)
            trajs, _ = self.collect_episodes(
                weights, tasks=tasks[chunk], deterministic=True, reset_seeds=seeds[chunk]
            )
            returns += [float(t.rewards.sum()) for t in trajs]
            lengths += [t.length for t in trajs]
            terminated += [bool(t.terminated.any()) for t in trajs]
        return {
            "returns": returns,
            "return_mean": float(np.mean(returns)),
            "length_mean": float(np.mean(lengths)),
            "success_rate": float(np.mean(terminated)) if self.family.task_dependent_termination else None,
            "policy_version": self.policy_version,
        }
