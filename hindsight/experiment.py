"""Experiment grids: families x strategies x seeds, resumable, with learning curves.

    hindsight experiment deploy/experiments/gh_fig4_point_reacher.yaml [--out DIR] [--max-cells N]

An experiment file names a base config and the grid (every list may be a plain name or a
``{label: [overrides]}`` mapping, so ablations such as "hipi without the partition
function" or "reward bias 5" are cells too):

    name: gh_fig4_point_reacher
    config: point_reacher                 # deploy/configs name or path (default: defaults)
    set: [env_steps=20000]                # overrides for every cell
    families: [point_reacher]             # name -> env.family=name
    strategies:                           # name -> relabel.strategy=name
      - air
      - her: [relabel.strategy=her_future]
    seeds: [0, 1, 2]
    metric: return_mean                   # or success_rate

Cells run one after another (each a full ``Trainer`` run on the same Ray session) into
``OUT/runs/<family>/<strategy>/seed<k>/``. A cell whose ``summary.json`` exists is finished
and never rerun; a cell directory without one (an interrupted run) is started over from
scratch, so every finished cell is an uninterrupted run. After the cells, ``OUT`` gets
``results.json`` (every cell's summary: final eval and eval history), ``results.md`` (a
table per family: final metric mean +- std over seeds) and ``curves-<family>.png``
(mean +- std over seeds of the eval metric against env steps on the learner's axis).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from hindsight.configtools import ConfigError

log = logging.getLogger("hindsight.experiment")

SPEC_KEYS = {"name", "config", "set", "families", "strategies", "seeds", "metric", "out", "about"}
METRICS = ("return_mean", "success_rate")


@dataclasses.dataclass(frozen=True)
class Axis:
    """One value of a grid axis: a label and the overrides it stands for."""

    label: str
    overrides: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Cell:
    family: Axis
    strategy: Axis
    seed: int

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.family.label / self.strategy.label / f"seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    name: str
    config: str | None
    overrides: tuple[str, ...]
    families: tuple[Axis, ...]
    strategies: tuple[Axis, ...]
    seeds: tuple[int, ...]
    metric: str
    out: str | None
    about: str
    path: str

    def cells(self) -> list[Cell]:
        """Family-major, then strategy, then seed: the order the cells run in."""
        return [Cell(f, s, seed) for f in self.families for s in self.strategies for seed in self.seeds]

    def cell_overrides(self, cell: Cell) -> list[str]:
        name = f"{self.name}-{cell.family.label}-{cell.strategy.label}-s{cell.seed}"
        return [*self.overrides, *cell.family.overrides, *cell.strategy.overrides,
                f"seed={cell.seed}", f"name={name}"]


def _axis(key: str, items: Any, field: str) -> tuple[Axis, ...]:
    """Plain names (-> ``field=name``) or ``{label: [overrides]}`` mappings."""
    if not isinstance(items, list) or not items:
        raise ConfigError(f"experiment: {key!r} must be a non-empty list")
    out: list[Axis] = []
    for item in items:
        if isinstance(item, str):
            out.append(Axis(item, (f"{field}={item}",)))
        elif isinstance(item, dict) and len(item) == 1:
            (label, overrides), = item.items()
            if isinstance(overrides, str):
                overrides = [overrides]
            if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
                raise ConfigError(f"experiment: {key}.{label}: overrides must be a list of 'a.b=c' strings")
            out.append(Axis(str(label), tuple(overrides)))
        else:
            raise ConfigError(f"experiment: {key}: each entry is a name or {{label: [overrides]}}, got {item!r}")
    labels = [a.label for a in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"experiment: {key}: duplicate labels {labels}")
    return tuple(out)


def load_spec(path: str | Path, extra_overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Parse and check an experiment file (unknown keys are errors that name the key);
    ``extra_overrides`` (``--set``) apply to every cell after the file's ``set``."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"experiment file {p} not found")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; valid: {sorted(SPEC_KEYS)}")
    for key in ("name", "families", "strategies", "seeds"):
        if key not in data:
            raise ConfigError(f"{p}: missing key {key!r}")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{p}: seeds must be a non-empty list of integers")
    metric = data.get("metric", "return_mean")
    if metric not in METRICS:
        raise ConfigError(f"{p}: metric must be one of {METRICS}, got {metric!r}")
    overrides = [*data.get("set", []), *extra_overrides]
    if not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ConfigError(f"{p}: set must be a list of 'a.b=c' strings")
    return ExperimentSpec(
        name=str(data["name"]), config=data.get("config"), overrides=tuple(overrides),
        families=_axis("families", data["families"], "env.family"),
        strategies=_axis("strategies", data["strategies"], "relabel.strategy"),
        seeds=tuple(seeds), metric=metric, out=data.get("out"), about=str(data.get("about", "")).strip(),
        path=str(p),
    )


def results_dir(spec: ExperimentSpec, out: str | Path | None = None) -> Path:
    """``--out``, else the file's ``out``, else experiments/<name> under the working directory."""
    return Path(out or spec.out or Path("experiments") / spec.name)


def check_configs(spec: ExperimentSpec) -> dict[Cell, Any]:
    """Every cell's config, built before anything runs (a typo fails the whole grid at once)."""
    from hindsight.config import load_config

    return {cell: load_config(spec.config, spec.cell_overrides(cell)) for cell in spec.cells()}


def is_finished(cell: Cell, out: Path) -> bool:
    return (cell.run_dir(out) / "summary.json").exists()


def run_experiment(
    path: str | Path,
    out: str | Path | None = None,
    max_cells: int | None = None,
    address: str | None = None,
    progress: bool = True,
    extra_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the unfinished cells (at most ``max_cells`` of them), then write the report.

    A SIGINT / SIGTERM stops the cell in progress (as ``hindsight train`` does) and the grid
    with it; the report then has ``interrupted`` (the signal's name)."""
    import ray

    from hindsight.config import uses_pearl
    from hindsight.trainer import Trainer, start_local_ray

    spec = load_spec(path, extra_overrides)
    out_dir = results_dir(spec, out)
    configs = check_configs(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.path, out_dir / "experiment.yaml")
    todo = [c for c in spec.cells() if not is_finished(c, out_dir)]
    log.info("%s: %d cells, %d finished, %d to run", spec.name, len(spec.cells()), len(spec.cells()) - len(todo), len(todo))
    if max_cells is not None:
        todo = todo[: max(0, max_cells)]
    started_ray = False
    interrupted: str | None = None
    if todo and not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:  # a local instance of our own, never another process's cluster
            start_local_ray()
        started_ray = True
    try:
        for i, cell in enumerate(todo, start=1):
            run_dir = cell.run_dir(out_dir)
            if run_dir.exists():
                log.warning("%s: unfinished cell (no summary.json); starting it over", run_dir)
                shutil.rmtree(run_dir)
            cfg = configs[cell]
            log.info("[%d/%d] %s / %s / seed %d -> %s", i, len(todo), cell.family.label, cell.strategy.label,
                     cell.seed, run_dir)
            trainer_cls: Any = Trainer
            if uses_pearl(cfg):
                from hindsight.meta_trainer import MetaTrainer as trainer_cls
            summary = trainer_cls(cfg, run_dir=run_dir, progress=progress).run()
            if summary.get("interrupted"):
                # the cell stopped on SIGINT / SIGTERM (no summary.json: it reruns from scratch
                # on resume); the grid stops with it, never on to the next cell
                interrupted = str(summary["interrupted"])
                log.warning("%s: %s stopped %s / %s / seed %d; rerun the same command to resume",
                            spec.name, interrupted, cell.family.label, cell.strategy.label, cell.seed)
                break
    finally:
        if started_ray:
            ray.shutdown()
    report = write_report(spec, out_dir)
    if interrupted:
        report["interrupted"] = interrupted
    return report


# ---- the report ---------------------------------------------------------------------------------
def aggregate_curves(histories: Sequence[Sequence[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds of curves sampled at different x: -> (x [G], mean [G], std [G]).

    Each history is (env steps, value) points; evals fire at slightly different env steps
    per seed, so every curve is linearly interpolated onto the union of all seeds' x
    inside the range every seed covers (no extrapolation). std is the population std
    (0 for one seed)."""
    curves = []
    for h in histories:
        pts = sorted((float(x), float(y)) for x, y in h if y is not None and np.isfinite(y))
        if pts:
            curves.append(np.asarray(pts))
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo = max(c[0, 0] for c in curves)
    hi = min(c[-1, 0] for c in curves)
    grid = np.unique(np.concatenate([c[:, 0] for c in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if not len(grid):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    ys = np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])  # [seeds, G]
    return grid, ys.mean(axis=0), ys.std(axis=0)


def _cell_record(cell: Cell, out: Path) -> dict[str, Any]:
    s = json.loads((cell.run_dir(out) / "summary.json").read_text())
    final = s.get("final_eval", {})
    return {
        "family": cell.family.label, "strategy": cell.strategy.label, "seed": cell.seed,
        "run_dir": str(cell.run_dir(out)), "env_steps": s.get("env_steps"), "updates": s.get("updates"),
        "wall_time_s": s.get("wall_time_s"),
        "final": {"return_mean": final.get("return_mean"), "success_rate": final.get("success_rate")},
        "eval_history": s.get("eval_history", []),
    }


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else (float("nan"), float("nan"), 0)


def write_report(spec: ExperimentSpec, out: Path) -> dict[str, Any]:
    """results.json, results.md and one curves PNG per family from the finished cells."""
    records = [_cell_record(c, out) for c in spec.cells() if is_finished(c, out)]
    pending = [c for c in spec.cells() if not is_finished(c, out)]
    result = {"name": spec.name, "metric": spec.metric, "cells": records,
              "pending": [f"{c.family.label}/{c.strategy.label}/seed{c.seed}" for c in pending]}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    pngs = {f.label: _plot_family(spec, f.label, records, out) for f in spec.families}
    (out / "results.md").write_text(_markdown(spec, records, pending, pngs))
    return result


def _curve(records: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return aggregate_curves([[(e["env_steps"], e.get(metric)) for e in r["eval_history"]] for r in records])


def _plot_family(spec: ExperimentSpec, family: str, records: list[dict], out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for strategy in spec.strategies:
        rs = [r for r in records if r["family"] == family and r["strategy"] == strategy.label]
        x, mean, std = _curve(rs, spec.metric)
        if not len(x):
            continue
        line, = ax.plot(x, mean, label=f"{strategy.label} ({len(rs)} seeds)")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("env steps trained on (learner's axis)")
    ax.set_ylabel(spec.metric.replace("_", " "))
    ax.set_title(f"{spec.name}: {family}\n(mean ± std over seeds)", fontsize=10)  # long names fit
    ax.legend()
    fig.tight_layout()
    name = f"curves-{family}.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _fmt(mean: float, std: float, n: int) -> str:
    return "-" if n == 0 else f"{mean:.3f} ± {std:.3f}"


def _markdown(spec: ExperimentSpec, records: list[dict], pending: list[Cell], pngs: dict[str, str | None]) -> str:
    lines = [f"# {spec.name}", ""]
    if spec.about:
        lines += [spec.about, ""]
    lines += [f"Command: `hindsight experiment {spec.path}`. Final evaluation (the learner's latest weights)",
              f"per strategy, mean ± std over seeds; metric `{spec.metric}`.", ""]
    for family in spec.families:
        lines += [f"## {family.label}", "",
                  "| strategy | seeds | final return | final success rate | env steps | wall (s) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for strategy in spec.strategies:
            rs = [r for r in records if r["family"] == family.label and r["strategy"] == strategy.label]
            ret = _mean_std([r["final"]["return_mean"] for r in rs])
            succ = _mean_std([r["final"]["success_rate"] for r in rs])
            steps = _mean_std([r["env_steps"] for r in rs])
            wall = _mean_std([r["wall_time_s"] for r in rs])
            lines.append(f"| {strategy.label} | {len(rs)}/{len(spec.seeds)} | {_fmt(*ret)} | {_fmt(*succ)} | "
                         f"{'-' if not rs else f'{steps[0]:.0f}'} | {'-' if not rs else f'{wall[0]:.0f}'} |")
        lines.append("")
        if pngs.get(family.label):
            lines += [f"![{family.label}]({pngs[family.label]})", ""]
    if pending:
        lines += [f"Not run yet: {len(pending)} cell(s) "
                  f"({', '.join(f'{c.family.label}/{c.strategy.label}/seed{c.seed}' for c in pending[:8])}"
                  f"{', ...' if len(pending) > 8 else ''}).", ""]
    return "\n".join(lines)
