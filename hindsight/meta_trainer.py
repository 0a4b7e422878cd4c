"""The meta-RL trainer: PEARL with HFR (or none / random / hipi) on the same Ray pipeline.

```
 driver (this file), one iteration = PEARL's schedule (REFERENCE-CODE.md §5):
   1. tasks: every training task in iteration 0 (initial pool), else num_tasks_sample draws
   2. learner.clear_encoder(tasks); relabelers get the newest PEARL weights (log Z refreshed)
   3. MetaRolloutActor x W ── run_task(task, [prior, posterior, extra_rl]) ──► store (task_id, phase)
   4. MetaRelabelWorker x R ── read_new ─► coin ─► hfr | hipi | random | none ─► MetaTransitions
                                                        └────────── ingest ──► MetaLearner (per-task buffers)
   5. learner.train(num_train_steps_per_itr); publish encoder + actor (version = iteration)
   6. meta-test every k iterations (held-out tasks, prior then posterior), TensorBoard, checkpoint
```

The driver moves object refs: collected trajectories go from the rollout actors to the
store, relabeled rows from the relabel workers to the learner. It reuses the SAC
``Trainer``'s set-up (run directory, config.yaml, Ray start, GPU choice, state file);
resuming (``--resume RUN_DIR``) continues from the learner's whole-state checkpoint
(buffers included) and the relabelers' store cursors.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError
from tqdm import tqdm

from actors.pool import MetaRolloutActor
from actors.priority import background
from hindsight.config import learner_cpus
from hindsight.tb import TBWriter
from hindsight.trainer import STATE_FILE, Trainer
from learner.core import threads_for
from learner.pearl.learner import MetaLearner
from learner.pearl.update import make_utility_factory
from relabel_service.store.actor import start_store
from relabel_service.worker import MetaRelabelWorker

log = logging.getLogger("hindsight.meta_trainer")

#: strategies whose relabel worker needs PEARL's value model
NEEDS_MODEL = {"hfr", "hipi"}


def collection_plan(sched: Any, iteration: int, num_train_tasks: int, seed: int) -> tuple[np.ndarray, list]:
    """(task ids [n], phases) of one iteration: iteration 0 collects ``num_initial_steps``
    with z from the prior for every training task; later ones draw ``num_tasks_sample``
    tasks with replacement (oyster ``np.random.randint``) and run prior / posterior / extra
    RL phases. Seeded by (seed, iteration), so a resumed run draws the same tasks."""
    if iteration == 0:
        return np.arange(num_train_tasks), [("initial", sched.num_initial_steps, False)]
    rng = np.random.default_rng([seed, 4242, iteration])
    tasks = rng.integers(num_train_tasks, size=sched.num_tasks_sample)
    phases = [("prior", sched.num_steps_prior, False), ("posterior", sched.num_steps_posterior, True),
              ("extra_rl", sched.num_extra_rl_steps_posterior, True)]
    return tasks, [p for p in phases if p[1] > 0]


class MetaTrainer(Trainer):
    """``Trainer`` for meta families: same run directory, Ray start and state file; its own
    actors and iteration loop."""

    resizable_pool = False  # its iteration loop has a fixed pool: no control actor

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.state.setdefault("iteration", 0)
        self.state.setdefault("relabel_totals", {"trajectories": 0, "relabeled": 0, "changed": 0})

    # ---- set-up -------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, fam, mc = self.cfg, self.family, self.cfg.meta
        sc = cfg.store
        self.train_tasks, self.test_tasks = fam.train_tasks(), fam.test_tasks()
        J = len(self.train_tasks)
        self.store = start_store(
            str(self.run_dir / "store"), num_shards=sc.num_shards, fsync=sc.fsync,
            fsync_interval_s=sc.fsync_interval_s, segment_bytes=sc.segment_bytes,
            max_segments=sc.max_segments, num_cpus=sc.num_cpus, cpu_priority=cfg.cpu_priority, pin_to_node=not sc.shared_filesystem,
            # a resumed run's cursors floor the shards' seqs: no reader skips new records
            min_next_seq={int(k): int(v) for k, v in self.state.get("cursors", {}).items()},
        )
        if self.resume:
            self._counters_from_store()  # trajectories stored after the checkpoint count too
        self.num_gpus = self._gpus_for_learner()
        # learner.num_cpus 0: what the largest node has left after the other actors (as the SAC trainer)
        node_cpus = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
        cpus = learner_cpus(cfg, node_cpus)
        self.learner = ray.remote(MetaLearner).options(num_cpus=cpus, num_gpus=self.num_gpus).remote(
            fam.obs_dim, fam.action_dim, J, mc.pearl, mc.schedule, cfg.learner.device, cfg.seed,
            cfg.learner.threads or threads_for(cpus), str(self.run_dir / "checkpoints"), self.resume,
            cfg.learner.flush_denormal,
        )
        remote_rollout = ray.remote(background(MetaRolloutActor, cfg.cpu_priority))  # actors/priority.py

        def make_rollout(wid: int, store: Any = self.store, num_cpus: float = cfg.rollout.num_cpus) -> Any:
            return remote_rollout.options(num_cpus=num_cpus).remote(
                store=store, worker_id=wid, family=cfg.env.family, family_kwargs=cfg.env.family_kwargs,
                pearl_cfg=mc.pearl, seed=cfg.seed)

        self.make_rollout = make_rollout
        self.rollouts = {w: make_rollout(w) for w in range(cfg.rollout.num_workers)}
        strategy = cfg.relabel.strategy
        factory = make_utility_factory(mc.pearl, fam.obs_dim, fam.action_dim) if strategy in NEEDS_MODEL else None
        R = max(1, cfg.relabel.num_workers)
        shards = list(range(sc.num_shards))
        remote_relabel = ray.remote(background(MetaRelabelWorker, cfg.cpu_priority))

        def make_relabeler(r: int, cursors: dict[int, int]) -> Any:
            mine = shards[r::R]
            return remote_relabel.options(num_cpus=cfg.relabel.num_cpus).remote(
                worker_id=r, family=cfg.env.family, strategy=strategy, store=self.store, shard_ids=mine,
                seed=cfg.seed, family_kwargs=cfg.env.family_kwargs, batch_trajectories=cfg.relabel.batch_trajectories,
                utility_factory=factory, utility_batch_size=mc.schedule.utility_batch_size,
                log_z_samples=mc.schedule.log_z_samples, context_size=fam.horizon,
                embedding_size=mc.pearl.embedding_batch_size, probability=mc.schedule.relabel_probability,
                temperature=mc.temperature, task_history=mc.task_history,
                cursors={s: cursors.get(s, 0) for s in mine})

        self.make_relabeler = make_relabeler
        cursors = {int(k): int(v) for k, v in self.state.get("cursors", {}).items()}
        self.relabelers = [make_relabeler(r, cursors) for r in range(R)]
        self.cursors = cursors

    def _teardown(self, started_ray: bool) -> None:
        self._release([*getattr(self, "rollouts", {}).values(), *getattr(self, "relabelers", []),
                       getattr(self, "learner", None)], started_ray, store=True)

    # ---- the loop -----------------------------------------------------------------------
    def _loop(self) -> dict[str, Any]:
        cfg, mc = self.cfg, self.cfg.meta
        st = self.state
        self.tb = TBWriter(str(self.run_dir / "tb"), purge_step=st["env_steps"] if self.resume else None)
        self.t_start, self.wall_before = time.perf_counter(), float(st.get("wall_time_s", 0.0))
        self.last_eval: dict[str, Any] | None = None
        bar = tqdm(total=mc.schedule.num_iterations, initial=st["iteration"], unit="itr",
                   disable=not self.progress, dynamic_ncols=True)
        while st["iteration"] < mc.schedule.num_iterations and st["env_steps"] < cfg.env_steps:
            if self.stop.requested:  # SIGINT / SIGTERM: checkpoint and stop between iterations
                bar.close()
                self._save()
                self.tb.close()
                return {"run_dir": str(self.run_dir), "algorithm": "pearl", "interrupted": self.stop.requested,
                        "checkpointed": True,
                        "iterations": st["iteration"], "env_steps": st["env_steps"]}
            it = st["iteration"]
            report = self._iteration(it)
            st["iteration"] = it + 1
            bar.update(1)
            bar.set_postfix_str(f"{st['env_steps']} steps, {report['updates']} upd"
                                + (f", test {self.last_eval['return_mean']:.2f}" if self.last_eval else ""), refresh=False)
            if (it + 1) % mc.eval_every_iterations == 0:
                self._evaluate()
            if (it + 1) % mc.checkpoint_every_iterations == 0:
                self._save()
        bar.close()
        return self._finish()

    def _iteration(self, it: int) -> dict[str, Any]:
        cfg, sched, st = self.cfg, self.cfg.meta.schedule, self.state
        t0 = time.perf_counter()
        tasks, phases = collection_plan(sched, it, len(self.train_tasks), cfg.seed)
        version, _ = ray.get(self.learner.weights.remote())
        weights_ref = self.learner.weights.remote()
        ray.get(self.learner.clear_encoder.remote(np.unique(tasks)))
        if cfg.relabel.strategy in NEEDS_MODEL and version > 0:
            value_ref = self.learner.critic_weights.remote()
            for r in self.relabelers:
                r.set_value_weights.remote(version, value_ref)
        collected = self._collect(tasks, phases, version, weights_ref, it)
        relabel = self._relabel(collected, it)
        report = ray.get(self.learner.train.remote(sched.num_train_steps_per_itr))
        new_version = ray.get(self.learner.publish.remote())
        step = st["env_steps"]
        tb = self.tb
        tb.scalars("pearl", report["metrics"], step)
        tb.scalar("perf/iteration", it, step)
        tb.scalar("perf/iteration_seconds", time.perf_counter() - t0, step)
        tb.scalar("perf/train_seconds", report["seconds"], step)
        tb.scalar("perf/learner_updates", report["updates"], step)
        tb.scalar("perf/policy_version", new_version, step)
        for k, v in relabel.items():
            if k == "chosen_tasks":
                tb.histogram("relabel/chosen_task", v, step)
            else:
                tb.scalar(f"relabel/{k}", v, step)
        return report

    def _collect(self, tasks: np.ndarray, phases: list, version: int, weights_ref: Any, it: int) -> int:
        """Every task's phases on some rollout actor (a dead actor is replaced and its task
        resubmitted); returns trajectories appended to the store."""
        emb = self.cfg.meta.pearl.embedding_batch_size
        box = [weights_ref]
        queue = [int(t) for t in tasks]
        idle = set(self.rollouts)
        inflight: dict[Any, tuple[int, int]] = {}
        episodes, returns = 0, []
        while queue or inflight:
            while queue and idle:
                w, task = idle.pop(), queue.pop()
                inflight[self.rollouts[w].run_task.remote(version, box, task, phases, emb)] = (w, task)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=5.0)
            for ref in ready:
                w, task = inflight.pop(ref)
                try:
                    stats = ray.get(ref)
                except RayActorError as e:
                    log.warning("rollout worker %s died (%s); replacing it and redoing task %s", w, type(e).__name__, task)
                    self.rollouts[w] = self.make_rollout(w)
                    queue.append(task)
                    idle.add(w)
                    continue
                idle.add(w)
                episodes += stats["episodes"]
                self.state["env_steps"] += stats["env_steps"]
                self.state["episodes"] += stats["episodes"]
                if it > 0:
                    returns += stats["returns"]
        if returns:
            self.tb.scalar("train/return", float(np.mean(returns)), self.state["env_steps"])
        return episodes

    def _relabel(self, collected: int, it: int) -> dict[str, Any]:
        """Relabel until every trajectory collected this iteration reached the learner."""
        done, ingests = 0, []
        inflight: dict[Any, tuple[int, Any]] = {}
        fractions, changed, probs, chosen, extra = [], [], [], [], {}
        idle_rounds = 0
        while done < collected:
            for r, actor in enumerate(self.relabelers):
                if not any(v[0] == r for v in inflight.values()):
                    rows_ref, stats_ref = actor.relabel.options(num_returns=2).remote()
                    inflight[stats_ref] = (r, rows_ref)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=30.0)
            if not ready:
                idle_rounds += 1
                if idle_rounds > 20:
                    raise RuntimeError(f"meta trainer: relabeling stalled at {done}/{collected} trajectories "
                                       f"of iteration {it} (no relabel result for 10 min)")
                continue
            for ref in ready:
                r, rows_ref = inflight.pop(ref)
                try:
                    stats = ray.get(ref)
                except RayActorError as e:
                    log.warning("relabel worker %s died (%s); replacing it from the last cursors", r, type(e).__name__)
                    self.relabelers[r] = self.make_relabeler(r, self.cursors)
                    continue
                if not stats["trajectories"]:
                    continue
                done += stats["trajectories"]
                ingests.append(self.learner.ingest.remote(rows_ref))
                self.cursors.update({int(k): int(v) for k, v in stats["cursors"].items()})
                totals = self.state["relabel_totals"]
                totals["trajectories"] += stats["trajectories"]
                totals["relabeled"] += stats["relabeled"]
                totals["changed"] += int(round(stats["changed_task_fraction"] * stats["trajectories"]))
                fractions.append((stats["fraction_relabeled"], stats["trajectories"]))
                changed.append((stats["changed_task_fraction"], stats["trajectories"]))
                probs += stats["chosen_probability"]
                chosen += stats["chosen_tasks"]
                for k in ("entropy", "utility_mean", "log_z_mean", "refresh_seconds"):
                    if stats.get(k) is not None:
                        extra[k] = stats[k]
        # let in-flight relabel calls finish before training (they may hold the next rows)
        for ref, (r, rows_ref) in list(inflight.items()):
            try:
                stats = ray.get(ref)
            except RayActorError:
                self.relabelers[r] = self.make_relabeler(r, self.cursors)
                continue
            if stats["trajectories"]:
                ingests.append(self.learner.ingest.remote(rows_ref))
                self.cursors.update({int(k): int(v) for k, v in stats["cursors"].items()})
        ray.get(ingests)
        out: dict[str, Any] = {}
        if fractions:
            w = np.array([n for _, n in fractions], dtype=np.float64)
            out["fraction_relabeled"] = float(np.dot([f for f, _ in fractions], w) / w.sum())
            out["changed_task_fraction"] = float(np.dot([f for f, _ in changed], w) / w.sum())
        if probs:
            out["chosen_probability"] = float(np.mean(probs))
        if chosen:
            out["chosen_tasks"] = chosen
        out.update(extra)
        self.state.setdefault("last_relabel", {}).update({k: v for k, v in out.items() if k != "chosen_tasks"})
        return out

    # ---- evaluation, checkpoints, the end -------------------------------------------------
    def _evaluate(self) -> dict[str, Any]:
        sched = self.cfg.meta.schedule
        weights_ref = self.learner.weights.remote()
        # evaluation runs between iterations, so the first rollout actor is free to do it
        evaluator = self.rollouts[min(self.rollouts)]
        result = ray.get(evaluator.evaluate_meta_remote.remote(
            [weights_ref], self.test_tasks, self.cfg.seed, sched.num_exp_traj_eval, sched.num_eval_trajectories))
        step = self.state["env_steps"]
        self.last_eval = result
        self.tb.scalar("meta_test/return", result["return_mean"], step)
        self.tb.scalar("meta_test/prior_return", result["prior_return_mean"], step)
        if result["success_rate"] is not None:
            self.tb.scalar("meta_test/success_rate", result["success_rate"], step)
        for i, ret in enumerate(result["returns"]):
            self.tb.scalar(f"meta_test_task/return_{i:02d}", ret, step)
        self.state["eval_history"].append({
            "env_steps": step, "iteration": self.state["iteration"], "return_mean": result["return_mean"],
            "success_rate": result["success_rate"], "policy_version": result["policy_version"]})
        return result

    def _save(self) -> None:
        ray.get(self.learner.checkpoint.remote({"env_steps": self.state["env_steps"], "iteration": self.state["iteration"]}))
        self.state.update({"cursors": {str(k): v for k, v in self.cursors.items()},
                           "wall_time_s": self.wall_before + time.perf_counter() - self.t_start})
        tmp = self.run_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.run_dir / STATE_FILE)

    def _finish(self) -> dict[str, Any]:
        hist = self.state["eval_history"]
        if self.last_eval is not None and hist and hist[-1]["iteration"] == self.state["iteration"]:
            final = self.last_eval  # the last iteration's meta-test already ran on these weights
        else:
            final = self._evaluate()
        self._save()
        counters = ray.get(self.learner.counters.remote())
        store_stats = self.store.stats()
        wall = self.wall_before + time.perf_counter() - self.t_start
        st = self.state
        summary = {
            "run_dir": str(self.run_dir), "algorithm": "pearl", "family": self.family.name,
            "strategy": self.cfg.relabel.strategy, "seed": self.cfg.seed, "iterations": st["iteration"],
            "env_steps": st["env_steps"], "episodes": st["episodes"], "updates": counters["updates"],
            "transitions_ingested": counters["transitions"], "trajectories_stored": int(store_stats["trajectories"]),
            "wall_time_s": wall, "env_steps_per_s": st["env_steps"] / max(1e-9, wall),
            "learner_device": counters["device"], "policy_version": final["policy_version"],
            "relabel": {**st["relabel_totals"], **st.get("last_relabel", {})},
            "final_eval": {"return_mean": final["return_mean"], "returns": final["returns"],
                           "success_rate": final["success_rate"], "prior_return_mean": final["prior_return_mean"],
                           "episodes": len(final["returns"])},
            "eval_history": st["eval_history"],
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.tb.close()
        return summary


def evaluate_checkpoint(run_dir: str | Path, seed: int | None = None, num_tasks: int | None = None) -> dict[str, Any]:
    """Meta-test a saved PEARL run without Ray: its config, its last checkpoint, the
    family's held-out test tasks (``hindsight eval --checkpoint RUN_DIR``)."""
    from actors.rollout import MetaRolloutWorker
    from hindsight.config import load_config
    from learner.pearl.update import load_state, policy_weights

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (not a run directory)")
    ckpt = run_dir / "checkpoints" / "learner.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{run_dir}: no checkpoints/learner.pt yet")
    cfg = load_config(str(run_dir / "config.yaml"))
    state = load_state(ckpt, "cpu")
    meta = json.loads((run_dir / "checkpoints" / "learner.json").read_text())
    worker = MetaRolloutWorker(worker_id=10_001, family=cfg.env.family, pearl_cfg=state.cfg, seed=cfg.seed,
                               family_kwargs=cfg.env.family_kwargs)
    tasks = worker.family.test_tasks()
    if num_tasks is not None:
        tasks = tasks[:num_tasks]
    sched = state.sched
    result = worker.evaluate_meta((int(meta["version"]), policy_weights(state)), tasks,
                                  cfg.seed if seed is None else seed, sched.num_exp_traj_eval,
                                  sched.num_eval_trajectories)
    result.update({"run_dir": str(run_dir), "family": cfg.env.family, "updates": state.step,
                   "num_test_tasks": len(tasks)})
    return result
