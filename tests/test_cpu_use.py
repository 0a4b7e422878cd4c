"""``benchmarks/cpu_use.py``: roles from command lines, and the cores a busy process used."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.cpu_use import CpuSampler, _settled, role_of


def test_roles_from_command_lines():
    me = os.getpid()
    assert role_of("ray::Learner.train", 10, me) == "learner"
    assert role_of("ray::Learner", 10, me) == "learner"
    assert role_of("ray::RolloutActor.collect_episodes", 10, me) == "rollout"
    assert role_of("ray::RelabelWorker.relabel", 10, me) == "relabel"
    assert role_of("ray::Shard.append", 10, me) == "store"
    assert role_of("ray::run-shard-1:Shard.__init__", 10, me) == "store"  # a named actor starting
    assert role_of("ray::RunControl", 10, me) == "ray_other_actors"
    assert role_of("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --x", 10, me) == "ray_system"
    assert role_of("/usr/bin/python -m pytest", me, me) == "driver"
    assert role_of("/usr/bin/vim notes.txt", 10, me) == "other"



def test_a_role_is_kept_only_once_it_cannot_change():
    """A Ray worker is a Python process of Ray's, then ``ray::IDLE``, then its actor: the
    sampler reads its command line again until then, and never again after."""
    me = os.getpid()
    for cmd, settled in [("/venv/bin/python /venv/lib/python3.11/site-packages/ray/_private/workers/default_worker.py", False),
                         ("ray::IDLE", False), ("ray::run-shard-0:Shard.__init__", False), ("ray::Shard", True),
                         ("ray::Learner.train", True), ("ray::RunControl", True),
                         ("/usr/bin/vim notes.txt", True), ("", True)]:
        assert _settled(cmd, role_of(cmd, 10, me)) is settled, cmd


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_busy_process_shows_as_about_one_core():
    sampler = CpuSampler(every_s=0.1)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)  # past the interpreter's start
        t0 = time.time()
        sampler.start()
        time.sleep(1.5)
        t1 = time.time()
        sampler.stop()
    finally:
        busy.wait()
    cores = sampler.cores_by_role(t0, t1)
    assert cores is not None and cores["seconds"] > 1.0
    # the busy loop is "other" (not Ray, not this process); on a loaded CI box it may get less
    assert 0.4 < cores["other"] <= 1.1
    assert cores["total"] >= cores["other"] and cores["idle"] >= 0.0
    assert sampler.cores_by_role(t1 + 10, t1 + 20) is None  # no samples there
