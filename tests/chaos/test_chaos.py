"""The chaos suite's short version (``hindsight chaos`` with fewer steps between faults):
every fault on a 3-node ``ray.cluster_utils.Cluster`` during one training."""

from __future__ import annotations

import pytest
import ray

from hindsight.chaos import FAULTS, format_report, run_chaos
from hindsight.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.chaos]


def test_every_fault_recovers_and_loses_nothing(tmp_path):
    assert not ray.is_initialized()
    report = run_chaos(FAULTS, nodes=3, steps_between=50, out_dir=tmp_path, timeout_s=90)
    table = format_report(report)
    assert report["finished"], table
    for row in report["faults"]:
        assert row["recovered"], f"{row['fault']} did not recover\n{table}"
        assert row["lost"] == 0 and row["duplicates"] == 0, table
    assert report["lost"] == 0 and report["duplicates"] == 0, table
    assert report["acknowledged"] > 0 and report["stored_not_learned"] == 0, table
    # the corrupted record is the one thing the store gave up, and the learner had it
    corrupt = next(r for r in report["faults"] if r["fault"] == "corrupt_segment")
    assert corrupt.get("dropped_by_store", 0) <= 1, table
    # a hung env is caught once its round has run rollout.round_timeout_s (10 s in the chaos
    # config), not after twice that (the clock once restarted when the driver first looked)
    stall = next(r for r in report["faults"] if r["fault"] == "env_stall")
    assert stall["recovery_s"] < 16, table
    assert report["passed"], table


@pytest.mark.parametrize("argv, named", [(["--faults", "rollout_worker,meteor"], "meteor"), (["--nodes", "1"], "--nodes 1")])
def test_chaos_cli_rejects_bad_arguments_before_starting_ray(argv, named, capsys):
    assert main(["chaos", *argv]) == 2
    assert named in capsys.readouterr().err
    assert not ray.is_initialized()


def test_test_family_faults_fire_once_and_only_where_asked(tmp_path):
    """The fault hooks the suite uses: a request file is claimed by exactly one env step."""
    import numpy as np

    from envs import get_family
    from envs.core import StepBatch
    from envs.testing import InjectedFault

    fam = get_family("test_goal", fault_dir=str(tmp_path))
    env = fam.make_env(np.zeros(2), seed=0)
    env.step(np.zeros(2))  # no request: nothing happens
    (tmp_path / "raise").write_text("")
    with pytest.raises(InjectedFault):
        env.step(np.zeros(2))
    env.step(np.zeros(2))  # claimed once: the next step is normal
    assert not (tmp_path / "raise").exists()
    (tmp_path / "nan").write_text("")
    _, r, *_ = env.step(np.zeros(2))
    assert np.isfinite(r)  # the env's own one-step reward stays finite...
    steps = StepBatch(np.zeros((3, 2)), np.zeros((3, 2)), np.ones((3, 2)), np.zeros((3, 0)))
    rewards = fam.rewards_for(steps, np.zeros((3, 2)))
    assert np.isnan(rewards[0]) and np.isfinite(rewards[1:]).all()  # ...the round's batch gets it
    assert np.isfinite(fam.rewards_for(steps, np.zeros((3, 2)))).all()  # once
