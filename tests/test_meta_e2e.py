"""Meta-RL end to end on real local Ray: PEARL with none / random / hipi / hfr on the tiny
meta family — rollout actors -> store (task ids, phases) -> meta relabel workers ->
per-task buffers in the learner -> weights back; relabel statistics and meta-test returns
in TensorBoard and summary.json; --resume; ``hindsight eval`` on the saved run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hindsight.config import load_config, uses_pearl
from hindsight.meta_trainer import MetaTrainer, collection_plan, evaluate_checkpoint
from relabel_service.store import tools
from tests.helpers_tb import tb_tags

pytestmark = [pytest.mark.ray]

FAMILY = "test_meta_goal"
BASE = [f"env.family={FAMILY}", "learner.num_gpus=0", "rollout.num_workers=1", "rollout.num_cpus=0.25",
        "relabel.num_workers=1", "store.num_shards=1", "meta.schedule.num_iterations=3",
        "meta.eval_every_iterations=2", "meta.checkpoint_every_iterations=1", "env_steps=100000"]


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    """One short run per strategy; the hfr run stops after 2 iterations and is resumed to 3."""
    logdir = tmp_path_factory.mktemp("meta_runs")
    out = {}
    for strategy in ("none", "random", "hipi", "hfr"):
        over = [*BASE, f"relabel.strategy={strategy}", f"logdir={logdir}", f"name={strategy}"]
        if strategy == "hfr":
            over.append("meta.schedule.num_iterations=2")
        cfg = load_config(None, over)
        assert uses_pearl(cfg)
        summary = MetaTrainer(cfg, progress=False).run()
        if strategy == "hfr":
            out["hfr_first"] = summary
            run_dir = Path(summary["run_dir"])
            cfg = load_config(str(run_dir / "config.yaml"), ["meta.schedule.num_iterations=3"])
            summary = MetaTrainer(cfg, run_dir=run_dir, resume=True, progress=False).run()
        out[strategy] = (Path(summary["run_dir"]), summary)
    return out


@pytest.mark.parametrize("strategy", ["none", "random", "hipi", "hfr"])
def test_pearl_run_completes_with_relabel_stats_and_meta_test(runs, strategy):
    run_dir, s = runs[strategy]
    fam_cfg = load_config(None, [*BASE, "relabel.strategy=none"])
    sched = fam_cfg.meta.schedule
    assert s["algorithm"] == "pearl" and s["strategy"] == strategy and s["iterations"] == 3
    # iteration 0: every training task's initial pool; then 2 iterations of sampled tasks
    per_itr = sched.num_tasks_sample * (sched.num_steps_prior + sched.num_steps_posterior)
    assert s["env_steps"] == 6 * sched.num_initial_steps + 2 * per_itr
    assert s["updates"] == 3 * sched.num_train_steps_per_itr
    assert s["policy_version"] == 3
    # every stored step reached the learner exactly once (relabeled rows replace originals)
    assert s["transitions_ingested"] == s["env_steps"]
    assert s["relabel"]["trajectories"] == s["trajectories_stored"] == s["episodes"]
    if strategy == "none":
        assert s["relabel"]["relabeled"] == 0
    else:
        assert 0 < s["relabel"]["relabeled"] < s["relabel"]["trajectories"]  # the 0.5 coin; initial pool never
    fe = s["final_eval"]
    assert fe["episodes"] == 3 and len(fe["returns"]) == 3 and np.isfinite(fe["return_mean"])
    assert fe["success_rate"] is not None
    tags = tb_tags(run_dir / "tb")
    want = {"meta_test/return", "meta_test/success_rate", "meta_test_task/return_00", "meta_test_task/return_02",
            "pearl/critic_loss", "pearl/kl", "relabel/fraction_relabeled", "train/return", "perf/iteration"}
    if strategy != "none":
        want.add("relabel/chosen_task")
    if strategy == "hfr":
        want |= {"relabel/log_z_mean", "relabel/utility_mean", "relabel/entropy"}
    assert want <= tags, want - tags


def test_store_records_carry_task_ids_and_phases(runs):
    run_dir, _ = runs["hfr"]
    from envs import get_family

    fam = get_family(FAMILY)
    trajs = tools.load_all(run_dir / "store")
    phases = {t.phase for t in trajs}
    assert phases == {"initial", "prior", "posterior"}
    for t in trajs:
        assert fam.train_task_index(t.task[None])[0] == t.task_id  # originals under their own task
    assert sorted({t.task_id for t in trajs if t.phase == "initial"}) == list(range(6))


def test_eval_of_saved_run_reproduces_the_final_meta_test(runs):
    run_dir, s = runs["hfr"]
    result = evaluate_checkpoint(run_dir)
    assert result["returns"] == s["final_eval"]["returns"]
    assert result["success_rate"] == s["final_eval"]["success_rate"]


def test_resume_continues_from_the_checkpoint(runs):
    first = runs["hfr_first"]
    run_dir, second = runs["hfr"]
    assert first["iterations"] == 2 and second["iterations"] == 3
    sched = load_config(str(run_dir / "config.yaml")).meta.schedule
    assert second["updates"] == first["updates"] + sched.num_train_steps_per_itr
    assert second["env_steps"] == first["env_steps"] + sched.num_tasks_sample * (sched.num_steps_prior + sched.num_steps_posterior)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["iteration"] == 3 and len(state["eval_history"]) >= 2
    # the first run's last iteration (2) was a scheduled meta-test: its end reuses it
    iterations = [e["iteration"] for e in state["eval_history"]]
    assert iterations == sorted(set(iterations)), iterations


def test_collection_plan_follows_the_schedule():
    sched = load_config(None, [*BASE, "relabel.strategy=none", "meta.schedule.num_extra_rl_steps_posterior=10"]).meta.schedule
    tasks, phases = collection_plan(sched, 0, 6, seed=0)
    assert tasks.tolist() == list(range(6)) and phases == [("initial", sched.num_initial_steps, False)]
    tasks, phases = collection_plan(sched, 5, 6, seed=0)
    assert len(tasks) == sched.num_tasks_sample and set(tasks.tolist()) <= set(range(6))
    assert phases == [("prior", sched.num_steps_prior, False), ("posterior", sched.num_steps_posterior, True),
                      ("extra_rl", 10, True)]
    assert collection_plan(sched, 5, 6, seed=0)[0].tolist() == tasks.tolist()  # resumable
