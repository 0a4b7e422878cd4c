"""Multi-task SAC: loss routing, update, checkpoints, determinism, networks, replay, targets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from envs.testing import TestGoal, TestLinear
from learner.core import Batch, pick_device, to_torch
from learner.local import RandomPolicy, evaluate
from learner.replay import Replay
from learner.sac.branches import BranchThread
from learner.sac.config import SACConfig, sac_config_for, sac_defaults
from learner.sac.losses import bellman_target, compute_losses, draw_noise
from learner.sac.networks import Actor, InferencePolicy, TaskMLP, TwinCritic
from learner.sac.update import (
    METRIC_NAMES,
    adam_step,
    init_state,
    load_state,
    make_value_fn_factory,
    policy_weights,
    save_state,
    update,
    value_weights,
)
from relabel_service.core import TransitionBatch

O, A, Z, B = 5, 3, 4, 32
I = 2  # reward_input_dim of the replay tests
SMALL = SACConfig(hidden_sizes=(16, 16), actor_lr=1e-2, critic_lr=1e-2, alpha_lr=1e-2, discount=0.9)


#: the compiled-update tests run the shapes and config of ``hindsight bench learner``
#: (HalfCheetahMO's dimensions, 256x256, batch 256): a compile costs 15-25 s cold on 2 cores,
#: and inductor's on-disk cache then serves the graphs tests/test_benchmarks.py compiled
BENCH_O, BENCH_A, BENCH_Z, BENCH_B = 17, 6, 4, 256
BENCH = SACConfig(hidden_sizes=(256, 256))


def make_batch(seed: int = 0, n: int = B, device: str | torch.device = "cpu", p_terminal: float = 0.25,
               dims: tuple[int, int, int] = (O, A, Z)) -> Batch:
    o, a, z = dims
    g = torch.Generator().manual_seed(seed)
    batch = Batch(
        obs=torch.randn(n, o, generator=g),
        action=torch.rand(n, a, generator=g) * 2 - 1,
        reward=torch.randn(n, generator=g),
        next_obs=torch.randn(n, o, generator=g),
        terminated=torch.rand(n, generator=g) < p_terminal,
        task=torch.randn(n, z, generator=g),
        reward_inputs=torch.zeros(n, 0),
    )
    return Batch(*(x.to(device) for x in batch))


def bench_batch(seed: int = 0, p_terminal: float = 0.25) -> Batch:
    return make_batch(seed, BENCH_B, p_terminal=p_terminal, dims=(BENCH_O, BENCH_A, BENCH_Z))


def all_tensors(state) -> dict[str, torch.Tensor]:
    out = {f"actor.{k}": v for k, v in state.actor.state_dict().items()}
    out.update({f"critic.{k}": v for k, v in state.critic.state_dict().items()})
    out.update({f"target.{k}": v for k, v in state.target_critic.state_dict().items()})
    out["log_alpha"] = state.log_alpha.detach()
    return out


# ---- (a) gradient routing -------------------------------------------------------------


@pytest.mark.parametrize("loss_name", ["critic", "actor", "alpha"])
def test_each_loss_reaches_only_its_own_parameters(loss_name: str) -> None:
    state = init_state(O, A, Z, SMALL, "cpu", seed=0)
    losses = compute_losses(state.nets, make_batch(), SMALL, state.log_alpha, state.generator)
    getattr(losses, loss_name).backward()
    owners = {
        "critic": list(state.critic.parameters()),
        "actor": list(state.actor.parameters()),
        "alpha": [state.log_alpha],
    }
    for owner, params in owners.items():
        for p in params:
            if owner == loss_name:
                assert p.grad is not None and torch.count_nonzero(p.grad) > 0, f"{loss_name} loss missed {owner}"
            else:
                assert p.grad is None or torch.count_nonzero(p.grad) == 0, f"{loss_name} loss reached {owner}"
    for p in state.target_critic.parameters():
        assert not p.requires_grad and p.grad is None


def test_one_backward_of_the_sum_equals_separate_backwards() -> None:
    # update() backpropagates critic + actor + alpha once; valid because routing is disjoint
    state = init_state(O, A, Z, SMALL, "cpu", seed=1)
    params = list(state.critic.parameters()) + list(state.actor.parameters()) + [state.log_alpha]
    g0 = state.generator.get_state()
    losses = compute_losses(state.nets, make_batch(), SMALL, state.log_alpha, state.generator)
    separate = [torch.zeros_like(p) for p in params]
    for loss in (losses.critic, losses.actor, losses.alpha):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        separate = [s + (g if g is not None else 0) for s, g in zip(separate, grads)]
    state.generator.set_state(g0)
    losses = compute_losses(state.nets, make_batch(), SMALL, state.log_alpha, state.generator)
    joint = torch.autograd.grad(losses.total, params)
    for s, j in zip(separate, joint):
        torch.testing.assert_close(s, j)


def test_fixed_alpha_has_no_alpha_loss_and_no_alpha_parameter() -> None:
    cfg = SACConfig(hidden_sizes=(8,), learn_alpha=False, init_alpha=0.3)
    state = init_state(O, A, Z, cfg, "cpu", seed=0)
    before = state.log_alpha.item()
    state, m = update(state, make_batch())
    assert m["alpha_loss"] == 0.0 and state.log_alpha.item() == before
    assert math.isclose(m["alpha"], 0.3, rel_tol=1e-6)


# ---- (b) update -----------------------------------------------------------------------


def test_update_moves_online_parameters_and_targets_only_by_polyak() -> None:
    state = init_state(O, A, Z, SMALL, "cpu", seed=0)
    before = {k: v.clone() for k, v in all_tensors(state).items()}
    state, metrics = update(state, make_batch())
    after = all_tensors(state)
    assert state.step == 1
    assert set(metrics) == set(METRIC_NAMES) and all(math.isfinite(v) for v in metrics.values())
    for k in after:
        if not k.startswith("target."):
            assert not torch.equal(before[k], after[k]), f"{k} did not change"
    tau = SMALL.tau
    for k, v in state.target_critic.state_dict().items():
        online = state.critic.state_dict()[k]
        expected = before[f"target.{k}"] + tau * (online - before[f"target.{k}"])
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-7)
        assert not torch.equal(v, before[f"target.{k}"])


def test_update_without_metrics_returns_empty_dict() -> None:
    state = init_state(O, A, Z, SMALL, "cpu", seed=0)
    _, metrics = update(state, make_batch(), with_metrics=False)
    assert metrics == {}



def test_noise_drawn_ahead_equals_noise_drawn_inside_the_losses() -> None:
    """``draw_noise`` draws what ``compute_losses`` would (the compiled update relies on it)."""
    state = init_state(O, A, Z, SMALL, "cpu", seed=4)
    b = make_batch(seed=1)
    g = torch.Generator()
    g.set_state(state.generator.get_state())
    inside = compute_losses(state.nets, b, SMALL, state.log_alpha, state.generator)
    ahead = compute_losses(state.nets, b, SMALL, state.log_alpha, None, draw_noise(b, g))
    assert torch.equal(inside.metric_vector(), ahead.metric_vector())
    assert torch.equal(g.get_state(), state.generator.get_state())


def test_compiled_update_equals_the_eager_update() -> None:
    """``compile=True`` (torch.compile of losses + backward; compiles once, tens of seconds):
    same seed and batches, terminal rows with NaN next observations included, give the eager
    path's parameters, targets, Adam moments and metrics up to float32 rounding."""
    nan_next = bench_batch(seed=9, p_terminal=0.5)
    nan_next = nan_next._replace(next_obs=torch.where(nan_next.terminated[:, None], torch.nan, nan_next.next_obs))
    batches = [bench_batch(seed=i) for i in range(3)] + [nan_next]
    eager = init_state(BENCH_O, BENCH_A, BENCH_Z, BENCH, "cpu", seed=5)
    compiled = init_state(BENCH_O, BENCH_A, BENCH_Z, dataclasses.replace(BENCH, compile=True), "cpu", seed=5)
    for b in batches:
        _, m_eager = update(eager, b)
        _, m_compiled = update(compiled, b)
        assert m_compiled == pytest.approx(m_eager, rel=1e-5, abs=1e-6)
    a, c = all_tensors(eager), all_tensors(compiled)
    for k in a:
        torch.testing.assert_close(c[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    assert all(torch.isfinite(v).all() for v in c.values())
    for sa, sc in zip(eager.optimizer.state.values(), compiled.optimizer.state.values()):
        torch.testing.assert_close(sc["exp_avg"], sa["exp_avg"], rtol=1e-4, atol=1e-7)
    assert torch.equal(eager.generator.get_state(), compiled.generator.get_state())

@pytest.mark.parametrize("learn_alpha", [True, False], ids=["learn-alpha", "fixed-alpha"])
def test_update_on_two_threads_equals_the_update_on_one_bit_for_bit(learn_alpha: bool) -> None:
    """``update(..., branches=BranchThread())``: the actor's branch on a second thread, the
    critic's on this one, gives the one-thread step exactly (eager): parameters, targets,
    Adam moments, metrics and RNG, terminal rows with NaN next observations included."""
    cfg = dataclasses.replace(SMALL, learn_alpha=learn_alpha)
    nan_next = make_batch(seed=9, p_terminal=0.5)
    nan_next = nan_next._replace(next_obs=torch.where(nan_next.terminated[:, None], torch.nan, nan_next.next_obs))
    one, two = init_state(O, A, Z, cfg, "cpu", seed=5), init_state(O, A, Z, cfg, "cpu", seed=5)
    branches = BranchThread(threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each branch on one thread either way (reductions split no differently)
    try:
        for b in [make_batch(seed=i) for i in range(3)] + [nan_next]:
            _, m_one = update(one, b)
            _, m_two = update(two, b, branches=branches)
            assert m_two == m_one
    finally:
        branches.close()
        torch.set_num_threads(threads)
    a, c = all_tensors(one), all_tensors(two)
    assert all(torch.equal(c[k], a[k]) for k in a)
    for s1, s2 in zip(one.optimizer.state.values(), two.optimizer.state.values()):
        assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
    assert torch.equal(one.generator.get_state(), two.generator.get_state())


def test_compiled_update_on_two_threads_equals_the_eager_update() -> None:
    """The two branches compiled, each one graph that returns its gradients
    (``compiled_grad_branches``), run at once give the eager one-thread step up to float32
    rounding: parameters, targets, log alpha and Adam's moments. A second state of the same
    shapes runs the same compiled code (the learner compiles on a scratch state)."""
    import torch._dynamo

    eager = init_state(BENCH_O, BENCH_A, BENCH_Z, BENCH, "cpu", seed=6)
    compiled = init_state(BENCH_O, BENCH_A, BENCH_Z, dataclasses.replace(BENCH, compile=True), "cpu", seed=6)
    branches = BranchThread()
    try:
        for i in range(3):
            _, m_eager = update(eager, bench_batch(seed=i))
            _, m_compiled = update(compiled, bench_batch(seed=i), branches=branches)
            assert m_compiled == pytest.approx(m_eager, rel=1e-5, abs=1e-6)
        other = init_state(BENCH_O, BENCH_A, BENCH_Z, dataclasses.replace(BENCH, compile=True), "cpu", seed=7)
        with torch._dynamo.config.patch(error_on_recompile=True):
            update(other, bench_batch(seed=4), branches=branches)
    finally:
        branches.close()
    a, c = all_tensors(eager), all_tensors(compiled)
    for k in a:
        torch.testing.assert_close(c[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    assert compiled.log_alpha.grad is not None and other.step == 1
    for sa, sc in zip(eager.optimizer.state.values(), compiled.optimizer.state.values()):
        torch.testing.assert_close(sc["exp_avg"], sa["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(sc["exp_avg_sq"], sa["exp_avg_sq"], rtol=1e-4, atol=1e-9)


def test_compiled_two_branch_update_steps_nothing_when_a_branch_raises() -> None:
    """Compiled, each branch steps its own parameters with Adam on its own thread once both
    graphs are done; when either thread raises (the actor's ``side`` job, then the critic's
    graph), neither branch steps: parameters, targets, Adam's moments and log alpha are as
    before the call, and the branch thread takes the next update."""
    state = init_state(BENCH_O, BENCH_A, BENCH_Z, dataclasses.replace(BENCH, compile=True), "cpu", seed=8)
    branches = BranchThread()
    try:
        for i in range(2):  # the first step creates Adam's state; the second takes the split step
            update(state, bench_batch(seed=i), branches=branches)
        before = {k: v.clone() for k, v in all_tensors(state).items()}
        moments = [s["exp_avg"].clone() for s in state.optimizer.state.values()]

        def boom() -> None:
            raise RuntimeError("side job failed")

        with pytest.raises(RuntimeError, match="side job failed"):
            update(state, bench_batch(seed=5), branches=branches, side=boom)
        after = all_tensors(state)
        assert all(torch.equal(after[k], before[k]) for k in before)
        assert all(torch.equal(s["exp_avg"], m) for s, m in zip(state.optimizer.state.values(), moments))

        from learner.sac import compiled

        critic_fn = compiled._COMPILED["critic_grads"]

        def critic_fails(*args):
            raise RuntimeError("critic graph failed")

        compiled._COMPILED["critic_grads"] = critic_fails  # the critic's thread raises instead
        try:
            with pytest.raises(RuntimeError, match="critic graph failed"):
                update(state, bench_batch(seed=5), branches=branches)
        finally:
            compiled._COMPILED["critic_grads"] = critic_fn
        after = all_tensors(state)
        assert all(torch.equal(after[k], before[k]) for k in before)
        assert all(torch.equal(s["exp_avg"], m) for s, m in zip(state.optimizer.state.values(), moments))
        update(state, bench_batch(seed=6), branches=branches)  # and the next update runs
        assert state.step == 3
    finally:
        branches.close()


def test_branch_thread_hands_back_errors_and_keeps_working() -> None:
    branches = BranchThread(threads=1)
    seen: list[int] = []
    try:
        branches.submit(lambda: seen.append(torch.get_num_threads()))
        with pytest.raises(RuntimeError, match="not waited for"):
            branches.submit(lambda: None)
        branches.wait()
        assert seen == [1]  # the worker's own torch thread count

        def boom() -> None:
            raise ValueError("actor branch failed")

        branches.submit(boom)
        with pytest.raises(ValueError, match="actor branch failed"):
            branches.wait()
        branches.submit(lambda: seen.append(2))  # still usable after an error
        branches.wait()
        assert seen == [1, 2]
    finally:
        branches.close()
    with pytest.raises(RuntimeError, match="closed"):
        branches.submit(lambda: None)
    with pytest.raises(ValueError, match="threads"):
        BranchThread(threads=0)


def test_direct_adam_step_equals_optimizer_step_bit_for_bit() -> None:
    """``adam_step`` (the fused kernel called directly) moves parameters, moments and step
    counters exactly as ``Optimizer.step`` does, with groups of different learning rates; the
    first step (no state yet) and a parameter without a gradient take ``Optimizer.step``."""
    cfg = dataclasses.replace(SMALL, actor_lr=3e-3, critic_lr=1e-2, alpha_lr=5e-4)
    a, b = init_state(O, A, Z, cfg, "cpu", seed=2), init_state(O, A, Z, cfg, "cpu", seed=2)
    assert all(g["fused"] for g in b.optimizer.param_groups)  # the path under test
    for i in range(4):
        for state, step in ((a, a.optimizer.step), (b, lambda: adam_step(b.optimizer))):
            losses = compute_losses(state.nets, make_batch(seed=i), cfg, state.log_alpha, state.generator)
            state.optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            if i == 3:  # one parameter without a gradient: Optimizer.step skips it
                state.actor.net.layers[0].bias.grad = None
            if state is b and i in (1, 2):  # state and every gradient there: the kernel is called directly
                state.optimizer.step = lambda: pytest.fail("adam_step fell back to Optimizer.step")
            step()
            vars(state.optimizer).pop("step", None)
    for k, v in all_tensors(a).items():
        assert torch.equal(all_tensors(b)[k], v), k
    for sa, sb in zip(a.optimizer.state.values(), b.optimizer.state.values()):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[key], sb[key]), key
    assert a.optimizer.state[a.log_alpha]["step"].item() == 4


# ---- (c) checkpoints ------------------------------------------------------------------


def test_save_load_update_equals_uninterrupted_run(tmp_path) -> None:
    batches = [make_batch(seed=i) for i in range(6)]
    state = init_state(O, A, Z, SMALL, "cpu", seed=7)
    for b in batches[:3]:
        update(state, b)
    save_state(state, tmp_path / "ckpt.pt")
    tail_uninterrupted = [update(state, b)[1] for b in batches[3:]]

    resumed = load_state(tmp_path / "ckpt.pt", "cpu")
    assert resumed.step == 3 and resumed.cfg == SMALL
    tail_resumed = [update(resumed, b)[1] for b in batches[3:]]

    assert tail_resumed == tail_uninterrupted
    assert resumed.step == state.step == 6
    a, b = all_tensors(state), all_tensors(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for sa, sb in zip(state.optimizer.state_dict()["state"].values(),
                      resumed.optimizer.state_dict()["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert torch.equal(state.generator.get_state(), resumed.generator.get_state())


def test_load_rejects_a_foreign_file(tmp_path) -> None:
    torch.save({"format": 99}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="format"):
        load_state(tmp_path / "x.pt")


# ---- (d) determinism ------------------------------------------------------------------


def test_same_seed_gives_same_networks_and_actions() -> None:
    s1, s2 = init_state(O, A, Z, SMALL, "cpu", seed=3), init_state(O, A, Z, SMALL, "cpu", seed=3)
    for (k, v1), v2 in zip(all_tensors(s1).items(), all_tensors(s2).values()):
        assert torch.equal(v1, v2), k
    assert not torch.equal(s1.actor.net.layers[0].weight,
                           init_state(O, A, Z, SMALL, "cpu", seed=4).actor.net.layers[0].weight)
    b = make_batch()
    a1 = s1.actor.act(b.obs, b.task, generator=torch.Generator().manual_seed(5))
    a2 = s2.actor.act(b.obs, b.task, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a1, a2)
    assert torch.equal(s1.actor.act(b.obs, b.task, deterministic=True),
                       torch.tanh(s1.actor(b.obs, b.task)[0]))

    weights = policy_weights(s1)
    assert all(isinstance(v, np.ndarray) for v in weights.values())
    p1 = InferencePolicy(O, A, Z, SMALL, seed=11)
    p2 = InferencePolicy(O, A, Z, SMALL, seed=11)
    p1.load_state_dict(weights, version=1)
    p2.load_state_dict(p1.state_dict(), version=1)
    obs, task = b.obs.numpy(), b.task.numpy()
    x1, x2 = p1(obs, task), p2(obs, task)
    assert x1.shape == (B, A) and x1.dtype == np.float32 and np.array_equal(x1, x2)
    assert np.all(np.abs(x1) <= 1.0)
    assert np.array_equal(p1(obs, task, deterministic=True), a_det := p2(obs, task, deterministic=True))
    # the CPU hot path finishes in numpy: equal to the torch actor up to float32 rounding
    np.testing.assert_allclose(a_det, s1.actor.act(b.obs, b.task, deterministic=True).numpy(), atol=1e-6)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    np.testing.assert_allclose(
        p1.act(obs, task, generator=gen_a), s1.actor.act(b.obs, b.task, generator=gen_b).numpy(), atol=1e-6
    )


def test_evaluate_is_seeded() -> None:
    fam = TestGoal()
    policy = InferencePolicy(fam.obs_dim, fam.action_dim, fam.task_dim, sac_config_for(fam), seed=0)
    tasks = fam.eval_tasks()
    r1, r2 = evaluate(policy, fam, tasks, seed=3), evaluate(policy, fam, tasks, seed=3)
    assert r1 == r2 and len(r1["returns"]) == len(tasks) and r1["mean_length"] == fam.horizon
    rand1 = evaluate(RandomPolicy(fam.action_dim, 1), fam, tasks, seed=3)
    rand2 = evaluate(RandomPolicy(fam.action_dim, 1), fam, tasks, seed=3)
    assert rand1 == rand2


def test_value_fn_is_min_q_at_the_deterministic_action() -> None:
    import pickle

    state = init_state(O, A, Z, SMALL, "cpu", seed=5)
    update(state, make_batch())
    factory = pickle.loads(pickle.dumps(make_value_fn_factory(SMALL, O, A, Z)))
    value_fn = factory(value_weights(state))
    rng = np.random.default_rng(0)
    obs0, tasks = rng.normal(size=(3, O)), rng.normal(size=(3, 4, Z))
    v = value_fn(obs0, tasks)
    assert v.shape == (3, 4) and v.dtype == np.float64
    for m in range(3):
        for k in range(4):
            o = torch.tensor(obs0[m:m + 1], dtype=torch.float32)
            z = torch.tensor(tasks[m, k:k + 1], dtype=torch.float32)
            with torch.no_grad():
                a = torch.tanh(state.actor(o, z)[0])
                expected = state.critic(o, a, z).min().item()
            assert v[m, k] == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ---- (e) NaN after terminal -----------------------------------------------------------


def test_nan_next_obs_after_terminal_keeps_losses_and_update_finite() -> None:
    state = init_state(O, A, Z, SMALL, "cpu", seed=0)
    b = make_batch(p_terminal=0.5)
    assert b.terminated.any()
    b = b._replace(next_obs=torch.where(b.terminated[:, None], torch.nan, b.next_obs))
    losses = compute_losses(state.nets, b, SMALL, state.log_alpha, state.generator)
    for name in ("critic", "actor", "alpha", "target_q"):
        assert torch.isfinite(getattr(losses, name)), name
    state, metrics = update(state, b)
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(torch.isfinite(v).all() for v in all_tensors(state).values())


# ---- (f) networks ---------------------------------------------------------------------


@pytest.mark.parametrize("repeat,all_layers", [(1, False), (1, True), (3, False), (3, True)],
                         ids=["R1-input", "R1-all", "R3-input", "R3-all"])
def test_task_conditioning_shapes(repeat: int, all_layers: bool) -> None:
    cfg = SACConfig(hidden_sizes=(16, 8), task_repeat=repeat, task_to_all_layers=all_layers)
    zr = Z * repeat
    mlp = TaskMLP(O, Z, 7, cfg, last_init=1e-3)
    extra = zr if all_layers else 0
    assert [layer.in_features for layer in mlp.layers] == [O + zr, 16 + extra, 8 + extra]
    assert [layer.out_features for layer in mlp.layers] == [16, 8, 7]
    critic = TwinCritic(O, A, Z, cfg)
    assert [tuple(w.shape) for w in critic.net.weights] == [(2, O + A + zr, 16), (2, 16 + extra, 8), (2, 8 + extra, 1)]
    b = make_batch()
    assert critic(b.obs, b.action, b.task).shape == (2, B)
    mean, log_std = Actor(O, A, Z, cfg)(b.obs, b.task)
    assert mean.shape == log_std.shape == (B, A)


def test_task_is_tiled_not_interleaved() -> None:
    # first layer sees [x, z, z]: zero weights on the second copy must equal R = 1
    cfg3 = SACConfig(hidden_sizes=(8,), task_repeat=2, task_to_all_layers=False)
    cfg1 = SACConfig(hidden_sizes=(8,), task_repeat=1, task_to_all_layers=False)
    m3, m1 = TaskMLP(O, Z, 2, cfg3, 1e-3), TaskMLP(O, Z, 2, cfg1, 1e-3)
    with torch.no_grad():
        m3.layers[0].weight[:, O + Z:] = 0
        m1.layers[0].weight.copy_(m3.layers[0].weight[:, : O + Z])
        m1.layers[0].bias.copy_(m3.layers[0].bias)
        m1.layers[1].load_state_dict(m3.layers[1].state_dict())
    b = make_batch()
    torch.testing.assert_close(m3(b.obs, b.task), m1(b.obs, b.task))


def test_task_part_is_the_tiled_input_folded() -> None:
    # R = 3 on every layer: the output is [h, tile(z)] @ W^T + b at each layer (the rlkit
    # network), and each of the R blocks of W_z gets the same gradient, as a tiled input gives
    R = 3
    cfg = SACConfig(hidden_sizes=(16, 8), task_repeat=R, task_to_all_layers=True)
    b = make_batch()
    zt = b.task.repeat(1, R)
    mlp = TaskMLP(O, Z, 7, cfg, last_init=0.1)
    h = b.obs
    for i, layer in enumerate(mlp.layers):
        h = torch.cat((h, zt), -1) @ layer.weight.T + layer.bias
        h = h.relu() if i < len(mlp.layers) - 1 else h
    out = mlp(b.obs, b.task)
    torch.testing.assert_close(out, h, rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    for layer in mlp.layers:
        blocks = layer.weight.grad[:, -R * Z:].unflatten(-1, (R, Z))  # [out, R, Z]
        assert torch.count_nonzero(blocks) > 0
        for r in range(1, R):
            torch.testing.assert_close(blocks[:, r], blocks[:, 0], rtol=1e-6, atol=0.0)
    critic = TwinCritic(O, A, Z, cfg, seed=0)
    x = torch.cat((b.obs, b.action), -1)
    for e in range(2):
        h = x
        for i, (w, bias) in enumerate(zip(critic.net.weights, critic.net.biases)):
            h = torch.cat((h, zt), -1) @ w[e] + bias[e]
            h = h.relu() if i < len(critic.net.weights) - 1 else h
        torch.testing.assert_close(critic(b.obs, b.action, b.task)[e], h.squeeze(-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("all_layers", [False, True], ids=["input", "all-layers"])
def test_ensemble_critic_equals_two_independent_mlps(all_layers: bool) -> None:
    cfg = SACConfig(hidden_sizes=(16, 12), task_repeat=2, task_to_all_layers=all_layers)
    critic = TwinCritic(O, A, Z, cfg, seed=0)
    b = make_batch()
    q = critic(b.obs, b.action, b.task)
    for e in range(2):
        mlp = TaskMLP(O + A, Z, 1, cfg, last_init=1e-3)
        with torch.no_grad():
            for layer, w, bias in zip(mlp.layers, critic.net.weights, critic.net.biases):
                layer.weight.copy_(w[e].T)
                layer.bias.copy_(bias[e, 0])
        expected = mlp(torch.cat((b.obs, b.action), -1), b.task).squeeze(-1)
        torch.testing.assert_close(q[e], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(q[0], q[1])  # the twins are initialised independently


def test_network_init_follows_rlkit() -> None:
    cfg = SACConfig(hidden_sizes=(32, 32))
    actor, critic = Actor(O, A, Z, cfg), TwinCritic(O, A, Z, cfg)
    assert torch.all(actor.net.layers[0].bias == 0.1) and torch.all(critic.net.biases[1] == 0.1)
    assert actor.net.layers[-1].weight.abs().max() <= 1e-3 and critic.net.weights[-1].abs().max() <= 3e-3
    assert critic.net.weights[0].abs().max() <= 1 / math.sqrt(O + A + Z)


def test_tanh_gaussian_log_prob_matches_torch_distributions() -> None:
    actor = Actor(O, A, Z, SACConfig(hidden_sizes=(16,), pi_last_init=0.3))
    b = make_batch(n=256)
    g = torch.Generator().manual_seed(0)
    action, log_prob = actor.sample(b.obs, b.task, g)
    mean, log_std = actor(b.obs, b.task)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    )
    # away from saturation, where inverting tanh in float32 is exact enough to compare
    inside = (action.abs() < 0.99).all(-1)
    assert inside.sum() > 200
    expected = dist.log_prob(action).sum(-1)
    torch.testing.assert_close(log_prob[inside], expected[inside], rtol=1e-3, atol=1e-3)


def test_log_prob_of_given_actions_matches_sample_and_torch_distributions() -> None:
    actor = Actor(O, A, Z, SACConfig(hidden_sizes=(16,), pi_last_init=0.3))
    b = make_batch(n=256)
    action, log_prob = actor.sample(b.obs, b.task, torch.Generator().manual_seed(0))
    mean, log_std = actor(b.obs, b.task)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    )
    inside = (action.abs() < 0.99).all(-1)  # where atanh of a float32 action is exact enough
    assert inside.sum() > 200
    given = actor.log_prob(b.obs, b.task, action)
    torch.testing.assert_close(given[inside], log_prob[inside], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(given[inside], dist.log_prob(action).sum(-1)[inside], rtol=1e-3, atol=1e-3)
    # saturated actions (exactly +-1, as float32 tanh produces) stay finite
    edge = actor.log_prob(b.obs[:4], b.task[:4], torch.tensor([[1.0] * A, [-1.0] * A, [0.0] * A, [1.0, -1.0, 0.5]]))
    assert torch.isfinite(edge).all()


def test_actor_loss_does_not_build_critic_weight_gradients() -> None:
    critic = TwinCritic(O, A, Z, SMALL)
    b = make_batch()
    action = b.action.clone().requires_grad_(True)
    critic(b.obs, action, b.task, detach_params=True).sum().backward()
    assert action.grad is not None and all(p.grad is None for p in critic.parameters())


# ---- (g) replay -----------------------------------------------------------------------


def transitions(lo: int, hi: int) -> TransitionBatch:
    """Rows whose every field holds the row's integer id, so each can be traced."""
    x = np.arange(lo, hi, dtype=np.float32)
    n = hi - lo
    return TransitionBatch(
        obs=np.repeat(x[:, None], O, 1), action=np.repeat(x[:, None], A, 1), reward=x,
        next_obs=np.repeat(x[:, None] + 0.5, O, 1), terminated=(x % 2).astype(np.float32),
        task=np.repeat(x[:, None], Z, 1), reward_inputs=np.repeat(x[:, None] - 0.25, I, 1),
    ) if n else TransitionBatch(*(np.zeros((0,) + s, np.float32) for s in [(O,), (A,), (), (O,), (), (Z,), (I,)]))


@pytest.mark.parametrize(
    "inserts,expected,next_slot",
    [
        ([(0, 3)], [0, 1, 2, None, None], 3),
        ([(0, 3), (3, 7)], [5, 6, 2, 3, 4], 2),
        ([(0, 5)], [0, 1, 2, 3, 4], 0),
        ([(0, 3), (3, 7), (7, 20)], [15, 16, 17, 18, 19], 0),
        ([(0, 12)], [10, 11, 7, 8, 9], 2),
        ([(0, 2), (2, 2), (2, 4)], [0, 1, 2, 3, None], 4),
    ],
    ids=["partial", "wraps", "exactly-full", "batch-larger-than-capacity", "one-big-batch", "empty-insert"],
)
def test_replay_ring_contents(inserts, expected, next_slot) -> None:
    replay = Replay(5, O, A, Z, reward_input_dim=I)
    for lo, hi in inserts:
        replay.add(transitions(lo, hi))
    size = sum(e is not None for e in expected)
    assert len(replay) == size and replay._next == next_slot
    assert replay.inserted == sum(hi - lo for lo, hi in inserts)
    stored = replay._data.reward[:size].tolist()
    assert stored == [e for e in expected if e is not None]


def test_replay_sampling_is_uniform_consistent_and_seeded() -> None:
    replay = Replay(50, O, A, Z, reward_input_dim=I)
    replay.add(transitions(0, 80))  # holds ids 30..79
    b = replay.sample(4000, torch.Generator().manual_seed(0))
    ids = b.reward
    assert set(ids.long().tolist()) == set(range(30, 80))
    assert torch.all(b.obs == ids[:, None]) and torch.all(b.next_obs == ids[:, None] + 0.5)
    assert torch.all(b.task == ids[:, None]) and torch.equal(b.terminated, ids.long() % 2 == 1)
    assert b.reward_inputs.shape == (4000, I) and torch.all(b.reward_inputs == ids[:, None] - 0.25)
    counts = torch.bincount(ids.long() - 30, minlength=50).float()
    assert counts.min() > 40 and counts.max() < 125  # 80 expected each
    again = replay.sample(4000, torch.Generator().manual_seed(0))
    assert torch.equal(again.reward, ids)


def test_replay_state_dict_round_trip_and_errors() -> None:
    replay = Replay(6, O, A, Z, reward_input_dim=I)
    replay.add(transitions(0, 9))
    other = Replay(6, O, A, Z, reward_input_dim=I)
    other.load_state_dict(replay.state_dict())
    assert len(other) == 6 and other._next == replay._next and other.inserted == 9
    for x, y in zip(other._data, replay._data):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="capacity"):
        Replay(7, O, A, Z, reward_input_dim=I).load_state_dict(replay.state_dict())
    with pytest.raises(RuntimeError, match="empty"):
        Replay(3, O, A, Z).sample(2)
    with pytest.raises(ValueError, match="dims"):
        Replay(3, O + 1, A, Z, reward_input_dim=I).add(transitions(0, 2))
    with pytest.raises(ValueError, match="reward_inputs"):
        Replay(3, O, A, Z).add(transitions(0, 2))  # I = 0 replay, I = 2 rows


# ---- (h) Bellman target ---------------------------------------------------------------


@pytest.mark.parametrize(
    "r,d,next_q,logp,alpha,gamma,scale,expected",
    [
        (1.0, False, 3.0, 0.5, 0.2, 0.9, 1.0, 1.0 + 0.9 * (3.0 - 0.1)),
        (1.0, True, 3.0, 0.5, 0.2, 0.9, 1.0, 1.0),
        (2.0, False, -1.0, -2.0, 0.5, 0.99, 5.0, 10.0 + 0.99 * (-1.0 + 1.0)),
        (0.0, True, math.nan, math.nan, 0.1, 0.9, 1.0, 0.0),  # NaN after the end is ignored
        (-1.0, False, 0.0, 0.0, 1.0, 0.0, 1.0, -1.0),
    ],
    ids=["bootstrap", "terminal", "reward-scale", "terminal-nan", "gamma-0"],
)
def test_bellman_target_table(r, d, next_q, logp, alpha, gamma, scale, expected) -> None:
    t = lambda v: torch.tensor([v], dtype=torch.float32)  # noqa: E731
    y = bellman_target(t(r), torch.tensor([d]), t(next_q), t(logp), torch.tensor(alpha), gamma, scale)
    assert y.item() == pytest.approx(expected, rel=1e-6)


def test_losses_match_a_manual_computation_with_the_same_noise() -> None:
    cfg = SACConfig(hidden_sizes=(16, 16), discount=0.8, reward_scale=2.0, init_alpha=0.3)
    state = init_state(O, A, Z, cfg, "cpu", seed=2)
    b = make_batch(p_terminal=0.4)
    g = torch.Generator()
    g.set_state(state.generator.get_state())
    losses = compute_losses(state.nets, b, cfg, state.log_alpha, state.generator)

    alpha = 0.3
    with torch.no_grad():
        a2, logp2 = state.actor.sample(b.next_obs, b.task, g)
        q_next = state.target_critic(b.next_obs, a2, b.task)
        done = b.terminated.float()
        y = 2.0 * b.reward + 0.8 * (1 - done) * (torch.minimum(q_next[0], q_next[1]) - alpha * logp2)
        q = state.critic(b.obs, b.action, b.task)
        critic = ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean()
        a, logp = state.actor.sample(b.obs, b.task, g)
        q_pi = state.critic(b.obs, a, b.task)
        actor = (alpha * logp - torch.minimum(q_pi[0], q_pi[1])).mean()
        alpha_loss = -(math.log(alpha) * (logp - A)).mean()
    torch.testing.assert_close(losses.target_q, y.mean())
    torch.testing.assert_close(losses.critic, critic)
    torch.testing.assert_close(losses.actor, actor)
    torch.testing.assert_close(losses.alpha, alpha_loss)
    torch.testing.assert_close(losses.entropy, -logp.mean())


# ---- vocabulary, config ---------------------------------------------------------------


def test_bf16_matmul_switch_rounds_the_products_and_restores() -> None:
    """``set_cpu_bf16_matmul``: on a CPU with native bfloat16 the learner's float32 matmuls
    (mm, addmm, bmm, linear, eager and compiled) come out with bfloat16 products: far from the
    float64 product than float32's rounding, close to it at bfloat16's (8-bit mantissa), and
    the SAC update still runs and agrees with the float32 one to that precision. Without
    native bfloat16 the switch stays off and says why."""
    from learner.core import cpu_bf16_matmul_supported, cpu_bf16_matmuls

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 64, generator=g, dtype=torch.float64), torch.randn(64, 64, generator=g, dtype=torch.float64)
    exact = x @ y
    before = torch.backends.mkldnn.matmul.fp32_precision
    with cpu_bf16_matmuls(True) as note:
        err = float((x.float() @ y.float() - exact).abs().max())
        lin = float((torch.nn.functional.linear(x.float(), y.float()) - x @ y.T).abs().max())
        state = init_state(BENCH_O, BENCH_A, BENCH_Z, BENCH, "cpu", seed=3)
        _, m16 = update(state, bench_batch(seed=1))
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    fp32_err = float((x.float() @ y.float() - exact).abs().max())
    assert fp32_err < 1e-4
    _, m32 = update(init_state(BENCH_O, BENCH_A, BENCH_Z, BENCH, "cpu", seed=3), bench_batch(seed=1))
    if not cpu_bf16_matmul_supported():
        assert "no native bfloat16" in note and err == fp32_err
        return
    assert note == ""
    # 64-term dot products of N(0, 1) entries: bfloat16 inputs round at 2^-9 relative
    assert 1e-3 < err < 0.5 and 1e-3 < lin < 0.5
    assert m16 == pytest.approx(m32, rel=5e-2, abs=5e-3) and m16 != m32


def test_to_torch_and_pick_device() -> None:
    tb = transitions(0, 4)
    b = to_torch(tb, "cpu")
    assert b.terminated.dtype == torch.bool and b.obs.dtype == torch.float32 and b.size == 4
    with pytest.raises(ValueError, match="terminated"):
        to_torch(TransitionBatch(*tb[:4], np.zeros(3, np.float32), tb.task, tb.reward_inputs), "cpu")
    with pytest.raises(ValueError, match="reward_inputs"):
        to_torch(TransitionBatch(*tb[:6], tb.reward_inputs[:3]), "cpu")
    assert torch.equal(b.reward_inputs, torch.as_tensor(tb.reward_inputs))
    # read-only arrays (Ray's arguments are views of its object store): copied, no warning
    frozen = TransitionBatch(*(np.asarray(x, dtype=np.float32) for x in tb))
    for x in frozen:
        x.flags.writeable = False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = to_torch(frozen, "cpu")
    assert torch.equal(got.obs, b.obs) and got.obs.data_ptr() != frozen.obs.ctypes.data
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_family_defaults() -> None:
    assert sac_defaults("point_trajectory")["hidden_sizes"] == (400, 300)
    assert sac_defaults("point_trajectory")["batch_size"] == 128
    assert sac_defaults("point_reacher")["hidden_sizes"] == (300, 300, 300)
    assert sac_defaults("point_reacher")["actor_lr"] == 3e-3
    assert sac_defaults("half_cheetah_mo")["critic_lr"] == 3e-4
    assert sac_defaults("walker_linear")["task_to_all_layers"] is False
    assert sac_defaults("test_goal")["hidden_sizes"] == (64, 64)
    assert sac_defaults("point_reacher")["discount"] == 0.97
    assert sac_defaults("test_goal")["discount"] == TestGoal.discount
    # learner-bound families compile their update; small networks stay eager
    assert all(sac_defaults(f).get("compile") for f in ("point_trajectory", "point_reacher", "fetch_reach",
                                                         "half_cheetah_mo", "reacher_goal"))
    assert not any(sac_defaults(f).get("compile") for f in ("maze", "test_goal"))
    assert "discount" not in sac_defaults("not_a_registered_family")
    cfg = sac_config_for(TestLinear(), batch_size=7)
    assert cfg.discount == TestLinear.discount and cfg.batch_size == 7
    assert SACConfig().entropy_target(6) == -6.0
    with pytest.raises(ValueError, match="bogus"):
        SACConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="task_repeat"):
        SACConfig(task_repeat=0)


# ---- CUDA -----------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_replay_and_checkpoint_on_cuda(tmp_path) -> None:
    device = torch.device("cuda")
    state = init_state(O, A, Z, SMALL, device, seed=0)
    replay = Replay(100, O, A, Z, device, reward_input_dim=I)
    replay.add(transitions(0, 64))
    for _ in range(3):
        state, metrics = update(state, replay.sample(B, state.generator))
    assert all(math.isfinite(v) for v in metrics.values())
    assert state.actor.net.layers[0].weight.is_cuda and state.log_alpha.is_cuda
    weights = policy_weights(state)
    assert all(isinstance(v, np.ndarray) for v in weights.values())
    save_state(state, tmp_path / "ckpt.pt")
    batch = make_batch(device=device)
    resumed = load_state(tmp_path / "ckpt.pt", device)
    _, m1 = update(state, batch)
    _, m2 = update(resumed, batch)
    assert m1 == m2
    on_cpu = load_state(tmp_path / "ckpt.pt", "cpu")
    assert on_cpu.step == 3 and not on_cpu.log_alpha.is_cuda
    policy = InferencePolicy(O, A, Z, SMALL, device=device, seed=0)
    policy.load_state_dict(weights)
    assert policy(np.zeros((4, O), np.float32), np.zeros((4, Z), np.float32)).shape == (4, A)
