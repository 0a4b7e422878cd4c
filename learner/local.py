"""Single-process multi-task SAC: a few envs, a device replay, updates, seeded evaluation.

    out = train_local(TestGoal(), env_steps=3000, seed=0)
    out["eval"]["mean_return"], out["random_eval"]["mean_return"]

Used by the learning smoke test and by ``make run`` before the distributed pipeline
exists. No relabeling, no Ray: each episode gets a task from ``family.sample_tasks`` and
is stored under that task only.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from envs.core import TaskFamily
from learner.replay import Replay
from learner.sac.config import SACConfig, sac_config_for
from learner.sac.networks import InferencePolicy
from learner.sac.update import init_state, policy_weights, update
from relabel_service.core import TransitionBatch

#: obs [W, O], task [W, Z] -> action [W, A] in [-1, 1]
PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class RandomPolicy:
    """Uniform actions in [-1, 1]^A from its own seeded generator (the evaluation baseline)."""

    def __init__(self, action_dim: int, seed: int = 0):
        self.action_dim = action_dim
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray, task: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=(len(obs), self.action_dim)).astype(np.float32)


def _check_action_space(env: Any, family: TaskFamily) -> None:
    space = env.action_space
    if not (np.allclose(space.low, -1.0) and np.allclose(space.high, 1.0)):
        raise ValueError(
            f"family {family.name!r}: SAC's tanh actions need an action space of [-1, 1], "
            f"got low={space.low} high={space.high}"
        )


def evaluate(policy: InferencePolicy | PolicyFn, family: TaskFamily, tasks: np.ndarray,
             seed: int = 0) -> dict[str, Any]:
    """One episode per task, all tasks stepped together with one batched policy call per step.

    An ``InferencePolicy`` acts deterministically (tanh of the mean, ALGORITHMS.md §5); any
    other callable is called as is. Returns the undiscounted return of the commanded task
    per episode. Env ``i`` is reset with seed ``seed + i``, so two runs of the same
    checkpoint agree.
    """
    tasks = family.check_tasks(tasks)
    if isinstance(policy, InferencePolicy):
        inference = policy

        def act(obs: np.ndarray, task: np.ndarray) -> np.ndarray:
            return inference(obs, task, deterministic=True)
    else:
        act = policy
    n = len(tasks)
    envs = [family.make_env(task, seed=seed + i) for i, task in enumerate(tasks)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    task_f32 = tasks.astype(np.float32)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    success = np.zeros(n, dtype=bool)  # ended by termination before the time limit (HIPI)
    active = np.ones(n, dtype=bool)
    while active.any():
        actions = act(obs, task_f32)  # [W, A]; finished rows are computed and ignored
        for i in np.flatnonzero(active):
            next_obs, reward, terminated, truncated, _ = envs[i].step(actions[i])
            returns[i] += reward
            lengths[i] += 1
            obs[i] = next_obs
            if terminated or truncated:
                active[i] = False
                success[i] = bool(terminated) and not truncated
    for env in envs:
        env.close()
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "returns": returns.tolist(),
        "mean_length": float(lengths.mean()),
        "success_rate": float(success.mean()),
    }


def train_local(
    family: TaskFamily,
    sac_cfg: SACConfig | None = None,
    env_steps: int = 10_000,
    seed: int = 0,
    warmup_steps: int = 1_000,
    updates_per_step: float = 1.0,
    eval_episodes: int | None = None,
    progress: bool = True,
    num_envs: int = 1,
    device: torch.device | str = "cpu",
    replay_capacity: int = 1_000_000,
    metrics_every: int = 100,
) -> dict[str, Any]:
    """Train multi-task SAC on ``family`` for ``env_steps`` environment steps, then evaluate.

    ``warmup_steps`` steps of uniform random actions come first, without updates (HIPI:
    10k); afterwards ``updates_per_step`` gradient steps per env step (fractions accumulate).
    Each of the ``num_envs`` envs draws a fresh task per episode. A time-limit end is
    stored as terminal only when ``family.timeout_is_terminal`` (GH point envs).
    Evaluation: ``eval_episodes`` episodes on the family's evaluation tasks (``eval_tasks_for``;
    all of them when None), for the trained policy and for a uniform random policy.

    Returns ``{"state", "eval", "random_eval", "metrics", "env_steps", "updates", "wall_s",
    "train_wall_s", "episodes", "train_return"}``; ``state`` is the ``SACState``.
    """
    cfg = sac_cfg if sac_cfg is not None else sac_config_for(family)
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    state = init_state(family.obs_dim, family.action_dim, family.task_dim, cfg, device, seed)
    act_gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**31)))
    replay = Replay(min(replay_capacity, max(env_steps, 1)), family.obs_dim, family.action_dim,
                    family.task_dim, device, family.reward_input_dim)

    # one env per slot, retasked per episode (``set_env_task``) rather than rebuilt
    tasks = family.sample_tasks(rng, num_envs)  # [W, Z]
    envs = [family.make_env(task, seed=int(rng.integers(2**31))) for task in tasks]
    _check_action_space(envs[0], family)

    def new_episode(i: int) -> np.ndarray:
        family.set_env_task(envs[i], tasks[i])
        return envs[i].reset(seed=int(rng.integers(2**31)))[0]

    obs = np.stack([new_episode(i) for i in range(num_envs)]).astype(np.float32)  # [W, O]
    tasks = tasks.astype(np.float32)
    ep_return = np.zeros(num_envs)
    finished_returns: list[float] = []
    metrics: dict[str, float] = {}
    updates = 0
    credit = 0.0
    start = time.perf_counter()
    bar = tqdm(total=env_steps, disable=not progress, desc=f"sac {family.name}", unit="step")
    steps = 0
    while steps < env_steps:
        if steps < warmup_steps:
            actions = rng.uniform(-1.0, 1.0, size=(num_envs, family.action_dim)).astype(np.float32)
        else:
            o = torch.as_tensor(obs, device=device)
            z = torch.as_tensor(tasks, device=device)
            actions = state.actor.act(o, z, deterministic=False, generator=act_gen).cpu().numpy()
        next_obs = np.empty_like(obs)
        rewards = np.zeros(num_envs, dtype=np.float32)
        terminal = np.zeros(num_envs, dtype=np.float32)
        done = np.zeros(num_envs, dtype=bool)
        reward_inputs = np.zeros((num_envs, family.reward_input_dim), dtype=np.float32)
        for i, env in enumerate(envs):
            o2, r, term, trunc, info = env.step(actions[i])
            next_obs[i], rewards[i], reward_inputs[i] = o2, r, info["reward_inputs"]
            terminal[i] = float(term or (trunc and family.timeout_is_terminal))
            done[i] = term or trunc
        replay.add(TransitionBatch(obs, actions, rewards, next_obs, terminal, tasks, reward_inputs))  # copied in
        ep_return += rewards
        obs = next_obs
        for i in np.flatnonzero(done):
            finished_returns.append(float(ep_return[i]))
            ep_return[i] = 0.0
            tasks[i] = family.sample_tasks(rng, 1)[0]
            obs[i] = new_episode(i)
        steps += num_envs
        bar.update(num_envs)

        if steps > warmup_steps and len(replay) >= cfg.batch_size:
            credit += updates_per_step * num_envs
            while credit >= 1.0:
                credit -= 1.0
                batch = replay.sample(cfg.batch_size, state.generator)
                want = updates % metrics_every == 0
                state, m = update(state, batch, with_metrics=want)
                updates += 1
                if want:
                    metrics = m
                    recent = finished_returns[-20:]
                    bar.set_postfix(ret=f"{np.mean(recent):.2f}" if recent else "-",
                                    q=f"{m['q1']:.2f}", alpha=f"{m['alpha']:.3f}")
    bar.close()
    for env in envs:
        env.close()
    train_wall = time.perf_counter() - start

    eval_tasks = family.eval_tasks_for(eval_episodes)
    policy = InferencePolicy(family.obs_dim, family.action_dim, family.task_dim, cfg, "cpu", seed)
    policy.load_state_dict(policy_weights(state), version=state.step)
    trained = evaluate(policy, family, eval_tasks, seed=seed)
    random = evaluate(RandomPolicy(family.action_dim, seed), family, eval_tasks, seed=seed)
    return {
        "state": state,
        "config": dataclasses.asdict(cfg),
        "eval": trained,
        "random_eval": random,
        "metrics": metrics,
        "env_steps": steps,
        "updates": updates,
        "episodes": len(finished_returns),
        "train_return": float(np.mean(finished_returns[-20:])) if finished_returns else float("nan"),
        "train_wall_s": train_wall,
        "wall_s": time.perf_counter() - start,
    }

