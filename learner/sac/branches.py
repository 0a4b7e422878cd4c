"""A SAC update on two threads: the critic's branch and the actor's at once.

All three losses use the parameters from before the step (``losses.py``), and the branches'
graphs share no tensor that needs a gradient: the critic's reads the actor under no_grad,
the actor's reads the critic with detached weights. So the critic's forward and backward
can run on one thread while the actor's and alpha's run on another, with one hand-off and
one join per update; Adam and the Polyak step follow on the calling thread (compiled, each
thread runs its own Adam group once both graphs are done: ``update._grad_graph_branches``). Counted in
network passes (an estimate, not a timing) the work splits about 9 : 7 (critic: the target actor, target and online twin Q, the twins' backward;
actor: its forward and backward and the twins' forward and input-gradient).

Splitting every op across two threads instead (torch's intra-op threads) joins both
threads at every op, hundreds per update, and one preempted thread stalls the other at
each join; here a preemption delays one branch once. Alone on the 2-core box, one core per
branch, HalfCheetahMO's dims: 190 updates/s compiled against 115 on one thread, 144 eager
against 87 (``hindsight bench learner``, ``all_cores``); beside the other actors of a run
it keeps more of that than torch's intra-op threads do (benchmarks/README.md, End to end).

    branches = BranchThread(threads=1)       # the actor's branch runs here
    state, metrics = update(state, batch, branches=branches)
"""

from __future__ import annotations

import threading
from typing import Callable

import torch


def split_threads(threads: int) -> tuple[int, int]:
    """(the caller's threads, the ``BranchThread``'s) when ``threads`` in all run the update
    in two branches: the critic's branch, the longer one, keeps the odd thread."""
    return threads - threads // 2, threads // 2


class BranchThread:
    """One long-lived worker thread that runs a job handed to it and reports back.

    ``submit(fn)`` starts ``fn`` on the worker; ``wait()`` blocks until it returns and
    re-raises what it raised. ``threads``: the worker's torch intra-op threads (torch's
    thread count is per thread, so the worker sets its own); ``flush_denormal``: its float
    arithmetic treats denormals as zero (``learner.core.denormals_flushed``), as the
    learner's calling thread does while it updates."""

    def __init__(self, threads: int = 1, flush_denormal: bool = False):
        if threads < 1:
            raise ValueError(f"BranchThread threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.flush_denormal = bool(flush_denormal)
        self._go, self._done = threading.Event(), threading.Event()
        self._job: Callable[[], None] | None = None
        self._error: BaseException | None = None
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="sac-actor-branch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)
        if self.flush_denormal:  # for the thread's life (the thread is the learner's own)
            torch.set_flush_denormal(True)
        while True:
            self._go.wait()
            self._go.clear()
            job = self._job
            if job is None:  # close()
                return
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - handed to the caller by wait()
                self._error = e
            self._done.set()

    def submit(self, fn: Callable[[], None]) -> None:
        if self._busy:
            raise RuntimeError("BranchThread.submit: the previous job was not waited for")
        if not self._thread.is_alive():
            raise RuntimeError("BranchThread.submit: the thread is closed")
        self._busy, self._job, self._error = True, fn, None
        self._done.clear()
        self._go.set()

    def wait(self) -> None:
        self._done.wait()
        self._busy = False
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        if self._busy:
            self.wait()
        self._job = None
        self._go.set()
        self._thread.join(timeout=5.0)
