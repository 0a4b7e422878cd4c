"""The chaos suite: a training on a multi-node Ray cluster with faults injected on a schedule.

    hindsight chaos [--faults rollout_worker,learner,...] [--nodes 3] [--json FILE]
    report = run_chaos(faults=FAULTS, nodes=3)          # tests/chaos runs a short one

A ``ray.cluster_utils.Cluster`` (a head and ``nodes - 1`` worker nodes, one logical CPU
each, actors on fractional CPUs) runs a training on the tiny ``test_goal`` family with
the exactly-once ledger on (``Trainer(ledger=True)``). Once the learner has checkpointed,
each fault is injected in turn, after ``steps_between`` more env steps:

| fault | injected as |
| --- | --- |
| rollout_worker | ``ray.kill`` of a rollout worker |
| store_shard | SIGKILL of shard 0's process (Ray restarts it; it recovers its directory) |
| relabel_worker | ``ray.kill`` of relabel worker 0 |
| learner | SIGKILL of the learner's process |
| node | ``Cluster.remove_node`` of a worker node that holds a rollout worker (a new node joins after) |
| env_raise | an env raises in the middle of an episode (``fault_dir`` of the test family) |
| env_stall | an env sleeps 120 s in the middle of an episode (caught by ``rollout.round_timeout_s``) |
| nan_reward | a NaN reward in a round (the store's validation refuses that trajectory) |
| corrupt_segment | one byte flipped in a closed segment of shard 0, then SIGKILL of the shard |

Per fault it reports: whether the system recovered and how many seconds that took (the
fault's own sign: a replaced actor, a restored learner, a shard serving again, a refused
trajectory), acknowledged trajectories lost (acknowledged by the store in the fault's time
window and never ingested by the learner: must be 0), duplicates in the learner's stream
(0), and whether the run finished. A corrupted segment costs the store the damaged record
(the learner had it long before): reported as ``dropped_by_store``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ray

log = logging.getLogger("hindsight.chaos")

FAULTS = (
    "rollout_worker",
    "store_shard",
    "relabel_worker",
    "learner",
    "node",
    "env_raise",
    "env_stall",
    "nan_reward",
    "corrupt_segment",
)


def chaos_config(logdir: str | Path, fault_dir: str | Path, overrides: list[str] = ()):
    """The smoke config made for faults: 3 workers, small segments (closed ones exist
    early), frequent checkpoints, a short round timeout, an unbounded budget (the suite
    sets it once the schedule is done)."""
    from hindsight.config import load_config

    cfg = load_config(
        "smoke",
        [
            f"logdir={logdir}",
            "name=chaos",
            "env_steps=1000000000",
            "rollout.num_workers=3",
            "rollout.round_timeout_s=10",
            "store.segment_bytes=16384",
            "learner.checkpoint_every=40",
            "eval.every_steps=100000",
            *overrides,
        ],
    )
    return dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, family_kwargs={"fault_dir": str(fault_dir)}))


def _pid(actor: Any) -> int:
    return int(ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60))


def _node(actor: Any) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), timeout=60)


def _flip_closed_segment_byte(shard_dir: Path) -> str:
    segs = sorted(shard_dir.glob("seg-*.log"))
    if len(segs) < 2:
        raise RuntimeError(f"{shard_dir}: no closed segment yet (segments: {[s.name for s in segs]})")
    seg = segs[0]
    pos = seg.stat().st_size // 2
    with open(seg, "r+b") as f:  # in place: the live shard never sees the file shorter
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0xFF]))
    return f"{seg.name} byte {pos}"


class _Suite:
    def __init__(self, cluster: Any, trainer: Any, fault_dir: Path, timeout_s: float):
        self.cluster, self.trainer, self.fault_dir, self.timeout_s = cluster, trainer, fault_dir, timeout_s

    @property
    def d(self) -> Any:
        return self.trainer.driver

    def _records(self) -> int:
        return int(self.trainer.store.stats()["records"])

    # ---- injections: each returns (what was done, the recovery predicate) -----------------
    def rollout_worker(self) -> tuple[str, Callable[[], bool]]:
        replaced, steps = self.trainer.pool.replaced, self.d.env_steps
        wid, actor = sorted(self.trainer.pool.actors.items())[0]
        ray.kill(actor, no_restart=True)
        return f"ray.kill rollout worker {wid}", lambda: self.trainer.pool.replaced > replaced and self.d.env_steps > steps

    def _kill_shard(self, shard: int) -> Callable[[], bool]:
        before = self._records()
        os.kill(_pid(self.trainer.store.shards[shard]), signal.SIGKILL)
        return lambda: self._records() > before

    def store_shard(self) -> tuple[str, Callable[[], bool]]:
        return "SIGKILL store shard 0", self._kill_shard(0)

    def relabel_worker(self) -> tuple[str, Callable[[], bool]]:
        before = self.d.relabel_restarts
        ray.kill(self.trainer.relabelers[0], no_restart=True)
        return "ray.kill relabel worker 0", lambda: self.d.relabel_restarts > before

    def learner(self) -> tuple[str, Callable[[], bool]]:
        before = len(self.d.learner_restarts)
        os.kill(_pid(self.trainer.learner), signal.SIGKILL)

        def back() -> bool:
            restarts = self.d.learner_restarts
            return len(restarts) > before and self.d.learner_report["updates"] > restarts[-1]["restored_updates"]

        return "SIGKILL the learner", back

    def node(self) -> tuple[str, Callable[[], bool]]:
        by_id = {n.node_id: n for n in self.cluster.worker_nodes}
        holders = [_node(a) for a in list(self.trainer.pool.actors.values())]
        victim_id = next((i for i in holders if i in by_id), None)
        if victim_id is None:
            raise RuntimeError("no worker node holds a rollout worker")
        replaced, steps = self.trainer.pool.replaced, self.d.env_steps
        self.cluster.remove_node(by_id[victim_id], allow_graceful=False)
        self.cluster.add_node(num_cpus=1, wait=False)  # a replacement machine joins
        return (f"remove worker node {victim_id[:8]}",
                lambda: self.trainer.pool.replaced > replaced and self.d.env_steps > steps)

    def _env_fault(self, name: str, arg: str = "") -> None:
        tmp = self.fault_dir / f".{name}.tmp"
        tmp.write_text(arg)
        os.replace(tmp, self.fault_dir / name)

    def env_raise(self) -> tuple[str, Callable[[], bool]]:
        before = self.d.round_failures
        self._env_fault("raise")
        return "an env raises mid-episode", lambda: self.d.round_failures > before

    def env_stall(self) -> tuple[str, Callable[[], bool]]:
        before = self.d.round_failures
        self._env_fault("stall", "120")
        return "an env sleeps 120 s mid-episode", lambda: self.d.round_failures > before

    def nan_reward(self) -> tuple[str, Callable[[], bool]]:
        before = self.d.rejected
        self._env_fault("nan")
        return "a NaN reward in a round", lambda: self.d.rejected > before

    def corrupt_segment(self) -> tuple[str, Callable[[], bool]]:
        where = _flip_closed_segment_byte(self.trainer.run_dir / "store" / "shard-000")
        return f"flip {where} of shard 0, SIGKILL it", self._kill_shard(0)

    # ---- the schedule -----------------------------------------------------------------------
    def wait(self, cond: Callable[[], Any], timeout: float, what: str) -> float | None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            try:
                if cond():
                    return time.perf_counter() - t0
            except (ray.exceptions.RayError, KeyError, IndexError):
                pass  # a component is between lives: ask again
            if "error" in self.out:
                return None
            time.sleep(0.2)
        log.warning("chaos: gave up waiting for %s after %.0fs", what, timeout)
        return None

    def run(self, faults: list[str], steps_between: int, out: dict[str, Any]) -> list[dict[str, Any]]:
        self.out = out
        rows = []
        ckpt = self.trainer.run_dir / "checkpoints" / "learner.json"
        self.wait(lambda: getattr(self.trainer, "driver", None) and ckpt.exists(), 300, "a first checkpoint")
        for fault in faults:
            start = self.d.env_steps
            self.wait(lambda: self.d.env_steps >= start + steps_between, self.timeout_s, "steps before the fault")
            row: dict[str, Any] = {"fault": fault, "injected_at": time.time()}
            try:
                row["detail"], recovered = getattr(self, fault)()
                row["recovery_s"] = self.wait(recovered, self.timeout_s, f"recovery from {fault}")
            except Exception as e:  # the injection itself failed: reported, not hidden
                row["detail"], row["recovery_s"] = f"injection failed: {e}", None
            row["recovered"] = row["recovery_s"] is not None
            log.info("chaos: %s (%s): recovered=%s in %s s", fault, row["detail"], row["recovered"], row["recovery_s"])
            rows.append(row)
        return rows


def run_chaos(
    faults: list[str] | tuple[str, ...] = FAULTS,
    nodes: int = 3,
    steps_between: int = 300,
    out_dir: str | Path | None = None,
    timeout_s: float = 120.0,
    overrides: list[str] = (),
) -> dict[str, Any]:
    """Run the suite on a fresh ``ray.cluster_utils.Cluster``; returns the report."""
    from ray.cluster_utils import Cluster

    from hindsight.trainer import Trainer
    from relabel_service.store import tools

    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    if nodes < 2:
        raise ValueError(f"nodes must be >= 2 (a head and at least one worker node), got {nodes}")
    if ray.is_initialized():
        raise RuntimeError("hindsight chaos starts its own Ray cluster: call it without a Ray session")
    base = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="hindsight-chaos-"))
    fault_dir = base / "faults"
    fault_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    finished, trainer = False, None
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        trainer = Trainer(chaos_config(base / "runs", fault_dir, list(overrides)), progress=False, ledger=True)

        def train() -> None:
            try:
                out.update(trainer.run())
            except BaseException as e:  # reported as a run that did not finish
                out["error"] = f"{type(e).__name__}: {e}"

        th = threading.Thread(target=train, daemon=True, name="chaos-training")
        th.start()
        suite = _Suite(cluster, trainer, fault_dir, timeout_s)
        rows = suite.run(list(faults), steps_between, out)
        if getattr(trainer, "driver", None) is not None:
            trainer.driver.budget = trainer.driver.env_steps + steps_between  # the schedule is done: finish
        th.join(timeout=max(300.0, timeout_s))
        finished = not th.is_alive() and "error" not in out and "final_eval" in out
        if th.is_alive():
            trainer.stop.requested = "SIGINT"
            th.join(timeout=120)
    finally:
        ray.shutdown()
        cluster.shutdown()
    if trainer is None:
        raise RuntimeError("hindsight chaos: the training could not be set up")
    driver = getattr(trainer, "driver", None)
    acked = dict(driver.acked_ids or {}) if driver is not None else {}
    report = _report(rows, out, finished, trainer.run_dir, tools, nodes, acked)
    report["wall_s"] = time.perf_counter() - t_start
    return report


def _report(rows: list[dict[str, Any]], out: dict[str, Any], finished: bool, run_dir: Path, tools: Any,
            nodes: int, acked: dict[str, float]) -> dict[str, Any]:
    """Attribute losses and duplicates to the fault whose time window holds their ack
    (``acked``: episode id -> when the store acknowledged it, from the driver)."""
    ledger = out.get("ledger", {})
    lost_ids = set(ledger.get("lost_ids", []))
    dup_ids = set(ledger.get("duplicate_ids", []))
    starts = [r["injected_at"] for r in rows]

    def window(eid: str) -> int:
        t = acked.get(eid)
        if t is None:
            return 0
        i = 0
        for k, s in enumerate(starts):
            if t >= s:
                i = k
        return i

    for r in rows:
        r["lost"], r["duplicates"] = 0, 0
        r["run_finished"] = finished
    for eid in lost_ids:
        if rows:
            rows[window(eid)]["lost"] += 1
    for eid in dup_ids:
        if rows:
            rows[window(eid)]["duplicates"] += 1
    stored = {t.episode_id for t in tools.load_all(run_dir / "store")} if (run_dir / "store").exists() else set()
    learned = set(ledger.get("episode_ids", []))
    for r in rows:
        if r["fault"] == "corrupt_segment":
            r["dropped_by_store"] = len(learned - stored)
    verify = tools.verify(run_dir / "store") if (run_dir / "store").exists() else None
    return {
        "nodes": nodes,
        "run_dir": str(run_dir),
        "finished": finished,
        "error": out.get("error"),
        "env_steps": out.get("env_steps"),
        "updates": out.get("updates"),
        "acknowledged": ledger.get("acknowledged"),
        "learned": ledger.get("learned"),
        "lost": ledger.get("lost"),
        "duplicates": ledger.get("duplicates"),
        "stored_not_learned": len(stored - learned) if learned else None,
        "store_verifies": bool(verify is not None and tools.verify_ok(verify)),
        "faults": rows,
        "passed": finished
        and all(r["recovered"] and r["lost"] == 0 and r["duplicates"] == 0 for r in rows)
        and ledger.get("lost") == 0
        and ledger.get("duplicates") == 0,
    }


def format_report(report: dict[str, Any]) -> str:
    """The markdown table (README "Failures and recovery")."""
    lines = [
        "| fault | injected as | recovered in | acknowledged lost | duplicates | run finished |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["faults"]:
        rec = f"{r['recovery_s']:.1f} s" if r["recovered"] else "**not recovered**"
        extra = f" (store dropped {r['dropped_by_store']} damaged record, learned before)" if r.get("dropped_by_store") else ""
        lines.append(
            f"| {r['fault']} | {r['detail']}{extra} | {rec} | {r['lost']} | {r['duplicates']} | "
            f"{'yes' if r['run_finished'] else '**no**'} |"
        )
    lines.append("")
    lines.append(
        f"{report['nodes']} nodes; {report['env_steps']} env steps, {report['updates']} updates; "
        f"{report['acknowledged']} trajectories acknowledged, {report['learned']} learned, "
        f"{report['lost']} lost, {report['duplicates']} duplicates; store verifies: "
        f"{'yes' if report['store_verifies'] else 'no'}; {report['wall_s']:.0f} s"
        + (f"; error: {report['error']}" if report.get("error") else "")
    )
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, default=str))
