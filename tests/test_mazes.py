"""HIPI's 2-D navigation mazes (envs/maze.py) and discrete task sets (envs/discrete.py):
hand-computed wall cases, sparse goal reward and termination, batched rewards against a
plain double loop, and HER / HIPI runs on a maze on real local Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from envs import get_family
from envs.core import StepBatch
from envs.discrete import DiscreteTaskFamily
from envs.maze import WALLS, Maze, blocked, maze_step, resize_walls
from hindsight.config import load_config
from hindsight.trainer import Trainer
from relabel_service.core import RelabelRequest, Trajectory
from relabel_service.strategies import STRATEGIES

FOUR = WALLS["FourRooms"]


# ---- walls ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "walls, start, action, expected",
    [
        # cell (4, 5) is a wall: moving right stops in the last sub-step before it
        (FOUR, (4.55, 4.55), (0.0, 1.0), (4.55, 4.95)),
        # row 2 is the doorway between the left and right rooms: nothing blocks
        (FOUR, (2.55, 4.55), (0.0, 1.0), (2.55, 5.55)),
        # (5, 4), (4, 5) and (5, 5) are walls: both axes stop, no corner cutting
        (FOUR, (4.55, 4.55), (1.0, 1.0), (4.95, 4.95)),
        # (5, 1) is the doorway between the two lower rooms
        (FOUR, (4.55, 1.55), (1.0, 0.0), (5.55, 1.55)),
        # sliding: (5, 3) blocks the row move; the column move goes on
        (FOUR, (4.55, 3.05), (1.0, 0.5), (4.95, 3.55)),
        # the box: a move below 0 is refused
        (WALLS["Small"], (0.25, 0.25), (-1.0, -1.0), (0.05, 0.05)),
        # half a cell per step at a = 0.5
        (WALLS["Small"], (1.0, 1.0), (0.5, -0.5), (1.5, 0.5)),
    ],
    ids=["wall-right", "doorway-right", "corner", "doorway-down", "slide", "box", "half"],
)
def test_walls_block_hand_computed(walls, start, action, expected):
    got = maze_step(walls, np.array([start]), np.array([action]))[0]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert not blocked(walls, got)


def test_blocked_cells_and_box():
    assert blocked(FOUR, np.array([4.5, 5.5]))  # wall (4, 5)
    assert not blocked(FOUR, np.array([2.5, 5.5]))  # doorway (2, 5)
    assert blocked(FOUR, np.array([-0.01, 1.0])) and blocked(FOUR, np.array([1.0, 11.01]))
    assert not blocked(FOUR, np.array([11.0, 0.5]))  # the far edge belongs to the last cell


def test_resize_dilates_each_cell():
    big = resize_walls(FOUR, 3)
    assert big.shape == (33, 33)
    np.testing.assert_array_equal(big[::3, ::3], FOUR)
    assert (big[15:18, 15:18] == FOUR[5, 5]).all() and (big[15:18, 3:6] == FOUR[5, 1]).all()
    assert Maze().walls.shape == (33, 33)  # HIPI's FourRooms dilated by three


def test_batched_step_equals_one_by_one():
    rng = np.random.default_rng(0)
    walls = resize_walls(FOUR, 3)
    free = np.argwhere(walls == 0)
    s = free[rng.integers(len(free), size=64)] + rng.uniform(size=(64, 2))
    a = rng.uniform(-1, 1, size=(64, 2))
    batched = maze_step(walls, s, a)
    for i in range(64):
        np.testing.assert_array_equal(batched[i], maze_step(walls, s[i : i + 1], a[i : i + 1])[0])
        assert not blocked(walls, batched[i])


# ---- rewards, termination, goals ---------------------------------------------------------
def _random_steps(rng, B, high=33.0):
    obs = rng.uniform(0, high, size=(B, 2))
    return StepBatch(obs, rng.uniform(-1, 1, (B, 2)), obs + rng.uniform(-1, 1, (B, 2)), np.zeros((B, 0)))


@pytest.mark.parametrize("negative", [True, False])
def test_rewards_equal_double_loop(negative):
    fam = Maze(negative_reward=negative)
    rng = np.random.default_rng(1)
    steps = _random_steps(rng, 40)
    tasks = np.concatenate([fam.sample_tasks(rng, 10), steps.obs[:5] + 0.3])  # some within reach
    R, D = fam.rewards(steps, tasks), fam.terminals(steps, tasks)
    for b in range(40):
        for k in range(len(tasks)):
            at_goal = np.sqrt(np.sum((steps.obs[b] - tasks[k]) ** 2)) < 1.0
            assert D[b, k] == at_goal
            assert R[b, k] == (float(at_goal) - 1.0 if negative else float(at_goal))
    assert D.any() and not D.all()
    np.testing.assert_array_equal(fam.rewards_for(steps, np.repeat(tasks[:1], 40, axis=0)), R[:, 0])


def test_hindsight_goal_scores_the_goal_reward():
    fam = Maze()
    steps = _random_steps(np.random.default_rng(2), 16)
    relabeled = fam.with_goal(fam.sample_tasks(np.random.default_rng(3), 16), fam.achieved_goal(steps))
    np.testing.assert_array_equal(fam.rewards_for(steps, relabeled), 0.0)
    assert fam.terminals_for(steps, relabeled).all()


def test_goals_are_free_and_far_from_the_start():
    fam = Maze()
    g = fam.sample_tasks(np.random.default_rng(0), 500)
    assert not blocked(fam.walls, g).any()
    assert (np.linalg.norm(g - fam.start, axis=1) >= 15.0).all()
    with pytest.raises(ValueError, match="walls"):
        Maze(walls="Nope")


def test_reaching_the_goal_ends_the_episode():
    # no noise, an empty 4 x 4 room: (0,0) -> (1,1) -> (2,2); the reward reads the PRE-step
    # state (HIPI), so step 2 (from (1, 1), 0.71 from the goal) is the one that scores 0 and ends
    fam = Maze(walls="Small", resize_factor=1, action_noise=0.0, min_goal_distance=0.0)
    env = fam.make_env(np.array([1.5, 1.5]), seed=0)
    env.reset(seed=0)
    out = [env.step(np.array([1.0, 1.0])) for _ in range(2)]
    (o1, r1, te1, tr1, _), (o2, r2, te2, tr2, _) = out
    np.testing.assert_allclose(o1, [1.0, 1.0], atol=1e-9)
    assert (r1, te1, tr1) == (-1.0, False, False)
    assert (r2, te2, tr2) == (0.0, True, False)


def test_time_limit_truncates_and_env_reward_is_the_familys():
    fam = Maze()
    task = fam.sample_tasks(np.random.default_rng(4), 1)[0]
    env = fam.make_env(task, seed=5)
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(6)
    for t in range(fam.horizon):
        a = rng.uniform(-1, 1, 2)
        nxt, r, te, tr, info = env.step(a)
        steps = StepBatch(obs[None], a[None], nxt[None], info["reward_inputs"][None])
        assert r == fam.rewards_for(steps, task[None])[0] and te == fam.terminals_for(steps, task[None])[0]
        obs = nxt
        if te:
            break
    assert te or tr


def test_action_noise_is_seeded():
    fam = Maze()
    task = fam.sample_tasks(np.random.default_rng(0), 1)[0]

    def run(seed):
        env = fam.make_env(task, seed=seed)
        env.reset(seed=seed)
        return np.array([env.step(np.array([0.5, 0.2]))[0] for _ in range(10)])

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


# ---- discrete task sets ------------------------------------------------------------------
def test_discrete_rewards_are_the_base_rewards_of_the_table():
    fam = get_family("maze", discrete_tasks=4)
    assert isinstance(fam, DiscreteTaskFamily) and fam.name == "maze_discrete4" and fam.task_dim == 4
    base = fam.base
    rng = np.random.default_rng(0)
    steps = _random_steps(rng, 30)
    steps = StepBatch(np.concatenate([steps.obs[:26], fam.task_table + 0.2]), *steps[1:])
    R = fam.rewards(steps, np.eye(4))
    for b in range(30):
        for n in range(4):
            one = StepBatch(*(x[b : b + 1] for x in steps))
            assert R[b, n] == base.rewards_for(one, fam.task_table[n : n + 1])[0]
    assert (R == 0).any()
    np.testing.assert_array_equal(fam.eval_tasks(), np.eye(4))
    sampled = fam.sample_tasks(rng, 200)
    assert set(np.unique(fam.index_of(sampled))) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="not one-hot"):
        fam.index_of(np.array([[0.5, 0.5, 0.0, 0.0]]))
    # the registered name rebuilds the same family (the store checks dimensions by name)
    np.testing.assert_array_equal(get_family("maze_discrete4").task_table, fam.task_table)


def test_discrete_env_reward_and_retasking():
    fam = get_family("maze", discrete_task_list=[[1.5, 1.5], [20.5, 20.5]], min_goal_distance=0.0, action_noise=0.0)
    env = fam.make_env(np.array([0.0, 1.0]), seed=0)
    env.reset(seed=0)
    assert env.step(np.array([1.0, 1.0]))[1:3] == (-1.0, False)
    fam.set_env_task(env, np.array([1.0, 0.0]))
    env.reset(seed=0)
    env.step(np.array([1.0, 1.0]))
    assert env.step(np.array([1.0, 1.0]))[1:3] == (0.0, True)  # goal 0 reached from (1, 1)


def test_reacher_discrete_is_hipis_32_goals():
    fam = get_family("reacher_discrete")
    assert fam.task_dim == 32 and fam.task_table.shape == (32, 3)
    r = np.linalg.norm(fam.task_table[:, :2], axis=1)
    assert ((r >= 0.05) & (r <= 0.2)).all()
    np.testing.assert_array_equal(fam.task_table, get_family("reacher_goal").sample_tasks(np.random.default_rng(0), 32))


def _traj(fam, i, rng):
    T = 6
    obs = np.cumsum(rng.uniform(0, 1.5, size=(T + 1, 2)), axis=0)
    task = fam.sample_tasks(rng, 1)[0]
    steps = StepBatch(obs[:-1], rng.uniform(-1, 1, (T, 2)), obs[1:], np.zeros((T, 0)))
    return Trajectory(f"e{i}", 0, 0, fam.name, task, obs, steps.action, fam.rewards_for(steps, np.repeat(task[None], T, 0)),
                      np.zeros(T, bool), True, np.zeros((T, 0)), 0.0)


@pytest.mark.parametrize("strategy", sorted(s for s in STRATEGIES if not s.startswith("her")))
def test_every_relabeler_runs_over_a_finite_task_set(strategy):
    fam = get_family("maze", discrete_task_list=[[1.5, 1.5], [3.5, 3.5], [6.5, 6.5]], min_goal_distance=0.0)
    rng = np.random.default_rng(0)
    trajs = [_traj(fam, i, rng) for i in range(5)]
    req = RelabelRequest(family=fam, new=trajs, reference=trajs, discount=0.99,
                         value_fn=lambda obs0, tasks: np.zeros(tasks.shape[:2]))
    res = STRATEGIES[strategy](req, np.random.default_rng(1))
    for _, tasks in res.copies:
        fam.index_of(tasks)  # every relabeled task is a member of the set


# ---- HER and HIPI on a maze, real local Ray ----------------------------------------------
@pytest.mark.ray
@pytest.mark.parametrize("strategy, family", [("her_future", "maze"), ("hipi", "maze"), ("hipi", "maze_discrete4")])
def test_her_and_hipi_run_on_a_maze(ray_session, tmp_path, strategy, family):
    cfg = load_config("smoke", [f"logdir={tmp_path}", f"env.family={family}", "env_steps=900",
                                f"relabel.strategy={strategy}", "eval.every_steps=450"])
    s = Trainer(cfg, progress=False).run()
    assert s["family"] == family and s["strategy"] == strategy
    assert s["env_steps"] >= 900 and s["updates"] > 0
    assert s["transitions_inserted"] > s["env_steps"]  # relabeled copies next to the originals
    assert s["final_eval"]["success_rate"] is not None  # goal termination is reported
    assert (Path(s["run_dir"]) / "summary.json").exists()


@pytest.mark.parametrize("kwargs", [{"discrete_tasks": 4}, {"reward_bias": 1.0, "bias_threshold": 20.0}],
                         ids=["discrete", "biased"])
def test_hipi_rl_rebuilds_wrapper_families(kwargs):
    from learner.sac.hipi_rl import make_hipi_rl_relabeler
    from relabel_service.strategies import StrategyConfig

    fam = get_family("maze", **kwargs)
    relabeler = make_hipi_rl_relabeler(fam, StrategyConfig(), kwargs)  # the learner rebuilds it by name
    assert relabeler.family.name == fam.name
    with pytest.raises(ValueError, match="does not rebuild"):
        make_hipi_rl_relabeler(fam, StrategyConfig(), {**kwargs, "action_noise": 0.5})
