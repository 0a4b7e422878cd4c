"""The rollout workers' numpy policy (``actors.policy.NumpyPolicy``): the SAC actor's function
(``learner.sac.networks.Actor``) from its weights, a process that holds it never imports
torch, and ``blas_threads`` sets and restores numpy's BLAS threads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from actors.policy import NumpyPolicy, _openblas, blas_threads
from learner.sac.config import SACConfig
from learner.sac.networks import Actor
from learner.sac.update import policy_weights, init_state

O, A, Z = 5, 3, 4


def _actor(cfg: SACConfig, seed: int = 0) -> Actor:
    """An actor whose task parts matter (the rlkit init's last layer is ~0)."""
    actor = Actor(O, A, Z, cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in actor.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return actor


def _weights(actor: Actor) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in actor.state_dict().items()}


@pytest.mark.parametrize("to_all", [True, False])
@pytest.mark.parametrize("repeat", [1, 3])
def test_deterministic_actions_are_the_torch_actors(to_all, repeat):
    cfg = SACConfig(hidden_sizes=(32, 16), task_to_all_layers=to_all, task_repeat=repeat)
    actor = _actor(cfg)
    policy = NumpyPolicy(O, A, Z, cfg)
    policy.load_weights(_weights(actor), version=7)
    assert policy.version == 7
    rng = np.random.default_rng(0)
    obs, tasks = rng.normal(size=(6, O)), rng.normal(size=(6, Z))
    got = policy.act(obs, tasks, deterministic=True)
    with torch.no_grad():
        expect = torch.tanh(actor(torch.as_tensor(obs, dtype=torch.float32),
                                  torch.as_tensor(tasks, dtype=torch.float32))[0]).numpy()
    assert got.dtype == np.float32 and got.shape == (6, A)
    np.testing.assert_allclose(got, expect, atol=2e-6)


@pytest.mark.parametrize("to_all", [True, False])
def test_stochastic_actions_are_tanh_of_mean_plus_std_times_the_rngs_normal_draw(to_all):
    cfg = SACConfig(hidden_sizes=(32, 16), task_to_all_layers=to_all, task_repeat=2, log_std_max=0.5)
    actor = _actor(cfg, seed=1)
    policy = NumpyPolicy(O, A, Z, cfg)
    policy.load_weights(_weights(actor))
    rng = np.random.default_rng(3)
    obs, tasks = rng.normal(size=(4, O)), rng.normal(size=(4, Z))
    got = policy.act(obs, tasks, rng=np.random.default_rng(11))
    eps = np.random.default_rng(11).standard_normal((4, A), dtype=np.float32)
    with torch.no_grad():
        mean, log_std = actor(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(tasks, dtype=torch.float32))
    # the actor clamps the log-std (here to log_std_max = 0.5, which the 0.3-scaled weights exceed)
    assert float(log_std.max()) == pytest.approx(0.5)
    expect = np.tanh(mean.numpy() + np.exp(log_std.numpy()) * eps)
    np.testing.assert_allclose(got, expect, atol=2e-6)
    # the policy's own generator when no rng is given: seeded, so two policies agree
    other = NumpyPolicy(O, A, Z, cfg, seed=0)
    other.load_weights(_weights(actor))
    again = NumpyPolicy(O, A, Z, cfg, seed=0)
    again.load_weights(_weights(actor))
    np.testing.assert_array_equal(other.act(obs, tasks), again.act(obs, tasks))


def test_act_into_equals_act_on_strided_rows_into_float64():
    cfg = SACConfig(hidden_sizes=(16, 16), task_repeat=2)
    policy = NumpyPolicy(O, A, Z, cfg)
    policy.load_weights(_weights(_actor(cfg)))
    rng = np.random.default_rng(0)
    tasks = rng.normal(size=(3, Z))
    rec = rng.normal(size=(3, 10, O))  # a worker's [E, H + 1, O] buffer: rows of step t are strided
    out = np.zeros((3, A))
    policy.begin(tasks)
    for t in range(3):
        policy.act_into(rec[:, t], out, rng=np.random.default_rng(t))
        np.testing.assert_allclose(out, policy.act(rec[:, t], tasks, rng=np.random.default_rng(t)), atol=1e-6)
        policy.begin(tasks)  # act re-binds: bind the round's tasks again
    with pytest.raises(ValueError, match="3 bound tasks"):
        policy.act_into(rec[:2, 0], out[:2])
    policy.load_weights(policy.state_dict())
    with pytest.raises(ValueError, match="call begin first"):
        policy.act_into(rec[:, 0], out)


def test_learner_weights_load_and_the_initial_weights_follow_the_rlkit_init():
    cfg = SACConfig(hidden_sizes=(64, 32))
    fresh = NumpyPolicy(O, A, Z, cfg, seed=4).state_dict()
    sizes = cfg.layer_sizes(O, 2 * A, Z)
    assert [v.shape for v in fresh.values()] == [s for fi, fo in sizes for s in ((fo, fi), (fo,))]
    for i, (fan_in, _) in enumerate(sizes[:-1]):
        assert np.abs(fresh[f"net.layers.{i}.weight"]).max() <= 1 / np.sqrt(fan_in)
        np.testing.assert_array_equal(fresh[f"net.layers.{i}.bias"], np.float32(cfg.hidden_bias_init))
    last = len(sizes) - 1
    assert np.abs(fresh[f"net.layers.{last}.weight"]).max() <= cfg.pi_last_init
    assert np.abs(fresh[f"net.layers.{last}.bias"]).max() <= cfg.pi_last_init
    # what the learner publishes loads as it is
    state = init_state(O, A, Z, cfg, "cpu", seed=0)
    policy = NumpyPolicy(O, A, Z, cfg)
    policy.load_weights(policy_weights(state))
    for k, v in policy_weights(state).items():
        np.testing.assert_array_equal(policy.state_dict()[k], v)


def test_bad_weights_name_the_key():
    cfg = SACConfig(hidden_sizes=(8, 8))
    policy = NumpyPolicy(O, A, Z, cfg)
    good = policy.state_dict()
    missing = {k: v for k, v in good.items() if k != "net.layers.1.bias"}
    with pytest.raises(KeyError, match="net.layers.1.bias"):
        policy.load_weights(missing)
    with pytest.raises(ValueError, match=r"'net.layers.0.weight' has shape \(8, 10\)"):
        policy.load_weights({**good, "net.layers.0.weight": np.zeros((8, 10))})
    with pytest.raises(KeyError, match="critic.q"):
        policy.load_weights({**good, "critic.q": np.zeros(1)})
    with pytest.raises(ValueError, match=r"tasks of shape \(2, 3\)"):
        policy.begin(np.zeros((2, 3)))


def _imports_torch(code: str) -> bool:
    """Runs ``code`` in a fresh interpreter; whether torch was imported by its end."""
    out = subprocess.run([sys.executable, "-c", code + "import sys\nprint('torch' in sys.modules)\n"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() != "False"


def test_a_rollout_worker_process_never_imports_torch():
    code = (
        "from actors.pool import RolloutActor\n"
        "from envs import get_family\n"
        "from learner.sac.config import sac_config_for\n"
        "w = RolloutActor(store=None, worker_id=0, family='point_reacher', num_envs=2,\n"
        "                 net_cfg=sac_config_for(get_family('point_reacher')), seed=0)\n"
        "trajs, stats = w.collect_episodes()\n"
        "assert stats['env_steps'] > 0, stats\n"
        "w.evaluate(None, w.family.eval_tasks_for(2))\n"
    )
    assert not _imports_torch(code)


@pytest.mark.skipif(_openblas() is None, reason="numpy's BLAS is not the bundled OpenBLAS")
def test_blas_threads_sets_and_restores():
    get, _ = _openblas()
    before = get()
    with blas_threads(1):
        assert get() == 1
    assert get() == before


def test_the_meta_workers_pearl_agent_is_the_learners_encoder_and_actor():
    from actors.policy import NumpyPEARLAgent
    from learner.pearl.config import pearl_config_for
    from learner.pearl.networks import make_networks

    cfg = pearl_config_for("four_corners", encoder_hidden=(16, 16), hidden_sizes=(32, 32), latent_dim=3)
    obs_dim, action_dim = 4, 2
    nets = make_networks(obs_dim, action_dim, cfg, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # weights far from the init, large variances and softplus's linear branch included
        for p in [*nets.encoder.parameters(), *nets.actor.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    weights = {f"encoder.{k}": v.numpy() for k, v in nets.encoder.state_dict().items()}
    weights.update({f"actor.{k}": v.numpy() for k, v in nets.actor.state_dict().items()})
    agent = NumpyPEARLAgent(obs_dim, action_dim, cfg, seed=0)
    agent.load_state_dict(weights, version=4)
    assert agent.version == 4 and agent.policy.version == 4
    rng = np.random.default_rng(0)
    ctx = (rng.normal(size=(7, cfg.context_dim(obs_dim, action_dim))) * 3).astype(np.float32)
    mu, var = agent.posterior(ctx)
    with torch.no_grad():
        post = nets.encoder.posterior(torch.as_tensor(ctx)[None])
    np.testing.assert_allclose(mu, post.mu[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, post.var[0].numpy(), rtol=1e-5, atol=1e-7)
    assert [x.tolist() for x in agent.posterior(None)] == [[0.0] * 3, [1.0] * 3]
    obs = rng.normal(size=(5, obs_dim))
    z = np.tile(mu, (5, 1))
    with torch.no_grad():
        det = torch.tanh(nets.actor(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(z))[0]).numpy()
    np.testing.assert_allclose(agent.act(obs, z, deterministic=True), det, atol=2e-6)
    out = np.zeros((1, action_dim))
    agent.begin(z[:1])
    agent.act_into(obs[:1], out, deterministic=True)
    np.testing.assert_allclose(out, det[:1], atol=2e-6)
    with pytest.raises(KeyError, match="critic"):
        agent.load_state_dict({**weights, "critic.net.weights.0": np.zeros(1)})
    with pytest.raises(KeyError, match="encoder.net.layers.2.bias"):
        agent.load_state_dict({k: v for k, v in weights.items() if k != "encoder.net.layers.2.bias"})
    with pytest.raises(ValueError, match=r"context of shape \(2, 3\)"):
        agent.posterior(np.zeros((2, 3)))


def test_a_meta_rollout_worker_process_never_imports_torch():
    code = (
        "from actors.pool import MetaRolloutActor\n"
        "from learner.pearl.config import pearl_config_for\n"
        "cfg = pearl_config_for('four_corners', encoder_hidden=(16, 16), hidden_sizes=(32, 32))\n"
        "w = MetaRolloutActor(store=None, worker_id=0, family='four_corners', pearl_cfg=cfg, seed=0)\n"
        "trajs, stats = w.collect_task(0, [('prior', 40, False), ('posterior', 40, True)])\n"
        "assert stats['env_steps'] >= 80, stats\n"
        "w.evaluate_meta(None, w.family.test_tasks()[:1], num_exploration=1, num_trajectories=2)\n"
    )
    assert not _imports_torch(code)


# ---- the relabel workers' V(s0, z) --------------------------------------------------------------
def _value_state(cfg: SACConfig, seed: int = 0):
    """A SAC state whose actor and critic are far from the init (task parts matter)."""
    state = init_state(O, A, Z, cfg, "cpu", seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in [*state.actor.parameters(), *state.critic.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return state


@pytest.mark.parametrize("to_all", [True, False])
@pytest.mark.parametrize("repeat", [1, 3])
def test_the_value_function_is_min_q_at_the_deterministic_action(to_all, repeat):
    """``make_value_fn_factory`` (numpy, picklable) from ``value_weights``: V(s0, z) =
    min(Q1, Q2)(s0, tanh mu(s0, z), z) of the torch networks, for every (trajectory, task)."""
    import pickle

    from learner.sac.update import make_value_fn_factory, value_weights

    cfg = SACConfig(hidden_sizes=(32, 16), task_to_all_layers=to_all, task_repeat=repeat)
    state = _value_state(cfg)
    value_fn = pickle.loads(pickle.dumps(make_value_fn_factory(cfg, O, A, Z)))(value_weights(state))
    rng = np.random.default_rng(0)
    obs0, tasks = rng.normal(size=(3, O)), rng.normal(size=(3, 4, Z))
    v = value_fn(obs0, tasks)
    assert v.shape == (3, 4) and v.dtype == np.float64
    o = torch.as_tensor(np.repeat(obs0, 4, axis=0), dtype=torch.float32)
    z = torch.as_tensor(tasks.reshape(12, Z), dtype=torch.float32)
    with torch.no_grad():
        a = torch.tanh(state.actor(o, z)[0])
        expected = state.critic(o, a, z).amin(dim=0).reshape(3, 4).double().numpy()
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-5)
    assert np.ptp(expected) > 0.1  # the tasks and states matter


@pytest.mark.parametrize("chunk", [1, 7, 12, 1000])
def test_the_value_function_in_chunks_equals_it_in_one_block(monkeypatch, chunk):
    """V(s0, z) is evaluated a few trajectories at a time (``VALUE_CHUNK_ROWS`` pairs, at
    least one trajectory's K): the same values as all M K pairs in one block (row by row
    the same products; float32 BLAS may round a row differently by its block's size)."""
    from actors import policy
    from learner.sac.update import make_value_fn_factory, value_weights

    cfg = SACConfig(hidden_sizes=(32, 16))
    value_fn = make_value_fn_factory(cfg, O, A, Z)(value_weights(_value_state(cfg)))
    rng = np.random.default_rng(1)
    obs0, tasks = rng.normal(size=(9, O)), rng.normal(size=(9, 5, Z))
    monkeypatch.setattr(policy, "VALUE_CHUNK_ROWS", 10**6)
    whole = value_fn(obs0, tasks)
    monkeypatch.setattr(policy, "VALUE_CHUNK_ROWS", chunk)
    np.testing.assert_allclose(value_fn(obs0, tasks), whole, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retain_freed_memory_sets_the_heap_thresholds():
    # in a fresh process (the setting is process-wide): mallopt accepts both values
    code = "from actors.policy import retain_freed_memory; assert retain_freed_memory()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_bad_value_weights_name_the_key():
    from actors.policy import NumpyValueFunction
    from learner.sac.update import value_weights

    cfg = SACConfig(hidden_sizes=(8, 8))
    w = value_weights(_value_state(cfg))
    missing = {k: v for k, v in w.items() if k != "critic.net.weights.1"}
    with pytest.raises(KeyError, match="critic.net.weights.1"):
        NumpyValueFunction(O, A, Z, cfg, missing)
    with pytest.raises(ValueError, match="critic.net.biases.0"):
        NumpyValueFunction(O, A, Z, cfg, {**w, "critic.net.biases.0": np.zeros((2, 1, 9))})
    with pytest.raises(KeyError, match="critic.net.weights.7"):
        NumpyValueFunction(O, A, Z, cfg, {**w, "critic.net.weights.7": np.zeros(1)})
    with pytest.raises(KeyError, match="actor.net.layers.0.weight"):
        NumpyValueFunction(O, A, Z, cfg, {k: v for k, v in w.items() if k != "actor.net.layers.0.weight"})


def test_a_relabel_worker_process_with_a_value_function_never_imports_torch(tmp_path):
    """The trainer pickles the factory and the learner publishes numpy weights: a relabel
    worker unpickles both and relabels with advantage (V(s0, z) for every candidate) and
    AIR (its tie-break) without torch. (HalfCheetahMO: the point families' rewards import
    torch for its vectorised sine, exp and log, ``envs/fastmath.py``.)"""
    import pickle

    from envs import get_family
    from learner.sac.config import sac_config_for
    from learner.sac.update import make_value_fn_factory, value_weights

    fam = get_family("half_cheetah_mo")
    cfg = sac_config_for(fam)
    state = init_state(fam.obs_dim, fam.action_dim, fam.task_dim, cfg, "cpu", seed=0)
    blob = tmp_path / "value.pkl"
    blob.write_bytes(pickle.dumps((make_value_fn_factory(cfg, fam.obs_dim, fam.action_dim, fam.task_dim),
                                   value_weights(state))))
    code = (
        "import pickle, time\n"
        "import numpy as np\n"
        "from benchmarks.relabel import synth_trajectories\n"
        "from envs import get_family\n"
        "from relabel_service.strategies.config import StrategyConfig\n"
        "from relabel_service.worker import RelabelWorker\n"
        f"factory, weights = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
        "fam = get_family('half_cheetah_mo')\n"
        "trajs = synth_trajectories(fam, 6, 50, np.random.default_rng(0))\n"
        "for name in ('advantage', 'air'):\n"
        "    w = RelabelWorker(worker_id=0, family='half_cheetah_mo', strategy=name, strategy_cfg=StrategyConfig(reference_size=0),\n"
        "                      store=None, shard_ids=[0], discount=fam.discount, seed=0, value_fn_factory=factory)\n"
        "    w.set_value_weights(1, weights)\n"
        "    batch, stats = w._relabel(trajs, {}, time.perf_counter(), w.strategy)\n"
        "    assert stats['relabeled_copies'] == 6 and len(batch) > 0, stats\n"
    )
    assert not _imports_torch(code)
