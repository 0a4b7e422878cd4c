"""HIPI Fig. 7 (left) and Fig. 8 on ``cheetah_vel`` at a small budget: HIPI-BC vs task-agnostic BC,
and relabeling with / without the partition function as a reward bias on one task grows.

    python -m benchmarks.hipi_bc --seeds 0 1 --expert-steps 30000 --demos 200 \
        --biases 0 0.25 0.5 1 2 --out benchmarks/results          # all of it (~30 min on 2 idle cores)
    python -m benchmarks.hipi_bc --checkpoint RUN_DIR ...          # reuse a trained expert
    python -m benchmarks.hipi_bc --quick                           # the whole pipeline on test_goal, ~1 min

As the paper ran it (HIPI §6.2, Figs. 7-8):

1. an expert: multi-task SAC trained with off-policy RL (``hindsight train``, strategy none,
   ``--expert-steps`` env steps; HIPI does not say how long theirs trained);
2. demonstrations: ``hindsight collect`` rolls the expert out on ``--demos`` tasks drawn from
   the prior (HIPI: 1000) into a store, whose task labels BC never reads;
3. Fig. 7 (left): ``hindsight bc`` with ``--relabel none`` (task-agnostic BC on everything),
   ``random`` and ``hipi`` (K = 100 prior candidates per batch), per seed;
4. Fig. 8: HIPI-BC over the family's fixed evaluation list (``--candidates eval``: for
   cheetah_vel HFR's 30 test velocities) with ``--reward-bias b`` added to the first task's
   reward per step in the relabeling ("whichever velocity was sampled first"), with and
   without log Z, for each b in ``--biases``. Reported: the evaluation return (true reward)
   and the fraction of trajectories relabeled with the biased task;
5. optional RL variant of the partition ablation (``--rl-env-steps N`` > 0): HIPI-RL
   (``hipi_rl``, relabeling in the learner) with / without log Z, trained with a bias on the
   half of the velocities above 1.5 (HIPI-RL's candidates are the batch's continuous tasks,
   so a single biased task would never be drawn), evaluated on the true reward.

Every evaluation is a training run's: deterministic policy, the family's evaluation tasks
cycled to ``--eval-episodes``, initial states seeded. Writes ``hipi-bc-<family>.json`` and
``.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _train_expert(family: str, env_steps: int, seed: int, logdir: Path, overrides: Sequence[str]) -> str:
    from hindsight.config import load_config
    from hindsight.trainer import Trainer

    # meta.algorithm=sac: cheetah_vel is also a meta family (PEARL by default); the expert is
    # task-conditioned multi-task SAC, as HIPI's "policy trained with off-policy RL"
    cfg = load_config(None, [f"env.family={family}", "meta.algorithm=sac", "relabel.strategy=none", f"env_steps={env_steps}",
                             f"seed={seed}", f"logdir={logdir}", f"name={family}-expert", *overrides])
    return str(Trainer(cfg, progress=False).run()["run_dir"])


def _rl_variant(family: str, env_steps: int, seeds: Sequence[int], bias: float, logdir: Path,
                overrides: Sequence[str]) -> list[dict[str, Any]]:
    from hindsight.config import load_config
    from hindsight.trainer import Trainer

    rows = []
    for partition in (True, False):
        for seed in seeds:
            cfg = load_config(None, [
                f"env.family={family}", "meta.algorithm=sac", "relabel.strategy=hipi_rl", f"relabel.strategy_cfg.partition={str(partition).lower()}",
                f"env.family_kwargs.reward_bias={bias}", "env.family_kwargs.bias_threshold=1.5",
                f"env_steps={env_steps}", f"seed={seed}", f"logdir={logdir}",
                f"name={family}-hipi_rl-{'z' if partition else 'noz'}-b{bias:g}-s{seed}", *overrides])
            s = Trainer(cfg, progress=False).run()
            # the run evaluated on the biased reward: re-score its final policy on the true one
            from learner.bc import evaluate_policy
            from learner.sac.update import load_state, policy_weights

            state = load_state(Path(s["run_dir"]) / "checkpoints" / "learner.pt")
            ev = evaluate_policy(family, {}, policy_weights(state), state.cfg, cfg.eval.episodes, cfg.seed)
            rows.append({"partition": partition, "seed": seed, "bias": bias, "env_steps": s["env_steps"],
                         "return_true": ev["return_mean"], "return_biased_run": s["final_eval"]["return_mean"],
                         "run_dir": s["run_dir"]})
    return rows


def run(
    family: str = "cheetah_vel",
    seeds: Sequence[int] = (0, 1),
    expert_steps: int = 30_000,
    checkpoint: str | None = None,
    demos: int = 200,
    biases: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0),
    epochs: int = 30,
    eval_episodes: int = 30,
    rl_env_steps: int = 0,
    rl_bias: float = 1.0,
    logdir: str = "runs/hipi_bc",
    out: str = "benchmarks/results",
    expert_overrides: Sequence[str] = (),
    quick: bool = False,
) -> dict[str, Any]:
    from hindsight.bc import run_bc, run_collect
    from learner.bc import BCConfig

    if quick:
        family, seeds, expert_steps, demos, biases, epochs, eval_episodes = "test_goal", (0,), 1500, 60, (0.0, 1.0), 3, 8
        expert_overrides = ("rollout.num_workers=1", "learner.min_replay=200", *expert_overrides)
    t0 = time.perf_counter()
    root = Path(logdir)
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if checkpoint is None:
        t = time.perf_counter()
        checkpoint = _train_expert(family, expert_steps, seeds[0], root, expert_overrides)
        timings["expert_s"] = time.perf_counter() - t
    t = time.perf_counter()
    demo_dir = root / f"demos-{family}-{demos}-{int(time.time())}"
    meta = run_collect(checkpoint, demos, out_dir=demo_dir, seed=seeds[0])
    timings["collect_s"] = time.perf_counter() - t
    store = demo_dir / "store"

    def bc(name: str, cfg: BCConfig, bias: float = 0.0) -> dict[str, Any]:
        s = run_bc(store, cfg, out_dir=demo_dir / name, reward_bias=bias, eval_episodes=eval_episodes)
        last = s["history"][-1]
        return {"return": s["final_eval"]["return_mean"], "loss": last["loss"],
                "biased_fraction": last.get("first_candidate_fraction"), "entropy": last.get("entropy"),
                "seconds": s["seconds"]}

    t = time.perf_counter()
    fig7: dict[str, list[dict[str, Any]]] = {"none": [], "random": [], "hipi": []}
    for relabel in fig7:
        for seed in seeds:
            fig7[relabel].append({"seed": seed, **bc(f"fig7-{relabel}-s{seed}", BCConfig(relabel=relabel, epochs=epochs, seed=seed))})
    timings["fig7_s"] = time.perf_counter() - t
    t = time.perf_counter()
    fig8: list[dict[str, Any]] = []
    for bias in biases:
        for partition in (True, False):
            for seed in seeds:
                cfg = BCConfig(relabel="hipi", partition=partition, candidates="eval", epochs=epochs, seed=seed)
                name = f"fig8-{'z' if partition else 'noz'}-b{bias:g}-s{seed}"
                fig8.append({"bias": bias, "partition": partition, "seed": seed, **bc(name, cfg, bias)})
    timings["fig8_s"] = time.perf_counter() - t
    rl: list[dict[str, Any]] = []
    if rl_env_steps > 0:
        t = time.perf_counter()
        rl = _rl_variant(family, rl_env_steps, seeds, rl_bias, root, expert_overrides)
        timings["rl_s"] = time.perf_counter() - t
    from benchmarks import machine

    result = {
        "family": family, "seeds": list(seeds), "expert_checkpoint": checkpoint, "expert_steps": expert_steps,
        "demos": demos, "demo_return_mean": meta["return_mean"], "epochs": epochs, "eval_episodes": eval_episodes,
        "fig7": {k: {"return_mean": float(np.mean([r["return"] for r in v])),
                     "return_std": float(np.std([r["return"] for r in v])), "runs": v} for k, v in fig7.items()},
        "fig8": _fig8_table(fig8, biases), "fig8_runs": fig8, "rl_variant": rl,
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine(), "quick": quick,
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"hipi-bc-{family}" + ("-quick" if quick else "")
    result["plot"] = str(_plot(result, out_dir / f"{name}.png"))
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result


def _fig8_table(rows: list[dict[str, Any]], biases: Sequence[float]) -> list[dict[str, Any]]:
    table = []
    for bias in biases:
        for partition in (True, False):
            sel = [r for r in rows if r["bias"] == bias and r["partition"] == partition]
            table.append({"bias": bias, "partition": partition,
                          "return_mean": float(np.mean([r["return"] for r in sel])),
                          "return_std": float(np.std([r["return"] for r in sel])),
                          "biased_fraction_mean": float(np.mean([r["biased_fraction"] for r in sel]))})
    return table


def _plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rl = result.get("rl_variant") or []
    fig, axes = plt.subplots(1, 4 if rl else 3, figsize=(17 if rl else 13, 3.8))
    a7, a8, af = axes[:3]
    names = list(result["fig7"])
    means = [result["fig7"][n]["return_mean"] for n in names]
    stds = [result["fig7"][n]["return_std"] for n in names]
    a7.bar(names, means, yerr=stds, color=["C7", "C1", "C0"][: len(names)])
    a7.set_title(f"Fig. 7 (left): BC on {result['family']}")
    a7.set_ylabel("eval return (true reward)")
    for partition, label, c in ((True, "HIPI-BC (with log Z)", "C0"), (False, "without log Z", "C3")):
        rows = [r for r in result["fig8"] if r["partition"] == partition]
        b = [r["bias"] for r in rows]
        a8.errorbar(b, [r["return_mean"] for r in rows], yerr=[r["return_std"] for r in rows], marker="o", color=c, label=label)
        af.plot(b, [r["biased_fraction_mean"] for r in rows], marker="o", color=c, label=label)
    a8.set_title("Fig. 8: reward bias on the first task")
    a8.set_xlabel("bias per step")
    a8.set_ylabel("eval return (true reward)")
    a8.legend()
    af.set_title("trajectories relabeled with the biased task")
    af.set_xlabel("bias per step")
    af.set_ylabel("fraction")
    af.legend()
    if rl:
        ar = axes[3]
        for i, partition in enumerate((True, False)):
            vals = [r["return_true"] for r in rl if r["partition"] == partition]
            ar.bar(i, float(np.mean(vals)), yerr=float(np.std(vals)), color="C0" if partition else "C3")
        ar.set_xticks([0, 1], ["HIPI-RL", "without log Z"])
        ar.set_title(f"HIPI-RL, bias {rl[0]['bias']:g} on z[0] > 1.5")
        ar.set_ylabel("eval return (true reward)")
    fig.suptitle(f"{result['demos']} demos, {len(result['seeds'])} seeds, {result['epochs']} epochs"
                 + (" (quick)" if result["quick"] else ""), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="cheetah_vel")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--expert-steps", type=int, default=30_000, help="env steps of the expert's SAC training")
    p.add_argument("--checkpoint", help="a trained run to use as the expert instead")
    p.add_argument("--demos", type=int, default=200, help="demonstration episodes (HIPI: 1000)")
    p.add_argument("--biases", nargs="+", type=float, default=[0.0, 0.25, 0.5, 1.0, 2.0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--eval-episodes", type=int, default=30)
    p.add_argument("--rl-env-steps", type=int, default=0, help="> 0: also the HIPI-RL partition ablation")
    p.add_argument("--rl-bias", type=float, default=1.0)
    p.add_argument("--logdir", default="runs/hipi_bc")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--set", action="append", default=[], help="config overrides for the expert (and RL) runs")
    p.add_argument("--quick", action="store_true", help="the pipeline on test_goal in about a minute")
    a = p.parse_args(argv)
    result = run(a.family, a.seeds, a.expert_steps, a.checkpoint, a.demos, a.biases, a.epochs, a.eval_episodes,
                 a.rl_env_steps, a.rl_bias, a.logdir, a.out, a.set, a.quick)
    print(json.dumps({k: v for k, v in result.items() if k not in ("fig8_runs",)}, indent=2))


if __name__ == "__main__":
    main()
