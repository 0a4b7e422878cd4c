"""The rollout hot path: ``step_into`` equals ``step``, and a worker's
trajectories (rewards from one batched call per round) equal a plain ``env.step`` replay."""

from __future__ import annotations

import numpy as np
import pytest

from actors.rollout import RolloutWorker
from envs import get_family
from learner.sac.config import sac_config_for

MUJOCO = ["half_cheetah_mo", "ant_direction", "walker_linear", "reacher_goal"]


@pytest.mark.parametrize("name", MUJOCO)
def test_step_into_equals_step(name):
    fam = get_family(name)
    task = fam.sample_tasks(np.random.default_rng(0), 1)[0]
    a_env, b_env = fam.make_env(task, seed=3), fam.make_env(task, seed=3)
    a_env.reset(seed=5)
    b_obs, _ = b_env.reset(seed=5)
    rng = np.random.default_rng(1)
    obs_out, ri_out = np.zeros(fam.obs_dim), np.zeros(fam.reward_input_dim)
    prev = b_obs.copy()
    for t in range(fam.horizon):
        action = rng.uniform(-1, 1, fam.action_dim) * (3.0 if name == "ant_direction" else 1.0)
        obs, reward, te, tr, info = a_env.step(action)
        te2, tr2 = b_env.get_wrapper_attr("step_into")(action, obs_out, ri_out)
        np.testing.assert_array_equal(obs_out, obs)
        np.testing.assert_array_equal(ri_out, info["reward_inputs"])
        assert (te2, tr2) == (te, tr), t
        # the env's per-step reward is the family's reward of that step
        assert reward == pytest.approx(fam.step_reward(prev, action, obs_out, ri_out, task), rel=1e-12, abs=1e-12)
        prev = obs_out.copy()
        if te or tr:
            break


@pytest.mark.parametrize("name", ["half_cheetah_mo", "reacher_goal", "point_reacher"])
def test_worker_trajectories_equal_env_step_replay(name):
    fam = get_family(name)
    worker = RolloutWorker(worker_id=0, family=name, num_envs=3, net_cfg=sac_config_for(fam, hidden_sizes=(16, 16)), seed=0)
    rng = np.random.default_rng(2)
    # two rounds: the buffers are reused, so stale rows must not leak into a trajectory
    for round_ in range(2):
        tasks, seeds = fam.sample_tasks(rng, 3), rng.integers(2**31, size=3)
        if name == "half_cheetah_mo" and round_ == 1:
            tasks = tasks[:2]
            seeds = seeds[:2]
        trajs, stats = worker.collect_episodes(tasks=tasks, reset_seeds=seeds)
        assert stats["env_steps"] == sum(t.length for t in trajs)
        for traj, task, seed in zip(trajs, tasks, seeds):
            env = fam.make_env(task, seed=int(seed))
            obs, _ = env.reset(seed=int(seed))
            np.testing.assert_array_equal(traj.obs[0], obs)
            for t, action in enumerate(traj.actions):
                obs, reward, te, tr, info = env.step(action)
                np.testing.assert_array_equal(traj.obs[t + 1], obs)
                np.testing.assert_array_equal(traj.reward_inputs[t], info["reward_inputs"])
                assert traj.rewards[t] == pytest.approx(reward, rel=1e-12, abs=1e-12)
                assert traj.terminated[t] == te
            assert te or tr
            assert traj.truncated == (tr and not te)
