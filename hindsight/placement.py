"""What a run asks Ray for, whether the cluster can hold it, and the rule that fits it.

    asks = demand(cfg, learner_gpus=0.0)        # [Ask("learner", 1, 1.0, 0.0), Ask("rollout worker", 4, 0.25), ...]
                                                # (learner.num_cpus 0 resolved first: with_learner_cpus)
    nodes = cluster_nodes()                     # [{"CPU": 2.0, "GPU": 0.0}] per alive node
    cfg, note = fit(cfg, asks, nodes, local=True)   # scaled CPU reservations, or PlacementError

The rule (README "Run on a cluster"):

* **Local Ray, one node** (no ``--address``; e.g. a laptop or the 2-core CI machine): Ray
  CPUs are scheduling tokens, not cores, so when the run asks for more CPUs than the node
  has, every CPU reservation of the config (learner, rollout workers, shards, relabel
  workers) is multiplied by the same factor so that all actors fit, and the change is
  printed. Actor counts are kept: the run is the one asked for, only oversubscribed.
* **A cluster** (``--address``, or several nodes): nothing is rescaled. When the actors do
  not fit the nodes (first-fit-decreasing over each node's CPUs and GPUs),
  ``ray.autoscaler.sdk.request_resources`` asks the autoscaler for them and the run waits
  up to ``placement_wait_s`` for nodes to join, then fails naming what it asked for and
  what the cluster has.
* A GPU the cluster does not have is never fitted away: ``learner.num_gpus`` > GPUs of
  the largest node fails at once on local Ray.

Without this check a run that does not fit starts and then waits forever for actors Ray
never places (issue 8: half_cheetah_mo on 2 cores stored 6 trajectories in 7 minutes and
made no update).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Sequence

from hindsight.configtools import ConfigError

log = logging.getLogger("hindsight.placement")

#: the eval actor's fixed CPU reservation (it runs a few episodes every eval.every_steps)
EVAL_CPUS = 0.05
#: Ray accounts fractional resources in units of 1e-4
RAY_RESOLUTION = 1e-4


class PlacementError(ConfigError):
    """The run's actors cannot be placed on the cluster; the message names both sides."""


@dataclasses.dataclass(frozen=True)
class Ask:
    """``count`` actors of one kind, each reserving ``num_cpus`` CPUs and ``num_gpus`` GPUs."""

    what: str
    count: int
    num_cpus: float
    num_gpus: float = 0.0

    def __str__(self) -> str:
        gpu = f" + {self.num_gpus:g} GPU" if self.num_gpus else ""
        return f"{self.count} {self.what}{'s' if self.count != 1 else ''} x {self.num_cpus:g} CPU{gpu}"


def demand(cfg: Any, learner_gpus: float) -> list[Ask]:
    """Every actor the run starts (at its start size), with its Ray reservation."""
    return [
        Ask("learner", 1, cfg.learner.num_cpus, learner_gpus),
        Ask("rollout worker", cfg.rollout.num_workers, cfg.rollout.num_cpus),
        Ask("store shard", cfg.store.num_shards, cfg.store.num_cpus),
        Ask("relabel worker", cfg.relabel.num_workers, cfg.relabel.num_cpus),
        Ask("eval actor", 1, EVAL_CPUS),
    ]


def totals(asks: Sequence[Ask]) -> tuple[float, float]:
    return sum(a.count * a.num_cpus for a in asks), sum(a.count * a.num_gpus for a in asks)


def bundles(asks: Sequence[Ask]) -> list[dict[str, float]]:
    """One resource bundle per actor (for ``request_resources``)."""
    out = []
    for a in asks:
        b = {"CPU": a.num_cpus, **({"GPU": a.num_gpus} if a.num_gpus else {})}
        out += [b] * a.count
    return [b for b in out if any(v > 0 for v in b.values())]


def cluster_nodes() -> list[dict[str, float]]:
    """Total CPU/GPU of every alive node of the connected Ray cluster."""
    import ray

    return [
        {"CPU": float(n["Resources"].get("CPU", 0.0)), "GPU": float(n["Resources"].get("GPU", 0.0))}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def fits(asks: Sequence[Ask], nodes: Sequence[dict[str, float]]) -> bool:
    """First-fit decreasing of every actor onto the nodes' CPUs and GPUs.

    A heuristic (bin packing is NP-hard) that is exact for one node, and the same kind of
    greedy packing Ray's scheduler does, so "fits" here means Ray can place them all.
    """
    free = [dict(n) for n in nodes]
    items = sorted(
        ((a.num_gpus, a.num_cpus) for a in asks for _ in range(a.count)), reverse=True
    )
    eps = RAY_RESOLUTION / 2
    for gpus, cpus in items:
        for n in free:
            if n["CPU"] + eps >= cpus and n["GPU"] + eps >= gpus:
                n["CPU"] -= cpus
                n["GPU"] -= gpus
                break
        else:
            return False
    return True


def describe(asks: Sequence[Ask], nodes: Sequence[dict[str, float]]) -> str:
    cpus, gpus = totals(asks)
    have_c = sum(n["CPU"] for n in nodes)
    have_g = sum(n["GPU"] for n in nodes)
    biggest = max(nodes, key=lambda n: (n["GPU"], n["CPU"]), default={"CPU": 0.0, "GPU": 0.0})
    return (
        f"the run asks Ray for {cpus:.4g} CPUs and {gpus:g} GPUs ({'; '.join(map(str, asks))}); "
        f"the cluster has {len(nodes)} node{'s' if len(nodes) != 1 else ''} with {have_c:g} CPUs and {have_g:g} GPUs "
        f"(largest: {biggest['CPU']:g} CPUs, {biggest['GPU']:g} GPUs)"
    )


def scale_cpus(cfg: Any, factor: float) -> Any:
    """``cfg`` with every CPU reservation multiplied by ``factor`` (rounded down to Ray's unit)."""

    def down(x: float) -> float:
        return math.floor(x * factor / RAY_RESOLUTION) * RAY_RESOLUTION if x > 0 else x

    replace = dataclasses.replace
    return replace(
        cfg,
        learner=replace(cfg.learner, num_cpus=max(RAY_RESOLUTION, down(cfg.learner.num_cpus))),
        rollout=replace(cfg.rollout, num_cpus=down(cfg.rollout.num_cpus)),
        store=replace(cfg.store, num_cpus=down(cfg.store.num_cpus)),
        relabel=replace(cfg.relabel, num_cpus=down(cfg.relabel.num_cpus)),
    )


def with_learner_cpus(cfg: Any, nodes: Sequence[dict[str, float]]) -> Any:
    """``learner.num_cpus`` 0 resolved to what the largest node leaves after the other
    actors (``config.learner_cpus``, at least 1), so the placement check sees the real ask."""
    from hindsight.config import learner_cpus

    if cfg.learner.num_cpus > 0:
        return cfg
    largest = max((n["CPU"] for n in nodes), default=1.0)
    return dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, num_cpus=learner_cpus(cfg, largest)))


def fit(
    cfg: Any,
    learner_gpus: float,
    nodes: Sequence[dict[str, float]],
    *,
    local: bool,
    wait_s: float = 0.0,
    refresh: Callable[[], Sequence[dict[str, float]]] | None = None,
    ask_autoscaler: Callable[[Sequence[Ask]], None] | None = None,
) -> tuple[Any, str | None]:
    """Apply the rule above: (config to run, a one-line note of what changed or None).

    ``refresh`` re-reads the nodes and ``ask_autoscaler`` asks for resources (both default
    to Ray's); they are parameters so the rule is testable without a cluster.
    """
    cfg = with_learner_cpus(cfg, nodes)
    asks = demand(cfg, learner_gpus)
    if fits(asks, nodes):
        return cfg, None
    biggest_gpu = max((n["GPU"] for n in nodes), default=0.0)
    if local and len(nodes) == 1 and learner_gpus <= biggest_gpu:
        fixed = EVAL_CPUS  # the eval actor is not scaled
        cpus, _ = totals(asks)
        factor = (nodes[0]["CPU"] - fixed) / max(1e-9, cpus - fixed)
        if factor > 0:
            fitted = scale_cpus(cfg, factor)
            if fits(demand(fitted, learner_gpus), nodes):
                return fitted, (
                    f"placement: {describe(asks, nodes)}; local Ray on one node, so every CPU reservation "
                    f"is scaled by {factor:.3f} to fit: learner {cfg.learner.num_cpus:g} -> {fitted.learner.num_cpus:g}, "
                    f"rollout worker {cfg.rollout.num_cpus:g} -> {fitted.rollout.num_cpus:g}, "
                    f"store shard {cfg.store.num_cpus:g} -> {fitted.store.num_cpus:g}, "
                    f"relabel worker {cfg.relabel.num_cpus:g} -> {fitted.relabel.num_cpus:g}"
                )
        raise PlacementError(f"placement: {describe(asks, nodes)}; it cannot be fitted to this machine")
    if local and len(nodes) <= 1:
        raise PlacementError(f"placement: {describe(asks, nodes)}")
    # A cluster: ask the autoscaler for the missing nodes and wait for them.
    refresh = refresh or cluster_nodes
    (ask_autoscaler or request)(asks)
    if wait_s > 0:
        log.warning("placement: %s; asked the autoscaler for them, waiting up to %.0fs", describe(asks, nodes), wait_s)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        nodes = refresh()
        if fits(asks, nodes):
            return cfg, f"placement: the cluster grew to {len(nodes)} nodes and holds the run"
    raise PlacementError(f"placement: {describe(asks, nodes)} (waited {wait_s:g}s for the autoscaler)")


def request(asks: Sequence[Ask]) -> None:
    """Ask the Ray autoscaler for these actors' bundles (replaces the previous request)."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles(asks))


def release_resources() -> None:
    """Withdraw the run's standing request so the autoscaler may remove idle nodes."""
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[])
    except Exception:  # Ray already shut down: nothing stands
        pass
