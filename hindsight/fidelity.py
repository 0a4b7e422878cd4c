"""Relabeling fidelity of a trained run (GH §4.4, Fig. 7).

How close does each relabeling rule come to the task a trajectory was collected for?
Roll the trained policy out on sampled tasks z, relabel every trajectory with AIR,
Advantage and max-reward, and compare the chosen z' with z, dimension by dimension.

    result = run_fidelity("runs/cheetah-air-0501", num_tasks=100, candidates=100)
    result["summary"]["strategies"]["air"]["corr"]       # Pearson r per task dimension
    hindsight fidelity --checkpoint RUN_DIR [--episodes-per-task 1] [--out DIR]

    RUN_DIR/config.yaml ──> family (+ env.family_kwargs)
    RUN_DIR/checkpoints/learner.pt ──> actor ──> RolloutWorker (in-process, no Ray)
                                   └─> critic ──> V(s0, v) = min Q(s0, tanh mu(s0, v), v)
    M trajectories ─┬─ K candidates each: K - 1 prior samples + the commanded task
                    ├─ R(tau_m | v_mk)   [M, K]  ──> max-reward  (GH Eq. 6)
                    ├─ R - V(s0, v_mk)   [M, K]  ──> advantage   (GH Eq. 7)
                    └─ percentile of R(tau_m | v_mk) among the N reference trajectories
                       R(tau_i | v_mk) [N, M, K], ties by advantage ──> AIR (GH Eq. 4)
    ──> fidelity.json, fidelity.png (OUT_DIR, default RUN_DIR/fidelity); RUN_DIR/tb:
        fidelity/<strategy>/{corr,mae}_dim<k> (and _w<k>) scalars, image fidelity/scatter

Choices (GH Fig. 7 and the brief):

* All three rules choose from the SAME per-trajectory candidate set (GH Fig. 7: "select
  from K = 100 randomly sampled tasks"), the commanded task last, so their fidelity is
  compared on equal terms. (The AIR strategy used in training shares one candidate set per
  request instead; the scores here are the same kernels, ``relabel_service.strategies.kernels``.)
* AIR's reference set = all the rolled-out trajectories (GH's N most recent, which include
  the new ones); ``reference_size`` keeps only the last N of them (GH Fig. 7 used N = 10).
* The policy is the stochastic (exploration) one by default, because that is what the GH
  code collects, and so what the relabeler sees in training; ``deterministic=True`` rolls
  out tanh(mean) instead ("optimal trajectories" in the Fig. 7 caption).
* Returns are discounted with the family's gamma, as the relabel service does.
* Compared quantities: every task dimension (``dim<k>``; for linear families such as
  half_cheetah_mo the task is the weight vector, and GH's energy weight is dim 1). Where a
  family's reward weights differ from its task vector (PointReacher's spherical weights c:
  GH Fig. 7 plots c1, the energy weight), they are compared too (``w<k>``). A reward bias
  (``envs.bias``) is not part of these weights.
* Angles are compared as plain numbers (no wrap-around), so angle dimensions understate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from envs import get_family
from envs.bias import BiasedFamily
from envs.core import TaskFamily
from relabel_service.core import Trajectory
from relabel_service.strategies import kernels

#: the rules compared, in plotting order
STRATEGIES = ("air", "advantage", "max_reward")
#: (return, value) elements per AIR block: bounds the [N, b*K] reference-return matrix
_BLOCK_ELEMENTS = 1 << 22
#: (step, task) pairs per ``family.rewards`` call on non-linear families
_MAX_REWARD_ELEMENTS = 1 << 22
#: at most this many scatter columns in fidelity.png (reward weights first, then task dims)
_MAX_PLOT_COLUMNS = 8
#: readable names where the papers name the dimensions (GH Fig. 7 is about the energy weight)
_LABELS = {
    ("half_cheetah_mo", "dim"): ("velocity", "energy", "height", "rooty velocity"),
    ("point_reacher", "w"): ("reach", "energy", "safety"),
}


def run_fidelity(
    run_dir: str | Path,
    num_tasks: int = 100,
    candidates: int = 100,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    episodes_per_task: int = 1,
    deterministic: bool = False,
    reference_size: int | None = None,
    num_envs: int = 16,
    tensorboard: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The fidelity study of the run in ``run_dir`` (or of ``run_dir/checkpoints/learner.pt``
    given directly); writes fidelity.json / fidelity.png to ``out_dir`` and TB scalars.

    Returns ``{"summary", "pairs", "paths", "arrays", "trajectories"}``: ``summary`` and
    ``pairs`` are what fidelity.json holds; ``arrays`` has candidates [M, K, Z], returns /
    values / percentiles [M, K] and the chosen index [M] per strategy; M = num_tasks x
    episodes_per_task trajectories. ``progress``: None shows tqdm bars on a terminal only.
    """
    from hindsight.config import load_config
    from learner.sac.update import load_state, make_value_fn_factory, policy_weights, value_weights

    run_dir, ckpt = _locate(Path(run_dir))
    if num_tasks < 1 or candidates < 1 or episodes_per_task < 1:
        raise ValueError(f"num_tasks, candidates and episodes_per_task must be >= 1, got "
                         f"{num_tasks}, {candidates}, {episodes_per_task}")
    if reference_size is not None and reference_size < 1:
        raise ValueError(f"reference_size must be >= 1 (or None: all rollouts), got {reference_size}")
    t_start = time.perf_counter()
    cfg = load_config(str(run_dir / "config.yaml"))
    family = get_family(cfg.env.family, **cfg.env.family_kwargs)
    state = load_state(ckpt, "cpu")
    dims = (family.obs_dim, family.action_dim, family.task_dim)
    if (state.obs_dim, state.action_dim, state.task_dim) != dims:
        raise ValueError(f"{ckpt}: checkpoint dims {(state.obs_dim, state.action_dim, state.task_dim)} "
                         f"do not match family {family.name!r} {dims}")
    task_rng, reset_rng, noise_rng, cand_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    bar = {"disable": None if progress is None else not progress, "delay": 2.0, "leave": False}

    # ---- roll out ---------------------------------------------------------------------
    commanded = np.repeat(family.sample_tasks(task_rng, num_tasks), episodes_per_task, axis=0)  # [M, Z]
    trajs = _rollout(cfg, state, policy_weights(state), commanded, reset_rng, noise_rng, deterministic, num_envs, bar)
    M, K, Z = len(trajs), candidates, family.task_dim
    reference = trajs if reference_size is None else trajs[-reference_size:]
    N = len(reference)

    # ---- score every candidate of every trajectory -------------------------------------
    # [M, K, Z]: K - 1 prior samples, then the commanded task (GH Alg. 3); own index K - 1
    fresh = family.sample_tasks(cand_rng, M * (K - 1)).reshape(M, K - 1, Z)
    cand = np.concatenate([fresh, commanded[:, None, :]], axis=1)
    gamma = family.discount
    value_fn = make_value_fn_factory(state.cfg, *dims)(value_weights(state))
    obs0 = np.stack([t.obs[0] for t in trajs]).astype(np.float64)  # [M, O]
    R, V, P = np.empty((M, K)), np.empty((M, K)), np.empty((M, K))
    ref_row = {t.episode_id: i for i, t in enumerate(reference)}
    cache = kernels.FeatureSumCache(capacity=M + N) if family.linear else None
    block = max(1, _BLOCK_ELEMENTS // ((N + 1) * K))
    for lo in tqdm(range(0, M, block), desc="fidelity: scoring", **bar):
        hi = min(lo + block, M)
        b = hi - lo
        V[lo:hi] = value_fn(obs0[lo:hi], cand[lo:hi])
        # Every (trajectory, candidate) pair of the block is one column; the rows are the
        # reference set, then the block's trajectories that are not in it. A trajectory's own
        # returns are read from ITS row of this one matrix, so in the percentile it compares
        # bit-equal with itself (GH counts the new trajectory among the N).
        extra = [t for t in trajs[lo:hi] if t.episode_id not in ref_row]
        row_of = {**ref_row, **{t.episode_id: N + j for j, t in enumerate(extra)}}
        R_rows = kernels.discounted_returns(
            family, [*reference, *extra], cand[lo:hi].reshape(-1, Z), gamma, _MAX_REWARD_ELEMENTS, cache
        )  # [N + E, b*K]
        own_rows = np.array([row_of[t.episode_id] for t in trajs[lo:hi]])  # [b]
        own_cols = np.arange(b)[:, None] * K + np.arange(K)  # [b, K]: trajectory i's candidates
        R[lo:hi] = R_rows[own_rows[:, None], own_cols]
        P[lo:hi] = kernels.air_percentiles(R[lo:hi].reshape(1, -1), R_rows[:N]).reshape(b, K)
    A = kernels.advantage_scores(R, V)
    chosen = {
        "air": kernels.air_select(P, A, 1)[:, 0],  # GH Eq. 4, ties by advantage
        "advantage": kernels.max_reward_select(A),  # GH Eq. 7
        "max_reward": kernels.max_reward_select(R),  # GH Eq. 6
    }
    rows = np.arange(M)
    relabeled = {s: cand[rows, c] for s, c in chosen.items()}  # [M, Z] each

    # ---- compare ------------------------------------------------------------------------
    weights_of = _reward_weights(family)
    quantities = [("dim", commanded, relabeled)]
    if weights_of is not None:
        quantities.insert(0, ("w", weights_of(commanded), {s: weights_of(x) for s, x in relabeled.items()}))
    strategies: dict[str, Any] = {}
    for s in STRATEGIES:
        entry: dict[str, Any] = {}
        for kind, true, rel in quantities:
            suffix = "" if kind == "dim" else "_w"
            entry["corr" + suffix] = _nan_to_none(pearson(true, rel[s]))
            entry["mae" + suffix] = np.mean(np.abs(rel[s] - true), axis=0).tolist()
        entry["chosen_own_fraction"] = float(np.mean(chosen[s] == K - 1))
        strategies[s] = entry
    returns = np.array([t.rewards.sum() for t in trajs])
    summary = {
        "run_dir": str(run_dir),
        "family": family.name,
        "family_kwargs": dict(cfg.env.family_kwargs),
        "checkpoint_step": int(state.step),
        "num_tasks": int(num_tasks),
        "episodes_per_task": int(episodes_per_task),
        "num_trajectories": M,
        "candidates": K,
        "reference_size": N,
        "policy": "deterministic" if deterministic else "stochastic",
        "discount": float(gamma),
        "seed": int(seed),
        "return_mean": float(returns.mean()),
        "dim_labels": list(_labels(family.name, "dim", Z)),
        "weight_labels": list(_labels(family.name, "w", quantities[0][1].shape[1])) if weights_of else None,
        "strategies": strategies,
        "seconds": 0.0,
    }
    pairs: dict[str, Any] = {
        "commanded": commanded.tolist(),
        "relabeled": {s: x.tolist() for s, x in relabeled.items()},
        "chosen_index": {s: c.tolist() for s, c in chosen.items()},
        "own_index": K - 1,
    }
    if weights_of is not None:
        pairs["commanded_weights"] = quantities[0][1].tolist()
        pairs["relabeled_weights"] = {s: x.tolist() for s, x in quantities[0][2].items()}

    # ---- write ---------------------------------------------------------------------------
    out = Path(out_dir) if out_dir is not None else run_dir / "fidelity"
    out.mkdir(parents=True, exist_ok=True)
    image = _render(_scatter_figure(family.name, quantities, strategies, summary))  # [H, W, 4] uint8
    _save_png(out / "fidelity.png", image)
    summary["seconds"] = time.perf_counter() - t_start
    (out / "fidelity.json").write_text(json.dumps({"summary": summary, "pairs": pairs}))
    paths = {"json": str(out / "fidelity.json"), "png": str(out / "fidelity.png"), "tb": None}
    if tensorboard:
        paths["tb"] = _write_tb(run_dir / "tb", strategies, image, int(state.step))
    return {
        "summary": summary,
        "pairs": pairs,
        "paths": paths,
        "arrays": {
            "candidates": cand, "returns": R, "values": V, "percentiles": P,
            "chosen": chosen, "commanded": commanded,
        },
        "trajectories": trajs,
    }


# ---- pieces ------------------------------------------------------------------------------
def _locate(path: Path) -> tuple[Path, Path]:
    """(run dir, checkpoint) from a run dir or a checkpoint file inside one."""
    if path.is_file():
        run_dir, ckpt = path.parent.parent, path
    else:
        run_dir, ckpt = path, path / "checkpoints" / "learner.pt"
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (not a run directory)")
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: no learner checkpoint")
    return run_dir, ckpt


def _rollout(
    cfg: Any,
    state: Any,
    actor_weights: dict[str, np.ndarray],
    tasks: np.ndarray,
    reset_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    deterministic: bool,
    num_envs: int,
    bar: dict[str, Any],
) -> list[Trajectory]:
    """One episode per task row [M, Z] with a RolloutWorker in this process."""
    from actors.policy import blas_threads
    from actors.rollout import RolloutWorker

    E = max(1, min(num_envs, len(tasks)))
    worker = RolloutWorker(
        0, cfg.env.family, E, state.cfg, seed=int(reset_rng.integers(2**31)), family_kwargs=cfg.env.family_kwargs,
    )
    # The worker's own generator mixes in a random incarnation id (unique episode ids in a
    # pool); reseed the action noise so that one seed gives one study.
    worker.noise_rng = np.random.default_rng(int(noise_rng.integers(2**62)))
    reset_seeds = reset_rng.integers(2**31, size=len(tasks))
    weights = (int(state.step), actor_weights)
    trajs: list[Trajectory] = []
    # one BLAS thread, as in the rollout pool: the small per-step matmuls run faster alone
    # than split across cores
    with blas_threads(1):
        for lo in tqdm(range(0, len(tasks), E), desc="fidelity: rollouts", **bar):
            got, _ = worker.collect_episodes(
                weights, tasks=tasks[lo:lo + E], deterministic=deterministic, reset_seeds=reset_seeds[lo:lo + E]
            )
            trajs += got
    return trajs


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each column: x, y [M, Z] -> [Z] in [-1, 1]; NaN where a column is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    assert x.shape == y.shape and x.ndim == 2, (x.shape, y.shape)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    den = np.sqrt(np.sum(xc * xc, axis=0) * np.sum(yc * yc, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum(xc * yc, axis=0) / den
    return np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)


def _reward_weights(family: TaskFamily) -> Any:
    """tasks [M, Z] -> reward weights [M, D] where they are not the task vector itself
    (PointReacher's spherical weights; a linear family whose task_weights transform z);
    None otherwise."""
    if isinstance(family, BiasedFamily):
        family = family.base  # the bias is not a preference the relabeler could recover
    probe = family.sample_tasks(np.random.default_rng(0), 4)
    if family.linear:
        fn = family.task_weights
    elif callable(getattr(family, "weights", None)):
        fn = family.weights
    else:
        return None
    w = np.asarray(fn(probe), dtype=np.float64)
    if w.shape == probe.shape and np.allclose(w, probe):
        return None
    return lambda tasks: np.asarray(fn(np.asarray(tasks, dtype=np.float64)), dtype=np.float64)


def _labels(family: str, kind: str, n: int) -> Sequence[str]:
    names = _LABELS.get((family, kind), ())
    prefix = "task dim" if kind == "dim" else "weight"
    return [f"{prefix} {k}" + (f" ({names[k]})" if k < len(names) else "") for k in range(n)]


def _nan_to_none(x: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in x]


def _scatter_figure(family: str, quantities: list, strategies: dict[str, Any], summary: dict[str, Any]) -> Any:
    """Commanded (x) vs relabeled (y) per strategy (rows) and dimension (columns)."""
    from matplotlib.figure import Figure  # object API: no pyplot state, no backend switch

    columns = [
        (kind, k, true, rel)
        for kind, true, rel in quantities
        for k in range(true.shape[1])
    ][:_MAX_PLOT_COLUMNS]
    nrows, ncols = len(STRATEGIES), len(columns)
    fig = Figure(figsize=(2.6 * ncols + 0.6, 2.6 * nrows + 0.6), layout="constrained", dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, s in enumerate(STRATEGIES):
        for j, (kind, k, true, rel) in enumerate(columns):
            ax = axes[i, j]
            x, y = true[:, k], rel[s][:, k]
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            ax.plot([lo, hi], [lo, hi], color="0.6", linestyle="--", linewidth=0.8)
            ax.scatter(x, y, s=6, alpha=0.6)
            r = strategies[s]["corr" if kind == "dim" else "corr_w"][k]
            ax.set_title(f"{s}  r={'n/a' if r is None else f'{r:.2f}'}", fontsize=9)
            label = _labels(family, kind, true.shape[1])[k]
            if i == nrows - 1:
                ax.set_xlabel(f"commanded {label}", fontsize=8)
            if j == 0:
                ax.set_ylabel("relabeled", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(
        f"{family}: relabeling fidelity, {summary['num_trajectories']} trajectories, "
        f"K={summary['candidates']}, N={summary['reference_size']} ({summary['policy']} policy)",
        fontsize=10,
    )
    return fig


def _render(fig: Any) -> np.ndarray:
    """Draw the figure once (Agg): RGBA [H, W, 4] uint8, for the PNG and TensorBoard alike."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _save_png(path: Path, image: np.ndarray) -> None:
    from matplotlib.image import imsave

    imsave(path, image, format="png")


def _write_tb(logdir: Path, strategies: dict[str, Any], image: np.ndarray, step: int) -> str:
    """fidelity/<strategy>/{corr,mae}_dim<k> (and _w<k> for reward weights) + the figure."""
    from hindsight.tb import TBWriter

    tb = TBWriter(str(logdir))
    try:
        for s, entry in strategies.items():
            for key, tag in (("corr", "corr_dim"), ("mae", "mae_dim"), ("corr_w", "corr_w"), ("mae_w", "mae_w")):
                for k, v in enumerate(entry.get(key) or ()):
                    tb.scalar(f"fidelity/{s}/{tag}{k}", v, step)
            tb.scalar(f"fidelity/{s}/chosen_own_fraction", entry["chosen_own_fraction"], step)
        tb.writer.add_image("fidelity/scatter", image[..., :3], step, dataformats="HWC")
    finally:
        tb.close()
    return str(logdir)


__all__ = ["STRATEGIES", "pearson", "run_fidelity"]
