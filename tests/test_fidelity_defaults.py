"""Per-family settings taken from the papers and their code: task repetition (GH B.1),
updates per env step (GH code / Table 2), evaluation sets (GH, HIPI) and HER on
PointReacher (GH Fig. 4b). Pure: no Ray.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs import get_family
from hindsight.config import load_config
from learner.sac.config import SACConfig
from learner.sac.networks import Actor
from relabel_service.core import RelabelRequest, Trajectory
from relabel_service.strategies import STRATEGIES, StrategyConfig, to_transitions


# ---- task repetition (GH appendix B.1) -------------------------------------------------------
@pytest.mark.parametrize("family, repeat", [
    ("half_cheetah_mo", 5), ("ant_direction", 5), ("point_reacher", 1), ("reacher_goal", 1),
])
def test_task_repeat_family_defaults(family, repeat):
    cfg = load_config(None, [f"env.family={family}"])
    assert cfg.learner.sac.task_repeat == repeat
    assert load_config(None, [f"env.family={family}", "learner.sac.task_repeat=1"]).learner.sac.task_repeat == 1


def test_repeated_task_reaches_the_network_input():
    fam = get_family("half_cheetah_mo")
    sac = load_config(None, ["env.family=half_cheetah_mo"]).learner.sac
    actor = Actor(fam.obs_dim, fam.action_dim, fam.task_dim, sac)
    first = next(m for m in actor.modules() if hasattr(m, "in_features"))
    assert first.in_features == fam.obs_dim + 5 * fam.task_dim
    plain = Actor(fam.obs_dim, fam.action_dim, fam.task_dim, SACConfig(hidden_sizes=(256, 256)))
    assert next(m for m in plain.modules() if hasattr(m, "in_features")).in_features == fam.obs_dim + fam.task_dim


# ---- updates per env step (GH code; the paper's Table 2 as an option) -------------------------
@pytest.mark.parametrize("family, source, per_step", [
    ("point_trajectory", "code", 100 / 75),
    ("point_trajectory", "paper", 100 / 75),
    ("point_reacher", "code", 5.0),
    ("point_reacher", "paper", 2.0),
    ("half_cheetah_mo", "code", 1.0),
    ("test_goal", "code", 2.0),  # the generic 256 with the test families' batch of 128
])
def test_updates_per_env_step_defaults(family, source, per_step):
    cfg = load_config(None, [f"env.family={family}", f"learner.update_ratio_source={source}"])
    assert cfg.learner.samples_per_insert / cfg.learner.sac.batch_size == pytest.approx(per_step)


def test_explicit_samples_per_insert_wins():
    cfg = load_config(None, ["env.family=point_reacher", "learner.samples_per_insert=100"])
    assert cfg.learner.samples_per_insert == 100
    # the ratio follows a changed batch size
    cfg = load_config(None, ["env.family=point_reacher", "learner.sac.batch_size=64"])
    assert cfg.learner.samples_per_insert == 64 * 5


# ---- evaluation sets ---------------------------------------------------------------------------
# first and last rows of GH's HALF_CHEETAH_HARD_LATENT (rlkit/torch/multitask/reference_latents.py)
GH_CHEETAH_FIRST = [0.16351133, 0.39735737, 0.13868221, 0.89226589]
GH_CHEETAH_SECOND = [0.44516526, 0.5384878, 0.71539224, -0.00852757]


def test_half_cheetah_eval_set_is_ghs_25_latents():
    fam = get_family("half_cheetah_mo")
    tasks = fam.eval_tasks()
    assert tasks.shape == (25, 4)
    np.testing.assert_allclose(tasks[0], GH_CHEETAH_FIRST)
    np.testing.assert_allclose(tasks[1], GH_CHEETAH_SECOND)
    np.testing.assert_allclose(np.linalg.norm(tasks, axis=1), 1.0, atol=1e-7)
    assert (tasks[:, 1:3] >= 0).all()  # in the prior's support (ctrl, height weights >= 0)
    assert len(np.unique(tasks, axis=0)) == 25
    np.testing.assert_array_equal(fam.eval_tasks_for(50), np.concatenate([tasks, tasks]))  # cycled, as GH
    assert load_config(None, ["env.family=half_cheetah_mo"]).eval.episodes == 25


@pytest.mark.parametrize("family, n", [("point_trajectory", 333), ("point_reacher", 50), ("reacher_goal", 30),
                                       ("walker_linear", 30)])
def test_prior_sample_eval_sets_are_seeded_and_distinct(family, n):
    fam = get_family(family)
    assert load_config(None, [f"env.family={family}"]).eval.episodes == n
    tasks = fam.eval_tasks_for()
    np.testing.assert_array_equal(tasks, fam.sample_tasks(np.random.default_rng(fam.eval_seed), n))
    np.testing.assert_array_equal(tasks, get_family(family).eval_tasks_for())  # seeded
    assert len(np.unique(tasks, axis=0)) == n
    more = fam.eval_tasks_for(n + 7)  # more episodes: more fresh tasks, none counted twice
    np.testing.assert_array_equal(fam.eval_tasks_for(5), tasks[:5])
    assert len(np.unique(more, axis=0)) == n + 7
    np.testing.assert_array_equal(more[:n], tasks)


@pytest.mark.parametrize("family", ["half_cheetah_mo", "ant_direction", "point_reacher"])
def test_reward_biased_family_uses_its_base_eval_set(family):
    base, biased = get_family(family), get_family(family, reward_bias=3.0)
    np.testing.assert_array_equal(biased.eval_tasks(), base.eval_tasks())
    np.testing.assert_array_equal(biased.eval_tasks_for(40), base.eval_tasks_for(40))


# ---- HER on PointReacher (GH Fig. 4b) ---------------------------------------------------------
def _point_reacher_episode(seed: int) -> Trajectory:
    fam = get_family("point_reacher")
    rng = np.random.default_rng(seed)
    task = fam.sample_tasks(rng, 1)[0]
    env = fam.make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards = [obs], [], []
    for _ in range(fam.horizon):
        a = rng.uniform(-1, 1, 2)
        obs, r, _, _, _ = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(r)
    T = len(actions)
    return Trajectory(
        episode_id=f"pr{seed}", worker_id=0, policy_version=0, family=fam.name, task=task,
        obs=np.array(observations), actions=np.array(actions), rewards=np.array(rewards),
        terminated=np.zeros(T, dtype=bool), truncated=True, reward_inputs=np.zeros((T, 0)), created_at=0.0,
    )


def test_her_final_on_point_reacher_relabels_the_goal_part_only():
    fam = get_family("point_reacher")
    trajs = [_point_reacher_episode(s) for s in range(3)]
    result = STRATEGIES["her_final"](RelabelRequest(fam, trajs, discount=fam.discount), np.random.default_rng(0))
    assert [i for i, _ in result.copies] == [0, 1, 2]
    for i, step_tasks in result.copies:
        traj = trajs[i]
        final_pos = traj.obs[-1, :2]  # the goal achieved by the last step (post-step position)
        np.testing.assert_allclose(fam.goal(step_tasks), np.repeat(final_pos[None], traj.length, 0), atol=1e-12)
        # weights (u, v) and obstacle (theta_o, r_o) as commanded
        np.testing.assert_array_equal(step_tasks[:, [0, 1, 4, 5]], np.repeat(traj.task[None, [0, 1, 4, 5]], traj.length, 0))
    # the last step of a relabeled copy is at its goal: the reach term is its maximum, 0.2
    for i, step_tasks in result.copies:
        z = step_tasks[-1:]
        steps = trajs[i].steps()
        step = type(steps)(*(np.asarray(x)[-1:] for x in steps))
        c = fam.weights(z)[0]
        energy = -np.linalg.norm(step.action[0])
        safety = np.log10(np.linalg.norm(step.next_obs[0, :2] - fam.obstacle(z)[0]) + 0.01) / 5
        np.testing.assert_allclose(fam.rewards_for(step, z)[0], c[0] * 0.2 + c[1] * energy + c[2] * safety, rtol=1e-9)
    # and the transitions sent to the learner carry those rewards (recomputed per step)
    batch = to_transitions(fam, trajs, result)
    assert len(batch) == 2 * sum(t.length for t in trajs)


def test_her_future_accepted_for_point_reacher():
    cfg = load_config(None, ["env.family=point_reacher", "relabel.strategy=her_future"])
    assert cfg.relabel.strategy == "her_future"
    fam = get_family("point_reacher")
    trajs = [_point_reacher_episode(s) for s in range(2)]
    result = STRATEGIES["her_future"](RelabelRequest(fam, trajs, discount=fam.discount), np.random.default_rng(1),
                                      StrategyConfig(her_k=4))
    assert len(result.copies) == 2 * 4
    achieved = {tuple(np.round(p, 9)) for t in trajs for p in t.obs[1:, :2]}
    for _, step_tasks in result.copies:
        assert {tuple(np.round(g, 9)) for g in fam.goal(step_tasks)} <= achieved


# ---- experiment runner: the pure parts ---------------------------------------------------------
def test_aggregate_curves_hand_table():
    from hindsight.experiment import aggregate_curves

    # seed A evaluated at 100 and 300, seed B at 200 and 400: the common range is [200, 300];
    # A(200) = 2, A(300) = 3; B(200) = 4, B(300) = 2 (halfway to 0 at 400)
    x, mean, std = aggregate_curves([[(100, 1.0), (300, 3.0)], [(200, 4.0), (400, 0.0)]])
    np.testing.assert_allclose(x, [200, 300])
    np.testing.assert_allclose(mean, [3.0, 2.5])
    np.testing.assert_allclose(std, [1.0, 0.5])
    x, mean, std = aggregate_curves([[(5, 1.0), (10, None), (15, 2.0)]])  # missing values skipped
    np.testing.assert_allclose(x, [5, 15]) and np.testing.assert_allclose(std, 0.0)


def test_experiment_spec_errors_name_the_key(tmp_path):
    from hindsight.configtools import ConfigError
    from hindsight.experiment import load_spec

    spec = tmp_path / "e.yaml"
    spec.write_text("name: x\nfamilies: [test_goal]\nstrategies: [none]\nseeds: [0]\nsedds: [1]\n")
    with pytest.raises(ConfigError, match="sedds"):
        load_spec(spec)
    spec.write_text("name: x\nfamilies: [test_goal]\nstrategies: [{nopart: [relabel.strategy=hipi, "
                    "relabel.strategy_cfg.partition=false]}, none]\nseeds: [0, 1]\n")
    s = load_spec(spec)
    assert [c.strategy.label for c in s.cells()] == ["nopart", "nopart", "none", "none"]
    assert "relabel.strategy_cfg.partition=false" in s.cell_overrides(s.cells()[0])


def test_deployed_experiments_load():
    from pathlib import Path

    from hindsight.experiment import check_configs, load_spec

    files = sorted((Path(__file__).resolve().parent.parent / "deploy" / "experiments").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        configs = check_configs(load_spec(f))  # every cell's config is valid
        assert configs
