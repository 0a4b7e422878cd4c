"""The PEARL learner: per-task buffers on its device, meta-batch updates, weights, checkpoints.

    learner = MetaLearner(obs_dim, action_dim, num_tasks, pearl_cfg, schedule, device="auto", seed=0)
    learner.clear_encoder(task_ids)         # start of an iteration (oyster clears them per task)
    learner.ingest(rows)                    # MetaTransitions from the relabel service
    report = learner.train(1000)            # gradient steps
    version, weights = learner.weights()    # encoder + actor for rollout workers

A plain class; the composition root wraps it with ``ray.remote`` (with a GPU when there is
one). It only stores rows, calls the pure ``sample_meta_batch`` / ``update``, publishes
and checkpoints; the whole state (buffers included) goes into the checkpoint, so a resumed
run continues exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learner.checkpoints import atomic_write_json, read_json
from learner.core import denormals_flushed, pick_device
from learner.pearl.config import PEARLConfig, ScheduleConfig
from learner.pearl.update import (
    init_state,
    load_state,
    policy_weights,
    sample_meta_batch,
    save_state,
    update,
    value_weights,
)


class MetaLearner:
    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, cfg: PEARLConfig, sched: ScheduleConfig,
                 device: str = "auto", seed: int = 0, num_threads: int = 1, checkpoint_dir: str | None = None,
                 resume: bool = False, flush_denormal: bool = True):
        torch.set_num_threads(max(1, int(num_threads)))
        self.device = pick_device(device)
        self._flush = flush_denormal and self.device.type == "cpu"  # LearnerConfig.flush_denormal
        self.state = init_state(obs_dim, action_dim, num_tasks, cfg, sched, self.device, seed)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.version = 0
        self.transitions = 0
        self._published = (0, policy_weights(self.state))
        self.metrics: dict[str, float] = {}
        if resume and self.checkpoint_dir is not None and (self.checkpoint_dir / "learner.pt").exists():
            self.state = load_state(self.checkpoint_dir / "learner.pt", self.device)
            meta = read_json(self.checkpoint_dir / "learner.json")
            self.version, self.transitions = int(meta["version"]), int(meta["transitions"])
            self._published = (self.version, policy_weights(self.state))

    def clear_encoder(self, task_ids: Any) -> None:
        self.state.enc.clear(np.asarray(task_ids, dtype=np.int64))

    def ingest(self, rows: Any) -> int:
        """Rows (``MetaTransitions``) into their target tasks' RL buffers, and the encoder
        buffers where ``to_enc``; returns transitions ingested so far."""
        if rows is None or rows.size == 0:
            return self.transitions
        for name in ("obs", "action", "reward", "next_obs"):
            if not np.all(np.isfinite(getattr(rows, name))):
                raise ValueError(f"meta learner: transition field {name!r} contains NaN or Inf")
        fields = (rows.obs, rows.action, rows.reward, rows.next_obs, rows.terminated)
        self.state.rl.add(rows.task_index, *fields)
        enc = np.asarray(rows.to_enc, dtype=bool)
        if enc.any():
            self.state.enc.add(rows.task_index[enc], *(x[enc] for x in fields))
        self.transitions += rows.size
        return self.transitions

    def train(self, num_updates: int) -> dict[str, Any]:
        """``num_updates`` gradient steps (none while no task has data in both buffers)."""
        t0 = time.perf_counter()
        ready = bool(((self.state.rl._size_t > 0) & (self.state.enc._size_t > 0)).any())
        n = int(num_updates) if ready else 0
        with denormals_flushed(self._flush):
            for i in range(n):
                _, batch, context = sample_meta_batch(self.state)
                self.state, m = update(self.state, batch, context, with_metrics=(i == n - 1))
                if m:
                    self.metrics = m
        return {"updates_done": n, "updates": self.state.step, "metrics": dict(self.metrics),
                "seconds": time.perf_counter() - t0}

    def publish(self) -> int:
        """Make the current encoder + actor the newest weights version."""
        self.version += 1
        self._published = (self.version, policy_weights(self.state))
        return self.version

    def weights(self) -> tuple[int, dict[str, np.ndarray]]:
        return self._published

    def critic_weights(self) -> dict[str, np.ndarray]:
        """Encoder, actor and twin critic for HFR's utility in the relabel service."""
        return value_weights(self.state)

    def counters(self) -> dict[str, Any]:
        return {"updates": self.state.step, "transitions": self.transitions, "version": self.version,
                "rl_sizes": self.state.rl.sizes().tolist(), "enc_sizes": self.state.enc.sizes().tolist(),
                "device": str(self.device)}

    def checkpoint(self, extra: dict | None = None) -> str:
        assert self.checkpoint_dir is not None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / "learner.pt"
        save_state(self.state, path)  # atomic (temp file + rename)
        meta = {"updates": self.state.step, "version": self.version, "transitions": self.transitions,
                "algorithm": "pearl", **(extra or {})}
        atomic_write_json(meta, self.checkpoint_dir / "learner.json")
        return str(path)
