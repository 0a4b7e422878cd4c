"""Operating a run on real local Ray (2 CPUs, as the CI machine): placement at start, the
stall watchdog, `hindsight scale` through the control actor, rollout.autoscale."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
import ray

from hindsight.cli import main
from hindsight.config import CONFIG_DIR, load_config
from hindsight import placement
from hindsight.placement import PlacementError
from hindsight.trainer import Trainer

pytestmark = [pytest.mark.ray]
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _start(cfg) -> tuple[Trainer, dict, threading.Thread]:
    trainer = Trainer(cfg, progress=False)
    out: dict = {}

    def target() -> None:
        try:
            out.update(trainer.run())
        except BaseException as e:  # surfaced by the test
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return trainer, out, th


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


#: one short round of each kind of config: the multi-task pipeline and PEARL's schedule.
#: The learner runs eager: a compiling config (``learner.sac.compile``) would spend most of
#: its round compiling its own shapes cold, 15-30 s each on 2 cores; the compile inside a
#: learner actor is tested in tests/test_learner_speed.py and tests/test_compile_fallback.py.
QUICK = ["env_steps=1", "eval.episodes=1", "eval.every_steps=1000000000", "learner.sac.compile=false"]
QUICK_META = ["meta.schedule.num_iterations=1", "meta.schedule.num_initial_steps=1", "meta.schedule.num_steps_prior=1",
              "meta.schedule.num_extra_rl_steps_posterior=0", "meta.schedule.num_train_steps_per_itr=1",
              "meta.schedule.num_tasks_sample=1", "meta.schedule.num_exp_traj_eval=0",
              "meta.schedule.num_eval_trajectories=1"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_runs_on_two_cores_and_moves_data(ray_session, name, tmp_path, caplog):
    """Each config as shipped (its actor counts and CPU reservations) on a 2-CPU Ray, for
    one round of collection: stored, relabeled and ingested by the learner. A config that
    asks for more CPUs than the machine has is fitted by the documented rule and says so."""
    from hindsight.config import uses_pearl
    from hindsight.meta_trainer import MetaTrainer

    cfg = load_config(name, [f"logdir={tmp_path}"])
    meta = uses_pearl(cfg)
    cfg = load_config(name, [f"logdir={tmp_path}", *(QUICK_META if meta else QUICK)])
    with caplog.at_level(logging.WARNING, logger="hindsight.placement"):
        summary = (MetaTrainer if meta else Trainer)(cfg, progress=False).run()
    assert summary["trajectories_stored"] >= 1
    assert summary["transitions_ingested" if meta else "transitions_inserted"] > 0
    asks = placement.demand(placement.with_learner_cpus(cfg, [{"CPU": 2.0, "GPU": 0.0}]), 0.0)
    if placement.totals(asks)[0] > 2:  # the documented rule fitted it and said so
        assert any("scaled by" in r.getMessage() for r in caplog.records), caplog.text


def test_a_gpu_the_cluster_lacks_fails_within_seconds_and_leaves_no_run_dir(ray_session, tmp_path):
    cfg = load_config("smoke", [f"logdir={tmp_path}", "learner.num_gpus=1"])
    trainer = Trainer(cfg, progress=False)
    with pytest.raises(PlacementError, match=r"learner x 0.5 CPU \+ 1 GPU.*the cluster has 1 node with 2 CPUs and 0 GPUs"):
        trainer.run()
    assert not trainer.run_dir.exists()
    assert ray.is_initialized()  # the test's Ray session is left as it was


def _tb_text(tb_dir: Path, tag: str) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"tensors": 0})
    acc.Reload()
    if tag + "/text_summary" not in acc.Tags()["tensors"]:
        return []
    return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag + "/text_summary")]


def test_watchdog_names_actors_ray_cannot_place_then_scale_reports_the_pool(ray_session, tmp_path, caplog):
    """Another job holds 1.6 of the 2 CPUs, so the learner (0.5 CPU) waits for placement:
    the watchdog says so in the console and in TensorBoard. Freed, the run goes on, and
    `hindsight scale` reaches it through its control actor and reports what the pool did."""

    @ray.remote(num_cpus=1.6)
    class Hog:
        def ping(self) -> bool:
            return True

    hog = Hog.remote()
    ray.get(hog.ping.remote())
    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=2500", "watchdog_s=2"])
    with caplog.at_level(logging.WARNING, logger="hindsight.trainer"):
        trainer, out, th = _start(cfg)
        _wait(lambda: any("watchdog" in r.getMessage() for r in caplog.records) or "error" in out, 180, "a watchdog warning")
        ray.kill(hog)
        warning = next(r.getMessage() for r in caplog.records if "watchdog" in r.getMessage())
        assert "no data moved for" in warning
        assert "actors pending placement" in warning and "1 learner" in warning and "CPU" in warning
        _wait(lambda: getattr(trainer, "control", None) is not None and trainer.pool.size == 2, 120, "the run to start")
        rc = main(["scale", str(trainer.run_dir), "3"])
        th.join(timeout=300)
    assert not th.is_alive() and "error" not in out, out.get("error")
    assert rc == 0
    assert out["rollout_workers"] == 3
    assert out["watchdog_warnings"] >= 1
    texts = _tb_text(trainer.run_dir / "tb", "watchdog")
    assert texts and "pending placement" in texts[0]


def test_scale_from_another_process_reaches_the_run_by_name(ray_session, tmp_path):
    """`hindsight scale` in a separate process joins the cluster by address and finds the
    run's control actor by name, although the path it is given does not exist there."""
    import os
    import subprocess
    import sys

    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=100000", "relabel.strategy=none"])
    trainer, out, th = _start(cfg)
    try:
        _wait(lambda: getattr(trainer, "control", None) is not None or "error" in out, 180, "the control actor")
        elsewhere = tmp_path / "not-here" / trainer.run_dir.name
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run(
            [sys.executable, "-m", "hindsight.cli", "scale", str(elsewhere), "1",
             "--address", ray.get_runtime_context().gcs_address],
            capture_output=True, text=True, timeout=240, env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1].startswith("rollout pool: 2 -> 1 workers (removed 1"), proc.stdout
        assert trainer.pool.size == 1
    finally:
        trainer.stop.requested = "SIGTERM"  # the clean stop of cluster's StopSignals
        th.join(timeout=300)
    assert "error" not in out, out.get("error")
    assert out.get("interrupted") == "SIGTERM"


def _requested_bundles() -> list | None:
    """What the run last asked the Ray autoscaler for (v1 autoscaler: a GCS KV entry)."""
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return None if raw is None else json.loads(raw)


@pytest.mark.parametrize(
    "overrides, grows",
    [
        # starved: one update per 1024 inserted steps, the learner waits on nearly every call; a
        # budget and period that give several periods even on a fast, quiet machine
        (["rollout.num_workers=1", "rollout.envs_per_worker=1", "learner.samples_per_insert=0.25", "env_steps=12000",
          "rollout.autoscale_every_s=0.5"], True),
        # saturated: two updates per env step, collection mostly held by the rate limiter
        (["rollout.num_workers=3", "learner.samples_per_insert=256", "learner.min_replay=100", "env_steps=1200"], False),
    ],
    ids=["starved-learner-grows-to-max", "saturated-learner-shrinks-to-min"],
)
def test_autoscale_follows_the_learner(ray_session, tmp_path, overrides, grows):
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    cfg = load_config("smoke", [f"logdir={tmp_path}", "rollout.autoscale=[1, 3]", "rollout.autoscale_every_s=1",
                                "relabel.strategy=none", *overrides])
    trainer, out, th = _start(cfg)
    others = 1 + cfg.store.num_shards + cfg.relabel.num_workers + 1  # learner, shards, relabeler, eval actor
    asked_workers = set()
    while th.is_alive():
        bundles = None if is_autoscaler_v2() else _requested_bundles()
        if bundles:
            asked_workers.add(len(bundles) - others)
        time.sleep(0.2)
    assert "error" not in out, out.get("error")
    summary = out
    moves = [(h["from"], h["to"]) for h in summary["autoscale"]]
    if grows:
        assert moves[:2] == [(1, 2), (2, 3)], summary["autoscale"]
        assert all("waiting for data" in h["why"] for h in summary["autoscale"][:2])
    else:
        assert moves[:2] == [(3, 2), (2, 1)], summary["autoscale"]
        assert all("rate limiter" in h["why"] for h in summary["autoscale"][:2])
    if not is_autoscaler_v2():
        # every change asked the autoscaler for the whole run's bundles; the end withdrew it
        assert {to for _, to in moves[:2]} <= asked_workers, (asked_workers, moves)
        assert _requested_bundles() == []
