"""Relabeling throughput: AIR fast paths vs the naive per-(trajectory, task) form, same run.

    from benchmarks.relabel import run; print(run(quick=True))

Headline: AIR at the GH paper settings (N = 500 reference trajectories, K = 100 candidate
tasks, T = 1000 steps, m = 1) on ``half_cheetah_mo`` (linear, d = 4). Only the reward path
matters, so trajectories are synthesised with random obs / actions / reward_inputs of the
family's widths instead of being simulated.

* fast, cold: ``STRATEGIES["air"]`` (no cache) on a request of M new trajectories whose
  reference set (N, including the new ones) is evaluated from scratch in the call: the
  discounted feature sums of all N trajectories, then one [N, D] x [D, K] matmul.
* fast, steady state: the strategy from ``make_strategy("air")`` as a relabel worker
  holds it (linear families: the feature-sum cache), on a sliding window where each
  request brings M unseen trajectories and the reference is the N most recent; timed
  with ``to_transitions``. Rate = M / seconds per request.
* naive: per new trajectory, the N x K returns by ``discounted_returns_naive`` (one
  ``rewards_for`` call and one discounted sum per (trajectory, task) pair, as the GH code's
  ``calculate_path_reward`` loop), then the percentile and selection. Too slow to run
  whole: timed on ``naive_pairs`` pairs and extrapolated linearly to the N x K pairs of
  one trajectory (the percentile/selection part is timed whole); reported as such.

Also: AIR on a non-linear family (``point_reacher``, the GH settings N = 500, K = 100,
T = 20), with fresh candidates per request (GH) and with the shared candidate pool
(``air_candidates="pool"``, ``strategies/pool.py``), and the rate of every other strategy
on a family it applies to (HER on ``reacher_goal``), each with and without
``to_transitions``.

``capacity``: each strategy's rate (one relabel worker, ``per_call`` new trajectories per
call, by default what a relabel worker of the family's deploy config takes per call when it
is behind: ``relabel.batch_trajectories`` from each of the shards it owns; transitions
included; AIR in steady state at
N = 500, K = 100, fresh candidates and pool, on point_reacher both again with
``air_precision="float32"``, and on both point families with ``air_kernel="compiled"``, on
point_reacher also both together) over what the rollout workers of the family's
deploy config produce (one worker with the policy in the loop, times the number of
workers; timed in turn with the strategies, each strategy's timed call right after an
untimed one of its own as in a worker that runs it back to back, the ratio a median over
rounds), for
HalfCheetahMO, Reacher-goal, PointReacher and PointTrajectory; with each ratio the
relabel workers that reach the target 5 (``relabel_workers_for_target``, each on a core
of its own as the rollout workers are counted: ``relabel.num_workers``, and
``store.num_shards`` at least as many). ``run(families=[...], strategies=[...])`` measures only that
(``hindsight bench relabel --families point_reacher --strategies air``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

from actors.policy import blas_threads, retain_freed_memory
from envs import get_family
from envs.core import TaskFamily
from relabel_service.core import RelabelRequest, Trajectory
from relabel_service.strategies import STRATEGIES, make_strategy, to_transitions
from relabel_service.strategies import kernels
from relabel_service.strategies.config import StrategyConfig

AIR_FAMILY = "half_cheetah_mo"
NONLINEAR_FAMILY = "point_reacher"
GOAL_FAMILY = "reacher_goal"

#: the families whose capacity is reported (each has a deploy config of its name); the
#: point families, with short episodes and a non-linear reward, are where it is tightest
CAPACITY_FAMILIES = (AIR_FAMILY, GOAL_FAMILY, NONLINEAR_FAMILY, "point_trajectory")
#: new trajectories per relabel call in the capacity figures (unless ``per_call`` says):
#: what one relabel worker of the family's deploy config takes per call once trajectories
#: arrive faster than it relabels them, ``relabel.batch_trajectories`` from each of the
#: shards it owns (``capacity_per_call``)
CAPACITY_PER_CALL = None
#: relabel capacity over production that the capacity figures are held to
TARGET_RATIO = 5.0


def synth_trajectories(
    family: TaskFamily, n: int, length: int, rng: np.random.Generator, prefix: str = "b", bounded: bool = False
) -> list[Trajectory]:
    """n trajectories of ``length`` steps with random contents of the family's widths:
    observations standard normal, or with ``bounded`` uniform within the bounds of the
    family's observation space where they are finite (a point env's positions never leave
    [-1, 1]^2: the relabel capacity measures returns on what its rollout workers store)."""
    tasks = family.sample_tasks(rng, n)
    low = high = None
    if bounded:
        space = family.make_env(tasks[0], seed=0).observation_space
        low, high = np.broadcast_to(space.low, (family.obs_dim,)), np.broadcast_to(space.high, (family.obs_dim,))
        finite = np.isfinite(low) & np.isfinite(high)
    out = []
    for i in range(n):
        obs = rng.normal(size=(length + 1, family.obs_dim))
        if low is not None and finite.any():
            obs[:, finite] = rng.uniform(low[finite], high[finite], size=(length + 1, int(finite.sum())))
        actions = rng.uniform(-1.0, 1.0, size=(length, family.action_dim))
        inputs = rng.normal(size=(length, family.reward_input_dim))
        traj = Trajectory(
            episode_id=f"{prefix}-{i}",
            worker_id=0,
            policy_version=0,
            family=family.name,
            task=tasks[i],
            obs=obs,
            actions=actions,
            rewards=np.zeros(length),
            terminated=np.zeros(length, dtype=bool),
            truncated=True,
            reward_inputs=inputs,
            created_at=0.0,
        )
        rewards = family.rewards_for(traj.steps(), np.repeat(tasks[i][None], length, 0))
        out.append(_with_rewards(traj, rewards))
    return out


def _with_rewards(traj: Trajectory, rewards: np.ndarray) -> Trajectory:
    return dataclasses.replace(traj, rewards=np.asarray(rewards, dtype=np.float64))


def _median_seconds(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _linear_value_fn(family: TaskFamily) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A cheap stand-in for V(s0, z) (the critic is not what is measured here)."""
    c = np.linspace(-1.0, 1.0, family.task_dim)
    return lambda obs0, tasks: tasks @ c + obs0[:, :1]


def _naive_air_seconds_per_trajectory(
    family: TaskFamily,
    new: Trajectory,
    reference: Sequence[Trajectory],
    candidates: np.ndarray,
    discount: float,
    naive_pairs: int,
) -> dict[str, float]:
    """Seconds the naive form needs for one new trajectory (extrapolated, see module doc)."""
    N, K = len(reference), len(candidates)
    n_traj = max(1, naive_pairs // K)
    n_task = min(K, naive_pairs)
    subset, sub_tasks = list(reference[:n_traj]), candidates[:n_task]
    t0 = time.perf_counter()
    kernels.discounted_returns_naive(family, subset, sub_tasks, discount)
    per_pair = (time.perf_counter() - t0) / (len(subset) * len(sub_tasks))
    # percentile + argmax for one trajectory from a full (here: random) N x K matrix, in loops
    R_ref = np.random.default_rng(0).normal(size=(N, K))
    R_new = R_ref[0]
    t0 = time.perf_counter()
    pct = [sum(R_new[k] >= R_ref[i, k] for i in range(N)) / N for k in range(K)]
    max(range(K), key=lambda k: (pct[k], R_new[k]))
    select_s = time.perf_counter() - t0
    return {
        "pairs_timed": float(len(subset) * len(sub_tasks)),
        "seconds_per_pair": per_pair,
        "select_seconds": select_s,
        "seconds_per_trajectory": per_pair * N * K + select_s,
    }


def _air_block(
    family_name: str, N: int, K: int, T: int, batch_sizes: Sequence[int], reps: int, naive_pairs: int,
    candidates: str = "fresh",
) -> dict[str, Any]:
    family = get_family(family_name)
    rng = np.random.default_rng(0)
    # the pool's rolling refresh makes every request after the first cost the same
    steady_reps = reps
    stream = synth_trajectories(family, N + (steady_reps + 1) * max(batch_sizes), T, rng, prefix=family_name)
    reference = stream[:N]
    cfg = StrategyConfig(num_candidates=K, air_candidates=candidates)
    out: dict[str, Any] = {
        "family": family_name, "linear": family.linear, "N": N, "K": K, "T": T, "air_candidates": candidates,
    }
    for M in batch_sizes:
        # cold: no cache, every reference trajectory's returns computed inside the call
        new = reference[:M]  # the reference set includes the new trajectories (GH Alg. 2)
        request = RelabelRequest(family, new, discount=family.discount, reference=reference)
        # (a fresh make_strategy per call: an empty pool / cache, as on a worker's first call)
        cold = _median_seconds(lambda: make_strategy("air", dataclasses.replace(cfg, feature_cache_size=0))(
            request, np.random.default_rng(1)), reps)
        cold_full = _median_seconds(
            lambda: to_transitions(family, new, make_strategy("air", dataclasses.replace(cfg, feature_cache_size=0))(
                request, np.random.default_rng(1))),
            reps,
        )
        # steady state of a relabel worker: the strategy from make_strategy (feature-sum
        # cache on linear families) on a sliding window; each request brings M unseen
        # trajectories and the reference is the N most recent, the new ones included
        strategy = make_strategy("air", cfg)
        strategy(RelabelRequest(family, reference[:M], discount=family.discount, reference=reference),
                 np.random.default_rng(0))
        times = []
        for r in range(steady_reps):
            hi = N + (r + 1) * M
            new_r, ref_r = stream[hi - M : hi], stream[hi - N : hi]
            req = RelabelRequest(family, new_r, discount=family.discount, reference=ref_r)
            t0 = time.perf_counter()
            to_transitions(family, new_r, strategy(req, np.random.default_rng(r)))
            times.append(time.perf_counter() - t0)
        warm = statistics.median(times)
        out[f"M={M}"] = {
            "cold_seconds_per_request": round(cold, 5),
            "cold_trajectories_per_s": round(M / cold, 2),
            "cold_trajectories_per_s_with_transitions": round(M / cold_full, 2),
            "steady_seconds_per_request_with_transitions": round(warm, 5),
            "steady_trajectories_per_s_with_transitions": round(M / warm, 2),
        }
    candidates = family.sample_tasks(np.random.default_rng(2), K)
    naive = _naive_air_seconds_per_trajectory(
        family, reference[0], reference, candidates, family.discount, naive_pairs
    )
    out["naive"] = {
        "method": "discounted_returns_naive per (trajectory, task) pair, timed on "
        f"{int(naive['pairs_timed'])} of the {N * K} pairs and extrapolated",
        "seconds_per_pair": naive["seconds_per_pair"],
        "seconds_per_trajectory": round(naive["seconds_per_trajectory"], 3),
        "trajectories_per_s": round(1.0 / naive["seconds_per_trajectory"], 4),
    }
    for M in batch_sizes:
        row = out[f"M={M}"]
        row["cold_speedup_vs_naive"] = round(row["cold_trajectories_per_s"] * naive["seconds_per_trajectory"], 1)
        row["steady_speedup_vs_naive"] = round(
            row["steady_trajectories_per_s_with_transitions"] * naive["seconds_per_trajectory"], 1
        )
    return out


def _strategy_rates(names: Sequence[str], M: int, reps: int, quick: bool) -> dict[str, Any]:
    rates: dict[str, Any] = {}
    for name in names:
        if name == "air":
            continue  # measured above
        family_name = GOAL_FAMILY if name.startswith("her") else AIR_FAMILY
        family = get_family(family_name)
        T = family.horizon if not quick else min(family.horizon, 200)
        new = synth_trajectories(family, M, T, np.random.default_rng(3), prefix=name)
        request = RelabelRequest(family, new, discount=family.discount, value_fn=_linear_value_fn(family))
        strategy = make_strategy(name, StrategyConfig())
        decide = _median_seconds(lambda: strategy(request, np.random.default_rng(1)), reps)
        full = _median_seconds(
            lambda: to_transitions(family, new, strategy(request, np.random.default_rng(1))), reps
        )
        rates[name] = {
            "family": family_name,
            "M": M,
            "T": T,
            "trajectories_per_s": round(M / decide, 1),
            "trajectories_per_s_with_transitions": round(M / full, 1),
        }
    return rates


def run(
    quick: bool = False,
    strategies: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    per_call: int | None = CAPACITY_PER_CALL,
) -> dict[str, Any]:
    """The whole benchmark; with ``families`` only the capacity of those families (and of
    ``strategies`` when given), at ``per_call`` new trajectories per relabel call."""
    names = list(strategies) if strategies is not None else sorted(STRATEGIES)
    reps = 2 if quick else 7
    if families is not None:
        return {"capacity": _capacity(families, names, per_call, reps, quick)}
    result: dict[str, Any] = {}
    # --quick checks the plumbing at a fraction of the paper sizes (N = 500, K = 100)
    N, Kc, T_lin = (100, 20, 200) if quick else (500, 100, 1000)
    if "air" in names:
        result["air_linear"] = _air_block(
            AIR_FAMILY, N=N, K=Kc, T=T_lin, batch_sizes=(1, 16), reps=reps,
            naive_pairs=200 if quick else 1000,
        )
        result["air_nonlinear"] = _air_block(
            NONLINEAR_FAMILY, N=N, K=Kc, T=20, batch_sizes=(1, 16), reps=reps,
            naive_pairs=500 if quick else 5000,
        )
        # the shared candidate pool (StrategyConfig.air_candidates="pool")
        result["air_nonlinear_pool"] = _air_block(
            NONLINEAR_FAMILY, N=N, K=Kc, T=20, batch_sizes=(1, 16), reps=reps,
            naive_pairs=500 if quick else 5000, candidates="pool",
        )
        result["air_linear_pool"] = _air_block(
            AIR_FAMILY, N=N, K=Kc, T=T_lin, batch_sizes=(1, 16), reps=reps,
            naive_pairs=200 if quick else 1000, candidates="pool",
        )
        # headline: one new HalfCheetah trajectory per request (the GH cheetah setting),
        # a relabel worker in steady state, transitions included
        result["ratio"] = result["air_linear"]["M=1"]["steady_speedup_vs_naive"]
        result["ratio_cold_M1"] = result["air_linear"]["M=1"]["cold_speedup_vs_naive"]
        result["ratio_cold_M16"] = result["air_linear"]["M=16"]["cold_speedup_vs_naive"]
        result["target_ratio"] = 200.0
        speedups = {
            f"{block}/M={M}/{kind}": result[block][f"M={M}"][f"{kind}_speedup_vs_naive"]
            for block in ("air_linear", "air_nonlinear", "air_nonlinear_pool", "air_linear_pool")
            for M in (1, 16) for kind in ("steady", "cold")
        }
        result["speedups"] = speedups
        # the cases with a target (issue 9): M = 16 cold and steady everywhere, and one
        # trajectory per request in steady state (the linear family; the non-linear one with
        # the pool). M = 1 cold is the first request of a worker and has no target.
        required = [k for k in speedups if "/M=16/" in k] + [
            "air_linear/M=1/steady", "air_linear_pool/M=1/steady", "air_nonlinear_pool/M=1/steady"]
        result["required_cases"] = required
        result["min_speedup_required_cases"] = min(speedups[k] for k in required)
    result["strategies"] = _strategy_rates(names, M=16, reps=reps, quick=quick)
    if strategies is None or "hipi_rl" in strategies:
        result["strategies"]["hipi_rl"] = _hipi_rl_rates(reps=3 if quick else 5, quick=quick)
    result["capacity"] = _capacity(CAPACITY_FAMILIES, names, per_call, reps, quick)
    return result


def capacity_per_call(family_name: str) -> int:
    """New trajectories one relabel worker of the family's deploy config takes per call when
    it is behind: ``relabel.batch_trajectories`` from each shard it owns (worker r of R owns
    shards r, r + R, ...; the first owns the most)."""
    from hindsight.config import load_config

    cfg = load_config(family_name)
    return cfg.relabel.batch_trajectories * math.ceil(cfg.store.num_shards / cfg.relabel.num_workers)


def _rollout_worker(family_name: str) -> tuple[Callable[[], tuple[int, float]], dict[str, Any]]:
    """One rollout worker of the family's deploy config (its envs, the policy in the loop):
    a callable that collects for at least 100 ms (whole rounds) -> (trajectories, seconds),
    and the config's settings."""
    from actors.policy import blas_threads
    from actors.rollout import RolloutWorker
    from hindsight.config import load_config

    cfg = load_config(family_name)
    W, E = cfg.rollout.num_workers, cfg.rollout.envs_per_worker
    worker = RolloutWorker(worker_id=0, family=family_name, num_envs=E, net_cfg=cfg.learner.sac, seed=0)
    with blas_threads(1):  # as in a Ray worker with one CPU
        worker.collect_episodes()  # warm-up

    def collect() -> tuple[int, float]:
        with blas_threads(1):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.1:
                n += len(worker.collect_episodes()[0])
            return n, time.perf_counter() - t0

    return collect, {"config": family_name, "workers": W, "envs_per_worker": E}


def _applies(name: str, family: TaskFamily) -> bool:
    """Strategies a relabel worker runs on the family (hipi_rl relabels in the learner)."""
    if name == "hipi_rl":
        return False
    return family.goal_dim > 0 if name.startswith("her") else True


def critic_value_fn(family_name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """V(s0, z) as a relabel worker evaluates it once the learner's weights arrive: the
    numpy actor and twin critic (``actors.policy.NumpyValueFunction``) at the network sizes
    of the family's deploy config, from a freshly initialised learner state (the weights'
    values do not change the cost)."""
    from actors.policy import NumpyValueFnFactory
    from hindsight.config import load_config
    from learner.sac.update import init_state, value_weights

    family = get_family(family_name)
    sac = load_config(family_name).learner.sac
    dims = (family.obs_dim, family.action_dim, family.task_dim)
    return NumpyValueFnFactory(sac, *dims)(value_weights(init_state(*dims, sac, "cpu", seed=0)))


def _steady_air_call(family: TaskFamily, cfg: StrategyConfig, M: int, N: int, T: int,
                     calls: int, value_fn: Callable | None = None) -> Callable[[], tuple[int, float]]:
    """AIR as a relabel worker holds it (transitions included), on a sliding window: each
    call brings M unseen trajectories and the reference set is the N most recent (the new
    ones included). The strategy has seen one request before the first timed call.
    ``value_fn``: V(s0, z) for the ties (default: a cheap linear stand-in)."""
    value_fn = value_fn or _linear_value_fn(family)
    stream = synth_trajectories(family, N + (calls + 1) * M, T, np.random.default_rng(5), prefix="cap", bounded=True)
    strategy = make_strategy("air", cfg)
    strategy(RelabelRequest(family, stream[N - M : N], discount=family.discount, reference=stream[:N]),
             np.random.default_rng(0))
    count = iter(range(calls))

    def call() -> tuple[int, float]:
        r = next(count)
        hi = N + (r + 1) * M
        new, ref = stream[hi - M : hi], stream[hi - N : hi]
        request = RelabelRequest(family, new, discount=family.discount, reference=ref, value_fn=value_fn)
        with blas_threads(1):  # as in a relabel worker with one CPU
            t0 = time.perf_counter()
            to_transitions(family, new, strategy(request, np.random.default_rng(r)))
            return M, time.perf_counter() - t0

    return call


def _strategy_call(name: str, family: TaskFamily, M: int, T: int,
                   value_fn: Callable | None = None) -> Callable[[], tuple[int, float]]:
    new = synth_trajectories(family, M, T, np.random.default_rng(3), prefix=name, bounded=True)
    request = RelabelRequest(family, new, discount=family.discount, value_fn=value_fn or _linear_value_fn(family))
    strategy = make_strategy(name, StrategyConfig())
    to_transitions(family, new, strategy(request, np.random.default_rng(0)))  # warm-up

    def call() -> tuple[int, float]:
        with blas_threads(1):
            t0 = time.perf_counter()
            to_transitions(family, new, strategy(request, np.random.default_rng(1)))
            return M, time.perf_counter() - t0

    return call


def _capacity(
    families: Sequence[str], names: Sequence[str], per_call: int | None, reps: int, quick: bool
) -> dict[str, Any]:
    """Relabel capacity: one relabel worker's rate (trajectories/s, transitions included,
    ``per_call`` new trajectories per call, by default the family's ``capacity_per_call``;
    hipi: its fixed batch of ``hipi_batch``) over
    what the rollout workers of the family's deploy config produce, per family and
    strategy (target >= 5). AIR at the paper's N = 500, K = 100 in steady state, with fresh
    candidates (the default) and with the pool, each also with ``air_precision="float32"``
    and with ``air_kernel="compiled"`` on a family that has it, and both together where both
    apply (rows ``air (fresh, float32)``, ``air (pool, compiled)``, ``air (pool, compiled,
    float32)``, ...). The machine is shared, so the rollout
    worker and every strategy are timed in turn, ``reps`` rounds, and each ratio is the
    median over rounds of (relabel rate / rollout rate of the same round). Each strategy's
    timed call follows an untimed call of its own (a relabel worker runs one strategy back
    to back; right after another strategy's call its caches hold that one's data: measured
    on PointTrajectory at 100 per call, advantage 20.7k trajectories/s that way against
    26.6k after its own call)."""
    N = 100 if quick else 500
    reps = max(reps, 3 if quick else 21)
    default = StrategyConfig()
    retain_freed_memory()  # as a relabel worker does in its process (RelabelWorker)
    rows: dict[str, dict[str, Any]] = {}
    production: dict[str, Any] = {}
    for family_name in families:
        family = get_family(family_name)
        T = min(family.horizon, 200) if quick else family.horizon
        collect, settings = _rollout_worker(family_name)
        W = settings["workers"]
        M = per_call if per_call is not None else capacity_per_call(family_name)
        settings["trajectories_per_call"] = M
        value_fn = critic_value_fn(family_name)  # AIR's tie-break and advantage's baseline
        calls: dict[str, Callable[[], tuple[int, float]]] = {}
        for name in names:
            if not _applies(name, family):
                continue
            if name == "air":
                for candidates in ("fresh", "pool"):
                    cfg = StrategyConfig(reference_size=N, air_candidates=candidates)
                    calls[f"air ({candidates})"] = _steady_air_call(family, cfg, M, N, T, 2 * reps, value_fn)
                    if family.float32_returns:  # the opt-in air_precision="float32" beside it
                        f32 = dataclasses.replace(cfg, air_precision="float32")
                        calls[f"air ({candidates}, float32)"] = _steady_air_call(family, f32, M, N, T, 2 * reps, value_fn)
                    if family.compiled_returns:  # and the opt-in air_kernel="compiled"
                        compiled = dataclasses.replace(cfg, air_kernel="compiled")
                        calls[f"air ({candidates}, compiled)"] = _steady_air_call(family, compiled, M, N, T, 2 * reps, value_fn)
                        if family.float32_returns:  # both: the kernel in float32
                            both = dataclasses.replace(compiled, air_precision="float32")
                            calls[f"air ({candidates}, compiled, float32)"] = _steady_air_call(
                                family, both, M, N, T, 2 * reps, value_fn)
            else:
                calls[name] = _strategy_call(name, family, default.hipi_batch if name == "hipi" else M, T, value_fn)
        made: list[float] = []
        rates: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(reps):
            n, sec = collect()
            made.append(W * n / sec)
            for label, call in calls.items():
                call()  # a relabel worker runs its strategy back to back: the timed call
                n, sec = call()  # follows one of its own, not another strategy's
                rates[label].append(n / sec)
        production[family_name] = {**settings, "rounds": reps,
                                   "trajectories_per_s": round(statistics.median(made), 2)}
        rows[family_name] = {}
        for label, r in rates.items():
            # three significant digits, and the sizing from that same reported value, so the
            # JSON is consistent with itself (two decimals lost a sixth of a worker at 0.29)
            ratio = float(f"{statistics.median([a / b for a, b in zip(r, made)]):.3g}")
            rows[family_name][label] = {
                "relabel_trajectories_per_s": round(statistics.median(r), 1), "ratio": ratio,
                # sizing: relabel workers (each on its own core, as the rollout workers are
                # counted; each reads its own shards) that give the target over this production
                "relabel_workers_for_target": max(1, math.ceil(TARGET_RATIO / ratio)) if ratio > 0 else None,
            }
    ratios = [r["ratio"] for fam in rows.values() for r in fam.values()]
    return {
        "trajectories_per_call": per_call if per_call is not None else {
            f: v["trajectories_per_call"] for f, v in production.items()},
        "hipi_batch": default.hipi_batch, "reference_size": N,
        "num_candidates": default.num_candidates, "production": production, "strategies": rows,
        "min_ratio": min(ratios, default=None),
        "min_ratio_by_family": {f: min((r["ratio"] for r in v.values()), default=None) for f, v in rows.items()},
        "target_ratio": TARGET_RATIO,
    }


def _hipi_rl_rates(reps: int, quick: bool) -> dict[str, Any]:
    """HIPI-RL in the learner: transitions relabeled per second on walker_linear at the HIPI
    settings (256x256 nets, batch 32 as in the HIPI README, and the default 256), one
    thread, against the SAC update of the same batch in the same run."""
    import torch

    from learner.core import Batch
    from learner.sac.config import sac_config_for
    from learner.sac.hipi_rl import hipi_rl_relabel
    from learner.sac.update import init_state, update

    torch.set_num_threads(1)
    family = get_family("walker_linear")
    out: dict[str, Any] = {"family": family.name}
    for B in (32,) if quick else (32, 256):
        cfg = sac_config_for(family)
        state = init_state(family.obs_dim, family.action_dim, family.task_dim, cfg, "cpu", seed=0)
        g = torch.Generator().manual_seed(0)
        rng = np.random.default_rng(0)

        def f32(*shape: int) -> torch.Tensor:
            return torch.as_tensor(rng.normal(size=shape), dtype=torch.float32)

        batch = Batch(
            f32(B, family.obs_dim), torch.rand(B, family.action_dim) * 2 - 1, f32(B), f32(B, family.obs_dim),
            torch.zeros(B, dtype=torch.bool), torch.as_tensor(family.sample_tasks(rng, B), dtype=torch.float32),
            f32(B, family.reward_input_dim),
        )
        relabel = _median_seconds(lambda: hipi_rl_relabel(family, state, batch, g), reps)
        sac = _median_seconds(lambda: update(state, batch, with_metrics=False), reps)
        out[f"B={B}"] = {
            "transitions_per_s": round(B / relabel, 1),
            "relabel_ms": round(1e3 * relabel, 2),
            "sac_update_ms": round(1e3 * sac, 2),
            "relabel_over_update": round(relabel / sac, 2),
        }
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
