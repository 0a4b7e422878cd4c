"""The ``hindsight`` command line.

    hindsight train [--config NAME] [--set a.b=c ...] [--family F] [--strategy S] ...
    hindsight envs
    hindsight store verify DIR | hindsight store stats DIR
    hindsight scale RUN_DIR N
    hindsight bench NAME [--quick] [--json FILE] [--device cuda] [--steps N]
    hindsight bench relabel [--families F,..] [--strategies S,..] [--per-call M]
    hindsight chaos [--faults a,b] [--nodes 3] [--json FILE]   # fault injection on a local cluster
    hindsight config [--config NAME]          # the hyperparameter table
    hindsight eval --checkpoint RUN_DIR       # PEARL meta-test on held-out tasks
    hindsight experiment FILE.yaml [--out DIR] [--max-cells N] [--set k=v] [--report-only]   # grids, curves
    hindsight fidelity --checkpoint RUN_DIR [--num-tasks 100] [--candidates 100] [--out DIR]
    hindsight collect --checkpoint RUN_DIR --episodes N [--out DIR] [--seed S] [--deterministic]
    hindsight bc --store STORE_DIR [--relabel none|random|hipi] [--no-partition] [--reward-bias B] ...

Errors are one line on stderr (``hindsight --debug ...`` shows the traceback) and the
exit code says what kind: 0 ok; 1 the run failed or corruption was found; 2 usage,
config error or missing path; 130 or 143 stopped by SIGINT or SIGTERM (after a final
checkpoint; the run directory resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from hindsight.configtools import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad arguments or a missing path: one line on stderr, exit 2."""


class RunFailed(Exception):
    """The run started and then failed: one line on stderr, exit 1."""


def _train(args: argparse.Namespace) -> int:
    from hindsight.config import load_config, uses_pearl
    from hindsight.trainer import Trainer

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            raise UsageError(f"--resume {run_dir}: no config.yaml there (not a run directory)")
        cfg = load_config(str(run_dir / "config.yaml"), _overrides(args))
    else:
        run_dir = None
        cfg = load_config(args.config, _overrides(args))
    if uses_pearl(cfg):  # meta families: PEARL (+ HFR) in its own driver
        from hindsight.meta_trainer import MetaTrainer as Trainer  # noqa: F811
    trainer = Trainer(cfg, run_dir=run_dir, resume=bool(args.resume), address=args.address, progress=not args.no_progress)
    try:
        summary = trainer.run()
    except (ConfigError, UsageError, KeyboardInterrupt):
        raise
    except Exception as e:
        resumable = (trainer.run_dir / "config.yaml").exists()
        hint = f"; resume with: hindsight train --resume {trainer.run_dir}" if resumable else ""
        raise RunFailed(f"{_one_line(e)}{hint}") from e
    if summary.get("interrupted"):
        sig = summary["interrupted"]
        saved = "checkpoint written" if summary["checkpointed"] else "no new checkpoint (the previous one stands)"
        print(
            f"{sig}: stopped at {summary['env_steps']} env steps, {saved}; "
            f"resume with: hindsight train --resume {summary['run_dir']}",
            file=sys.stderr,
        )
        return _signal_exit(sig)
    fe = summary["final_eval"]
    if summary.get("algorithm") == "pearl":
        print(
            f"run dir: {summary['run_dir']}\n"
            f"{summary['family']} / PEARL + {summary['strategy']}: {summary['iterations']} iterations, "
            f"{summary['env_steps']} env steps, {summary['updates']} updates in {summary['wall_time_s']:.0f}s\n"
            f"meta-test: last-trajectory return {fe['return_mean']:.3f} over {fe['episodes']} test tasks"
            + (f", success {fe['success_rate']:.2f}" if fe.get("success_rate") is not None else "")
        )
        return 0
    print(
        f"run dir: {summary['run_dir']}\n"
        f"{summary['family']} / {summary['strategy']}: {summary['env_steps']} env steps, {summary['updates']} updates "
        f"in {summary['wall_time_s']:.0f}s ({summary['env_steps_per_s']:.0f} steps/s, {summary['updates_per_s']:.1f} updates/s)\n"
        f"final eval: return {fe['return_mean']:.3f} over {fe['episodes']} episodes"
        + (f", success {fe['success_rate']:.2f}" if fe.get("success_rate") is not None else "")
    )
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set or [])
    if args.family:
        out.insert(0, f"env.family={args.family}")
    if args.strategy:
        out.append(f"relabel.strategy={args.strategy}")
    if args.env_steps is not None:
        out.append(f"env_steps={args.env_steps}")
    if args.seed is not None:
        out.append(f"seed={args.seed}")
    if args.logdir:
        out.append(f"logdir={args.logdir}")
    return out


def _envs(args: argparse.Namespace) -> int:
    from envs import family_table

    rows = family_table()
    header = list(rows[0]._fields)
    widths = [max(len(h), *(len(str(v)) for v in col)) for h, col in zip(header, zip(*rows))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    return 0


def _store(args: argparse.Namespace) -> int:
    from relabel_service.store import tools

    # a missing or non-store path raises tools.StoreNotFoundError (a FileNotFoundError): exit 2
    if args.store_cmd == "verify":
        report = tools.verify(args.dir)
        print(tools.format_verify(report))
        return EXIT_OK if tools.verify_ok(report) else EXIT_FAILED
    stats = tools.stats(args.dir)
    print(tools.format_stats(stats))
    return EXIT_OK if stats["ok"] else EXIT_FAILED  # damage found (or left by a recovery): 1, like verify


def _scale(args: argparse.Namespace) -> int:
    """Through the run's named control actor when a Ray cluster is reachable from here,
    else through RUN_DIR/control.json; prints what the pool did."""
    import time

    from hindsight.control import format_scale, request_scale
    from hindsight.trainer import CONTROL_REPLY, write_control

    if args.workers < 0:
        raise UsageError(f"scale: the number of rollout workers must be >= 0, got {args.workers}")
    import os

    import ray

    run_dir = Path(args.run_dir)
    here = (run_dir / "config.yaml").exists()
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not here and not address and not ray.is_initialized():
        raise UsageError(
            f"scale: {run_dir} is not a run directory (no config.yaml there); "
            "from a machine without it, pass --address auto (or set RAY_ADDRESS)"
        )
    was_connected = ray.is_initialized()
    try:
        reply = request_scale(run_dir, args.workers, timeout_s=args.timeout) if _connect_ray(address) else None
    finally:
        if not was_connected and ray.is_initialized():
            ray.shutdown()
    if reply is not None:
        print(format_scale(reply))
        return EXIT_OK
    if not here:
        raise UsageError(f"scale: no running training named {run_dir.name!r} on the Ray cluster at {address} "
                         f"and no run directory {run_dir} here")
    rid = write_control(run_dir, args.workers)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            answer = json.loads((run_dir / CONTROL_REPLY).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            answer = {}
        if answer.get("id") == rid:
            print(format_scale(answer) + " (through control.json)")
            return EXIT_OK
        time.sleep(0.2)
    print(f"error: no training of {run_dir} answered within {args.timeout:g}s; the request waits in "
          f"{run_dir / 'control.json'} for its next start", file=sys.stderr)
    return EXIT_FAILED


def _connect_ray(address: str | None) -> bool:
    """Join the cluster at ``address`` (None: the one of this machine); False if there is none."""
    import ray

    if ray.is_initialized():
        return True
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.ERROR)  # Ray's connection chatter would break the one-line output
    try:
        ray.init(address=address or "auto", log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError):
        return False
    finally:
        ray_log.setLevel(level)
    return True


def _chaos(args: argparse.Namespace) -> int:
    from hindsight.chaos import FAULTS, format_report, run_chaos, write_report

    faults = args.faults.split(",") if args.faults else list(FAULTS)
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise UsageError(f"--faults: unknown fault(s) {', '.join(unknown)} (known: {', '.join(FAULTS)})")
    if args.nodes < 2:
        raise UsageError(f"--nodes {args.nodes}: a chaos cluster needs a head and at least one worker node (>= 2)")
    report = run_chaos(faults, nodes=args.nodes, steps_between=args.steps_between, out_dir=args.out,
                       timeout_s=args.timeout)
    print(format_report(report))
    if args.json:
        write_report(report, args.json)
    return 0 if report["passed"] else 1


def _bench(args: argparse.Namespace) -> int:
    from benchmarks import run_benchmark

    split = lambda v: [x for x in v.split(",") if x] if v else None  # noqa: E731
    result = run_benchmark(args.name, quick=args.quick, device=args.device, steps=args.steps,
                           families=split(args.families), strategies=split(args.strategies), per_call=args.per_call,
                           overrides=args.overrides)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    from benchmarks import format_targets

    for one in (result.values() if args.name == "all" else [result]):
        lines = format_targets(one)
        if lines:
            print(lines, file=sys.stderr)
    return 0


def _config(args: argparse.Namespace) -> int:
    from hindsight.config import ExperimentConfig, describe_fields, dump_config, load_config
    from hindsight.configtools import field_ranges

    if args.config or args.set:
        print(dump_config(load_config(args.config, args.set or [])))
        return 0
    ranges = field_ranges(ExperimentConfig)
    for key, default, doc in describe_fields():
        allowed = f"  in {ranges[key]}" if key in ranges else ""
        print(f"{key} = {default}{allowed}\n    {doc}")
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    from hindsight.fidelity import run_fidelity

    result = run_fidelity(
        args.checkpoint, num_tasks=args.num_tasks, candidates=args.candidates, seed=args.seed, out_dir=args.out,
        episodes_per_task=args.episodes_per_task, deterministic=args.deterministic,
        reference_size=args.reference_size,
    )
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {result['paths']['json']} and {result['paths']['png']}", file=sys.stderr)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from hindsight.bc import run_collect

    meta = run_collect(args.checkpoint, args.episodes, out_dir=args.out, seed=args.seed,
                       deterministic=args.deterministic)
    print(json.dumps(meta, indent=2))
    return 0


def _bc(args: argparse.Namespace) -> int:
    from hindsight.bc import run_bc
    from learner.bc import BCConfig

    cfg = BCConfig(relabel=args.relabel, partition=not args.no_partition, candidates=args.candidates,
                   num_candidates=args.num_candidates, relabel_batch=args.relabel_batch,
                   temperature=args.temperature, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    s = run_bc(args.store, cfg, out_dir=args.out, reward_bias=args.reward_bias, eval_episodes=args.eval_episodes,
               eval_every=args.eval_every)
    fe = s["final_eval"]
    print(f"{s['variant']}: {s['trajectories']} trajectories, {s['steps']} steps, final loss "
          f"{s['history'][-1]['loss']:.3f}; eval return {fe['return_mean']:.3f} over {s['eval_episodes']} episodes\n"
          f"wrote {s['out_dir']}")
    return 0


def _signal_exit(sig: str) -> int:
    """The shell's exit status for a run stopped by the named signal: 128 + its number."""
    return 128 + int(getattr(signal.Signals, sig, signal.SIGINT))


def _experiment(args: argparse.Namespace) -> int:
    from hindsight.experiment import load_spec, results_dir, run_experiment, write_report

    spec = load_spec(args.file, args.set or ())
    out = results_dir(spec, args.out)
    if args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        result = write_report(spec, out)
    else:
        result = run_experiment(args.file, out=out, max_cells=args.max_cells, address=args.address,
                                progress=not args.no_progress, extra_overrides=args.set or ())
    print(f"{len(result['cells'])} finished cell(s), {len(result['pending'])} pending; wrote {out / 'results.md'}")
    if result.get("interrupted"):
        sig = result["interrupted"]
        print(f"{sig}: the grid stopped; resume with the same command (finished cells are kept)", file=sys.stderr)
        return _signal_exit(sig)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from hindsight.meta_trainer import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.checkpoint, seed=args.seed, num_tasks=args.num_tasks)
    except FileNotFoundError as e:
        raise UsageError(f"eval: {e}") from None
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hindsight", description="Distributed multi-task RL with hindsight relabeling.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train (local Ray by default)")
    t.add_argument("--config", help="a config in deploy/configs (name or path)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.add_argument("--family", help="task family (hindsight envs)")
    t.add_argument("--strategy", help="relabel strategy")
    t.add_argument("--env-steps", type=int, help="env-step budget")
    t.add_argument("--seed", type=int)
    t.add_argument("--logdir", help="where run directories are created")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint and its store")
    t.add_argument("--address", help="join a Ray cluster (auto, ray://host:port) instead of starting local Ray")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    x = sub.add_parser("experiment", help="run a grid of families x strategies x seeds (resumable), learning curves")
    x.add_argument("file", help="experiment file (deploy/experiments/*.yaml)")
    x.add_argument("--out", help="results folder (default: the file's out, else experiments/NAME)")
    x.add_argument("--max-cells", type=int, help="run at most this many unfinished cells, then report")
    x.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key in every cell (repeatable)")
    x.add_argument("--report-only", action="store_true", help="only rewrite results.md / .json / curves")
    x.add_argument("--address", help="join a Ray cluster instead of starting local Ray")
    x.add_argument("--no-progress", action="store_true", help="no progress bars")
    x.set_defaults(func=_experiment)

    e = sub.add_parser("envs", help="list the task families")
    e.set_defaults(func=_envs)

    s = sub.add_parser("store", help="inspect a trajectory store directory")
    ssub = s.add_subparsers(dest="store_cmd", required=True)
    for name, help_ in (
        ("verify", "check every record; exit 1 on corruption or .dropped files left by a recovery"),
        ("stats", "counts per shard and task; lists damage and exits 1 when there is any"),
    ):
        x = ssub.add_parser(name, help=help_)
        x.add_argument("dir")
    s.set_defaults(func=_store)

    sc = sub.add_parser("scale", help="resize the rollout pool of a running training")
    sc.add_argument("run_dir")
    sc.add_argument("workers", type=int)
    sc.add_argument("--address", help="the Ray cluster of the run (default: $RAY_ADDRESS or the local one)")
    sc.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the running training's answer")
    sc.set_defaults(func=_scale)

    ch = sub.add_parser("chaos", help="train on a local multi-node Ray cluster while injecting faults; report recovery")
    ch.add_argument("--faults", help="comma-separated subset (default: all): " + "rollout_worker,store_shard,relabel_worker,"
                    "learner,node,env_raise,env_stall,nan_reward,corrupt_segment")
    ch.add_argument("--nodes", type=int, default=3, help="nodes of the local cluster (a head and N-1 workers)")
    ch.add_argument("--steps-between", type=int, default=300, help="env steps between two faults")
    ch.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each recovery")
    ch.add_argument("--out", metavar="DIR", help="where the run and the fault files go (default: a temp dir)")
    ch.add_argument("--json", metavar="FILE", help="write the report as JSON")
    ch.set_defaults(func=_chaos)

    b = sub.add_parser("bench", help="run a benchmark (rollout, store, learner, relabel, all; e2e, priority)")
    b.add_argument("name")
    b.add_argument("--quick", action="store_true", help="smaller sizes (for CI)")
    b.add_argument("--json", help="write the result to this file")
    b.add_argument("--device", help="learner only: cpu (default) or cuda")
    b.add_argument("--steps", type=int, help="e2e only: env-step budget of each training run")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                   help="e2e only: a config override for Hindsight's runs (repeatable), "
                   "e.g. --set learner.sac.compile=true")
    b.add_argument("--families", help="relabel only: measure just the capacity of these families "
                   "(comma-separated, e.g. point_reacher,point_trajectory)")
    b.add_argument("--strategies", help="relabel and e2e: just these strategies (comma-separated, e.g. air)")
    b.add_argument("--per-call", type=int, help="relabel only: new trajectories per relabel call in the "
                   "capacity figures (default: what one relabel worker of the family's deploy config takes "
                   "per call when behind, relabel.batch_trajectories from each shard it owns)")
    b.set_defaults(func=_bench)

    c = sub.add_parser("config", help="print every config key with its default and meaning")
    c.add_argument("--config")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.set_defaults(func=_config)

    ev = sub.add_parser("eval", help="meta-test a saved PEARL run on its family's held-out test tasks")
    ev.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory of a PEARL run")
    ev.add_argument("--seed", type=int, help="evaluation seed (default: the run's seed)")
    ev.add_argument("--num-tasks", type=int, help="only the first N test tasks")
    ev.set_defaults(func=_eval)

    f = sub.add_parser("fidelity", help="relabel-fidelity study of a trained run (GH Fig. 7)")
    f.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory (or its checkpoints/learner.pt)")
    f.add_argument("--num-tasks", type=int, default=100, help="tasks sampled from the prior")
    f.add_argument("--candidates", type=int, default=100, help="K: candidate tasks per trajectory (K-1 prior + commanded)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--episodes-per-task", type=int, default=1, help="rollouts of each sampled task")
    f.add_argument("--deterministic", action="store_true", help="roll out tanh(mean) instead of the exploration policy")
    f.add_argument("--reference-size", type=int, help="N: AIR compares with the last N rollouts (default: all)")
    f.add_argument("--out", metavar="DIR", help="where fidelity.json / fidelity.png go (default RUN_DIR/fidelity)")
    f.set_defaults(func=_fidelity)

    co = sub.add_parser("collect", help="roll a trained policy out on N prior tasks into a new store (demos)")
    co.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory (or its checkpoints/learner.pt)")
    co.add_argument("--episodes", type=int, required=True, help="N: episodes, one prior task each")
    co.add_argument("--out", metavar="DIR", help="writes DIR/store and DIR/demos.json (default RUN_DIR/demos-N)")
    co.add_argument("--seed", type=int, default=0)
    co.add_argument("--deterministic", action="store_true", help="roll out tanh(mean) instead of sampling")
    co.set_defaults(func=_collect)

    bc = sub.add_parser("bc", help="HIPI-BC: behaviour cloning on a store's trajectories relabeled by inverse RL")
    bc.add_argument("--store", required=True, metavar="STORE_DIR", help="a store directory (task labels are ignored)")
    bc.add_argument("--relabel", choices=("none", "random", "hipi"), default="hipi",
                    help="none: task-agnostic BC; random: prior tasks; hipi: HIPI Eq. 7")
    bc.add_argument("--no-partition", action="store_true", help="hipi without log Z (HIPI Fig. 8 ablation)")
    bc.add_argument("--candidates", choices=("prior", "eval"), default="prior",
                    help="hipi's tasks: fresh prior samples per batch, or the family's fixed eval list")
    bc.add_argument("--num-candidates", type=int, default=100, help="K prior samples per relabel batch")
    bc.add_argument("--relabel-batch", type=int, default=1000, help="trajectories sharing candidates and log Z")
    bc.add_argument("--temperature", type=float, default=1.0)
    bc.add_argument("--reward-bias", type=float, default=0.0,
                    help="add B to the first eval task's reward in the relabeling only (HIPI Fig. 8)")
    bc.add_argument("--epochs", type=int, default=30)
    bc.add_argument("--batch-size", type=int, default=256)
    bc.add_argument("--eval-episodes", type=int, default=25, help="as a training run's eval.episodes")
    bc.add_argument("--eval-every", type=int, default=0, help="also evaluate every N epochs (0: at the end only)")
    bc.add_argument("--seed", type=int, default=0)
    bc.add_argument("--out", metavar="DIR", help="default: beside the store, bc-<variant>-s<seed>")
    bc.set_defaults(func=_bc)
    return p


def _one_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and a distinct exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as e:
        if args.debug:
            raise
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, FileNotFoundError, NotADirectoryError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        if args.debug:
            raise
        print(f"run failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyError as e:  # unknown family / strategy: the message names it
        from envs.core import UnknownFamilyError

        if args.debug:
            raise
        if isinstance(e, UnknownFamilyError) or "strategy" in str(e):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"error: {_one_line(e)} (hindsight --debug shows the traceback)", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:
        if args.debug:
            raise
        print(f"error: {_one_line(e)} (hindsight --debug shows the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
