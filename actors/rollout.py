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
        # Per-slot Python lists (cheap appends on the hot path), stacked once at the end.
        obs: list[list[np.ndarray]] = [[] for _ in range(n)]
        act: list[list[np.ndarray]] = [[] for _ in range(n)]
        rew: list[list[float]] = [[] for _ in range(n)]
        term: list[list[bool]] = [[] for _ in range(n)]
        rin: list[list[np.ndarray]] = [[] for _ in range(n)]
        truncated = np.zeros(n, dtype=bool)
        current = np.zeros((n, fam.obs_dim))  # latest observation of every slot
        for i in range(n):
            fam.set_env_task(self.envs[i], tasks[i])
            seed = int(self.rng.integers(2**31)) if reset_seeds is None else int(reset_seeds[i])
            o, _ = self.envs[i].reset(seed=seed)
            obs[i].append(o)
            current[i] = o
        alive = list(range(n))
        while alive:
            if random_actions:
                a = self.rng.uniform(-1.0, 1.0, size=(len(alive), fam.action_dim))
            else:  # one batched forward pass for every running slot
                a = self.policy.act(current[alive], tasks[alive], deterministic=deterministic, generator=self.torch_gen)
                a = a.astype(np.float64)  # the envs' and the store's dtype: convert once, not per env
            still = []
            for j, i in enumerate(alive):
                o, r, te, tr, info = self.envs[i].step(a[j])
                act[i].append(a[j])
                obs[i].append(o)
                rew[i].append(r)
                term[i].append(te)
                rin[i].append(info["reward_inputs"])
                current[i] = o
                if te or tr:
                    truncated[i] = bool(tr and not te)
                else:
                    still.append(i)
            alive = still
        now = time.time()
        trajs = []
        I = fam.reward_input_dim
        for i in range(n):
            trajs.append(
                Trajectory(
                    episode_id=f"w{self.worker_id}-{self.incarnation}-e{self.episodes_done}",
                    worker_id=self.worker_id,
                    policy_version=self.policy_version,
                    family=fam.name,
                    task=tasks[i].copy(),
                    obs=np.asarray(obs[i], dtype=np.float64),
                    actions=np.asarray(act[i], dtype=np.float64),
                    rewards=np.asarray(rew[i], dtype=np.float64),
                    terminated=np.asarray(term[i], dtype=bool),
                    truncated=bool(truncated[i]),
                    reward_inputs=np.asarray(rin[i], dtype=np.float64).reshape(len(rin[i]), I),
                    created_at=now,
                )
            )
            self.episodes_done += 1
        length = np.array([t.length for t in trajs])
        returns = np.array([t.rewards.sum() for t in trajs])
        steps = int(length.sum())
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
