"""Task families: batched rewards vs naive loops, env reward == family reward, hand-computed
rewards, recomputing rewards for other tasks from stored steps, linear features, registry.

MuJoCo rollouts are kept short (``MUJOCO_STEPS``) so the file runs in well under a minute.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any, NamedTuple, Sequence

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import FAMILIES, family_names, family_table, get_family
from envs.core import StepBatch, TaskFamily, UnknownFamilyError
from envs.mujoco_families import ReacherGoal

ALL = family_names()
MINE = [
    "point_trajectory", "point_reacher", "half_cheetah_mo", "ant_direction", "walker_linear", "reacher_goal"
]
MUJOCO = {"half_cheetah_mo", "ant_direction", "walker_linear", "reacher_goal"}
MUJOCO_STEPS = 40


# ---- helpers ---------------------------------------------------------------------------


class Rollout(NamedTuple):
    steps: StepBatch  # [T, ...]
    rewards: np.ndarray  # [T]
    terminated: np.ndarray  # [T] bool
    truncated: np.ndarray  # [T] bool
    infos: list[dict[str, Any]]


def _num_steps(fam: TaskFamily) -> int:
    return min(fam.horizon, MUJOCO_STEPS) if fam.name in MUJOCO else fam.horizon


def _random_actions(fam: TaskFamily, seed: int, n: int | None = None) -> np.ndarray:
    """[n, A] uniform in [-1, 1] (every family's action space)."""
    size = (n or _num_steps(fam), fam.action_dim)
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=size)


def rollout(fam: TaskFamily, task: np.ndarray, seed: int, actions: np.ndarray) -> Rollout:
    """Step a fresh env for ``task`` with ``actions`` until they run out or the episode ends."""
    for module in fam.requires:  # an optional extra (fetch_reach: pip install -e '.[robotics]')
        pytest.importorskip(module, reason=f"family {fam.name!r} needs {module} (an optional extra)")
    env = fam.make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    rec: dict[str, list[Any]] = {k: [] for k in ("obs", "act", "next", "ri", "r", "te", "tr", "info")}
    for a in actions:
        next_obs, r, te, tr, info = env.step(a)
        for k, v in zip(rec, (obs, a, next_obs, info["reward_inputs"], r, te, tr, info)):
            rec[k].append(v)
        obs = next_obs
        if te or tr:
            break
    T = len(rec["r"])
    ri = np.asarray(rec["ri"], dtype=np.float64).reshape(T, fam.reward_input_dim)
    steps = StepBatch(np.asarray(rec["obs"]), np.asarray(rec["act"]), np.asarray(rec["next"]), ri)
    return Rollout(
        steps, np.asarray(rec["r"]), np.asarray(rec["te"], bool), np.asarray(rec["tr"], bool), rec["info"]
    )


def take(steps: StepBatch, idx: Any) -> StepBatch:
    return StepBatch(*(np.asarray(x)[idx] for x in steps))


@functools.lru_cache(maxsize=None)
def recorded_steps(name: str) -> StepBatch:
    """Steps of two random-action rollouts (different tasks and seeds) of family ``name``."""
    fam = get_family(name)
    tasks = fam.sample_tasks(np.random.default_rng(1), 2)
    parts = [rollout(fam, tasks[i], 10 + i, _random_actions(fam, 20 + i)).steps for i in range(2)]
    return StepBatch(*(np.concatenate(fields) for fields in zip(*parts)))


def candidate_tasks(fam: TaskFamily, steps: StepBatch, seed: int = 0) -> np.ndarray:
    """Prior samples, plus (goal families) tasks whose goal some recorded step achieved."""
    rng = np.random.default_rng(seed)
    tasks = fam.sample_tasks(rng, 6)
    if fam.goal_dim:
        idx = rng.choice(len(steps), size=3, replace=False)
        tasks = np.concatenate([tasks, fam.with_goal(tasks[:3], fam.achieved_goal(take(steps, idx)))])
    return tasks


# ---- 1. batched rewards / terminals == plain double loop -------------------------------


@pytest.mark.parametrize("name", ALL)
def test_rewards_and_terminals_equal_double_loop(name: str) -> None:
    fam = get_family(name)
    steps = recorded_steps(name)
    tasks = candidate_tasks(fam, steps)
    B, K = len(steps), len(tasks)
    expected_r = np.zeros((B, K))
    expected_t = np.zeros((B, K), dtype=bool)
    for i in range(B):
        row = take(steps, slice(i, i + 1))
        for k in range(K):
            expected_r[i, k] = fam.rewards_for(row, tasks[k : k + 1])[0]
            expected_t[i, k] = fam.terminals_for(row, tasks[k : k + 1])[0]
    R, T = fam.rewards(steps, tasks), fam.terminals(steps, tasks)
    assert R.shape == (B, K) and T.shape == (B, K) and T.dtype == bool
    np.testing.assert_allclose(R, expected_r, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(T, expected_t)
    # rewards_for with one task per step picks the matching entries of the [B, K] matrix
    pick = np.random.default_rng(1).integers(K, size=B)
    np.testing.assert_allclose(
        fam.rewards_for(steps, tasks[pick]), R[np.arange(B), pick], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_array_equal(fam.terminals_for(steps, tasks[pick]), T[np.arange(B), pick])


# ---- 2. env reward == family reward along random rollouts ------------------------------


@pytest.mark.parametrize("name", ALL)
def test_env_reward_equals_family_reward(name: str) -> None:
    fam = get_family(name)
    for seed in (0, 1):
        task = fam.sample_tasks(np.random.default_rng(seed), 1)[0]
        roll = rollout(fam, task, seed=seed, actions=_random_actions(fam, seed))
        T = len(roll.rewards)
        own = np.repeat(task[None], T, axis=0)
        np.testing.assert_allclose(roll.rewards, fam.rewards_for(roll.steps, own), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(roll.terminated, fam.terminals_for(roll.steps, own))
        assert roll.steps.obs.shape == (T, fam.obs_dim)
        assert roll.steps.reward_inputs.shape == (T, fam.reward_input_dim)
        assert all(np.asarray(i["reward_inputs"]).shape == (fam.reward_input_dim,) for i in roll.infos)
        # consecutive steps chain: obs[t+1] is next_obs[t]
        np.testing.assert_array_equal(roll.steps.obs[1:], roll.steps.next_obs[:-1])


@pytest.mark.parametrize("name", [n for n in MINE if n not in MUJOCO])
def test_point_env_truncates_at_horizon(name: str) -> None:
    fam = get_family(name)
    roll = rollout(fam, fam.sample_tasks(np.random.default_rng(0), 1)[0], 0, _random_actions(fam, 0, 50))
    assert len(roll.rewards) == fam.horizon
    assert roll.truncated[-1] and not roll.truncated[:-1].any() and not roll.terminated.any()
    assert roll.steps.next_obs[-1, -1] == 1.0  # t/H
    assert fam.timeout_is_terminal  # GH stores this step as terminal (REFERENCE-CODE §8)


def test_point_dynamics_by_hand() -> None:
    # PointTrajectory: p <- clip(p + a/10, ±1): (0,0) + (1,-0.5)/10 = (0.1, -0.05); t/H = 1/15
    env = get_family("point_trajectory").make_env(np.array([0.0, 1.0, 0.0]), seed=0)
    obs, *_ = env.step(np.array([1.0, -0.5]))
    np.testing.assert_allclose(obs, [0.1, -0.05, 1 / 15])
    for _ in range(11):  # x: 0.1 + 11 * 0.1 = 1.2 -> clipped to 1
        obs, *_ = env.step(np.array([1.0, 0.0]))
    np.testing.assert_allclose(obs, [1.0, -0.05, 12 / 15])
    # PointReacher: v <- clip(v + a/20, ±.25) = (0.05, -0.025); p <- p + v = (0.05, -0.025);
    # again: v = (0.1, -0.05), p = (0.15, -0.075)
    env = get_family("point_reacher").make_env(np.array([0, 0.5, 0, 0.2, 0, 0.2]), seed=0)
    obs, *_ = env.step(np.array([1.0, -0.5]))
    np.testing.assert_allclose(obs, [0.05, -0.025, 0.05, -0.025, 1 / 20])
    obs, *_ = env.step(np.array([1.0, -0.5]))
    np.testing.assert_allclose(obs, [0.15, -0.075, 0.1, -0.05, 2 / 20])
    for _ in range(10):  # velocity saturates at 0.25
        obs, *_ = env.step(np.array([5.0, 0.0]))  # out-of-range actions act as 1
    assert obs[2] == 0.25


def test_mujoco_reward_inputs_agree_with_gymnasium() -> None:
    """Our reward inputs equal Gymnasium's own bookkeeping of the same quantities."""
    cheetah = get_family("half_cheetah_mo")
    roll = rollout(cheetah, cheetah.eval_tasks()[0], 0, _random_actions(cheetah, 0, 20))
    ri, nxt = roll.steps.reward_inputs, roll.steps.next_obs
    np.testing.assert_allclose(ri[:, 0], [i["x_velocity"] for i in roll.infos], rtol=1e-12)
    np.testing.assert_array_equal(ri[:, 1], nxt[:, 0])  # qpos[1] after the step (obs = qpos[1:], qvel)
    np.testing.assert_array_equal(ri[:, 2], nxt[:, 10])  # qvel[2] after the step

    ant = get_family("ant_direction")
    roll = rollout(ant, ant.eval_tasks()[0], 0, _random_actions(ant, 0, 30))
    ri = roll.steps.reward_inputs
    np.testing.assert_allclose(ri[:, 0], [i["x_velocity"] for i in roll.infos], rtol=1e-12)
    np.testing.assert_allclose(ri[:, 1], [i["y_velocity"] for i in roll.infos], rtol=1e-12)
    np.testing.assert_allclose(ri[:, 2], [-i["reward_contact"] for i in roll.infos], rtol=1e-12)
    assert (ri[:, 2] > 0).any()  # contact forces are really computed (mj_rnePostConstraint)
    np.testing.assert_array_equal(ri[:, 3], roll.steps.next_obs[:, 0])  # torso z = qpos[2] = obs[0]

    walker = get_family("walker_linear")
    roll = rollout(walker, walker.eval_tasks()[0], 0, _random_actions(walker, 0, 20))
    ri, obs = roll.steps.reward_inputs, roll.steps.obs
    # PRE-step features: torso height = qpos[1] = obs[0]; v_x = qvel[0] = obs[8] (obs clips at 10)
    np.testing.assert_allclose(ri[:, 0], obs[:, 0] - 0.5, atol=1e-12)
    np.testing.assert_allclose(np.clip(ri[:, 1], -10, 10), obs[:, 8], atol=1e-12)

    reacher = get_family("reacher_goal")
    roll = rollout(reacher, reacher.eval_tasks()[0], 0, _random_actions(reacher, 0, 20))
    c0, c1, s0, s1 = roll.steps.next_obs[:, :4].T
    # fingertip = .1 (cos q0, sin q0) + .11 (cos(q0 + q1), sin(q0 + q1)) for the obs's own angles
    tip = np.stack([0.1 * c0 + 0.11 * (c0 * c1 - s0 * s1), 0.1 * s0 + 0.11 * (s0 * c1 + c0 * s1)], axis=1)
    np.testing.assert_allclose(roll.steps.next_obs[:, 6:8], tip, atol=1e-9)


@pytest.mark.parametrize("name", sorted(MUJOCO))
def test_wrapper_leaves_the_dynamics_alone(name: str) -> None:
    """Same seed and actions: the wrapped env's simulator follows the plain Gymnasium env's."""
    fam = get_family(name)
    env = fam.make_env(fam.eval_tasks()[0], seed=4)
    plain = gym.make(fam.env_id, **fam.env_kwargs)  # type: ignore[attr-defined]
    env.reset(seed=4)
    plain.reset(seed=4)
    dofs = slice(0, 2) if name == "reacher_goal" else slice(None)  # reacher's target is moved to the goal
    for a in _random_actions(fam, 4, 15):
        env.step(a)
        plain.step(a)
        np.testing.assert_array_equal(env.unwrapped.data.qpos[dofs], plain.unwrapped.data.qpos[dofs])
        np.testing.assert_array_equal(env.unwrapped.data.qvel[dofs], plain.unwrapped.data.qvel[dofs])


def test_ant_terminates_when_unhealthy_like_gymnasium() -> None:
    fam = get_family("ant_direction")
    env = fam.make_env(np.array([0.0]), seed=0)
    sim = env.unwrapped
    for _ in range(5):
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        assert not terminated and sim.is_healthy
    qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
    qpos[2] = 1.5  # torso lifted above the healthy range [0.2, 1.0]
    sim.set_state(qpos, qvel)
    _, _, terminated, _, info = env.step(np.zeros(8))
    assert terminated and not sim.is_healthy and info["reward_inputs"][3] > 1.0


def test_reacher_terminates_at_goal_with_zero_reward() -> None:
    fam = get_family("reacher_goal")
    env = fam.make_env(np.array([0.1, 0.1, 0.02]), seed=3)
    obs, _ = env.reset(seed=3)
    fam.set_env_task(env, np.array([obs[6], obs[7], 0.02]))  # goal = where the fingertip is now
    _, reward, terminated, _, _ = env.step(np.array([1.0, 1.0]))
    assert reward == 0.0 and terminated


# ---- 3. hand-computed rewards --------------------------------------------------------


def _row(fam: TaskFamily, obs: Sequence[float] = (), action: Sequence[float] = (),
         next_obs: Sequence[float] = (), ri: Sequence[float] = ()) -> StepBatch:
    """One step whose fields start with the given entries; the rest are zero."""

    def fill(values: Sequence[float], dim: int) -> np.ndarray:
        out = np.zeros((1, dim))
        out[0, : len(values)] = values
        return out

    return StepBatch(fill(obs, fam.obs_dim), fill(action, fam.action_dim), fill(next_obs, fam.obs_dim),
                     fill(ri, fam.reward_input_dim))


class Case(NamedTuple):
    family: str
    id: str
    task: Sequence[float]
    reward: float
    terminal: bool = False
    obs: Sequence[float] = ()
    action: Sequence[float] = ()
    next_obs: Sequence[float] = ()
    ri: Sequence[float] = ()


PI = math.pi
TIP = [1, 1, 0, 0, 0, 0, 0.1, 0.1]  # reacher obs with the fingertip at (.1, .1)

HAND_CASES = [
    # PointTrajectory, on the PRE-step (x, y) = obs[:2]: x' = cos(th) x - sin(th) y,
    # y' = sin(th) x + cos(th) y, alpha = x'/d, r = alpha N(y' - amp sin(pi x'/d); .05);
    # N(0; .05) = 1 / (.05 sqrt(2 pi)) = 7.978845608.
    # x' = .5, y' = 0, alpha = .5 -> .5 * 7.978845608 = 3.989422804
    Case("point_trajectory", "on_axis", task=[0, 1, 0], obs=[0.5, 0, 0.2], reward=3.989422804),
    # th = pi/2: x' = 0*0 - 1*(-.5) = .5, y' = 1*0 + 0*(-.5) = 0 -> 3.989422804
    Case("point_trajectory", "rotated_90", task=[PI / 2, 1, 0], obs=[0, -0.5, 0.2], reward=3.989422804),
    # d = .8, amp = .2: alpha = .4/.8 = .5; sin(pi .4/.8) = 1; y' - .2 = .05 = one sigma
    # -> .5 * 7.978845608 * exp(-.5) = .5 * 4.839414490 = 2.419707245
    Case("point_trajectory", "one_sigma_off_sine", task=[0, 0.8, 0.2], obs=[0.4, 0.25, 0.2],
         reward=2.419707245),
    # x' = -.3: alpha < 0 -> 0
    Case("point_trajectory", "behind_start", task=[0, 1, 0], obs=[-0.3, 0, 0.2], reward=0.0),
    # the post-step position does not count: pre-step (0, 0) gives alpha = 0 -> 0
    Case("point_trajectory", "next_obs_ignored", task=[0, 1, 0], next_obs=[0.5, 0, 0.1], reward=0.0),
    # PointReacher, on the POST-step e = next_obs[:2]: c = (cos th sin ph, sin th sin ph, cos ph),
    # th = 2 pi u, ph = arccos(2v - 1); r = c0 (.2 - |e-g|) - c1 |a| + c2 log10(|e-o| + .01)/5.
    # u = 0, v = .5: th = 0, ph = pi/2 -> c = (1, 0, 0); g = .2 (cos 0, sin 0) = (.2, 0);
    # |e - g| = |(0, .1)| = .1 -> .2 - .1 = .1
    Case("point_reacher", "reach_only", task=[0, 0.5, 0, 0.2, PI, 0.2], next_obs=[0.2, 0.1], reward=0.1),
    # u = .25, v = .5: th = pi/2, ph = pi/2 -> c = (0, 1, 0); -|(.3, .4)| = -.5
    Case("point_reacher", "energy_only", task=[0.25, 0.5, 0, 0.2, 0, 0.2], action=[0.3, 0.4], reward=-0.5),
    # v = 1: ph = arccos(1) = 0 -> c = (0, 0, 1); o = .2 (cos pi/2, sin pi/2) = (0, .2);
    # |e - o| = .09 -> log10(.09 + .01)/5 = -1/5
    Case("point_reacher", "safety_only", task=[0, 1, 0, 0.2, PI / 2, 0.2], next_obs=[0, 0.29], reward=-0.2),
    # u = .125, v = .75: th = pi/4, ph = arccos(.5) = pi/3 -> c = (.6123724, .6123724, .5);
    # reach .2 - .1 = .1; energy -.5; |e - o| = |(.2, -.1)| = .2236068,
    # log10(.2336068)/5 = -.6315145/5 = -.1263029;
    # r = .6123724*.1 - .6123724*.5 - .5*.1263029 = .0612372 - .3061862 - .0631515 = -.3081004
    Case("point_reacher", "mixed", task=[0.125, 0.75, 0, 0.2, PI / 2, 0.2], next_obs=[0.2, 0.1],
         action=[0.3, 0.4], reward=-0.3081004267),
    # HalfCheetahMO: phi = [v_x, -.1 |a|^2, qpos[1], qvel[2]], (v_x, qpos[1], qvel[2]) = ri; r = w . phi
    # 1 * 2.5
    Case("half_cheetah_mo", "speed", task=[1, 0, 0, 0], ri=[2.5, 0.3, -1.0], reward=2.5),
    # -.1 * (1 + 1) = -.2
    Case("half_cheetah_mo", "ctrl", task=[0, 1, 0, 0], action=[1, 1], ri=[2.5, 0.3, -1.0], reward=-0.2),
    # |a|^2 = 6 * .25 = 1.5 -> -.15; .5 * (1 - .15 + .2 - 3) = .5 * -1.95 = -.975
    Case("half_cheetah_mo", "all_half", task=[0.5] * 4, action=[0.5] * 6, ri=[1.0, 0.2, -3.0], reward=-0.975),
    # AntDirection: ri = (v_x, v_y, contact, z);
    # r = |v| 1[angle(v, th) < 15 deg] - .5 |a|^2 - contact + 1, terminal iff z outside [.2, 1].
    # angle(v) = atan2(4, 3) = 53.1 deg away from th = 0 -> 0 - 0 - 0 + 1
    Case("ant_direction", "off_course", task=[0], ri=[3, 4, 0, 0.5], reward=1.0),
    # th = atan2(4, 3): on course -> |v| = 5; 5 + 1 = 6
    Case("ant_direction", "on_course", task=[math.atan2(4, 3)], ri=[3, 4, 0, 0.5], reward=6.0),
    # angle = atan(.2) = 11.3 deg < 15: |v| = sqrt(1.04) = 1.0198039; .5 * 8 * .25 = 1;
    # 1.0198039 - 1 - .1 + 1 = .9198039
    Case("ant_direction", "within_15deg_with_costs", task=[0], action=[0.5] * 8, ri=[1, 0.2, 0.1, 0.5],
         reward=0.9198039027),
    # heading pi, moving along +x: off course -> 1; z = .1 < .2 -> terminal
    Case("ant_direction", "backwards_fallen", task=[PI], ri=[1, 0, 0, 0.1], reward=1.0, terminal=True),
    # at rest (0 > 0 is false): 1; z = 1.2 > 1 -> terminal
    Case("ant_direction", "too_high", task=[0], ri=[0, 0, 0, 1.2], reward=1.0, terminal=True),
    # Walker: phi = [ri (6 pre-step state features), |a|^2]; r = w . phi
    # torso height 1.25 - .5 = .75
    Case("walker_linear", "height", task=[1, 0, 0, 0, 0, 0, 0], ri=[0.75, 1.5, 0, 0, 0, 0], reward=0.75),
    # v_x = 1.5
    Case("walker_linear", "speed", task=[0, 1, 0, 0, 0, 0, 0], ri=[0.75, 1.5, 0, 0, 0, 0], reward=1.5),
    # -1 * 6 * .25 = -1.5
    Case("walker_linear", "ctrl", task=[0, 0, 0, 0, 0, 0, -1], action=[0.5] * 6, reward=-1.5),
    # .1 + .2 + .3 + .4 + .5 + .6 = 2.1; -.5 * 1 = -.5 -> 1.6
    Case("walker_linear", "all", task=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, -0.5], action=[1], ri=[1] * 6,
         reward=1.6),
    # Reacher goal, on the PRE-step fingertip obs[6:8]: r = 1[|tip - g| < m] - 1, terminal at the goal.
    # |(.1, .1) - (.1, .11)| = .01 < .02 -> 0, terminal
    Case("reacher_goal", "at_goal", task=[0.1, 0.11, 0.02], obs=TIP, reward=0.0, terminal=True),
    # |(-.03, -.04)| = .05 >= .02 -> -1
    Case("reacher_goal", "away", task=[0.13, 0.14, 0.02], obs=TIP, reward=-1.0),
    # the post-step tip reaches the goal, but the reward looks at s_t -> -1, not terminal
    Case("reacher_goal", "arrives_next_step", task=[0.13, 0.14, 0.02], obs=TIP,
         next_obs=[1, 1, 0, 0, 0, 0, 0.13, 0.14], reward=-1.0),
    # .05 < margin .06 -> 0, terminal
    Case("reacher_goal", "wide_margin", task=[0.13, 0.14, 0.06], obs=TIP, reward=0.0, terminal=True),
]


@pytest.mark.parametrize("case", HAND_CASES, ids=[f"{c.family}-{c.id}" for c in HAND_CASES])
def test_hand_computed_rewards(case: Case) -> None:
    fam = get_family(case.family)
    step = _row(fam, obs=case.obs, action=case.action, next_obs=case.next_obs, ri=case.ri)
    z = np.array([case.task], dtype=np.float64)
    assert fam.rewards_for(step, z)[0] == pytest.approx(case.reward, rel=1e-9, abs=1e-9)
    assert fam.terminals_for(step, z)[0] == case.terminal
    assert fam.rewards(step, z)[0, 0] == pytest.approx(case.reward, rel=1e-9, abs=1e-9)


def test_every_family_of_mine_has_hand_cases() -> None:
    counts = {n: sum(c.family == n for c in HAND_CASES) for n in MINE}
    assert all(v >= 3 for v in counts.values()), counts


# ---- 3b. segment_returns (AIR's weighted reward sums) == double loop -----------------------


def segment_returns_loop(fam: TaskFamily, steps: StepBatch, tasks: np.ndarray, weights: np.ndarray,
                         lengths: np.ndarray) -> np.ndarray:
    """The definition of ``segment_returns`` for shared tasks [K, Z], one (segment, task,
    step) at a time: weight x rewards_for, up to and including the segment's first step
    that terminates under the task where termination depends on it."""
    cut = np.concatenate([[0], np.cumsum(lengths)])
    out = np.zeros((len(lengths), len(tasks)))
    for m, (lo, hi) in enumerate(zip(cut[:-1], cut[1:])):
        for k in range(len(tasks)):
            for i in range(lo, hi):
                row = take(steps, slice(i, i + 1))
                out[m, k] += weights[i] * fam.rewards_for(row, tasks[k : k + 1])[0]
                if fam.task_dependent_termination and fam.terminals_for(row, tasks[k : k + 1])[0]:
                    break
    return out


@pytest.mark.parametrize("block", [1, 1 << 15], ids=["one_segment_per_block", "default_blocks"])
@pytest.mark.parametrize("name", ALL)
def test_segment_returns_equal_double_loop(name: str, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # the point families' and reacher_goal's overrides (and every family's default) against
    # the definition: sum over each segment's steps of weight x rewards_for, one (segment,
    # task) at a time, stopping at the goal where termination depends on the task; uneven
    # segments (an empty one, a run of equal ones) and blocks of one segment
    import envs.mujoco_families
    import envs.point

    monkeypatch.setattr(envs.point, "SEGMENT_BLOCK_ELEMENTS", block)
    monkeypatch.setattr(envs.mujoco_families, "REACH_BLOCK_ELEMENTS", block)
    fam = get_family(name)
    steps = recorded_steps(name)
    tasks = candidate_tasks(fam, steps)
    B = len(steps)
    lengths = np.array([B // 4, 3, 3, 3, 0, B - B // 4 - 9])  # an empty one, a run of equal ones
    weights = np.random.default_rng(2).uniform(0.1, 1.0, size=B)
    expected = segment_returns_loop(fam, steps, tasks, weights, lengths)
    got = fam.segment_returns(steps, tasks, weights, lengths)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # each segment under its own tasks [M, K, Z] (advantage relabeling's candidates)
    own = np.stack([np.roll(tasks, m, axis=0) for m in range(len(lengths))])  # [M, K, Z]
    expected_own = np.stack([expected[m, (np.arange(len(tasks)) - m) % len(tasks)] for m in range(len(lengths))])
    np.testing.assert_allclose(fam.segment_returns(steps, own, weights, lengths), expected_own,
                               rtol=1e-12, atol=1e-12)
    # equal-length segments take the batched-product path: the same sums
    even = (B // 4) * 4
    even_steps = take(steps, slice(0, even))
    loop = np.stack([fam.segment_returns(take(even_steps, slice(i, i + B // 4)), tasks, weights[i : i + B // 4],
                                         np.array([B // 4]))[0] for i in range(0, even, B // 4)])
    np.testing.assert_allclose(fam.segment_returns(even_steps, tasks, weights[:even], np.full(4, B // 4)), loop,
                               rtol=1e-12, atol=1e-12)
    own = np.stack([np.roll(tasks, m, axis=0) for m in range(4)])
    loop_own = np.stack([fam.segment_returns(take(even_steps, slice(i, i + B // 4)), own[i // (B // 4)],
                                             weights[i : i + B // 4], np.array([B // 4]))[0]
                         for i in range(0, even, B // 4)])
    np.testing.assert_allclose(fam.segment_returns(even_steps, own, weights[:even], np.full(4, B // 4)), loop_own,
                               rtol=1e-12, atol=1e-12)


#: two-step segments whose steps are hand cases above: (family, task, step fields, weights,
#: lengths, weighted sums worked out from the per-step rewards)
SEGMENT_CASES = [
    # reach_only task: e = (.2, .1) -> .1; e = g = (.2, 0) -> .2; one segment, weights 1, .5
    ("point_reacher", "reach", [0, 0.5, 0, 0.2, PI, 0.2], {"next_obs": [[0.2, 0.1], [0.2, 0]]}, [1, 0.5], [2],
     [0.1 + 0.5 * 0.2]),
    # the same steps as two one-step segments
    ("point_reacher", "reach_split", [0, 0.5, 0, 0.2, PI, 0.2], {"next_obs": [[0.2, 0.1], [0.2, 0]]}, [1, 0.5],
     [1, 1], [0.1, 0.5 * 0.2]),
    # energy_only task: |a| = .5 then 1 -> -.5 + .5 * -1 = -1
    ("point_reacher", "energy", [0.25, 0.5, 0, 0.2, 0, 0.2], {"action": [[0.3, 0.4], [0.6, 0.8]]}, [1, 0.5], [2],
     [-1.0]),
    # safety_only task, o = (0, .2): |e - o| = .09 -> log10(.1)/5 = -.2; |e - o| = .99 -> log10(1) = 0
    ("point_reacher", "safety", [0, 1, 0, 0.2, PI / 2, 0.2], {"next_obs": [[0, 0.29], [0, 1.19]]}, [1, 0.5], [2],
     [-0.2]),
    # on_axis task: pre-step (.5, 0) -> 3.989422804, (-.3, 0) -> 0
    ("point_trajectory", "ahead_then_behind", [0, 1, 0], {"obs": [[0.5, 0], [-0.3, 0]]}, [1, 0.9], [2],
     [3.989422804]),
    ("point_trajectory", "behind_then_ahead", [0, 1, 0], {"obs": [[-0.3, 0], [0.5, 0]]}, [1, 0.9], [2],
     [0.9 * 3.989422804]),
    # goal (.1, 0), margin .02, on the pre-step fingertip obs[6:8]: -1 per step before the
    # goal, 0 at it, and nothing after it (the episode ends there)
    ("reacher_goal", "goal_second", [0.1, 0, 0.02], {"obs": [[0] * 6 + [0.2, 0.2], [0] * 6 + [0.1, 0.01]]},
     [1, 0.5], [2], [-1.0]),
    ("reacher_goal", "goal_first", [0.1, 0, 0.02], {"obs": [[0] * 6 + [0.1, 0.01], [0] * 6 + [0.2, 0.2]]},
     [1, 0.5], [2], [0.0]),
    ("reacher_goal", "goal_never", [0.1, 0, 0.02], {"obs": [[0] * 6 + [0.2, 0.2], [0] * 6 + [0.2, 0.2]]},
     [1, 0.5], [2], [-1.5]),
    # the fingertip exactly one margin away is not at the goal (||p - g|| < margin is strict)
    ("reacher_goal", "on_the_margin", [0.1, 0, 0.02], {"obs": [[0] * 6 + [0.1, 0.02], [0] * 6 + [0.1, 0.0]]},
     [1, 0.5], [2], [-1.0]),
    # the goal_first steps as two one-step segments: the second starts its own episode
    ("reacher_goal", "goal_first_split", [0.1, 0, 0.02], {"obs": [[0] * 6 + [0.1, 0.01], [0] * 6 + [0.2, 0.2]]},
     [1, 0.5], [1, 1], [0.0, -0.5]),
]


@pytest.mark.parametrize("family,id_,task,fields,weights,lengths,expected", SEGMENT_CASES,
                         ids=[c[1] for c in SEGMENT_CASES])
def test_segment_returns_hand_table(family, id_, task, fields, weights, lengths, expected) -> None:
    fam = get_family(family)
    rows = [_row(fam, **{k: v[i] for k, v in fields.items()}) for i in range(2)]
    steps = StepBatch(*(np.concatenate(f) for f in zip(*rows)))
    got = fam.segment_returns(steps, np.array([task], dtype=np.float64), np.array(weights, dtype=np.float64),
                              np.array(lengths))
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got, TaskFamily.segment_returns(fam, steps, np.array([task], dtype=np.float64),
                                                               np.array(weights, dtype=np.float64), np.array(lengths)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_segment_returns_float32(name: str) -> None:
    # point_reacher (float32_returns): within 1e-5 (1 + |R|) of float64 on its recorded
    # steps and on a 532 x 20 block of random walks at the GH settings (gamma^t weights),
    # shared and per-segment tasks; every other family refuses float32 instead of ignoring it
    fam = get_family(name)
    steps = recorded_steps(name)
    tasks = candidate_tasks(fam, steps)
    B = len(steps)
    lengths = np.array([B // 4, 3, 3, 3, 0, B - B // 4 - 9])
    weights = np.random.default_rng(2).uniform(0.1, 1.0, size=B)
    if not fam.float32_returns:
        with pytest.raises(ValueError, match="no float32 segment_returns"):
            fam.segment_returns(steps, tasks, weights, lengths, float32=True)
        return
    own = np.stack([np.roll(tasks, m, axis=0) for m in range(len(lengths))])
    rng = np.random.default_rng(3)
    M, T = 532, fam.horizon
    walk = np.zeros((M * T, fam.obs_dim))
    walk[:, :2] = np.clip(np.cumsum(rng.normal(scale=0.1, size=(M, T, 2)), axis=1), -1, 1).reshape(-1, 2)
    gh = StepBatch(walk, rng.uniform(-1, 1, (M * T, 2)), walk, np.zeros((M * T, 0)))
    for args in ((steps, tasks, weights, lengths), (steps, own, weights, lengths),
                 (gh, fam.sample_tasks(rng, 100), np.tile(fam.discount ** np.arange(T), M), np.full(M, T))):
        R64, R32 = fam.segment_returns(*args), fam.segment_returns(*args, float32=True)
        assert R32.dtype == np.float64 and not np.array_equal(R32, R64)
        np.testing.assert_allclose(R32, R64, rtol=1e-5, atol=1e-5)


def test_point_trajectory_terms_are_the_plain_expression() -> None:
    # the blocked, rotated form gives the plain expression's bits with the same elementwise
    # kernels (envs.fastmath), and the definition (numpy, step by step) to rounding;
    # positions all around the start (about half the pairs behind it, alpha = 0 there),
    # uneven and empty segments, shared tasks and per-segment tasks
    import envs.point
    from envs import fastmath

    fam = get_family("point_trajectory")
    rng = np.random.default_rng(4)
    lengths = np.array([15, 0, 7, 15, 1, 15, 15, 3])
    B = int(lengths.sum())
    obs = np.zeros((B, 3))
    obs[:, :2] = rng.uniform(-1, 1, size=(B, 2))
    obs[:5, :2] = 0.0  # at the start: x' = 0, alpha = 0
    steps = StepBatch(obs, np.zeros((B, 2)), obs.copy(), np.zeros((B, 0)))
    tasks = fam.sample_tasks(rng, 70)
    weights = rng.uniform(0.1, 1.0, size=B)
    own = np.stack([rng.permutation(tasks)[:20] for _ in lengths])

    class Plain(envs.point.PointTrajectory):
        def _terms(self, p: np.ndarray, tasks: np.ndarray) -> np.ndarray:  # every pair, in order
            theta, d, amp = tasks[..., 0, None], tasks[..., 1, None], tasks[..., 2, None]
            xr = np.concatenate([np.cos(theta), -np.sin(theta)], axis=-1) @ np.swapaxes(p, -1, -2)
            yr = np.concatenate([np.sin(theta), np.cos(theta)], axis=-1) @ np.swapaxes(p, -1, -2)
            dev = yr - amp * fastmath.sin_(xr * (np.pi / d))
            return fastmath.exp_(dev * dev * (-0.5 / self.sigma**2)) * np.maximum(xr / d, 0.0)

    for t in (tasks, own):
        got = fam.segment_returns(steps, t, weights, lengths)
        np.testing.assert_array_equal(got, Plain().segment_returns(steps, t, weights, lengths))
        np.testing.assert_allclose(got, TaskFamily.segment_returns(fam, steps, t, weights, lengths), rtol=1e-12, atol=0)
        assert np.any(got == 0.0) and np.all(got >= 0.0) and not np.any(np.signbit(got))


@pytest.mark.parametrize("seed", range(3))
def test_reacher_goal_segment_returns_on_dense_goal_hits(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # fingertips scattered around a few goals so that goals are reached, left and reached
    # again inside segments; uneven, empty and one-step segments; per-task margins
    # (margin_range) and blocks of one segment; the loop and the family's default
    # (rewards, terminals, alive_mask) as references
    import envs.mujoco_families

    fam = get_family("reacher_goal", margin_range=(0.01, 0.05))
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-0.15, 0.15, size=(4, 2))
    lengths = np.array([7, 0, 1, 12, 12, 3, 0, 25])
    B = int(lengths.sum())
    obs = np.zeros((B, 8))
    obs[:, 6:8] = centers[rng.integers(4, size=B)] + rng.normal(scale=0.02, size=(B, 2))
    steps = StepBatch(obs, np.zeros((B, 2)), obs.copy(), np.zeros((B, 0)))
    tasks = fam.with_goal(fam.sample_tasks(rng, 12), np.concatenate([centers, centers, centers]))
    weights = rng.uniform(0.1, 1.0, size=B)
    expected = segment_returns_loop(fam, steps, tasks, weights, lengths)
    assert 0 < np.mean(expected > -weights.sum()) and np.any(expected == 0.0)  # goals reached, some at once
    own = np.stack([rng.permutation(tasks) for _ in lengths])  # [M, K, Z]
    expected_own = np.stack([segment_returns_loop(fam, steps, own[m], weights, lengths)[m] for m in range(len(lengths))])
    for block in (1, 1 << 17):
        monkeypatch.setattr(envs.mujoco_families, "REACH_BLOCK_ELEMENTS", block)
        np.testing.assert_allclose(fam.segment_returns(steps, tasks, weights, lengths), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fam.segment_returns(steps, own, weights, lengths), expected_own,
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(TaskFamily.segment_returns(fam, steps, tasks, weights, lengths), expected,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(TaskFamily.segment_returns(fam, steps, own, weights, lengths), expected_own,
                               rtol=1e-12, atol=1e-12)


def test_reacher_goal_equal_segments_that_reach_together_tie() -> None:
    # AIR counts ties in a trajectory's favour, so two trajectories that reach a goal at
    # the same step (or never) must get the very same return, wherever they sit in the call
    fam = get_family("reacher_goal")
    T, gamma = 100, fam.discount
    obs = np.zeros((3 * T, 8))
    obs[:, 6:8] = 0.5
    obs[T + 40, 6:8] = obs[2 * T + 40, 6:8] = (0.1, 0.0)
    steps = StepBatch(obs, np.zeros((3 * T, 2)), obs.copy(), np.zeros((3 * T, 0)))
    tasks = np.array([[0.1, 0.0, 0.02], [-0.1, 0.0, 0.02]])
    R = fam.segment_returns(steps, tasks, np.tile(gamma ** np.arange(T), 3), np.full(3, T))
    assert R[1, 0] == R[2, 0] and R[0, 1] == R[1, 1] == R[2, 1] == R[0, 0]
    np.testing.assert_allclose(R[1, 0], -(1 - gamma**40) / (1 - gamma), rtol=1e-12)


@given(st.floats(min_value=1e-300, max_value=1e150), st.integers(min_value=-12, max_value=12))
@settings(max_examples=300, deadline=None)
def test_sqrt_less_bound_keeps_the_decisions_of_sqrt(m: float, ulps: int) -> None:
    # s < t  <=>  sqrt(s) < m, for the doubles around m * m (where the decisions change)
    from envs.mujoco_families import sqrt_less_bound

    t = float(sqrt_less_bound(np.array([m]))[0])
    s = np.float64(m) * np.float64(m)
    for _ in range(abs(ulps)):
        s = np.nextafter(s, np.inf if ulps > 0 else 0.0)
    assert (s < t) == (np.sqrt(s) < m)
    assert np.sqrt(np.nextafter(t, 0.0)) < m <= np.sqrt(t)
    np.testing.assert_array_equal(sqrt_less_bound(np.array([0.0, -1.0, np.nan])), 0.0)


# ---- 4. rewards for another task from the stored rollout alone -------------------------


@pytest.mark.parametrize("name", ALL)
def test_rewards_recomputable_for_other_task(name: str) -> None:
    fam = get_family(name)
    z1, z2 = fam.sample_tasks(np.random.default_rng(5), 2)
    actions = _random_actions(fam, 6)
    first = rollout(fam, z1, seed=7, actions=actions)  # the stored rollout
    if fam.goal_dim:  # make the other task one this rollout achieves mid-way (so it succeeds)
        mid = take(first.steps, slice(len(first.rewards) // 2, len(first.rewards) // 2 + 1))
        z2 = fam.with_goal(z2[None], fam.achieved_goal(mid))[0]
    second = rollout(fam, z2, seed=7, actions=actions)  # ground truth under z2
    T = min(len(first.rewards), len(second.rewards))
    # same seed and actions: the dynamics (and so the stored steps) do not depend on the task
    for a, b in zip(take(first.steps, slice(T)), take(second.steps, slice(T))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    stored = take(first.steps, slice(T))
    z2s = np.repeat(z2[None], T, axis=0)
    np.testing.assert_allclose(fam.rewards_for(stored, z2s), second.rewards[:T], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fam.terminals_for(stored, z2s), second.terminated[:T])
    np.testing.assert_allclose(fam.rewards(stored, z2[None])[:, 0], second.rewards[:T],
                               rtol=1e-12, atol=1e-12)
    if name == "reacher_goal":
        assert second.terminated[T - 1] and second.rewards[T - 1] == 0.0


# ---- 5. linear families ----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL if FAMILIES[n].linear])
def test_linear_features_dot_weights_equal_rewards(name: str) -> None:
    fam = get_family(name)
    steps = recorded_steps(name)
    tasks = fam.sample_tasks(np.random.default_rng(3), 9)
    phi, w = fam.features(steps), fam.task_weights(tasks)
    assert phi.shape == (len(steps), fam.feature_dim) and w.shape == (9, fam.feature_dim)
    np.testing.assert_allclose(phi @ w.T, fam.rewards(steps, tasks), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in ALL if not FAMILIES[n].linear])
def test_nonlinear_families_refuse_features(name: str) -> None:
    fam = get_family(name)
    with pytest.raises(TypeError, match=name):
        fam.features(recorded_steps(name))


# ---- 6. registry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typo, nearest",
    [("point_reachr", "point_reacher"), ("ant_directon", "ant_direction"),
     ("halfcheetah_mo", "half_cheetah_mo")],
)
def test_unknown_family_names_it_and_suggests_nearest(typo: str, nearest: str) -> None:
    with pytest.raises(UnknownFamilyError) as info:
        get_family(typo)
    msg = str(info.value)
    assert repr(typo) in msg and f"did you mean {nearest!r}" in msg
    assert isinstance(info.value, KeyError)


def test_unknown_family_without_close_match_lists_all() -> None:
    with pytest.raises(UnknownFamilyError, match="registered: .*point_reacher"):
        get_family("zzzz")


def test_registry_contents() -> None:
    assert set(MINE) <= set(ALL)
    if importlib.util.find_spec("envs.testing") is not None:  # the lead's test families
        assert {"test_goal", "test_linear"} <= set(ALL)
    for name in ALL:
        fam = get_family(name)
        assert type(fam) is FAMILIES[name] and fam.name == name
    rows = family_table()
    assert [r.name for r in rows] == ALL
    for row in rows:
        d = get_family(row.name).describe()
        assert tuple(row)[:8] == (d["name"], d["obs_dim"], d["action_dim"], d["task_dim"],
                              d["reward_input_dim"], d["horizon"], d["discount"], d["linear"])


# ---- 7. eval tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_eval_tasks_deterministic_and_shaped(name: str) -> None:
    fam = get_family(name)
    tasks = fam.eval_tasks()
    assert tasks.shape == (fam.num_eval_tasks, fam.task_dim) and tasks.dtype == np.float64
    np.testing.assert_array_equal(tasks, get_family(name).eval_tasks())
    np.testing.assert_array_equal(tasks, fam.eval_tasks())
    if name in ("half_cheetah_mo", "ant_direction"):
        assert fam.num_eval_tasks == 25  # GH's fixed 25 (tests/test_fidelity_defaults.py)
    if name in ("reacher_goal", "walker_linear"):
        assert fam.num_eval_tasks == 30  # HIPI: 30 fresh tasks


def test_ant_eval_headings_are_the_reference_ones() -> None:
    tasks = get_family("ant_direction").eval_tasks()[:, 0]
    np.testing.assert_allclose(tasks, np.linspace(-np.pi, np.pi, 25, endpoint=False) + np.pi / 25)
    np.testing.assert_allclose(np.diff(tasks), 2 * np.pi / 25)


# ---- task priors, goals, determinism ------------------------------------------------------


def test_task_priors_have_the_reference_support() -> None:
    rng = np.random.default_rng(0)
    z = get_family("point_trajectory").sample_tasks(rng, 2000)
    assert (np.abs(z[:, 0]) <= np.pi).all() and (z[:, 1] >= 0.75).all() and (z[:, 1] <= 1).all()
    assert (np.abs(z[:, 2]) <= 0.25).all()
    z = get_family("point_reacher").sample_tasks(rng, 2000)
    assert z.min(0) == pytest.approx([0, 0.5, -np.pi, 0.15, -np.pi, 0.15], abs=0.01)
    assert z.max(0) == pytest.approx([0.25, 1, np.pi, 0.3, np.pi, 0.3], abs=0.01)
    assert (get_family("point_reacher").weights(z) >= -1e-12).all()  # first octant
    w = get_family("half_cheetah_mo").sample_tasks(rng, 2000)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0)
    assert (w[:, 1:3] >= 0).all() and (w[:, 0] < 0).any() and (w[:, 3] < 0).any()
    w = get_family("walker_linear").sample_tasks(rng, 2000)
    assert (np.abs(w) <= 1).all() and (w[:, 6] <= 0).all() and (w[:, :6] > 0.9).any(axis=0).all()
    z = get_family("reacher_goal").sample_tasks(rng, 2000)
    r = np.linalg.norm(z[:, :2], axis=1)
    assert (r >= 0.05).all() and (r <= 0.2).all() and (z[:, 2] == 0.02).all()
    z = get_family("reacher_goal", margin_range=(0.01, 0.05)).sample_tasks(rng, 100)
    assert (z[:, 2] >= 0.01).all() and (z[:, 2] <= 0.05).all() and np.unique(z[:, 2]).size == 100
    a = get_family("ant_direction").sample_tasks(rng, 2000)
    assert (np.abs(a) <= np.pi).all()


def test_reacher_goal_relabels() -> None:
    fam = get_family("reacher_goal")
    steps = recorded_steps("reacher_goal")
    tasks = fam.sample_tasks(np.random.default_rng(0), len(steps))
    goals = fam.achieved_goal(steps)
    before = tasks.copy()
    relabeled = fam.with_goal(tasks, goals)
    assert goals.shape == (len(steps), 2)
    np.testing.assert_array_equal(tasks, before)  # a new array; the input is untouched
    np.testing.assert_array_equal(relabeled[:, :2], goals)
    np.testing.assert_array_equal(relabeled[:, 2], tasks[:, 2])  # the margin is kept
    # a step relabeled with its own achieved goal succeeds (HER's premise)
    assert (fam.rewards_for(steps, relabeled) == 0).all() and fam.terminals_for(steps, relabeled).all()


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_rollout_and_set_task(name: str) -> None:
    fam = get_family(name)
    z1, z2 = fam.sample_tasks(np.random.default_rng(0), 2)
    actions = _random_actions(fam, 1, 10)
    a, b = rollout(fam, z1, 3, actions), rollout(fam, z1, 3, actions)
    for x, y in zip(a.steps, b.steps):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    # set_env_task re-targets an existing env (rollout workers reuse envs across episodes)
    env = fam.make_env(z1, seed=3)
    fam.set_env_task(env, z2)
    env.reset(seed=3)
    _, r, *_ = env.step(actions[0])
    c = rollout(fam, z2, 3, actions[:1])
    assert r == c.rewards[0]


def test_family_rejects_bad_tasks() -> None:
    fam = get_family("point_reacher")
    with pytest.raises(ValueError, match="point_reacher"):
        fam.rewards(recorded_steps("point_reacher"), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="margin"):
        ReacherGoal(margin=-1.0)


# ---- properties (hypothesis) ------------------------------------------------------------

angles = st.floats(-math.pi, math.pi)
coords = st.floats(-1.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(x=coords, y=coords, theta=angles, phi=angles, d=st.floats(0.75, 1.0), amp=st.floats(-0.25, 0.25))
def test_point_trajectory_reward_is_rotation_invariant(
    x: float, y: float, theta: float, phi: float, d: float, amp: float
) -> None:
    """Turning the point by -phi and the task angle by +phi leaves the reward unchanged."""
    fam = get_family("point_trajectory")
    c, s = math.cos(phi), math.sin(phi)
    p = _row(fam, obs=[x, y, 0.0])
    q = _row(fam, obs=[c * x + s * y, -s * x + c * y, 0.0])
    r1 = fam.rewards_for(p, np.array([[theta, d, amp]]))[0]
    r2 = fam.rewards_for(q, np.array([[theta + phi, d, amp]]))[0]
    assert r1 >= 0 and r2 == pytest.approx(r1, rel=1e-6, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(speed=st.just(0.0) | st.floats(1e-6, 5.0), heading=angles, offset_deg=st.floats(-180, 180),
       contact=st.floats(0, 1))
def test_ant_direction_rewards_speed_only_within_15_degrees(
    speed: float, heading: float, offset_deg: float, contact: float
) -> None:
    fam = get_family("ant_direction")
    v = speed * np.array([math.cos(heading), math.sin(heading)])
    step = _row(fam, ri=[v[0], v[1], contact, 0.5])
    r = fam.rewards_for(step, np.array([[heading + math.radians(offset_deg)]]))[0]
    if abs(offset_deg) < 14.99:
        assert r == pytest.approx(speed - contact + 1.0, abs=1e-9)
    elif abs(offset_deg) > 15.01 or speed == 0:
        assert r == pytest.approx(1.0 - contact, abs=1e-9)

