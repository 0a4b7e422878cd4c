"""Registry of task families (see ``envs.core`` for the TaskFamily contract).

    fam = get_family("point_reacher")          # a fresh instance; kwargs go to its constructor
    fam = get_family("point_reacher", reward_bias=5.0)   # except the reward-bias ones (envs.bias)
    family_names()                              # sorted registered names
    family_table()                              # rows for ``hindsight envs``

Registered: the GH point envs (``envs.point``), the MuJoCo families
(``envs.mujoco_families``), HFR's meta-RL families (``envs.meta_families``), HIPI's 2-D
navigation mazes (``envs.maze``), discrete reacher (``envs.discrete``), GH Fetch reach
(``envs.fetch``, simulator from the ``robotics`` extra) and, when
present, the tiny test families of ``envs.testing``.
"""

from __future__ import annotations

import difflib
import importlib
import re
from typing import Any, NamedTuple

from envs.bias import RewardBias, with_reward_bias
from envs.core import StepBatch, TaskFamily, UnknownFamilyError
from envs.meta_families import AntGoalSparse, CheetahHighdim, CheetahVel, CheetahVelSparse, FourCorners
from envs.discrete import ReacherDiscrete, discrete_from_kwargs
from envs.fetch import FetchReach
from envs.maze import Maze
from envs.mujoco_families import AntDirection, HalfCheetahMultiObjective, ReacherGoal, WalkerLinear
from envs.point import PointReacher, PointTrajectory

__all__ = [
    "FAMILIES",
    "FamilyRow",
    "StepBatch",
    "TaskFamily",
    "UnknownFamilyError",
    "discrete_alias",
    "family_names",
    "family_table",
    "get_family",
    "register",
]

#: name -> TaskFamily subclass
FAMILIES: dict[str, type[TaskFamily]] = {}


def register(cls: type[TaskFamily]) -> type[TaskFamily]:
    """Add a family class under its ``name`` (usable as a class decorator)."""
    existing = FAMILIES.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"task family name {cls.name!r} is taken by {existing.__qualname__}")
    FAMILIES[cls.name] = cls
    return cls


def _register_module(module: str) -> None:
    """Register every named TaskFamily subclass defined in ``module``, if it exists."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:  # the module exists but one of its imports is missing
            raise
        return
    for obj in vars(mod).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, TaskFamily)
            and obj.__module__ == module
            and "name" in vars(obj)
        ):
            register(obj)


_BUILTIN = (
    PointTrajectory, PointReacher, HalfCheetahMultiObjective, AntDirection, WalkerLinear, ReacherGoal,
    CheetahVel, CheetahVelSparse, CheetahHighdim, AntGoalSparse, FourCorners,
    Maze, ReacherDiscrete, FetchReach,
)
for _cls in _BUILTIN:
    register(_cls)
_register_module("envs.testing")  # owned by the lead; optional


def family_names() -> list[str]:
    """All registered family names, sorted."""
    return sorted(FAMILIES)


def discrete_alias(name: str) -> tuple[str, int] | None:
    """(base, N) for a name ``<base>_discrete<N>`` of a registered base that is not itself
    registered (the name of a discrete task set, ``envs.discrete``), else None."""
    m = re.fullmatch(r"(.+)_discrete(\d+)", str(name))
    if name in FAMILIES or not m or m.group(1) not in FAMILIES:
        return None
    return m.group(1), int(m.group(2))


def get_family(name: str, **kwargs: Any) -> TaskFamily:
    """A new instance of the family ``name``; raises UnknownFamilyError naming the nearest.

    The ``envs.bias.BIAS_KWARGS`` (``reward_bias``, ``bias_tasks``, ...) wrap the family in a
    reward bias (HIPI Fig. 8) instead of reaching its constructor, so every family has them;
    likewise ``envs.discrete.DISCRETE_KWARGS`` (``discrete_tasks``, ``discrete_task_list``)
    restrict it to a fixed task list, and ``<base>_discrete<N>`` names that family with N
    tasks drawn with seed 0 (the name discrete families give their trajectories)."""
    kwargs = dict(kwargs)
    alias = discrete_alias(name)
    if alias is not None and "discrete_task_list" not in kwargs:
        name = alias[0]
        kwargs.setdefault("discrete_tasks", alias[1])
    try:
        cls = FAMILIES[name]
    except KeyError:
        names = family_names()
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UnknownFamilyError(
            f"unknown task family {name!r}; {hint}registered: {', '.join(names)}"
        ) from None
    bias = RewardBias.from_kwargs(kwargs)
    family = discrete_from_kwargs(cls, kwargs)
    return with_reward_bias(family if family is not None else cls(**kwargs), bias)


class FamilyRow(NamedTuple):
    name: str
    obs: int
    action: int
    task: int
    reward_inputs: int
    horizon: int
    discount: float
    linear: bool
    #: meta families: "train/test" sizes of the fixed task lists (+ ", success"); else "-"
    meta_tasks: str


def _meta_tasks(c: type[TaskFamily]) -> str:
    if not c.meta:
        return "-"
    return f"{c.num_train_tasks}/{c.num_test_tasks}" + (", success" if c.has_success else "")


def family_table() -> list[FamilyRow]:
    """One row per registered family (sorted by name), for ``hindsight envs``."""
    return [
        FamilyRow(
            c.name, c.obs_dim, c.action_dim, c.task_dim, c.reward_input_dim, c.horizon, c.discount, c.linear,
            _meta_tasks(c),
        )
        for c in (FAMILIES[n] for n in family_names())
    ]
