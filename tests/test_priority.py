"""CPU priority of the actors beside the learner (actors/priority.py).

Each case that changes a priority runs in a child process: a lower priority cannot be
raised back without privileges, and the test process must keep its own."""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading

import pytest

from actors.priority import CPU_PRIORITIES, background, check_priority, set_cpu_priority, thread_priorities

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread scheduling classes are Linux's")


def _in_child(policy: str, queue: mp.Queue) -> None:
    stop = threading.Event()
    before = threading.Thread(target=stop.wait)  # a thread that exists before (as Ray's do)
    before.start()
    did = set_cpu_priority(policy)
    seen: list = []
    after = threading.Thread(target=lambda: seen.extend(thread_priorities()))  # started after: inherits
    after.start()
    after.join()
    stop.set()
    before.join()
    queue.put((did, sorted({p for _, p in seen}), len(seen)))


def _run(policy: str) -> tuple[str, list[str], int]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_in_child, args=(policy, queue))
    p.start()
    out = queue.get(timeout=60)
    p.join(timeout=30)
    return out


@linux
@pytest.mark.parametrize("policy", ["idle", "nice"])
def test_every_thread_of_the_process_takes_the_policy_and_new_threads_inherit_it(policy):
    did, policies, threads = _run(policy)
    assert did == policy
    assert threads >= 3  # the main thread, the one started before, the one that looked
    assert policies == [policy]


@linux
def test_normal_leaves_the_process_as_it_is():
    did, policies, _ = _run("normal")
    assert did == "normal"
    assert policies == ["normal"]


def test_an_unknown_policy_is_refused_with_the_known_ones():
    for bad in ("low", "IDLE", ""):
        with pytest.raises(ValueError, match=r"cpu_priority: unknown policy .*idle, nice, normal"):
            check_priority(bad)
    with pytest.raises(ValueError, match="cpu_priority"):
        background(dict, "lowest")
    assert CPU_PRIORITIES == ("idle", "nice", "normal")


class Worker:
    """A worker."""

    def __init__(self, a: int, *, b: int = 2):
        self.total = a + b


def test_background_keeps_the_class_name_and_arguments_and_normal_is_the_class_itself():
    assert background(Worker, "normal") is Worker
    Bg = background(Worker, "nice")
    assert Bg.__name__ == "Worker" and issubclass(Bg, Worker) and Bg.__doc__ == Worker.__doc__
    # constructing it here would lower this process's priority: that runs on Ray below
    assert Bg.__init__ is not Worker.__init__


@linux
@pytest.mark.ray
def test_on_local_ray_a_background_actor_runs_idle_keeping_its_title_and_the_others_at_nice_0():
    import os

    import ray

    from actors.priority import thread_priorities as priorities

    from hindsight.trainer import start_local_ray

    start_local_ray()  # as `hindsight train` starts it: workers at nice 0, not Ray's 15
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on the workers' path
    try:
        actor = ray.remote(background(Worker, "idle")).options(num_cpus=0.05).remote(1, b=5)
        total, policies, pid = ray.get(actor.__ray_call__.remote(
            lambda self: (self.total, sorted({p for _, p in priorities()}), os.getpid())))
        assert total == 6
        assert policies == ["idle"]  # Ray's own threads of the process too
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().startswith(b"ray::Worker")
        plain = ray.remote(Worker).options(num_cpus=0.05).remote(1)  # as the learner is
        nice = ray.get(plain.__ray_call__.remote(lambda self: [os.getpriority(os.PRIO_PROCESS, t) for t, _ in priorities()]))
        assert set(nice) == {0}
    finally:
        ray.shutdown()
