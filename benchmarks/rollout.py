"""Rollout throughput: one worker with batched policy inference vs bare ``env.step``.

Baseline: the same number of HalfCheetah envs stepped with uniform random actions and
nothing else (no policy, no recording). Measured: ``RolloutWorker.collect_episodes`` with
the SAC actor's forward pass each step, recording whole trajectories. Both in this
process, one torch thread, interleaved repetitions; the ratio is the figure of merit.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from actors.rollout import RolloutWorker
from envs import get_family
from learner.sac.config import SACConfig, sac_defaults

FAMILY = "half_cheetah_mo"


def _bare_steps_per_s(num_envs: int, steps: int, seed: int) -> float:
    fam = get_family(FAMILY)
    rng = np.random.default_rng(seed)
    envs = [fam.make_env(t, seed=seed + i) for i, t in enumerate(fam.sample_tasks(rng, num_envs))]
    for i, e in enumerate(envs):
        e.reset(seed=seed + i)
    acts = rng.uniform(-1, 1, size=(steps, num_envs, fam.action_dim))
    t0 = time.perf_counter()
    for t in range(steps):
        for e, a in zip(envs, acts[t]):
            _, _, te, tr, _ = e.step(a)
            if te or tr:
                e.reset()
    return steps * num_envs / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)
    num_envs = 8
    fam = get_family(FAMILY)
    horizon = fam.horizon
    reps = 1 if quick else 3
    cfg = SACConfig(**sac_defaults(FAMILY))
    worker = RolloutWorker(worker_id=0, family=FAMILY, num_envs=num_envs, net_cfg=cfg, seed=0)
    worker.collect_episodes(random_actions=False)  # warm-up
    bare, ours = [], []
    for r in range(reps):
        bare.append(_bare_steps_per_s(num_envs, horizon, seed=r))
        t0 = time.perf_counter()
        _, stats = worker.collect_episodes(random_actions=False)
        ours.append(stats["env_steps"] / (time.perf_counter() - t0))
    b, o = float(np.median(bare)), float(np.median(ours))
    return {
        "family": FAMILY,
        "envs_per_worker": num_envs,
        "steps_per_measure": num_envs * horizon,
        "bare_env_steps_per_s": round(b, 1),
        "worker_env_steps_per_s": round(o, 1),
        "ratio": round(o / b, 3),
        "target_ratio": 0.8,
    }
