"""Where a run's cores go: CPU time of every process of the run, by role, over a window.

    sampler = CpuSampler(driver_pid=os.getpid()).start()
    ...                                   # the run
    sampler.stop()
    sampler.cores_by_role(t0, t1)         # {"learner": 1.53, "rollout": 0.03, ..., "idle": 0.28}

Linux only: every ``every_s`` seconds it reads ``/proc/PID/stat`` (user + system time) of
this machine's processes and names each by its command line (read until the name is
settled, then kept for that process: the sampler runs in the driver, beside the run it
measures: ~2 ms of CPU a sample with 80 processes, every second by default): a Ray actor process calls
itself ``ray::ClassName[.method]``, which maps to a role (``ROLES``); any other process of
Ray (raylet, GCS, log monitor, agents) is ``ray_system``; this process is ``driver``.
Processes of anything else on the machine are ``other``. ``cores_by_role`` gives the CPU
seconds each role used between two wall-clock times (the samples nearest inside them)
divided by the seconds between those samples: cores in use, so a learner that kept two
cores busy shows 2.0. ``idle`` is what the machine's cores left unused (``os.cpu_count()``
minus the total). Elsewhere (no ``/proc``) ``available`` is False and nothing is sampled.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

ROLES = {
    "Learner": "learner",
    "MetaLearner": "learner",
    "RolloutActor": "rollout",
    "MetaRolloutActor": "rollout",
    "RelabelWorker": "relabel",
    "MetaRelabelWorker": "relabel",
    "Shard": "store",
}
"""Actor class name (``ray::NAME``) -> role (the eval actor is a ``RolloutActor``: rollout);
actors not listed (the run's control actor) count as ``ray_other_actors``."""

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def role_of(cmdline: str, pid: int, driver_pid: int) -> str:
    """A process's role from its command line (``ROLES``; module docstring)."""
    if pid == driver_pid:
        return "driver"
    if cmdline.startswith("ray::"):
        # ray::Class, ray::Class.method, and while a named actor starts ray::NAME:Class.__init__
        name = cmdline[5:].split()[0].rsplit(":", 1)[-1].split(".")[0]
        return ROLES.get(name, "ray_other_actors")
    if "/ray/" in cmdline or "ray/core" in cmdline or "raylet" in cmdline or "gcs_server" in cmdline:
        return "ray_system"
    return "other"


def _stat(pid: str) -> tuple[float, int]:
    """(CPU seconds: utime + stime, start time in clock ticks: with the pid, a process's identity)."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    try:
        fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
    finally:
        os.close(fd)
    return (int(fields[11]) + int(fields[12])) / _TICK, int(fields[19])


def _settled(cmdline: str, role: str) -> bool:
    """Whether a process's role can no longer change: a Ray worker starts as a Python
    process of Ray's (``ray_system``), calls itself ``ray::IDLE``, then ``ray::NAME:Class.__init__``
    (a named actor) while its actor starts, then ``ray::Class``; every other process keeps
    its command line."""
    if role == "ray_system" or cmdline.startswith("ray::IDLE"):
        return False
    return not (cmdline.startswith("ray::") and cmdline.split()[0].endswith(".__init__"))


class CpuSampler:
    """A daemon thread that samples every process's CPU time (module docstring)."""

    def __init__(self, driver_pid: int | None = None, every_s: float = 1.0):
        self.driver_pid = os.getpid() if driver_pid is None else int(driver_pid)
        self.every_s = float(every_s)
        self.available = Path("/proc/self/stat").exists()
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._roles: dict[tuple[int, int], str] = {}  # (pid, start time) -> a settled role
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        now, procs = time.time(), {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                cpu, started = _stat(entry)
                role = self._roles.get((pid, started))
                if role is None:  # the command line only until the role is settled
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    role = role_of(cmdline.strip(), pid, self.driver_pid)
                    if _settled(cmdline, role):
                        self._roles[(pid, started)] = role
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            procs[pid] = (role, cpu)
        self.samples.append((now, procs))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def start(self) -> "CpuSampler":
        if self.available:
            self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def cores_by_role(self, t0: float, t1: float) -> dict[str, float] | None:
        """Cores each role used between wall times ``t0`` and ``t1`` (the first and the last
        sample inside them), ``total`` and ``idle``; None without two samples in between."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None
        (ta, a), (tb, b) = inside[0], inside[-1]
        seconds = tb - ta
        used: dict[str, float] = {}
        for pid, (role, cpu) in b.items():
            # a process born inside the window counts from zero; one that died before its
            # end is missing from b and its last share is lost (rare: a replaced actor)
            before = a[pid][1] if pid in a else 0.0
            used[role] = used.get(role, 0.0) + max(0.0, cpu - before)
        out = {role: round(v / seconds, 3) for role, v in sorted(used.items()) if v > 0}
        out["total"] = round(sum(used.values()) / seconds, 3)
        out["idle"] = round(max(0.0, (os.cpu_count() or 1) - sum(used.values()) / seconds), 3)
        out["seconds"] = round(seconds, 2)
        return out
