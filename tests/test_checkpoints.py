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
    first = learner.checkpoint({"env_steps": 10})["path"]
    _fill_disk_for(Path(first))
    with pytest.raises(CheckpointError, match="disk is full"):
        learner.checkpoint({"env_steps": 20})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not any(n.endswith(".tmp.tmp") for n in names) and "learner.pt.tmp" not in names
    load_state(first)  # still a whole checkpoint


_WRITER = """
import sys
from learner.checkpoints import atomic_write_json
path, i = sys.argv[1], 0
print("ready", flush=True)
while True:
    i += 1
    atomic_write_json({"i": i, "pad": "x" * 4_000_000}, path)
"""


def test_a_kill_mid_write_leaves_a_whole_json_file(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites a 4 MB ``learner.json`` in a loop, at several
    moments: the file is always whole (the old one or the new one). ``Path.write_text``
    truncates first, so a kill mid-write left it empty: the restarted learner then died
    on ``JSONDecodeError`` (a chaos-suite failure in CI)."""
    import signal
    import subprocess
    import sys
    import time

    from learner.checkpoints import read_json

    path = tmp_path / "learner.json"
    repo = Path(__file__).resolve().parents[1]
    seen = 0
    for delay in (0.05, 0.13, 0.21, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=repo, stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.exists():
            meta = read_json(path)  # raises on a truncated file
            assert meta["pad"] == "x" * 4_000_000 and meta["i"] >= 1
            seen += 1
    assert seen >= 1


def test_an_unreadable_learner_json_is_named_on_restore(tmp_path: Path) -> None:
    cfg = LearnerConfig(num_cpus=1, sac=SACConfig(hidden_sizes=(16, 16), batch_size=8))
    learner = Learner(3, 2, 2, 0, cfg, 0.99, seed=0, checkpoint_dir=str(tmp_path))
    learner.checkpoint({"env_steps": 10})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learner.json", "learner.pt"]
    (tmp_path / "learner.json").write_text("")  # what a kill mid-write used to leave
    with pytest.raises(CheckpointError, match=r"learner\.json is not valid JSON"):
        Learner(3, 2, 2, 0, cfg, 0.99, seed=0, checkpoint_dir=str(tmp_path), resume=True)


def test_learner_checkpoint_names_its_cursors_and_resume_prefers_them(tmp_path: Path, caplog) -> None:
    # the learner's learner.json carries the cursors the driver passed (and the updates it
    # really holds); a resume whose trainer_state.json is older (the driver died between the
    # two writes) streams from the checkpoint's cursors, saying so
    import json

    from hindsight.config import load_config
    from hindsight.trainer import STATE_FILE, Trainer, checkpoint_cursors

    cfg = LearnerConfig(num_cpus=1, sac=SACConfig(hidden_sizes=(16, 16), batch_size=8))
    learner = Learner(3, 2, 2, 0, cfg, 0.99, seed=0, checkpoint_dir=str(tmp_path / "checkpoints"))
    meta = learner.checkpoint({"env_steps": 300, "cursors": {"0": 7, "1": 5}, "relabeled": 12})
    assert meta["cursors"] == {"0": 7, "1": 5} and meta["updates"] == 0 and Path(meta["path"]).exists()
    assert checkpoint_cursors(tmp_path) == {"0": 7, "1": 5}
    back = Learner(3, 2, 2, 0, cfg, 0.99, seed=0, checkpoint_dir=str(tmp_path / "checkpoints"), resume=True)
    assert back.restored_checkpoint()["cursors"] == {"0": 7, "1": 5}
    assert Learner(3, 2, 2, 0, cfg, 0.99, seed=0).restored_checkpoint() is None
    (tmp_path / STATE_FILE).write_text(json.dumps({"env_steps": 250, "episodes": 5, "cursors": {"0": 6, "1": 5}}))
    with caplog.at_level("WARNING", logger="hindsight.trainer"):
        trainer = Trainer(load_config("smoke", [f"logdir={tmp_path}"]), run_dir=tmp_path, resume=True, progress=False)
    assert trainer.state["cursors"] == {"0": 7, "1": 5}
    assert "newer than" in caplog.text
    # a checkpoint from before checkpoints named their cursors: trainer_state.json's stand
    (tmp_path / "checkpoints" / "learner.json").write_text(json.dumps({"updates": 0, "inserted": 0, "version": 0}))
    assert checkpoint_cursors(tmp_path) is None
    trainer = Trainer(load_config("smoke", [f"logdir={tmp_path}"]), run_dir=tmp_path, resume=True, progress=False)
    assert trainer.state["cursors"] == {"0": 6, "1": 5}
