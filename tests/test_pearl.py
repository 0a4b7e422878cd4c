"""PEARL: product-of-Gaussians posterior, KL, gradient routing, per-task buffers,
meta-batch sampling, save/load continuation, per-family hyperparameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from learner.pearl.buffers import TaskReplay
from learner.pearl.config import PEARLConfig, ScheduleConfig, pearl_config_for, schedule_for
from learner.pearl.context import Posterior, kl_to_standard_normal, product_of_gaussians, sample_z
from learner.pearl.losses import MetaBatch, compute_losses
from actors.policy import NumpyPEARLAgent
from learner.pearl.networks import UtilityFactory, make_networks
from learner.pearl.update import (
    init_state,
    load_state,
    policy_weights,
    sample_meta_batch,
    save_state,
    update,
    value_weights,
)

O, A, N_TASKS = 3, 2, 6
SMALL = PEARLConfig(latent_dim=3, encoder_hidden=(16, 16), hidden_sizes=(16, 16), lr=1e-2, meta_batch=4,
                    batch_size=8, embedding_batch_size=5)
SCHED = ScheduleConfig(rl_capacity=50, enc_capacity=20)


# ---- posterior --------------------------------------------------------------------------


def pog_loop(mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PEARL §4.1 closed form, one task and one latent dimension at a time."""
    T, C, Z = mu.shape
    out_mu, out_var = np.zeros((T, Z)), np.zeros((T, Z))
    for t in range(T):
        for z in range(Z):
            precision = sum(1.0 / var[t, c, z] for c in range(C))
            out_var[t, z] = 1.0 / precision
            out_mu[t, z] = out_var[t, z] * sum(mu[t, c, z] / var[t, c, z] for c in range(C))
    return out_mu, out_var


def test_product_of_gaussians_equals_task_by_task_loop():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(7, 11, 4))
    var = rng.uniform(0.05, 3.0, size=(7, 11, 4))
    post = product_of_gaussians(torch.as_tensor(mu), torch.as_tensor(var))
    ref_mu, ref_var = pog_loop(mu, var)
    np.testing.assert_allclose(post.mu.numpy(), ref_mu, rtol=1e-12)
    np.testing.assert_allclose(post.var.numpy(), ref_var, rtol=1e-12)


@pytest.mark.parametrize(
    "mus, vars_, want_mu, want_var",
    [
        ([1.0, 3.0], [1.0, 1.0], 2.0, 0.5),  # equal precisions: the mean of the means
        ([0.0, 4.0], [1.0, 3.0], 1.0, 0.75),  # precisions 1 and 1/3: (0 + 4/3) / (4/3)
        ([2.0], [0.5], 2.0, 0.5),  # one factor is its own posterior
    ],
    ids=["two-equal", "two-unequal", "one"],
)
def test_product_of_gaussians_hand_cases(mus, vars_, want_mu, want_var):
    mu = torch.tensor(mus, dtype=torch.float64).reshape(1, -1, 1)
    var = torch.tensor(vars_, dtype=torch.float64).reshape(1, -1, 1)
    post = product_of_gaussians(mu, var)
    assert post.mu.item() == pytest.approx(want_mu)
    assert post.var.item() == pytest.approx(want_var)


def test_product_of_gaussians_mask_equals_shorter_contexts_and_empty_is_prior():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(3, 6, 2))
    var = rng.uniform(0.1, 2.0, size=(3, 6, 2))
    lengths = [6, 2, 0]
    mask = torch.tensor([[c < n for c in range(6)] for n in lengths])
    post = product_of_gaussians(torch.as_tensor(mu), torch.as_tensor(var), mask)
    for t, n in enumerate(lengths[:2]):
        ref_mu, ref_var = pog_loop(mu[t:t + 1, :n], var[t:t + 1, :n])
        np.testing.assert_allclose(post.mu[t].numpy(), ref_mu[0], rtol=1e-12)
        np.testing.assert_allclose(post.var[t].numpy(), ref_var[0], rtol=1e-12)
    np.testing.assert_array_equal(post.mu[2].numpy(), 0.0)
    np.testing.assert_array_equal(post.var[2].numpy(), 1.0)


def test_product_of_gaussians_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mu"):
        product_of_gaussians(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask"):
        product_of_gaussians(torch.zeros(2, 3, 1), torch.ones(2, 3, 1), torch.ones(2, 4, dtype=torch.bool))


def test_kl_equals_closed_form_loop_and_hand_case():
    rng = np.random.default_rng(2)
    mu, var = rng.normal(size=(5, 4)), rng.uniform(0.1, 3.0, size=(5, 4))
    kl = kl_to_standard_normal(Posterior(torch.as_tensor(mu), torch.as_tensor(var))).numpy()
    for t in range(5):
        ref = sum(0.5 * (var[t, z] + mu[t, z] ** 2 - 1.0 - np.log(var[t, z])) for z in range(4))
        assert kl[t] == pytest.approx(ref, rel=1e-12)
        # and torch's own KL of the two Normals
        d = torch.distributions
        ref2 = d.kl_divergence(d.Normal(torch.as_tensor(mu[t]), torch.as_tensor(var[t]).sqrt()),
                               d.Normal(0.0, 1.0)).sum().item()
        assert kl[t] == pytest.approx(ref2, rel=1e-9)
    # hand case: mu = 1, var = 1 in each of 2 dims -> 2 * 0.5 * 1 = 1; prior -> 0
    one = kl_to_standard_normal(Posterior(torch.ones(1, 2), torch.ones(1, 2)))
    assert one.item() == pytest.approx(1.0)
    assert kl_to_standard_normal(Posterior(torch.zeros(1, 2), torch.ones(1, 2))).item() == 0.0


def test_sample_z_is_reparameterised():
    post = Posterior(torch.tensor([[1.0, -2.0]], requires_grad=True), torch.tensor([[4.0, 0.25]], requires_grad=True))
    g = torch.Generator().manual_seed(0)
    z = sample_z(post, g)
    eps = torch.randn((1, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.detach(), post.mu.detach() + post.var.detach().sqrt() * eps)
    z.sum().backward()
    assert post.mu.grad is not None and post.var.grad is not None


# ---- losses: gradient routing -----------------------------------------------------------


def make_meta_batch(T: int = 4, B: int = 8, seed: int = 0, p_terminal: float = 0.25) -> tuple[MetaBatch, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = MetaBatch(
        obs=torch.randn(T, B, O, generator=g),
        action=torch.rand(T, B, A, generator=g) * 2 - 1,
        reward=torch.randn(T, B, generator=g),
        next_obs=torch.randn(T, B, O, generator=g),
        terminated=torch.rand(T, B, generator=g) < p_terminal,
    )
    context = torch.randn(T, 5, SMALL.context_dim(O, A), generator=g)
    return batch, context


LOSSES = ("kl", "critic", "value", "actor")
REACHES = {
    "kl": {"encoder"},
    "critic": {"encoder", "critic"},
    "value": {"value"},
    "actor": {"actor"},
}


@pytest.mark.parametrize("loss_name", LOSSES)
def test_each_loss_reaches_exactly_its_parameters(loss_name):
    nets = make_networks(O, A, SMALL, seed=0)
    batch, context = make_meta_batch()
    losses = compute_losses(nets, batch, context, SMALL, torch.Generator().manual_seed(0))
    loss = getattr(losses, loss_name)
    reached = set()
    assert not any(p.requires_grad for p in nets.target_value.parameters())
    for name, module in nets._asdict().items():
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        if any(g is not None and bool(g.abs().sum() > 0) for g in grads):
            reached.add(name)
    assert reached == REACHES[loss_name]


def test_encoder_gradient_is_exactly_critic_plus_kl():
    """Gradient of the total loss w.r.t. the encoder = that of critic + kl (actor and value add 0)."""
    nets = make_networks(O, A, SMALL, seed=1)
    batch, context = make_meta_batch(seed=1)
    losses = compute_losses(nets, batch, context, SMALL, torch.Generator().manual_seed(0))
    enc = list(nets.encoder.parameters())
    total = torch.autograd.grad(losses.total, enc, retain_graph=True)
    part = torch.autograd.grad(losses.critic + losses.kl, enc, retain_graph=True)
    for a, b in zip(total, part):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_losses_finite_with_nan_after_terminal():
    nets = make_networks(O, A, SMALL, seed=2)
    batch, context = make_meta_batch(seed=2, p_terminal=0.5)
    nan_next = torch.where(batch.terminated[..., None], torch.full_like(batch.next_obs, float("nan")), batch.next_obs)
    losses = compute_losses(nets, batch._replace(next_obs=nan_next), context, SMALL)
    assert all(bool(torch.isfinite(x)) for x in losses)


def test_kl_loss_is_weighted_sum_over_tasks():
    cfg = dataclasses.replace(SMALL, kl_lambda=0.7)
    nets = make_networks(O, A, cfg, seed=3)
    batch, context = make_meta_batch(seed=3)
    losses = compute_losses(nets, batch, context, cfg)
    post = nets.encoder.posterior(context)
    assert losses.kl.item() == pytest.approx(0.7 * kl_to_standard_normal(post).sum().item(), rel=1e-6)


# ---- buffers and the meta-batch -----------------------------------------------------------


def rows_for(task: int, n: int, start: int = 0):
    """Rows whose obs[:, 0] names the task and obs[:, 1] the row number."""
    obs = np.zeros((n, O))
    obs[:, 0] = task
    obs[:, 1] = start + np.arange(n)
    return obs, np.zeros((n, A)), np.full(n, float(task)), obs + 1, np.zeros(n, dtype=bool)


def test_task_replay_ring_clear_and_per_task_sampling():
    rp = TaskReplay(4, capacity=5, obs_dim=O, action_dim=A)
    for t in range(3):
        rp.add(t, *rows_for(t, 3 + t))
    np.testing.assert_array_equal(rp.sizes(), [3, 4, 5, 0])
    rp.add(0, *rows_for(0, 4, start=3))  # wraps: rows 2..6 survive
    stored = sorted(rp._data.obs[0, :5, 1].tolist())
    assert stored == [2.0, 3.0, 4.0, 5.0, 6.0]
    batch = rp.sample(torch.tensor([0, 2, 2, 1]), 50, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (4, 50, O) and batch.reward.shape == (4, 50)
    np.testing.assert_array_equal(batch.obs[:, :, 0].numpy(), np.array([0, 2, 2, 1])[:, None].repeat(50, 1))
    np.testing.assert_array_equal(batch.reward.numpy(), batch.obs[:, :, 0].numpy())
    rp.clear([2])
    assert rp.sizes()[2] == 0
    with pytest.raises(RuntimeError, match=r"tasks \[2\]"):
        rp.sample(torch.tensor([2]), 1)
    with pytest.raises(ValueError, match="task index"):
        rp.add(7, *rows_for(0, 1))
    # mixed task indices in one call
    obs = np.concatenate([rows_for(3, 2)[0], rows_for(1, 1)[0]])
    rp.add(np.array([3, 3, 1]), obs, np.zeros((3, A)), np.zeros(3), obs, np.zeros(3, dtype=bool))
    assert rp.sizes()[3] == 2 and rp.sizes()[1] == 5


def filled_state(seed: int = 0, device: str = "cpu", tasks_with_data: int = N_TASKS):
    state = init_state(O, A, N_TASKS, SMALL, SCHED, device, seed)
    rng = np.random.default_rng(seed)
    for t in range(tasks_with_data):
        n = 12
        obs = rng.normal(size=(n, O))
        obs[:, 0] = t
        args = (obs, rng.uniform(-1, 1, (n, A)), rng.normal(size=n), rng.normal(size=(n, O)), rng.random(n) < 0.2)
        state.rl.add(t, *args)
        state.enc.add(t, *args)
    return state


def test_meta_batch_draws_only_tasks_with_data_and_keeps_rows_per_task():
    state = filled_state(tasks_with_data=3)
    for _ in range(5):
        ids, batch, context = sample_meta_batch(state)
        assert ids.shape == (SMALL.meta_batch,)
        assert set(ids.tolist()) <= {0, 1, 2}
        assert batch.obs.shape == (SMALL.meta_batch, SMALL.batch_size, O)
        assert context.shape == (SMALL.meta_batch, SMALL.embedding_batch_size, SMALL.context_dim(O, A))
        np.testing.assert_array_equal(batch.obs[:, :, 0].numpy(), ids[:, None].expand(-1, SMALL.batch_size).numpy())
        np.testing.assert_array_equal(context[:, :, 0].numpy(), ids[:, None].expand(-1, SMALL.embedding_batch_size).numpy())
    empty = init_state(O, A, N_TASKS, SMALL, SCHED)
    with pytest.raises(RuntimeError, match="no training task"):
        sample_meta_batch(empty)


# ---- update, checkpoints, weights -----------------------------------------------------------


def all_tensors(state) -> dict[str, torch.Tensor]:
    out = {}
    for name, m in state.nets._asdict().items():
        out.update({f"{name}.{k}": v.detach().cpu().clone() for k, v in m.state_dict().items()})
    return out


def run_updates(state, n: int):
    metrics = {}
    for _ in range(n):
        _, batch, context = sample_meta_batch(state)
        state, metrics = update(state, batch, context)
    return state, metrics


def test_update_changes_trained_nets_and_moves_target_by_polyak():
    state = filled_state()
    before = all_tensors(state)
    state, metrics = run_updates(state, 1)
    after = all_tensors(state)
    for prefix in ("encoder", "critic", "value", "actor"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix + "."))
    for k in before:
        if k.startswith("target_value."):
            online = after["value." + k[len("target_value."):]]
            want = before[k] + SMALL.tau * (online - before[k])
            torch.testing.assert_close(after[k], want)
    assert set(metrics) >= {"kl_loss", "critic_loss", "value_loss", "actor_loss", "kl", "z_var"}
    assert all(np.isfinite(v) for v in metrics.values())


def assert_same_state(a, b) -> None:
    ta, tb = all_tensors(a), all_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert a.step == b.step


def check_save_load_continuation(tmp_path, device: str) -> None:
    straight = filled_state(seed=4, device=device)
    straight, _ = run_updates(straight, 6)

    part = filled_state(seed=4, device=device)
    part, _ = run_updates(part, 3)
    save_state(part, tmp_path / "pearl.pt")
    resumed = load_state(tmp_path / "pearl.pt", device)
    np.testing.assert_array_equal(resumed.rl.sizes(), part.rl.sizes())
    resumed, _ = run_updates(resumed, 3)
    assert_same_state(straight, resumed)


def test_save_load_update_is_bit_identical(tmp_path):
    check_save_load_continuation(tmp_path, "cpu")


def test_same_seed_twice_is_identical_and_other_seed_differs():
    a, _ = run_updates(filled_state(seed=5), 2)
    b, _ = run_updates(filled_state(seed=5), 2)
    assert_same_state(a, b)
    c, _ = run_updates(filled_state(seed=6), 2)
    assert any(not torch.equal(x, y) for x, y in zip(all_tensors(a).values(), all_tensors(c).values()))


def test_load_rejects_other_files(tmp_path):
    torch.save({"format": 99}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a PEARL checkpoint"):
        load_state(tmp_path / "x.pt")


def test_inference_agent_and_utility_factory_match_the_learner_nets():
    state, _ = run_updates(filled_state(seed=7), 2)
    agent = NumpyPEARLAgent(O, A, SMALL)
    agent.load_state_dict(policy_weights(state), version=3)
    ctx = np.random.default_rng(0).normal(size=(9, SMALL.context_dim(O, A))).astype(np.float32)
    mu, var = agent.posterior(ctx)
    with torch.no_grad():
        post = state.nets.encoder.posterior(torch.as_tensor(ctx)[None])
    np.testing.assert_allclose(mu, post.mu[0].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(var, post.var[0].numpy(), rtol=1e-6, atol=1e-7)
    prior_mu, prior_var = agent.posterior(None)
    np.testing.assert_array_equal(prior_mu, 0.0)
    np.testing.assert_array_equal(prior_var, 1.0)
    obs = np.random.default_rng(1).normal(size=(4, O)).astype(np.float32)
    z = np.tile(mu, (4, 1))
    with torch.no_grad():
        det = torch.tanh(state.nets.actor(torch.as_tensor(obs), torch.as_tensor(z))[0]).numpy()
    np.testing.assert_allclose(agent.act(obs, z, deterministic=True), det, rtol=1e-6, atol=1e-7)

    vf = UtilityFactory(SMALL, O, A)(value_weights(state))
    states = np.random.default_rng(2).normal(size=(2, 5, O))
    zz = np.random.default_rng(3).normal(size=(2, SMALL.latent_dim))
    q = vf.q_values(states, zz, np.random.default_rng(4))
    assert q.shape == (2, 5)
    # same rng -> same sampled actions -> same values; Q is the min of the twin critics
    np.testing.assert_array_equal(q, vf.q_values(states, zz, np.random.default_rng(4)))


def test_family_hyperparameters_follow_the_reference_configs():
    fc, fs = pearl_config_for("four_corners"), schedule_for("four_corners")
    assert (fc.kl_lambda, fc.reward_scale, fc.meta_batch, fc.embedding_batch_size) == (1.0, 100.0, 8, 1024)
    assert (fs.num_steps_prior, fs.num_steps_posterior, fs.num_initial_steps, fs.utility_batch_size) == (100, 900, 200, 1024)
    assert fs.num_exp_traj_eval == 5
    cv, cs = pearl_config_for("cheetah_vel"), schedule_for("cheetah_vel")
    assert (cv.kl_lambda, cv.reward_scale, cv.meta_batch, cv.batch_size, cv.latent_dim) == (0.1, 5.0, 16, 256, 5)
    assert (cs.num_tasks_sample, cs.num_steps_posterior, cs.num_extra_rl_steps_posterior) == (5, 0, 600)
    ss = schedule_for("cheetah_vel_sparse")
    assert (ss.num_tasks_sample, ss.num_steps_posterior, ss.num_extra_rl_steps_posterior) == (5, 600, 0)
    ag = pearl_config_for("ant_goal_sparse")
    assert (ag.kl_lambda, ag.embedding_batch_size) == (1.0, 256)
    assert schedule_for("ant_goal_sparse").utility_batch_size == 64
    with pytest.raises(ValueError, match="unknown PEARLConfig field"):
        PEARLConfig.from_dict({"kl_weight": 1.0})
    with pytest.raises(ValueError, match="num_eval_trajectories"):
        ScheduleConfig(num_exp_traj_eval=3, num_eval_trajectories=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_update_and_save_load_continuation(tmp_path):
    check_save_load_continuation(tmp_path, "cuda")
    state, metrics = run_updates(filled_state(seed=8, device="cuda"), 2)
    assert state.device.type == "cuda" and all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", ["cheetah_vel", "cheetah_vel_sparse", "cheetah_highdim", "ant_goal_sparse", "four_corners"])
def test_meta_family_configs_select_pearl_with_the_family_rows(name):
    from hindsight.config import load_config, uses_pearl

    cfg = load_config(name)
    assert uses_pearl(cfg) and cfg.env.family == name and cfg.relabel.strategy == "hfr"
    assert cfg.meta.pearl == pearl_config_for(name)
    assert cfg.meta.schedule == schedule_for(name)
    for strategy in ("none", "random", "hipi"):
        assert load_config(name, [f"relabel.strategy={strategy}"]).relabel.strategy == strategy
    from hindsight.configtools import ConfigError

    with pytest.raises(ConfigError, match="not a meta-RL strategy"):
        load_config(name, ["relabel.strategy=air"])
