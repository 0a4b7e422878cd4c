"""Relabeling strategies, registered by name: pure ``(request, rng) -> RelabelResult``.

    strategy = make_strategy("air", StrategyConfig(num_candidates=100))
    result = strategy(request, np.random.default_rng(0))
    batch = to_transitions(request.family, request.new, result)   # rewards recomputed

Every strategy is a plain function ``f(request, rng, cfg=StrategyConfig())``; the
registry ``STRATEGIES`` maps names to them (so ``STRATEGIES["air"](request, rng)`` runs
with the defaults) and ``make_strategy(name, cfg)`` binds a config (functools.partial).
All randomness comes from the explicit ``rng``; returns and scores come from the
batched kernels in ``kernels.py``.

    name        paper                    copies per trajectory       original kept
    none        -                        0                           yes
    random      GH "IU"                  1 prior sample              yes
    air         GH Alg. 2 / Eq. 4        m (best percentile)         yes
    advantage   GH Alg. 3 / Eq. 7        m (best R - V(s0, v))       yes
    max_reward  GH Eq. 6                 m (best R)                  yes
    hipi        HIPI Eq. 7 (trajectory)  1 sampled from q(psi|tau)   yes
    her_final   HER / HIPI ``last``      1 (per-step tasks)          her_keep_original
    her_future  HER / HIPI ``future``    her_k (per-step tasks)      her_keep_original
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Callable, Sequence

import numpy as np

from envs import fused
from envs.core import TaskFamily
from relabel_service.core import RelabelRequest, RelabelResult, RelabelStrategy, Trajectory, concat_steps
from relabel_service.strategies import kernels
from relabel_service.strategies.config import StrategyConfig
from relabel_service.strategies.pool import CandidatePool
from relabel_service.strategies.transitions import to_transitions

__all__ = [
    "STRATEGIES",
    "StrategyConfig",
    "UnknownStrategyError",
    "get_strategy",
    "make_strategy",
    "strategy_names",
    "to_transitions",
]

_DEFAULT = StrategyConfig()


# ---- helpers -------------------------------------------------------------------------------
def _check(request: RelabelRequest, name: str) -> tuple[TaskFamily, list[Trajectory]]:
    family, new = request.family, list(request.new)
    for traj in new:
        if traj.family != family.name:
            raise ValueError(
                f"strategy {name!r}: trajectory {traj.episode_id!r} is from family "
                f"{traj.family!r}, the request's family is {family.name!r}"
            )
    return family, new


def _own_tasks(family: TaskFamily, trajs: Sequence[Trajectory]) -> np.ndarray:
    """The commanded tasks of the trajectories: [M, Z]."""
    if not trajs:
        return np.zeros((0, family.task_dim))
    return family.check_tasks(np.stack([t.task for t in trajs]))


def _obs0(trajs: Sequence[Trajectory]) -> np.ndarray:
    return np.stack([np.asarray(t.obs[0], dtype=np.float64) for t in trajs])  # [M, O]


def _trajectory_copies(
    trajs: Sequence[Trajectory], chosen: np.ndarray, skip: np.ndarray | None = None
) -> list[tuple[int, np.ndarray]]:
    """One copy per chosen task, the task repeated over the trajectory's steps.

    chosen [M, m, Z]; skip [M, m] bool drops a copy (an original kept anyway)."""
    copies = []
    for i, traj in enumerate(trajs):
        for c in range(chosen.shape[1]):
            if skip is None or not skip[i, c]:
                copies.append((i, np.repeat(chosen[i, c][None], traj.length, axis=0)))
    return copies


def _values(request: RelabelRequest, obs0: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """V(s0, z) for first observations obs0 [M, O] and tasks [M, K, Z] -> [M, K] via
    request.value_fn."""
    assert request.value_fn is not None
    values = np.asarray(request.value_fn(obs0, tasks), dtype=np.float64)
    if values.shape != tasks.shape[:2]:
        raise ValueError(f"value_fn returned shape {values.shape}, expected {tasks.shape[:2]}")
    return values


def _returns_new_and_reference(
    family: TaskFamily,
    new: Sequence[Trajectory],
    reference: Sequence[Trajectory],
    tasks: np.ndarray,
    discount: float,
    max_elements: int,
    cache: kernels.FeatureSumCache | None,
    float32: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """R of the new [M, K] and reference [N, K] trajectories under tasks [K, Z], each
    trajectory evaluated once: new trajectories already in the reference set (same
    episode_id; the caller normally includes them) reuse its rows."""
    row = {t.episode_id: i for i, t in enumerate(reference)}
    union = list(reference)
    new_rows = []
    for traj in new:
        if traj.episode_id not in row:
            row[traj.episode_id] = len(union)
            union.append(traj)
        new_rows.append(row[traj.episode_id])
    R = kernels.discounted_returns(family, union, tasks, discount, max_elements, cache, float32)  # [N', K]
    return R[np.asarray(new_rows, dtype=np.int64)], R[: len(reference)]


def _unique(trajs: Sequence[Trajectory]) -> list[Trajectory]:
    """Trajectories with duplicate episode_ids dropped (first kept): a trajectory listed
    twice in the reference set would count twice in every percentile."""
    seen: set[str] = set()
    out = []
    for traj in trajs:
        if traj.episode_id not in seen:
            seen.add(traj.episode_id)
            out.append(traj)
    return out


def _per_trajectory_candidates(
    family: TaskFamily, own: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """[M, K, Z]: K - 1 fresh prior samples per trajectory, then its own task (GH Alg. 3)."""
    M, Z = own.shape
    fresh = family.sample_tasks(rng, M * (k - 1)).reshape(M, k - 1, Z)
    return np.concatenate([fresh, own[:, None, :]], axis=1)


# ---- strategies -----------------------------------------------------------------------------
def relabel_none(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig = _DEFAULT
) -> RelabelResult:
    """Store the originals only."""
    _check(request, "none")
    return RelabelResult(copies=[], keep_original=True)


def relabel_random(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig = _DEFAULT
) -> RelabelResult:
    """GH "IU": one task from the prior per trajectory, plus the original
    (REFERENCE-CODE §3, ``--n_sampled_latents 1``)."""
    family, new = _check(request, "random")
    if not new:
        return RelabelResult(copies=[], keep_original=True)
    chosen = family.sample_tasks(rng, len(new))  # [M, Z]
    return RelabelResult(
        copies=_trajectory_copies(new, chosen[:, None]),
        keep_original=True,
        stats={"chosen_tasks": chosen, "relabeled_fraction": 1.0},
    )


def relabel_air(
    request: RelabelRequest,
    rng: np.random.Generator,
    cfg: StrategyConfig = _DEFAULT,
    cache: kernels.FeatureSumCache | None = None,
    pool: CandidatePool | None = None,
) -> RelabelResult:
    """Approximate IRL relabeling (GH Alg. 2, Eq. 4; REFERENCE-CODE §2).

    Candidates [K, Z] = (K - M) prior samples followed by the batch's own M tasks, shared
    by the whole request (a request with M > K new trajectories is decided K at a time, each
    part against the same reference set, so that every decision has K candidates; a relabel
    worker catching up reads large batches). Reference set = ``request.reference`` (the N most recent
    trajectories, which the caller makes include the new ones), duplicate episode_ids
    dropped; empty -> the new ones (the GH code without ``--cache``). The N x K reference
    returns are computed once per request. Each trajectory takes the m candidates with the highest percentile, ties
    broken by the advantage R - V(s0, v) (V = 0 without ``request.value_fn``, so ties
    break by return). The original is always kept, even when a chosen task equals it
    (the GH buffer stores that duplicate too). ``cache`` (bound by ``make_strategy``)
    keeps linear families' discounted feature sums between requests; it never changes
    the result.

    ``pool`` (bound by ``make_strategy`` when ``cfg.air_candidates == "pool"``): the K - M
    prior samples come from a ``CandidatePool`` shared by consecutive requests, which also
    keeps the reference trajectories' returns under them (``strategies/pool.py``); the
    decision for the candidates used is the same.

    ``cfg.air_precision == "float32"``: the returns come from the family's float32
    ``segment_returns`` (point_reacher only; ValueError on another family).
    ``cfg.air_kernel == "compiled"``: from its compiled kernel (``envs/fused.py``) where the
    family has one; the same returns up to the order of additions.
    """
    family, new = _check(request, "air")
    if not new:
        return RelabelResult(copies=[], keep_original=True)
    reference = _unique(request.reference) or new
    K = cfg.num_candidates
    if len(new) > K:
        # more new trajectories than candidates (a relabel worker catching up takes large
        # batches): decided K at a time against the same reference set, so every decision
        # has K candidates (with M > K, "K - M prior samples plus the M own tasks" would be M)
        return _merge_air_results([_air_chunk(request, new[i : i + K], reference, rng, cfg, cache, pool)
                                   for i in range(0, len(new), K)])
    return _air_chunk(request, new, reference, rng, cfg, cache, pool)


def _air_chunk(
    request: RelabelRequest,
    new: Sequence[Trajectory],
    reference: Sequence[Trajectory],
    rng: np.random.Generator,
    cfg: StrategyConfig,
    cache: kernels.FeatureSumCache | None,
    pool: CandidatePool | None,
) -> RelabelResult:
    """AIR for M <= K new trajectories (``relabel_air``)."""
    family = request.family
    M = len(new)
    own = _own_tasks(family, new)
    float32 = cfg.air_precision == "float32"
    with fused.enabled(cfg.air_kernel == "compiled"):
        if pool is not None:
            candidates, R_new, R_ref = pool.returns(
                family, new, reference, own, request.discount, rng, cfg.num_candidates,
                cfg.max_reward_elements, cache, float32,
            )
        else:
            n_fresh = max(cfg.num_candidates - M, 0)
            candidates = np.concatenate([family.sample_tasks(rng, n_fresh), own]) if n_fresh else own
            R_new, R_ref = _returns_new_and_reference(
                family, new, reference, candidates, request.discount, cfg.max_reward_elements, cache, float32
            )
    return _air_decide(request, new, reference, candidates, R_new, R_ref, cfg)


def _merge_air_results(parts: Sequence[RelabelResult]) -> RelabelResult:
    """One result from AIR's results for consecutive chunks of the new trajectories: copies
    re-indexed into the whole request, per-trajectory stats concatenated, the relabeled
    fraction weighted by chunk size."""
    sizes = [len(p.stats["chosen_index"]) for p in parts]
    copies, offset = [], 0
    for part, size in zip(parts, sizes):
        copies += [(i + offset, tasks) for i, tasks in part.copies]
        offset += size
    first = parts[0].stats
    stats: dict[str, Any] = {
        key: np.concatenate([p.stats[key] for p in parts])
        for key in ("chosen_index", "chosen_tasks", "chosen_percentile", "original_percentile")
    }
    stats["relabeled_fraction"] = float(np.average([p.stats["relabeled_fraction"] for p in parts], weights=sizes))
    stats["num_candidates"] = first["num_candidates"]
    stats["num_reference"] = first["num_reference"]
    stats["value_evaluations"] = float(sum(p.stats["value_evaluations"] for p in parts))
    stats["chunks"] = float(len(parts))
    return RelabelResult(copies=copies, keep_original=True, stats=stats)


def _air_decide(
    request: RelabelRequest,
    new: Sequence[Trajectory],
    reference: Sequence[Trajectory],
    candidates: np.ndarray,
    R_new: np.ndarray,
    R_ref: np.ndarray,
    cfg: StrategyConfig,
) -> RelabelResult:
    """AIR's choice given the candidates [K, Z] (the own M tasks last) and the returns of
    the new [M, K] and reference [N, K] trajectories under them."""
    M, K = len(new), len(candidates)
    m = min(cfg.num_to_take, K)
    percentiles = kernels.air_percentiles(R_new, R_ref)  # [M, K]
    V = np.zeros((M, K))
    evaluated = 0
    if request.value_fn is not None:
        # V(s0, v) only breaks ties of the percentile: it is evaluated for the candidates
        # that could be among a trajectory's m best and are tied there (kernels.air_ties_to_break),
        # not for all M x K pairs (each a forward pass of the actor and the twin critic)
        rows, cols = np.nonzero(kernels.air_ties_to_break(percentiles, m))
        if len(rows):
            obs0 = _obs0(new)[rows]
            V[rows, cols] = _values(request, obs0, candidates[cols][:, None, :])[:, 0]
        evaluated = len(rows)
    advantages = kernels.advantage_scores(R_new, V)
    chosen = kernels.air_select(percentiles, advantages, m)  # [M, m]
    own_index = K - M + np.arange(M)
    rows = np.arange(M)[:, None]
    return RelabelResult(
        copies=_trajectory_copies(new, candidates[chosen]),
        keep_original=True,
        stats={
            "chosen_index": chosen,
            "chosen_tasks": candidates[chosen],
            "chosen_percentile": percentiles[rows, chosen],
            "original_percentile": percentiles[np.arange(M), own_index],
            "relabeled_fraction": float(np.mean(chosen != own_index[:, None])),
            "num_candidates": float(K),
            "num_reference": float(len(reference)),
            "value_evaluations": float(evaluated),
        },
    )


def relabel_advantage(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig = _DEFAULT
) -> RelabelResult:
    """Advantage relabeling (GH Alg. 3, Eq. 7; REFERENCE-CODE §3).

    Per trajectory, K - 1 prior samples + its own task; score R(tau|v) - V(s0, v); the
    top m. Needs ``request.value_fn`` (raises otherwise: with V = 0 this would silently be
    max-reward relabeling). As in the GH code, a chosen task equal to the original adds no
    copy (the original is kept anyway).
    """
    family, new = _check(request, "advantage")
    if request.value_fn is None:
        raise ValueError(
            "strategy 'advantage' needs request.value_fn (V(s0, z) for GH Eq. 7); "
            "use 'max_reward' to rank by return alone"
        )
    if not new:
        return RelabelResult(copies=[], keep_original=True)
    return _per_trajectory_argmax(request, family, new, rng, cfg, use_values=True)


def relabel_max_reward(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig = _DEFAULT
) -> RelabelResult:
    """Reward relabeling (GH Eq. 6): candidates as ``advantage``, the top-m returns."""
    family, new = _check(request, "max_reward")
    if not new:
        return RelabelResult(copies=[], keep_original=True)
    return _per_trajectory_argmax(request, family, new, rng, cfg, use_values=False)


def _per_trajectory_argmax(
    request: RelabelRequest,
    family: TaskFamily,
    new: list[Trajectory],
    rng: np.random.Generator,
    cfg: StrategyConfig,
    use_values: bool,
) -> RelabelResult:
    M, K = len(new), cfg.num_candidates
    candidates = _per_trajectory_candidates(family, _own_tasks(family, new), K, rng)  # [M, K, Z]
    R = kernels.discounted_returns_per_trajectory(
        family, new, candidates, request.discount, cfg.max_reward_elements
    )
    scores = kernels.advantage_scores(R, _values(request, _obs0(new), candidates)) if use_values else R
    m = min(cfg.num_to_take, K)
    chosen = kernels.max_reward_select(scores)[:, None] if m == 1 else kernels.top_m(scores, m)
    rows = np.arange(M)[:, None]
    is_original = chosen == K - 1
    return RelabelResult(
        copies=_trajectory_copies(new, candidates[rows, chosen], skip=is_original),
        keep_original=True,
        stats={
            "chosen_index": chosen,
            "chosen_tasks": candidates[rows, chosen],
            "chosen_score": scores[rows, chosen],
            "original_score": scores[:, K - 1],
            "relabeled_fraction": float(np.mean(~is_original)),
        },
    )


def relabel_hipi(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig = _DEFAULT
) -> RelabelResult:
    """Trajectory-level inverse-RL relabeling (HIPI Eq. 7).

    Candidates psi_j = the batch's own commanded tasks (J = M, uniform prior over them, as
    the HIPI code's ``candidate_task_type='tasks'``). R_ij = sum_t r(s_t, a_t | psi_j) of
    trajectory i, undiscounted as written in Eq. 7 (``hipi_discounted`` uses the SAC
    discount); q(j | i) = softmax_j(R_ij / temperature - log Z_j) with the batch estimate
    of log Z_j (``partition=False`` drops it). One sampled task per trajectory; the copy
    is made even when the sample is the trajectory's own task, so with the original kept
    the learner sees the 50/50 mixture of the HIPI code's ``relabel_prob = 0.5``.
    """
    family, new = _check(request, "hipi")
    if not new:
        return RelabelResult(copies=[], keep_original=True)
    own = _own_tasks(family, new)  # [J, Z], J = M
    discount = request.discount if cfg.hipi_discounted else 1.0
    R = kernels.discounted_returns(family, new, own, discount, cfg.max_reward_elements)  # [M, J]
    log_q = kernels.hipi_log_probs(R, cfg.temperature, cfg.partition)
    chosen = kernels.sample_categorical(log_q, rng)  # [M]
    q = np.exp(log_q)
    rows = np.arange(len(new))
    return RelabelResult(
        copies=_trajectory_copies(new, own[chosen][:, None]),
        keep_original=True,
        stats={
            "chosen_index": chosen,
            "chosen_tasks": own[chosen],
            "chosen_probability": q[rows, chosen],
            "original_probability": q[rows, rows],
            "entropy": float(np.mean(-np.sum(q * np.where(q > 0, log_q, 0.0), axis=1))),
            "relabeled_fraction": float(np.mean(chosen != rows)),
            "num_candidates": float(len(new)),
        },
    )


def _her(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig, name: str
) -> RelabelResult:
    family, new = _check(request, name)
    if family.goal_dim <= 0:
        raise TypeError(
            f"strategy {name!r} needs a goal family (achieved_goal / with_goal); "
            f"family {family.name!r} is not one"
        )
    if not new:
        return RelabelResult(copies=[], keep_original=cfg.her_keep_original)
    lengths = kernels.trajectory_lengths(new)
    steps = concat_steps(new)
    S = len(steps)
    achieved = np.asarray(family.achieved_goal(steps))  # [S, G]
    stored = np.repeat(_own_tasks(family, new), lengths, axis=0)  # [S, Z]
    step_index = np.arange(S)
    if name == "her_final":
        goal_index = kernels.her_final_goal_indices(lengths, step_index)[None]  # [1, S]
    else:
        goal_index = kernels.her_future_goal_indices(
            lengths, step_index, rng, cfg.her_k, cfg.her_future_window
        )  # [k, S]
    C = goal_index.shape[0]
    mask = kernels.relabel_mask(rng, (C, S), cfg.her_relabel_ratio)
    hindsight = family.with_goal(
        np.tile(stored, (C, 1)), achieved[goal_index.reshape(-1)]
    ).reshape(C, S, -1)
    tasks = np.where(mask[..., None], hindsight, stored[None])  # [C, S, Z]
    starts = np.cumsum(lengths) - lengths
    copies = [
        (i, tasks[c, starts[i] : starts[i] + lengths[i]])
        for i in range(len(new))
        for c in range(C)
    ]
    return RelabelResult(
        copies=copies,
        keep_original=cfg.her_keep_original,
        stats={
            "relabeled_fraction": float(np.mean(mask)),
            # how far ahead the hindsight goals lie, in steps (0 for the step's own goal)
            "mean_goal_offset": float(np.mean(goal_index - step_index)),
        },
    )


def relabel_her_final(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig = _DEFAULT
) -> RelabelResult:
    """HER ``final`` (HIPI code ``last``): one copy whose steps take, with probability
    ``her_relabel_ratio``, the goal achieved at the trajectory's last step."""
    return _her(request, rng, cfg, "her_final")


def relabel_her_future(
    request: RelabelRequest, rng: np.random.Generator, cfg: StrategyConfig = _DEFAULT
) -> RelabelResult:
    """HER ``future`` (HIPI code ``future``): ``her_k`` copies; each step of each copy takes,
    with probability ``her_relabel_ratio``, the goal achieved at a uniformly drawn step at
    or after it in the same trajectory (see ``kernels.her_future_goal_indices``)."""
    return _her(request, rng, cfg, "her_future")


# ---- registry ---------------------------------------------------------------------------------
StrategyFn = Callable[..., RelabelResult]

STRATEGIES: dict[str, StrategyFn] = {
    "none": relabel_none,
    "random": relabel_random,
    "air": relabel_air,
    "advantage": relabel_advantage,
    "max_reward": relabel_max_reward,
    "hipi": relabel_hipi,
    "her_final": relabel_her_final,
    "her_future": relabel_her_future,
}


class UnknownStrategyError(KeyError):
    """Raised for a strategy name that is not registered; names the nearest valid ones."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def strategy_names() -> list[str]:
    """The registered strategy names, sorted."""
    return sorted(STRATEGIES)


def get_strategy(name: str) -> StrategyFn:
    """The registered strategy function (defaults config) or UnknownStrategyError."""
    try:
        return STRATEGIES[name]
    except KeyError:
        near = difflib.get_close_matches(str(name), list(STRATEGIES), n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        raise UnknownStrategyError(
            f"unknown relabel strategy {name!r}{hint} (valid: {', '.join(strategy_names())})"
        ) from None


def make_strategy(name: str, cfg: StrategyConfig | None = None) -> RelabelStrategy:
    """The strategy ``name`` with ``cfg`` bound: a ``(request, rng) -> RelabelResult``.

    For air it also binds a fresh ``FeatureSumCache`` (``cfg.feature_cache_size``), so a
    worker holding the strategy computes each reference trajectory's discounted feature
    sum once (the decisions are the same as without it), and with
    ``cfg.air_candidates == "pool"`` a ``CandidatePool`` of K - 1 prior tasks."""
    fn = get_strategy(name)
    cfg = cfg if cfg is not None else _DEFAULT
    if fn is relabel_air:
        cache = kernels.FeatureSumCache(cfg.feature_cache_size) if cfg.feature_cache_size > 0 else None
        pool = CandidatePool(max(cfg.num_candidates - 1, 0), cfg.air_pool_refresh) if cfg.air_candidates == "pool" else None
        return functools.partial(fn, cfg=cfg, cache=cache, pool=pool)
    return functools.partial(fn, cfg=cfg)
