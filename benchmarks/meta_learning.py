"""Meta-RL learning comparison: PEARL + HFR against PEARL + none (or any meta strategies) on
the same families, the same env-step budget and the same seeds.

    python -m benchmarks.meta_learning --families four_corners cheetah_vel_sparse \
        --strategies hfr none --seeds 0 1 --iterations 40 --eval-every 5 \
        --logdir runs/meta_learning --json meta_learning.json

Each (family, strategy, seed) is one ``hindsight train --config FAMILY`` run on local Ray,
one after another, with the family's reference schedule (learner/pearl/config.py) cut to
``--iterations`` iterations and ``--env-steps`` env steps, whichever ends first: every
strategy gets the same collection schedule, so equal iterations mean equal env steps
(relabeling never adds env steps). Reported per evaluation: the meta-test return of the
last trajectory on the held-out tasks (prior, exploration trajectories, then the
posterior) and the success rate where the family defines one; a table of the final
values per strategy (mean and per seed) and one PNG of the curves per family.

The reference runs are 300 iterations (Four-Corners, ~3M env steps) and 160 iterations
(Cheetah-Vel-Sparse, ~1M env steps); say so when quoting a shorter run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def run(
    families: Sequence[str] = ("four_corners", "cheetah_vel_sparse"),
    strategies: Sequence[str] = ("hfr", "none"),
    seeds: Sequence[int] = (0, 1),
    iterations: int = 40,
    env_steps: int = 100_000_000,
    eval_every: int = 5,
    logdir: str = "runs/meta_learning",
    overrides: Sequence[str] = (),
    quick: bool = False,
) -> dict[str, Any]:
    from hindsight.config import load_config
    from hindsight.meta_trainer import MetaTrainer

    if quick:  # the tiny meta family: seconds, for CI
        families, iterations, seeds, eval_every = ("test_meta_goal",), 3, (0,), 1
    out: dict[str, Any] = {"iterations": iterations, "env_steps_budget": env_steps, "seeds": list(seeds),
                           "strategies": list(strategies), "families": {}}
    for family in families:
        runs = []
        for strategy in strategies:
            for seed in seeds:
                base = None if family.startswith("test_") else family
                cfg = load_config(base, [
                    f"env.family={family}", f"relabel.strategy={strategy}", f"seed={seed}",
                    f"env_steps={env_steps}", f"meta.schedule.num_iterations={iterations}",
                    f"meta.eval_every_iterations={eval_every}", f"logdir={logdir}",
                    f"name={family}-{strategy}-s{seed}", *overrides])
                s = MetaTrainer(cfg, progress=True).run()
                runs.append({
                    "strategy": strategy, "seed": seed, "run_dir": s["run_dir"], "iterations": s["iterations"],
                    "env_steps": s["env_steps"], "updates": s["updates"], "wall_time_s": round(s["wall_time_s"], 1),
                    "final_return": s["final_eval"]["return_mean"], "final_success": s["final_eval"]["success_rate"],
                    "relabel": s["relabel"], "eval_history": _dedupe(s["eval_history"]),
                })
        table = {}
        for st in strategies:
            mine = [r for r in runs if r["strategy"] == st]
            succ = [r["final_success"] for r in mine if r["final_success"] is not None]
            table[st] = {
                "final_return_mean": float(np.mean([r["final_return"] for r in mine])),
                "final_return_per_seed": [r["final_return"] for r in mine],
                "final_success_mean": float(np.mean(succ)) if succ else None,
                "env_steps": [r["env_steps"] for r in mine],
                "updates": [r["updates"] for r in mine],
            }
        res = {"table": table, "per_eval": per_evaluation(runs, strategies), "runs": runs}
        res["plot"] = _plot(family, runs, strategies, Path(logdir) / f"meta-learning-{family}.png")
        out["families"][family] = res
    return out


def _dedupe(history: list[dict]) -> list[dict]:
    """One entry per iteration (the trainer's final meta-test repeats the last periodic one
    when the run ends on an evaluation iteration: same weights, same seed, same numbers)."""
    by_it: dict[int, dict] = {}
    for e in history:
        by_it[int(e["iteration"])] = e
    return [by_it[k] for k in sorted(by_it)]


def per_evaluation(runs: list[dict], strategies: Sequence[str]) -> list[dict]:
    """Rows (strategy, iteration, env steps, meta-test return and success rate as mean and
    std over the seeds, ddof 0) at every evaluation iteration that all of the strategy's
    seeds reached."""
    rows = []
    for st in strategies:
        mine = [r for r in runs if r["strategy"] == st]
        if not mine:
            continue
        hist = [{int(e["iteration"]): e for e in r["eval_history"]} for r in mine]
        for it in sorted(set.intersection(*(set(h) for h in hist))):
            es = [h[it] for h in hist]
            ret = np.array([e["return_mean"] for e in es], dtype=np.float64)
            succ = [e["success_rate"] for e in es if e.get("success_rate") is not None]
            rows.append({
                "strategy": st, "iteration": it, "env_steps": int(es[0]["env_steps"]), "seeds": len(es),
                "return_mean": float(ret.mean()), "return_std": float(ret.std()),
                "success_mean": float(np.mean(succ)) if succ else None,
                "success_std": float(np.std(succ)) if succ else None,
            })
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The per-evaluation table of every family (README format)."""
    lines = []
    for family, res in result["families"].items():
        lines += [f"**{family}**", "",
                  "| strategy | iteration | env steps | meta-test return | success rate | seeds |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in res["per_eval"]:
            succ = "-" if r["success_mean"] is None else f"{r['success_mean']:.2f} ± {r['success_std']:.2f}"
            lines.append(f"| {r['strategy']} | {r['iteration']} | {r['env_steps']} | "
                         f"{r['return_mean']:.2f} ± {r['return_std']:.2f} | {succ} | {r['seeds']} |")
        lines.append("")
    return "\n".join(lines)


def rerender(result: dict[str, Any], logdir: str) -> dict[str, Any]:
    """Recompute the per-evaluation rows and the PNGs of a saved result (``--from-json``)."""
    for family, res in result["families"].items():
        for r in res["runs"]:
            r["eval_history"] = _dedupe(r["eval_history"])
        res["per_eval"] = per_evaluation(res["runs"], result["strategies"])
        res["plot"] = _plot(family, res["runs"], result["strategies"], Path(logdir) / f"meta-learning-{family}.png")
    return result


def _plot(family: str, runs: list[dict], strategies: Sequence[str], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_success = any(e.get("success_rate") is not None for r in runs for e in r["eval_history"])
    fig, axes = plt.subplots(1, 2 if has_success else 1, figsize=(11 if has_success else 6, 4), squeeze=False)
    for i, st in enumerate(strategies):
        for k, r in enumerate(x for x in runs if x["strategy"] == st):
            h = r["eval_history"]
            steps = [e["env_steps"] for e in h]
            axes[0, 0].plot(steps, [e["return_mean"] for e in h], color=f"C{i}", alpha=0.8, label=st if k == 0 else None)
            if has_success:
                axes[0, 1].plot(steps, [e["success_rate"] for e in h], color=f"C{i}", alpha=0.8,
                                label=st if k == 0 else None)
    axes[0, 0].set_ylabel("meta-test return (last trajectory)")
    if has_success:
        axes[0, 1].set_ylabel("meta-test success rate")
    for ax in axes[0]:
        ax.set_xlabel("env steps")
        ax.set_title(family)
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["four_corners", "cheetah_vel_sparse"])
    p.add_argument("--strategies", nargs="+", default=["hfr", "none"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--iterations", type=int, default=40, help="PEARL iterations per run (reference: 300 / 160)")
    p.add_argument("--env-steps", type=int, default=100_000_000, help="env-step cap per run")
    p.add_argument("--eval-every", type=int, default=5, help="meta-test every this many iterations")
    p.add_argument("--logdir", default="runs/meta_learning")
    p.add_argument("--set", action="append", default=[], help="config override for every run (repeatable)")
    p.add_argument("--quick", action="store_true", help="tiny meta family, 3 iterations, 1 seed")
    p.add_argument("--json")
    p.add_argument("--from-json", nargs="+", metavar="JSON",
                   help="no runs: re-render the tables and PNGs (into --logdir) of saved --json results")
    a = p.parse_args(argv)
    if a.from_json:
        for f in a.from_json:
            print(markdown(rerender(json.loads(Path(f).read_text()), a.logdir)))
        return
    result = run(a.families, a.strategies, a.seeds, a.iterations, a.env_steps, a.eval_every, a.logdir, a.set, a.quick)
    short = {f: {"table": r["table"], "plot": r["plot"]} for f, r in result["families"].items()}
    print(json.dumps({k: v for k, v in result.items() if k != "families"} | {"families": short}, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
