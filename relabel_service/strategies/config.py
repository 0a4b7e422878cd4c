"""Options of the relabeling strategies: one frozen dataclass, a docstring per field.

    cfg = StrategyConfig(num_candidates=100, temperature=0.5)
    strategy = make_strategy("air", cfg)      # -> RelabelStrategy
    result = strategy(request, np.random.default_rng(0))

Every strategy reads only the fields it needs; the defaults are the papers' settings
(GH: K = 100, m = 1, N = 500; HIPI: k = 4 future goals, temperature 1, partition on).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from hindsight.configtools import check_ranges, field


@dataclasses.dataclass(frozen=True)
class StrategyConfig:
    num_candidates: int = field(100, ge=1)
    """K. air: candidate tasks shared by a request = (K - M) prior samples + the batch's own
    M tasks (GH Alg. 2; REFERENCE-CODE §2). advantage / max_reward: per trajectory K - 1
    prior samples + its own task (GH Alg. 3; REFERENCE-CODE §3)."""
    num_to_take: int = field(1, ge=1)
    """m: relabeled copies per trajectory for air / advantage / max_reward (GH uses 1)."""
    reference_size: int = field(500, ge=0)
    """N: size of the reference set the relabel worker puts in ``request.reference`` for
    air (the N most recent trajectories by creation time, the new ones included; GH
    ``--cache``). Strategies
    use whatever reference they are given; this field only tells the worker how many to
    fetch. 0: no reference set, air ranks among the request's own trajectories (GH without
    ``--cache``)."""
    air_candidates: Literal["fresh", "pool"] = "fresh"
    """air: where the K - M prior candidates come from. ``fresh`` (default; GH Alg. 2 and the
    GH code): new prior samples in every request, so all N reference trajectories are
    re-rewarded under all K candidates each time. ``pool``: a pool of K - 1 prior samples
    shared by consecutive requests, rolled over every ``air_pool_refresh`` requests, with
    the reference trajectories' returns under it kept between requests (a trajectory
    entering the reference set adds a row, one leaving it drops its row); the decision for
    the candidates a request uses is the same AIR decision (``strategies/pool.py``)."""
    air_pool_refresh: int = field(32, ge=1)
    """air with ``air_candidates="pool"``: every request redraws ceil((K - 1) / this) pool
    tasks (the oldest), so the whole pool is renewed every this many requests. Each redrawn
    task costs N reward evaluations per step of the reference set; at N = 500, K = 100 and
    one new trajectory per request, 32 keeps that below half of the request's cost."""
    air_precision: Literal["float64", "float32"] = "float64"
    """air on point_reacher (the family with ``float32_returns``): the floating-point type
    of the per-(step, task) terms of the returns (two distances and a log). ``float64``
    (default): the paper's. ``float32``: about 1.5x faster returns, within ~1e-6 of float64
    (1e-5 (1 + |R|) in tests/test_envs.py), so returns that float64 separates by less may
    swap order and change a percentile; a config on another family is an error at load
    (PointTrajectory's Gaussian-tail returns, ~1e-100, would flush to 0 and tie)."""
    air_kernel: Literal["numpy", "compiled"] = "numpy"
    """air on point_trajectory and point_reacher (the families with ``compiled_returns``):
    how the returns of the reference set are evaluated. ``numpy`` (default): blocked numpy
    passes per (step, task) pair. ``compiled``: one ``torch.compile``d loop over the pairs
    (``envs/fused.py``), the same expression with every intermediate kept in registers,
    equal to the numpy path up to the order of additions (1e-13 relative); it needs a C++
    compiler, compiles in each relabel worker when it starts (seconds), and falls back to
    numpy, saying why, when that fails. With ``air_precision="float32"`` (point_reacher) the
    kernel runs in float32, the same terms and sums as the numpy float32 path. A config on
    another family is an error at load."""
    temperature: float = field(1.0, gt=0)
    """hipi / hipi_rl: logits are divided by the temperature (the paper's Eq. 7 and the HIPI
    code use 1)."""
    partition: bool = True
    """hipi / hipi_rl: subtract log Z(psi) per candidate task (HIPI Eq. 7; the code's
    ``normalize_cols``); False is the Fig. 7b ablation that drops the partition function."""
    hipi_relabel_fraction: float = field(0.5, ge=0, le=1)
    """hipi_rl: fraction of each learner batch's rows given their sampled task (a Bernoulli
    mask per row; HIPI README ``relabel_prob`` 0.5); the other rows stay as sampled."""
    hipi_batch: int = field(32, ge=1)
    """B for trajectory-level hipi: the relabel worker buffers new trajectories until B are
    available and relabels exactly B at a time, so the candidate set (the B commanded
    tasks) and the Monte-Carlo log Z_j of HIPI Eq. 7 come from a batch of fixed size
    whatever the arrival timing (HIPI relabels fixed-size batches; its README uses 32).
    At the end of a run (collection finished) the worker is told to flush and relabels the
    last < B trajectories as one smaller batch, reported as ``flushed`` in its stats."""
    hipi_discounted: bool = False
    """hipi: score trajectories by the discounted return (SAC gamma) instead of the
    undiscounted sum of rewards written in HIPI Eq. 7."""
    her_k: int = field(4, ge=1)
    """her_future: relabeled copies of each trajectory; every step of every copy draws its
    own future goal (HIPI ``num_future_states`` = 4, HER's k = 4)."""
    her_future_window: int | None = field(None, ge=1)
    """her_future: None draws a step's goal uniformly from the rest of its episode (as the
    HIPI reference code does); w draws it from the next w achieved goals only (the goal
    achieved by this step up to w - 1 steps later), clipped to the episode's last step."""
    her_relabel_ratio: float = field(1.0, ge=0, le=1)
    """her_final / her_future: probability that a step of a copy gets the hindsight goal;
    otherwise it keeps its stored task. 0 makes every copy equal to the stored tasks."""
    her_keep_original: bool = True
    """her_final / her_future: also send the original trajectory (HIPI ``keep_current_goal``).
    With the defaults, her_future sends 1 original + 4 relabeled copies (80% relabeled,
    HER's k = 4 ratio)."""
    feature_cache_size: int = field(10_000, ge=0)
    """air on linear families: discounted feature sums kept between requests (LRU, one [D]
    vector per trajectory), so each reference trajectory's sum is computed once, not once
    per request. 0 disables the cache (results are identical either way)."""
    max_reward_elements: int = field(1 << 24, ge=1)
    """Non-linear families: evaluate rewards in chunks of whole trajectories holding at most
    this many (step, task) pairs (~128 MB of float64 per chunk); the default keeps test and
    point-env requests in a single ``family.rewards`` call."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.air_candidates not in ("fresh", "pool"):
            raise ValueError(f"air_candidates must be 'fresh' or 'pool', got {self.air_candidates!r}")
        if self.air_precision not in ("float64", "float32"):
            raise ValueError(f"air_precision must be 'float64' or 'float32', got {self.air_precision!r}")
        if self.air_kernel not in ("numpy", "compiled"):
            raise ValueError(f"air_kernel must be 'numpy' or 'compiled', got {self.air_kernel!r}")
