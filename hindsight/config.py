"""The experiment config: one frozen dataclass per part, composed once.

Loaded from ``deploy/configs/*.yaml`` (``--config``), then ``--set a.b=c`` overrides.
``hindsight train --help-config`` prints every field with its docstring.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from hindsight.configtools import ConfigError, RangeError, apply_overrides, check_ranges, field, from_dict, to_dict
from learner.pearl.config import PEARLConfig, ScheduleConfig
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
    num_workers: int = field(2, ge=1)
    """Rollout worker actors at start; the pool replaces any that die."""
    envs_per_worker: int = field(4, ge=1)
    """Envs each worker steps in lockstep with one batched policy forward pass."""
    num_cpus: float = field(0.25, ge=0)
    """Ray CPUs reserved per rollout worker (fractional on small machines)."""
    random_steps: int = field(1000, ge=0)
    """Env steps (over all workers) taken with uniform random actions before the policy."""
    round_timeout_s: float = field(600.0, ge=0)
    """A worker whose round (one episode per env) runs longer is replaced (a hung env);
    0 turns the check off."""
    autoscale: tuple[int, ...] = field((), ge=1)
    """[min, max]: grow the pool (up to max) while the learner waits for data, shrink it
    (down to min) while the rate limiter holds collection back; asks the Ray autoscaler
    for the workers' CPUs (request_resources). Empty: a fixed pool of num_workers."""
    autoscale_every_s: float = field(5.0, gt=0)
    """Seconds between autoscaling decisions (each moves the pool by one worker)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.autoscale:
            lo, hi = (self.autoscale + (0, 0))[:2]
            if len(self.autoscale) != 2 or lo > hi:
                raise RangeError("autoscale", list(self.autoscale), "[min, max] with 1 <= min <= max")
            if not lo <= self.num_workers <= hi:
                raise RangeError("num_workers", self.num_workers, f"the autoscale range [{lo}, {hi}]")


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    num_shards: int = field(2, ge=1)
    """Shard actors; a trajectory goes to crc32(episode_id) % num_shards."""
    fsync: Literal["always", "interval", "never"] = "interval"
    """always: fsync every append before acking; interval: at most every fsync_interval_s
    (an ack then means written to the OS, which survives a process crash but not a power
    loss inside the interval); never: leave it to the OS."""
    fsync_interval_s: float = field(1.0, gt=0)
    """Seconds between fsyncs under the 'interval' policy."""
    segment_bytes: int = field(8 * 1024 * 1024, ge=64)
    """A shard rolls to a new segment file past this size."""
    max_segments: int = field(64, ge=1)
    """Per-shard capacity in segments; the oldest segment is dropped whole beyond it."""
    num_cpus: float = field(0.05, ge=0)
    """Ray CPUs per shard actor."""
    shared_filesystem: bool = False
    """false: each shard is pinned to the node whose disk holds its segments (recorded in
    store/store.json) and restarts only there; true: the store root is on storage every
    node mounts (NFS, a cluster filesystem), so a shard may restart on any node."""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
    strategy: str = "air"
    """none | random | her_final | her_future | air | advantage | max_reward | hipi | hipi_rl."""
    num_workers: int = field(1, ge=1)
    """Relabel worker actors; shards are split among them (worker r reads shards r, r + R,
    ...), so at most ``store.num_shards``."""
    batch_trajectories: int = field(50, ge=1)
    """At most this many new trajectories per shard per relabel call: what a relabel worker
    that has fallen behind takes at once (one that keeps up takes what has arrived). Large
    calls amortise what a call costs whatever its size: AIR with fresh candidates rewards its
    N reference trajectories under all K candidates once per call, so on the point families a
    worker relabels 2.5-2.6x as many trajectories a second at 100 per call as at 32
    (``hindsight bench relabel``: capacity). AIR decides at most K (``num_candidates``)
    trajectories at a time; a larger call is split."""
    reference_refresh: int = field(4, ge=1)
    """Refresh the reference set (store.recent(N)) every this many relabel calls."""
    num_cpus: float = field(0.25, ge=0)
    """Ray CPUs per relabel worker."""
    prefetch: int = field(2, ge=1)
    """Relabel calls kept in flight per worker (bounded prefetch)."""
    max_backlog: int = field(64, ge=0)
    """Collection waits while more than this many stored trajectories await relabeling."""
    strategy_cfg: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)
    """Options of the strategy (K, N, m, temperature, ...)."""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    device: str = "auto"
    """auto (CUDA when Ray gives the learner a GPU), cpu or cuda."""
    num_gpus: float = field(-1.0, ge=-1)
    """GPUs to ask Ray for; -1: one if the cluster has any, else 0."""
    num_cpus: float = field(0.0, ge=0)
    """Ray CPUs for the learner; its torch threads are the whole cores of it (at least 1),
    plus one for a tenth of a core or more beyond them when its update runs in two branches
    (``parallel_branches``; see ``learner.core.threads_for``). 0: what the cluster has left
    after the rollout, relabel, store and eval actors' reservations (``learner_cpus``), so on
    one box the learner uses every idle core."""
    threads: int = field(0, ge=0)
    """Torch threads of the learner; 0: from its Ray CPUs (``num_cpus``). On the 2-core box
    the learner holds 1.35 CPUs beside one rollout worker and gets 2 threads for HalfCheetahMO
    (two branches), 1 for networks under 128 wide."""
    parallel_branches: bool = True
    """With 2 or more threads on the CPU and networks 128 or more wide, run the critic's and
    the actor's branches of each SAC update at once, on half the threads each
    (``learner/sac/branches.py``), instead of splitting every op across all of them. On the
    2-core box, HalfCheetahMO at one update per env step: 142-162 env steps/s learned against
    94-104 on one thread and 117-128 on two intra-op threads. False: intra-op threads only."""
    flush_denormal: bool = True
    """On the CPU, the learner's threads treat denormal floats (below 1.2e-38 in float32) as
    zero while they update (x86 FTZ/DAZ, ``torch.set_flush_denormal``; ``learner.core.
    denormals_flushed``). Adam's second moments of weights whose gradient stays zero (dead
    ReLU units) decay through the denormal range for ~16k updates (0.999 per update), where
    the CPU's float arithmetic is many times slower: after 1,500 updates at lr 3e-3 the
    PointReacher update ran 1.43x as fast flushed, PointTrajectory's 1.29x (``hindsight bench
    learner``, ``denormals``; benchmarks/README.md, the learner). The values lost are below float32's
    normal range. False: IEEE gradual underflow."""
    replay_capacity: int = field(200_000, ge=1)
    """Transitions held in the device-resident replay."""
    min_replay: int = field(1000, ge=0)
    """No updates before the replay holds this many transitions."""
    samples_per_insert: float = field(256.0, gt=0)
    """Target ratio (updates x batch size) / env steps inserted (relabeled copies do not
    count, so every strategy gets the same updates per env step); 256 with batch 256 is
    one update per env step, as in the HIPI code and GH's Table 2 for HalfCheetahMO /
    AntDirection (1000 gradient steps per 1000-step epoch; the GH launcher's default
    ``--ngradsteps 100`` would give 0.1). Family defaults (``UPDATES_PER_ENV_STEP``, times
    the batch size) for the GH point envs, from the GH code: point_trajectory 100 / 75
    = 1.33 updates per env step (100 gradient steps per 75-step collection loop; the paper
    agrees), point_reacher 5 (100 per 20-step loop; the paper's Table 2 says 200 per
    100-step epoch, 2 per env step: ``update_ratio_source=paper``)."""
    update_ratio_source: Literal["code", "paper"] = "code"
    """Which source the family default of ``samples_per_insert`` follows where the GH code
    and paper disagree (point_reacher: code 5, paper 2 updates per env step). A
    ``samples_per_insert`` set in the config file or by ``--set`` always wins."""
    spi_tolerance: float = field(0.25, ge=0, lt=1)
    """Relative slack around the ratio: the learner waits for data above
    spi*(1+tol); collection waits below spi*(1-tol)."""
    max_lag_rounds: float = field(2.0, ge=0)
    """Collection also waits while the learner trails it by more than this many rounds of
    every rollout worker (workers x envs per worker x the family's horizon env steps; the
    pool's current size), so updates track collection during the run and the run ends with
    at most that much to drain; 0: only ``spi_tolerance`` bounds the lag (up to a quarter of
    all updates, owed at the end). The papers' loops alternate one round of collection
    with its updates."""
    updates_per_call: int = field(200, ge=1)
    """Updates per learner call (one Ray round trip; the driver fetches new weights and logs
    the learner's metrics between calls). Each round trip left the update threads idle
    ~5 ms in an e2e run on 2 cores: 2.4% of the learner's time at 50 updates a call, ~0.6%
    at 200 (HalfCheetahMO, 256x256, ~4 ms an update)."""
    publish_every: int = field(50, ge=1)
    """Publish policy weights every this many updates."""
    checkpoint_every: int = field(5000, ge=1)
    """Checkpoint every this many updates (and at the end)."""
    cuda_graph: bool = True
    """On CUDA: capture ``updates_per_launch`` whole updates (device replay sampling, losses,
    backward, fused capturable Adam, Polyak) in one CUDA graph and replay it
    (``learner/sac/graphed.py``); eager updates otherwise, and always on CPU or with
    in-learner relabeling (hipi_rl)."""
    updates_per_launch: int = field(8, ge=1)
    """On CUDA with ``cuda_graph``: SAC updates per graph launch."""
    tf32: bool = False
    """On CUDA: allow TF32 tensor-core matmuls (float32 accumulation, ~10-bit products)."""
    bf16_matmul: bool = False
    """On a CPU with AMX or AVX512-BF16: the learner's float32 matmuls computed with bfloat16
    products and float32 accumulation (oneDNN; ~8-bit products), the CPU's TF32. On the
    Xeon (AMX) development VM a 256x256x256 matmul took 54 us instead of 200 and the SAC
    update (HalfCheetahMO, 256x256, compiled) ran 1.22x as fast on one thread, 1.16x on two
    branches (``hindsight bench learner``, its ``bf16_matmul`` block). Off by default: it
    changes the numerics (as TF32 does), and the papers trained in float32. A CPU without
    native bfloat16 keeps float32 (the run says so)."""
    sac: SACConfig = dataclasses.field(default_factory=SACConfig)
    """Multi-task SAC hyperparameters (family defaults fill what the config leaves unset)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.min_replay > self.replay_capacity:
            raise RangeError("min_replay", self.min_replay, f"[0, replay_capacity={self.replay_capacity}] (never trains)")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    every_steps: int = field(5000, ge=1)
    """Evaluate every this many env steps (and at the end)."""
    episodes: int = field(25, ge=1)
    """Eval episodes. Default: the family's eval set size (``num_eval_tasks``: 25 for GH's
    Cheetah / Ant, 333 and 50 for the GH point envs as their 5000 / 1000 eval steps per
    epoch, 30 for the HIPI families). Fixed reference lists (GH's 25 Cheetah latents, Ant
    headings) are cycled; prior-sample eval sets are extended with more distinct seeded
    samples (``TaskFamily.eval_tasks_for``)."""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """Meta-RL (PEARL + HFR): used when the algorithm resolves to ``pearl``
    (``hindsight/meta_trainer.py``); family defaults from ``learner/pearl/config.py``."""

    algorithm: Literal["auto", "sac", "pearl"] = "auto"
    """auto: PEARL for meta families (fixed train/test task lists), SAC otherwise."""
    pearl: PEARLConfig = dataclasses.field(default_factory=PEARLConfig)
    """PEARL networks, losses and meta-batch."""
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    """Per-iteration collection / training schedule, HFR's N_U and log Z contexts, the coin."""
    temperature: float = field(1.0, gt=0)
    """Softmax temperature of HFR / meta-HIPI on Q values (reference 1, on reward-scaled Q)."""
    eval_every_iterations: int = field(5, ge=1)
    """Meta-test evaluation every this many iterations (and at the end)."""
    checkpoint_every_iterations: int = field(5, ge=1)
    """Checkpoint every this many iterations (and at the end)."""
    task_history: int = field(5, ge=1)
    """HFR / meta-HIPI: each task's newest original trajectories in the store used for its start
    states, log Z contexts and HIPI context (the reference's sampler-side encoder buffer)."""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "default"
    """Run name; the run directory is LOGDIR/NAME-TIMESTAMP."""
    seed: int = field(0, ge=0)
    """Seed of every random generator in the run."""
    env_steps: int = field(20_000, ge=1)
    """Env-step budget of the run."""
    logdir: str = "runs"
    """Where run directories are created."""
    watchdog_s: float = field(60.0, gt=0)
    """Warn (console and TensorBoard ``watchdog/*``) when no data has moved for this long,
    naming where the run is stuck; repeated at most once per period."""
    placement_wait_s: float = field(120.0, ge=0)
    """On a cluster (``--address``) that cannot hold every actor at start: seconds to wait
    for nodes to join (after ``request_resources``) before failing with what was asked
    for and what the cluster has."""
    cpu_priority: Literal["idle", "nice", "normal"] = "idle"
    """CPU priority of every actor but the learner (rollout, relabel, store, eval, control):
    ``idle`` (Linux SCHED_IDLE: they run on the cores the learner's update leaves idle and
    do not preempt it), ``nice`` (nice 19), ``normal`` (as Ray starts them). See
    ``actors/priority.py``; no-op off Linux."""
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    relabel: RelabelConfig = dataclasses.field(default_factory=RelabelConfig)
    learner: LearnerConfig = dataclasses.field(default_factory=LearnerConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    meta: MetaConfig = dataclasses.field(default_factory=MetaConfig)

    def __post_init__(self) -> None:
        check_ranges(self)


def learner_cpus(cfg: "ExperimentConfig", cluster_cpus: float) -> float:
    """The learner's Ray CPUs: ``learner.num_cpus``, or when 0 what ``cluster_cpus`` leaves
    after the other actors' reservations (at least 1; the rollout pool counted at its
    autoscale maximum; growing it further with ``hindsight scale`` on one machine leaves
    the extra workers waiting for CPUs)."""
    if cfg.learner.num_cpus > 0:
        return cfg.learner.num_cpus
    workers = max([cfg.rollout.num_workers, *cfg.rollout.autoscale])  # room for the largest pool
    others = (
        workers * cfg.rollout.num_cpus
        + cfg.relabel.num_workers * cfg.relabel.num_cpus
        + cfg.store.num_shards * cfg.store.num_cpus
        + 0.05  # the eval actor
    )
    return max(1.0, round(cluster_cpus - others, 2))


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
    """Checks across sections (at most ``store.num_shards`` relabel workers) and those that
    need the registries: the family and the strategy must exist,
    ``air_precision="float32"`` needs a family with float32 returns and
    ``air_kernel="compiled"`` one with a compiled kernel."""
    from envs import discrete_alias, family_names
    from relabel_service.strategies import strategy_names

    if cfg.relabel.num_workers > cfg.store.num_shards:
        # relabel worker r reads shards r, r + R, ...: beyond the shards, a worker has none
        raise ConfigError(
            f"relabel.num_workers: {cfg.relabel.num_workers} relabel workers for "
            f"store.num_shards {cfg.store.num_shards}: each worker reads whole shards, so "
            f"{cfg.relabel.num_workers - cfg.store.num_shards} would have none and sit idle; "
            f"raise store.num_shards to {cfg.relabel.num_workers} or more")
    families = family_names()
    if cfg.env.family not in families and discrete_alias(cfg.env.family) is None:  # maze_discrete4 is maze
        raise ConfigError(f"env.family: unknown family {cfg.env.family!r}" + _near(cfg.env.family, families))
    if uses_pearl(cfg):
        from relabel_service.strategies.meta import META_STRATEGIES

        if cfg.relabel.strategy not in META_STRATEGIES:
            raise ConfigError(f"relabel.strategy: {cfg.relabel.strategy!r} is not a meta-RL strategy"
                              + _near(cfg.relabel.strategy, META_STRATEGIES))
        return cfg
    strategies = [*strategy_names(), "hipi_rl"]
    if cfg.relabel.strategy not in strategies:
        raise ConfigError(f"relabel.strategy: unknown strategy {cfg.relabel.strategy!r}" + _near(cfg.relabel.strategy, strategies))
    # options that only some families implement: (field, value, family flag, the families)
    sc = cfg.relabel.strategy_cfg
    needs = [(f"relabel.strategy_cfg.{key}: {value} applies to {where}", flag) for key, value, flag, where in (
        ("air_precision", "float32", "float32_returns", "point_reacher"),
        ("air_kernel", "compiled", "compiled_returns", "point_trajectory and point_reacher"),
    ) if getattr(sc, key) == value]
    if needs:
        from envs import get_family

        try:
            family = get_family(cfg.env.family, **cfg.env.family_kwargs)
        except (KeyError, TypeError, ValueError):
            return cfg  # bad family_kwargs are reported where the run builds the family
        for what, flag in needs:
            if not getattr(family, flag):  # e.g. point_trajectory, or point_reacher with a reward bias
                raise ConfigError(f"{what}, not to env.family {cfg.env.family!r}")
    return cfg


def uses_pearl(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg`` trains PEARL (``meta.algorithm``; auto: the family is a meta family)."""
    if cfg.meta.algorithm != "auto":
        if cfg.meta.algorithm == "pearl":
            from envs import FAMILIES

            if not getattr(FAMILIES.get(cfg.env.family), "meta", False):
                raise ConfigError(f"meta.algorithm: pearl needs a meta family; {cfg.env.family!r} has no task lists")
        return cfg.meta.algorithm == "pearl"
    from envs import FAMILIES

    return bool(getattr(FAMILIES.get(cfg.env.family), "meta", False))  # a discrete alias is not


def _near(name: str, valid: Sequence[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.4)
    return (f"; did you mean {' or '.join(map(repr, near))}?" if near else "") + f" (known: {', '.join(valid)})"


#: Updates per env step of the GH reference code and paper where they are known per family
#: (REFERENCE-CODE §6; GH appendix Table 2); samples_per_insert = this x batch size.
UPDATES_PER_ENV_STEP: dict[str, dict[str, float]] = {
    # launch_gher.py: 100 gradient steps per loop of 75 exploration steps; Table 2: 100 per epoch
    "point_trajectory": {"code": 100 / 75, "paper": 100 / 75},
    # 100 per loop of 20 exploration steps (5 loops per epoch); Table 2: 200 per 100-step epoch
    "point_reacher": {"code": 5.0, "paper": 2.0},
}


def family_run_defaults(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run-level defaults that depend on the family (under the YAML file and overrides):
    ``eval.episodes`` = the family's eval set size (GH: 25 fixed latents for Cheetah / Ant,
    random prior tasks for the point envs; HIPI: 30 fresh tasks) and, for the GH point envs,
    ``learner.samples_per_insert`` from ``UPDATES_PER_ENV_STEP``."""
    from envs import get_family

    out: dict[str, Any] = {}
    try:
        out["eval"] = {"episodes": int(get_family(cfg.env.family, **cfg.env.family_kwargs).num_eval_tasks)}
    except (KeyError, TypeError, ValueError):
        pass  # validate() names an unknown family
    ratio = UPDATES_PER_ENV_STEP.get(cfg.env.family, {}).get(cfg.learner.update_ratio_source)
    if ratio is not None:
        out["learner"] = {"samples_per_insert": ratio * cfg.learner.sac.batch_size}
    return out


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults <- the family's defaults (SAC, eval episodes, samples per insert) <- the YAML
    file <- the overrides."""
    from learner.sac.config import sac_defaults

    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    cfg = apply_overrides(from_dict(ExperimentConfig, data), overrides)
    # Family defaults (hidden sizes, learning rates, batch size) fill what is left unset.
    from learner.pearl.config import pearl_defaults, schedule_defaults

    fam = cfg.env.family
    defaults = {"learner": {"sac": dict(sac_defaults(fam))},
                "meta": {"pearl": pearl_defaults(fam), "schedule": schedule_defaults(fam)}}
    cfg = apply_overrides(from_dict(ExperimentConfig, _merge(defaults, data)), overrides)
    # eval episodes and samples per insert depend on the family and the resolved batch size
    defaults = _merge(defaults, family_run_defaults(cfg))
    cfg = apply_overrides(from_dict(ExperimentConfig, _merge(defaults, data)), overrides)
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
    "MetaConfig",
    "RelabelConfig",
    "RolloutConfig",
    "StoreConfig",
    "dump_config",
    "load_config",
]
