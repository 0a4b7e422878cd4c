"""End to end: Hindsight training vs Stable-Baselines3's SAC on the same box, same command.

    hindsight bench e2e [--quick] [--steps N] [--json FILE]

Hindsight: ``hindsight train`` on HalfCheetahMO (``deploy/configs/half_cheetah_mo.yaml``)
at one SAC update per env step (samples per insert = batch size), strategies ``none`` and
``air``, W rollout workers x 1 env (W = 1, and 2 for the scaling figure), a fixed budget of
env steps, learning starting after ``learning_starts`` uniformly random steps, final
evaluation on one episode (``--steps N``: budget N, learning starts min(5000, N/4)). Env steps/s *while learning* are read from the run's
TensorBoard ``perf/learner_updates`` events (wall time, env steps, updates): from the
first event after the first update to the last one (the end of the drain, when the learner
has caught up), so Ray start-up, the random phase and the final evaluation are not counted;
env steps *learned* per second (updates/s at one update per env step; ``_learning_window``).

Stable-Baselines3: ``SAC("MlpPolicy")`` on Gymnasium ``HalfCheetah-v5`` with the same
hidden sizes, batch size, learning starts and budget, ``train_freq=1, gradient_steps=1``
(one update per env step), on the CPU with torch's default threads; env steps/s from the
step at ``learning_starts`` to the end of ``learn``. SB3 comes from the optional extra
(``pip install -e .[bench]``); without it the SB3 fields say so and the ratios are None.

``ratio_vs_sb3_none`` / ``ratio_vs_sb3_air``: Hindsight's env steps/s over SB3's (W = 1).

Each Hindsight run is preceded and followed by its learner alone: fresh networks of the run's
shapes and SAC config before (``isolated_learner_updates_per_s_before``), the run's final
checkpoint (the same networks, batch and optimiser) after (``..._after``), each updated on
random batches of the run's shapes for 15 s, at the run's learner thread count (with
``learner_parallel_branches``, in two branches on two threads, as the learner ran), with
nothing else running, each in a process started for it (as the learner is a process of its
own; ``_in_fresh_process``); ``isolated_learner_updates_per_s`` is their mean, which brackets the
VM's speed during the run (the thread count for the timing before is the one the learner
will pick, ``predicted_learner_threads``; should the learner pick otherwise, the timing
after alone is used and the field before says why);
``learner_in_run_over_isolated`` is the run's learning-window updates/s over that rate
(target 0.9: the pipeline neither starves nor slows its learner); ``isolated_learner_cores``
the cores the learner used alone, and ``learner_cores_in_run_over_isolated`` the learner's
cores in the run's window over that (a ratio of CPU, not moved by the VM's speed between
the run and the timing as the rates are). ``cores_in_window``: the
cores each role's processes used in that window (``benchmarks/cpu_use.py``: learner,
rollout, relabel, store, driver, Ray's own processes, anything else on the machine, and
what was left idle), read from ``/proc`` on Linux (None elsewhere): what the learner shared
the box with.
The HalfCheetahMO family default compiles the learner's update (``learner.sac.compile``): the
learner compiles while the random phase fills the replay (``learner_warm_up_s``); if the
compile outlasts that phase, the wait shows in ``wall_s_including_startup_and_eval`` and the
window starts after it.
``--quick``: 1000 steps with 64x64 networks and batch 64, eager (checks that everything runs).
``--set KEY=VALUE`` (repeatable) adds config overrides to Hindsight's runs, e.g.
``--set learner.sac.compile=false`` for the eager learner.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

FAMILY = "half_cheetah_mo"
SB3_MISSING = "stable-baselines3 is not installed: pip install -e '.[bench]' (an optional extra)"


def _settings(quick: bool, steps: int | None) -> dict[str, Any]:
    if quick:
        return {"budget": steps or 1000, "learning_starts": 500, "hidden": 64, "batch": 64}
    budget = steps or 20_000
    return {"budget": budget, "learning_starts": min(5_000, budget // 4), "hidden": 256, "batch": 256}


def _learning_window(tb_dir: Path, learning_starts: int, env_steps_per_update: float = 1.0) -> dict[str, float] | None:
    """Rates from the first TensorBoard ``perf/learner_updates`` event after learning started
    (updates > 0, at or past ``learning_starts`` env steps) to the last one (the end of the
    drain, when the learner has caught up).

    ``env_steps_per_s`` counts the env steps *learned* per second: updates/s times the env
    steps one update stands for (1 at one update per env step), the quantity SB3's clock
    below measures (its loop does one env step and one update per iteration). The env steps
    *collected* in the window are reported beside it: collection runs up to a round ahead of
    the learner, so at the window's start some of them are already in. None when the run was
    too short for two such events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if "perf/learner_updates" not in acc.Tags().get("scalars", []):
        return None
    events = [e for e in acc.Scalars("perf/learner_updates") if e.step >= learning_starts and e.value > 0]
    if len(events) < 2:
        return None
    first, last = events[0], events[-1]
    seconds = last.wall_time - first.wall_time
    if seconds <= 0 or last.value <= first.value:
        return None
    updates_per_s = (last.value - first.value) / seconds
    return {
        "window_seconds": seconds,
        "window_updates": last.value - first.value,
        "window_collected_env_steps": last.step - first.step,
        "collected_env_steps_per_s": (last.step - first.step) / seconds,
        "updates_per_s": updates_per_s,
        "env_steps_per_s": updates_per_s * env_steps_per_update,
        "window_wall": (first.wall_time, last.wall_time),
    }


def run_hindsight(strategy: str, workers: int, s: dict[str, Any], logdir: str,
                  overrides: Sequence[str] = ()) -> dict[str, Any]:
    from hindsight.config import load_config
    from hindsight.trainer import Trainer

    spi = s["batch"]  # samples per insert = batch size: one update per env step
    cfg = load_config(FAMILY, [
        f"name=e2e-{strategy}-w{workers}", f"logdir={logdir}", f"env_steps={s['budget']}",
        f"relabel.strategy={strategy}", f"rollout.num_workers={workers}", "rollout.envs_per_worker=1",
        f"rollout.random_steps={s['learning_starts']}", f"learner.min_replay={s['learning_starts']}",
        f"learner.samples_per_insert={spi}", f"learner.sac.batch_size={s['batch']}",
        f"learner.sac.hidden_sizes=[{s['hidden']}, {s['hidden']}]", f"learner.replay_capacity={s['budget'] * 2}",
        f"eval.every_steps={s['budget'] * 10}", "eval.episodes=1", "learner.checkpoint_every=1000000000",
        *overrides,
    ])
    from benchmarks.cpu_use import CpuSampler

    # the learner alone before the run too, at the threads and branches it will pick: the
    # VM's speed drifts over minutes, and a timing on each side of the run brackets it
    alone_s = 2.0 if s["hidden"] < 256 else 15.0
    predicted = predicted_learner_threads(cfg)
    before = fresh_learner_rate(cfg, *predicted, seconds=alone_s)
    sampler = CpuSampler().start()
    t0 = time.perf_counter()
    try:
        summary = Trainer(cfg, progress=False).run()
    finally:
        sampler.stop()
    wall = time.perf_counter() - t0
    window = _learning_window(Path(summary["run_dir"]) / "tb", s["learning_starts"], s["batch"] / spi)
    out = {
        "strategy": strategy,
        "rollout_workers": workers,
        "env_steps": summary["env_steps"],
        "updates": summary["updates"],
        "wall_s_including_startup_and_eval": round(wall, 2),
        "learner_device": summary["learner_device"],
        # with learner.sac.compile: the compile, done while the replay filled (learner/actor.py)
        "learner_warm_up_s": round(float(summary.get("learner_warm_up_s") or 0.0), 2),
    }
    threads = int(summary["learner_threads"])  # the learner actor's own count (learner.core.threads_for)
    branches = bool(summary.get("learner_parallel_branches"))
    after = isolated_learner_rate(Path(summary["run_dir"]), threads, seconds=alone_s, branches=branches,
                                  flush=cfg.learner.flush_denormal, bf16=cfg.learner.bf16_matmul)
    out["learner_matmul_precision"] = summary.get("learner_matmul_precision")  # "bf16": learner.bf16_matmul
    if predicted == (threads, branches):  # the mean of the two timings around the run
        isolated, isolated_cores = ((a + b) / 2 for a, b in zip(before, after))
        before_note: Any = round(before[0], 2)
    else:  # the learner picked otherwise (cannot happen unless the two rules part): after only
        isolated, isolated_cores = after
        before_note = f"not used: timed at {predicted[0]} threads (branches {predicted[1]}), the learner ran {threads}"
    out.update({"learner_threads": threads, "learner_parallel_branches": branches,
                "isolated_learner_updates_per_s": round(isolated, 2),
                "isolated_learner_updates_per_s_before": before_note,
                "isolated_learner_updates_per_s_after": round(after[0], 2),
                "isolated_learner_cores": round(isolated_cores, 3)})
    if window is not None:
        wall_t0, wall_t1 = window.pop("window_wall")
        out.update({k: round(v, 3) for k, v in window.items()})
        # where the machine's cores went meanwhile (Linux; None elsewhere or too short)
        out["cores_in_window"] = sampler.cores_by_role(wall_t0, wall_t1) if sampler.available else None
        out["learner_in_run_over_isolated"] = round(window["updates_per_s"] / isolated, 3)
        if out["cores_in_window"] is not None and isolated_cores > 0:
            # the CPU the learner got in the run over what it uses alone: unlike the rates,
            # not moved by the VM's speed between the run and the isolated timing
            out["learner_cores_in_run_over_isolated"] = round(out["cores_in_window"]["learner"] / isolated_cores, 3)
    else:  # a run too short for two log events: the whole run's rate
        out.update({"env_steps_per_s": summary["env_steps_per_s"], "updates_per_s": summary["updates_per_s"],
                    "window": "whole run (too short for the TensorBoard window)"})
    return out


def predicted_learner_threads(cfg: Any) -> tuple[int, bool]:
    """The torch threads and branches the run's learner will pick on this (local) Ray: the
    trainer's CPUs for it (``Trainer._place``, ``learner_cpus``) and the learner's own rule
    (``learner_threads``); the run reports what it picked, and the two are compared."""
    import dataclasses

    import torch

    from hindsight import placement
    from hindsight.config import learner_cpus
    from learner.core import learner_threads

    nodes = placement.cluster_nodes()
    fitted, _ = placement.fit(cfg, 0.0, nodes, local=True)
    num_cpus = learner_cpus(fitted, max(n["CPU"] for n in nodes))
    return learner_threads(dataclasses.replace(fitted.learner, num_cpus=num_cpus), torch.device("cpu"))


def fresh_learner_rate(cfg: Any, threads: int, branches: bool, seconds: float) -> tuple[float, float]:
    """``isolated_learner_rate`` of fresh networks of the run's shapes and SAC config (the
    same work per update as the trained ones), for the timing before the run."""
    import dataclasses

    from envs import get_family

    fam = get_family(cfg.env.family, **cfg.env.family_kwargs)
    sac = dataclasses.replace(cfg.learner.sac, discount=fam.discount)
    return _in_fresh_process(("fresh", (fam.obs_dim, fam.action_dim, fam.task_dim, sac, cfg.seed)),
                             threads, seconds, branches, cfg.learner.flush_denormal, cfg.learner.bf16_matmul)


def isolated_learner_rate(run_dir: Path, threads: int, seconds: float, branches: bool = False,
                          flush: bool = True, bf16: bool = False) -> tuple[float, float]:
    """SAC updates/s of a run's final checkpoint on random batches of its shapes, alone, as the
    run's learner updates (``threads``; ``branches``: the two-thread update, half each), and
    the cores this process used meanwhile (its CPU time over the wall time: the update's
    threads, nothing else of the benchmark runs then)."""
    return _in_fresh_process(("checkpoint", str(run_dir / "checkpoints" / "learner.pt")), threads, seconds,
                             branches, flush, bf16)


def _in_fresh_process(source: tuple[str, Any], threads: int, seconds: float, branches: bool,
                      flush: bool, bf16: bool = False) -> tuple[float, float]:
    """``_time_alone`` of the state ``source`` names, in a Python process started for it (as
    the run's learner is a Ray worker process of its own): ("fresh", (obs_dim, action_dim,
    task_dim, SACConfig, seed)) or ("checkpoint", path). Timed in the benchmark's own
    process, the rate rose along the sequence of runs (190 -> 212 and 203 -> 233 updates/s
    over four runs, 2026-12-04) while the runs' learners did not: a timing there is not the
    learner's speed alone but that process's after everything it has run. A plain
    subprocess, not ``multiprocessing``: spawn would re-run the caller's main script."""
    import pickle
    import subprocess
    import sys

    from learner.core import cpu_bf16_matmul_supported

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-c", "from benchmarks.e2e import _alone_child; _alone_child()"],
        input=pickle.dumps((source, threads, seconds, branches, flush, bf16)), capture_output=True, env=env,
        timeout=seconds + 900,  # a cold compile of the update included
    )
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not out or not out[-1].startswith("RATE "):
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"bench e2e: the learner timing failed (exit {proc.returncode}): "
                           f"{why[-1] if why else 'no output'}")
    rate, cores, precision = out[-1].split()[1:]
    want = "bf16" if bf16 and cpu_bf16_matmul_supported() else "none"
    if precision != want:
        raise RuntimeError(f"bench e2e: the learner was timed with float32 matmul precision {precision!r}, "
                           f"not the run's {want!r} (learner.bf16_matmul)")
    return float(rate), float(cores)


def _alone_child() -> None:
    """``_in_fresh_process``'s child: reads its arguments (pickled) from stdin, builds or
    loads the state and prints ``RATE <updates/s> <cores> <float32 matmul precision>``
    (``_time_alone``)."""
    import pickle
    import sys

    import torch

    from learner.core import set_cpu_bf16_matmul
    from learner.sac.update import init_state, load_state

    (kind, arg), threads, seconds, branches, flush, bf16 = pickle.loads(sys.stdin.buffer.read())
    set_cpu_bf16_matmul(bf16)  # the run's learner.bf16_matmul, as its learner sets it
    state = load_state(arg, "cpu") if kind == "checkpoint" else init_state(*arg[:4], "cpu", arg[4])
    rate, cores = _time_alone(state, threads, seconds, branches, flush)
    print(f"RATE {rate!r} {cores!r} {torch.backends.mkldnn.matmul.fp32_precision}", flush=True)


def _time_alone(state: Any, threads: int, seconds: float, branches: bool, flush: bool = True) -> tuple[float, float]:
    """Updates/s and cores of ``state`` alone, as the learner updates (its threads and
    branches; ``flush``: denormals as zero, ``learner.flush_denormal``)."""
    import torch

    from benchmarks.learner import _batches
    from learner.core import denormals_flushed
    from learner.sac.branches import BranchThread, split_threads
    from learner.sac.update import update

    batches = _batches(4, 0, state.cfg.batch_size, state.obs_dim, state.action_dim, state.task_dim)
    before = torch.get_num_threads()
    own, branch_threads = split_threads(threads) if branches else (threads, 0)
    worker = BranchThread(branch_threads, flush_denormal=flush) if branches else None
    torch.set_num_threads(own)
    try:
        with denormals_flushed(flush):
            n, t0 = 0, time.perf_counter()
            while n < 10 or time.perf_counter() - t0 < 1.0:  # warm-up (the compile's cache hit included)
                update(state, batches[n % 4], with_metrics=False, branches=worker)
                n += 1
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds:
                # metrics as the learner reads them
                update(state, batches[n % 4], with_metrics=n % 100 == 0, branches=worker)
                n += 1
            wall = time.perf_counter() - t0
            return n / wall, (time.process_time() - c0) / wall
    finally:
        torch.set_num_threads(before)
        if worker is not None:
            worker.close()


def run_sb3(s: dict[str, Any], bf16_matmul: bool = False) -> dict[str, Any]:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return {"error": SB3_MISSING}
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Clock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None

        def _on_step(self) -> bool:
            if self.start is None and self.num_timesteps >= s["learning_starts"]:
                self.start = time.perf_counter()
            return True

    env = gym.make("HalfCheetah-v5")
    model = SAC(
        "MlpPolicy", env, policy_kwargs={"net_arch": [s["hidden"], s["hidden"]]}, batch_size=s["batch"],
        learning_starts=s["learning_starts"], buffer_size=s["budget"], train_freq=1, gradient_steps=1,
        device="cpu", seed=0, verbose=0,
    )
    clock = Clock()
    from learner.core import cpu_bf16_matmuls

    with cpu_bf16_matmuls(bf16_matmul) as note:
        model.learn(total_timesteps=s["budget"], callback=clock)
    end = time.perf_counter()
    assert clock.start is not None
    steps = s["budget"] - s["learning_starts"]
    return {
        "version": stable_baselines3.__version__,
        "matmul_precision": "bf16" if bf16_matmul and not note else "none",
        "torch_threads": torch.get_num_threads(),
        "env_steps": s["budget"],
        "seconds": round(end - clock.start, 3),
        "env_steps_per_s": steps / (end - clock.start),
    }


def run(quick: bool = False, steps: int | None = None, strategies: Sequence[str] = ("none", "air"),
        workers: Sequence[int] = (1, 2), overrides: Sequence[str] = ()) -> dict[str, Any]:
    import ray

    from hindsight.config import load_config

    s = _settings(quick, steps)
    if quick:  # a check that everything runs: a cold compile of the learner would be most of it
        overrides = ["learner.sac.compile=false", *overrides]
    for strategy in strategies:  # a typo in --set or --strategies fails here, before any run
        load_config(FAMILY, [f"relabel.strategy={strategy}", *overrides])
    result: dict[str, Any] = {"family": FAMILY, "settings": s, "overrides": list(overrides), "hindsight": {}}
    started = False
    if not ray.is_initialized():  # one local Ray for every run (the trainer reuses it)
        from hindsight.trainer import start_local_ray

        start_local_ray()
        started = True
    try:
        with tempfile.TemporaryDirectory(prefix="hindsight-e2e-") as logdir:
            for w in workers:
                for strategy in strategies:
                    if w > 1 and strategy != strategies[0] and quick:
                        continue  # quick: the scaling run for the first strategy only
                    result["hindsight"][f"{strategy}_w{w}"] = run_hindsight(strategy, w, s, logdir, overrides)
    finally:
        if started:
            ray.shutdown()
    # SB3 with the matmul precision the Hindsight runs' learners use (learner.bf16_matmul)
    result["sb3"] = run_sb3(s, bf16_matmul=load_config(FAMILY, list(overrides)).learner.bf16_matmul)
    sb3 = result["sb3"].get("env_steps_per_s")
    for strategy in strategies:
        ours = result["hindsight"].get(f"{strategy}_w1", {}).get("env_steps_per_s")
        result[f"ratio_vs_sb3_{strategy}"] = round(ours / sb3, 3) if ours and sb3 else None
    first = strategies[0]
    if f"{first}_w1" in result["hindsight"] and f"{first}_w2" in result["hindsight"]:
        one = result["hindsight"][f"{first}_w1"]["env_steps_per_s"]
        two = result["hindsight"][f"{first}_w2"]["env_steps_per_s"]
        result["scaling_w2_over_w1"] = round(two / one, 3)
    result["target_ratio_vs_sb3"] = 1.2
    result["target_learner_in_run_over_isolated"] = 0.9
    return result
