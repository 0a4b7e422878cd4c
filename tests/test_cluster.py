"""Recovery on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two
worker nodes, fractional CPUs so it fits a 2-core machine; one cluster for the module).

Each test kills something real while a training runs (an actor, a node, the driver
process itself) and checks that the run finishes with nothing acknowledged lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import ray
from ray.cluster_utils import Cluster

from hindsight.config import load_config
from hindsight.trainer import Trainer, write_control
from relabel_service.store import tools

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    # the second worker node declares a GPU (a logical resource: nothing runs on it here),
    # so the learner's placement on a GPU node can be checked
    c.gpu_node = c.add_node(num_cpus=1, num_gpus=1)  # type: ignore[attr-defined]
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def _start(trainer: Trainer) -> tuple[threading.Thread, dict[str, Any]]:
    """Run the trainer in a thread (signals stay with the test's main thread)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out.update(trainer.run())
        except BaseException as e:  # surfaced by _join
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def _wait_for(cond: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _join(th: threading.Thread, out: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    th.join(timeout=timeout)
    assert not th.is_alive(), "the run did not finish"
    if "error" in out:
        raise out["error"]
    return out


@contextlib.contextmanager
def _stopped_on_failure(trainer: Trainer, th: threading.Thread):
    """A failing test stops its training (as SIGINT would) before Ray goes away."""
    try:
        yield
    except BaseException:
        trainer.stop.requested = "SIGINT"
        th.join(timeout=120)
        raise


def _smoke(tmp_path: Path, *overrides: str) -> Any:
    return load_config("smoke", [f"logdir={tmp_path}", *overrides])


# ---- actor deaths never crash the driver; shrinking the pool mid-round ------------------------


def test_dead_eval_actor_is_replaced_and_pool_shrinks_to_zero_mid_round(cluster, tmp_path):
    trainer = Trainer(_smoke(tmp_path, "env_steps=2500", "relabel.strategy=none"), progress=False)
    th, out = _start(trainer)
    with _stopped_on_failure(trainer, th):
        _wait_for(lambda: getattr(trainer, "pool", None) and trainer.pool.actors, what="actors")
        time.sleep(2.0)
        ray.kill(trainer.eval_actor, no_restart=True)  # the next eval meets a dead actor
        # every worker has a round in flight: removing all of them drops those rounds
        write_control(trainer.run_dir, 0)
        _wait_for(lambda: trainer.pool.size == 0, what="the pool to shrink")
        time.sleep(1.5)
        write_control(trainer.run_dir, 2)
        summary = _join(th, out)
        assert summary["env_steps"] >= 2500
        assert summary["rollout_workers"] == 2
        assert summary["eval_actors_replaced"] >= 1
        assert len(summary["eval_history"]) >= 2
        assert tools.verify_ok(tools.verify(Path(summary["run_dir"]) / "store"))


# ---- SIGINT / SIGTERM and a dead driver ------------------------------------------------------


def _train_process(logdir: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "hindsight.cli", "train", "--config", "smoke", "--no-progress",
           "--set", f"logdir={logdir}", "--env-steps", "1000000", "--set", "relabel.strategy=none", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_dir_with(logdir: Path, rel: str, proc: subprocess.Popen) -> Path:
    def find() -> Path | None:
        assert proc.poll() is None, proc.communicate()
        hits = list(logdir.glob(f"*/{rel}"))
        return hits[0].parent if hits and rel.count("/") == 0 else (hits[0].parents[rel.count("/")] if hits else None)

    return _wait_for(find, timeout=180, what=rel)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: parent links)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        out += kids
        frontier = kids
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _ray_agent(pid: int) -> bool:
    """Whether ``pid`` is one of Ray's per-node agents (dashboard, runtime env)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmd.startswith((b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"))


def _gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """The pids still alive after waiting up to ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _kill(pids: list[int]) -> None:
    for p in pids:  # only processes this test started
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def test_sigint_stops_cleanly_with_a_final_checkpoint(tmp_path):
    sig = signal.SIGINT
    proc = _train_process(tmp_path)
    run_dir = _run_dir_with(tmp_path, "checkpoints/learner.pt", proc)
    children = _descendants(proc.pid)
    assert children, "the trainer started no Ray processes"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + int(sig), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{sig.name}: stopped at") and f"--resume {run_dir}" in last, err
    assert (run_dir / "trainer_state.json").exists() and (run_dir / "checkpoints" / "learner.pt").exists()
    alive = _gone(children)
    _kill(alive)  # leave nothing behind even when the assertion fails
    assert not alive, f"Ray processes left behind: {alive}"


def test_sigterm_in_process_returns_a_resumable_interrupted_run(cluster, tmp_path):
    trainer = Trainer(_smoke(tmp_path, "env_steps=1000000", "relabel.strategy=none"), progress=False)

    def send_when_running() -> None:
        _wait_for(lambda: (trainer.run_dir / "checkpoints" / "learner.pt").exists(), what="a checkpoint")
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Thread(target=send_when_running, daemon=True)
    timer.start()
    summary = trainer.run()  # main thread: the handler is installed here
    timer.join()
    assert summary["interrupted"] == "SIGTERM" and summary["checkpointed"]
    assert signal.getsignal(signal.SIGTERM) is not trainer.stop._handle  # restored
    state = (trainer.run_dir / "trainer_state.json").read_text()
    assert f'"env_steps": {summary["env_steps"]}' in state


def test_resume_after_a_dead_driver_counts_what_the_store_holds(cluster, tmp_path):
    proc = _train_process(tmp_path, "--set", "learner.checkpoint_every=50")
    run_dir = _run_dir_with(tmp_path, "trainer_state.json", proc)
    time.sleep(3.0)  # trajectories stored after the last checkpoint
    children = _descendants(proc.pid)
    proc.kill()  # a dead driver: no final checkpoint
    proc.communicate(timeout=60)
    # The run's actors, raylet and GCS die with the driver that started them; Ray's dashboard
    # and runtime-env agents of a SIGKILLed driver outlive it (orphans that touch nothing of
    # the run), so waiting for them would only run out the timeout: they are killed at once.
    _gone([p for p in children if not _ray_agent(p)])
    _kill([p for p in children if _alive(p)])
    _gone(children)
    before = tools.stats(run_dir / "store")
    stored = sum(f["steps"] for f in before["families"].values())
    cfg = load_config(str(run_dir / "config.yaml"), [f"env_steps={stored + 300}"])
    summary = Trainer(cfg, run_dir=run_dir, resume=True, progress=False).run()
    after = tools.load_all(run_dir / "store")
    # every stored step counted once: nothing the dead driver had collected is collected again
    assert summary["env_steps"] == sum(t.length for t in after)
    assert summary["episodes"] == len(after)
    assert stored + 300 <= summary["env_steps"] < stored + 300 + 2 * 4 * 10 + 1


# ---- multi-node: placement, exactly-once delivery, a lost node, a lost learner ----------------


def _node_of(actor: Any) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), timeout=300)


def _pid_of(actor: Any) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=300)


def _assert_exactly_once(summary: dict[str, Any]) -> None:
    """Every trajectory in the store (and every one the store acknowledged) reached the
    learner's stream exactly once."""
    ledger = summary["ledger"]
    stored = {t.episode_id for t in tools.load_all(Path(summary["run_dir"]) / "store")}
    assert ledger["lost"] == 0 and ledger["duplicates"] == 0, {k: v for k, v in ledger.items() if k != "episode_ids"}
    assert ledger["acknowledged"] > 0
    assert set(ledger["episode_ids"]) == stored
    assert tools.verify_ok(tools.verify(Path(summary["run_dir"]) / "store"))


def test_multi_node_run_spreads_workers_and_delivers_every_trajectory_once(cluster, tmp_path):
    trainer = Trainer(_smoke(tmp_path, "env_steps=1500"), progress=False, ledger=True)
    th, out = _start(trainer)
    with _stopped_on_failure(trainer, th):
        _wait_for(lambda: getattr(trainer, "relabelers", None), what="actors")
        worker_nodes = {_node_of(a) for a in list(trainer.pool.actors.values())}
        learner_node = _node_of(trainer.learner)
        all_nodes = worker_nodes | {learner_node} | {_node_of(a) for a in trainer.relabelers}
        summary = _join(th, out)
        assert len(worker_nodes) == 2, "SPREAD puts the two rollout workers on two nodes"
        assert len(all_nodes) >= 2
        # learner.num_gpus=-1 (auto): the cluster has a GPU, so the learner asks for it
        assert learner_node == cluster.gpu_node.node_id
        assert summary["env_steps"] >= 1500
        _assert_exactly_once(summary)


def test_a_worker_node_removed_mid_run_loses_nothing(cluster, tmp_path):
    # the learner may restart anywhere (the GPU node is not the one removed, but it may hold
    # nothing else): CPU learner
    trainer = Trainer(_smoke(tmp_path, "env_steps=2000", "learner.num_gpus=0"), progress=False, ledger=True)
    th, out = _start(trainer)
    with _stopped_on_failure(trainer, th):
        _wait_for(lambda: getattr(trainer, "relabelers", None), what="actors")
        _wait_for(lambda: (trainer.run_dir / "checkpoints" / "learner.json").exists(), what="a checkpoint")
        by_id = {n.node_id: n for n in cluster.worker_nodes if n is not cluster.gpu_node}
        node_ids = [_node_of(a) for a in list(trainer.pool.actors.values())]
        # a (non-GPU) worker node, one holding a rollout worker when there is one
        victim = by_id[next((i for i in node_ids if i in by_id), next(iter(by_id)))]
        held_worker = victim.node_id in node_ids
        cluster.remove_node(victim, allow_graceful=False)
        try:
            summary = _join(th, out)
        finally:
            cluster.add_node(num_cpus=1)  # the next test gets its three nodes back
            cluster.wait_for_nodes()
        assert summary["env_steps"] >= 2000
        assert summary["workers_replaced"] >= int(held_worker)
        _assert_exactly_once(summary)


def test_a_learner_dead_before_its_checkpoint_is_recorded_resumes_from_that_checkpoint(cluster, tmp_path,
                                                                                     monkeypatch, caplog):
    # The learner writes a checkpoint and dies (SIGKILL) before the driver records it: the
    # restored learner holds every batch up to that checkpoint's cursors, newer than the last
    # ones the driver recorded, so the relabel workers must stream from that checkpoint's
    # (learner.json names them) or the batches in between reach the learner twice.
    import hindsight.trainer as trainer_module

    real = trainer_module.Trainer._checkpoint
    calls, recorded, died = [], [], []

    def checkpoint_then_die(self, *args, **kwargs):
        calls.append(1)
        cursors = {str(k): int(v) for k, v in args[2].items()}
        # from the third checkpoint on, the first whose cursors moved past the last recorded
        # ones: written, then the learner dies (with the cursors unmoved, which happened on a
        # loaded machine, the two checkpoints cannot be told apart and there is nothing to test)
        if died or len(calls) < 3 or cursors == recorded[-1]:
            out = real(self, *args, **kwargs)
            recorded.append(cursors)
            return out
        died.append(1)
        ray.get(self.learner.checkpoint.remote({
            "env_steps": args[0], "cursors": cursors,
            "relabeled": int(args[5] if len(args) > 5 else kwargs.get("relabeled", 0))}))
        os.kill(_pid_of(self.learner), signal.SIGKILL)
        return ray.get(self.learner.checkpoint.remote({}))  # raises: the actor died

    monkeypatch.setattr(trainer_module.Trainer, "_checkpoint", checkpoint_then_die)
    trainer = Trainer(_smoke(tmp_path, "env_steps=2500", "learner.checkpoint_every=40"), progress=False, ledger=True)
    th, out = _start(trainer)
    with _stopped_on_failure(trainer, th), caplog.at_level("WARNING", logger="hindsight.trainer"):
        summary = _join(th, out)
    assert len(calls) > 3 and died
    restarts = summary["learner_restarts"]
    assert len(restarts) == 1
    assert restarts[0]["restored_updates"] == restarts[0]["checkpoint_updates"] > 0
    assert "is newer than the last one recorded" in caplog.text
    _assert_exactly_once(summary)


def test_a_killed_learner_comes_back_from_its_checkpoint(cluster, tmp_path):
    trainer = Trainer(_smoke(tmp_path, "env_steps=2500", "learner.checkpoint_every=40"), progress=False, ledger=True)
    # (learner.num_gpus auto: it comes back on the GPU node)
    th, out = _start(trainer)
    with _stopped_on_failure(trainer, th):
        ckpt = trainer.run_dir / "checkpoints" / "learner.json"
        _wait_for(lambda: ckpt.exists(), what="a checkpoint")
        time.sleep(1.0)
        os.kill(_pid_of(trainer.learner), signal.SIGKILL)  # a real process death, not ray.kill
        summary = _join(th, out)
        assert summary["env_steps"] >= 2500
        restarts = summary["learner_restarts"]
        assert len(restarts) >= 1
        first = restarts[0]
        # updates continue from the checkpoint's count (not from 0, not from the lost count)
        assert first["restored_updates"] == first["checkpoint_updates"] > 0
        assert summary["updates"] > first["restored_updates"]
        assert summary["trajectories_refilled"] > 0  # the replay was refilled from the store
        _assert_exactly_once(summary)
