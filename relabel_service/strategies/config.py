"""Options of the relabeling strategies: one frozen dataclass, a docstring per field.

    cfg = StrategyConfig(num_candidates=100, temperature=0.5)
    strategy = make_strategy("air", cfg)      # -> RelabelStrategy
    result = strategy(request, np.random.default_rng(0))

Every strategy reads only the fields it needs; the defaults are the papers' settings
(GH: K = 100, m = 1, N = 500; HIPI: k = 4 future goals, temperature 1, partition on).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StrategyConfig:
    num_candidates: int = 100
    """K. air: candidate tasks shared by a request = (K - M) prior samples + the batch's own
    M tasks (GH Alg. 2; REFERENCE-CODE §2). advantage / max_reward: per trajectory K - 1
    prior samples + its own task (GH Alg. 3; REFERENCE-CODE §3)."""
    num_to_take: int = 1
    """m: relabeled copies per trajectory for air / advantage / max_reward (GH uses 1)."""
    reference_size: int = 500
    """N: size of the reference set the relabel worker puts in ``request.reference`` for
    air (the N most recent trajectories, including the new ones; GH ``--cache``). Strategies
    use whatever reference they are given; this field only tells the worker how many to
    fetch. 0: no reference set, air ranks among the request's own trajectories (GH without
    ``--cache``)."""
    temperature: float = 1.0
    """hipi / hipi_rl: logits are divided by the temperature (the paper's Eq. 7 and the HIPI
    code use 1)."""
    partition: bool = True
    """hipi / hipi_rl: subtract log Z(psi) per candidate task (HIPI Eq. 7; the code's
    ``normalize_cols``); False is the Fig. 7b ablation that drops the partition function."""
    hipi_relabel_fraction: float = 0.5
    """hipi_rl: fraction of each learner batch's rows given their sampled task (a Bernoulli
    mask per row; HIPI README ``relabel_prob`` 0.5); the other rows stay as sampled."""
    hipi_discounted: bool = False
    """hipi: score trajectories by the discounted return (SAC gamma) instead of the
    undiscounted sum of rewards written in HIPI Eq. 7."""
    her_k: int = 4
    """her_future: relabeled copies of each trajectory; every step of every copy draws its
    own future goal (HIPI ``num_future_states`` = 4, HER's k = 4)."""
    her_future_window: int | None = None
    """her_future: None draws a step's goal uniformly from the rest of its episode (as the
    HIPI reference code does); w draws it from the next w achieved goals only (the goal
    achieved by this step up to w - 1 steps later), clipped to the episode's last step."""
    her_relabel_ratio: float = 1.0
    """her_final / her_future: probability that a step of a copy gets the hindsight goal;
    otherwise it keeps its stored task. 0 makes every copy equal to the stored tasks."""
    her_keep_original: bool = True
    """her_final / her_future: also send the original trajectory (HIPI ``keep_current_goal``).
    With the defaults, her_future sends 1 original + 4 relabeled copies (80% relabeled,
    HER's k = 4 ratio)."""
    feature_cache_size: int = 10_000
    """air on linear families: discounted feature sums kept between requests (LRU, one [D]
    vector per trajectory), so each reference trajectory's sum is computed once, not once
    per request. 0 disables the cache (results are identical either way)."""
    max_reward_elements: int = 1 << 24
    """Non-linear families: evaluate rewards in chunks of whole trajectories holding at most
    this many (step, task) pairs (~128 MB of float64 per chunk); the default keeps test and
    point-env requests in a single ``family.rewards`` call."""

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.reference_size < 0:
            raise ValueError(f"reference_size must be >= 0, got {self.reference_size}")
        if self.num_to_take < 1:
            raise ValueError(f"num_to_take must be >= 1, got {self.num_to_take}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.hipi_relabel_fraction <= 1.0:
            raise ValueError(f"hipi_relabel_fraction must be in [0, 1], got {self.hipi_relabel_fraction}")
        if self.her_k < 1:
            raise ValueError(f"her_k must be >= 1, got {self.her_k}")
        if self.her_future_window is not None and self.her_future_window < 1:
            raise ValueError(f"her_future_window must be >= 1 or None, got {self.her_future_window}")
        if not 0.0 <= self.her_relabel_ratio <= 1.0:
            raise ValueError(f"her_relabel_ratio must be in [0, 1], got {self.her_relabel_ratio}")
        if self.feature_cache_size < 0:
            raise ValueError(f"feature_cache_size must be >= 0, got {self.feature_cache_size}")
        if self.max_reward_elements < 1:
            raise ValueError(f"max_reward_elements must be >= 1, got {self.max_reward_elements}")
