"""The learner: replay on its device, SAC updates under a rate limit, weights and checkpoints.

    learner = Learner(obs_dim=5, action_dim=2, task_dim=6, reward_input_dim=0, cfg=learner_cfg,
                      discount=0.97, seed=0)
    learner.ingest(transition_batch)          # -> transitions inserted so far
    report = learner.train(max_updates=50)     # runs what the rate limiter allows
    version, weights = learner.weights()       # actor weights for rollout workers

A plain class; the composition root wraps it with ``ray.remote`` (asking for a GPU when
the cluster has one). It only pulls batches, calls the pure ``update``, publishes, logs
and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from learner.checkpoints import atomic_write_json, read_json
from learner.core import Batch, denormals_flushed, learner_threads, pick_device, set_cpu_bf16_matmul, to_torch
from learner.rate_limiter import RateLimiter
from learner.replay import Replay
from learner.sac.branches import BranchThread, split_threads
from learner.sac.graphed import GraphedUpdates, set_tf32
from learner.sac.update import SACState, init_state, load_state, policy_weights, save_state, update, value_weights
from relabel_service.core import TransitionBatch

#: the pause of a ``train`` call the rate limiter allows no update, doubling up to the max
IDLE_PAUSE_S, IDLE_PAUSE_MAX_S = 0.02, 0.16

#: in-batch relabeling hook (HIPI-RL): (state, batch, generator) -> (batch, stats)
BatchRelabeler = Callable[[SACState, Any, torch.Generator], tuple[Any, dict[str, float]]]


class Learner:
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        task_dim: int,
        reward_input_dim: int,  # the family's I (0 for most): stored with every transition
        cfg: Any,  # hindsight.config.LearnerConfig
        discount: float,
        seed: int,
        checkpoint_dir: str | None = None,
        resume: bool = False,
        batch_relabeler: BatchRelabeler | None = None,
        ledger: bool = False,
        version_floor: int = 0,
    ):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        # With 2+ threads the actor's branch of every update runs on a thread of its own
        # beside the critic's (learner/sac/branches.py), half the threads each, where that
        # pays (networks of 128+ wide on the CPU). Threads: learner.threads, else the whole
        # cores Ray gives the learner, and with branches a tenth of a core or more counts
        # (learner_threads, threads_for).
        self.threads, split = learner_threads(cfg, self.device)
        # denormals as zero in the updates' threads (LearnerConfig.flush_denormal)
        self._flush = bool(getattr(cfg, "flush_denormal", True)) and self.device.type == "cpu"
        self.branches: BranchThread | None = None
        self._own_threads = self.threads
        if split:
            self._own_threads, branch_threads = split_threads(self.threads)
            self.branches = BranchThread(branch_threads, flush_denormal=self._flush)
        torch.set_num_threads(self._own_threads)
        if self.device.type == "cuda":
            set_tf32(getattr(cfg, "tf32", False))
        # "" or why learner.bf16_matmul stays float32 here (the driver warns)
        self.precision_note = set_cpu_bf16_matmul(bool(getattr(cfg, "bf16_matmul", False))) \
            if self.device.type == "cpu" else ""
        sac_cfg = cfg.sac
        sac_cfg = dataclasses.replace(sac_cfg, discount=discount)
        self.state = init_state(obs_dim, action_dim, task_dim, sac_cfg, self.device, seed)
        self.replay = Replay(cfg.replay_capacity, obs_dim, action_dim, task_dim, self.device, reward_input_dim)
        self.limiter = RateLimiter(cfg.samples_per_insert, sac_cfg.batch_size, cfg.min_replay, cfg.spi_tolerance)
        self.sample_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.batch_relabeler = batch_relabeler
        self.inserted = 0  # env steps whose transitions reached the replay (rate limiter)
        self.transitions = 0  # transitions added, relabeled copies included
        self.updates = 0
        # the learner's axis (eval x): the env steps the updates so far stand for at the
        # rate limiter's exact ratio, from min_replay, capped by the env steps inserted
        self.trained_env_steps = 0
        self._updates_offset = 0  # updates before a resume do not count against new data
        self.version = 0
        self._published: tuple[int, dict[str, np.ndarray]] = (0, policy_weights(self.state))
        self._published_updates = 0  # updates behind the published weights
        # On CUDA, k updates per CUDA-graph launch (learner/sac/graphed.py); built lazily
        self.use_graph = (
            self.device.type == "cuda" and getattr(cfg, "cuda_graph", False) and batch_relabeler is None
        )
        self._graphed: GraphedUpdates | None = None
        # With ``sac.compile`` the first update compiles (seconds to minutes); the learner
        # does it on a scratch copy while the replay fills (``_warm_up``), not on the clock
        self.warmed_up = not sac_cfg.compile
        self.warm_up_seconds = 0.0
        self.compile_error = ""  # why the compile failed, if it did (the learner then runs eager)
        # The actor may serve ingest while train runs (Ray max_concurrency 2): the replay
        # lock covers writes and samples, the state lock the networks and optimiser.
        self._replay_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self._rates = {"ingest_t": time.perf_counter(), "ingest_n": 0, "update_t": time.perf_counter(), "update_n": 0}
        self._idle_pause = IDLE_PAUSE_S
        # The ledger: episode ids that reached the replay through the stream (checkpointed
        # with the networks), for exactly-once checks; refills are counted apart.
        self.keep_ledger = ledger
        self.ledger: dict[str, int] = {}
        self.duplicates = 0
        self.refilled = 0  # trajectories' transitions re-read from the store after a restart
        self._restored_meta: dict[str, Any] | None = None
        if resume and self.checkpoint_dir is not None and (self.checkpoint_dir / "learner.pt").exists():
            self._restore()
        if version_floor > self.version:
            # a learner restarted after a death publishes above every version the workers
            # hold, so they take its weights at once
            self.version = int(version_floor)
            self._published = (self.version, self._published[1])

    # ---- data ----------------------------------------------------------------------------
    def ingest(
        self,
        batch: TransitionBatch | None,
        env_steps: int | None = None,
        episode_ids: list[str] | None = None,
        refill: bool = False,
    ) -> int:
        """Add relabeled transitions to the replay; returns env steps inserted so far.

        The rate limiter counts *env steps* (the originals), not relabeled copies, so that
        every strategy gets the same updates per env step (as the GH and HIPI code do).
        ``env_steps=None`` counts every transition. ``refill``: transitions re-read from
        the store after a restart (data trained on before the checkpoint): they fill the
        replay but count neither for the rate limiter nor in the ledger.
        """
        if batch is not None and len(batch):
            for name, x in zip(batch._fields, batch):
                if not np.all(np.isfinite(x)):
                    raise ValueError(f"learner: transition field {name!r} contains NaN or Inf")
            tensors = to_torch(batch, self.device)  # converted outside the lock
            with self._replay_lock:
                self.replay.add(tensors)
            if refill:
                self.refilled += len(episode_ids or ())
                self.transitions += len(batch)
                return self.inserted
            if self.keep_ledger:
                with self._replay_lock:
                    for eid in episode_ids or ():
                        self.duplicates += eid in self.ledger
                        self.ledger[eid] = self.ledger.get(eid, 0) + 1
            with self._replay_lock:  # train reads it under the same lock
                self.inserted += len(batch) if env_steps is None else int(env_steps)
            self.transitions += len(batch)
            self._rates["ingest_n"] += len(batch)
        return self.inserted

    # ---- updates -------------------------------------------------------------------------
    def train(self, max_updates: int) -> dict[str, Any]:
        """Run up to ``max_updates`` SAC updates, as many as the rate limiter allows."""
        # The allowance and the report use the data ingested *before* this call: ingest may
        # run concurrently, and a report of "0 updates at inserted=X" must mean that X
        # allowed none (the driver ends the run on it).
        with self._replay_lock:
            inserted, replay_size = self.inserted, len(self.replay)
        n = min(max_updates, self.limiter.updates_allowed(inserted, self.updates - self._updates_offset))
        n = n if replay_size >= max(1, self.cfg.min_replay) else 0
        if torch.get_num_threads() != self._own_threads:  # Ray may call from a thread of its own
            torch.set_num_threads(self._own_threads)
        if not self.warmed_up:
            self._warm_up()  # compile now, while the replay fills (or before the first update)
        elif n == 0:
            # nothing allowed yet: do not spin the driver's loop. The pause doubles over
            # calls that find nothing (20 ms to 160 ms): each call is a round trip through the
            # driver, ~50 a second at a fixed 20 ms while the replay fills
            time.sleep(self._idle_pause)
            self._idle_pause = min(2.0 * self._idle_pause, IDLE_PAUSE_MAX_S)
        if n:
            self._idle_pause = IDLE_PAUSE_S
        metrics: dict[str, float] = {}
        relabel_stats: dict[str, float] = {}
        with self._state_lock, denormals_flushed(self._flush):  # (Ray's calling thread varies)
            done = 0
            k = int(getattr(self.cfg, "updates_per_launch", 1))
            if self.use_graph and n >= k:
                if self._graphed is None:
                    self._graphed = GraphedUpdates(self.state, self.replay, k, self.cfg.sac.batch_size)
                for _ in range(n // k):
                    with self._replay_lock:
                        done += self._graphed.run(1)
                    self._count_updates(k)
                metrics = self._graphed.read_metrics()
            # With two branches, the next batch is drawn on the actor's thread after its
            # branch (``update(side=)``), off the critic's, the longer branch alone (in an
            # e2e run the two paths come out about even): the same draws from
            # ``sample_gen`` in the same order, each one used.
            ahead = self.branches is not None and self.batch_relabeler is None
            todo, nxt = n - done, []
            for i in range(todo):
                if nxt:
                    batch = nxt.pop()
                else:
                    batch = self._sample()
                if self.batch_relabeler is not None:
                    batch, relabel_stats = self.batch_relabeler(self.state, batch, self.sample_gen)
                side = (lambda: nxt.append(self._sample())) if ahead and i + 1 < todo else None
                self.state, m = update(self.state, batch, with_metrics=(i == todo - 1), branches=self.branches,
                                       side=side)
                metrics = m or metrics
                self._count_updates(1)
        if n:  # the learner's axis: the env steps its updates stand for, at most those inserted
            paid = self.limiter.env_steps_paid(inserted, self.updates - self._updates_offset)
            self.trained_env_steps = max(self.trained_env_steps, paid)
        if "q1" in metrics:
            metrics["q_mean"] = 0.5 * (metrics["q1"] + metrics["q2"])
        return {
            "updates_done": n,
            "updates": self.updates,
            "inserted": inserted,
            "trained_env_steps": self.trained_env_steps,
            "version": self.version,
            "replay_size": len(self.replay),
            "metrics": metrics,
            "relabel": relabel_stats,
            "compile_error": self.compile_error,
            "precision_note": self.precision_note,
        }

    def _sample(self) -> Batch:
        with self._replay_lock:
            return self.replay.sample(self.cfg.sac.batch_size, self.sample_gen)

    def _warm_up(self) -> None:
        """Compile the update (``sac.compile``) before the data allows the first one: one
        update of a scratch state of the same shapes on a random batch of the replay's
        dtypes, so the real updates find the compiled code (dynamo shares it between states
        of the same shapes; the networks and optimiser are untouched)."""
        t0 = time.perf_counter()
        st, size = self.state, self.cfg.sac.batch_size
        scratch = init_state(st.obs_dim, st.action_dim, st.task_dim, st.cfg, self.device, st.seed)
        g = torch.Generator().manual_seed(st.seed)
        batch = Batch(
            obs=torch.randn(size, st.obs_dim, generator=g), action=torch.rand(size, st.action_dim, generator=g) * 2 - 1,
            reward=torch.randn(size, generator=g), next_obs=torch.randn(size, st.obs_dim, generator=g),
            terminated=torch.zeros(size, dtype=torch.bool), task=torch.randn(size, st.task_dim, generator=g),
            reward_inputs=torch.randn(size, self.replay.dims[3], generator=g),
        )
        batch = Batch(*(x.to(self.device) for x in batch))
        try:
            update(scratch, batch, with_metrics=True, branches=self.branches)
        except Exception as e:  # noqa: BLE001 - any compiler failure: train eager rather than stop
            # inductor builds C++ with the machine's compiler (``CXX``, else g++): a machine
            # without one, or a compiler error, must not end a run that eager code can do
            first_line = (str(e).strip().splitlines() or [""])[0]
            self.compile_error = f"{type(e).__name__}: {first_line}"
            self.state.cfg = dataclasses.replace(self.state.cfg, compile=False)  # the driver warns
        self.warmed_up = True
        self.warm_up_seconds = time.perf_counter() - t0

    def _count_updates(self, k: int) -> None:
        """Count k updates; publish the policy when a multiple of publish_every was passed."""
        every = self.cfg.publish_every
        crossed = (self.updates + k) // every > self.updates // every
        self.updates += k
        self._rates["update_n"] += k
        if crossed:
            self.version += 1
            self._published = (self.version, policy_weights(self.state))
            self._published_updates = self.updates

    def counters(self) -> dict[str, Any]:
        now = time.perf_counter()
        r = self._rates
        out = {
            "updates": self.updates,
            "inserted": self.inserted,
            "transitions": self.transitions,
            "version": self.version,
            "replay_size": len(self.replay),
            "ingest_per_s": r["ingest_n"] / max(1e-9, now - r["ingest_t"]),
            "updates_per_s": r["update_n"] / max(1e-9, now - r["update_t"]),
            "device": str(self.device),
            "threads": self.threads,
            "parallel_branches": self.branches is not None,
            "warm_up_seconds": self.warm_up_seconds,
            "compile_error": self.compile_error,
            # the CPU's float32 matmuls: "bf16" products (learner.bf16_matmul) or "none" (exact)
            "matmul_precision": torch.backends.mkldnn.matmul.fp32_precision if self.device.type == "cpu" else None,
        }
        self._rates = {"ingest_t": now, "ingest_n": 0, "update_t": now, "update_n": 0}
        return out

    def ledger_report(self) -> dict[str, Any]:
        """Episode ids ingested through the stream (each with its count), duplicates seen,
        trajectories refilled from the store."""
        return {"episode_ids": dict(self.ledger), "duplicates": self.duplicates, "refilled": self.refilled}

    def weights(self) -> tuple[int, dict[str, np.ndarray]]:
        """The latest published actor weights and their version."""
        return self._published

    def publish(self) -> tuple[dict[str, int], tuple[int, dict[str, np.ndarray]]]:
        """Publish the current actor weights now (when an update ran since the last
        publication) and return them with what they were trained on: (info, (version,
        weights)). Evaluations and the final evaluation use these, the learner's latest
        weights, not ones up to ``publish_every`` updates old; call it with
        ``.options(num_returns=2)`` to get the two as separate refs. The weights come back
        from this call itself because the actor may run calls concurrently, so a following
        ``weights()`` call could overtake it."""
        with self._state_lock:
            if self.version == 0 or self._published_updates != self.updates:
                self.version += 1
                self._published = (self.version, policy_weights(self.state))
                self._published_updates = self.updates
            info = {"version": self.version, "updates": self.updates, "trained_env_steps": self.trained_env_steps}
            return info, self._published

    def critic_weights(self) -> dict[str, np.ndarray]:
        """Actor and online critic weights (for V(s0, z) in the relabel service)."""
        with self._state_lock:
            return value_weights(self.state)

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, extra: dict | None = None) -> dict[str, Any]:
        """Write the state, then ``learner.json`` (updates, inserted, version and ``extra``)
        and return that meta with the state's ``path``: the updates it holds may be more
        than the caller last heard of, as training runs concurrently with this call."""
        assert self.checkpoint_dir is not None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / "learner.pt"
        with self._state_lock:
            save_state(self.state, path)  # atomic: a crash or a full disk keeps the previous one
        meta = {"updates": self.updates, "inserted": self.inserted, "version": self.version, **(extra or {})}
        if self.keep_ledger:  # first: learner.json names a checkpoint whose ledger is on disk
            with self._replay_lock:  # ingest may run meanwhile (max_concurrency 2)
                snapshot = {"episode_ids": dict(self.ledger), "duplicates": self.duplicates}
            atomic_write_json(snapshot, self.checkpoint_dir / "ledger.json")
        # Whole or not at all: a SIGKILL mid-write must not leave an empty learner.json.
        atomic_write_json(meta, self.checkpoint_dir / "learner.json")
        return {"path": str(path), **meta}

    def restored_checkpoint(self) -> dict[str, Any] | None:
        """The meta of the checkpoint this learner started from (None: it started fresh)."""
        return self._restored_meta

    def _restore(self) -> None:
        assert self.checkpoint_dir is not None
        self.state = load_state(self.checkpoint_dir / "learner.pt", self.device)
        meta = read_json(self.checkpoint_dir / "learner.json")
        self._restored_meta = dict(meta)
        self.updates, self.version = int(meta["updates"]), int(meta["version"])
        # The replay is not checkpointed: count its contents afresh so the rate limiter
        # waits for min_replay new transitions before updating again.
        self.inserted = 0
        self.limiter = RateLimiter(
            self.cfg.samples_per_insert, self.cfg.sac.batch_size, self.cfg.min_replay, self.cfg.spi_tolerance
        )
        self._updates_offset = self.updates
        self._published = (self.version, policy_weights(self.state))
        self._published_updates = self.updates
        ledger_path = self.checkpoint_dir / "ledger.json"
        if self.keep_ledger and ledger_path.exists():
            saved = read_json(ledger_path)
            self.ledger, self.duplicates = dict(saved["episode_ids"]), int(saved["duplicates"])
