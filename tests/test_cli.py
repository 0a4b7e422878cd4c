"""The ``hindsight`` command line, in-process: listings, config errors, store verify exit codes."""

from __future__ import annotations

import numpy as np
import pytest

from hindsight.cli import main
from relabel_service.store import Shard
from tests.helpers_store import make_traj


def test_envs_lists_every_family(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for name in ("point_reacher", "point_trajectory", "half_cheetah_mo", "ant_direction", "test_goal"):
        assert name in out
    assert "obs" in out.splitlines()[0]


def test_config_table_documents_every_key(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "learner.sac.batch_size" in out and "relabel.strategy" in out


@pytest.mark.parametrize(
    "argv, named",
    [
        (["train", "--set", "learner.sac.batch_szie=64"], "learner.sac.batch_szie"),
        (["train", "--family", "point_reachr"], "point_reachr"),
        (["train", "--strategy", "hipii"], "hipii"),
        (["train", "--config", "no_such_config"], "no_such_config"),
    ],
    ids=["key-typo", "unknown-family", "unknown-strategy", "unknown-config"],
)
def test_bad_train_arguments_fail_at_start_naming_the_thing(argv, named, capsys):
    assert main(argv) == 2
    assert named in capsys.readouterr().err


def _store_with_records(root, n=20):
    sh = Shard(root / "shard-000", fsync="never")
    rng = np.random.default_rng(0)
    for i in range(n):
        sh.append(make_traj(rng, i))
    sh.close()


def test_store_verify_and_stats_on_a_clean_store(tmp_path, capsys):
    _store_with_records(tmp_path)
    assert main(["store", "verify", str(tmp_path)]) == 0
    assert main(["store", "stats", str(tmp_path)]) == 0
    assert "test_goal" in capsys.readouterr().out


def test_store_verify_exits_nonzero_on_a_flipped_byte(tmp_path, capsys):
    _store_with_records(tmp_path)
    seg = sorted((tmp_path / "shard-000").glob("seg-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert main(["store", "verify", str(tmp_path)]) == 1
    assert "crc" in capsys.readouterr().out.lower()
