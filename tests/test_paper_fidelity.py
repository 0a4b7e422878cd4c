"""Fidelity to the papers on real local Ray: HIPI's fixed batch, evaluation on the learner's
axis with its latest weights, the drain phase, and the experiment runner.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import ray

from helpers_store import make_traj
from hindsight.config import load_config
from hindsight.trainer import Trainer
from relabel_service.store.actor import start_store
from relabel_service.strategies import StrategyConfig
from relabel_service.worker import RelabelWorker

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def ray_session():
    # address="local": always a fresh local instance, never another session's cluster
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


# ---- trajectory-level HIPI over a fixed batch ---------------------------------------------------
B = 4


def _hipi_worker(store, cursors=None) -> RelabelWorker:
    return RelabelWorker(
        worker_id=0, family="test_goal", strategy="hipi", strategy_cfg=StrategyConfig(hipi_batch=B),
        store=store, shard_ids=[0, 1], discount=0.9, seed=0, batch_trajectories=16, cursors=cursors,
    )


def test_hipi_batch_defaults_to_32():
    assert StrategyConfig().hipi_batch == 32
    with pytest.raises(ValueError, match="hipi_batch"):
        StrategyConfig(hipi_batch=0)


def test_hipi_relabels_fixed_batches_whatever_the_arrival(ray_session, tmp_path):
    store = start_store(str(tmp_path / "store"), 2, name_prefix=f"t-{uuid.uuid4().hex[:8]}")
    rng = np.random.default_rng(0)
    worker = _hipi_worker(store)
    try:
        # one at a time: nothing is relabeled until B have arrived, then exactly those B
        first = [make_traj(rng, i, T=5) for i in range(B)]
        for n, traj in enumerate(first, start=1):
            store.append(traj)
            batch, stats = worker.relabel(wait_s=0.0)
            if n < B:
                assert batch is None and stats["trajectories"] == 0 and stats["buffered"] == n
                assert f"{B - n} more" in stats["waiting_for"]
        assert stats["trajectories"] == B and stats["strategy_stats"]["num_candidates"] == B
        own = {tuple(t.task) for t in first}
        assert {tuple(z) for z in stats["strategy_stats"]["chosen_tasks"]} <= own
        assert len(batch) == 2 * B * 5  # originals + one copy each

        # ten at once: two batches of B, then 2 wait; the reported cursors are those of the
        # last delivered batch, so a replacement worker re-reads the 2 held ones
        more = [make_traj(rng, 100 + i, T=5) for i in range(10)]
        store.append_many(more)
        sizes = [worker.relabel(wait_s=0.0)[1]["trajectories"] for _ in range(3)]
        assert sizes == [B, B, 0]
        _, waiting = worker.relabel(wait_s=0.0)
        assert waiting["buffered"] == 2
        held = {tuple(t.task) for t in worker.buffer}
        replacement = _hipi_worker(store, cursors=waiting["cursors"])
        _, re_read = replacement.relabel(wait_s=0.0, flush=True)
        assert re_read["flushed"] and re_read["trajectories"] == 2
        assert {tuple(z) for z in re_read["strategy_stats"]["chosen_tasks"]} <= held

        # the end of a run: flush relabels the last < B as one smaller batch, then nothing waits
        batch, stats = worker.relabel(wait_s=0.0, flush=True)
        assert stats["flushed"] and stats["trajectories"] == 2 and stats["strategy_stats"]["num_candidates"] == 2
        batch, stats = worker.relabel(wait_s=0.0, flush=True)
        assert batch is None and stats["buffered"] == 0
    finally:
        store.shutdown()


# ---- evaluation on the learner's axis, with its latest weights; the drain phase ----------------
@pytest.fixture(scope="module")
def axis_run(ray_session, tmp_path_factory):
    # The learner trains nothing before 1200 transitions, while collection is free to run
    # ahead; publish_every is never reached, so only the publications made for the evals
    # move the weights. hipi with B = 12 also leaves a remainder to flush at the end
    # (200 trajectories of 10 steps).
    logdir = tmp_path_factory.mktemp("runs")
    cfg = load_config("smoke", [
        f"logdir={logdir}", "env_steps=2000", "eval.every_steps=400", "learner.min_replay=1200",
        "learner.publish_every=1000000", "relabel.strategy=hipi", "relabel.strategy_cfg.hipi_batch=12",
    ])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summary = Trainer(cfg, progress=True).run()
    return Path(summary["run_dir"]), summary, err.getvalue()


def test_evals_are_on_the_learners_axis(axis_run):
    run_dir, summary, _ = axis_run
    history = summary["eval_history"]
    import yaml

    learner = yaml.safe_load((run_dir / "config.yaml").read_text())["learner"]
    per_update = learner["sac"]["batch_size"] / learner["samples_per_insert"]
    assert len(history) >= 2
    for entry in history:
        # no eval before the learner has trained on min_replay env steps' transitions
        assert entry["env_steps"] >= 1200 and entry["updates"] > 0, entry
        assert entry["env_steps"] <= entry["collected_env_steps"], entry
        # the env steps the updates stand for at the exact ratio, not every env step in the
        # replay when the first update ran
        assert entry["env_steps"] <= 1200 + entry["updates"] * per_update, entry
    scheduled = [e["env_steps"] for e in history[:-1]]
    assert scheduled == sorted(scheduled)


def test_final_eval_uses_the_learners_latest_weights(axis_run):
    run_dir, summary, _ = axis_run
    meta = json.loads((run_dir / "checkpoints" / "learner.json").read_text())
    final = summary["eval_history"][-1]
    assert summary["policy_version"] == meta["version"] >= 1
    assert final["updates"] == summary["updates"] == meta["updates"]
    assert final["env_steps"] <= summary["env_steps"]


def test_hipi_flush_delivers_every_trajectory(axis_run):
    _, summary, _ = axis_run
    # one relabel worker: batches of 12, and the remainder in one flushed batch at the end
    assert summary["relabel_flushed_trajectories"] == summary["trajectories_stored"] % 12
    # every stored step reached the learner as an original plus one hipi copy
    assert summary["transitions_inserted"] == 2 * summary["env_steps"]


def test_the_learner_trails_collection_by_at_most_max_lag_rounds(ray_session, tmp_path):
    """A learner-bound run (8 updates per env step on the smoke family): with
    ``learner.max_lag_rounds`` collection waits whenever the learner is more than that many
    rounds of the pool behind, so what is left at the end (the drain) is at most those
    rounds plus what the workers had in flight, far less than the relative band alone lets
    it owe (``spi_tolerance``, a quarter of all updates: 6,080 of 22,400 in a 3k-step run
    with ``max_lag_rounds=0``, against 1,280 with 1)."""
    rounds = 1.0
    cfg = load_config("smoke", [
        f"logdir={tmp_path}", "env_steps=2000", "eval.every_steps=100000", "relabel.strategy=none",
        "learner.samples_per_insert=1024", f"learner.max_lag_rounds={rounds}",
    ])
    summary = Trainer(cfg, progress=False).run()
    per_step = cfg.learner.samples_per_insert / cfg.learner.sac.batch_size  # 8 updates per env step
    round_steps = cfg.rollout.num_workers * cfg.rollout.envs_per_worker * 10  # test_goal's horizon 10
    bound = (rounds + 2) * round_steps * per_step + cfg.learner.updates_per_call  # + rounds in flight
    assert bound < cfg.learner.spi_tolerance * summary["updates"]  # the cap is the tighter bound here
    assert summary["drain"]["updates"] <= bound, summary["drain"]


def test_progress_shows_the_drain(axis_run):
    _, summary, err = axis_run
    assert "draining learner" in err and "updates left" in err
    assert summary["drain"]["updates"] >= 0 and summary["drain"]["seconds"] > 0


# ---- the experiment runner resumes a half-finished grid -----------------------------------------
def _tiny_grid(tmp_path: Path, env_steps: int, eval_every: int) -> Path:
    """A two-cell grid (test_goal, strategy none, seeds 0 and 1) on the smoke config."""
    import yaml

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny", "config": "smoke",
        "set": [f"env_steps={env_steps}", f"eval.every_steps={eval_every}", "learner.min_replay=100",
                "rollout.random_steps=100"],
        "families": ["test_goal"], "strategies": ["none"], "seeds": [0, 1],
    }))
    return spec


def test_experiment_resumes_without_rerunning_finished_cells(ray_session, tmp_path):
    from hindsight.experiment import run_experiment

    spec = _tiny_grid(tmp_path, env_steps=400, eval_every=200)
    out = tmp_path / "out"
    first = run_experiment(spec, out=out, max_cells=1, progress=False)  # half the grid
    assert len(first["cells"]) == 1 and first["pending"] == ["test_goal/none/seed1"]
    cell0 = out / "runs" / "test_goal" / "none" / "seed0"

    def snapshot(d: Path) -> dict:
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.rglob("*")) if p.is_file()}

    before = snapshot(cell0)
    assert cell0 / "summary.json" in before
    # an interrupted cell (a directory without summary.json) is started over
    cell1 = out / "runs" / "test_goal" / "none" / "seed1"
    cell1.mkdir(parents=True)
    (cell1 / "left_over").write_text("interrupted")
    second = run_experiment(spec, out=out, progress=False)
    assert snapshot(cell0) == before  # the finished cell was not rerun, not a byte touched
    assert (cell1 / "summary.json").exists() and not (cell1 / "left_over").exists()
    assert len(second["cells"]) == 2 and not second["pending"]
    assert all(c["eval_history"] for c in second["cells"])
    md = (out / "results.md").read_text()
    assert "| none | 2/2 |" in md and "curves-test_goal.png" in md
    assert (out / "curves-test_goal.png").stat().st_size > 0
    after = snapshot(out / "runs")
    run_experiment(spec, out=out, progress=False)  # all finished: nothing runs
    assert snapshot(out / "runs") == after


def test_a_signal_stops_the_whole_grid_not_just_its_cell(ray_session, tmp_path):
    """Ctrl-C during a cell stops that cell cleanly and the grid with it: the next cell never
    starts (before, each SIGINT only ended the cell in progress and the grid went on)."""
    import os
    import signal
    import threading
    import time

    from hindsight.experiment import run_experiment

    spec = _tiny_grid(tmp_path, env_steps=200_000, eval_every=100_000)
    out = tmp_path / "out"
    cell0 = out / "runs" / "test_goal" / "none" / "seed0"
    cell1 = out / "runs" / "test_goal" / "none" / "seed1"

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 120
        while not (cell0 / "store").exists() and time.monotonic() < deadline:  # the trainer's handler is on
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt_once_running, daemon=True)
    t.start()
    result = run_experiment(spec, out=out, progress=False)
    t.join()
    assert result["interrupted"] == "SIGINT"
    assert not (cell0 / "summary.json").exists()  # unfinished: it reruns on resume
    assert not cell1.exists()  # the grid stopped
    assert not result["cells"] and len(result["pending"]) == 2
