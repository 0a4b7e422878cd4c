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
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from actors.pool import RolloutActor, RolloutPool
from envs import get_family
from hindsight.config import ExperimentConfig, dump_config
from hindsight.tb import TBWriter
from learner.actor import Learner
from learner.rate_limiter import RateLimiter
from learner.sac.update import make_value_fn_factory
from relabel_service.store_actor import start_store
from relabel_service.worker import USES_VALUE, RelabelWorker

log = logging.getLogger("hindsight.trainer")

CONTROL_FILE = "control.json"
STATE_FILE = "trainer_state.json"
#: strategies that run inside the learner on sampled batches instead of in the service
IN_LEARNER = {"hipi_rl"}


def new_run_dir(cfg: ExperimentConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.logdir) / f"{cfg.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def write_control(run_dir: str | Path, rollout_workers: int) -> None:
    """Ask a running trainer to resize its rollout pool (``hindsight scale``)."""
    path = Path(run_dir) / CONTROL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rollout_workers": int(rollout_workers)}))
    os.replace(tmp, path)


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path | None = None,
        resume: bool = False,
        address: str | None = None,
        progress: bool = True,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
        self.resume = resume
        self.address = address
        self.progress = progress
        self.family = get_family(cfg.env.family, **cfg.env.family_kwargs)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        self.state: dict[str, Any] = {"env_steps": 0, "episodes": 0, "cursors": {}, "eval_history": []}
        if resume and (self.run_dir / STATE_FILE).exists():
            self.state.update(json.loads((self.run_dir / STATE_FILE).read_text()))

    # ---- set-up -------------------------------------------------------------------------
    def _start_ray(self) -> bool:
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
        return True

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
        )
        strategy = cfg.relabel.strategy
        batch_relabeler = None
        if strategy in IN_LEARNER:
            from learner.sac.hipi_rl import make_hipi_rl_relabeler

            batch_relabeler = make_hipi_rl_relabeler(fam, cfg.relabel.strategy_cfg, cfg.env.family_kwargs)
        self.num_gpus = self._gpus_for_learner()
        LearnerActor = ray.remote(Learner)
        self.learner = LearnerActor.options(
            num_cpus=cfg.learner.num_cpus, num_gpus=self.num_gpus, name=None
        ).remote(
            fam.obs_dim,
            fam.action_dim,
            fam.task_dim,
            fam.reward_input_dim,
            cfg.learner,
            fam.discount,
            cfg.seed,
            str(self.run_dir / "checkpoints"),
            self.resume,
            batch_relabeler,
        )
        net_cfg = cfg.learner.sac
        threads = max(1, int(cfg.rollout.num_cpus))
        remote_rollout = ray.remote(RolloutActor)

        def make_rollout(wid: int) -> Any:
            return remote_rollout.options(num_cpus=cfg.rollout.num_cpus).remote(
                store=self.store,
                worker_id=wid,
                family=cfg.env.family,
                family_kwargs=cfg.env.family_kwargs,
                num_envs=cfg.rollout.envs_per_worker,
                net_cfg=net_cfg,
                seed=cfg.seed,
                num_threads=threads,
            )

        self.pool = RolloutPool(make_rollout, cfg.rollout.num_workers)
        self.eval_actor = remote_rollout.options(num_cpus=0.05).remote(
            store=None,
            worker_id=10_000,
            family=cfg.env.family,
            family_kwargs=cfg.env.family_kwargs,
            num_envs=min(8, cfg.eval.episodes),
            net_cfg=net_cfg,
            seed=cfg.seed,
            num_threads=1,
        )
        service_strategy = "none" if strategy in IN_LEARNER else strategy
        value_factory = make_value_fn_factory(net_cfg, fam.obs_dim, fam.action_dim, fam.task_dim)
        R = max(1, cfg.relabel.num_workers)
        shards = list(range(sc.num_shards))
        remote_relabel = ray.remote(RelabelWorker)
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
        self.relabelers = [make_relabeler(r, cursors) for r in range(R)]
        self.needs_value = service_strategy in USES_VALUE

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started_ray = self._start_ray()
        try:
            self._build()
            return self._loop()
        finally:
            self._teardown(started_ray)

    def _teardown(self, started_ray: bool) -> None:
        if hasattr(self, "pool"):
            self.pool.shutdown()
        for name in ("eval_actor", "learner"):
            if hasattr(self, name):
                try:
                    ray.kill(getattr(self, name), no_restart=True)
                except Exception:
                    pass
        for a in getattr(self, "relabelers", []):
            ray.kill(a, no_restart=True)
        if hasattr(self, "store"):
            self.store.shutdown()
        if started_ray:
            ray.shutdown()

    def _loop(self) -> dict[str, Any]:
        cfg, fam = self.cfg, self.family
        tb = TBWriter(str(self.run_dir / "tb"), purge_step=self.state["env_steps"] if self.resume else None)
        budget = cfg.env_steps
        env_steps = int(self.state["env_steps"])
        episodes = int(self.state["episodes"])
        t_start = time.perf_counter()
        wall_before = float(self.state.get("wall_time_s", 0.0))
        inflight: dict[Any, tuple] = {}
        idle_rollout = set(self.pool.actors)
        relabel_inflight = {r: 0 for r in range(len(self.relabelers))}
        train_inflight = False
        weights_ref, weights_version = None, 0
        value_ref, value_version = None, -1
        learner_report: dict[str, Any] = {"updates": 0, "inserted": 0, "version": 0, "may_insert": True}
        eval_tasks = np.resize(fam.eval_tasks(), (cfg.eval.episodes, fam.task_dim))
        next_eval = (env_steps // cfg.eval.every_steps + 1) * cfg.eval.every_steps
        last_eval: dict[str, Any] | None = None
        eval_inflight = False
        cursors: dict[int, int] = {int(k): int(v) for k, v in self.state.get("cursors", {}).items()}
        recent_returns: deque[float] = deque(maxlen=100)
        relabel_log = {"fraction": deque(maxlen=50), "percentiles": deque(maxlen=2000), "tasks": deque(maxlen=2000)}
        lags: deque[float] = deque(maxlen=500)
        last_ckpt_updates = 0
        last_log = time.perf_counter()
        last_store = (time.perf_counter(), 0)
        last_control = 0.0
        rate_t, rate_steps, rate_updates = time.perf_counter(), env_steps, 0
        bar = tqdm(total=budget, initial=min(env_steps, budget), unit="step", disable=not self.progress, dynamic_ncols=True)

        def random_phase() -> bool:
            return env_steps < cfg.rollout.random_steps and not self.resume

        ingested = 0  # transitions the learner has acknowledged
        lc = cfg.learner
        limiter = RateLimiter(lc.samples_per_insert, lc.sac.batch_size, lc.min_replay, lc.spi_tolerance)
        steps_base, updates_base = env_steps, None
        relabel_restarts = 0
        value_sent = {r: -1 for r in range(len(self.relabelers))}  # value weights version each holds
        collected = relabeled = 0  # trajectories this session: the relabel backlog is their difference

        while True:
            # Budget spent: stop collecting, relabel and learn from what is stored, then stop.
            draining = env_steps >= budget
            learner_caught_up = learner_report["inserted"] >= ingested and (
                learner_report.get("updates_done", 1) == 0
                or learner_report["updates"] - (updates_base or 0) >= limiter.target_updates(env_steps - steps_base)
            )
            # Done: log once more, then leave the loop (below).
            finishing = draining and not eval_inflight and collected <= relabeled and not any(
                k[0] in ("rollout", "ingest") for k in inflight.values()
            ) and learner_caught_up
            if not finishing:
                now = time.perf_counter()
                # ---- elastic resize requested through control.json (``hindsight scale``) ----
                if now - last_control > 1.0:
                    last_control = now
                    want = self._read_control()
                    if want is not None and want != self.pool.size:
                        added, removed = self.pool.resize(want)
                        idle_rollout |= set(added)
                        idle_rollout -= set(removed)
                        log.info("rollout pool resized to %d (added %s, removed %s)", want, added, removed)
                # ---- submit work -----------------------------------------------------------
                # Collection waits for the learner (samples per insert, counted on env steps this
                # session: each step yields at least one transition) and for the relabelers.
                session_updates = learner_report["updates"] - (updates_base or 0)
                may_insert = (
                    limiter.may_insert(env_steps - steps_base, session_updates)
                    and collected - relabeled <= cfg.relabel.max_backlog
                    and env_steps < budget
                )
                for wid in sorted(idle_rollout):
                    if not may_insert:
                        break
                    ref = self.pool.submit(wid, weights_version, weights_ref, random_phase())
                    inflight[ref] = ("rollout", wid)
                    idle_rollout.discard(wid)
                for r, n in relabel_inflight.items():
                    while n < cfg.relabel.prefetch:
                        actor = self.relabelers[r]
                        if self.needs_value and value_ref is not None and value_sent[r] < value_version:
                            actor.set_value_weights.remote(value_version, value_ref)
                            value_sent[r] = value_version
                        batch_ref, stats_ref = actor.relabel.options(num_returns=2).remote()
                        inflight[stats_ref] = ("relabel", r, batch_ref)
                        n += 1
                    relabel_inflight[r] = n
                if not train_inflight:
                    inflight[self.learner.train.remote(cfg.learner.updates_per_call)] = ("train",)
                    train_inflight = True
                if env_steps >= next_eval and not eval_inflight and weights_ref is not None:
                    inflight[self.eval_actor.evaluate_remote.remote([weights_ref], eval_tasks, cfg.seed)] = ("eval", env_steps)
                    eval_inflight = True
                    next_eval += cfg.eval.every_steps
                # ---- collect results ---------------------------------------------------------
                ready = []
                if inflight:
                    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                else:
                    time.sleep(0.01)
                for ref in ready:
                    kind = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayActorError as e:
                        if kind[0] == "rollout":
                            log.warning("rollout worker %s died (%s); replacing it", kind[1], type(e).__name__)
                            self.pool.replace(kind[1])
                            idle_rollout.add(kind[1])
                            continue
                        if kind[0] == "relabel":
                            # A new relabel worker resumes from the cursors of the last batch the
                            # learner received: nothing in the store is skipped.
                            r = kind[1]
                            log.warning("relabel worker %s died (%s); replacing it", r, type(e).__name__)
                            relabel_inflight[r] = 0
                            for k in [k for k, v in inflight.items() if v[0] == "relabel" and v[1] == r]:
                                del inflight[k]
                            self.relabelers[r] = self.make_relabeler(r, cursors)
                            relabel_restarts += 1
                            value_sent[r] = -1
                            continue
                        raise
                    if kind[0] == "rollout":
                        wid = kind[1]
                        if wid in self.pool.actors:
                            idle_rollout.add(wid)
                        steps = int(result["env_steps"])
                        env_steps += steps
                        episodes += int(result["episodes"])
                        collected += int(result["episodes"])
                        bar.update(min(steps, max(0, budget - bar.n)))
                        if result["policy_version"] >= 0:
                            recent_returns.extend(result["returns"])
                    elif kind[0] == "relabel":
                        r, batch_ref = kind[1], kind[2]
                        relabel_inflight[r] -= 1
                        relabeled += int(result["trajectories"])
                        if result["trajectories"]:
                            inflight[self.learner.ingest.remote(batch_ref, result["env_steps"])] = ("ingest",)
                            cursors.update({int(k): int(v) for k, v in result["cursors"].items()})
                            relabel_log["fraction"].append(result["fraction_relabeled"])
                            st = result.get("strategy_stats", {})
                            relabel_log["percentiles"].extend(np.ravel(st.get("chosen_percentile", [])).tolist())
                            relabel_log["tasks"].extend(np.asarray(st.get("chosen_tasks", np.zeros((0,)))).reshape(-1).tolist())
                            lags.extend(learner_report["version"] - v for v in result["policy_versions"] if v >= 0)
                    elif kind[0] == "ingest":
                        ingested = max(ingested, int(result))
                    elif kind[0] == "train":
                        train_inflight = False
                        learner_report = result
                        if updates_base is None:
                            updates_base = result["updates"] - result["updates_done"]
                        if result["version"] > weights_version or weights_ref is None:
                            weights_ref = self.learner.weights.remote()
                            weights_version = result["version"]
                            if self.needs_value:
                                value_ref = self.learner.critic_weights.remote()
                                value_version = result["version"]
                        if result["metrics"]:
                            tb.scalars("sac", result["metrics"], env_steps)
                        if result.get("relabel"):
                            tb.scalars("relabel_in_learner", result["relabel"], env_steps)
                        if result["updates"] - last_ckpt_updates >= cfg.learner.checkpoint_every:
                            last_ckpt_updates = result["updates"]
                            self._checkpoint(env_steps, episodes, cursors, t_start, wall_before)
                    elif kind[0] == "eval":
                        eval_inflight = False
                        last_eval = {"env_steps": kind[1], **result}
                        self.state["eval_history"].append(
                            {"env_steps": kind[1], "return_mean": result["return_mean"], "policy_version": result["policy_version"]}
                        )
                        tb.scalar("eval/return", result["return_mean"], kind[1])
                        if result.get("success_rate") is not None:
                            tb.scalar("eval/success_rate", result["success_rate"], kind[1])
                        for i, ret in enumerate(result["returns"][: len(fam.eval_tasks())]):
                            tb.scalar(f"eval_task/return_{i:02d}", ret, kind[1])
                        bar.set_postfix_str(f"eval {result['return_mean']:.2f}", refresh=False)
            # ---- periodic logging ----------------------------------------------------------
            now = time.perf_counter()
            if now - last_log > 2.0 or finishing:
                dt = now - rate_t
                sps = (env_steps - rate_steps) / dt
                ups = (learner_report["updates"] - rate_updates) / dt
                rate_t, rate_steps, rate_updates = now, env_steps, learner_report["updates"]
                last_log = now
                tb.scalar("perf/env_steps_per_s", sps, env_steps)
                tb.scalar("perf/updates_per_s", ups, env_steps)
                tb.scalar("perf/workers_alive", self.pool.size, env_steps)
                tb.scalar("perf/learner_updates", learner_report["updates"], env_steps)
                tb.scalar("perf/samples_per_insert", learner_report["updates"] * cfg.learner.sac.batch_size / max(1, learner_report["inserted"]), env_steps)
                if lags:
                    tb.scalar("perf/policy_lag", float(np.mean(lags)), env_steps)
                if recent_returns:
                    tb.scalar("train/return", float(np.mean(recent_returns)), env_steps)
                if relabel_log["fraction"]:
                    tb.scalar("relabel/fraction_relabeled", float(np.mean(relabel_log["fraction"])), env_steps)
                if relabel_log["percentiles"]:
                    p = np.asarray(relabel_log["percentiles"])
                    for q in (10, 50, 90):
                        tb.scalar(f"relabel/air_percentile_p{q}", float(np.percentile(p, q)), env_steps)
                    tb.histogram("relabel/air_percentile", p, env_steps)
                if relabel_log["tasks"]:
                    tb.histogram("relabel/chosen_task", relabel_log["tasks"], env_steps)
                if now - last_store[0] > 5.0 or finishing:
                    stats = self.store.stats()
                    total = int(stats["trajectories"])
                    tb.scalar("store/trajectories", total, env_steps)
                    tb.scalar("store/bytes", stats.get("bytes", 0), env_steps)
                    tb.scalar("store/ingest_traj_per_s", (total - last_store[1]) / (now - last_store[0]), env_steps)
                    last_store = (now, total)
                bar.set_postfix_str(
                    f"{ups:.0f} upd/s, eval {last_eval['return_mean']:.2f}" if last_eval else f"{ups:.0f} upd/s",
                    refresh=False,
                )
            if finishing:
                break
        bar.close()
        # ---- final evaluation, checkpoint and summary ------------------------------------------
        final_version, final_weights = ray.get(self.learner.weights.remote())
        final_ref = ray.put((final_version, final_weights))
        final = ray.get(self.eval_actor.evaluate_remote.remote([final_ref], eval_tasks, cfg.seed))
        tb.scalar("eval/return", final["return_mean"], env_steps)
        self.state["eval_history"].append({"env_steps": env_steps, "return_mean": final["return_mean"], "policy_version": final["policy_version"]})
        counters = ray.get(self.learner.counters.remote())
        store_stats = self.store.stats()
        tb.scalar("store/trajectories", store_stats["trajectories"], env_steps)
        self._checkpoint(env_steps, episodes, cursors, t_start, wall_before)
        wall = wall_before + time.perf_counter() - t_start
        summary = {
            "run_dir": str(self.run_dir),
            "family": fam.name,
            "strategy": cfg.relabel.strategy,
            "seed": cfg.seed,
            "env_steps": env_steps,
            "episodes": episodes,
            "updates": counters["updates"],
            "transitions_inserted": counters["transitions"],
            "trajectories_stored": int(store_stats["trajectories"]),
            "wall_time_s": wall,
            "env_steps_per_s": env_steps / max(1e-9, wall),
            "updates_per_s": counters["updates"] / max(1e-9, wall),
            "learner_device": counters["device"],
            "policy_version": final["policy_version"],
            "rollout_workers": self.pool.size,
            "workers_replaced": self.pool.replaced,
            "relabel_workers_replaced": relabel_restarts,
            "final_eval": {
                "return_mean": final["return_mean"],
                "returns": final["returns"],
                "success_rate": final.get("success_rate"),
                "episodes": len(final["returns"]),
            },
            "eval_history": self.state["eval_history"],
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        tb.close()
        return summary

    def _checkpoint(self, env_steps: int, episodes: int, cursors: dict, t_start: float, wall_before: float) -> None:
        ray.get(self.learner.checkpoint.remote({"env_steps": env_steps}))
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

    def _read_control(self) -> int | None:
        path = self.run_dir / CONTROL_FILE
        if not path.exists():
            return None
        try:
            return int(json.loads(path.read_text())["rollout_workers"])
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            log.warning("ignoring unreadable %s: %s", path, e)
            return None

