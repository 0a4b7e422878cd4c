"""Learning comparison: the same config, env-step budget and seeds under several strategies.

    python -m benchmarks.learning --family point_reacher --strategies air none --seeds 0 1 \
        --env-steps 10000 --json learning.json

Runs ``hindsight train`` (local Ray) once per (strategy, seed), one after another, and
reports each run's final evaluation return (deterministic policy, the family's seeded
eval tasks) and the per-strategy mean, plus a PNG of the eval curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def run(
    family: str = "point_reacher",
    strategies: Sequence[str] = ("air", "none"),
    seeds: Sequence[int] = (0, 1),
    env_steps: int = 10_000,
    config: str | None = None,
    logdir: str = "runs/learning",
    overrides: Sequence[str] = (),
    quick: bool = False,
) -> dict[str, Any]:
    from hindsight.config import load_config
    from hindsight.trainer import Trainer

    if quick:
        family, env_steps, seeds = "test_goal", 1500, (0,)
    runs = []
    for strategy in strategies:
        for seed in seeds:
            cfg = load_config(
                config,
                [f"env.family={family}", f"relabel.strategy={strategy}", f"seed={seed}",
                 f"env_steps={env_steps}", f"logdir={logdir}", f"name={family}-{strategy}-s{seed}", *overrides],
            )
            s = Trainer(cfg, progress=True).run()
            runs.append({
                "strategy": strategy, "seed": seed, "run_dir": s["run_dir"], "env_steps": s["env_steps"],
                "updates": s["updates"], "wall_time_s": round(s["wall_time_s"], 1),
                "final_return": s["final_eval"]["return_mean"], "eval_history": s["eval_history"],
            })
    by = {st: [r["final_return"] for r in runs if r["strategy"] == st] for st in strategies}
    result = {
        "family": family, "env_steps": env_steps, "seeds": list(seeds),
        "final_return_mean": {st: float(np.mean(v)) for st, v in by.items()},
        "final_return_per_seed": by, "runs": runs,
    }
    _plot(result, Path(logdir) / f"learning-{family}.png")
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, st in enumerate(result["final_return_per_seed"]):
        for r in (r for r in result["runs"] if r["strategy"] == st):
            h = r["eval_history"]
            ax.plot([e["env_steps"] for e in h], [e["return_mean"] for e in h], color=f"C{i}", alpha=0.8,
                    label=st if r["seed"] == result["seeds"][0] else None)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    ax.set_title(result["family"])
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    result["plot"] = str(path)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="point_reacher")
    p.add_argument("--strategies", nargs="+", default=["air", "none"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--env-steps", type=int, default=10_000)
    p.add_argument("--config")
    p.add_argument("--logdir", default="runs/learning")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json")
    a = p.parse_args(argv)
    result = run(a.family, a.strategies, a.seeds, a.env_steps, a.config, a.logdir, a.set)
    text = json.dumps({k: v for k, v in result.items() if k != "runs"} | {"runs": [
        {k: v for k, v in r.items() if k != "eval_history"} for r in result["runs"]]}, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
