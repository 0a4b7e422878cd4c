"""CPU priority of the actors that share a node with the learner.

On a node where the learner runs, every other actor of a run (rollout workers, relabel
workers, store shards, the eval and control actors) takes CPU time the learner's update
would have used. The learner's two-branch update (``learner/sac/branches.py``) joins its
threads once per update, so a core taken from one branch stalls the other as well. Beside
a load of 8 processes waking every 10 ms (``hindsight bench priority``, 2-core box) the
compiled update kept 0.81 of the cores it uses alone with the load at normal priority and
0.97 with the load in Linux's ``SCHED_IDLE`` class: there the load runs on the cores the
learner's branches leave idle while they wait on each other, and so later and less (0.22
cores against 0.35).

Policies (config ``cpu_priority``):

- ``"idle"``: ``SCHED_IDLE``: the thread runs when a core has nothing else to run (it
  still gets a small share, ~0.3% of a busy core, so it is never starved outright);
- ``"nice"``: nice 19, the lowest normal priority (~1.5% of a busy core);
- ``"normal"``: left as it is.

Both are per thread on Linux: ``set_cpu_priority`` sets every thread of the process (Ray
has started its own before an actor's ``__init__`` runs), and threads started afterwards
inherit it. Elsewhere (macOS) it does nothing and says so once. A lower priority needs no
privilege; a sandbox that forbids it (seccomp) leaves the actor at normal priority with a
warning, never fails it.

    Worker = ray.remote(background(RolloutActor, "idle"))   # the process title stays RolloutActor
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

CPU_PRIORITIES = ("idle", "nice", "normal")
NICE_LOWEST = 19


def check_priority(policy: str) -> str:
    if policy not in CPU_PRIORITIES:
        raise ValueError(f"cpu_priority: unknown policy {policy!r} (known: {', '.join(CPU_PRIORITIES)})")
    return policy


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def set_cpu_priority(policy: str) -> str:
    """Put every thread of this process in ``policy``; returns what it did ("idle",
    "nice", "normal", or "unsupported: why")."""
    check_priority(policy)
    if policy == "normal":
        return "normal"
    if not sys.platform.startswith("linux"):
        log.info("cpu_priority %r applies on Linux only; this process keeps its priority", policy)
        return f"unsupported: {sys.platform}"
    failed = []
    for tid in _threads():
        try:
            if policy == "idle":
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            else:
                os.setpriority(os.PRIO_PROCESS, tid, NICE_LOWEST)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except OSError as e:
            failed.append(f"thread {tid}: {e.strerror or e}")
    if failed:
        log.warning("cpu_priority %r not applied to %d thread(s) of pid %d (%s); they keep their priority",
                    policy, len(failed), os.getpid(), failed[0])
        return f"unsupported: {failed[0]}"
    return policy


def thread_priorities() -> list[tuple[int, str]]:
    """(tid, "idle" / "nice" / "normal") of every thread of this process (Linux), for checks."""
    out = []
    for tid in _threads():
        try:
            policy = os.sched_getscheduler(tid)
            nice = os.getpriority(os.PRIO_PROCESS, tid)
        except OSError:
            continue
        out.append((tid, "idle" if policy == os.SCHED_IDLE else "nice" if nice >= NICE_LOWEST else "normal"))
    return out


def background(cls: type, policy: str) -> type:
    """``cls`` whose instances first put their process in ``policy`` (``set_cpu_priority``),
    then run ``cls.__init__``; ``cls`` itself when the policy is "normal". The subclass
    keeps ``cls``'s name, so Ray's process titles (``ray::RolloutActor``) stay the same."""
    check_priority(policy)
    if policy == "normal":
        return cls

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        set_cpu_priority(policy)  # first: threads the class starts inherit it
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__doc__": cls.__doc__,
                                       "__module__": __name__, "__qualname__": f"background.{cls.__name__}"})
