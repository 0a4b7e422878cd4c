"""PEARL's collection and meta-test in one worker, and the meta learner, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from actors.rollout import MetaRolloutWorker
from learner.pearl.config import pearl_config_for, schedule_for
from learner.pearl.learner import MetaLearner
from learner.pearl.update import init_state, policy_weights
from relabel_service.strategies.meta import MetaDecision, meta_transitions

FAMILY = "test_meta_goal"
CFG = pearl_config_for(FAMILY)
SCHED = schedule_for(FAMILY)


def weights(seed: int = 0):
    state = init_state(2, 2, 6, CFG, SCHED, "cpu", seed)
    return (1, policy_weights(state))


def test_collect_task_runs_the_phases_in_order_with_task_ids():
    w = MetaRolloutWorker(0, FAMILY, CFG, seed=0)
    trajs, stats = w.collect_task(4, [("prior", 15, False), ("posterior", 25, True), ("extra_rl", 5, True)], weights())
    phases = [t.phase for t in trajs]
    assert phases == sorted(phases, key=["prior", "posterior", "extra_rl"].index)  # phases in order
    assert stats["phase_steps"]["prior"] >= 15 and stats["phase_steps"]["posterior"] >= 25
    assert stats["phase_steps"]["extra_rl"] >= 5
    # whole episodes (H = 10): 2 prior, 3 posterior, 1 extra-RL trajectory
    assert phases.count("prior") == 2 and phases.count("posterior") == 3 and phases.count("extra_rl") == 1
    train = w.family.train_tasks()
    for t in trajs:
        assert t.task_id == 4 and np.array_equal(t.task, train[4]) and t.policy_version == 1
        np.testing.assert_allclose(t.rewards, w.family.rewards_for(t.steps(), np.repeat(t.task[None], t.length, 0)))
    assert len({t.episode_id for t in trajs}) == len(trajs)
    with pytest.raises(ValueError, match="task_id 6"):
        w.collect_task(6, [("prior", 1, False)])


def test_meta_test_is_seeded_and_reports_the_last_trajectory():
    a = MetaRolloutWorker(0, FAMILY, CFG, seed=0)
    b = MetaRolloutWorker(1, FAMILY, CFG, seed=5)
    tasks = a.family.test_tasks()
    ra = a.evaluate_meta(weights(), tasks, seed=3, num_exploration=2, num_trajectories=3)
    rb = b.evaluate_meta(weights(), tasks, seed=3, num_exploration=2, num_trajectories=3)
    assert ra["returns"] == rb["returns"] and len(ra["returns"]) == 3
    assert ra["success_rate"] is not None and len(ra["success"]) == 3
    # with one trajectory the last one IS the prior one
    one = a.evaluate_meta(weights(), tasks, seed=3, num_exploration=0, num_trajectories=1)
    assert np.mean(one["returns"]) == pytest.approx(one["prior_return_mean"])


def test_non_meta_family_is_refused():
    with pytest.raises(ValueError, match="not a meta family"):
        MetaRolloutWorker(0, "test_goal", CFG, seed=0)


def test_meta_learner_routes_rows_to_task_buffers_and_resumes(tmp_path):
    w = MetaRolloutWorker(0, FAMILY, CFG, seed=0)
    trajs, _ = w.collect_task(2, [("prior", 20, False), ("extra_rl", 10, True)], weights())
    fam = w.family
    decision = MetaDecision(target=np.array([2, 5, 2]), relabeled=np.array([False, True, False]))
    rows = meta_transitions(fam, trajs, fam.train_tasks(), decision)
    learner = MetaLearner(2, 2, 6, CFG, SCHED, device="cpu", seed=0, checkpoint_dir=str(tmp_path))
    learner.ingest(rows)
    c = learner.counters()
    assert c["rl_sizes"] == [0, 0, 20, 0, 0, 10]  # prior, extra-RL (task 2); the relabeled prior trajectory (task 5)
    assert c["enc_sizes"] == [0, 0, 10, 0, 0, 10]  # the extra-RL trajectory never enters an encoder buffer
    report = learner.train(3)
    assert report["updates_done"] == 3 and np.isfinite(report["metrics"]["critic_loss"])
    learner.clear_encoder([2])
    assert learner.counters()["enc_sizes"][2] == 0
    learner.publish()
    learner.checkpoint({"iteration": 1})
    again = MetaLearner(2, 2, 6, CFG, SCHED, device="cpu", seed=0, checkpoint_dir=str(tmp_path), resume=True)
    assert again.counters()["rl_sizes"] == learner.counters()["rl_sizes"]
    assert again.weights()[0] == 1 and again.state.step == 3
    bad = rows._replace(reward=np.full_like(rows.reward, np.nan))
    with pytest.raises(ValueError, match="reward"):
        learner.ingest(bad)


@pytest.mark.slow
def test_pearl_learns_on_the_tiny_meta_family(monkeypatch):
    """CPU learning smoke test, in process (no Ray, no relabeling): 30 PEARL iterations of
    the tiny family's schedule (2 tasks x (20 prior + 20 posterior steps), 50 updates) lift
    the held-out meta-test return well above the untrained policy's (about -8: a policy
    that does not move ends ~0.8 from every goal for 10 steps). Seeded; one torch thread."""
    import torch

    from relabel_service.strategies.meta import MetaRequest, meta_none

    import uuid

    torch.set_num_threads(1)
    # a worker's random streams mix in its incarnation id (a uuid4, so a restarted worker
    # does not replay its predecessor's): fixed here, so every run collects the same data
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=0x5EED))
    worker = MetaRolloutWorker(0, FAMILY, CFG, seed=0)
    fam = worker.family
    train, test = fam.train_tasks(), fam.test_tasks()
    learner = MetaLearner(2, 2, 6, CFG, SCHED, device="cpu", seed=0)
    rng = np.random.default_rng(0)

    def ingest(trajs):
        learner.ingest(meta_transitions(fam, trajs, train, meta_none(MetaRequest(fam, trajs, train), rng)))

    for j in range(len(train)):
        ingest(worker.collect_task(j, [("initial", 40, False)], learner.weights())[0])
    before = worker.evaluate_meta(learner.weights(), test, seed=0)["return_mean"]
    for _ in range(30):
        tasks = rng.integers(len(train), size=2)
        learner.clear_encoder(np.unique(tasks))
        for t in tasks:
            ingest(worker.collect_task(int(t), [("prior", 20, False), ("posterior", 20, True)], learner.weights())[0])
        learner.train(50)
        learner.publish()
    after = worker.evaluate_meta(learner.weights(), test, seed=0)["return_mean"]
    assert before < -7.0
    assert after > before + 1.5, (before, after)
