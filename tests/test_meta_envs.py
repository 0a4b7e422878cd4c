"""Meta-RL task families (HFR's, and the tiny ``test_meta_goal``): batched rewards, terminals
and success vs a plain double loop, env reward == family reward along random rollouts,
hand-computed rewards from the reference code's formulas (REFERENCE-CODE §1c), and fixed,
seeded train/test task lists that agree across processes.

MuJoCo rollouts are kept short (``MUJOCO_STEPS``) so the file runs in well under a minute.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any, NamedTuple

import numpy as np
import pytest

from envs import FAMILIES, family_names, family_table, get_family
from envs.core import StepBatch, TaskFamily

META = [n for n in family_names() if FAMILIES[n].meta]
MUJOCO_STEPS = 40

#: (train, test) sizes of the reference configs (REFERENCE-CODE §5) and whether the two
#: lists are disjoint there (Four-Corners trains and tests on the same 4 corners)
REFERENCE_SIZES: dict[str, tuple[int, int, bool]] = {
    "cheetah_vel": (100, 30, True),
    "cheetah_vel_sparse": (100, 30, True),
    "cheetah_highdim": (100, 30, True),
    "ant_goal_sparse": (100, 30, True),
    "four_corners": (4, 4, False),
    "test_meta_goal": (6, 3, True),
}


# ---- helpers ---------------------------------------------------------------------------


class Rollout(NamedTuple):
    steps: StepBatch  # [T, ...]
    rewards: np.ndarray  # [T]
    terminated: np.ndarray  # [T] bool
    infos: list[dict[str, Any]]


def _is_mujoco(fam: TaskFamily) -> bool:
    return hasattr(fam, "env_id")


def rollout(fam: TaskFamily, task: np.ndarray, seed: int) -> Rollout:
    """Step a fresh env for ``task`` with uniform random actions until the episode ends."""
    n = min(fam.horizon, MUJOCO_STEPS) if _is_mujoco(fam) else fam.horizon
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, fam.action_dim))
    env = fam.make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    rec: dict[str, list[Any]] = {k: [] for k in ("obs", "act", "next", "ri", "r", "te", "info")}
    for a in actions:
        next_obs, r, te, tr, info = env.step(a)
        for k, v in zip(rec, (obs, a, next_obs, info["reward_inputs"], r, te, info)):
            rec[k].append(v)
        obs = next_obs
        if te or tr:
            break
    T = len(rec["r"])
    ri = np.asarray(rec["ri"], dtype=np.float64).reshape(T, fam.reward_input_dim)
    steps = StepBatch(np.asarray(rec["obs"]), np.asarray(rec["act"]), np.asarray(rec["next"]), ri)
    return Rollout(steps, np.asarray(rec["r"]), np.asarray(rec["te"], bool), rec["info"])


def take(steps: StepBatch, idx: Any) -> StepBatch:
    return StepBatch(*(np.asarray(x)[idx] for x in steps))


@functools.lru_cache(maxsize=None)
def recorded_steps(name: str) -> StepBatch:
    """Steps of random rollouts under two train tasks and one test task."""
    fam = get_family(name)
    tasks = [fam.train_tasks()[0], fam.train_tasks()[-1], fam.test_tasks()[0]]
    parts = [rollout(fam, task, seed=10 + i).steps for i, task in enumerate(tasks)]
    return StepBatch(*(np.concatenate(fields) for fields in zip(*parts)))


def candidate_tasks(fam: TaskFamily) -> np.ndarray:
    """A few train and test tasks plus prior samples."""
    train, test = fam.train_tasks(), fam.test_tasks()
    prior = fam.sample_tasks(np.random.default_rng(0), 3)
    return np.concatenate([train[:4], test[:2], prior])


def steps_of(fam: TaskFamily, obs: Any = None, action: Any = None, next_obs: Any = None,
             reward_inputs: Any = None) -> StepBatch:
    """One step [1, ...] with zeros wherever a field is not given."""

    def field(x: Any, dim: int) -> np.ndarray:
        return np.zeros((1, dim)) if x is None else np.asarray(x, dtype=np.float64).reshape(1, dim)

    return StepBatch(field(obs, fam.obs_dim), field(action, fam.action_dim), field(next_obs, fam.obs_dim),
                     field(reward_inputs, fam.reward_input_dim))


# ---- 1. batched rewards / terminals / success == plain double loop -------------------------


@pytest.mark.parametrize("name", META)
def test_batched_equal_double_loop(name: str) -> None:
    fam = get_family(name)
    steps = recorded_steps(name)
    tasks = candidate_tasks(fam)
    B, K = len(steps), len(tasks)
    exp_r, exp_t, exp_s = np.zeros((B, K)), np.zeros((B, K), bool), np.zeros((B, K), bool)
    for i in range(B):
        row = take(steps, slice(i, i + 1))
        for k in range(K):
            exp_r[i, k] = fam.rewards_for(row, tasks[k : k + 1])[0]
            exp_t[i, k] = fam.terminals_for(row, tasks[k : k + 1])[0]
            if fam.has_success:
                exp_s[i, k] = fam.success_for(row, tasks[k : k + 1])[0]
    R, T = fam.rewards(steps, tasks), fam.terminals(steps, tasks)
    assert R.shape == (B, K) and T.shape == (B, K) and T.dtype == bool
    np.testing.assert_allclose(R, exp_r, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(T, exp_t)
    if fam.has_success:
        S = fam.success(steps, tasks)
        assert S.shape == (B, K) and S.dtype == bool
        np.testing.assert_array_equal(S, exp_s)
    else:
        with pytest.raises(TypeError, match=name):
            fam.success(steps, tasks)
    # the rewards really depend on the task (the [B, K] matrix is not one column repeated)
    assert np.ptp(R, axis=1).max() > 0


# ---- 2. env reward == family reward along random rollouts --------------------------------


@pytest.mark.parametrize("name", META)
def test_env_reward_equals_family_reward(name: str) -> None:
    fam = get_family(name)
    for seed, task in enumerate([fam.train_tasks()[1], fam.test_tasks()[-1]]):
        roll = rollout(fam, task, seed=seed)
        T = len(roll.rewards)
        own = np.repeat(task[None], T, axis=0)
        np.testing.assert_allclose(roll.rewards, fam.rewards_for(roll.steps, own), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(roll.rewards, fam.rewards(roll.steps, task[None])[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(roll.terminated, fam.terminals_for(roll.steps, own))
        assert roll.steps.obs.shape == (T, fam.obs_dim)
        np.testing.assert_array_equal(roll.steps.obs[1:], roll.steps.next_obs[:-1])
        if fam.has_success:
            np.testing.assert_array_equal([i["success"] for i in roll.infos], fam.success_for(roll.steps, own))


@pytest.mark.parametrize("name", META)
def test_retasked_env_rewards_the_new_task(name: str) -> None:
    fam = get_family(name)
    a, b = fam.train_tasks()[0], fam.train_tasks()[1]
    env = fam.make_env(a, seed=0)
    fam.set_env_task(env, b)
    obs, _ = env.reset(seed=0)
    action = np.full(fam.action_dim, 0.5)
    next_obs, r, *_, info = env.step(action)
    step = StepBatch(obs[None], action[None], next_obs[None], np.asarray(info["reward_inputs"])[None])
    assert r == pytest.approx(fam.rewards_for(step, b[None])[0], abs=1e-12)


# ---- 3. hand-computed rewards from the reference code's formulas -------------------------


class Case(NamedTuple):
    family: str
    id: str
    kwargs: dict[str, Any]  # fields of steps_of
    task: list[float]
    reward: float
    terminal: bool = False
    success: bool | None = None


def _ant_obs(x: float, y: float, z: float = 0.55) -> list[float]:
    """An ant_goal_sparse observation: torso at (x, y, z), everything else 0."""
    return [x, y, z] + [0.0] * 104


ONES6 = [1.0] * 6

HAND_CASES = [
    # cheetah_vel: r = -|v_x - v*| - 0.05 ||clip(a, -1, 1)||^2   (reward_inputs = [v_x])
    Case("cheetah_vel", "too-fast", {"reward_inputs": [1.5]}, [1.0], -0.5),
    Case("cheetah_vel", "on-target-full-ctrl", {"reward_inputs": [2.0], "action": ONES6}, [2.0], -0.3),
    Case("cheetah_vel", "still-clipped-action", {"reward_inputs": [0.0], "action": [2.0, 0, 0, 0, 0, 0]},
         [3.0], -3.05),
    # cheetah_vel_sparse: (f if f >= -0.3 else -2) + 2 - ctrl, f = -|v_x - v*|
    Case("cheetah_vel_sparse", "in-band", {"reward_inputs": [1.25]}, [1.0], 1.75),
    Case("cheetah_vel_sparse", "band-edge-0.3", {"reward_inputs": [0.3]}, [0.0], 1.7),
    Case("cheetah_vel_sparse", "outside-with-ctrl", {"reward_inputs": [1.5], "action": [1.0, 0, 0, 0, 0, 0]},
         [1.0], -0.05),
    Case("cheetah_vel_sparse", "exact-half-ctrl", {"reward_inputs": [1.0], "action": [0.5] * 6}, [1.0], 1.925),
    # ant_goal_sparse: goal term 4 - L1(p - g) within 0.8 of g, else 4 - L1(g); - 0.005 ||a||^2
    # - contact + 0.05; p = s'[0:2]; done when torso z outside [0.2, 1]
    Case("ant_goal_sparse", "at-goal", {"next_obs": _ant_obs(0.0, 2.0)}, [0.0, 2.0], 4.05),
    Case("ant_goal_sparse", "in-band-costs",
         {"next_obs": _ant_obs(0.5, 1.5), "action": [1.0] * 8, "reward_inputs": [0.01]}, [0.0, 2.0], 3.0),
    Case("ant_goal_sparse", "origin-far", {"next_obs": _ant_obs(0.0, 0.0)}, [2.0, 0.0], 2.05),
    # ||(0.6, 1) - (1.2, 1.6)|| = 0.849 > 0.8: the goal term is its value at the origin, 4 - 2.8
    Case("ant_goal_sparse", "just-outside-band", {"next_obs": _ant_obs(0.6, 1.0)}, [1.2, 1.6], 1.25),
    Case("ant_goal_sparse", "fallen", {"next_obs": _ant_obs(0.0, 2.0, z=0.1)}, [0.0, 2.0], 4.05, terminal=True),
    Case("ant_goal_sparse", "flying", {"next_obs": _ant_obs(0.0, 0.0, z=1.5)}, [2.0, 0.0], 2.05, terminal=True),
    # four_corners: on p = s': 0 + done + success within 0.2 of g; -3 in g's trap square; else -1
    Case("four_corners", "goal", {"next_obs": [0.9, 0.9]}, [1.0, 1.0], 0.0, terminal=True, success=True),
    Case("four_corners", "trap-pp", {"next_obs": [0.3, 0.3]}, [1.0, 1.0], -3.0, success=False),
    Case("four_corners", "other-goals-trap", {"next_obs": [0.3, 0.3]}, [-1.0, -1.0], -1.0, success=False),
    Case("four_corners", "trap-pm", {"next_obs": [0.3, -0.3]}, [1.0, -1.0], -3.0, success=False),
    Case("four_corners", "trap-mp", {"next_obs": [-0.3, 0.3]}, [-1.0, 1.0], -3.0, success=False),
    Case("four_corners", "trap-mm", {"next_obs": [-0.2, -0.4]}, [-1.0, -1.0], -3.0, success=False),
    Case("four_corners", "trap-edge-open", {"next_obs": [0.5, 0.3]}, [1.0, 1.0], -1.0, success=False),
    Case("four_corners", "origin", {"next_obs": [0.0, 0.0]}, [-1.0, 1.0], -1.0, success=False),
    # test_meta_goal: r = -||p' - g||, success within 0.2
    Case("test_meta_goal", "at-goal", {"next_obs": [0.8, 0.0]}, [0.8, 0.0], 0.0, success=True),
    Case("test_meta_goal", "3-4-5", {"next_obs": [0.3, 0.4]}, [0.0, 0.0], -0.5, success=False),
    Case("test_meta_goal", "near", {"next_obs": [0.1, 0.8]}, [0.0, 0.8], -0.1, success=True),
]


@pytest.mark.parametrize("case", HAND_CASES, ids=[f"{c.family}-{c.id}" for c in HAND_CASES])
def test_hand_computed(case: Case) -> None:
    fam = get_family(case.family)
    step = steps_of(fam, **case.kwargs)
    task = np.array([case.task])
    assert fam.rewards(step, task)[0, 0] == pytest.approx(case.reward, abs=1e-12)
    assert bool(fam.terminals(step, task)[0, 0]) is case.terminal
    if case.success is not None:
        assert bool(fam.success(step, task)[0, 0]) is case.success


def test_cheetah_highdim_hand_computed() -> None:
    """r = w . (s' - mean) / std - 0.05 ||clip(a)||^2, with s' built from the shipped mean/std."""
    fam = get_family("cheetah_highdim")
    mean, std = fam.state_mean, fam.state_std
    e = np.eye(18)
    w = np.zeros(18)
    w[0], w[3], w[17] = 0.25, 0.5, -0.5
    cases = [  # (s', action, reward)
        (mean, np.zeros(6), 0.0),  # the mean state scores 0 under every task
        (mean + 2 * std * e[3], np.array([1.0, 0, 0, 0, 0, 0]), 2 * 0.5 - 0.05),
        (mean + std * (e[0] - e[17]), np.full(6, 3.0), 0.25 + 0.5 - 0.05 * 6),  # actions clip to 1
    ]
    for next_obs, action, reward in cases:
        step = steps_of(fam, next_obs=next_obs, action=action)
        assert fam.rewards(step, w[None])[0, 0] == pytest.approx(reward, abs=1e-9)
        # linear: weights [w, 1] . features
        assert fam.task_weights(w[None])[0] @ fam.features(step)[0] == pytest.approx(reward, abs=1e-9)
    assert not fam.terminals(steps_of(fam), w[None]).any()


HAND_COUNTS = {n: sum(c.family == n for c in HAND_CASES) for n in META} | {"cheetah_highdim": 3}


def test_every_meta_family_has_three_hand_cases() -> None:
    assert all(HAND_COUNTS.get(n, 0) >= 3 for n in META), HAND_COUNTS


def test_ant_goal_unhealthy_when_state_not_finite() -> None:
    fam = get_family("ant_goal_sparse")
    obs = np.array(_ant_obs(0.0, 2.0))
    obs[20] = np.nan  # a joint velocity
    assert fam.terminals(steps_of(fam, next_obs=obs), fam.train_tasks()[:3]).all()


def test_four_corners_rollout_by_hand() -> None:
    """Diagonal steps to (1, 1): p = 0.1 t; the trap 0.1 < x, y < 0.5 holds t = 2, 3, 4;
    at t = 9 p = (0.9, 0.9) is within 0.2 of the goal: r = 0, success, the episode ends."""
    fam = get_family("four_corners")
    env = fam.make_env(np.array([1.0, 1.0]), seed=0)
    env.reset(seed=0)
    rewards, ends, successes = [], [], []
    for _ in range(20):
        p, r, te, tr, info = env.step(np.array([1.0, 1.0]))
        rewards.append(r), ends.append(te), successes.append(info["success"])
        if te or tr:
            break
    assert rewards == [-1, -3, -3, -3, -1, -1, -1, -1, 0]
    assert ends == successes == [False] * 8 + [True]
    np.testing.assert_allclose(p, [0.9, 0.9])
    # the same steps under the goal (-1, -1): never in its trap, never at its goal
    env = fam.make_env(np.array([-1.0, -1.0]), seed=0)
    env.reset(seed=0)
    out = [env.step(np.array([1.0, 1.0])) for _ in range(20)]
    assert [o[1] for o in out] == [-1.0] * 20 and out[-1][3] and not any(o[2] for o in out)
    # out-of-range actions are clipped to [-1, 1] (NormalizedBoxEnv) and scaled by 0.1
    env = fam.make_env(np.array([1.0, 1.0]), seed=0)
    env.reset(seed=0)
    np.testing.assert_allclose(env.step(np.array([5.0, -0.5]))[0], [0.1, -0.05])


def test_mujoco_meta_envs_agree_with_gymnasium() -> None:
    """reward_inputs and observation layouts equal Gymnasium's own bookkeeping."""
    for name in ("cheetah_vel", "cheetah_vel_sparse"):
        fam = get_family(name)
        roll = rollout(fam, fam.train_tasks()[0], seed=0)
        ri, nxt = roll.steps.reward_inputs, roll.steps.next_obs
        np.testing.assert_allclose(ri[:, 0], [i["x_velocity"] for i in roll.infos], rtol=1e-12)
        # torso body position = (rootx, 0, 0.7 + rootz); rootz = qpos[1] = obs[0]
        np.testing.assert_allclose(nxt[:, 17], [i["x_position"] for i in roll.infos], atol=1e-12)
        np.testing.assert_allclose(nxt[:, 18], 0.0, atol=1e-12)
        np.testing.assert_allclose(nxt[:, 19], 0.7 + nxt[:, 0], atol=1e-12)

    fam = get_family("cheetah_highdim")
    roll = rollout(fam, fam.train_tasks()[0], seed=0)
    np.testing.assert_array_equal(roll.steps.next_obs[:, 0], [i["x_position"] for i in roll.infos])

    fam = get_family("ant_goal_sparse")
    env = fam.make_env(fam.train_tasks()[0], seed=0)
    np.testing.assert_array_equal(env.unwrapped.model.actuator_gear[:, 0], 30.0)  # low gear ratio
    roll = rollout(fam, fam.train_tasks()[0], seed=0)
    ri, nxt = roll.steps.reward_inputs, roll.steps.next_obs
    np.testing.assert_allclose(ri[:, 0], [-i["reward_contact"] for i in roll.infos], rtol=1e-12)
    np.testing.assert_array_equal(nxt[:, 0], [i["x_position"] for i in roll.infos])
    np.testing.assert_array_equal(nxt[:, 1], [i["y_position"] for i in roll.infos])


def test_reference_task_lists() -> None:
    """Spot values and structure of the lists the reference code builds (REFERENCE-CODE §1c)."""
    vel = get_family("cheetah_vel").task_list()[:, 0]  # np.random.seed(3); U[0, 3] x 130
    np.testing.assert_allclose(vel[:3], [1.65239371, 2.12444347, 0.87271422], atol=1e-8)
    assert vel.shape == (130,) and (vel >= 0).all() and (vel <= 3).all()
    sparse = get_family("cheetah_vel_sparse").task_list()[:, 0]  # seed 1
    np.testing.assert_allclose(sparse[0], 3.0 * 0.417022004702574, atol=1e-12)  # RandomState(1)'s first draw
    w = get_family("cheetah_highdim").task_list()
    assert w.shape == (130, 18) and np.abs(w).max() <= 1
    np.testing.assert_allclose(w[0, 0], 2 * 0.417022004702574 - 1, atol=1e-12)
    goals = get_family("ant_goal_sparse").task_list()  # linspace(0, pi, 130) on r = 2, shuffled
    np.testing.assert_allclose(goals[0], [-1.74409882, 0.9788357], atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 2.0)
    angles = np.sort(np.arctan2(goals[:, 1], goals[:, 0]) % (2 * np.pi))
    angles[angles > 3.2] -= 2 * np.pi  # the -0.0 end of the half circle
    np.testing.assert_allclose(np.sort(angles), np.linspace(0, np.pi, 130), atol=1e-12)
    np.testing.assert_array_equal(
        get_family("four_corners").train_tasks(), [[-1, -1], [1, 1], [1, -1], [-1, 1]]
    )


def test_highdim_stats_file_is_reproduced_by_its_command(tmp_path: Any) -> None:
    from envs.meta_families import HIGHDIM_STATS_PATH
    from envs.stats import main

    shipped = json.loads(HIGHDIM_STATS_PATH.read_text())
    assert shipped["made_by"]["command"] == "python -m envs.stats cheetah_highdim --episodes 100 --horizon 200 --seed 0"
    out = tmp_path / "stats.json"
    assert main(["cheetah_highdim", "--out", str(out)]) == 0
    fresh = json.loads(out.read_text())
    for key in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(fresh[key], shipped[key], rtol=1e-9, err_msg=key)
    # a family built on another file uses it
    alt = dict(fresh, mean=[0.0] * 18, std=[2.0] * 18)
    (tmp_path / "alt.json").write_text(json.dumps(alt))
    fam = get_family("cheetah_highdim", stats_path=str(tmp_path / "alt.json"))
    w = np.ones((1, 18))
    step = steps_of(fam, next_obs=np.arange(18.0))
    assert fam.rewards(step, w)[0, 0] == pytest.approx(np.arange(18.0).sum() / 2)


def test_highdim_stats_missing_or_bad_file_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError, match="python -m envs.stats cheetah_highdim"):
        get_family("cheetah_highdim", stats_path=str(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [0.0] * 18, "std": [0.0] * 18}))
    with pytest.raises(ValueError, match="std .* must be positive"):
        get_family("cheetah_highdim", stats_path=str(tmp_path / "bad.json"))


# ---- 4. fixed task lists -------------------------------------------------------------------


_LISTS_SCRIPT = """
import json, sys
from envs import get_family
out = {}
for name in sys.argv[1:]:
    fam = get_family(name)
    out[name] = [fam.train_tasks().tolist(), fam.test_tasks().tolist()]
print(json.dumps(out))
"""


def test_task_lists_fixed_across_processes() -> None:
    """Lists from a fresh interpreter (its own hash seed, numpy state) equal ours bit for bit
    (JSON writes floats with repr, which round-trips exactly)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LISTS_SCRIPT, *META], capture_output=True, text=True, check=True, timeout=120,
    )
    theirs = json.loads(proc.stdout)
    np.random.seed(99)  # the global numpy state must not matter
    for name in META:
        fam = get_family(name)
        np.testing.assert_array_equal(fam.train_tasks(), np.array(theirs[name][0]), err_msg=name)
        np.testing.assert_array_equal(fam.test_tasks(), np.array(theirs[name][1]), err_msg=name)


@pytest.mark.parametrize("name", META)
def test_task_list_sizes_and_disjointness(name: str) -> None:
    fam = get_family(name)
    train, test = fam.train_tasks(), fam.test_tasks()
    n_train, n_test, disjoint = REFERENCE_SIZES[name]
    assert train.shape == (n_train, fam.task_dim) and test.shape == (n_test, fam.task_dim)
    assert train.dtype == np.float64 and test.dtype == np.float64
    assert len(np.unique(train, axis=0)) == n_train  # no task listed twice
    np.testing.assert_array_equal(fam.eval_tasks(), test)  # meta-test = held-out tasks
    assert fam.num_eval_tasks == n_test
    if disjoint:
        assert not (fam.train_task_index(test) >= 0).any()
    else:
        np.testing.assert_array_equal(np.sort(fam.train_task_index(test)), np.arange(n_test))
    # a fresh copy each call: mutating it leaves the family's list alone
    train[0] += 1.0
    assert not np.array_equal(fam.train_tasks()[0], train[0])


def test_every_meta_family_has_reference_sizes() -> None:
    assert set(META) == set(REFERENCE_SIZES)


@pytest.mark.parametrize("name", META)
def test_train_task_index(name: str) -> None:
    fam = get_family(name)
    train = fam.train_tasks()
    idx = np.array([3 % len(train), 0, len(train) - 1])
    np.testing.assert_array_equal(fam.train_task_index(train[idx]), idx)
    np.testing.assert_array_equal(fam.train_task_index(train[idx].astype(np.float32)), idx)  # float32 copies
    np.testing.assert_array_equal(fam.train_task_index(train[:1] + 0.5), [-1])


def test_non_meta_families_refuse_task_lists() -> None:
    fam = get_family("test_goal")
    assert not fam.meta
    for method in (fam.train_tasks, fam.test_tasks, fam.task_list):
        with pytest.raises(TypeError, match="test_goal.*not a meta family"):
            method()


def test_family_table_lists_meta_tasks() -> None:
    rows = {r.name: r for r in family_table()}
    assert rows["test_meta_goal"].meta_tasks == "6/3, success"
    assert rows["test_goal"].meta_tasks == "-"


def test_reward_bias_keeps_meta_attributes() -> None:
    fam = get_family("test_meta_goal", reward_bias=2.0, bias_tasks="all")
    base = get_family("test_meta_goal")
    assert fam.meta and fam.has_success and fam.num_train_tasks == base.num_train_tasks
    np.testing.assert_array_equal(fam.train_tasks(), base.train_tasks())
    np.testing.assert_array_equal(fam.test_tasks(), base.test_tasks())
    step = steps_of(fam, next_obs=[0.3, 0.4])
    tasks = base.train_tasks()
    np.testing.assert_allclose(fam.rewards(step, tasks), base.rewards(step, tasks) + 2.0)
    np.testing.assert_array_equal(fam.success(step, tasks), base.success(step, tasks))


def test_meta_goal_terminates_on_success_when_asked() -> None:
    step = steps_of(get_family("test_meta_goal"), next_obs=[0.8, 0.1])
    task = np.array([[0.8, 0.0]])
    assert not get_family("test_meta_goal").terminals(step, task)[0, 0]
    fam = get_family("test_meta_goal", terminate_on_success=True)
    assert fam.task_dependent_termination and fam.terminals(step, task)[0, 0]
    assert not fam.terminals(step, task + 0.5)[0, 0]
