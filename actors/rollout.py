"""Rollout workers: E envs stepped in lockstep, one batched policy forward pass per step.

    worker = RolloutWorker(worker_id=0, family="point_reacher", num_envs=4, net_cfg=..., seed=0)
    trajs, stats = worker.collect_episodes(weights=(3, state_dict), random_actions=False)

A worker is a plain class; ``actors.pool`` wraps it with ``ray.remote`` and appends the
trajectories to the store. Each round runs one episode in every env slot: tasks are
sampled from the family's prior, every step makes one forward pass over the slots (tasks
bound once per round, ``NumpyPolicy.begin``: numpy only, so a worker process never imports
torch), each env writes its step into
preallocated buffers, and at the end the rewards of all trajectories come from one
batched ``family.rewards_for`` call; finished episodes become ``Trajectory`` records
stamped with the policy version that produced them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import numpy as np

from actors.policy import NumpyPEARLAgent, NumpyPolicy
from envs import get_family
from envs.core import StepBatch, TaskFamily
from relabel_service.core import Trajectory

#: (version, actor state_dict as numpy arrays)
Weights = tuple[int, dict[str, np.ndarray]]


def _stepper(env: Any) -> Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[bool, bool]]:
    """``step_into(action, obs_out, reward_inputs_out) -> (terminated, truncated)`` of an env:
    its own (the MuJoCo families: no Gymnasium wrapper stack, no reward) or, for envs
    without one, ``step`` with its results copied into the rows."""
    try:
        return env.get_wrapper_attr("step_into")
    except AttributeError:
        pass

    def step_into(action: np.ndarray, obs_out: np.ndarray, reward_inputs_out: np.ndarray) -> tuple[bool, bool]:
        o, _, te, tr, info = env.step(action)
        obs_out[:] = o
        reward_inputs_out[:] = info["reward_inputs"]
        return bool(te), bool(tr)

    return step_into


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
    ):
        # numpy's BLAS runs the policy's matmuls on OMP_NUM_THREADS threads, which Ray sets
        # to the actor's whole CPUs (at least 1) before the worker imports numpy
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
        self.policy = NumpyPolicy(fam.obs_dim, fam.action_dim, fam.task_dim, net_cfg)
        self.policy_version = -1
        self.episodes_done = 0
        # the action noise (reseeded by the fidelity study and HIPI-BC for one stream per seed)
        self.noise_rng = np.random.default_rng(int(self.rng.integers(2**62)))
        # one round's recording buffers [E, H(+1), ...], reused round after round
        H = fam.horizon
        self._obs = np.zeros((num_envs, H + 1, fam.obs_dim))
        self._act = np.zeros((num_envs, H, fam.action_dim))
        self._rin = np.zeros((num_envs, H, fam.reward_input_dim))
        self._term = np.zeros((num_envs, H), dtype=bool)
        self._steppers = [_stepper(env) for env in self.envs]

    # ---- weights ---------------------------------------------------------------------
    def set_weights(self, weights: Weights | None) -> None:
        if weights is None:
            return
        version, state = weights
        if version > self.policy_version:
            self.policy.load_weights(state, int(version))
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
        and initial states (evaluation).

        The hot path allocates nothing per step: the policy writes the actions into the
        round's [E, H, A] buffer, each env writes its next observation and reward inputs
        into its rows (``step_into``), and the rewards of every trajectory come from one
        batched ``family.rewards_for`` call at the end of the round (equal to what the env
        would have returned step by step: the family's reward of the same steps)."""
        self.set_weights(weights)
        fam, E = self.family, self.num_envs
        if tasks is None:
            tasks = fam.sample_tasks(self.rng, E)
        tasks = np.asarray(tasks, dtype=np.float64)
        n = len(tasks)
        if n > E:
            raise ValueError(f"worker {self.worker_id}: {n} tasks for {E} env slots")
        t0 = time.perf_counter()
        obs, act, rin, term = self._obs, self._act, self._rin, self._term
        H = act.shape[1]
        lengths = np.zeros(n, dtype=np.int64)
        truncated = np.zeros(n, dtype=bool)
        for i in range(n):
            fam.set_env_task(self.envs[i], tasks[i])
            seed = int(self.rng.integers(2**31)) if reset_seeds is None else int(reset_seeds[i])
            obs[i, 0], _ = self.envs[i].reset(seed=seed)
        if not random_actions:
            self.policy.begin(tasks)
        step = self._steppers
        alive = list(range(n))
        t = 0
        while alive:
            if t == H:
                raise RuntimeError(f"family {fam.name!r}: an episode ran past the horizon {H}")
            if random_actions:
                act[:n, t] = self.rng.uniform(-1.0, 1.0, size=(n, fam.action_dim))
            else:  # one batched forward pass for every slot (finished ones are ignored)
                self.policy.act_into(obs[:n, t], act[:n, t], deterministic=deterministic, rng=self.noise_rng)
            still = []
            for i in alive:
                te, tr = step[i](act[i, t], obs[i, t + 1], rin[i, t])
                term[i, t] = te
                if te or tr:
                    lengths[i] = t + 1
                    truncated[i] = bool(tr and not te)
                else:
                    still.append(i)
            alive = still
            t += 1
        # every trajectory's rewards in one batched call of the family's reward
        steps = StepBatch(
            np.concatenate([obs[i, : lengths[i]] for i in range(n)]),
            np.concatenate([act[i, : lengths[i]] for i in range(n)]),
            np.concatenate([obs[i, 1 : lengths[i] + 1] for i in range(n)]),
            np.concatenate([rin[i, : lengths[i]] for i in range(n)]),
        )
        rewards = np.split(fam.rewards_for(steps, np.repeat(tasks, lengths, axis=0)), np.cumsum(lengths)[:-1])
        now = time.time()
        trajs = []
        for i in range(n):
            L = int(lengths[i])
            trajs.append(
                Trajectory(
                    episode_id=f"w{self.worker_id}-{self.incarnation}-e{self.episodes_done}",
                    worker_id=self.worker_id,
                    policy_version=self.policy_version,
                    family=fam.name,
                    task=tasks[i].copy(),
                    obs=obs[i, : L + 1].copy(),
                    actions=act[i, :L].copy(),
                    rewards=np.asarray(rewards[i], dtype=np.float64),
                    terminated=term[i, :L].copy(),
                    truncated=bool(truncated[i]),
                    reward_inputs=rin[i, :L].copy(),
                    created_at=now,
                )
            )
            self.episodes_done += 1
        returns = np.array([t.rewards.sum() for t in trajs])
        stats = {
            "episodes": float(n),
            "env_steps": float(lengths.sum()),
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


class MetaRolloutWorker:
    """PEARL collection and meta-test evaluation for one task at a time (one env, whole episodes).

        worker = MetaRolloutWorker(worker_id=0, family="four_corners", pearl_cfg=cfg, seed=0)
        trajs, stats = worker.collect_task(task_id, [("prior", 100, False), ("posterior", 900, True)],
                                           weights, embedding_size=1024)
        report = worker.evaluate_meta(weights, test_tasks, seed=0, num_exploration=5, num_trajectories=20)

    z and the context are plain numpy data here (no hidden ``self.z``): the context of a
    task is the (s, a, r) rows this call collected for it, and a posterior trajectory draws
    z ~ q(z | up to ``embedding_size`` of those rows), re-inferred after every trajectory
    (oyster ``collect_data`` with ``update_posterior_rate`` 1, HFR's sampler-side encoder
    buffer of original data). Trajectories carry ``task_id`` and ``phase`` into the store.
    """

    def __init__(self, worker_id: int, family: str, pearl_cfg: Any, seed: int,
                 family_kwargs: dict | None = None):
        self.worker_id = worker_id
        self.family: TaskFamily = get_family(family, **(family_kwargs or {}))
        if not getattr(self.family, "meta", False):
            raise ValueError(f"family {family!r} is not a meta family (PEARL needs train/test task lists)")
        self.incarnation = uuid.uuid4().hex[:8]
        self.rng = np.random.default_rng([seed, worker_id, int(self.incarnation, 16)])
        self.train_tasks = self.family.train_tasks()
        self.env = self.family.make_env(self.train_tasks[0], seed=int(self.rng.integers(2**31)))
        fam = self.family
        self.agent = NumpyPEARLAgent(fam.obs_dim, fam.action_dim, pearl_cfg, seed=int(self.rng.integers(2**62)))
        self.policy_version = -1
        self.episodes_done = 0

    def set_weights(self, weights: Weights | None) -> None:
        if weights is None:
            return
        version, state = weights
        if version > self.policy_version:
            self.agent.load_state_dict(state, version)
            self.policy_version = int(version)

    def _episode(self, task: np.ndarray, z: np.ndarray, deterministic: bool, reset_seed: int) -> dict[str, Any]:
        fam, env = self.family, self.env
        fam.set_env_task(env, task)
        o, _ = env.reset(seed=reset_seed)
        obs, act, rew, term, rin, success = [o], [], [], [], [], False
        self.agent.begin(np.asarray(z, np.float32)[None])  # z is fixed for the episode
        out = np.empty((1, fam.action_dim))
        while True:
            self.agent.act_into(np.asarray(o)[None], out, deterministic)
            a = out[0].copy()
            o, r, te, tr, info = env.step(a)
            obs.append(o)
            act.append(a)
            rew.append(r)
            term.append(te)
            rin.append(info["reward_inputs"])
            success = success or bool(info.get("success", False))
            if te or tr:
                break
        T = len(act)
        return {
            "obs": np.asarray(obs, np.float64), "actions": np.asarray(act, np.float64),
            "rewards": np.asarray(rew, np.float64), "terminated": np.asarray(term, bool),
            "truncated": bool(tr and not te), "reward_inputs": np.asarray(rin, np.float64).reshape(T, fam.reward_input_dim),
            "success": success,
        }

    def _posterior_z(self, context: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
        rows = np.concatenate(context) if context else np.zeros((0, 1), np.float32)
        if len(rows) > size:
            rows = rows[rng.choice(len(rows), size=size, replace=False)]
        return self.agent.sample_z(self.agent.posterior(rows if len(rows) else None), rng)

    def collect_task(self, task_id: int, phases: list[tuple[str, int, bool]], weights: Weights | None = None,
                     embedding_size: int = 100) -> tuple[list[Trajectory], dict[str, Any]]:
        """Run the phases of one iteration for training task ``task_id``, in order: each
        (name, steps, posterior) collects whole episodes until ``steps`` env steps; z is
        drawn per trajectory from the prior, or with ``posterior`` from q(z | context)."""
        self.set_weights(weights)
        if not 0 <= task_id < len(self.train_tasks):
            raise ValueError(f"worker {self.worker_id}: task_id {task_id} outside [0, {len(self.train_tasks)})")
        task = self.train_tasks[task_id]
        t0 = time.perf_counter()
        context: list[np.ndarray] = []
        trajs: list[Trajectory] = []
        phase_steps: dict[str, int] = {}
        for name, steps, posterior in phases:
            done = 0
            while done < steps:
                if posterior:
                    z = self._posterior_z(context, embedding_size, self.rng)
                else:
                    z = self.agent.sample_z(self.agent.posterior(None), self.rng)
                ep = self._episode(task, z, False, int(self.rng.integers(2**31)))
                context.append(self.agent.context(ep["obs"][:-1], ep["actions"], ep["rewards"], ep["obs"][1:]))
                trajs.append(Trajectory(
                    episode_id=f"w{self.worker_id}-{self.incarnation}-e{self.episodes_done}",
                    worker_id=self.worker_id, policy_version=self.policy_version, family=self.family.name,
                    task=task.copy(), obs=ep["obs"], actions=ep["actions"], rewards=ep["rewards"],
                    terminated=ep["terminated"], truncated=ep["truncated"], reward_inputs=ep["reward_inputs"],
                    created_at=time.time(), task_id=int(task_id), phase=name,
                ))
                self.episodes_done += 1
                done += len(ep["actions"])
            phase_steps[name] = done
        returns = [float(t.rewards.sum()) for t in trajs]
        stats = {"task_id": int(task_id), "episodes": len(trajs), "env_steps": int(sum(t.length for t in trajs)),
                 "returns": returns, "phase_steps": phase_steps, "policy_version": self.policy_version,
                 "seconds": time.perf_counter() - t0}
        return trajs, stats

    def evaluate_meta(self, weights: Weights | None, tasks: np.ndarray, seed: int = 0, num_exploration: int = 2,
                      num_trajectories: int = 3, deterministic: bool = True) -> dict[str, Any]:
        """Meta-test (ALGORITHMS.md §4-5, oyster ``collect_paths``): per task, z ~ prior for
        the first ``num_exploration`` trajectories, then after each trajectory z ~ q(z | all
        context gathered so far); deterministic actions. Reports the LAST trajectory's return
        per task and, where the family defines success, whether any post-exploration
        trajectory succeeded. Seeded by (seed, task index): two runs agree."""
        self.set_weights(weights)
        tasks = self.family.check_tasks(tasks)
        last, first, success = [], [], []
        for k, task in enumerate(tasks):
            rng = np.random.default_rng([seed, k])
            z = self.agent.sample_z(self.agent.posterior(None), rng)
            context: list[np.ndarray] = []
            rets, succ = [], []
            for p in range(num_trajectories):
                ep = self._episode(task, z, deterministic, int(rng.integers(2**31)))
                rets.append(float(ep["rewards"].sum()))
                succ.append(ep["success"])
                context.append(self.agent.context(ep["obs"][:-1], ep["actions"], ep["rewards"], ep["obs"][1:]))
                if p + 1 >= num_exploration:
                    rows = np.concatenate(context)
                    z = self.agent.sample_z(self.agent.posterior(rows), rng)
            last.append(rets[-1])
            first.append(rets[0])
            success.append(any(succ[num_exploration:]))
        has_success = bool(getattr(self.family, "has_success", False))
        return {
            "returns": last,
            "return_mean": float(np.mean(last)),
            "prior_return_mean": float(np.mean(first)),
            "success": success if has_success else None,
            "success_rate": float(np.mean(success)) if has_success else None,
            "policy_version": self.policy_version,
        }
