"""The learner's fast paths: the CUDA-graph body (k updates with device sampling, checked
eagerly on CPU), the graph itself (CUDA only), threads = whole CPUs, the learner's CPU share."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hindsight.config import load_config, learner_cpus
from learner.core import Batch
from learner.replay import Replay
from learner.sac.config import SACConfig
from learner.sac.graphed import GraphedUpdates
from learner.sac.update import init_state, update
from relabel_service.core import TransitionBatch

O, A, Z, I = 5, 2, 3, 1
CFG = SACConfig(hidden_sizes=(32, 32), batch_size=16)


def filled_replay(device: str, n: int = 200) -> Replay:
    rng = np.random.default_rng(0)
    replay = Replay(500, O, A, Z, device, I)
    replay.add(TransitionBatch(
        rng.normal(size=(n, O)), rng.uniform(-1, 1, (n, A)), rng.normal(size=n), rng.normal(size=(n, O)),
        (rng.random(n) < 0.1).astype(np.float32), rng.normal(size=(n, Z)), rng.normal(size=(n, I)),
    ))
    return replay


def test_graph_body_is_k_sac_updates_on_uniform_rows():
    """On CPU the body runs eagerly with state.generator: the same as k calls of ``update`` on
    rows floor(U * size) drawn from that generator, bit for bit."""
    replay = filled_replay("cpu")
    a, b = init_state(O, A, Z, CFG, "cpu", seed=3), init_state(O, A, Z, CFG, "cpu", seed=3)
    graphed = GraphedUpdates(a, replay, updates_per_launch=3)
    assert graphed.run(2) == 6 and a.step == 6
    for _ in range(6):
        u = torch.rand(CFG.batch_size, generator=b.generator)
        idx = (u * len(replay)).long()
        update(b, Batch(*(x[idx] for x in replay._data)), with_metrics=False)
    for p, q in zip(a.actor.parameters(), b.actor.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(a.target_critic.parameters(), b.target_critic.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    metrics = graphed.read_metrics()
    assert set(metrics) >= {"critic_loss", "alpha"} and all(np.isfinite(list(metrics.values())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_updates_run_and_learn():
    replay = filled_replay("cuda")
    state = init_state(O, A, Z, CFG, "cuda", seed=0)
    before = [p.detach().clone() for p in state.critic.parameters()]
    graphed = GraphedUpdates(state, replay, updates_per_launch=4)
    assert graphed.run(3) == 12 and state.step == 12  # warm-up launch, capture, 2 replays
    graphed.run(50)
    assert state.step == 212
    assert all(np.isfinite(list(graphed.read_metrics().values())))
    assert any(not torch.equal(p, q) for p, q in zip(before, state.critic.parameters()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_learner_on_cuda_uses_the_graph():
    from learner.actor import Learner

    cfg = dataclasses.replace(load_config(None, ["learner.min_replay=100"]).learner, sac=CFG, updates_per_launch=4,
                              samples_per_insert=64.0, tf32=True)
    learner = Learner(O, A, Z, I, cfg, discount=0.9, seed=0)
    assert learner.use_graph
    rng = np.random.default_rng(0)
    n = 400
    learner.ingest(TransitionBatch(
        rng.normal(size=(n, O)), rng.uniform(-1, 1, (n, A)), rng.normal(size=n), rng.normal(size=(n, O)),
        np.zeros(n, np.float32), rng.normal(size=(n, Z)), rng.normal(size=(n, I)),
    ))
    report = learner.train(max_updates=10)
    assert report["updates_done"] == 10 and learner.updates == 10 and report["metrics"]


def test_learner_gets_the_cpus_left_after_the_other_actors():
    cfg = load_config("smoke", ["learner.num_cpus=0"])
    others = 2 * cfg.rollout.num_cpus + cfg.relabel.num_cpus + 2 * cfg.store.num_cpus + 0.05
    assert learner_cpus(cfg, 16.0) == pytest.approx(16.0 - others)
    assert learner_cpus(cfg, 1.0) == 1.0  # never below one
    assert learner_cpus(load_config("smoke", ["learner.num_cpus=3"]), 16.0) == 3.0


@pytest.mark.parametrize("num_cpus, set_threads, width, branches, expected, split", [
    (1.1, 0, 32, True, 1, False), (2.0, 0, 32, True, 2, False), (2.9, 0, 32, True, 2, False),
    (1.35, 2, 32, True, 2, False), (2.0, 1, 128, True, 1, False), (1.35, 0, 32, True, 1, False),
    (1.35, 0, 128, True, 2, True), (1.35, 0, 128, False, 1, False), (2.0, 0, 128, False, 2, False),
    (4.0, 0, 128, True, 4, True), (1.05, 0, 256, True, 1, False), (1.1, 0, 256, True, 2, True),
])
def test_learner_threads_are_its_whole_cpus_unless_set(num_cpus, set_threads, width, branches, expected, split):
    """``threads`` (``learner.threads``, else ``threads_for``) in all; with 2+ of them and a
    network where two branches pay (128+ wide), half of them run the actor's branch of the
    update on a thread of its own and the rest stay with the caller, and a tenth of a core
    beyond the whole ones counts as a thread."""
    from learner.actor import Learner

    threads = torch.get_num_threads()
    try:
        cfg = load_config(None, [f"learner.threads={set_threads}", f"learner.parallel_branches={branches}"]).learner
        sac = dataclasses.replace(CFG, hidden_sizes=(width, width))
        cfg = dataclasses.replace(cfg, sac=sac, num_cpus=num_cpus, device="cpu")
        learner = Learner(O, A, Z, I, cfg, discount=0.9, seed=0)
        assert learner.counters()["threads"] == expected
        assert learner.counters()["parallel_branches"] is split
        assert torch.get_num_threads() == (expected - expected // 2 if split else expected)
        if split:
            assert learner.branches.threads == expected // 2
            report = learner.train(max_updates=1)  # nothing to train on yet: a no-op that returns
            assert report["updates_done"] == 0
    finally:
        torch.set_num_threads(threads)


def test_two_branch_learner_draws_its_next_batch_on_the_branch_thread_and_trains_the_same():
    """With two branches the learner draws batch i+1 on the actor's thread during update i
    (``update(side=)``): the same draws from its sampling generator, each one used, so an
    eager two-branch learner trains exactly as a one-thread one (same seed, same data)."""
    from learner.actor import Learner

    threads = torch.get_num_threads()
    rng = np.random.default_rng(1)
    n = 300
    data = TransitionBatch(
        rng.normal(size=(n, O)), rng.uniform(-1, 1, (n, A)), rng.normal(size=n), rng.normal(size=(n, O)),
        np.zeros(n, np.float32), rng.normal(size=(n, Z)), rng.normal(size=(n, I)),
    )
    learners, drawn = [], []
    try:
        for set_threads in (2, 1):
            cfg = load_config(None, ["learner.min_replay=100", f"learner.threads={set_threads}"]).learner
            sac = dataclasses.replace(CFG, hidden_sizes=(128, 128), compile=False)
            cfg = dataclasses.replace(cfg, sac=sac, num_cpus=1.0, device="cpu", samples_per_insert=64.0)
            learner = Learner(O, A, Z, I, cfg, discount=0.9, seed=0)
            assert (learner.branches is not None) == (set_threads == 2)
            torch.set_num_threads(1)  # each branch on one thread either way
            calls: list[int] = []
            original = learner._sample
            learner._sample = lambda original=original, calls=calls: (calls.append(1), original())[1]
            learner.ingest(data)
            for k in (7, 1, 5):  # the last update of a call draws nothing ahead
                assert learner.train(max_updates=k)["updates_done"] == k
            learners.append(learner)
            drawn.append(len(calls))
        two, one = learners
        assert drawn == [13, 13]
        assert torch.equal(two.sample_gen.get_state(), one.sample_gen.get_state())
        for p, q in zip(list(two.state.actor.parameters()) + list(two.state.target_critic.parameters()),
                        list(one.state.actor.parameters()) + list(one.state.target_critic.parameters())):
            assert torch.equal(p, q)
    finally:
        torch.set_num_threads(threads)
        for learner in learners:
            if learner.branches is not None:
                learner.branches.close()


def test_update_side_job_runs_on_the_branch_thread_and_its_error_is_raised():
    import threading

    from learner.sac.branches import BranchThread

    state = init_state(O, A, Z, dataclasses.replace(CFG, hidden_sizes=(32, 32)), "cpu", seed=0)
    replay = filled_replay("cpu")
    batch = replay.sample(CFG.batch_size, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="branches"):
        update(state, batch, side=lambda: None)
    branches = BranchThread(threads=1)
    names: list[str] = []
    try:
        update(state, batch, branches=branches, side=lambda: names.append(threading.current_thread().name))
        assert names == ["sac-actor-branch"]

        def fail() -> None:
            raise RuntimeError("side job failed")

        with pytest.raises(RuntimeError, match="side job failed"):
            update(state, batch, branches=branches, side=fail)
        update(state, batch, branches=branches)  # the thread still works
    finally:
        branches.close()


def test_a_compiling_learner_compiles_while_the_replay_fills():
    """``sac.compile``: a ``train`` call that the rate limiter allows nothing compiles the
    update on a scratch state (the learner's networks untouched, no update counted), and
    the real updates that follow run that compiled code without compiling again. At the
    shapes and config of ``hindsight bench learner`` (HalfCheetahMO's dimensions, 256x256,
    batch 256), whose compile tests/test_benchmarks.py leaves in inductor's on-disk cache."""
    from torch._dynamo.utils import counters

    from learner.actor import Learner

    o, a, z, n = 17, 6, 4, 300
    threads = torch.get_num_threads()
    try:
        sac = SACConfig(hidden_sizes=(256, 256), compile=True)
        cfg = dataclasses.replace(load_config(None).learner, sac=sac, num_cpus=1, device="cpu", min_replay=n // 2,
                                  samples_per_insert=16)
        learner = Learner(o, a, z, 0, cfg, discount=sac.discount, seed=0)
        before = {k: v.clone() for k, v in learner.state.critic.state_dict().items()}
        assert not learner.warmed_up
        report = learner.train(4)
        assert report["updates_done"] == 0 and learner.updates == 0
        assert learner.warmed_up and learner.counters()["warm_up_seconds"] > 0
        for k, v in learner.state.critic.state_dict().items():
            assert torch.equal(v, before[k]), k
        graphs = counters["stats"]["unique_graphs"]
        rng = np.random.default_rng(0)
        learner.ingest(TransitionBatch(
            rng.normal(size=(n, o)), rng.uniform(-1, 1, (n, a)), rng.normal(size=n), rng.normal(size=(n, o)),
            (rng.random(n) < 0.1).astype(np.float32), rng.normal(size=(n, z)), np.zeros((n, 0)),
        ))
        report = learner.train(4)
        assert report["updates_done"] == 4
        assert counters["stats"]["unique_graphs"] == graphs  # no second compile
        assert any(not torch.equal(v, before[k]) for k, v in learner.state.critic.state_dict().items())
    finally:
        torch.set_num_threads(threads)


def test_a_learner_whose_compile_fails_says_why_and_trains_eager():
    """``sac.compile`` on a machine without a C++ compiler (inductor's compiler set to a
    missing program, its caches off so that it must build): the warm-up's compile fails, the
    learner reports why (``compile_error`` in its train report and counters) and its updates
    run eager instead of ending the run."""
    import torch._inductor.config as inductor_config

    from learner.actor import Learner

    threads = torch.get_num_threads()
    # inductor's own patch (restores its config exactly; a plain setattr/undo hides the key)
    no_compiler = inductor_config.patch({"force_disable_caches": True, "cpp.cxx": (None, "/nonexistent/bin/c++")})
    try:
        with no_compiler:  # hidden sizes of their own: no graph compiled earlier in this process serves them
            sac = dataclasses.replace(CFG, hidden_sizes=(24, 20), compile=True)
            cfg = dataclasses.replace(load_config(None).learner, sac=sac, num_cpus=1, device="cpu", min_replay=100,
                                      samples_per_insert=16)
            learner = Learner(O, A, Z, I, cfg, discount=0.9, seed=0)
            report = learner.train(4)
        assert report["updates_done"] == 0 and learner.warmed_up
        assert "InvalidCxxCompiler" in report["compile_error"]
        assert learner.counters()["compile_error"] == report["compile_error"]
        assert not learner.state.cfg.compile
        rows = filled_replay("cpu")._data
        learner.ingest(TransitionBatch(*(x[:200].numpy() for x in rows)))
        report = learner.train(4)
        assert report["updates_done"] == 4 and np.isfinite(report["metrics"]["critic_loss"])
    finally:
        torch.set_num_threads(threads)


# ---- denormals as zero (learner.flush_denormal) ------------------------------------------------
DENORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def _flushes() -> bool:
    """Whether this thread's float32 arithmetic now treats a denormal as zero."""
    return float((torch.tensor([DENORMAL]) * 1.0)[0]) == 0.0


needs_ftz = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="the CPU has no flush-to-zero mode")


@needs_ftz
def test_denormals_are_flushed_only_within_the_block_and_its_thread():
    import threading

    from learner.core import denormals_flushed

    assert not _flushes()  # IEEE gradual underflow by default
    seen: list[bool] = []
    go = threading.Event()
    other = threading.Thread(target=lambda: (go.wait(), seen.append(_flushes())))
    other.start()  # before the block: a thread started inside it would inherit the mode
    with denormals_flushed():
        assert _flushes()
        go.set()
        other.join()
    assert seen == [False] and not _flushes()  # the other thread kept its mode; this one is back
    with denormals_flushed(False):
        assert not _flushes()


@needs_ftz
@pytest.mark.parametrize("flush", [True, False])
def test_the_learner_updates_with_denormals_flushed_in_both_branch_threads(flush):
    """``learner.flush_denormal``: the calling thread runs its updates with denormals as zero
    (seen from the batch relabeler, which runs inside the update loop) and the actor's branch
    thread throughout; after the call the caller's thread is as it was."""
    from learner.actor import Learner

    threads = torch.get_num_threads()
    try:
        cfg = load_config(None, ["learner.min_replay=100", f"learner.flush_denormal={flush}"]).learner
        cfg = dataclasses.replace(cfg, sac=dataclasses.replace(CFG, hidden_sizes=(128, 128)), num_cpus=1.1,
                                  device="cpu", samples_per_insert=64.0)
        seen: list[bool] = []

        def relabeler(state, batch, gen):
            seen.append(_flushes())
            return batch, {}

        learner = Learner(O, A, Z, I, cfg, discount=0.9, seed=0, batch_relabeler=relabeler)
        assert learner.branches is not None and learner.branches.flush_denormal is flush
        branch_seen: list[bool] = []
        learner.branches.submit(lambda: branch_seen.append(_flushes()))
        learner.branches.wait()
        rng = np.random.default_rng(0)
        n = 400
        learner.ingest(TransitionBatch(
            rng.normal(size=(n, O)), rng.uniform(-1, 1, (n, A)), rng.normal(size=n), rng.normal(size=(n, O)),
            np.zeros(n, np.float32), rng.normal(size=(n, Z)), rng.normal(size=(n, I)),
        ))
        assert learner.train(max_updates=3)["updates_done"] == 3
        assert seen == [flush] * 3 and branch_seen == [flush]
        assert not _flushes()
    finally:
        torch.set_num_threads(threads)
