"""Pure parts of operating a run: placement rule, autoscaling rule, watchdog, control actor."""

from __future__ import annotations

from collections import Counter

import pytest

from hindsight import placement
from hindsight.config import load_config
from hindsight.control import Autoscaler, RunControl, format_scale
from hindsight.placement import Ask, PlacementError, demand, fit, fits
from hindsight.watchdog import Watchdog, diagnose

TWO_CORES = [{"CPU": 2.0, "GPU": 0.0}]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_half_cheetah_asks_for_more_than_two_cores():
    """Issue 8's stall: learner 1 + 4 x 0.25 + 2 x 0.05 shards + 0.25 relabel + 0.05 eval."""
    cfg = placement.with_learner_cpus(load_config("half_cheetah_mo"), TWO_CORES)  # learner: at least 1 CPU
    asks = demand(cfg, learner_gpus=0.0)
    assert placement.totals(asks) == (pytest.approx(2.4), 0.0)
    assert not fits(asks, TWO_CORES)


def test_local_single_node_scales_every_reservation_to_fit():
    cfg = load_config("half_cheetah_mo")
    fitted, note = fit(cfg, 0.0, TWO_CORES, local=True)
    assert fits(demand(fitted, 0.0), TWO_CORES)
    # same actors, smaller reservations, all by one factor (within Ray's 1e-4 unit)
    assert fitted.rollout.num_workers == cfg.rollout.num_workers
    f = fitted.learner.num_cpus / 1.0  # learner.num_cpus 0 resolves to at least 1
    assert 0.8 < f < 1
    assert fitted.rollout.num_cpus == pytest.approx(cfg.rollout.num_cpus * f, abs=2e-4)
    assert "2.4 CPUs" in note and "2 CPUs" in note and "scaled" in note


def test_a_run_that_fits_is_unchanged():
    cfg = load_config("smoke")
    assert fit(cfg, 0.0, TWO_CORES, local=True) == (cfg, None)


def test_a_missing_gpu_fails_at_once_naming_both_sides():
    cfg = load_config("smoke", ["learner.num_gpus=1"])
    with pytest.raises(PlacementError, match=r"1 GPUs.*0 GPUs"):
        fit(cfg, 1.0, TWO_CORES, local=True)


def test_a_cluster_is_not_rescaled_it_asks_the_autoscaler_then_fails():
    cfg = load_config("half_cheetah_mo")
    asked = []
    with pytest.raises(PlacementError, match="asks Ray for 2.4 CPUs.*the cluster has 2 nodes"):
        fit(cfg, 0.0, [{"CPU": 1.0, "GPU": 0.0}] * 2, local=False, wait_s=0.0,
            refresh=lambda: [{"CPU": 1.0, "GPU": 0.0}] * 2, ask_autoscaler=asked.append)
    assert asked and sum(a.count for a in asked[0]) == 1 + 4 + 2 + 1 + 1


def test_a_cluster_that_grows_holds_the_run():
    cfg = load_config("half_cheetah_mo")
    grown = [{"CPU": 1.0, "GPU": 0.0}, {"CPU": 4.0, "GPU": 0.0}]
    out, note = fit(cfg, 0.0, [{"CPU": 1.0, "GPU": 0.0}], local=False, wait_s=5.0,
                    refresh=lambda: grown, ask_autoscaler=lambda asks: None)
    assert out.rollout == cfg.rollout and out.store == cfg.store and "grew" in note


def test_first_fit_decreasing_respects_node_boundaries():
    # 3 actors of 0.6 CPU: 1.8 CPUs in total, but two nodes of 0.9 hold only one each
    assert not fits([Ask("x", 3, 0.6)], [{"CPU": 0.9, "GPU": 0}] * 2)
    assert fits([Ask("x", 3, 0.6)], [{"CPU": 1.2, "GPU": 0}, {"CPU": 0.9, "GPU": 0}])
    assert not fits([Ask("learner", 1, 1, 1)], [{"CPU": 8, "GPU": 0}, {"CPU": 0.5, "GPU": 1}])


def test_autoscaler_grows_while_starved_and_shrinks_while_held():
    clock = Clock()
    a = Autoscaler(1, 3, every_s=5.0, clock=clock)
    size = 1
    for _ in range(5):  # starved: every learner call waited for data
        for _ in range(10):
            a.observe_train(waiting=True)
            a.observe_collection(held=False)
        clock.t += 5.0
        size = a.decide(size) or size
    assert size == 3  # grew one per period, stopped at max
    for _ in range(5):  # saturated: the rate limiter held collection back
        for _ in range(10):
            a.observe_train(waiting=False)
            a.observe_collection(held=True)
        clock.t += 5.0
        size = a.decide(size) or size
    assert size == 1
    assert [h["to"] for h in a.history] == [2, 3, 2, 1]
    assert a.decide(size) is None  # within a period: no decision


def test_autoscaler_holds_when_balanced():
    clock = Clock()
    a = Autoscaler(1, 4, every_s=1.0, clock=clock)
    for i in range(10):
        a.observe_train(waiting=i % 4 == 0)
        a.observe_collection(held=i % 4 == 1)
    clock.t += 1.0
    assert a.decide(2) is None


def test_autoscaler_holds_when_the_learner_waits_while_collection_is_held():
    """Both signals in one period (the learner's calls waited for data, the driver held
    collection back for the learner): the data in between is late, so no move (CI saw a
    saturated pool grow back 2 -> 3 that way before it shrank to 1)."""
    clock = Clock()
    a = Autoscaler(1, 3, every_s=1.0, clock=clock)
    for _ in range(10):
        a.observe_train(waiting=True)
        a.observe_collection(held=True)
    clock.t += 1.0
    assert a.decide(2) is None and a.history == []
    for _ in range(10):  # the next period: held only
        a.observe_train(waiting=False)
        a.observe_collection(held=True)
    clock.t += 1.0
    assert a.decide(2) == 1


def test_watchdog_warns_once_per_period_after_a_stall():
    clock = Clock()
    dog = Watchdog(10.0, clock=clock)
    dog.observe((0, 0))
    clock.t = 9.0
    assert not dog.due()
    clock.t = 10.0
    assert dog.due()
    clock.t = 15.0
    assert not dog.due()  # at most once per period
    clock.t = 20.0
    assert dog.due()
    dog.observe((1, 0))  # data moved
    clock.t = 25.0
    assert not dog.due()
    assert "no data moved for 5s" in dog.message(["x"])


def test_diagnose_names_where_it_is_stuck():
    reasons = diagnose(
        pending={"relabel worker": Counter(PENDING_CREATION=1), "eval actor": Counter(PENDING_CREATION=1)},
        cluster="0 of 2 CPUs free", pool_size=4, backlog=6, max_backlog=64, collection_held=False,
        learner_waiting=True, replay_size=60, min_replay=10000, budget_spent=False,
    )
    text = " | ".join(reasons)
    assert "actors pending placement: 1 eval actor" in text and "1 relabel worker" in text and "0 of 2 CPUs free" in text
    assert "relabeler behind: 6" in text
    assert "learner waiting for data: replay 60 < learner.min_replay 10000" in text
    assert diagnose(pending={}, cluster="", pool_size=2, backlog=0, max_backlog=64, collection_held=True,
                    learner_waiting=False, replay_size=0, min_replay=0, budget_spent=False) == [
        "collection held back by the rate limiter (the learner is behind)"]
    compiling = diagnose(pending={}, cluster="", pool_size=2, backlog=0, max_backlog=64, collection_held=True,
                         learner_waiting=True, replay_size=5000, min_replay=5000, budget_spent=False,
                         learner_compiling=True)
    assert "learner.sac.compile" in compiling[0] and not any("waiting for data" in r for r in compiling)
    undelivered = diagnose(pending={}, cluster="", pool_size=2, backlog=0, max_backlog=64, collection_held=False,
                           learner_waiting=True, replay_size=5000, min_replay=200, budget_spent=True, undelivered=True)
    assert undelivered[0].startswith("the store holds records past the relabel cursors")


def test_run_control_queues_requests_and_holds_answers():
    c = RunControl("/runs/x")
    rid = c.scale(4)
    assert c.result(rid) is None
    assert c.take_requests() == [(rid, 4)] and c.take_requests() == []
    c.report(rid, {"before": 2, "after": 4, "added": [2, 3], "removed": [], "pending": 1})
    assert format_scale(c.result(rid)) == "rollout pool: 2 -> 4 workers (added 2, 1 pending placement)"
    with pytest.raises(ValueError, match=">= 0"):
        c.scale(-2)


def test_each_relabel_workers_results_are_handled_in_the_order_of_its_calls():
    """ray.wait hands back any ready ref: a worker's later result must wait for its earlier
    ones (their cursors would otherwise move the run's cursors back)."""
    from hindsight.trainer import in_call_order

    inflight = {"a0": ("relabel", 0, "batch"), "t": ("train",), "b0": ("relabel", 0, "batch"),
                "a1": ("relabel", 1, "batch"), "f0": ("refill", 0, "batch"), "b1": ("relabel", 1, "batch")}
    assert in_call_order(["b0"], inflight) == ["a0", "b0"]
    assert in_call_order(["f0"], inflight) == ["a0", "b0", "f0"]  # a refill runs on the same worker
    assert in_call_order(["b1", "b0"], inflight) == ["a1", "b1", "a0", "b0"]
    assert in_call_order(["a0", "b0"], inflight) == ["a0", "b0"]  # nothing twice
    assert in_call_order(["b0", "a0"], inflight) == ["a0", "b0"]
    assert in_call_order(["t", "a1"], inflight) == ["t", "a1"]  # other kinds, first results: as ready
    assert in_call_order([], inflight) == []
    assert in_call_order(["gone"], inflight) == ["gone"]  # dropped by a recovery: the loop skips it
