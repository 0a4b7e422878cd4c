"""HFR (Eq. 8-9) and the meta-RL relabeling baselines: kernel vs loop and hand cases, the
partition function's invariance, the utility against a per-pair loop, the 0.5 coin, and
relabeled rows rewarded under the chosen task only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs import get_family
from learner.pearl.config import PEARLConfig, ScheduleConfig
from learner.pearl.networks import UtilityFactory
from learner.pearl.update import init_state, value_weights
from relabel_service.core import Trajectory
from relabel_service.store import codec
from relabel_service.strategies import kernels
from relabel_service.strategies.meta import (
    MetaDecision,
    MetaRequest,
    hfr_reference_utilities,
    hfr_utilities,
    meta_hfr,
    meta_hipi,
    meta_none,
    meta_random,
    meta_transitions,
)

FAM = get_family("test_meta_goal")
TRAIN = FAM.train_tasks()  # [6, 2]


# ---- the kernel (Eq. 8) ---------------------------------------------------------------------


def hfr_loop(U, log_Z, temperature):
    """q(psi_j | tau_i) = exp(U_ij / T - log Z_j) / sum_k exp(U_ik / T - log Z_k), one entry at a time."""
    B, J = U.shape
    out = np.zeros((B, J))
    for i in range(B):
        w = [math.exp(U[i, j] / temperature - log_Z[j]) for j in range(J)]
        for j in range(J):
            out[i, j] = math.log(w[j] / sum(w))
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_hfr_kernel_equals_plain_loop(temperature):
    rng = np.random.default_rng(0)
    U, log_Z = rng.normal(size=(9, 5)) * 3, rng.normal(size=5)
    np.testing.assert_allclose(kernels.hfr_log_probs(U, log_Z, temperature), hfr_loop(U, log_Z, temperature), rtol=1e-10)


# Three trajectories x three tasks, worked by hand from Eq. 8 (uniform prior):
#   log Z = [0, ln 2, 0]
#   tau_0: U = [ln 2, ln 2, 0]  -> exp(U - log Z) = [2, 1, 1]  -> q = [1/2, 1/4, 1/4]
#   tau_1: U = [0, 0, 0]        ->                 [1, 1/2, 1] -> q = [2/5, 1/5, 2/5]
#   tau_2: U = [ln 3, ln 2, 0]  ->                 [3, 1, 1]   -> q = [3/5, 1/5, 1/5]
LN2, LN3 = math.log(2), math.log(3)
HAND_U = np.array([[LN2, LN2, 0.0], [0.0, 0.0, 0.0], [LN3, LN2, 0.0]])
HAND_LOGZ = np.array([0.0, LN2, 0.0])
HAND_Q = np.array([[1 / 2, 1 / 4, 1 / 4], [2 / 5, 1 / 5, 2 / 5], [3 / 5, 1 / 5, 1 / 5]])


@pytest.mark.parametrize("i", [0, 1, 2], ids=["tau0", "tau1", "tau2"])
def test_hfr_kernel_hand_cases(i):
    q = np.exp(kernels.hfr_log_probs(HAND_U, HAND_LOGZ))
    np.testing.assert_allclose(q[i], HAND_Q[i], rtol=1e-12)


def test_hfr_log_partition_hand_case_and_temperature():
    # log mean exp of [0, ln 3] = log((1 + 3) / 2) = ln 2
    assert kernels.hfr_log_partition(np.array([[0.0, LN3]]))[0] == pytest.approx(LN2)
    # at temperature 2 the utilities are halved first: log((1 + e^1) / 2) for U = [0, 2]
    assert kernels.hfr_log_partition(np.array([[0.0, 2.0]]), 2.0)[0] == pytest.approx(math.log((1 + math.e) / 2))
    with pytest.raises(ValueError, match="U_ref"):
        kernels.hfr_log_partition(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="log_Z"):
        kernels.hfr_log_probs(np.zeros((2, 3)), np.zeros(2))


@pytest.mark.parametrize("seed", range(5))
def test_constant_added_to_one_tasks_utilities_leaves_distribution_unchanged(seed):
    rng = np.random.default_rng(seed)
    temperature = float(rng.uniform(0.3, 3.0))
    U, U_ref = rng.normal(size=(4, 3)) * 5, rng.normal(size=(3, 20)) * 5
    j, c = int(rng.integers(3)), float(rng.normal() * 100)
    base = kernels.hfr_log_probs(U, kernels.hfr_log_partition(U_ref, temperature), temperature)
    U2, U_ref2 = U.copy(), U_ref.copy()
    U2[:, j] += c
    U_ref2[j] += c
    shifted = kernels.hfr_log_probs(U2, kernels.hfr_log_partition(U_ref2, temperature), temperature)
    np.testing.assert_allclose(shifted, base, atol=1e-9)
    # without the partition function the shift does move the distribution (Eq. 8 needs log Z)
    no_z = kernels.hfr_log_probs(U2, np.zeros(3), temperature)
    assert not np.allclose(no_z, kernels.hfr_log_probs(U, np.zeros(3), temperature), atol=1e-3)


# ---- the utility (Eq. 9) --------------------------------------------------------------------


class AnalyticModel:
    """A closed-form stand-in for PEARL, so the utility can be checked entry by entry:
    z = masked mean of the context's reward column; min-Q(s, a, z) = z * sum(s)."""

    def context(self, obs, action, reward, next_obs=None):
        return np.concatenate([np.asarray(obs), np.asarray(action), np.asarray(reward)[..., None]], axis=-1)

    def infer(self, contexts, rng, mask=None):
        r = np.asarray(contexts)[..., -1]
        m = np.ones(r.shape, dtype=bool) if mask is None else np.asarray(mask)
        return ((r * m).sum(-1) / m.sum(-1))[:, None]

    def q_values(self, states, z, rng):
        return np.asarray(states).sum(-1) * np.asarray(z)[:, :1]

    def q_of(self, states, actions, z):
        return np.asarray(states).sum(-1) * np.asarray(z)[:, :1] + np.asarray(actions).sum(-1)


def make_traj(task_id: int, T: int, seed: int, phase: str = "prior") -> Trajectory:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(T, 2))
    obs = np.zeros((T + 1, 2))
    for t in range(T):
        obs[t + 1] = np.clip(obs[t] + actions[t] / 5, -1, 1)
    task = TRAIN[task_id]
    from envs.core import StepBatch

    steps = StepBatch(obs[:-1], actions, obs[1:], np.zeros((T, 0)))
    return Trajectory(
        episode_id=f"t{task_id}-{seed}", worker_id=0, policy_version=1, family=FAM.name, task=task,
        obs=obs, actions=actions, rewards=FAM.rewards_for(steps, np.repeat(task[None], T, 0)),
        terminated=np.zeros(T, dtype=bool), truncated=True, reward_inputs=np.zeros((T, 0)),
        created_at=1.0, task_id=task_id, phase=phase,
    )


def test_utility_equals_per_pair_loop_with_injected_model():
    trajs = [make_traj(i % 6, T, seed=i) for i, T in enumerate([10, 7, 10, 3, 9])]  # unequal lengths
    start = np.random.default_rng(1).normal(size=(6, 4, 2))
    model = AnalyticModel()
    U = hfr_utilities(FAM, trajs, TRAIN, start, model, np.random.default_rng(0), chunk=2)
    for i, traj in enumerate(trajs):
        steps = traj.steps()
        for j in range(6):
            r_psi = FAM.rewards_for(steps, np.repeat(TRAIN[j][None], traj.length, 0))  # rewards rewritten under psi_j
            want = np.mean([r_psi.mean() * s.sum() for s in start[j]])  # start states from psi_j
            assert U[i, j] == pytest.approx(want, rel=1e-12)


def test_utility_with_pearl_weights_equals_per_pair_calls():
    """The batched utility equals evaluating each (trajectory, task) pair on its own with the
    same z: the batching over pairs and the padding mask do not change anything."""
    cfg = PEARLConfig(latent_dim=3, encoder_hidden=(8,), hidden_sizes=(8,))
    state = init_state(2, 2, 6, cfg, ScheduleConfig(rl_capacity=10, enc_capacity=10), "cpu", seed=0)
    vf = UtilityFactory(cfg, 2, 2)(value_weights(state))
    trajs = [make_traj(0, 10, 0), make_traj(3, 4, 1)]
    start = np.random.default_rng(2).normal(size=(6, 3, 2))

    class Deterministic:  # the posterior mean instead of a sample, so pairs can be compared
        def context(self, *a):
            return vf.context(*a)

        def infer(self, contexts, rng, mask=None):
            import torch

            c = torch.as_tensor(np.asarray(contexts, np.float32))
            m = None if mask is None else torch.as_tensor(np.asarray(mask))
            with torch.no_grad():
                return vf.encoder.posterior(c, m).mu.numpy()

        def q_values(self, states, z, rng):
            return vf.q_of(states, np.zeros(states.shape[:2] + (2,)), z)

    model = Deterministic()
    U = hfr_utilities(FAM, trajs, TRAIN, start, model, np.random.default_rng(0))
    for i, traj in enumerate(trajs):
        for j in range(6):
            one = hfr_utilities(FAM, [traj], TRAIN[j:j + 1], start[j:j + 1], model, np.random.default_rng(0))
            assert U[i, j] == pytest.approx(one[0, 0], rel=1e-5, abs=1e-6)


def test_reference_utilities_and_log_z_shapes():
    model = AnalyticModel()
    rng = np.random.default_rng(0)
    steps = [None] * 6
    for j in (0, 2):
        n = 30
        steps[j] = (rng.normal(size=(n, 2)), rng.normal(size=(n, 2)), np.full(n, float(j + 1)), rng.normal(size=(n, 2)))
    start = np.ones((6, 4, 2))
    U_ref, have = hfr_reference_utilities(steps, start, model, rng, num_contexts=20, context_size=10)
    assert U_ref.shape == (6, 20) and have.tolist() == [True, False, True, False, False, False]
    # every context of task j has rewards j + 1, so z = j + 1 and U = z * sum(start) = 2 (j + 1)
    np.testing.assert_allclose(U_ref[0], 2.0)
    np.testing.assert_allclose(U_ref[2], 6.0)
    np.testing.assert_allclose(kernels.hfr_log_partition(U_ref), [2.0, 0.0, 6.0, 0.0, 0.0, 0.0])


# ---- strategies, the coin, rows for the learner ------------------------------------------------


def test_hfr_prefers_the_task_with_the_highest_normalised_utility():
    """With the analytic model, U_ij = mean_t r_psi_j(tau_i) * sum(start_j); start states of
    task 4 are large, so every relabeled trajectory goes there unless log Z removes it."""
    trajs = [make_traj(i % 6, 10, seed=i) for i in range(6)]
    start = np.zeros((6, 1, 2))
    start[:, 0, 0] = -1.0  # rewards are negative: U_ij = -mean r * ... ; make task 4's U the largest
    start[4, 0, 0] = -100.0
    req = MetaRequest(FAM, trajs, TRAIN, model=AnalyticModel(), start_states=start, log_Z=np.zeros(6), probability=1.0)
    d = meta_hfr(req, np.random.default_rng(0))
    assert d.relabeled.all() and (d.target == 4).all()
    # log Z as large as task 4's utilities cancels the preference
    U = hfr_utilities(FAM, trajs, TRAIN, start, AnalyticModel(), np.random.default_rng(0))
    req.log_Z = np.array([0, 0, 0, 0, 1e4, 0.0])
    d2 = meta_hfr(req, np.random.default_rng(0))
    assert not (d2.target == 4).any()
    assert U.shape == (6, 6)


def test_coin_initial_phase_and_none():
    trajs = [make_traj(i % 6, 5, seed=i, phase="prior") for i in range(400)]
    req = MetaRequest(FAM, trajs, TRAIN, probability=0.5)
    d = meta_random(req, np.random.default_rng(0))
    assert 0.4 < d.relabeled.mean() < 0.6  # the 0.5 coin
    own = np.array([t.task_id for t in trajs])
    np.testing.assert_array_equal(d.target[~d.relabeled], own[~d.relabeled])
    initial = [make_traj(1, 5, seed=i, phase="initial") for i in range(20)]
    d0 = meta_random(MetaRequest(FAM, initial, TRAIN, probability=1.0), np.random.default_rng(0))
    assert not d0.relabeled.any() and (d0.target == 1).all()
    dn = meta_none(MetaRequest(FAM, trajs, TRAIN), np.random.default_rng(0))
    assert not dn.relabeled.any()
    np.testing.assert_array_equal(dn.target, own)
    bad = [make_traj(1, 5, 0)]
    bad[0] = Trajectory(**{**bad[0].__dict__, "task_id": -1})
    with pytest.raises(ValueError, match="training-task id"):
        meta_random(MetaRequest(FAM, bad, TRAIN, probability=1.0), np.random.default_rng(0))


def test_meta_hipi_scores_with_the_tasks_contexts():
    """S_ij = mean_t min-Q(s_t, a_t, z_j) with z_j from task j's own context, then HIPI Eq. 7."""
    trajs = [make_traj(i % 6, 4 + i, seed=i) for i in range(4)]
    ctx = np.random.default_rng(3).normal(size=(6, 5, 5))
    req = MetaRequest(FAM, trajs, TRAIN, model=AnalyticModel(), task_contexts=ctx, probability=1.0)
    d = meta_hipi(req, np.random.default_rng(0))
    z = ctx[:, :, -1].mean(1)  # the analytic model's z_j
    S = np.array([[np.mean([z[j] * t.obs[k].sum() + t.actions[k].sum() for k in range(t.length)])
                   for j in range(6)] for t in trajs])
    q = np.exp(kernels.hipi_log_probs(S))
    np.testing.assert_allclose(d.stats["chosen_probability"], q[np.arange(4), d.target], rtol=1e-9)


def test_relabeled_rows_carry_the_chosen_tasks_rewards_and_go_to_that_task_only():
    trajs = [make_traj(0, 6, 0, "prior"), make_traj(1, 4, 1, "extra_rl"), make_traj(2, 5, 2, "posterior")]
    decision = MetaDecision(target=np.array([5, 1, 3]), relabeled=np.array([True, False, True]))
    rows = meta_transitions(FAM, trajs, TRAIN, decision)
    assert rows.size == 15
    np.testing.assert_array_equal(rows.task_index, [5] * 6 + [1] * 4 + [3] * 5)
    np.testing.assert_array_equal(rows.to_enc, [True] * 6 + [False] * 4 + [True] * 5)
    for k, (traj, task) in enumerate([(trajs[0], 5), (trajs[1], 1), (trajs[2], 3)]):
        lo = [0, 6, 10][k]
        want = FAM.rewards_for(traj.steps(), np.repeat(TRAIN[task][None], traj.length, 0))
        np.testing.assert_allclose(rows.reward[lo:lo + traj.length], want, rtol=1e-6)
    # the original (not relabeled) keeps its recorded rewards exactly
    np.testing.assert_array_equal(rows.reward[6:10], trajs[1].rewards.astype(np.float32))
    # and a relabeled row's reward differs from the commanded task's
    assert not np.allclose(rows.reward[:6], trajs[0].rewards.astype(np.float32))


def test_relabeled_terminals_follow_the_chosen_task():
    fam = get_family("test_meta_goal", terminate_on_success=True)
    train = fam.train_tasks()
    traj = make_traj(0, 3, 0)
    obs = np.repeat(train[2][None], 4, 0)  # sits on task 2's goal: success under task 2 only
    traj = Trajectory(**{**traj.__dict__, "obs": obs, "family": fam.name})
    rows = meta_transitions(fam, [traj], train, MetaDecision(np.array([2]), np.array([True])))
    assert rows.terminated.all()
    rows0 = meta_transitions(fam, [traj], train, MetaDecision(np.array([0]), np.array([False])))
    assert not rows0.terminated.any()


def test_codec_round_trips_task_id_and_phase():
    traj = make_traj(4, 3, 0, "posterior")
    back = codec.decode(codec.encode(traj))
    assert (back.task_id, back.phase) == (4, "posterior")
    plain = Trajectory(**{k: v for k, v in traj.__dict__.items() if k not in ("task_id", "phase")})
    back = codec.decode(codec.encode(plain))
    assert (back.task_id, back.phase) == (-1, "")
