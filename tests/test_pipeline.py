"""End-to-end on real local Ray: workers -> store -> relabeler -> learner -> weights back."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from hindsight.config import load_config
from hindsight.trainer import Trainer, write_control
from relabel_service.store import tools
from tests.helpers_tb import tb_tags

pytestmark = [pytest.mark.ray]

REQUIRED_TAGS = {
    "train/return",
    "eval/return",
    "eval_task/return_00",
    "sac/critic_loss",
    "sac/actor_loss",
    "sac/alpha",
    "sac/q_mean",
    "relabel/fraction_relabeled",
    "relabel/air_percentile_p50",
    "relabel/chosen_task",
    "store/trajectories",
    "store/ingest_traj_per_s",
    "perf/env_steps_per_s",
    "perf/updates_per_s",
    "perf/policy_lag",
    "perf/workers_alive",
}


@pytest.fixture(scope="module")
def smoke_run(ray_session, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    cfg = load_config("smoke", [f"logdir={logdir}", "env_steps=2500"])
    summary = Trainer(cfg, progress=False).run()
    return Path(summary["run_dir"]), summary


def test_data_flows_end_to_end(smoke_run):
    run_dir, summary = smoke_run
    assert summary["env_steps"] >= 2500
    assert summary["trajectories_stored"] >= 2500 // 10
    assert summary["updates"] > 0
    # the relabeler fed the learner: AIR stores the original and one relabeled copy
    assert summary["transitions_inserted"] > summary["env_steps"]
    # new weights went back to the workers: stored trajectories carry rising versions
    versions = [t.policy_version for t in tools.load_all(run_dir / "store")]
    assert max(versions) > 0 and -1 in versions
    assert summary["policy_version"] > 0


def test_summary_is_complete(smoke_run):
    run_dir, _ = smoke_run
    s = json.loads((run_dir / "summary.json").read_text())
    for key in ("env_steps", "updates", "wall_time_s", "env_steps_per_s", "updates_per_s", "final_eval", "eval_history"):
        assert key in s, key
    assert len(s["final_eval"]["returns"]) == 8
    assert np.isfinite(s["final_eval"]["return_mean"])
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "checkpoints" / "learner.pt").exists()


def test_tensorboard_has_thetb_tags(smoke_run):
    run_dir, _ = smoke_run
    missing = REQUIRED_TAGS - tb_tags(run_dir / "tb")
    assert not missing, f"missing TensorBoard tags: {sorted(missing)}"


def test_store_verifies_clean(smoke_run):
    run_dir, _ = smoke_run
    assert tools.verify_ok(tools.verify(run_dir / "store"))


def test_resume_continues_the_run(smoke_run):
    run_dir, summary = smoke_run
    cfg = load_config(str(run_dir / "config.yaml"), ["env_steps=3500"])
    resumed = Trainer(cfg, run_dir=run_dir, resume=True, progress=False).run()
    assert resumed["env_steps"] >= 3500
    assert resumed["updates"] >= summary["updates"]
    assert resumed["trajectories_stored"] > summary["trajectories_stored"]


def _priorities(actor) -> set[str]:
    from actors.priority import thread_priorities

    return {p for _, p in ray.get(actor.__ray_call__.remote(lambda self: thread_priorities()))}


def test_killed_workers_are_replaced_and_pool_resizes(ray_session, tmp_path):
    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=3000", "relabel.strategy=none"])
    trainer = Trainer(cfg, progress=False)
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(trainer.run()))
    th.start()
    deadline = time.time() + 60
    while not getattr(trainer, "pool", None) or not trainer.pool.actors:
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(2.0)
    if sys.platform.startswith("linux"):  # cpu_priority "idle" (the default): all but the learner
        background = [*trainer.pool.actors.values(), *trainer.relabelers, *trainer.store.shards, trainer.eval_actor]
        background += [trainer.control] if trainer.control is not None else []
        assert [_priorities(a) for a in background] == [{"idle"}] * len(background)
        assert "idle" not in _priorities(trainer.learner)
    ray.kill(trainer.pool.actors[0], no_restart=True)
    ray.kill(trainer.relabelers[0], no_restart=True)
    write_control(trainer.run_dir, 3)
    th.join(timeout=240)
    assert not th.is_alive()
    assert out["env_steps"] >= 3000
    assert out["workers_replaced"] >= 1
    assert out["relabel_workers_replaced"] >= 1
    assert out["rollout_workers"] == 3
    # every stored trajectory reached the learner despite the dead relabeler
    assert out["transitions_inserted"] >= out["env_steps"]
