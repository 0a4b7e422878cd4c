"""Scoring kernels of the relabeling strategies: pure batched functions, no hidden state.

Shapes (as in ``relabel_service/core.py``):
    M  trajectories scored (new ones)      N  reference trajectories
    K  candidate tasks                     J  HIPI candidate tasks (the batch's own, J = M)
    T  steps of one trajectory             S  steps of several trajectories, sum of their T
    Z  task_dim   D  feature_dim (linear families)   m  copies taken per trajectory

Returns. R(tau|z) = sum_t gamma^t r(s_t, a_t, s_t+1 | z) with t counted from each
trajectory's first step. Two fast paths, both exact rewrites of that sum:

* linear families (r = w(z) . phi): R(tau|z) = w(z) . sum_t gamma^t phi_t, so each
  trajectory's discounted feature sum is computed once and all tasks cost one matmul
  (GH code for HalfCheetahMO; ALGORITHMS.md §3);
* other families: all steps of all trajectories under all K tasks in one
  ``family.segment_returns`` call (chunked only past ``max_elements`` (step, task) pairs):
  by default ``family.rewards`` then one discount-weighted segment sum; the point
  families evaluate only their joint (step, task) terms, in cache-sized blocks
  (``envs/point.py``), reacher_goal only the first step at each goal (issue 9).

Terminal-aware returns. Where a family's episodes end when the task is achieved
(``task_dependent_termination``: reacher_goal's goal), R(tau|z) stops at the first step
where tau would have terminated under z: that step's reward counts, the later steps (which
the agent would never have taken under z) do not. A trajectory that reaches z's goal at its
third step and wanders on scores -1 - 0.99 = -1.99 under z, not the -8.58 of summing all
ten steps. This is how a return under z is defined for the relabeled episode (HIPI's
``done`` ends the episode at the goal); without it a task whose goal is passed early looks
worse than one merely approached late. ``family.segment_returns`` computes it (by default
one ``family.terminals`` call next to the rewards and a mask from the per-trajectory
cumulative count of terminals, ``envs.core.alive_mask``). Such families never take the
linear fast path (the mask depends on the task, so the return is no longer w(z) . one
feature sum).

``discounted_returns_naive`` is the per-(trajectory, task) form both are tested against
and that the benchmark uses as its baseline.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Sequence

import numpy as np

from envs.core import StepBatch, TaskFamily, segment_sums
from relabel_service.core import Trajectory, concat_steps

#: (step, task) pairs evaluated per ``family.rewards`` call on non-linear families
DEFAULT_MAX_ELEMENTS = 1 << 24
#: air_percentiles: from this many new trajectories on, each column's searches run on the
#: new returns sorted (numpy's searchsorted then starts each search where the last ended)
AIR_SORTED_QUERIES_MIN = 32


# ---- step layout ------------------------------------------------------------------------
def trajectory_lengths(trajs: Sequence[Trajectory]) -> np.ndarray:
    """[M] int64: T of each trajectory."""
    return np.fromiter((t.length for t in trajs), dtype=np.int64, count=len(trajs))


def step_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For trajectories of the given lengths [M] laid end to end (``concat_steps``):
    starts [M] (flat index of each first step), traj_of_step [S], t_of_step [S] (the
    step's index within its own trajectory)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    traj_of_step = np.repeat(np.arange(len(lengths)), lengths)
    t_of_step = np.arange(int(ends[-1]) if len(ends) else 0) - starts[traj_of_step]
    return starts, traj_of_step, t_of_step


def discount_weights(lengths: np.ndarray, discount: float) -> np.ndarray:
    """[S]: gamma^t for every step of trajectories laid end to end, t restarting at 0."""
    _, _, t = step_layout(lengths)
    return np.power(float(discount), t.astype(np.float64))


def linear_fast_path(family: TaskFamily) -> bool:
    """R = w(z) . (discounted feature sum) holds only when every step counts under every
    task, i.e. when termination does not depend on the task."""
    return bool(family.linear) and not family.task_dependent_termination


def _chunks(lengths: np.ndarray, per_step: int, max_elements: int) -> Iterator[tuple[int, int]]:
    """Ranges [lo, hi) of whole trajectories holding <= max_elements (step x per_step)
    values (at least one trajectory per chunk)."""
    if int(lengths.sum()) * per_step <= max_elements:  # the usual case: one chunk
        if len(lengths):
            yield 0, len(lengths)
        return
    lo, size = 0, 0
    for i, n in enumerate(lengths):
        cost = int(n) * per_step
        if i > lo and size + cost > max_elements:
            yield lo, i
            lo, size = i, 0
        size += cost
    if lo < len(lengths):
        yield lo, len(lengths)


# ---- discounted returns -------------------------------------------------------------------
def discounted_feature_sums(
    family: TaskFamily, trajs: Sequence[Trajectory], discount: float
) -> np.ndarray:
    """Linear families: sum_t gamma^t phi(s_t, a_t, s_t+1) of each trajectory -> [M, D]."""
    lengths = trajectory_lengths(trajs)
    if not len(trajs):
        return np.zeros((0, family.feature_dim))
    phi = np.asarray(family.features(concat_steps(trajs)), dtype=np.float64)  # [S, D]
    return segment_sums(phi * discount_weights(lengths, discount)[:, None], lengths)


class FeatureSumCache:
    """Memo of each trajectory's discounted feature sum (linear families), LRU-bounded.

    GH's fast path computes sum_t gamma^t phi_t once per trajectory; a relabel worker
    sees the same reference trajectories in request after request, so keeping the [D]
    sums turns AIR's per-request cost from O(N T) into O(M T + N K D). Trajectories are
    immutable and their episode_ids unique, so the memo never changes a result; entries
    are keyed by (episode_id, discount) and the cache empties itself if it is handed a
    different family object.

        cache = FeatureSumCache(capacity=10_000)
        R = discounted_returns(family, trajs, tasks, gamma, cache=cache)

    On a non-linear family it keeps instead the last call's trajectories laid end to end
    (steps, lengths, discount weights; ``laid_out``): AIR's reference set slides by a few
    trajectories between requests (the oldest leave, the newest join), so a call
    concatenates only the steps of the ones that joined, after the kept ones.
    """

    def __init__(self, capacity: int = 10_000):
        self.capacity = int(capacity)
        self._sums: OrderedDict[tuple[str, float], np.ndarray] = OrderedDict()
        self._family: TaskFamily | None = None
        self.hits = 0
        self.misses = 0
        # laid_out: the last call's (family, discount, episode_ids, steps, lengths, weights)
        self._layout: tuple | None = None
        self.steps_reused = 0  # trajectories whose steps a call took from the last one (stats)

    def laid_out(self, family: TaskFamily, trajs: Sequence[Trajectory],
                 discount: float) -> tuple[StepBatch, np.ndarray, np.ndarray]:
        """(steps [S], lengths [M], discount weights [S]) of ``trajs`` end to end, as
        ``concat_steps``, ``trajectory_lengths`` and ``discount_weights`` give them; when the
        trajectories start with a run that ended the last call's list (the oldest left, the
        newest are appended), those steps are a view of the last call's."""
        ids = [t.episode_id for t in trajs]
        kept = 0
        last = self._layout
        if last is not None and last[0] is family and last[1] == float(discount) and ids:
            old_ids = last[2]
            try:
                first = old_ids.index(ids[0])
            except ValueError:
                first = -1
            if first >= 0:
                kept = len(old_ids) - first
                if old_ids[first:] != ids[:kept]:
                    kept = 0
        if kept:
            old_lengths = last[4]
            s0 = int(old_lengths[: len(old_lengths) - kept].sum())
            joined = trajs[kept:]
            new_lengths = trajectory_lengths(joined)
            parts = [StepBatch(*(x[s0:] for x in last[3]))]
            weights = [last[5][s0:]]
            if joined:
                parts.append(concat_steps(joined))
                weights.append(discount_weights(new_lengths, discount))
            steps = StepBatch(*(np.concatenate(f) for f in zip(*parts))) if joined else parts[0]
            lengths = np.concatenate([old_lengths[len(old_lengths) - kept :], new_lengths])
            w = np.concatenate(weights) if joined else weights[0]
            self.steps_reused += kept
        else:
            lengths = trajectory_lengths(trajs)
            steps, w = concat_steps(trajs), discount_weights(lengths, discount)
        self._layout = (family, float(discount), ids, steps, lengths, w)
        return steps, lengths, w

    def __len__(self) -> int:
        return len(self._sums)

    def sums(self, family: TaskFamily, trajs: Sequence[Trajectory], discount: float) -> np.ndarray:
        """Discounted feature sums [M, D], computing only the missing ones (in one call)."""
        if family is not self._family:
            self._sums.clear()
            self._family = family
        keys = [(t.episode_id, float(discount)) for t in trajs]
        missing = [i for i, key in enumerate(keys) if key not in self._sums]
        out = np.empty((len(trajs), family.feature_dim))
        if missing:
            out[missing] = discounted_feature_sums(family, [trajs[i] for i in missing], discount)
        for i, key in enumerate(keys):
            if key in self._sums:
                out[i] = self._sums[key]
                self._sums.move_to_end(key)
            else:
                self._sums[key] = out[i].copy()
        while len(self._sums) > self.capacity:
            self._sums.popitem(last=False)
        self.hits += len(trajs) - len(missing)
        self.misses += len(missing)
        return out


def discounted_returns(
    family: TaskFamily,
    trajs: Sequence[Trajectory],
    tasks: np.ndarray,
    discount: float,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    cache: FeatureSumCache | None = None,
    float32: bool = False,
) -> np.ndarray:
    """R(tau_m | z_k) for every trajectory under every task: tasks [K, Z] -> [M, K].

    ``cache`` reuses discounted feature sums (linear families) or the steps of the
    trajectories the last call laid end to end (the others) across calls.
    ``float32``: the family's float32 ``segment_returns`` (families with
    ``float32_returns`` only, else ValueError; AIR's ``air_precision``)."""
    family.check_float32(float32)
    tasks = family.check_tasks(tasks)
    if linear_fast_path(family):
        if cache is not None:
            feats = cache.sums(family, trajs, discount)  # [M, D]
        else:
            feats = discounted_feature_sums(family, trajs, discount)  # [M, D]
        return feats @ np.asarray(family.task_weights(tasks), dtype=np.float64).T
    # the family's weighted reward sums (terminal-aware), in chunks of whole trajectories
    # past ``max_elements`` (step, task) pairs
    if cache is not None and len(trajs):
        steps, lengths, weights = cache.laid_out(family, trajs, discount)
        return step_returns(family, steps, lengths, weights, tasks, max_elements, float32)
    lengths = trajectory_lengths(trajs)
    steps = concat_steps(trajs) if len(trajs) else None
    return step_returns(family, steps, lengths, discount_weights(lengths, discount), tasks, max_elements, float32)


def step_returns(
    family: TaskFamily,
    steps: StepBatch | None,
    lengths: np.ndarray,
    weights: np.ndarray,
    tasks: np.ndarray,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    float32: bool = False,
) -> np.ndarray:
    """``discounted_returns`` on a non-linear family from trajectories already laid end to
    end: steps [S] (``concat_steps``), their lengths [M] and discount weights [S]
    (``discount_weights``), tasks [K, Z] -> [M, K]. For a caller that keeps the steps of
    a set of trajectories between calls (AIR's candidate pool) instead of concatenating
    them again each time."""
    tasks = family.check_tasks(tasks)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros((len(lengths), len(tasks)))
    if not len(lengths) or not len(tasks):
        return out
    ends = np.cumsum(lengths)
    for lo, hi in _chunks(lengths, len(tasks), max_elements):
        s0, s1 = int(ends[lo] - lengths[lo]), int(ends[hi - 1])
        part = steps if (s0, s1) == (0, len(weights)) else StepBatch(*(x[s0:s1] for x in steps))
        out[lo:hi] = family.segment_returns(part, tasks, weights[s0:s1], lengths[lo:hi], float32=float32)
    return out


def discounted_returns_per_trajectory(
    family: TaskFamily,
    trajs: Sequence[Trajectory],
    tasks: np.ndarray,
    discount: float,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> np.ndarray:
    """R(tau_m | z_mk) with each trajectory's own candidate set: tasks [M, K, Z] -> [M, K].

    Advantage / max-reward relabeling draw fresh candidates per trajectory (GH Alg. 3)."""
    tasks = np.asarray(tasks, dtype=np.float64)
    M, K, Z = tasks.shape
    assert M == len(trajs) and Z == family.task_dim, (tasks.shape, len(trajs), family.task_dim)
    flat = family.check_tasks(tasks.reshape(M * K, Z))
    if linear_fast_path(family):
        feats = discounted_feature_sums(family, trajs, discount)  # [M, D]
        w = np.asarray(family.task_weights(flat), dtype=np.float64).reshape(M, K, -1)
        return np.einsum("md,mkd->mk", feats, w)
    lengths = trajectory_lengths(trajs)
    # each trajectory under its own K candidates: the family's segment_returns
    out = np.zeros((M, K))
    for lo, hi in _chunks(lengths, K, max_elements):
        weights = discount_weights(lengths[lo:hi], discount)
        out[lo:hi] = family.segment_returns(concat_steps(trajs[lo:hi]), tasks[lo:hi], weights, lengths[lo:hi])
    return out


def discounted_returns_naive(
    family: TaskFamily, trajs: Sequence[Trajectory], tasks: np.ndarray, discount: float
) -> np.ndarray:
    """The definition, one (trajectory, task) pair at a time: tasks [K, Z] -> [M, K].

    Re-rewards each trajectory under each task with ``rewards_for`` and takes the dot
    product with (1, gamma, gamma^2, ...), as the GH code does per (path, latent) pair
    (``calculate_path_reward`` + ``get_discounted_reward``); where termination depends on
    the task, only up to the first step that terminates under that task. For tests and the
    benchmark baseline only."""
    tasks = family.check_tasks(tasks)
    out = np.zeros((len(trajs), len(tasks)))
    for m, traj in enumerate(trajs):
        steps = traj.steps()
        for k, task in enumerate(tasks):
            per_step = np.repeat(task[None], traj.length, axis=0)
            r = family.rewards_for(steps, per_step)
            T = traj.length
            if family.task_dependent_termination:
                ends = np.flatnonzero(family.terminals_for(steps, per_step))
                T = int(ends[0]) + 1 if len(ends) else T
            weights = np.power(float(discount), np.arange(T, dtype=np.float64))
            out[m, k] = float(np.dot(weights, r[:T]))
    return out


# ---- AIR (GH Alg. 2, Eq. 4) --------------------------------------------------------------
#: air_percentiles counts directly (an [M, N, K] comparison) up to this many elements; past
#: it sorting the reference columns is faster (from ~10 new rows at N = 500, K = 100)
AIR_DIRECT_COUNT_MAX = 1 << 19


def air_percentiles(R_new: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """P(tau_m, v_k) = (1/N) #{i : R_new[m, k] >= R_ref[i, k]}: [M, K], [N, K] -> [M, K].

    Ties count in the trajectory's favour, so equal returns get equal percentiles (the GH
    code ranks ties arbitrarily by argsort; this definition is the deterministic one in
    ALGORITHMS.md). Few new rows (M N K <= ``AIR_DIRECT_COUNT_MAX``): the count itself,
    O(M N K) comparisons (a relabel worker fed one trajectory at a time: N K, no sort).
    Otherwise O((N + M) K log N): each column of the references sorted once, and the
    count is the position ``searchsorted(..., side="right")`` of each new return in it
    (the number of references <= it, exactly).
    """
    R_new = np.asarray(R_new, dtype=np.float64)
    R_ref = np.asarray(R_ref, dtype=np.float64)
    (M, K), N = R_new.shape, R_ref.shape[0]
    assert R_ref.shape == (N, K) and N > 0, (R_new.shape, R_ref.shape)
    if M * N * K <= AIR_DIRECT_COUNT_MAX:
        return np.count_nonzero(R_ref[None, :, :] <= R_new[:, None, :], axis=1) / N
    ref_sorted = np.sort(np.ascontiguousarray(R_ref.T), axis=1)  # [K, N], each candidate's column ascending
    new_t = np.ascontiguousarray(R_new.T)  # [K, M]
    order = None
    if M >= AIR_SORTED_QUERIES_MIN:  # searching keys in ascending order: each search starts
        order = np.argsort(new_t, axis=1)  # from the last one's place (0.53 against 0.69 ms
        new_t = np.take_along_axis(new_t, order, axis=1)  # at M = 100, N = 500, K = 100)
    counts = np.empty((K, M), dtype=np.int64)
    for k in range(K):  # (the method: np.searchsorted's wrapper costs more than the search here)
        counts[k] = ref_sorted[k].searchsorted(new_t[k], side="right")
    if order is not None:
        unsorted = np.empty_like(counts)
        np.put_along_axis(unsorted, order, counts, axis=1)
        counts = unsorted
    return counts.T / N


def air_ties_to_break(percentiles: np.ndarray, m: int = 1) -> np.ndarray:
    """bool [M, K]: the candidates whose advantage ``air_select`` can need, given the
    percentiles [M, K]: with m = 1, those tied at the row's highest percentile when more
    than one is (a lone best is chosen whatever its advantage); with m > 1, every candidate
    at or above the row's m-th highest percentile (the advantage orders them). The others
    are never chosen (their percentile is lower) whatever advantages they are given."""
    percentiles = np.asarray(percentiles)
    if m == 1:
        tied = percentiles == percentiles.max(axis=1, keepdims=True)
        return tied & (np.count_nonzero(tied, axis=1) > 1)[:, None]
    threshold = -np.partition(-percentiles, m - 1, axis=1)[:, m - 1 : m]  # the m-th highest
    return percentiles >= threshold


def air_select(percentiles: np.ndarray, advantages: np.ndarray, m: int = 1) -> np.ndarray:
    """The m candidates with the highest percentile, ties broken by the higher advantage
    (GH Alg. 2; REFERENCE-CODE §2): [M, K], [M, K] -> indices [M, m].

    Candidates equal in both keep their order (lowest index first)."""
    percentiles = np.asarray(percentiles)
    advantages = np.asarray(advantages)
    assert percentiles.shape == advantages.shape and percentiles.ndim == 2
    assert 1 <= m <= percentiles.shape[1], (m, percentiles.shape)
    if m == 1 and percentiles.size and np.isfinite(advantages).all():
        # the usual case (GH takes one): the first highest advantage among the candidates
        # tied at the highest percentile, which is the lexsort's first entry
        tied = percentiles == percentiles.max(axis=1, keepdims=True)
        return np.argmax(np.where(tied, advantages, -np.inf), axis=1)[:, None]
    # np.lexsort: the last key is the primary one; ascending and stable
    order = np.lexsort((-advantages, -percentiles), axis=-1)
    return order[:, :m]


# ---- Advantage (GH Alg. 3, Eq. 7) and max-reward (GH Eq. 6) --------------------------------
def advantage_scores(R: np.ndarray, V0: np.ndarray) -> np.ndarray:
    """A(tau, v) = R(tau|v) - V(s0, v): [M, K], [M, K] -> [M, K] (GH Eq. 7)."""
    R = np.asarray(R, dtype=np.float64)
    V0 = np.asarray(V0, dtype=np.float64)
    assert R.shape == V0.shape, (R.shape, V0.shape)
    return R - V0


def top_m(scores: np.ndarray, m: int = 1) -> np.ndarray:
    """Indices of the m highest scores per row, best first, ties to the lower index:
    [M, K] -> [M, m]."""
    scores = np.asarray(scores)
    assert 1 <= m <= scores.shape[1], (m, scores.shape)
    return np.argsort(-scores, axis=1, kind="stable")[:, :m]


def max_reward_select(R: np.ndarray) -> np.ndarray:
    """argmax_v R(tau|v) per trajectory (GH Eq. 6): [M, K] -> [M] (ties to the lower index)."""
    return np.argmax(np.asarray(R), axis=1)


# ---- HIPI (Eq. 7) ------------------------------------------------------------------------------
def _np_logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top


def hipi_log_probs(R: Any, temperature: float = 1.0, partition: bool = True) -> Any:
    """log q(psi_j | tau_i) for a batch: R [B, J] -> [B, J] (numpy array or torch tensor).

    HIPI Eq. 7 with a uniform prior over the J candidates:
        q(j | i) ∝ exp(R_ij / temperature - log Z_j),
        log Z_j = log (1/B) sum_i exp(R_ij / temperature)   (Monte-Carlo over the batch);
    the constant log B does not change the distribution over j, so the code subtracts the
    plain logsumexp over i (as the HIPI code's ``normalize_cols``). ``partition=False``
    drops log Z (the Fig. 7b ablation). Rows are then log-softmax normalised over j.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(R, np.ndarray) or np.isscalar(R) or isinstance(R, (list, tuple)):
        logits = np.asarray(R, dtype=np.float64) / temperature
        assert logits.ndim == 2, logits.shape
        if partition:
            logits = logits - _np_logsumexp(logits, axis=0)
        return logits - _np_logsumexp(logits, axis=1)
    import torch  # the learner passes tensors; the service stays numpy-only otherwise

    logits = R / temperature
    assert logits.dim() == 2, tuple(logits.shape)
    if partition:
        logits = logits - torch.logsumexp(logits, dim=0, keepdim=True)
    return torch.log_softmax(logits, dim=1)


def sample_categorical(log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sample per row of log_probs [B, J] -> [B] (Gumbel-max: argmax(log p + G)).

    log_probs need not be normalised; -inf entries are never drawn."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    return np.argmax(log_probs + rng.gumbel(size=log_probs.shape), axis=-1)


# ---- HER -----------------------------------------------------------------------------------------
def her_final_goal_indices(lengths: np.ndarray, step_index: np.ndarray) -> np.ndarray:
    """Flat index of the last step of the episode holding each step: [B] -> [B].

    Steps are indexed in the concatenation of episodes of the given lengths [M]."""
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    step_index = np.asarray(step_index, dtype=np.int64)
    if step_index.size:
        total = int(ends[-1]) if len(ends) else 0
        assert 0 <= step_index.min() and step_index.max() < total, "step index out of range"
    episode = np.searchsorted(ends, step_index, side="right")
    return ends[episode] - 1


def her_future_goal_indices(
    lengths: np.ndarray,
    step_index: np.ndarray,
    rng: np.random.Generator,
    k: int = 4,
    window: int | None = None,
) -> np.ndarray:
    """k future goal steps for each step: [B] -> [k, B] flat step indices.

    Each draw is uniform over j in [t, last] with t the step and last its episode's final
    step, as the HIPI code (``np.random.randint(i, T, size=num_future_states)``); with
    ``window = w`` over [t, min(t + w - 1, last)]. j = t is the goal achieved by step t
    itself: ``family.achieved_goal`` reads s_t+1 in ``test_goal`` (so the draws are the
    states 1..T - t steps after s_t, HER's ``future``) and s_t in ``reacher_goal`` (HIPI's
    pre-step convention, where the HIPI code draws from the same index range).
    """
    step_index = np.asarray(step_index, dtype=np.int64)
    last = her_final_goal_indices(lengths, step_index)
    high = last if window is None else np.minimum(step_index + (window - 1), last)
    return rng.integers(step_index, high + 1, size=(k,) + step_index.shape)


def her_final_goals(family: TaskFamily, trajs: Sequence[Trajectory]) -> np.ndarray:
    """The goal each trajectory achieved at its last step: [M, G]."""
    last = [t.steps() for t in trajs]
    steps = StepBatch(*(np.stack([np.asarray(x)[-1] for x in fields]) for fields in zip(*last)))
    return np.asarray(family.achieved_goal(steps))


def relabel_mask(rng: np.random.Generator, shape: tuple[int, ...], ratio: float) -> np.ndarray:
    """bool [shape]: True with probability ratio (exactly all False at 0, all True at 1)."""
    return rng.random(shape) < ratio


# ---- HFR (Eq. 8) ---------------------------------------------------------------------------------
def hfr_log_partition(U_ref: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log Z(psi_j) = log (1/L) sum_l exp(U_psi_j(tau_l) / temperature) over L reference
    utilities of each task (HFR Alg. 1 ``GetLogPartition``; the reference uses L = 20
    contexts of psi's own original data): U_ref [J, L] -> [J]."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    U_ref = np.asarray(U_ref, dtype=np.float64)
    if U_ref.ndim != 2 or U_ref.shape[1] == 0:
        raise ValueError(f"hfr_log_partition: U_ref must be [J, L] with L >= 1, got {U_ref.shape}")
    x = U_ref / temperature
    return _np_logsumexp(x, axis=1)[:, 0] - np.log(x.shape[1])


def hfr_log_probs(U: np.ndarray, log_Z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log q(psi_j | tau_i) of HFR Eq. 8 with a uniform prior over the J training tasks:

        q(psi_j | tau_i) ∝ exp(U_ij / temperature - log Z_j),   U [B, J], log_Z [J] -> [B, J],

    rows log-softmax normalised over j. ``log_Z`` must be on the tempered scale
    (``hfr_log_partition(U_ref, temperature)``), so adding a constant c to every utility
    of task j (U[:, j] and its reference utilities) shifts log Z_j by c / temperature and
    leaves q unchanged. The reference samples at temperature 1 on Q values that carry the
    reward scale (REFERENCE-CODE.md §5).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    U = np.asarray(U, dtype=np.float64)
    log_Z = np.asarray(log_Z, dtype=np.float64)
    if U.ndim != 2 or log_Z.shape != (U.shape[1],):
        raise ValueError(f"hfr_log_probs: U must be [B, J] and log_Z [J], got {U.shape} and {log_Z.shape}")
    logits = U / temperature - log_Z[None, :]
    return logits - _np_logsumexp(logits, axis=1)
