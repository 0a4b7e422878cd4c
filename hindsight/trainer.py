"""The trainer: wires rollout actors, the store, relabel workers and the learner on Ray.

```
 RolloutActor x W --append--> TrajectoryStore (S shard actors, segment files)
      ^ weights ref (versioned)          | read_new(cursors), recent(N)
      |                                  v
   Learner <--ingest(batch ref)-- RelabelWorker x R  (strategy: none|random|air|...)
      | train(k) under the samples-per-insert limit
      v
  driver loop (this file): refs only, TensorBoard, progress bar, checkpoints, summary.json
```

The driver moves object refs, never data: a relabeled batch goes from the relabel worker
to the learner directly. Every producer has a bounded number of calls in flight, so a
busy actor is never flooded and back-pressure comes for free.

Evaluation runs on the learner's axis: an eval "at X env steps" fires once the learner's
updates stand for X env steps at the rate limiter's exact ratio, capped by the env steps
it was sent (``RateLimiter.env_steps_paid``; not when X have been
collected, which can run well ahead through the rate limiter's tolerance and the relabel
backlog), on weights the learner publishes for it, and eval histories and learning curves
use that x. The final evaluation uses the learner's latest weights. Once collection has
spent the budget the progress bar turns into a drain bar (updates left, updates/s) until
the learner has caught up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError
from tqdm import tqdm

from actors.pool import RolloutActor, RolloutPool
from actors.priority import background
from envs import get_family
from hindsight import placement
from hindsight.config import ExperimentConfig, dump_config, learner_cpus
from hindsight.control import Autoscaler, format_scale, start_control
from hindsight.tb import TBWriter
from hindsight.watchdog import Watchdog, diagnose, free_resources, pending_actors
from learner.actor import Learner
from learner.checkpoints import CheckpointError, read_json
from learner.rate_limiter import RateLimiter
from learner.sac.update import make_value_fn_factory
from relabel_service.store.actor import start_store
from relabel_service.worker import USES_VALUE, RelabelWorker

log = logging.getLogger("hindsight.trainer")

CONTROL_FILE = "control.json"
CONTROL_REPLY = "control.reply.json"
STATE_FILE = "trainer_state.json"
#: strategies that run inside the learner on sampled batches instead of in the service
IN_LEARNER = {"hipi_rl"}
#: an actor that is gone (its process or its node): the driver replaces it, never crashes
ACTOR_GONE = (RayActorError, ActorUnavailableError)
#: calls whose results a relabel worker returns in a sequence the driver must keep
RELABEL_CALLS = ("relabel", "refill")


def in_call_order(ready: Sequence[Any], inflight: Mapping[Any, tuple]) -> list[Any]:
    """The refs to handle for ``ready``: each relabel worker's results in the order of
    its calls.

    ``ray.wait(refs, num_returns=1)`` hands back *a* ready ref, not the first of the list:
    with ``relabel.prefetch`` calls queued on one worker, its second result may come back
    while its first, also finished, waits. Handled the wrong way round, the first one's
    cursors would move the run's cursors back: the store then seems to hold records no
    relabeler will deliver (the end of the run waits for them forever) and a checkpoint
    would name cursors behind the data the learner has. A worker runs its calls one at a
    time, so every call queued before a ready one has finished: those come first.
    ``inflight`` maps refs to their kinds in the order they were submitted."""
    out: list[Any] = []
    taken: set[Any] = set()
    for ref in ready:
        kind = inflight.get(ref)
        if kind is not None and kind[0] in RELABEL_CALLS:
            for older, k in inflight.items():
                if older == ref:
                    break
                if k[0] in RELABEL_CALLS and k[1] == kind[1] and older not in taken:
                    out.append(older)
                    taken.add(older)
        if ref not in taken:
            out.append(ref)
            taken.add(ref)
    return out


class StopSignals:
    """SIGINT/SIGTERM ask the driver to stop cleanly (final checkpoint, Ray shut down).

    The first signal only sets ``requested``; the loop sees it within one iteration. A
    second SIGINT raises KeyboardInterrupt for an impatient user. Handlers are installed
    only in the main thread (elsewhere Python refuses them) and restored on exit.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        log.warning("%s: stopping after a final checkpoint (Ctrl-C again to abort)", self.requested)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _ckpt_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The driver's record of a learner checkpoint from the meta the learner wrote."""
    return {"cursors": {int(k): int(v) for k, v in meta["cursors"].items()}, "relabeled": int(meta["relabeled"]),
            "env_steps": int(meta["env_steps"]), "updates": int(meta["updates"])}


def checkpoint_cursors(run_dir: Path) -> dict[str, int] | None:
    """The store cursors the run's last learner checkpoint covers (``learner.json``), or
    None without a checkpoint or for one written before checkpoints recorded them."""
    path = Path(run_dir) / "checkpoints" / "learner.json"
    if not path.exists():
        return None
    meta = read_json(path)
    return {str(k): int(v) for k, v in meta["cursors"].items()} if "cursors" in meta else None


def start_local_ray() -> None:
    """A fresh local Ray instance of our own (``address="local"``: never another process's,
    even when one runs on this machine), with the machine's cores (at least 2), and its
    worker processes at nice 0 instead of Ray's default 15: the learner then runs at the
    priority of Ray's own processes and of the driver, and the other actors yield to it
    through ``cpu_priority`` (``actors/priority.py``). On a cluster Ray's operator decides
    (``RAY_worker_niceness`` when starting ``ray start``)."""
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             _system_config={"worker_niceness": 0})


def new_run_dir(cfg: ExperimentConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.logdir) / f"{cfg.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def write_control(run_dir: str | Path, rollout_workers: int) -> str:
    """Ask a running trainer to resize its rollout pool through ``RUN_DIR/control.json``
    (the fallback of ``hindsight scale`` when no control actor is reachable). The driver
    consumes the file and answers in ``control.reply.json`` under the returned request id."""
    path = Path(run_dir) / CONTROL_FILE
    rid = f"{os.getpid()}-{time.time_ns()}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rollout_workers": int(rollout_workers), "id": rid}))
    os.replace(tmp, path)
    return rid


class Trainer:
    #: whether the driver loop serves `hindsight scale` (the control actor is started only then)
    resizable_pool = True

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path | None = None,
        resume: bool = False,
        address: str | None = None,
        progress: bool = True,
        ledger: bool = False,
    ):
        """``ledger``: the learner keeps the episode id of every trajectory it ingests and
        the driver every id the store acknowledged, so a run can prove that each
        acknowledged trajectory reached the learner exactly once (``summary["ledger"]``;
        memory grows with the run: for tests and ``hindsight chaos``)."""
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
        self.resume = resume
        self.address = address
        self.progress = progress
        self.ledger = ledger
        self.family = get_family(cfg.env.family, **cfg.env.family_kwargs)
        self.asked_cfg = cfg  # what config.yaml records; self.cfg may be fitted to the cluster
        self.control: Any = None
        self.state: dict[str, Any] = {"env_steps": 0, "episodes": 0, "cursors": {}, "eval_history": []}
        if resume and (self.run_dir / STATE_FILE).exists():
            self.state.update(json.loads((self.run_dir / STATE_FILE).read_text()))
        if resume:
            cursors = checkpoint_cursors(self.run_dir)
            if cursors is not None and cursors != self.state.get("cursors"):
                # the learner checkpointed and the driver died before it wrote its state
                log.warning("resume: the learner's checkpoint covers the store up to %s, newer than %s in %s; "
                            "streaming from the checkpoint's", cursors, self.state.get("cursors"), STATE_FILE)
                self.state["cursors"] = cursors
        self.stop = StopSignals()

    # ---- set-up -------------------------------------------------------------------------
    def _start_ray(self) -> bool:
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        else:
            start_local_ray()
        return True

    def _place(self) -> None:
        """Fit the run to the cluster or fail naming both sides (``hindsight.placement``)."""
        nodes = placement.cluster_nodes()
        self.cfg, note = placement.fit(
            self.cfg, self._gpus_for_learner(), nodes, local=self.address is None, wait_s=self.cfg.placement_wait_s
        )
        if note:
            log.warning("%s", note)

    def _gpus_for_learner(self) -> float:
        want = self.cfg.learner.num_gpus
        if want >= 0:
            return want
        return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

    def _build(self) -> None:
        cfg, fam = self.cfg, self.family
        sc = cfg.store
        self.store = start_store(
            str(self.run_dir / "store"),
            num_shards=sc.num_shards,
            fsync=sc.fsync,
            fsync_interval_s=sc.fsync_interval_s,
            segment_bytes=sc.segment_bytes,
            max_segments=sc.max_segments,
            num_cpus=sc.num_cpus,
            cpu_priority=cfg.cpu_priority,
            pin_to_node=not sc.shared_filesystem,
            # a resumed run's cursors floor the shards' seqs: no reader skips new records
            min_next_seq={int(k): int(v) for k, v in self.state.get("cursors", {}).items()},
        )
        if self.resume:
            self._counters_from_store()
        strategy = cfg.relabel.strategy
        batch_relabeler = None
        if strategy in IN_LEARNER:
            from learner.sac.hipi_rl import make_hipi_rl_relabeler

            batch_relabeler = make_hipi_rl_relabeler(fam, cfg.relabel.strategy_cfg, cfg.env.family_kwargs)
        self.num_gpus = self._gpus_for_learner()
        LearnerActor = ray.remote(Learner)
        # learner.num_cpus 0: the CPUs the largest node has left after the other actors
        node_cpus = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
        learner_cfg = dataclasses.replace(cfg.learner, num_cpus=learner_cpus(cfg, node_cpus))

        def make_learner(resume: bool, version_floor: int = 0) -> Any:
            # num_gpus > 0 (a GPU anywhere in the cluster, learner.num_gpus=-1) places the
            # learner on a GPU node. max_concurrency 2: ingest runs while an update call is
            # in progress (locks inside)
            return LearnerActor.options(
                num_cpus=learner_cfg.num_cpus, num_gpus=self.num_gpus, max_concurrency=2
            ).remote(
                fam.obs_dim,
                fam.action_dim,
                fam.task_dim,
                fam.reward_input_dim,
                learner_cfg,
                fam.discount,
                cfg.seed,
                str(self.run_dir / "checkpoints"),
                resume,
                batch_relabeler,
                ledger=self.ledger,
                version_floor=version_floor,
            )

        self.make_learner = make_learner
        self.learner = make_learner(self.resume)
        net_cfg = cfg.learner.sac
        # every actor but the learner yields the CPU to it (cpu_priority, actors/priority.py)
        remote_rollout = ray.remote(background(RolloutActor, cfg.cpu_priority))

        def make_rollout(wid: int) -> Any:
            # SPREAD: the workers go to different nodes, so losing one loses few
            return remote_rollout.options(num_cpus=cfg.rollout.num_cpus, scheduling_strategy="SPREAD").remote(
                store=self.store,
                worker_id=wid,
                family=cfg.env.family,
                family_kwargs=cfg.env.family_kwargs,
                num_envs=cfg.rollout.envs_per_worker,
                net_cfg=net_cfg,
                seed=cfg.seed,
            )

        self.pool = RolloutPool(make_rollout, cfg.rollout.num_workers)

        def make_eval_actor() -> Any:
            return remote_rollout.options(num_cpus=0.05).remote(
                store=None,
                worker_id=10_000,
                family=cfg.env.family,
                family_kwargs=cfg.env.family_kwargs,
                num_envs=min(8, cfg.eval.episodes),
                net_cfg=net_cfg,
                seed=cfg.seed,
            )

        self.make_eval_actor = make_eval_actor
        self.eval_actor = make_eval_actor()
        service_strategy = "none" if strategy in IN_LEARNER else strategy
        value_factory = make_value_fn_factory(net_cfg, fam.obs_dim, fam.action_dim, fam.task_dim)
        R = max(1, cfg.relabel.num_workers)
        shards = list(range(sc.num_shards))
        remote_relabel = ray.remote(background(RelabelWorker, cfg.cpu_priority))
        cursors = {int(k): int(v) for k, v in self.state.get("cursors", {}).items()}

        def make_relabeler(r: int, cursors: dict[int, int]) -> Any:
            mine = shards[r::R]
            return remote_relabel.options(num_cpus=cfg.relabel.num_cpus).remote(
                worker_id=r,
                family=cfg.env.family,
                family_kwargs=cfg.env.family_kwargs,
                strategy=service_strategy,
                strategy_cfg=cfg.relabel.strategy_cfg,
                store=self.store,
                shard_ids=mine,
                discount=fam.discount,
                seed=cfg.seed,
                batch_trajectories=cfg.relabel.batch_trajectories,
                reference_refresh=cfg.relabel.reference_refresh,
                value_fn_factory=value_factory if service_strategy in USES_VALUE else None,
                cursors={s: cursors.get(s, 0) for s in mine},
            )

        self.make_relabeler = make_relabeler
        self.relabel_shards = [shards[r::R] for r in range(R)]
        self.relabelers = [make_relabeler(r, cursors) for r in range(R)]
        self.needs_value = service_strategy in USES_VALUE

    def _counters_from_store(self) -> None:
        """On resume, env steps and episodes are what the store holds, not what the last
        checkpoint said: trajectories stored after it count, so the budget never
        over-collects. (A store that dropped old segments for capacity holds fewer: the
        larger of the two is kept.)"""
        stats = self.store.stats()
        steps = sum(int(f["steps"]) for f in stats["families"].values())
        episodes = int(stats["records"])
        if steps != self.state["env_steps"]:
            log.info(
                "resume: the store holds %d env steps in %d episodes (the checkpoint said %d in %d)",
                steps, episodes, self.state["env_steps"], self.state["episodes"],
            )
        self.state["env_steps"] = max(int(self.state["env_steps"]), steps)
        self.state["episodes"] = max(int(self.state["episodes"]), episodes)

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to the budget; SIGINT/SIGTERM stop it cleanly (``summary["interrupted"]``)."""
        started_ray = self._start_ray()
        try:
            self._place()
            self.run_dir.mkdir(parents=True, exist_ok=True)  # only once the run can be placed
            (self.run_dir / "config.yaml").write_text(dump_config(self.asked_cfg))
            with self.stop:
                self._build()
                self.control = start_control(self.run_dir, self.cfg.cpu_priority) if self.resizable_pool else None
                return self._loop()
        finally:
            self._teardown(started_ray)

    def _teardown(self, started_ray: bool) -> None:
        if self.control is not None:
            self._release([self.control], started_ray=False)
            self.control = None
        if self.cfg.rollout.autoscale:
            placement.release_resources()
        if hasattr(self, "pool"):
            self.pool.shutdown()
        self._release([getattr(self, "eval_actor", None), getattr(self, "learner", None),
                       *getattr(self, "relabelers", [])], started_ray, store=True)

    def _release(self, actors: Sequence[Any], started_ray: bool, store: bool = False) -> None:
        """Kill ``actors`` (None entries skipped, ones already gone ignored), then, with
        ``store``, shut the store down, and Ray when this run started it."""
        for a in actors:
            if a is not None:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # already gone
                    pass
        if store and hasattr(self, "store"):
            self.store.shutdown()
        if started_ray:
            ray.shutdown()

    def _loop(self) -> dict[str, Any]:
        self.driver = _Driver(self)  # its counters are read by hindsight chaos
        return self.driver.run()

    def _checkpoint(self, env_steps: int, episodes: int, cursors: dict, t_start: float,
                    wall_before: float, relabeled: int) -> dict[str, Any]:
        """The learner's checkpoint, then the run's state; returns the learner's meta.

        The cursors (and the driver's counters) are written into the learner's own
        ``learner.json``: the learner's state covers every batch up to them, and that file is
        written before ``trainer_state.json`` and before this call returns, so a death in
        between (of the learner or the driver) leaves the newest checkpoint naming its cursors
        (``restored_checkpoint``, ``checkpoint_cursors``)."""
        meta = ray.get(self.learner.checkpoint.remote({
            "env_steps": env_steps, "cursors": {str(k): int(v) for k, v in cursors.items()},
            "relabeled": int(relabeled),
        }))
        self.state.update(
            {
                "env_steps": env_steps,
                "episodes": episodes,
                "cursors": {str(k): v for k, v in cursors.items()},
                "wall_time_s": wall_before + time.perf_counter() - t_start,
            }
        )
        tmp = self.run_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.run_dir / STATE_FILE)
        return meta

    def _read_control(self) -> tuple[int, str] | None:
        """Consume ``control.json``: (workers, request id), or None."""
        path = self.run_dir / CONTROL_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return int(data["rollout_workers"]), str(data.get("id", ""))
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            log.warning("ignoring unreadable %s: %s", path, e)
            return None
        finally:
            path.unlink(missing_ok=True)

    def _reply_control(self, rid: str, result: dict[str, Any]) -> None:
        tmp = self.run_dir / (CONTROL_REPLY + ".tmp")
        tmp.write_text(json.dumps({"id": rid, **result}))
        os.replace(tmp, self.run_dir / CONTROL_REPLY)


class _Driver:
    """The driver loop of one ``Trainer.run``: submits work, handles results, logs.

    Every producer has a bounded number of calls in flight (``inflight`` maps each pending
    object ref to what it is); each result is handled by the ``_on_<kind>`` method.
    """

    def __init__(self, trainer: Trainer):
        self.t = trainer
        cfg, fam = trainer.cfg, trainer.family
        self.cfg, self.fam = cfg, fam
        st = trainer.state
        self.tb = TBWriter(str(trainer.run_dir / "tb"), purge_step=st["env_steps"] if trainer.resume else None)
        self.budget = cfg.env_steps
        self.env_steps = int(st["env_steps"])
        self.episodes = int(st["episodes"])
        self.t_start = time.perf_counter()
        self.wall_before = float(st.get("wall_time_s", 0.0))
        self.cursors: dict[int, int] = {int(k): int(v) for k, v in st.get("cursors", {}).items()}
        self._store_losses(trainer.store.stats())  # on-disk damage the shards' recovery found
        # in-flight work
        self.inflight: dict[Any, tuple] = {}
        self.idle_rollout = set(trainer.pool.actors)
        self.relabel_inflight = {r: 0 for r in range(len(trainer.relabelers))}
        # trajectories each relabel worker holds for a fixed batch (hipi), last reported
        self.buffered = {r: 0 for r in range(len(trainer.relabelers))}
        self.buffered_steps = {r: 0 for r in range(len(trainer.relabelers))}
        self.flushed = 0  # trajectories relabeled in a last, smaller batch at the end
        self.train_inflight = False
        self.eval_inflight = False
        self.compile_warned = False  # one console line if the learner's compile fails
        self.precision_warned = False  # one console line if learner.bf16_matmul cannot apply
        # weights: one object ref per published version
        self.weights_ref, self.weights_version = None, 0
        self.value_ref, self.value_version = None, -1
        self.value_sent = {r: -1 for r in range(len(trainer.relabelers))}  # version each relabeler holds
        # counters (this session): the relabel backlog is collected - relabeled trajectories
        self.learner_report: dict[str, Any] = {"updates": 0, "inserted": 0, "version": 0}
        self.ingested = 0  # env steps the learner has acknowledged
        self.collected = self.relabeled = 0
        self.store_undrained = False  # the last end-of-run check found records past the cursors
        self.relabel_restarts = 0
        self.eval_restarts = 0
        # learner recovery: what the last checkpoint holds (the learner's state covers every
        # batch ingested up to these cursors); at start, the session's starting point
        self.ckpt = {"cursors": dict(self.cursors), "relabeled": 0, "env_steps": self.env_steps, "updates": None}
        self.learner_restarts: list[dict[str, Any]] = []
        self.refilled = 0
        # id -> when the store acknowledged it (hindsight chaos attributes losses by time)
        self.acked_ids: dict[str, float] | None = {} if trainer.ledger else None
        self.last_drain_check = 0.0
        lc = cfg.learner
        self.limiter = RateLimiter(lc.samples_per_insert, lc.sac.batch_size, lc.min_replay, lc.spi_tolerance)
        self.steps_base, self.updates_base = self.env_steps, None
        # the learner's axis: env steps whose transitions the learner has trained on
        self.trained_steps = self.env_steps
        # evaluation
        # the family's eval set: fixed lists cycled (GH), prior samples all distinct (HIPI)
        self.eval_tasks = fam.eval_tasks_for(cfg.eval.episodes)
        self.next_eval = (self.env_steps // cfg.eval.every_steps + 1) * cfg.eval.every_steps
        self.last_eval: dict[str, Any] | None = None
        # logging windows
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.relabel_fraction: deque[float] = deque(maxlen=50)
        self.percentiles: deque[float] = deque(maxlen=2000)
        self.chosen_tasks: deque[float] = deque(maxlen=2000)
        self.lags: deque[float] = deque(maxlen=500)
        self.last_ckpt_updates = 0
        self.rejected = 0  # trajectories the store's validation refused (e.g. a NaN reward)
        self.round_failures = 0  # rollout rounds that raised or timed out
        self.empty_pool_warned = False
        # operations: `hindsight scale`, rollout.autoscale, the stall watchdog
        self.watchdog = Watchdog(cfg.watchdog_s)
        lo_hi = cfg.rollout.autoscale
        self.autoscaler = Autoscaler(lo_hi[0], lo_hi[1], cfg.rollout.autoscale_every_s) if lo_hi else None
        self.control_inflight = False
        self.collection_held = False
        now = time.perf_counter()
        self.last_log, self.last_control = now, 0.0
        self.last_store = (now, 0)
        self.rate = (now, self.env_steps, 0)
        self.bar = tqdm(total=self.budget, initial=min(self.env_steps, self.budget), unit="step",
                        disable=not trainer.progress, dynamic_ncols=True)
        # the drain phase: collection done, the learner catching up (its own progress bar)
        self.drain_bar: tqdm | None = None
        self.drain_start: tuple[float, int] | None = None

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        while True:
            if self.t.stop.requested:
                self.bar.close()
                return self._interrupted()
            finishing = self._finished()
            if not finishing:
                self._apply_control()
                self._submit()
                self._collect()
            self._drain_progress()
            self._log(force=finishing)
            if finishing:
                try:
                    summary = self._finish()
                except ACTOR_GONE as e:  # the learner died at the very end: restore, go on
                    self._restart_learner(e)
                    continue
                self.bar.close()
                if self.drain_bar is not None:
                    self.drain_bar.close()
                return summary

    def _session_updates(self) -> int:
        return self.learner_report["updates"] - (self.updates_base or 0)

    def _collection_done(self) -> bool:
        """The budget is spent and no rollout is in flight: no new trajectory will come."""
        return self.env_steps >= self.budget and not any(k[0] == "rollout" for k in self.inflight.values())

    def _eval_due(self) -> bool:
        """The learner has trained past the next scheduled eval (those at the budget and
        beyond are left to the final evaluation)."""
        return self.trained_steps >= self.next_eval and self.next_eval < self.budget

    def _max_lag_steps(self) -> float | None:
        """The env steps the learner may trail collection by (``learner.max_lag_rounds``
        rounds of the current pool; None: no cap but ``spi_tolerance``)."""
        rounds = self.cfg.learner.max_lag_rounds
        if rounds <= 0:
            return None
        return rounds * max(1, self.t.pool.size) * self.cfg.rollout.envs_per_worker * self.fam.horizon

    def _updates_left(self) -> int:
        """Updates the learner still owes the samples-per-insert target of what was collected."""
        target = self.limiter.target_updates(self.env_steps - self.steps_base)
        return max(0, math.ceil(target - self._session_updates()))

    def _finished(self) -> bool:
        """Budget spent, everything stored relabeled and ingested, the learner caught up."""
        if self.env_steps < self.budget or self.eval_inflight or self.collected > self.relabeled:
            return False
        if self._eval_due():
            return False
        if any(k[0] in ("rollout", "ingest") for k in self.inflight.values()):
            return False
        report = self.learner_report
        return report["inserted"] >= self.ingested and (
            report.get("updates_done", 1) == 0
            or self._session_updates() >= self.limiter.target_updates(self.env_steps - self.steps_base)
        ) and self._store_drained()

    def _store_drained(self) -> bool:
        """Nothing in the store after the relabel cursors (also the records a worker
        appended just before it died, which no round result reported)."""
        now = time.perf_counter()
        if now - self.last_drain_check < 0.5:
            return False
        self.last_drain_check = now
        cursors = {s: self.cursors.get(s, 0) for s in range(self.t.store.num_shards)}
        try:
            payloads, _ = self.t.store.read_new_raw(cursors, 1)
        except RayError as e:  # a shard between lives: not drained as far as we know
            log.warning("store unavailable while checking the end of the run (%s); asking again", type(e).__name__)
            return False
        self.store_undrained = bool(payloads)
        return not payloads

    def _apply_control(self) -> None:
        """About once a second: ``hindsight scale`` requests (the control actor, or
        control.json) and the autoscaling rule resize the rollout pool."""
        now = time.perf_counter()
        if now - self.last_control <= 1.0:
            return
        self.last_control = now
        t = self.t
        request = t._read_control()
        if request is not None:
            t._reply_control(request[1], self._resize(request[0], "hindsight scale"))
        if t.control is not None and not self.control_inflight:
            self.inflight[t.control.take_requests.remote()] = ("control",)
            self.control_inflight = True
        if self.autoscaler is not None and self.env_steps < self.budget:
            new = self.autoscaler.decide(t.pool.size)
            if new is not None:
                self._resize(new, self.autoscaler.history[-1]["why"])

    def _resize(self, want: int, why: str) -> dict[str, Any]:
        """Resize the pool; what it did, for the log and for ``hindsight scale``."""
        pool, note = self.t.pool, ""
        if self.autoscaler is not None and why == "hindsight scale":
            lo, hi = self.autoscaler.lo, self.autoscaler.hi
            if not lo <= want <= hi:
                note = f"asked {want}, clamped to rollout.autoscale [{lo}, {hi}]"
                want = min(max(want, lo), hi)
        before = pool.size
        added, removed = pool.resize(want)
        self.idle_rollout |= set(added)
        self.idle_rollout -= set(removed)
        if self.autoscaler is not None and (added or removed):
            # the whole run's bundles: nodes join for new workers, idle ones may leave
            placement.request(placement.demand(dataclasses.replace(self.cfg, rollout=dataclasses.replace(
                self.cfg.rollout, num_workers=pool.size)), self.t.num_gpus))
        try:
            pending = sum(sum(c.values()) for c in pending_actors({"rollout": list(pool.actors.values())}).values())
        except Exception:  # the actor table is diagnostics only
            pending = 0
        result = {"before": before, "after": pool.size, "added": added, "removed": removed,
                  "pending": pending, "why": why, "note": note}
        if added or removed:
            log.info("%s (%s)", format_scale(result), why)
        return result

    def _on_control(self, kind: tuple, requests: list) -> None:
        self.control_inflight = False
        for rid, want in requests:
            self.t.control.report.remote(rid, self._resize(want, "hindsight scale"))

    def _submit(self) -> None:
        cfg, t = self.cfg, self.t
        # Collection waits for the learner (samples per insert, counted on env steps this
        # session) and for the relabelers (bounded backlog); it stops at the budget. Steps
        # a relabel worker holds to fill a fixed batch (hipi) do not count: the learner
        # cannot train on them until more data arrives, so counting them would deadlock.
        held = sum(self.buffered_steps.values())
        limiter_ok = self.limiter.may_insert(self.env_steps - self.steps_base - held, self._session_updates(),
                                             self._max_lag_steps())
        self.collection_held = self.env_steps < self.budget and not limiter_ok
        if self.autoscaler is not None:
            self.autoscaler.observe_collection(self.collection_held)
        may_insert = (
            self.env_steps < self.budget
            and limiter_ok
            # trajectories a worker holds to fill a fixed batch (hipi) are not a backlog:
            # counting them could stop collection while the worker waits for more data
            and self.collected - self.relabeled - sum(self.buffered.values()) <= cfg.relabel.max_backlog
        )
        if may_insert:
            random_actions = self.env_steps < cfg.rollout.random_steps and not t.resume
            for wid in sorted(self.idle_rollout):
                ref, gen = t.pool.submit(wid, self.weights_version, self.weights_ref, random_actions)
                self.inflight[ref] = ("rollout", wid, gen, time.perf_counter())
            self.idle_rollout.clear()
            if not t.pool.size and not self.empty_pool_warned:
                log.warning("the rollout pool is empty: collection waits for `hindsight scale %s N`", t.run_dir)
                self.empty_pool_warned = True
        for r in self.relabel_inflight:
            actor = t.relabelers[r]
            if t.needs_value and self.value_ref is not None and self.value_sent[r] < self.value_version:
                actor.set_value_weights.remote(self.value_version, self.value_ref)
                self.value_sent[r] = self.value_version
            # once collection is done, fixed-batch workers relabel what they hold (flush)
            flush = self._collection_done()
            while self.relabel_inflight[r] < cfg.relabel.prefetch:
                batch_ref, stats_ref = actor.relabel.options(num_returns=2).remote(flush=flush)
                self.inflight[stats_ref] = ("relabel", r, batch_ref)
                self.relabel_inflight[r] += 1
        if not self.train_inflight:
            self.inflight[t.learner.train.remote(cfg.learner.updates_per_call)] = ("train",)
            self.train_inflight = True
        if self._eval_due() and not self.eval_inflight:
            # Published for the eval: ``publish`` returns the learner's current weights and
            # the env steps they were trained on (the eval's x).
            published, weights = t.learner.publish.options(num_returns=2).remote()
            self._submit_eval(published, weights, self.env_steps, tries=0)
            while self.next_eval <= self.trained_steps:
                self.next_eval += cfg.eval.every_steps

    def _submit_eval(self, published: Any, weights: Any, collected: int, tries: int) -> None:
        ref = self.t.eval_actor.evaluate_remote.remote([weights], self.eval_tasks, self.cfg.seed)
        self.inflight[ref] = ("eval", published, collected, weights, tries)
        self.eval_inflight = True

    def _collect(self) -> None:
        if not self.inflight:
            time.sleep(0.01)
            return
        ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=0.5)
        for ref in in_call_order(ready, self.inflight):
            kind = self.inflight.pop(ref, None)
            if kind is None:  # dropped by a recovery while this result was on its way
                continue
            try:
                result = ray.get(ref)
            except ACTOR_GONE as e:
                self._on_actor_death(kind, e)
                continue
            except RayError as e:  # the call itself raised: an env that threw, a lost object
                self._on_task_error(kind, e)
                continue
            getattr(self, f"_on_{kind[0]}")(kind, result)
        self._check_stalled_rounds()
        self._drop_unplaced_rounds()

    def _check_stalled_rounds(self) -> None:
        """A rollout round running past ``rollout.round_timeout_s`` (an env that hangs)
        gets its worker replaced; nothing of an unfinished round was acknowledged."""
        limit = self.cfg.rollout.round_timeout_s
        if limit <= 0:
            return
        now = time.perf_counter()
        for ref, kind in list(self.inflight.items()):
            if kind[0] != "rollout" or not self.t.pool.is_current(kind[1], kind[2]):
                continue
            # the clock starts once the actor runs: its readiness is polled at every check
            # (not first when the limit has passed, which would restart the clock then and
            # let a hung round run for twice the timeout)
            ready = self.t.pool.ready_since(kind[1])
            if ready is not None and now - max(kind[3], ready) > limit:
                del self.inflight[ref]
                log.warning("rollout worker %s: round running for %.0fs (> rollout.round_timeout_s); replacing it",
                            kind[1], now - max(kind[3], ready))
                self.round_failures += 1
                self._replace_rollout(kind)

    def _drop_unplaced_rounds(self) -> None:
        """Once the budget is spent, a round queued on a worker that has not started (an
        autoscaled worker pending placement until a node joins, which may never happen) is
        not needed: its actor is restarted without it, or the run would wait for a node
        forever. Nothing of such a round was collected, so nothing acknowledged is lost."""
        if self.env_steps < self.budget:
            return
        for ref, kind in list(self.inflight.items()):
            if kind[0] == "rollout" and self.t.pool.is_current(kind[1], kind[2]) and self.t.pool.ready_since(kind[1]) is None:
                del self.inflight[ref]
                log.info("rollout worker %s: never started before the budget was spent; its round is dropped", kind[1])
                self.t.pool.replace(kind[1], count=False)

    def _replace_rollout(self, kind: tuple) -> None:
        wid, gen = kind[1], kind[2]
        if self.t.pool.is_current(wid, gen):
            self.t.pool.replace(wid)
            self.idle_rollout.add(wid)
        # else: removed by a resize or already replaced; its round is dropped

    # ---- results ----------------------------------------------------------------------------
    def _on_task_error(self, kind: tuple, error: Exception) -> None:
        """A call that raised inside a live actor. Rollout: the round's episodes were never
        acknowledged, the worker (its envs perhaps broken) is replaced. Eval: retried once
        on a fresh actor. Relabel: the worker is replaced from the delivered cursors."""
        cause = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        if kind[0] == "rollout":
            log.warning("rollout worker %s: round failed (%s); replacing it", kind[1], cause)
            self.round_failures += 1
            self._replace_rollout(kind)
        elif kind[0] in ("eval", "relabel", "refill", "control"):
            self._on_actor_death(kind, error)
        elif isinstance(error, RayTaskError) and not isinstance(getattr(error, "cause", None), RayError):
            raise RuntimeError(f"the learner's {kind[0]} call failed: {cause}") from error
        else:  # its input was lost with a node (an object it needed): restore a consistent state
            self._restart_learner(error)

    def _on_actor_death(self, kind: tuple, error: Exception) -> None:
        t = self.t
        if kind[0] == "rollout":
            if t.pool.is_current(kind[1], kind[2]):
                log.warning("rollout worker %s died (%s); replacing it", kind[1], type(error).__name__)
            self._replace_rollout(kind)
        elif kind[0] == "eval":
            published, step, weights, tries = kind[1:]
            try:
                ray.kill(t.eval_actor, no_restart=True)
            except Exception:  # already gone
                pass
            t.eval_actor = t.make_eval_actor()
            self.eval_restarts += 1
            self.eval_inflight = False
            if tries < 2:
                log.warning("eval actor failed (%s); replacing it and retrying the eval", type(error).__name__)
                self._submit_eval(published, weights, step, tries + 1)
            else:
                log.warning("eval at %d env steps failed %d times (%s); skipped", step, tries + 1, error)
        elif kind[0] in ("train", "ingest"):
            self._restart_learner(error)
        elif kind[0] in ("relabel", "refill"):
            # A new relabel worker resumes from the cursors of the last batch the learner
            # received: nothing in the store is skipped.
            r = kind[1]
            log.warning("relabel worker %s died (%s); replacing it", r, type(error).__name__)
            for k in [k for k, v in self.inflight.items() if v[0] in ("relabel", "refill") and v[1] == r]:
                del self.inflight[k]
            self.relabel_inflight[r] = 0
            self.buffered[r] = self.buffered_steps[r] = 0  # the replacement re-reads them
            t.relabelers[r] = t.make_relabeler(r, self.cursors)
            self.value_sent[r] = -1
            self.relabel_restarts += 1
        elif kind[0] == "control":
            log.warning("the control actor died (%s); starting a new one", type(error).__name__)
            self.control_inflight = False
            t.control = start_control(t.run_dir, t.cfg.cpu_priority)
        else:
            raise error

    def _restart_learner(self, error: Exception) -> None:
        """A dead learner comes back from its last checkpoint (updates continue from its
        count) and refills its replay from the store, the source of truth.

        Consistency: the checkpoint holds every batch ingested up to the cursors written
        with it (``self.ckpt``; the restored learner's ``learner.json`` wins where it is newer:
        a learner that died after writing a checkpoint and before the driver recorded it).
        Everything in flight to or from the old learner and the relabelers is
        dropped and the relabelers stream again from those cursors, so each stored
        trajectory reaches the new learner's stream exactly once; the updates made since
        the checkpoint are redone on that data. The records before the cursors (the newest,
        up to the replay's capacity) are relabeled by the run's strategy and added as a
        refill, which the rate limiter and the ledger do not count.
        """
        t, ck, t0 = self.t, self.ckpt, time.perf_counter()
        log.warning("learner lost (%s); restarting it from its last checkpoint and refilling its replay from the store",
                    type(error).__name__)
        try:
            ray.kill(t.learner, no_restart=True)
        except Exception:  # already gone
            pass
        for ref, kind in list(self.inflight.items()):
            if kind[0] in ("train", "ingest", "relabel", "refill"):
                del self.inflight[ref]
        self.train_inflight = False
        for actor in t.relabelers:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        # above every version a worker holds: the restored weights replace the lost ones
        t.learner = t.make_learner(True, version_floor=self.weights_version + 1)
        try:
            restored = ray.get(t.learner.counters.remote(), timeout=300)
            meta = ray.get(t.learner.restored_checkpoint.remote(), timeout=60)
        except GetTimeoutError:
            raise RuntimeError(
                f"the learner could not be placed again within 300 s (it asks for "
                f"{self.cfg.learner.num_cpus} CPUs, {t.num_gpus} GPUs; the cluster has {ray.available_resources()} free)"
            ) from error
        if meta is not None and "cursors" in meta:
            restored_ck = _ckpt_of(meta)
            if restored_ck["cursors"] != ck["cursors"]:
                # it died after writing a checkpoint and before the driver heard of it: the
                # restored state covers the store up to that checkpoint's cursors, not up to
                # the last ones the driver recorded
                log.warning("the restored checkpoint (%d updates) is newer than the last one recorded (%s updates); "
                            "streaming from its cursors", restored_ck["updates"], ck["updates"])
                ck = self.ckpt = restored_ck
            else:
                ck["updates"] = restored_ck["updates"]
        for r in range(len(t.relabelers)):
            t.relabelers[r] = t.make_relabeler(r, ck["cursors"])
            self.relabel_inflight[r] = 0
            self.buffered[r] = self.buffered_steps[r] = 0
            self.value_sent[r] = -1
        self.cursors = dict(ck["cursors"])
        self.relabeled = ck["relabeled"]
        self.weights_ref, self.value_ref = None, None
        self.updates_base, self.steps_base, self.ingested = None, ck["env_steps"], 0
        self.learner_report = {"updates": restored["updates"], "inserted": 0, "version": restored["version"]}
        self.last_ckpt_updates = restored["updates"]
        self._refill(ck["cursors"])
        self.learner_restarts.append({
            "env_steps": self.env_steps,
            "restored_updates": int(restored["updates"]),
            "checkpoint_updates": ck["updates"],
            "seconds": time.perf_counter() - t0,
        })
        self.tb.scalar("recovery/learner_restarts", len(self.learner_restarts), self.env_steps)

    def _refill(self, cursors: dict[int, int]) -> None:
        """Ask each relabel worker for the newest records before ``cursors`` of its shards
        (about ``replay_capacity`` transitions in all), relabeled by the run's strategy."""
        t = self.t
        stats = t.store.stats()
        steps = sum(int(f["steps"]) for f in stats["families"].values())
        mean_len = steps / max(1, int(stats["records"]))
        copies = 1 if self.cfg.relabel.strategy == "none" else 2  # AIR & co. add one copy per trajectory
        per_shard = int(self.cfg.learner.replay_capacity / max(1.0, mean_len * copies) / t.store.num_shards) + 1
        for r, mine in enumerate(t.relabel_shards):
            end = {s: int(cursors.get(s, 0)) for s in mine}
            start = {s: max(int(stats["shards"][s].get("first_seq") or 0), end[s] - per_shard) for s in mine}
            if any(end[s] > start[s] for s in mine):
                batch_ref, stats_ref = t.relabelers[r].relabel_range.options(num_returns=2).remote(start, end)
                self.inflight[stats_ref] = ("refill", r, batch_ref)

    def _on_refill(self, kind: tuple, result: dict[str, Any]) -> None:
        if result["trajectories"]:
            self.refilled += int(result["trajectories"])
            ref = self.t.learner.ingest.remote(kind[2], 0, result["episode_ids"], True)
            self.inflight[ref] = ("ingest",)

    def _on_rollout(self, kind: tuple, result: dict[str, Any]) -> None:
        if self.t.pool.is_current(kind[1], kind[2]):  # not removed or replaced meanwhile
            self.idle_rollout.add(kind[1])
        if result.get("rejected"):
            self.rejected += len(result["rejected"])
            log.warning("rollout worker %s: %d trajectories refused by the store: %s",
                        kind[1], len(result["rejected"]), "; ".join(result["rejected"])[:500])
        if self.acked_ids is not None:
            now = time.time()
            self.acked_ids.update((eid, now) for eid in result.get("episode_ids", ()))
        steps = int(result["env_steps"])
        self.env_steps += steps
        self.episodes += int(result["episodes"])
        self.collected += int(result["episodes"])
        self.bar.update(min(steps, max(0, self.budget - self.bar.n)))
        if result["policy_version"] >= 0:
            self.recent_returns.extend(result["returns"])

    def _on_relabel(self, kind: tuple, result: dict[str, Any]) -> None:
        r, batch_ref = kind[1], kind[2]
        self.relabel_inflight[r] -= 1
        self.relabeled += int(result["trajectories"])
        self.buffered[r] = int(result.get("buffered", 0))
        self.buffered_steps[r] = int(result.get("buffered_env_steps", 0))
        if result.get("flushed"):
            self.flushed += int(result["trajectories"])
            log.info("relabel worker %d flushed a last batch of %d trajectories", r, result["trajectories"])
        if not result["trajectories"]:
            return
        # the batch goes from the relabel worker to the learner directly (a ref, not data)
        ids = result["episode_ids"] if self.t.ledger else None
        self.inflight[self.t.learner.ingest.remote(batch_ref, result["env_steps"], ids)] = ("ingest",)
        self.cursors.update({int(k): int(v) for k, v in result["cursors"].items()})
        self.relabel_fraction.append(result["fraction_relabeled"])
        st = result.get("strategy_stats", {})
        self.percentiles.extend(np.ravel(st.get("chosen_percentile", [])).tolist())
        self.chosen_tasks.extend(np.ravel(st.get("chosen_tasks", [])).tolist())
        self.lags.extend(self.learner_report["version"] - v for v in result["policy_versions"] if v >= 0)

    def _on_ingest(self, kind: tuple, result: int) -> None:
        self.ingested = max(self.ingested, int(result))

    def _on_train(self, kind: tuple, result: dict[str, Any]) -> None:
        t = self.t
        self.train_inflight = False
        self.learner_report = result
        if result.get("precision_note") and not self.precision_warned:
            self.precision_warned = True
            log.warning("%s", result["precision_note"])
        if result.get("compile_error") and not self.compile_warned:
            self.compile_warned = True
            log.warning("learner: torch.compile of the SAC update failed (%s); training continues with the eager "
                        "update (set learner.sac.compile=false to skip the attempt)", result["compile_error"])
        if self.autoscaler is not None:
            self.autoscaler.observe_train(result["updates_done"] == 0)
        if self.updates_base is None:
            self.updates_base = result["updates"] - result["updates_done"]
        # the learner counts env steps ingested this session; the run's axis adds the base
        self.trained_steps = self.steps_base + int(result["trained_env_steps"])
        if result["version"] > self.weights_version or self.weights_ref is None:
            self.weights_ref = t.learner.weights.remote()
            self.weights_version = result["version"]
            if t.needs_value:
                self.value_ref = t.learner.critic_weights.remote()
                self.value_version = result["version"]
        # the learner's diagnostics on its own axis: during the drain collection's axis stands
        # still and every point would pile up at the budget
        if result["metrics"]:
            self.tb.scalars("sac", result["metrics"], self.trained_steps)
        if result.get("relabel"):
            self.tb.scalars("relabel_in_learner", result["relabel"], self.trained_steps)
        if result["updates"] - self.last_ckpt_updates >= self.cfg.learner.checkpoint_every:
            self.last_ckpt_updates = result["updates"]
            try:
                self._checkpoint()
            except ACTOR_GONE as e:
                self._restart_learner(e)
            except CheckpointError as e:
                # a full disk: keep training (the store holds every trajectory) and try again
                # at the next checkpoint; trainer_state.json still matches the previous one
                log.warning("%s; training goes on and retries in %d updates", e, self.cfg.learner.checkpoint_every)
                self.tb.text("checkpoint_error", str(e), self.env_steps)

    def _on_eval(self, kind: tuple, result: dict[str, Any]) -> None:
        self.eval_inflight = False
        self._record_eval(ray.get(kind[1]), result, collected=kind[2])

    def _record_eval(self, published: dict[str, int], result: dict[str, Any], collected: int) -> None:
        """One point of the learning curve, at the env steps the weights were trained on."""
        step = self.steps_base + int(published["trained_env_steps"])
        self.last_eval = result
        self.t.state["eval_history"].append(
            {
                "env_steps": step,
                "collected_env_steps": int(collected),
                "updates": int(published["updates"]),
                "return_mean": result["return_mean"],
                "success_rate": result.get("success_rate"),
                "policy_version": result["policy_version"],
            }
        )
        self.tb.scalar("eval/return", result["return_mean"], step)
        if result.get("success_rate") is not None:
            self.tb.scalar("eval/success_rate", result["success_rate"], step)
        for i, ret in enumerate(result["returns"][: len(self.fam.eval_tasks())]):
            self.tb.scalar(f"eval_task/return_{i:02d}", ret, step)
        self.bar.set_postfix_str(f"eval {result['return_mean']:.2f}", refresh=False)

    # ---- logging, checkpoints, the end ------------------------------------------------------
    def _store_losses(self, stats: dict) -> None:
        """One console WARNING per damaged shard recovery (bytes moved to .dropped files), and
        the running totals in TensorBoard: store/recovered_dropped_{records,bytes}."""
        lines, records, nbytes = self.t.store.recovery_losses(stats)
        for line in lines:
            log.warning("%s (see `hindsight store verify %s`)", line, self.t.run_dir / "store")
        self.tb.scalar("store/recovered_dropped_records", records, self.env_steps)
        self.tb.scalar("store/recovered_dropped_bytes", nbytes, self.env_steps)

    def _log(self, force: bool = False) -> None:
        now = time.perf_counter()
        if now - self.last_log <= 2.0 and not force:
            return
        tb, step, report = self.tb, self.env_steps, self.learner_report
        t0, steps0, updates0 = self.rate
        ups = (report["updates"] - updates0) / (now - t0)
        self.rate = (now, step, report["updates"])
        self.last_log = now
        tb.scalar("perf/env_steps_per_s", (step - steps0) / (now - t0), step)
        tb.scalar("perf/updates_per_s", ups, step)
        tb.scalar("perf/workers_alive", self.t.pool.size, step)
        self.watchdog.observe((step, self.relabeled, self.ingested, report["updates"]))
        if self.watchdog.due():
            self._watchdog_warn()
        tb.scalar("perf/learner_updates", report["updates"], step)
        tb.scalar("perf/samples_per_insert", report["updates"] * self.cfg.learner.sac.batch_size / max(1, report["inserted"]), step)
        if self.lags:
            tb.scalar("perf/policy_lag", float(np.mean(self.lags)), step)
        if self.recent_returns:
            tb.scalar("train/return", float(np.mean(self.recent_returns)), step)
        if self.relabel_fraction:
            tb.scalar("relabel/fraction_relabeled", float(np.mean(self.relabel_fraction)), step)
        if self.percentiles:
            p = np.asarray(self.percentiles)
            for q in (10, 50, 90):
                tb.scalar(f"relabel/air_percentile_p{q}", float(np.percentile(p, q)), step)
            tb.histogram("relabel/air_percentile", p, step)
        if self.chosen_tasks:
            tb.histogram("relabel/chosen_task", self.chosen_tasks, step)
        last_t, last_total = self.last_store
        stats = None
        if now - last_t > 5.0 or force:
            try:
                stats = self.t.store.stats()
            except RayError as e:  # a shard between lives (its node gone): log it next time
                log.warning("store stats unavailable (%s)", type(e).__name__)
                self.last_store = (now, last_total)
                stats = None
        if stats is not None:
            total = int(stats["trajectories"])
            tb.scalar("store/trajectories", total, step)
            tb.scalar("store/bytes", stats["bytes"], step)
            tb.scalar("store/ingest_traj_per_s", (total - last_total) / (now - last_t), step)
            self.last_store = (now, total)
            self._store_losses(stats)  # a shard restarted by Ray recovers again
        eval_text = f", eval {self.last_eval['return_mean']:.2f}" if self.last_eval else ""
        self.bar.set_postfix_str(f"{ups:.0f} upd/s{eval_text}", refresh=False)

    def _watchdog_warn(self) -> None:
        """No data moved for ``watchdog_s``: one WARNING line and ``watchdog/*`` in TensorBoard."""
        t, report = self.t, self.learner_report
        handles = {"learner": [t.learner], "rollout worker": list(t.pool.actors.values()),
                   "relabel worker": list(t.relabelers), "eval actor": [t.eval_actor], "store shard": list(t.store.shards)}
        try:
            pending, cluster = pending_actors(handles), free_resources()
        except Exception as e:  # diagnostics must never stop the run
            pending, cluster = {}, f"unknown ({type(e).__name__})"
        reasons = diagnose(
            pending=pending, cluster=cluster, pool_size=t.pool.size, backlog=self.collected - self.relabeled,
            max_backlog=self.cfg.relabel.max_backlog, collection_held=self.collection_held,
            learner_waiting=report.get("updates_done", 0) == 0, replay_size=int(report.get("replay_size", 0)),
            min_replay=self.cfg.learner.min_replay, budget_spent=self.env_steps >= self.budget,
            # no train report from this learner process yet (a restarted one compiles again)
            learner_compiling=self.cfg.learner.sac.compile and self.updates_base is None,
            # everything collected was relabeled, yet the end-of-run check found more records
            undelivered=self.store_undrained and self.collected <= self.relabeled,
        )
        message = self.watchdog.message(reasons)
        log.warning("watchdog: %s", message)
        self.tb.text("watchdog", message, self.env_steps)
        self.tb.scalar("watchdog/stalled_s", self.watchdog.stalled_for(), self.env_steps)
        self.tb.scalar("watchdog/pending_actors", sum(sum(c.values()) for c in pending.values()), self.env_steps)
        self.tb.flush()

    def _drain_progress(self) -> None:
        """After collection: a second progress bar counting the learner's remaining updates."""
        if not self._collection_done():
            return
        now, session = time.perf_counter(), self._session_updates()
        if self.drain_start is None:
            self.drain_start = (now, session)
            left = self._updates_left()
            log.info("collection done at %d env steps; the learner drains %d updates", self.env_steps, left)
            self.bar.close()
            self.drain_bar = tqdm(total=left, unit="upd", desc="draining learner",
                                  disable=not self.t.progress, dynamic_ncols=True)
        bar = self.drain_bar
        assert bar is not None
        done = session - self.drain_start[1]
        bar.total = max(bar.total or 0, done + self._updates_left())
        bar.update(done - bar.n)
        backlog = self.collected - self.relabeled
        bar.set_postfix_str(f"{self._updates_left()} updates left, {backlog} trajectories to relabel", refresh=False)

    def _checkpoint(self) -> None:
        # The learner serves ingest and other calls concurrently (max_concurrency 2), so a
        # checkpoint does not wait for earlier ingests by itself: wait for them here, so that
        # the checkpoint holds every batch up to the cursors saved with it.
        ingests = [r for r, k in self.inflight.items() if k[0] == "ingest"]
        if ingests:
            ray.wait(ingests, num_returns=len(ingests), timeout=120)
        meta = self.t._checkpoint(self.env_steps, self.episodes, self.cursors, self.t_start, self.wall_before,
                                  self.relabeled)
        self.ckpt = _ckpt_of(meta)

    def _interrupted(self) -> dict[str, Any]:
        """SIGINT/SIGTERM: a final checkpoint and the run directory stays resumable."""
        t = self.t
        try:
            self._checkpoint()
            checkpointed = True
        except RayError as e:
            log.warning("no final checkpoint (%s): --resume continues from the previous one", type(e).__name__)
            checkpointed = False
        self.tb.close()
        return {
            "run_dir": str(t.run_dir),
            "interrupted": t.stop.requested,
            "checkpointed": checkpointed,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "updates": self.learner_report["updates"],
        }

    def _ledger(self) -> dict[str, Any]:
        """Exactly-once accounting: acknowledged (by the store, this session) vs learned."""
        report = ray.get(self.t.learner.ledger_report.remote())
        learned = report["episode_ids"]
        acked = self.acked_ids or {}
        return {
            "acknowledged": len(acked),
            "learned": len(learned),
            "lost": len(acked.keys() - learned.keys()),
            "duplicates": int(report["duplicates"]),
            "refilled": int(report["refilled"]),
            "episode_ids": sorted(learned),
            "lost_ids": sorted(acked.keys() - learned.keys()),
            "duplicate_ids": sorted(k for k, n in learned.items() if n > 1),
        }

    def _final_eval(self, weights_ref: Any) -> dict[str, Any]:
        """The last evaluation, on a fresh eval actor when the current one is gone."""
        t = self.t
        for attempt in range(3):
            try:
                return ray.get(t.eval_actor.evaluate_remote.remote([weights_ref], self.eval_tasks, self.cfg.seed))
            except RayError as e:
                if attempt == 2:
                    raise
                log.warning("final eval failed (%s); retrying on a fresh eval actor", type(e).__name__)
                try:
                    ray.kill(t.eval_actor, no_restart=True)
                except Exception:
                    pass
                t.eval_actor = t.make_eval_actor()
                self.eval_restarts += 1
        raise AssertionError("unreachable")

    def _drain_summary(self) -> dict[str, float]:
        """Updates run and seconds spent after collection ended (the drain phase)."""
        if self.drain_start is None:
            return {"updates": 0, "seconds": 0.0}
        t0, u0 = self.drain_start
        return {"updates": self._session_updates() - u0, "seconds": time.perf_counter() - t0}

    def _finish(self) -> dict[str, Any]:
        """Final evaluation of the last weights, checkpoint, ``summary.json``."""
        t, cfg = self.t, self.cfg
        # the learner's latest weights, not the last ones published every publish_every updates
        published_ref, final_ref = t.learner.publish.options(num_returns=2).remote()
        published = ray.get(published_ref)
        final = self._final_eval(final_ref)
        self._record_eval(published, final, collected=self.env_steps)
        counters = ray.get(t.learner.counters.remote())
        store_stats = t.store.stats()
        self.tb.scalar("store/trajectories", store_stats["trajectories"], self.env_steps)
        self._checkpoint()
        wall = self.wall_before + time.perf_counter() - self.t_start
        summary = {
            "run_dir": str(t.run_dir),
            "family": self.fam.name,
            "strategy": cfg.relabel.strategy,
            "seed": cfg.seed,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "updates": counters["updates"],
            "transitions_inserted": counters["transitions"],
            "trajectories_stored": int(store_stats["trajectories"]),
            "wall_time_s": wall,
            "env_steps_per_s": self.env_steps / max(1e-9, wall),
            "updates_per_s": counters["updates"] / max(1e-9, wall),
            "learner_device": counters["device"],
            "learner_threads": counters.get("threads"),
            "learner_parallel_branches": counters.get("parallel_branches", False),
            "learner_warm_up_s": counters.get("warm_up_seconds", 0.0),
            "learner_compile_error": counters.get("compile_error", ""),
            "learner_matmul_precision": counters.get("matmul_precision"),
            "policy_version": final["policy_version"],
            "rollout_workers": t.pool.size,
            "workers_replaced": t.pool.replaced,
            "relabel_workers_replaced": self.relabel_restarts,
            "eval_actors_replaced": self.eval_restarts,
            "learner_restarts": self.learner_restarts,
            "trajectories_refilled": self.refilled,
            "rollout_rounds_failed": self.round_failures,
            "trajectories_rejected": self.rejected,
            "autoscale": self.autoscaler.history if self.autoscaler is not None else [],
            "watchdog_warnings": self.watchdog.warnings,
            "drain": self._drain_summary(),
            "relabel_flushed_trajectories": self.flushed,
            "final_eval": {
                "return_mean": final["return_mean"],
                "returns": final["returns"],
                "success_rate": final.get("success_rate"),
                "episodes": len(final["returns"]),
            },
            "eval_history": t.state["eval_history"],
        }
        if t.ledger:
            summary["ledger"] = self._ledger()
        (t.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.tb.close()
        return summary

