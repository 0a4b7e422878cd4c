"""GH Fetch reach (envs/fetch.py): the GH reward on hand-computed cases and against a plain double
loop (pure numpy, always run); the simulator's reward equals the family's and the dynamics are
GH's (need the optional extra ``.[robotics]``: skipped with the reason when it is missing)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from envs import get_family
from envs.core import StepBatch
from envs.fetch import GH_EVAL_LATENTS, INITIAL_GRIPPER_XPOS, FetchReach

G = INITIAL_GRIPPER_XPOS
PH_60 = 0.75  # v = 0.75: ph = arccos(0.5) = 60 deg, weights (sin 60 cos th, sin 60 sin th, 0.5)


def _task(u: float, v: float, goal, obstacle) -> np.ndarray:
    return np.concatenate([[u, v], goal, obstacle])


def _step(e, action=(0.0, 0.0, 0.0, 0.0)) -> StepBatch:
    nxt = np.concatenate([e, np.zeros(7), [0.1]])[None]
    return StepBatch(np.zeros((1, 11)), np.asarray(action, float)[None], nxt, np.zeros((1, 0)))


FAR = G + np.array([0.2, 0.2, 0.2])  # an obstacle / goal far from everything below
# (name, sparse, task, gripper position after the step, action, expected reward worked out by hand)
CASES = [
    # u = 0, v = .5: ph = 90 deg, th = 0 -> weights (1, 0, 0): the reach term alone
    ("reach-at-goal", 1.0, _task(0, 0.5, G, FAR), G, (0, 0, 0, 0), 1.0),
    ("reach-one-width", 1.0, _task(0, 0.5, G, FAR), G + [0.08, 0, 0], (0, 0, 0, 0), math.exp(-1.0)),
    ("reach-half-scale", 0.5, _task(0, 0.5, G, FAR), G + [0, 0.08, 0], (0, 0, 0, 0), 0.5 * math.exp(-1.0)),
    ("indicator-in", 2.0, _task(0, 0.5, G, FAR), G + [0, 0, 0.03], (0, 0, 0, 0), 1.0),
    ("indicator-out", 2.0, _task(0, 0.5, G, FAR), G + [0, 0, 0.05], (0, 0, 0, 0), 0.0),
    ("dense", 3.0, _task(0, 0.5, G, FAR), G + [0.1, 0, 0], (0, 0, 0, 0), 0.2 - 0.1),
    # u = .25: th = 90 deg -> weights (0, 1, 0): energy -||a[:3]||, gripper command ignored
    ("energy", 1.0, _task(0.25, 0.5, G, FAR), G, (0.6, 0.8, 0, 0.9), -1.0),
    ("energy-clipped", 1.0, _task(0.25, 0.5, G, FAR), G, (3.0, 0, 0, 0), -1.0),
    # v = 1: ph = 0 -> weights (0, 0, 1): safety log10(dist + .01) / 5
    ("safety-zero", 1.0, _task(0, 1.0, FAR, G + [0.99, 0, 0]), G, (0, 0, 0, 0), 0.0),
    ("safety-near", 1.0, _task(0, 1.0, FAR, G + [0, 0.09, 0]), G, (0, 0, 0, 0), -0.2),
    # u = 0, v = .75: weights (sin 60, 0, 1/2); at the goal, .09 from the obstacle
    ("mixed", 1.0, _task(0, PH_60, G, G + [0, 0, 0.09]), G, (1, 0, 0, 0), math.sin(math.pi / 3) - 0.1),
]


@pytest.mark.parametrize("name, sparse, task, e, action, expected", CASES, ids=[c[0] for c in CASES])
def test_hand_computed_rewards(name, sparse, task, e, action, expected):
    fam = FetchReach(sparse=sparse)
    got = fam.rewards(_step(np.asarray(e, float), action), task[None])[0, 0]
    assert got == pytest.approx(expected, abs=1e-12)


def _plain(sparse: float, e, a, z) -> float:
    """GH's reward for one step and one task, one number at a time."""
    th, ph = 2 * math.pi * z[0], math.acos(2 * z[1] - 1)
    c = (math.cos(th) * math.sin(ph), math.sin(th) * math.sin(ph), math.cos(ph))
    d = math.dist(e, z[2:5])
    if sparse <= 1.01:
        reach = sparse * math.exp(-d * d / 0.08**2)
    elif sparse <= 2.01:
        reach = 1.0 if d < 0.04 else 0.0
    else:
        reach = 0.2 - d
    energy = -math.sqrt(sum(min(max(x, -1.0), 1.0) ** 2 for x in a[:3]))
    safety = math.log10(math.dist(e, z[5:8]) + 0.01) / 5
    return c[0] * reach + c[1] * energy + c[2] * safety


@pytest.mark.parametrize("sparse", [1.0, 2.0, 3.0])
def test_rewards_equal_double_loop(sparse):
    fam = FetchReach(sparse=sparse)
    rng = np.random.default_rng(0)
    tasks = fam.sample_tasks(rng, 12)
    B = 30
    e = G + rng.uniform(-0.3, 0.3, size=(B, 3))
    e[:4] = tasks[:4, 2:5] + rng.uniform(-0.03, 0.03, size=(4, 3))  # some steps near a goal
    steps = StepBatch(rng.normal(size=(B, 11)), rng.uniform(-1.5, 1.5, (B, 4)),
                      np.concatenate([e, rng.normal(size=(B, 8))], axis=1), np.zeros((B, 0)))
    R = fam.rewards(steps, tasks)
    for b in range(B):
        for k in range(len(tasks)):
            assert R[b, k] == pytest.approx(_plain(sparse, e[b], steps.action[b], tasks[k]), abs=1e-12)
    np.testing.assert_allclose(fam.rewards_for(steps, np.repeat(tasks[:1], B, 0)), R[:, 0], rtol=1e-12)


def test_prior_eval_tasks_and_goals():
    fam = get_family("fetch_reach")
    z = fam.sample_tasks(np.random.default_rng(1), 2000)
    assert z.shape == (2000, 8)
    assert (z[:, 0] >= 0).all() and (z[:, 0] <= 0.25).all() and (z[:, 1] >= 0.5).all() and (z[:, 1] <= 1).all()
    for part in (z[:, 2:5], z[:, 5:8]):  # initial gripper position + U(-.25, .25)^3
        assert (np.abs(part - G) <= 0.25).all() and (np.abs(part - G).max(axis=0) > 0.24).all()
    ev = fam.eval_tasks()
    np.testing.assert_allclose(ev[:, :2], GH_EVAL_LATENTS[:, :2])
    np.testing.assert_allclose(ev[:, 2:5] - G, GH_EVAL_LATENTS[:, 2:5])  # GH's offsets, in the workspace
    assert (np.abs(ev[:, 2:8] - np.tile(G, 2)) <= 0.15).all()
    steps = _step(G + 0.05)
    relabeled = fam.with_goal(z[:1], fam.achieved_goal(steps))
    np.testing.assert_allclose(relabeled[0, 2:5], G + 0.05)
    reach_only = relabeled.copy()
    reach_only[0, :2] = (0, 0.5)
    assert fam.rewards_for(steps, reach_only)[0] == pytest.approx(1.0)  # HER: its own goal is reached


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)  # as if not installed
    with pytest.raises(ImportError, match=r"\.\[robotics\]"):
        get_family("fetch_reach").make_env(get_family("fetch_reach").eval_tasks()[0])


# ---- the simulator (optional extra) ------------------------------------------------------------
@pytest.fixture(scope="module")
def robotics():
    return pytest.importorskip("gymnasium_robotics", reason="fetch_reach's simulator needs pip install -e '.[robotics]'")


def test_env_reward_equals_family_reward(robotics):
    fam = get_family("fetch_reach")
    task = fam.eval_tasks()[3]
    env = fam.make_env(task, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11,) and obs[-1] == 0.0
    np.testing.assert_allclose(env.unwrapped.initial_gripper_xpos, G, atol=1e-6)
    np.testing.assert_allclose(env.unwrapped.goal, task[2:5])  # the marker shows the task's goal
    assert env.unwrapped.n_substeps == 100
    rng = np.random.default_rng(0)
    for t in range(1, fam.horizon + 1):
        a = rng.uniform(-1, 1, 4)
        nxt, r, te, tr, info = env.step(a)
        steps = StepBatch(obs[None], a[None], nxt[None], info["reward_inputs"][None])
        assert r == fam.rewards_for(steps, task[None])[0] == fam.rewards(steps, task[None])[0, 0]
        assert nxt[-1] == pytest.approx(t / fam.horizon) and not te and tr == (t == fam.horizon)
        obs = nxt


def test_position_control_moves_five_centimetres_per_unit(robotics):
    # GH's n_substeps = 100 makes the mocap controller track a[:3] * 0.05 per step
    fam = get_family("fetch_reach")
    env = fam.make_env(fam.eval_tasks()[0], seed=1)
    o, _ = env.reset(seed=1)
    for a in ([1, 0, 0, 0], [0, -1, 0, 1], [0, 0, 0.5, -1]):
        o2, *_ = env.step(np.array(a, float))
        np.testing.assert_allclose(o2[:3] - o[:3], 0.05 * np.array(a[:3], float), atol=2e-3)
        o = o2
