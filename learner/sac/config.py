"""Hyperparameters of multi-task SAC and the per-family defaults of the reference code.

    cfg = sac_config_for(family, batch_size=128)      # table below + family discount + overrides
    cfg = SACConfig(**sac_defaults("point_reacher"))   # includes the family's discount, 0.97

Sources: REFERENCE-CODE.md §6 (GH ``launch_gher.py`` / rlkit ``LatentConditionedMlp``,
HIPI ``hipi/train_eval.py``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hindsight.configtools import RangeError, check_ranges, field


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Twin-Q SAC with a tanh-Gaussian actor and a learned temperature, task-conditioned."""

    hidden_sizes: tuple[int, ...] = field((256, 256), ge=1)
    """Widths of the hidden layers of the actor and of each critic (ReLU)."""

    actor_lr: float = field(3e-4, gt=0)
    """Adam learning rate of the actor (GH uses 3e-3 on the point envs)."""

    critic_lr: float = field(3e-4, gt=0)
    """Adam learning rate of the twin critics."""

    alpha_lr: float = field(3e-4, gt=0)
    """Adam learning rate of log(alpha) (GH: equal to the actor's)."""

    discount: float = field(0.99, ge=0, le=1)
    """gamma of the Bellman target; take it from the task family (``sac_config_for`` does)."""

    tau: float = field(0.005, gt=0, le=1)
    """Polyak rate of the target critics, applied after every update."""

    batch_size: int = field(256, ge=1)
    """Transitions per gradient step."""

    init_alpha: float = field(1.0, gt=0)
    """Initial temperature (rlkit, CleanRL and tf_agents all start at log alpha = 0)."""

    learn_alpha: bool = True
    """Tune alpha towards ``target_entropy``; when False alpha stays ``init_alpha``."""

    target_entropy: float | None = None
    """Entropy target of the temperature loss; None means -dim(A)."""

    task_repeat: int = field(1, ge=1)
    """R: the task vector is tiled R times wherever it is fed (GH ``latent_shape_multiplier``).
    Family defaults: 5 on half_cheetah_mo and ant_direction (GH appendix B.1: "we repeat the
    task variable 5 times", needed for the baselines to learn at all), 1 elsewhere. The GH
    launcher's default is 1 and no README command sets it; set 1 to run the code's value."""

    task_to_all_layers: bool = True
    """Append the tiled task after every hidden layer too, not only to the input
    (GH ``latent_to_all_layers``, GH appendix B). Off reproduces the plain [s, z] input."""

    reward_scale: float = field(1.0, gt=0)
    """Multiplies rewards in the Bellman target (GH and HIPI: 1)."""

    log_std_min: float = -20.0
    """Lower clamp of the actor's log standard deviation (rlkit)."""

    log_std_max: float = 2.0
    """Upper clamp of the actor's log standard deviation (rlkit)."""

    q_last_init: float = field(3e-3, ge=0)
    """Critic output layer weights and bias ~ U(-q_last_init, q_last_init) (rlkit ``init_w``)."""

    pi_last_init: float = field(1e-3, ge=0)
    """Actor output layer (mean and log-std) weights and bias ~ U(-pi_last_init, pi_last_init)."""

    hidden_bias_init: float = 0.1
    """Constant initial bias of every hidden layer (rlkit ``b_init_value``)."""

    compile: bool = False
    """Run the losses and their backward through ``torch.compile`` (inductor; C++ kernels on
    the CPU, built with the system's C++ compiler) instead of eagerly; Adam and the Polyak
    update stay eager. Same update up to float32 rounding (the noise is drawn from the same
    generator in the same order). Costs a compile of seconds (inductor's disk cache warm) to
    minutes (cold) in each new learner process, which the learner does while the random phase
    fills the replay; if the compile fails (no compiler) the learner says why and trains eager.
    On by default for the MuJoCo and the GH families (``_FAMILY_DEFAULTS``: learner-bound runs
    on networks 256 to 400 wide), off for the small networks of the mazes and test families;
    ``hindsight bench learner`` measures both paths (``learner/sac/update.py``,
    benchmarks/README.md). The CUDA-graph learner (``learner.cuda_graph``) does not use it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        check_ranges(self)  # the declared ranges above
        if not self.hidden_sizes:
            raise RangeError("hidden_sizes", self.hidden_sizes, "non-empty lists of widths >= 1")
        if self.log_std_min >= self.log_std_max:
            raise RangeError("log_std_min", self.log_std_min, f"(-inf, log_std_max={self.log_std_max})")

    def layer_sizes(self, in_dim: int, out_dim: int, task_width: int) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every layer of a task-conditioned MLP (``networks.TaskMLP``)
        on ``in_dim`` inputs, counting the tiled task (``task_width`` = Z x ``task_repeat``)
        where it is concatenated: on the input, and after every hidden layer with
        ``task_to_all_layers``."""
        sizes = []
        fan_in = in_dim + task_width
        for width in self.hidden_sizes:
            sizes.append((fan_in, width))
            fan_in = width + (task_width if self.task_to_all_layers else 0)
        sizes.append((fan_in, out_dim))
        return sizes

    def entropy_target(self, action_dim: int) -> float:
        """The resolved target entropy: ``target_entropy`` or -dim(A)."""
        return float(-action_dim if self.target_entropy is None else self.target_entropy)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SACConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SACConfig field(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)


def _lr(lr: float) -> dict[str, float]:
    return {"actor_lr": lr, "critic_lr": lr, "alpha_lr": lr}


#: Per-family values that differ from ``SACConfig``'s defaults (REFERENCE-CODE.md §6).
#: GH point envs use the launcher's lr 3e-3; MuJoCo families the usual 3e-4
#: (ALGORITHMS.md §2). HIPI feeds the task only as extra observation dims, no repetition.
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # The GH families' runs are learner-bound (1.33 to 5 updates per env step on networks
    # 300 to 400 wide): their update is compiled (``compile``), 1.4x eager in a run on the
    # 2-core box (benchmarks/README.md, the learner)
    "point_trajectory": {"hidden_sizes": (400, 300), "batch_size": 128, **_lr(3e-3), "compile": True},
    "point_reacher": {"hidden_sizes": (300, 300, 300), "batch_size": 256, **_lr(3e-3), "compile": True},
    # GH paper Table 2 (Fetch): [400, 300], lr 3e-3, batch 256, 200 gradient steps / 250 env steps
    "fetch_reach": {"hidden_sizes": (400, 300), "batch_size": 256, **_lr(3e-3), "compile": True},
    # GH appendix B.1: the task repeated 5 times (and appended after every hidden layer).
    # MuJoCo runs are long and learner-bound at 256x256: the update is compiled (``compile``)
    "half_cheetah_mo": {"hidden_sizes": (256, 256), "batch_size": 256, "task_repeat": 5, **_lr(3e-4), "compile": True},
    "ant_direction": {"hidden_sizes": (256, 256), "batch_size": 256, "task_repeat": 5, **_lr(3e-4), "compile": True},
    "walker_linear": {
        "hidden_sizes": (256, 256), "batch_size": 256, "task_to_all_layers": False, **_lr(3e-4), "compile": True,
    },
    "reacher_goal": {
        "hidden_sizes": (256, 256), "batch_size": 256, "task_to_all_layers": False, **_lr(3e-4), "compile": True,
    },
    # HIPI appendix C.1: (32, 32) networks for 2-D navigation, batch 32, task as extra inputs
    "maze": {"hidden_sizes": (32, 32), "batch_size": 32, "task_to_all_layers": False, **_lr(3e-4)},
}
#: the tiny families of ``envs/testing.py``: small nets, fast learning rate
_TEST_DEFAULTS: dict[str, Any] = {"hidden_sizes": (64, 64), "batch_size": 128, **_lr(3e-3)}
#: any other family (e.g. HFR's, when trained with multi-task SAC): the MuJoCo defaults
_GENERIC_DEFAULTS: dict[str, Any] = {"hidden_sizes": (256, 256), "batch_size": 256, **_lr(3e-4)}


def sac_defaults(family_name: str) -> dict[str, Any]:
    """``SACConfig`` keyword arguments for a family: its row of the table above plus, for a
    registered family, its ``discount`` (gamma is part of the task, ALGORITHMS.md §1).

    Families not in the table get the generic MuJoCo defaults (256x256, lr 3e-4); the family
    registry, not this table, is what rejects an unknown family name.
    """
    from envs import FAMILIES  # the registry imports simulators; only needed here

    table_name = re.sub(r"_discrete\d+$", "", family_name)  # a discrete set keeps its base's row
    if family_name.startswith("test_"):
        out = dict(_TEST_DEFAULTS)
    else:
        out = dict(_FAMILY_DEFAULTS.get(table_name, _GENERIC_DEFAULTS))
    if family_name in FAMILIES:
        out["discount"] = float(FAMILIES[family_name].discount)
    return out


def sac_config_for(family: Any, **overrides: Any) -> SACConfig:
    """``SACConfig`` for a ``TaskFamily``: its table row, its discount, then ``overrides``."""
    kwargs = {**sac_defaults(family.name), "discount": float(family.discount), **overrides}
    return SACConfig.from_dict(kwargs)
