"""Hyperparameters of PEARL (the networks, the losses, the meta-batch) and of its
per-iteration collection schedule, with the per-family values of the reference code.

    cfg = pearl_config_for("cheetah_vel")                # table below, then overrides
    sched = schedule_for("four_corners", num_iterations=10)

Sources: REFERENCE-CODE.md §5 (``michaelwan11/hfr: configs/default.py`` and the per-env
json files, same defaults as ``katerakelly/oyster: configs/default.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from learner.sac.config import SACConfig

#: oyster clamps the encoder's factor variances from below before inverting them
VAR_MIN = 1e-7


def _check_fields(cls: type, d: dict[str, Any]) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")


@dataclasses.dataclass(frozen=True)
class PEARLConfig:
    """PEARL's networks and losses: a product-of-Gaussians context encoder, SAC-v1 with a
    value network (Q1, Q2, V, target V), no learned temperature (the reward scale plays
    its part)."""

    latent_dim: int = 5
    """Z: size of the task embedding z."""
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    """Hidden widths of the context encoder (one transition -> (mu, sigma^2) factor)."""
    hidden_sizes: tuple[int, ...] = (300, 300, 300)
    """Hidden widths of the actor, each critic and the value network."""
    lr: float = 3e-4
    """Adam learning rate of every part (encoder, critics, value, actor)."""
    kl_lambda: float = 0.1
    """Weight of KL(q(z|c) || N(0, I)), summed over the meta-batch's tasks (1.0 for Ant and
    Four-Corners)."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the Bellman target (100 on Four-Corners); with the
    fixed temperature of 1 it sets the entropy trade-off."""
    discount: float = 0.99
    """gamma of the Bellman target (the family's discount; 0.9 on Four-Corners)."""
    tau: float = 0.005
    """Polyak rate of the target value network."""
    meta_batch: int = 16
    """T: training tasks per gradient step (8 on Four-Corners)."""
    batch_size: int = 256
    """RL transitions per task per gradient step."""
    embedding_batch_size: int = 100
    """C: context transitions per task per gradient step (256 Ant, 1024 Four-Corners)."""
    use_next_obs_in_context: bool = False
    """Context rows are (s, a, r) as in the reference; True appends s'."""
    policy_mean_reg: float = 1e-3
    """L2 weight on the actor's pre-tanh mean (oyster ``policy_mean_reg_weight``)."""
    policy_std_reg: float = 1e-3
    """L2 weight on the actor's log-std (oyster ``policy_std_reg_weight``)."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log standard deviation."""

    def __post_init__(self) -> None:
        for name in ("encoder_hidden", "hidden_sizes"):
            sizes = tuple(int(h) for h in getattr(self, name))
            if not sizes or min(sizes) < 1:
                raise ValueError(f"PEARLConfig.{name} must be non-empty and positive, got {sizes}")
            object.__setattr__(self, name, sizes)
        for name in ("latent_dim", "meta_batch", "batch_size", "embedding_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PEARLConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"PEARLConfig.tau must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"PEARLConfig.discount must be in [0, 1], got {self.discount}")
        if self.kl_lambda < 0:
            raise ValueError(f"PEARLConfig.kl_lambda must be >= 0, got {self.kl_lambda}")

    def context_dim(self, obs_dim: int, action_dim: int) -> int:
        """Width of one context row: s, a, r (, s')."""
        return obs_dim + action_dim + 1 + (obs_dim if self.use_next_obs_in_context else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PEARLConfig":
        _check_fields(cls, d)
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """PEARL's per-iteration data collection and training (oyster ``rl_algorithm.train``)."""

    num_iterations: int = 160
    """Meta-training iterations (160 cheetah-vel(-sparse), 180 ant-goal / cheetah-highdim,
    300 Four-Corners)."""
    num_initial_steps: int = 2000
    """Iteration 0 only: steps with z from the prior for EVERY training task (200 on
    Four-Corners); never relabeled."""
    num_tasks_sample: int = 5
    """Training tasks drawn (with replacement) per iteration for collection."""
    num_steps_prior: int = 400
    """Per sampled task: steps with z ~ prior, added to the RL and encoder buffers."""
    num_steps_posterior: int = 0
    """Per sampled task: steps with z ~ the posterior of the context gathered online in
    this iteration (re-inferred after every trajectory), RL and encoder buffers."""
    num_extra_rl_steps_posterior: int = 600
    """Per sampled task: posterior steps added to the RL buffer only."""
    num_train_steps_per_itr: int = 1000
    """Gradient steps per iteration."""
    num_exp_traj_eval: int = 2
    """Meta-test: exploration trajectories with the prior / growing context before the
    posterior from all context (5 on Four-Corners)."""
    num_eval_trajectories: int = 3
    """Meta-test: trajectories per test task in total (the last one is reported)."""
    rl_capacity: int = 100_000
    """Per-task RL buffer capacity (reference 1e6; a task receives ~10k steps in a
    reference run, so this holds all of it)."""
    enc_capacity: int = 10_000
    """Per-task encoder buffer capacity (it is cleared for a task each iteration)."""
    utility_batch_size: int = 256
    """HFR N_U: start states per utility estimate (64 ant-goal, 1024 Four-Corners)."""
    log_z_samples: int = 20
    """HFR: contexts per log Z(psi) estimate (reference 20)."""
    relabel_probability: float = 0.5
    """HFR / baselines: probability that a collected trajectory is relabeled (reference 0.5
    coin; the reference flips one coin per collection call, we flip one per trajectory)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int) and v < 0:
                raise ValueError(f"ScheduleConfig.{f.name} must be >= 0, got {v}")
        if self.num_exp_traj_eval >= self.num_eval_trajectories:
            raise ValueError(
                f"ScheduleConfig.num_eval_trajectories ({self.num_eval_trajectories}) must exceed "
                f"num_exp_traj_eval ({self.num_exp_traj_eval}): the last trajectory is the posterior one"
            )
        if not 0.0 <= self.relabel_probability <= 1.0:
            raise ValueError(f"ScheduleConfig.relabel_probability must be in [0, 1], got {self.relabel_probability}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScheduleConfig":
        _check_fields(cls, d)
        return cls(**d)


#: per-family (PEARLConfig overrides, ScheduleConfig overrides), REFERENCE-CODE.md §5
_FAMILY_DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cheetah_vel": (
        {},
        {"num_iterations": 160, "num_tasks_sample": 5, "num_steps_prior": 400, "num_steps_posterior": 0,
         "num_extra_rl_steps_posterior": 600, "utility_batch_size": 256},
    ),
    "cheetah_vel_sparse": (
        {},
        {"num_iterations": 160, "num_tasks_sample": 5, "num_steps_prior": 400, "num_steps_posterior": 600,
         "num_extra_rl_steps_posterior": 0, "utility_batch_size": 256},
    ),
    "cheetah_highdim": (
        {},
        {"num_iterations": 180, "num_tasks_sample": 10, "num_steps_prior": 400, "num_steps_posterior": 0,
         "num_extra_rl_steps_posterior": 600, "utility_batch_size": 256},
    ),
    "ant_goal_sparse": (
        {"kl_lambda": 1.0, "embedding_batch_size": 256},
        {"num_iterations": 180, "num_tasks_sample": 10, "num_steps_prior": 400, "num_steps_posterior": 600,
         "num_extra_rl_steps_posterior": 0, "utility_batch_size": 64},
    ),
    "four_corners": (
        {"kl_lambda": 1.0, "reward_scale": 100.0, "meta_batch": 8, "embedding_batch_size": 1024},
        {"num_iterations": 300, "num_initial_steps": 200, "num_tasks_sample": 10, "num_steps_prior": 100,
         "num_steps_posterior": 900, "num_extra_rl_steps_posterior": 0, "utility_batch_size": 1024,
         "num_exp_traj_eval": 5, "num_eval_trajectories": 20},
    ),
}
#: tiny test families (``envs/testing.py``): small nets, short schedule
_TEST_DEFAULTS: tuple[dict[str, Any], dict[str, Any]] = (
    {"encoder_hidden": (32, 32), "hidden_sizes": (64, 64), "lr": 3e-3, "meta_batch": 4, "batch_size": 64,
     "embedding_batch_size": 32, "reward_scale": 5.0},
    {"num_iterations": 10, "num_initial_steps": 40, "num_tasks_sample": 2, "num_steps_prior": 20,
     "num_steps_posterior": 20, "num_extra_rl_steps_posterior": 0, "num_train_steps_per_itr": 20,
     "rl_capacity": 5000, "enc_capacity": 1000, "utility_batch_size": 16, "log_z_samples": 5,
     "num_exp_traj_eval": 2, "num_eval_trajectories": 3},
)


def sac_view(cfg: PEARLConfig) -> SACConfig:
    """The SACConfig that builds PEARL's actor / critics / value net (z at the input only)."""
    return SACConfig(
        hidden_sizes=cfg.hidden_sizes, actor_lr=cfg.lr, critic_lr=cfg.lr, alpha_lr=cfg.lr,
        discount=cfg.discount, tau=cfg.tau, batch_size=cfg.batch_size, learn_alpha=False,
        task_repeat=1, task_to_all_layers=False, reward_scale=cfg.reward_scale,
        log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max,
    )


def _row(family_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if family_name.startswith("test_"):
        return _TEST_DEFAULTS
    return _FAMILY_DEFAULTS.get(family_name, ({}, {}))


def pearl_defaults(family_name: str) -> dict[str, Any]:
    """``PEARLConfig`` keyword arguments of a family: its row plus its discount when registered."""
    from envs import FAMILIES  # the registry imports simulators; only needed here

    out = dict(_row(family_name)[0])
    if family_name in FAMILIES:
        out["discount"] = float(FAMILIES[family_name].discount)
    return out


def schedule_defaults(family_name: str) -> dict[str, Any]:
    """``ScheduleConfig`` keyword arguments of a family (REFERENCE-CODE.md §5)."""
    return dict(_row(family_name)[1])


def pearl_config_for(family_name: str, **overrides: Any) -> PEARLConfig:
    return PEARLConfig.from_dict({**pearl_defaults(family_name), **overrides})


def schedule_for(family_name: str, **overrides: Any) -> ScheduleConfig:
    return ScheduleConfig.from_dict({**schedule_defaults(family_name), **overrides})
