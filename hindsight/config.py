"""The experiment config: one frozen dataclass per part, composed once.

Loaded from ``deploy/configs/*.yaml`` (``--config``), then ``--set a.b=c`` overrides.
``hindsight train --help-config`` prints every field with its docstring.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from hindsight.configtools import ConfigError, apply_overrides, from_dict, to_dict
from learner.sac.config import SACConfig
from relabel_service.strategies.config import StrategyConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "deploy" / "configs"


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    family: str = "point_reacher"
    """Task family name (``hindsight envs`` lists them)."""
    family_kwargs: dict = dataclasses.field(default_factory=dict)
    """Keyword arguments for the family's constructor (e.g. a reward bias)."""


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    num_workers: int = 2
    """Rollout worker actors at start; the pool replaces any that die."""
    envs_per_worker: int = 4
    """Envs each worker steps in lockstep with one batched policy forward pass."""
    num_cpus: float = 0.25
    """Ray CPUs reserved per rollout worker (fractional on small machines)."""
    random_steps: int = 1000
    """Env steps (over all workers) taken with uniform random actions before the policy."""


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    num_shards: int = 2
    """Shard actors; a trajectory goes to crc32(episode_id) % num_shards."""
    fsync: Literal["always", "interval", "never"] = "interval"
    """always: fsync every append before acking; interval: at most every fsync_interval_s
    (an ack then means written to the OS, which survives a process crash but not a power
    loss inside the interval); never: leave it to the OS."""
    fsync_interval_s: float = 1.0
    """Seconds between fsyncs under the 'interval' policy."""
    segment_bytes: int = 8 * 1024 * 1024
    """A shard rolls to a new segment file past this size."""
    max_segments: int = 64
    """Per-shard capacity in segments; the oldest segment is dropped whole beyond it."""
    num_cpus: float = 0.05
    """Ray CPUs per shard actor."""


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
    strategy: str = "air"
    """none | random | her_final | her_future | air | advantage | max_reward | hipi | hipi_rl."""
    num_workers: int = 1
    """Relabel worker actors; shards are split among them."""
    batch_trajectories: int = 16
    """At most this many new trajectories per shard per relabel call."""
    reference_refresh: int = 4
    """Refresh the reference set (store.recent(N)) every this many relabel calls."""
    num_cpus: float = 0.25
    """Ray CPUs per relabel worker."""
    prefetch: int = 2
    """Relabel calls kept in flight per worker (bounded prefetch)."""
    max_backlog: int = 64
    """Collection waits while more than this many stored trajectories await relabeling."""
    strategy_cfg: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)
    """Options of the strategy (K, N, m, temperature, ...)."""


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    device: str = "auto"
    """auto (CUDA when Ray gives the learner a GPU), cpu or cuda."""
    num_gpus: float = -1.0
    """GPUs to ask Ray for; -1: one if the cluster has any, else 0."""
    num_cpus: float = 1.0
    """Ray CPUs for the learner; also its torch thread count (at least 1)."""
    replay_capacity: int = 200_000
    """Transitions held in the device-resident replay."""
    min_replay: int = 1000
    """No updates before the replay holds this many transitions."""
    samples_per_insert: float = 256.0
    """Target ratio (updates x batch size) / env steps inserted (relabeled copies do not
    count, so every strategy gets the same updates per env step); 256 with batch 256 is
    one update per env step, as in the HIPI code."""
    spi_tolerance: float = 0.25
    """Relative slack around the ratio: the learner waits for data above
    spi*(1+tol); collection waits below spi*(1-tol)."""
    updates_per_call: int = 50
    """Updates per learner call (one Ray round trip)."""
    publish_every: int = 50
    """Publish policy weights every this many updates."""
    checkpoint_every: int = 5000
    """Checkpoint every this many updates (and at the end)."""
    sac: SACConfig = dataclasses.field(default_factory=SACConfig)
    """Multi-task SAC hyperparameters (family defaults fill what the config leaves unset)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 5000
    """Evaluate every this many env steps (and at the end)."""
    episodes: int = 25
    """Eval episodes; tasks cycle through the family's fixed eval set."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "default"
    """Run name; the run directory is LOGDIR/NAME-TIMESTAMP."""
    seed: int = 0
    """Seed of every random generator in the run."""
    env_steps: int = 20_000
    """Env-step budget of the run."""
    logdir: str = "runs"
    """Where run directories are created."""
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    relabel: RelabelConfig = dataclasses.field(default_factory=RelabelConfig)
    learner: LearnerConfig = dataclasses.field(default_factory=LearnerConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def resolve_config_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / name_or_path, CONFIG_DIR / f"{name_or_path}.yaml"):
        if cand.exists():
            return cand
    known = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {name_or_path!r} not found (known in {CONFIG_DIR}: {', '.join(known)})")


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Checks that need the registries: the family and the strategy must exist."""
    from envs import family_names
    from relabel_service.strategies import strategy_names

    families = family_names()
    if cfg.env.family not in families:
        raise ConfigError(f"env.family: unknown family {cfg.env.family!r}" + _near(cfg.env.family, families))
    strategies = [*strategy_names(), "hipi_rl"]
    if cfg.relabel.strategy not in strategies:
        raise ConfigError(f"relabel.strategy: unknown strategy {cfg.relabel.strategy!r}" + _near(cfg.relabel.strategy, strategies))
    if cfg.env_steps <= 0:
        raise ConfigError(f"env_steps must be > 0, got {cfg.env_steps}")
    return cfg


def _near(name: str, valid: Sequence[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.4)
    return (f"; did you mean {' or '.join(map(repr, near))}?" if near else "") + f" (known: {', '.join(valid)})"


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults <- the family's SAC defaults <- the YAML file <- the overrides."""
    from learner.sac.config import sac_defaults

    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_path(path)
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    cfg = apply_overrides(from_dict(ExperimentConfig, data), overrides)
    # Family defaults (hidden sizes, learning rates, batch size) fill what is left unset.
    merged = _merge({"learner": {"sac": dict(sac_defaults(cfg.env.family))}}, data)
    cfg = apply_overrides(from_dict(ExperimentConfig, merged), overrides)
    return validate(cfg)


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe_fields(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, docstring) for every leaf field: the hyperparameter table."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = " ".join(str(b.value.value).split())  # type: ignore[union-attr]
    except (OSError, TypeError):
        pass
    rows = []
    default = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe_fields(type(value), key + ".")
        else:
            rows.append((key, repr(value), docs.get(f.name, "")))
    return rows


__all__ = [
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LearnerConfig",
    "RelabelConfig",
    "RolloutConfig",
    "StoreConfig",
    "dump_config",
    "load_config",
]
