"""``hindsight collect`` and ``hindsight bc``: HIPI-BC on stored experience (HIPI §5.2, §6.2).

    hindsight collect --checkpoint RUN_DIR --episodes 1000        # -> RUN_DIR/demos-1000/store
    hindsight bc --store RUN_DIR/demos-1000/store --relabel hipi  # -> .../bc-hipi-s0/
    hindsight bc --store ... --relabel hipi --no-partition --reward-bias 5   # HIPI Fig. 8

    RUN_DIR/checkpoints/learner.pt ──> actor ──> RolloutWorker (in process) on N prior tasks
        ──> DEMO_DIR/store (one shard, ``hindsight store verify`` reads it), DEMO_DIR/demos.json
    STORE ──> trajectories (task labels dropped) ──> learner.bc.train_bc ──> OUT/bc.pt,
        OUT/summary.json, OUT/tb (bc/loss, bc/entropy, eval/return_mean per epoch)

The family and its kwargs come from the run that wrote the store (``config.yaml`` or
``demos.json`` beside it). ``--reward-bias B`` adds B to the reward of the family's first
evaluation task in the RELABELING only (``envs.bias``, ``bias_tasks="eval_task"``), as HIPI
corrupted the first task's reward; evaluation always scores the true reward, with the same
seeded evaluation as training runs (``RolloutWorker.evaluate``: the fixed evaluation tasks
cycled to ``--eval-episodes``, initial states from ``--seed``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import get_family
from learner.bc import BCConfig, bc_net_config, evaluate_policy, train_bc
from relabel_service.store.tools import load_all


def _source_config(store: Path) -> tuple[str | None, dict[str, Any]]:
    """(family, family_kwargs) recorded beside a store by a training run or ``collect``."""
    parent = store.parent
    if (parent / "demos.json").exists():
        meta = json.loads((parent / "demos.json").read_text())
        return meta["family"], dict(meta.get("family_kwargs") or {})
    if (parent / "config.yaml").exists():
        from hindsight.config import load_config

        cfg = load_config(str(parent / "config.yaml"))
        return cfg.env.family, dict(cfg.env.family_kwargs)
    return None, {}


def run_bc(
    store: str | Path,
    cfg: BCConfig = BCConfig(),
    *,
    out_dir: str | Path | None = None,
    reward_bias: float = 0.0,
    eval_episodes: int = 25,
    eval_every: int = 0,
    max_trajectories: int | None = None,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """HIPI-BC on the trajectories of ``store``; writes bc.pt, summary.json and tb/ to
    ``out_dir`` (default: beside the store, ``bc-<variant>-s<seed>``) and returns the summary.

    ``eval_every``: also evaluate every this many epochs (0: only at the end)."""
    t0 = time.perf_counter()
    store = Path(store)
    if reward_bias and cfg.candidates != "eval":
        raise ValueError("--reward-bias biases the family's first evaluation task (HIPI Fig. 8); use "
                         "--candidates eval so that it is among the relabeling candidates")
    trajs = load_all(store)
    if not trajs:
        raise ValueError(f"{store}: no trajectories in this store")
    if max_trajectories is not None:
        trajs = trajs[:max_trajectories]
    names = {t.family for t in trajs}
    if len(names) != 1:
        raise ValueError(f"{store}: trajectories of several families {sorted(names)}; HIPI-BC needs one")
    name = names.pop()
    recorded, family_kwargs = _source_config(store)
    if recorded is not None and get_family(recorded, **family_kwargs).name != name:
        family_kwargs = {}  # the store holds another family than the run says: use the defaults
    relabel_family = get_family(name, **family_kwargs, **(
        {"reward_bias": reward_bias, "bias_tasks": "eval_task", "bias_task_index": 0} if reward_bias else {}))
    variant = cfg.label + (f"-bias{reward_bias:g}" if reward_bias else "")
    out = Path(out_dir) if out_dir is not None else store.parent / f"bc-{variant}-s{cfg.seed}"
    out.mkdir(parents=True, exist_ok=True)
    tb = None
    if tensorboard:
        from hindsight.tb import TBWriter

        tb = TBWriter(str(out / "tb"))
    evals: list[dict[str, Any]] = []
    net_cfg = bc_net_config(relabel_family, cfg)

    def on_epoch(epoch: int, row: dict[str, float], weights_fn: Any) -> dict[str, float]:
        extra: dict[str, float] = {}
        if eval_every and epoch % eval_every == 0 and epoch < cfg.epochs:
            ev = evaluate_policy(name, family_kwargs, weights_fn(), net_cfg, eval_episodes, cfg.seed)
            extra["eval_return"] = ev["return_mean"]
            evals.append({"epoch": epoch, **ev})
        if tb is not None:
            tb.scalars("bc", row, epoch)
            if extra:
                tb.scalar("eval/return_mean", extra["eval_return"], epoch)
        return extra

    result = train_bc(relabel_family, trajs, cfg, on_epoch=on_epoch)
    final = evaluate_policy(name, family_kwargs, result.weights, result.net_cfg, eval_episodes, cfg.seed)
    if tb is not None:
        tb.scalar("eval/return_mean", final["return_mean"], cfg.epochs)
        if final.get("success_rate") is not None:
            tb.scalar("eval/success_rate", final["success_rate"], cfg.epochs)
        tb.close()
    torch.save({"format": "hindsight-bc-1", "family": name, "family_kwargs": family_kwargs,
                "net_cfg": result.net_cfg.to_dict(), "bc_cfg": _cfg_dict(cfg),
                "dims": [relabel_family.obs_dim, relabel_family.action_dim, relabel_family.task_dim],
                "actor": {k: torch.as_tensor(v) for k, v in result.weights.items()}}, out / "bc.pt")
    summary = {
        "store": str(store),
        "out_dir": str(out),
        "family": name,
        "family_kwargs": family_kwargs,
        "variant": variant,
        "relabel": cfg.relabel,
        "partition": cfg.partition,
        "reward_bias": reward_bias,
        "trajectories": len(trajs),
        "steps": int(sum(t.length for t in trajs)),
        "config": _cfg_dict(cfg),
        "history": result.history,
        "evals": evals,
        "final_eval": {k: final[k] for k in ("return_mean", "length_mean", "success_rate")},
        "eval_episodes": eval_episodes,
        "seconds": time.perf_counter() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _cfg_dict(cfg: BCConfig) -> dict[str, Any]:
    d = dict(vars(cfg))
    d["hidden_sizes"] = list(cfg.hidden_sizes)
    return d


def run_collect(
    checkpoint: str | Path,
    episodes: int,
    *,
    out_dir: str | Path | None = None,
    seed: int = 0,
    deterministic: bool = False,
    num_envs: int = 16,
) -> dict[str, Any]:
    """Roll a trained run's policy out on ``episodes`` tasks drawn from the family's prior
    (seeded) into a new one-shard store ``OUT/store`` (default OUT = RUN_DIR/demos-N)."""
    from actors.policy import blas_threads
    from actors.rollout import RolloutWorker
    from hindsight.config import load_config
    from hindsight.fidelity import _locate
    from learner.sac.update import load_state, policy_weights
    from relabel_service.store.segments import STORE_META, shard_dir
    from relabel_service.store.shard import Shard

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    run_dir, ckpt = _locate(Path(checkpoint))
    cfg = load_config(str(run_dir / "config.yaml"))
    family = get_family(cfg.env.family, **cfg.env.family_kwargs)
    state = load_state(ckpt, "cpu")
    if (state.obs_dim, state.action_dim, state.task_dim) != (family.obs_dim, family.action_dim, family.task_dim):
        raise ValueError(f"{ckpt}: checkpoint dims do not match family {family.name!r}")
    out = Path(out_dir) if out_dir is not None else run_dir / f"demos-{episodes}"
    root = out / "store"
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already holds a store; pass another --out")
    root.mkdir(parents=True, exist_ok=True)
    (root / STORE_META).write_text(json.dumps({"num_shards": 1, "format": 1}) + "\n")
    task_rng, reset_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    tasks = family.sample_tasks(task_rng, episodes)
    E = max(1, min(num_envs, episodes))
    t0 = time.perf_counter()
    returns: list[float] = []
    worker = RolloutWorker(0, cfg.env.family, E, state.cfg, seed=seed, family_kwargs=cfg.env.family_kwargs)
    worker.noise_rng = np.random.default_rng(int(noise_rng.integers(2**62)))
    reset_seeds = reset_rng.integers(2**31, size=episodes)
    weights = (int(state.step), policy_weights(state))
    with Shard(shard_dir(root, 0), 0, fsync="never", background_sync=False) as shard, blas_threads(1):
        for lo in range(0, episodes, E):
            trajs, _ = worker.collect_episodes(weights, tasks=tasks[lo:lo + E], deterministic=deterministic,
                                               reset_seeds=reset_seeds[lo:lo + E])
            shard.append_many(trajs)
            returns += [float(t.rewards.sum()) for t in trajs]
        shard.sync()
    meta = {"family": cfg.env.family, "family_kwargs": dict(cfg.env.family_kwargs), "checkpoint": str(ckpt),
            "checkpoint_step": int(state.step), "episodes": episodes, "seed": seed,
            "policy": "deterministic" if deterministic else "stochastic", "return_mean": float(np.mean(returns)),
            "seconds": time.perf_counter() - t0, "store": str(root)}
    (out / "demos.json").write_text(json.dumps(meta, indent=2))
    return meta
