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


HAND_CASES = [
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


def test_every_meta_family_has_three_hand_cases() -> None:
    counts = {n: sum(c.family == n for c in HAND_CASES) for n in META}
    assert all(c >= 3 for c in counts.values()), counts


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
