"""HIPI-RL in-batch relabeling (learner/sac/hipi_rl.py): logits against a plain double loop,
recomputed rewards and terminations, untouched rows, sampling, partition function, pickling.

Rows carry a sentinel reward (999) that no family produces, so a returned row with 999 was
not relabeled and every other row was (TorchRL's HER tests use the same device).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from envs import get_family
from envs.core import StepBatch
from envs.testing import TestGoal
from learner.core import Batch
from learner.sac.config import SACConfig
from learner.sac.hipi_rl import (
    STAT_NAMES,
    HipiRLRelabeler,
    hipi_rl_relabel,
    hipi_rl_scores,
    make_hipi_rl_relabeler,
    sample_task_indices,
)
from learner.sac.update import init_state
from relabel_service.strategies.config import StrategyConfig
from relabel_service.strategies.kernels import hipi_log_probs

SENTINEL = 999.0


class ReachGoal(TestGoal):
    """test_goal that ends within 0.6 of the goal: termination depends on the task."""

    __test__ = False
    task_dependent_termination = True

    def terminal_fn(self, steps, tasks):
        return np.linalg.norm(np.asarray(steps.next_obs) - tasks, axis=-1) < 0.6


class TimeoutGoal(TestGoal):
    """test_goal whose stored time-limit steps are terminal (as the GH point envs)."""

    __test__ = False
    timeout_is_terminal = True


class ShiftedGoal(TestGoal):
    """test_goal plus a constant on every task with x > 0: a constant per reward column."""

    __test__ = False
    shift = 5.0

    def reward_fn(self, steps, tasks):
        return super().reward_fn(steps, tasks) + self.shift * (np.asarray(tasks)[..., 0] > 0)


GOAL, CHEETAH = get_family("test_goal"), get_family("half_cheetah_mo")
FAMILIES = {"test_goal": GOAL, "reach": ReachGoal(), "timeout": TimeoutGoal(), "half_cheetah_mo": CHEETAH}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_state(family, reward_scale: float = 2.0, seed: int = 0):
    cfg = SACConfig(hidden_sizes=(16, 16), discount=0.9, reward_scale=reward_scale, pi_last_init=0.3)
    return init_state(family.obs_dim, family.action_dim, family.task_dim, cfg, "cpu", seed)


def make_batch(family, n: int = 8, seed: int = 0, distinct_tasks: int | None = None) -> Batch:
    """n random steps of the family's dims; tasks from the prior (``distinct_tasks`` of them,
    repeated, as transitions of one episode share a task); rewards are the sentinel."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, family.obs_dim))
    action = rng.uniform(-0.95, 0.95, (n, family.action_dim))
    next_obs = np.clip(obs + 0.2 * rng.uniform(-1, 1, obs.shape), -1, 1)
    tasks = family.sample_tasks(rng, distinct_tasks or n)[np.arange(n) % (distinct_tasks or n)]
    terminated = rng.random(n) < 0.3 if family.timeout_is_terminal else np.zeros(n, dtype=bool)
    f32 = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
    return Batch(
        obs=f32(obs), action=f32(action), reward=torch.full((n,), SENTINEL), next_obs=f32(next_obs),
        terminated=torch.as_tensor(terminated), task=f32(tasks),
        reward_inputs=f32(rng.normal(size=(n, family.reward_input_dim))),
    )


def steps_of(batch: Batch) -> StepBatch:
    return StepBatch(*(x.numpy() for x in (batch.obs, batch.action, batch.next_obs, batch.reward_inputs)))


def relabel(family, batch, seed=0, fraction=0.5, state=None, **kw):
    state = state if state is not None else make_state(family)
    return hipi_rl_relabel(family, state, batch, torch.Generator().manual_seed(seed), relabel_fraction=fraction, **kw)


# ---- (a) recomputed rewards and terminations ---------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILIES))
def test_relabeled_rows_get_the_familys_reward_and_termination(name):
    family = FAMILIES[name]
    batch = make_batch(family, n=16, seed=1)
    out, stats = relabel(family, batch, fraction=1.0)
    steps, new_tasks = steps_of(batch), out.task.numpy()
    assert not (out.reward == SENTINEL).any()  # every row recomputed
    # stored rewards are unscaled (the SAC loss multiplies by reward_scale, here 2)
    np.testing.assert_allclose(out.reward.numpy(), family.rewards_for(steps, new_tasks), rtol=1e-6, atol=1e-6)
    expect_term = family.terminals_for(steps, new_tasks).copy()
    if family.timeout_is_terminal:  # a stored time-limit end stays terminal under every task
        expect_term |= batch.terminated.numpy()
    np.testing.assert_array_equal(out.terminated.numpy(), expect_term)
    assert out.terminated.dtype == torch.bool and out.reward.dtype == torch.float32
    assert set(stats) == set(STAT_NAMES) and all(isinstance(v, float) for v in stats.values())
    if name == "reach":
        assert 0 < expect_term.sum() < len(expect_term)  # the case exercises both outcomes


# ---- (b), (c) untouched rows; fractions 0 and 1 ----------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_not_relabeled_are_bitwise_untouched(seed):
    batch = make_batch(CHEETAH, n=32, seed=seed, distinct_tasks=8)
    out, stats = relabel(CHEETAH, batch, seed=seed, fraction=0.5)
    kept = out.reward == SENTINEL
    assert 0 < kept.sum() < 32
    assert stats["fraction_relabeled"] == pytest.approx(1 - kept.float().mean().item())
    for name, x, y in zip(Batch._fields, out, batch):
        assert torch.equal(x[kept], y[kept]), name
    for name in ("obs", "action", "next_obs", "reward_inputs"):  # never changed, relabeled or not
        assert torch.equal(getattr(out, name), getattr(batch, name)), name


def test_fraction_zero_changes_nothing_and_one_relabels_all_rows_with_batch_tasks():
    batch = make_batch(GOAL, n=24, seed=3, distinct_tasks=6)
    out, stats = relabel(GOAL, batch, fraction=0.0)
    assert all(torch.equal(x, y) for x, y in zip(out, batch)) and stats["fraction_relabeled"] == 0.0
    out, stats = relabel(GOAL, batch, fraction=1.0)
    assert stats["fraction_relabeled"] == 1.0 and not (out.reward == SENTINEL).any()
    batch_tasks = {tuple(t) for t in batch.task.tolist()}
    assert all(tuple(t) in batch_tasks for t in out.task.tolist())
    assert 0.0 < stats["fraction_chosen_differs"] <= 1.0
    assert 1 / 24 <= stats["mean_max_prob"] <= 1.0 and 0.0 <= stats["entropy"] <= np.log(24) + 1e-5


# ---- (d) vectorised logits == a plain double loop ---------------------------------------------------
@pytest.mark.parametrize("name", ["reach", "timeout", "half_cheetah_mo"])
def test_logits_equal_a_double_loop_of_single_row_calls(name):
    family = FAMILIES[name]
    B = 6
    batch = make_batch(family, n=B, seed=4)
    state = make_state(family, reward_scale=2.0, seed=1)
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn((B * B, family.action_dim), generator=torch.Generator().set_state(gen.get_state()))
    scores = hipi_rl_scores(family, state, batch, gen)  # its only draw: next-action noise, rows i*B+j

    steps = steps_of(batch)
    expected = torch.zeros(B, B)
    with torch.no_grad():
        for i in range(B):
            row = StepBatch(*(x[i:i + 1] for x in steps))
            s, a, s2 = batch.obs[i:i + 1], batch.action[i:i + 1], batch.next_obs[i:i + 1]
            for j in range(B):
                z = batch.task[j:j + 1]
                r = float(family.rewards_for(row, z.numpy())[0])
                done = bool(family.terminals_for(row, z.numpy())[0])
                if family.timeout_is_terminal and bool(batch.terminated[i]):
                    # a stored terminal that its own task does not explain is the time limit
                    done |= not bool(family.terminals_for(row, batch.task[i:i + 1].numpy())[0])
                log_pi = state.actor.log_prob(s, z, a)[0]
                mean, log_std = state.actor(s2, z)
                a2 = torch.tanh(mean + log_std.exp() * noise[i * B + j])
                q1 = state.critic(s2, a2, z)[0, 0]
                expected[i, j] = state.cfg.reward_scale * r - log_pi + state.cfg.discount * (1.0 - done) * q1
                assert scores.reward[i, j].item() == pytest.approx(r, rel=1e-6, abs=1e-6)
                assert bool(scores.terminated[i, j]) == done
    torch.testing.assert_close(scores.logits, expected, rtol=1e-5, atol=1e-4)
    if name == "reach":
        assert scores.terminated.any() and not scores.terminated.all()


# ---- (e) sampling follows q ---------------------------------------------------------------------
def test_gumbel_max_sampling_follows_the_normalised_logits():
    L = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 2
    log_q = hipi_log_probs(L, 1.0, True)
    n = 40_000
    draws = sample_task_indices(log_q.expand(n, 5, 5), torch.Generator().manual_seed(1))  # [n, 5]
    freq = torch.nn.functional.one_hot(draws, 5).float().mean(0)  # [5, 5]
    torch.testing.assert_close(freq, log_q.exp(), rtol=0, atol=0.015)
    assert sample_task_indices(torch.tensor([[0.0, -torch.inf, 0.0]]).expand(1000, 3)).ne(1).all()


def test_relabeled_tasks_follow_q_of_each_call():
    """End to end: the task each row gets (fraction 1, distinct tasks) averaged over many
    calls matches the average q(. | i) those calls computed (each call draws its own a')."""
    B, calls = 4, 1200
    batch = make_batch(GOAL, n=B, seed=5)
    state = make_state(GOAL, reward_scale=5.0)
    gen = torch.Generator().manual_seed(0)
    expected, counts = torch.zeros(B, B), torch.zeros(B, B)
    for _ in range(calls):
        before = torch.Generator().set_state(gen.get_state())
        expected += hipi_log_probs(hipi_rl_scores(GOAL, state, batch, before).logits, 1.0, True).exp()
        out, _ = hipi_rl_relabel(GOAL, state, batch, gen, relabel_fraction=1.0)
        chosen = (out.task[:, None, :] == batch.task[None, :, :]).all(-1)  # [B, J] one-hot
        assert torch.equal(chosen.sum(1), torch.ones(B, dtype=torch.long))
        counts += chosen.float()
    expected, freq = expected / calls, counts / calls
    assert expected.max() - expected.min() > 0.1  # q is far from uniform here
    torch.testing.assert_close(freq, expected, rtol=0, atol=0.05)


# ---- (f) the partition function ----------------------------------------------------------------------
def test_partition_cancels_a_constant_added_to_a_task_column():
    shifted = ShiftedGoal()
    batch = make_batch(GOAL, n=8, seed=6)
    cols = batch.task[:, 0] > 0
    assert 0 < cols.sum() < 8
    state = make_state(GOAL, reward_scale=2.0)
    base = hipi_rl_scores(GOAL, state, batch, torch.Generator().manual_seed(3))
    moved = hipi_rl_scores(shifted, state, batch, torch.Generator().manual_seed(3))
    torch.testing.assert_close(moved.logits - base.logits, (2.0 * ShiftedGoal.shift * cols.float()).expand(8, 8),
                               rtol=0, atol=1e-4)
    with_z = [hipi_log_probs(s.logits, 1.0, True) for s in (base, moved)]
    without_z = [hipi_log_probs(s.logits, 1.0, False) for s in (base, moved)]
    torch.testing.assert_close(with_z[0], with_z[1], rtol=0, atol=1e-4)
    assert (without_z[0] - without_z[1]).abs().max() > 1.0


# ---- the relabeler object ----------------------------------------------------------------------------
def test_relabeler_pickles_without_its_family_and_matches_the_pure_function():
    cfg = StrategyConfig(temperature=2.0, partition=False, hipi_relabel_fraction=0.75)
    relabeler = make_hipi_rl_relabeler(CHEETAH, cfg)
    assert (relabeler.temperature, relabeler.partition, relabeler.relabel_fraction) == (2.0, False, 0.75)
    copy = pickle.loads(pickle.dumps(relabeler))
    assert copy._family is None and isinstance(copy.family, type(CHEETAH))
    batch, state = make_batch(CHEETAH, n=8), make_state(CHEETAH)
    got, stats = copy(state, batch, torch.Generator().manual_seed(0))
    want, want_stats = hipi_rl_relabel(CHEETAH, state, batch, torch.Generator().manual_seed(0),
                                       temperature=2.0, partition=False, relabel_fraction=0.75)
    assert all(torch.equal(x, y) for x, y in zip(got, want)) and stats == want_stats


def test_make_relabeler_rejects_a_family_the_registry_would_not_rebuild():
    with pytest.raises(ValueError, match="family_kwargs"):
        make_hipi_rl_relabeler(ReachGoal(), StrategyConfig())  # named test_goal, another class
    reacher = get_family("reacher_goal", margin=0.05)
    with pytest.raises(ValueError, match="family_kwargs"):
        make_hipi_rl_relabeler(reacher, StrategyConfig())
    assert make_hipi_rl_relabeler(reacher, StrategyConfig(), {"margin": 0.05}).family.margin == 0.05
    with pytest.raises(ValueError, match="relabel_fraction"):
        HipiRLRelabeler("test_goal", relabel_fraction=1.5)
    with pytest.raises(ValueError, match="reward_inputs"):
        relabel(CHEETAH, make_batch(GOAL))  # I = 0 rows for an I = 3 family


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_relabel_on_cuda_keeps_tensors_on_the_device():
    device = torch.device("cuda")
    cfg = SACConfig(hidden_sizes=(16, 16), discount=0.9)
    state = init_state(CHEETAH.obs_dim, CHEETAH.action_dim, CHEETAH.task_dim, cfg, device, 0)
    batch = Batch(*(x.to(device) for x in make_batch(CHEETAH, n=16)))
    gen = torch.Generator(device=device).manual_seed(0)
    out, _ = hipi_rl_relabel(CHEETAH, state, batch, gen, relabel_fraction=1.0)
    assert all(x.device.type == "cuda" for x in out)
    cpu = Batch(*(x.cpu() for x in out))
    np.testing.assert_allclose(cpu.reward.numpy(), CHEETAH.rewards_for(steps_of(cpu), cpu.task.numpy()), rtol=1e-5)
