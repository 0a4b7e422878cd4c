"""HIPI-BC (learner/bc.py, hindsight/bc.py): the relabeled task distribution of HIPI Eq. 7 on
a hand-built three-trajectory dataset, with and without the partition function under a
reward bias; the BC loss as the negative log-likelihood of the stored actions under the
relabeled tasks; HIPI-BC beating task-agnostic BC on the tiny family's demonstrations; the
collect -> store -> bc commands end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from envs import get_family
from envs.core import StepBatch
from envs.discrete import DiscreteTaskFamily
from hindsight.bc import run_bc
from hindsight.cli import main
from learner.bc import (
    BCConfig, bc_loss, bc_net_config, relabel_trajectories, step_arrays, task_log_posterior, train_bc,
)
from learner.sac.networks import Actor
from relabel_service.core import Trajectory
from relabel_service.store.segments import STORE_META, shard_dir
from relabel_service.store.shard import Shard
from relabel_service.store.tools import load_all, verify

# Three one-step trajectories of test_goal (r = -||p' - g||) ending at p_i, and three tasks
# g_j = p_j: task 0 is the only one with x > 0.5, so a half-space bias hits it alone.
ENDS = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
S2 = math.sqrt(2.0)
# R_ij = -||p_i - g_j||, worked out by hand
R_HAND = np.array([[0.0, -1.0, -S2], [-1.0, 0.0, -1.0], [-S2, -1.0, 0.0]])


def _q_hand(R: np.ndarray, partition: bool) -> np.ndarray:
    """HIPI Eq. 7 written out: q(j|i) = exp(R_ij - log Z_j) / sum_k exp(R_ik - log Z_k),
    log Z_j = log sum_i exp(R_ij)."""
    out = np.zeros((3, 3))
    for i in range(3):
        w = [math.exp(R[i, j] - (math.log(sum(math.exp(R[m, j]) for m in range(3))) if partition else 0.0))
             for j in range(3)]
        out[i] = np.array(w) / sum(w)
    return out


def _traj(fam_name: str, i: int, obs: np.ndarray, actions: np.ndarray, task: np.ndarray) -> Trajectory:
    T = len(actions)
    return Trajectory(f"t{i}", 0, 0, fam_name, np.asarray(task, float), np.asarray(obs, float),
                      np.asarray(actions, float), np.zeros(T), np.zeros(T, bool), True, np.zeros((T, 0)), 0.0)


def _three(fam_name: str = "test_goal") -> list[Trajectory]:
    # one step from the origin to p_i with action 5 p_i (clipped to the box edge); the stored
    # task (the opposite corner) must not matter
    return [_traj(fam_name, i, np.stack([np.zeros(2), ENDS[i]]), (ENDS[i] * 0.9)[None], np.array([-1.0, -1.0]))
            for i in range(3)]


@pytest.mark.parametrize("partition", [True, False], ids=["with-logZ", "without-logZ"])
def test_posterior_equals_hipi_eq7_by_hand(partition):
    fam = get_family("test_goal")
    log_q = task_log_posterior(fam, _three(), ENDS, partition=partition)
    np.testing.assert_allclose(np.exp(log_q), _q_hand(R_HAND, partition), rtol=1e-12)
    # by hand, row 0 with log Z: Z_0 = 1 + e^-1 + e^-sqrt2, Z_1 = 1 + 2 e^-1, Z_2 = Z_0
    z0, z1 = 1 + math.exp(-1) + math.exp(-S2), 1 + 2 * math.exp(-1)
    if partition:
        w = np.array([1 / z0, math.exp(-1) / z1, math.exp(-S2) / z0])
        np.testing.assert_allclose(np.exp(log_q[0]), w / w.sum(), rtol=1e-12)


def test_bias_leaves_the_partition_relabeling_unchanged_and_skews_the_ablation():
    fam = get_family("test_goal")
    biased = get_family("test_goal", reward_bias=3.0, bias_dim=0, bias_threshold=0.5)
    assert biased.bias_mask(ENDS).tolist() == [True, False, False]
    R_b = R_HAND + np.array([3.0, 0.0, 0.0])  # a one-step return gets b once
    with_z = np.exp(task_log_posterior(biased, _three(), ENDS, partition=True))
    without = np.exp(task_log_posterior(biased, _three(), ENDS, partition=False))
    np.testing.assert_allclose(with_z, _q_hand(R_HAND, True), rtol=1e-12)  # b cancels in R - log Z
    np.testing.assert_allclose(without, _q_hand(R_b, False), rtol=1e-12)
    plain = np.exp(task_log_posterior(fam, _three(), ENDS, partition=False))
    assert (without[:, 0] > plain[:, 0] + 0.3).all()  # the data goes to the biased task
    # trajectories 1 and 2 ended at the OTHER goals: with log Z a quarter or less of their
    # mass goes to task 0, without it more than three quarters
    assert with_z[1:, 0].max() < 0.25 and without[1:, 0].min() > 0.75


def test_sampled_tasks_follow_the_posterior():
    # the three trajectories repeated 1000 times: log Z_j gains log 1000 for every j, so q is
    # unchanged; one batch holds them all
    fam = DiscreteTaskFamily(get_family("test_goal"), ENDS)
    trajs = [_traj(fam.name, 3 * k + i, t.obs, t.actions, np.eye(3)[2]) for k in range(1000) for i, t in enumerate(_three())]
    out = relabel_trajectories(fam, trajs, BCConfig(candidates="eval", relabel_batch=3000), np.random.default_rng(0))
    picks = fam.index_of(out.tasks).reshape(1000, 3)
    freq = np.stack([np.bincount(picks[:, i], minlength=3) / 1000 for i in range(3)])
    np.testing.assert_allclose(freq, _q_hand(R_HAND, True), atol=0.05)


@pytest.mark.parametrize("relabel", ["none", "random"])
def test_baselines_ignore_the_data(relabel):
    fam = get_family("test_goal")
    out = relabel_trajectories(fam, _three(), BCConfig(relabel=relabel), np.random.default_rng(0))
    if relabel == "none":
        np.testing.assert_array_equal(out.tasks, 0.0)
    else:
        assert out.tasks.shape == (3, 2) and np.abs(out.tasks).max() <= 1.0


def test_bc_loss_is_the_nll_of_stored_actions_under_the_relabeled_task():
    fam = get_family("test_goal")
    rng = np.random.default_rng(1)
    trajs = _demos(fam, 6, rng)
    relabeled = relabel_trajectories(fam, trajs, BCConfig(), rng)
    obs, act, task = step_arrays(trajs, relabeled.tasks)
    np.testing.assert_allclose(task[: trajs[0].length], np.repeat(relabeled.tasks[:1], trajs[0].length, 0), rtol=1e-6)
    actor = Actor(2, 2, 2, bc_net_config(fam, BCConfig()), seed=3)
    o, z, a = (torch.as_tensor(x) for x in (obs, task, act))
    mean, log_std = actor(o, z)
    u = torch.atanh(a.clamp(-1 + 1e-6, 1 - 1e-6))
    # log pi(a) = log N(u; mean, std) - sum log(1 - tanh(u)^2)   (change of variables a = tanh u)
    nll = -(torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1)
            - torch.log(1 - torch.tanh(u) ** 2).sum(-1)).mean()
    torch.testing.assert_close(bc_loss(actor, o, z, a), nll, rtol=1e-4, atol=1e-4)


def test_train_bc_loss_uses_the_relabeled_tasks_and_exported_weights_act_on_raw_obs():
    fam = get_family("test_goal")
    trajs = _demos(fam, 20, np.random.default_rng(2))
    # lr ~ 0: the exported network is the one the (single) epoch's loss was measured with
    res = train_bc(fam, trajs, BCConfig(epochs=1, lr=1e-12, hidden_sizes=(32, 32)))
    actor = Actor(2, 2, 2, res.net_cfg).requires_grad_(False)
    actor.load_state_dict({k: torch.as_tensor(v) for k, v in res.weights.items()})
    obs, act, task = step_arrays(trajs, res.relabeled.tasks)
    loss = float(bc_loss(actor, torch.as_tensor(obs), torch.as_tensor(task), torch.as_tensor(act)))
    assert loss == pytest.approx(res.history[0]["loss"], rel=1e-4)
    other = step_arrays(trajs, np.roll(res.relabeled.tasks, 1, axis=0))[2]
    assert float(bc_loss(actor, torch.as_tensor(obs), torch.as_tensor(other), torch.as_tensor(act))) != pytest.approx(loss, rel=1e-6)


# ---- HIPI-BC vs task-agnostic BC on the tiny family --------------------------------------------
def _demos(fam, n: int, rng: np.random.Generator) -> list[Trajectory]:
    """A scripted goal reacher on test_goal: a = clip(5 (g - p) + N(0, 0.3^2)) (p moves a/5)."""
    out = []
    for i, g in enumerate(fam.sample_tasks(rng, n)):
        env = fam.make_env(g, seed=i)
        p, _ = env.reset(seed=i)
        obs, acts, rews = [p], [], []
        for _ in range(fam.horizon):
            a = np.clip(5.0 * (g - p) + rng.normal(0, 0.3, 2), -0.999, 0.999)
            p, r, te, tr, _ = env.step(a)
            obs.append(p), acts.append(a), rews.append(r)
            if te or tr:
                break
        T = len(acts)
        out.append(Trajectory(f"d{i}", 0, 0, fam.name, g, np.array(obs), np.array(acts), np.array(rews),
                              np.zeros(T, bool), True, np.zeros((T, 0)), 0.0))
    return out


def _write_store(root: Path, trajs: list[Trajectory]) -> Path:
    root.mkdir(parents=True)
    (root / STORE_META).write_text(json.dumps({"num_shards": 1, "format": 1}) + "\n")
    with Shard(shard_dir(root, 0), 0, fsync="never", background_sync=False) as shard:
        shard.append_many(trajs)
        shard.sync()
    return root


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    fam = get_family("test_goal")
    return _write_store(tmp_path_factory.mktemp("demos") / "store", _demos(fam, 300, np.random.default_rng(0)))


def test_hipi_bc_beats_task_agnostic_bc(demo_store, tmp_path):
    """The stated margin: over 16 seeded evaluation episodes (test_goal's 8 eval goals, twice),
    HIPI-BC's mean return exceeds task-agnostic BC's by at least 1.5 (returns are sums of
    -distance over 10 steps; staying near the centre scores about -7.5, the scripted demos
    about -3)."""
    common = dict(epochs=15, hidden_sizes=(64, 64), num_candidates=100)
    res = {}
    for relabel in ("none", "hipi"):
        s = run_bc(demo_store, BCConfig(relabel=relabel, **common), out_dir=tmp_path / relabel, eval_episodes=16)
        res[relabel] = s["final_eval"]["return_mean"]
    assert res["hipi"] > res["none"] + 1.5, res
    assert (tmp_path / "hipi" / "bc.pt").exists() and any((tmp_path / "hipi" / "tb").iterdir())


def test_bc_command_reads_a_store_without_task_labels(demo_store, tmp_path):
    # the same trajectories with every stored task replaced: HIPI-BC must not notice
    wrong = [Trajectory(t.episode_id, t.worker_id, t.policy_version, t.family, np.zeros(2), t.obs, t.actions,
                        t.rewards, t.terminated, t.truncated, t.reward_inputs, t.created_at) for t in load_all(demo_store)]
    store2 = _write_store(tmp_path / "zeroed" / "store", wrong[:60])
    common = ["--relabel", "hipi", "--epochs", "2", "--eval-episodes", "4"]
    assert main(["bc", "--store", str(demo_store), "--out", str(tmp_path / "a"), *common]) == 0
    s1 = json.loads((tmp_path / "a" / "summary.json").read_text())
    s2 = run_bc(store2, BCConfig(epochs=2), out_dir=tmp_path / "b", eval_episodes=4, max_trajectories=60)
    s3 = run_bc(demo_store, BCConfig(epochs=2), out_dir=tmp_path / "c", eval_episodes=4, max_trajectories=60)
    assert s2["history"] == s3["history"] and s2["final_eval"] == s3["final_eval"]
    assert s1["trajectories"] == 300 and s1["variant"] == "hipi"


def test_collect_writes_a_verifiable_store_that_bc_reads(tmp_path):
    from hindsight.config import dump_config, load_config
    from learner.sac.config import sac_config_for
    from learner.sac.update import init_state, save_state

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = load_config("smoke")
    (run / "config.yaml").write_text(dump_config(cfg))
    fam = get_family(cfg.env.family)
    save_state(init_state(2, 2, 2, sac_config_for(fam), seed=0), run / "checkpoints" / "learner.pt")
    assert main(["collect", "--checkpoint", str(run), "--episodes", "12", "--seed", "1"]) == 0
    store = run / "demos-12" / "store"
    report = verify(store)
    assert report.ok and report.records == 12
    trajs = load_all(store)
    assert len({tuple(t.task) for t in trajs}) == 12 and all(t.family == "test_goal" for t in trajs)
    meta = json.loads((run / "demos-12" / "demos.json").read_text())
    assert meta["episodes"] == 12 and meta["family"] == "test_goal"
    assert main(["collect", "--checkpoint", str(run), "--episodes", "12"]) != 0  # never overwrites a store
    s = run_bc(store, BCConfig(relabel="random", epochs=1), eval_episodes=4)
    assert Path(s["out_dir"]) == run / "demos-12" / "bc-random-s0" and s["trajectories"] == 12


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="relabel"):
        BCConfig(relabel="air")
    with pytest.raises(FileNotFoundError):
        run_bc(tmp_path / "nowhere", BCConfig())
    with pytest.raises(ValueError, match="candidates eval"):
        run_bc(tmp_path / "nowhere", BCConfig(), reward_bias=1.0)
    fam = get_family("test_goal")
    with pytest.raises(ValueError, match="family"):
        train_bc(get_family("test_linear"), _three(), BCConfig(epochs=1))
    assert isinstance(StepBatch, type) and fam.task_dim == 2


def test_bc_evaluates_on_the_training_runs_eval_tasks(monkeypatch):
    """``evaluate_policy`` plays exactly the tasks a training run with the same ``eval.episodes``
    plays (``eval_tasks_for``): 30 distinct seeded tasks on a random-prior family, not its 25
    fixed ones cycled (5 of which would count twice)."""
    from actors.rollout import RolloutWorker
    from learner.bc import evaluate_policy

    seen = {}

    def fake_evaluate(self, weights, tasks, seed=0):
        seen["tasks"] = np.array(tasks)
        return {"return_mean": 0.0}

    monkeypatch.setattr(RolloutWorker, "evaluate", fake_evaluate)
    fam = get_family("point_reacher")
    from learner.sac.config import SACConfig

    evaluate_policy("point_reacher", {}, {}, SACConfig(), 30, 0)
    np.testing.assert_array_equal(seen["tasks"], fam.eval_tasks_for(30))
    assert len(np.unique(seen["tasks"], axis=0)) == 30
