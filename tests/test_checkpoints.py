"""A checkpoint is written whole or not at all; a full disk is named, the previous one kept.

The full disk is real: the temporary file is a symlink to ``/dev/full``, whose writes fail
with ENOSPC, the error a filled filesystem gives.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from hindsight.config import LearnerConfig
from learner.actor import Learner
from learner.checkpoints import CheckpointError, atomic_save
from learner.sac.config import SACConfig
from learner.sac.update import load_state

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def _fill_disk_for(path: Path) -> None:
    """Every write to ``path``'s temporary file fails with ENOSPC."""
    os.symlink("/dev/full", path.with_name(path.name + ".tmp"))


def test_atomic_save_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    atomic_save({"a": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["a"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


@needs_dev_full
def test_full_disk_is_named_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    atomic_save({"v": 1}, path)
    _fill_disk_for(path)
    with pytest.raises(CheckpointError, match=r"disk is full.*previous checkpoint is kept") as err:
        atomic_save({"v": 2}, path)
    assert err.value.errno == errno.ENOSPC and str(path) in str(err.value)
    assert torch.load(path)["v"] == 1  # the previous checkpoint, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # no temporary left behind


@needs_dev_full
def test_learner_checkpoint_on_a_full_disk(tmp_path: Path) -> None:
    cfg = LearnerConfig(num_cpus=1, sac=SACConfig(hidden_sizes=(16, 16), batch_size=8))
    learner = Learner(3, 2, 2, 0, cfg, 0.99, seed=0, checkpoint_dir=str(tmp_path))
    first = learner.checkpoint({"env_steps": 10})
    _fill_disk_for(Path(first))
    with pytest.raises(CheckpointError, match="disk is full"):
        learner.checkpoint({"env_steps": 20})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not any(n.endswith(".tmp.tmp") for n in names) and "learner.pt.tmp" not in names
    load_state(first)  # still a whole checkpoint
