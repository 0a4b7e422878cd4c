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
    assert report["passed"], table


@pytest.mark.parametrize("argv, named", [(["--faults", "rollout_worker,meteor"], "meteor"), (["--nodes", "1"], "--nodes 1")])
def test_chaos_cli_rejects_bad_arguments_before_starting_ray(argv, named, capsys):
    assert main(["chaos", *argv]) == 2
    assert named in capsys.readouterr().err
    assert not ray.is_initialized()
