"""Every benchmark runs in quick mode and writes its fields (no timing is asserted)."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from hindsight.cli import main


def _bench(name: str, tmp_path, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["bench", name, "--quick", "--json", str(out), *extra]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == name and result["quick"] is True
    assert "load_average_at_start" in result["machine"]
    return result


def _number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.ray
def test_bench_rollout_fields(tmp_path):
    r = _bench("rollout", tmp_path)
    for key in ("worker_env_steps_per_s", "bare_env_steps_per_s", "gym_halfcheetah_steps_per_s",
                "ratio", "ratio_vs_gym_halfcheetah"):
        assert _number(r[key]), key
    sc = r["scaling"]
    assert _number(sc["W=1"]["env_steps_per_s"]) and _number(sc["efficiency_all_cores"])
    for key in ("bare_env_efficiency_all_cores", "efficiency_over_machine_all_cores"):
        assert _number(sc[key]), key
    assert sc["W=1"]["bare_env_efficiency"] == 1.0
    assert _number(sc["efficiency_one_round_all_cores"]) and sc["rounds_per_worker"] == 2


def test_scaling_rates_count_only_the_window_all_workers_ran():
    """Hand-computed: worker A's rounds (0-2 s, 100 steps), (2-4 s, 100); B's (1-3 s, 60),
    (3-5 s, 60). All ran from 1 s to 4 s: A made 50 + 100 of its steps there, B 60 + 30, so
    240 steps in 3 s. The first rounds to the slowest's end: 160 steps in 3 s."""
    from benchmarks.rollout import _barrier_rate, _window_rate

    runs = [[(0.0, 2.0, 100), (2.0, 4.0, 100)], [(1.0, 3.0, 60), (3.0, 5.0, 60)]]
    assert _window_rate(runs) == pytest.approx(80.0)
    assert _barrier_rate(runs) == pytest.approx(160.0 / 3.0)
    one = [[(0.0, 1.0, 10), (1.0, 3.0, 30)]]  # one worker: its steps over its whole time
    assert _window_rate(one) == pytest.approx(40.0 / 3.0)
    assert _barrier_rate(one) == pytest.approx(10.0)


def test_bench_learner_fields(tmp_path):
    r = _bench("learner", tmp_path)
    for key in ("ours_updates_per_s", "plain_updates_per_s", "ratio", "ratio_of_flop_ceiling"):
        assert _number(r[key]), key
    one = r["one_thread"]
    assert one["matmuls_per_update"] > 0 and one["flops_per_update"] > 0 and _number(one["ceiling_updates_per_s"])
    assert "all_cores" in r or r["machine"]["cores"] == 1
    if "all_cores" in r:  # the two-branch update, eager and compiled, at every core
        for key in ("branches_updates_per_s", "branches_compiled_updates_per_s", "ratio_of_flop_ceiling_branches"):
            assert _number(r["all_cores"][key]), key
        assert _number(r["all_cores_default_updates_per_s"]) and _number(r["speedup_all_cores_default_path"])
    for fam in ("point_reacher", "point_trajectory"):  # the GH families' update, unflushed and flushed
        row = r["denormals"][fam]
        assert _number(row["ieee_updates_per_s"]) and _number(row["flushed_updates_per_s"])
        assert 0 <= row["ieee_denormal_fraction"] <= 1 and _number(row["flushed_over_ieee"])
        assert row["flushed_denormal_fraction"] == 0 or not torch.set_flush_denormal(False)  # none survive a flush
    from learner.core import cpu_bf16_matmul_supported

    bf16 = r["bf16_matmul"]  # learner.bf16_matmul: float32 and bfloat16-product matmuls, same run
    assert bf16["supported"] == cpu_bf16_matmul_supported()
    if bf16["supported"]:
        for key in ("compiled_updates_per_s_fp32", "compiled_updates_per_s_bf16", "speedup",
                    "ceiling_updates_per_s_bf16", "ratio_of_flop_ceiling_bf16"):
            assert _number(bf16[key]), key
        assert _number(r["speedup_bf16_matmul"])
        assert "all_cores" not in r or _number(bf16["speedup_branches"])
    else:
        assert "bfloat16" in bf16["note"]


def test_bench_learner_cuda_needs_a_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        r = _bench("learner", tmp_path, "--device", "cuda")
        assert _number(r["updates_per_s"]) and _number(r["ratio_of_flop_ceiling"])
    else:  # a clear one-line error, not a traceback
        assert main(["bench", "learner", "--quick", "--device", "cuda"]) != 0
        assert "no CUDA device" in capsys.readouterr().err


def test_bench_relabel_fields(tmp_path):
    r = _bench("relabel", tmp_path)
    for block in ("air_linear", "air_nonlinear", "air_nonlinear_pool", "air_linear_pool"):
        for M in (1, 16):
            row = r[block][f"M={M}"]
            assert _number(row["steady_speedup_vs_naive"]) and _number(row["cold_speedup_vs_naive"])
    assert r["air_nonlinear_pool"]["air_candidates"] == "pool"
    assert _number(r["min_speedup_required_cases"])
    cap = r["capacity"]
    assert _number(cap["min_ratio"]) and cap["production"]["half_cheetah_mo"]["trajectories_per_s"] > 0
    assert set(cap["strategies"]) == {"half_cheetah_mo", "reacher_goal", "point_reacher", "point_trajectory"}
    # every strategy a relabel worker runs, on each family it applies to (HER: goal families)
    every = {"air (fresh)", "air (pool)", "advantage", "max_reward", "hipi", "random", "none"}
    float32 = {"air (fresh, float32)", "air (pool, float32)"}  # point_reacher's opt-in air_precision
    compiled = {"air (fresh, compiled)", "air (pool, compiled)"}  # the point families' opt-in air_kernel
    both = {"air (fresh, compiled, float32)", "air (pool, compiled, float32)"}  # the kernel in float32
    assert set(cap["strategies"]["point_reacher"]) == every | float32 | compiled | both | {"her_final", "her_future"}
    assert set(cap["strategies"]["point_trajectory"]) == every | compiled
    rows = [row for fam in cap["strategies"].values() for row in fam.values()]
    assert all(_number(row["ratio"]) for row in rows)
    # the sizing: enough relabel workers for the target at that ratio, and no more
    for row in rows:
        n = row["relabel_workers_for_target"]
        assert n >= 1 and n * row["ratio"] >= cap["target_ratio"] * (1 - 1e-9), row
        assert n == 1 or (n - 1) * row["ratio"] < cap["target_ratio"], row


def test_bench_relabel_capacity_only(tmp_path, capsys):
    r = _bench("relabel", tmp_path, "--families", "point_reacher", "--strategies", "air", "--per-call", "4")
    # the console says which targets this run met (the JSON went to stdout and the file)
    err = capsys.readouterr().err
    assert "relabel: targets on this machine" in err and "capacity.min_ratio" in err, err
    assert set(r) >= {"capacity"} and "air_linear" not in r
    cap = r["capacity"]
    assert cap["trajectories_per_call"] == 4 and set(cap["strategies"]) == {"point_reacher"}
    assert set(cap["strategies"]["point_reacher"]) == {"air (fresh)", "air (pool)", "air (fresh, float32)",
                                                       "air (pool, float32)", "air (fresh, compiled)",
                                                       "air (pool, compiled)", "air (fresh, compiled, float32)",
                                                       "air (pool, compiled, float32)"}


def test_bench_relabel_only_options_refused_elsewhere(capsys):
    assert main(["bench", "store", "--quick", "--families", "point_reacher"]) != 0
    assert "--families applies to the relabel benchmark only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ray
def test_bench_e2e_fields():
    """One quick Hindsight run (none, one worker) and, when installed, SB3's quick run."""
    from benchmarks import e2e

    r = e2e.run(quick=True, strategies=("none",), workers=(1,))
    run = r["hindsight"]["none_w1"]
    assert run["env_steps"] >= r["settings"]["budget"] and run["updates"] > 0
    assert _number(run["env_steps_per_s"])
    # the run's learner alone, from its final checkpoint, at the run's thread count
    assert run["learner_threads"] >= 1 and _number(run["isolated_learner_updates_per_s"])
    assert isinstance(run["learner_parallel_branches"], bool)  # quick nets (64 wide): one branch
    # timed alone before the run (fresh networks) and after it: the rate is their mean
    before, after = run["isolated_learner_updates_per_s_before"], run["isolated_learner_updates_per_s_after"]
    assert _number(before) and _number(after)  # the learner picked the predicted threads
    assert run["isolated_learner_updates_per_s"] == pytest.approx((before + after) / 2, abs=0.02)
    if "window" not in run:
        assert _number(run["learner_in_run_over_isolated"])
        cores = run["cores_in_window"]  # where the cores went in that window (Linux: /proc)
        if cores is not None:
            assert cores["learner"] > 0 and cores["total"] >= cores["learner"] and cores["idle"] >= 0
            # the learner's CPU in the run over its CPU alone (isolated_learner_cores)
            assert run["learner_cores_in_run_over_isolated"] == pytest.approx(
                cores["learner"] / run["isolated_learner_cores"], abs=2e-3)
    if "error" in r["sb3"]:
        assert "pip install" in r["sb3"]["error"] and r["ratio_vs_sb3_none"] is None
    else:
        assert _number(r["sb3"]["env_steps_per_s"]) and _number(r["ratio_vs_sb3_none"])
        assert r["sb3"]["matmul_precision"] == "none"  # as the learner's (learner.bf16_matmul off)
    assert run["learner_matmul_precision"] == "none"


def test_bench_e2e_times_the_learner_alone_at_its_matmul_precision():
    """``learner.bf16_matmul``: the learner timed alone in a process of its own runs with the
    run's matmul precision (the child reports it; the benchmark refuses a timing at another),
    on a CPU with native bfloat16 or not."""
    from benchmarks.e2e import fresh_learner_rate
    from hindsight.config import load_config

    for bf16 in ("false", "true"):
        cfg = load_config("smoke", [f"learner.bf16_matmul={bf16}"])
        rate, cores = fresh_learner_rate(cfg, 1, False, 0.5)
        assert _number(rate) and _number(cores)


def test_bench_e2e_learner_timing_names_what_failed_in_its_process(tmp_path):
    """The learner alone is timed in a process of its own: a failure there (here, a run
    directory with no checkpoint) reaches the benchmark as an error that says what it was."""
    from benchmarks.e2e import isolated_learner_rate

    with pytest.raises(RuntimeError, match="learner timing failed .exit 1.: FileNotFoundError.*learner.pt"):
        isolated_learner_rate(tmp_path, threads=1, seconds=0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread CPU priorities are Linux's")
def test_bench_priority_fields(tmp_path):
    from benchmarks import run_benchmark

    r = run_benchmark("priority", quick=True)
    assert set(r["cases"]) == {"alone", "normal", "nice", "idle"}
    for case, row in r["cases"].items():
        assert _number(row["updates_per_s"]) and row["learner_cores"] > 0
        assert ("load_cores" in row) == (case != "alone")
    for policy in ("normal", "nice", "idle"):
        assert r["learner_cores_kept"][policy] == pytest.approx(
            r["cases"][policy]["learner_cores"] / r["cases"]["alone"]["learner_cores"], abs=2e-3)
        assert r["cases"][policy]["load_cores"] > 0  # the load ran beside the update


def test_bench_e2e_set_typo_fails_before_any_run():
    from benchmarks import run_benchmark

    with pytest.raises(Exception, match="learner.sac.compil'"):
        run_benchmark("e2e", quick=True, overrides=["learner.sac.compil=true"])
    with pytest.raises(ValueError, match="--set applies to the e2e benchmark only"):
        run_benchmark("store", quick=True, overrides=["learner.sac.compile=true"])


def test_targets_read_each_headline_field_against_its_target():
    from benchmarks import format_targets, targets

    e2e = {"benchmark": "e2e", "ratio_vs_sb3_none": 2.0, "ratio_vs_sb3_air": 1.1, "target_ratio_vs_sb3": 1.2,
           "target_learner_in_run_over_isolated": 0.9,
           "hindsight": {"none_w1": {"learner_in_run_over_isolated": 0.95},
                         "air_w1": {"learner_in_run_over_isolated": 0.85}}}
    rows = {r["field"]: (r["value"], r["target"], r["met"]) for r in targets(e2e)}
    assert rows == {"ratio_vs_sb3_none": (2.0, 1.2, True), "ratio_vs_sb3_air": (1.1, 1.2, False),
                    "hindsight.none_w1.learner_in_run_over_isolated": (0.95, 0.9, True),
                    "hindsight.air_w1.learner_in_run_over_isolated": (0.85, 0.9, False)}
    text = format_targets({**e2e, "machine": {"cpu": "x86_64", "cores": 2}})
    assert "NOT met env steps/s over Stable-Baselines3 (air): 1.1 (target 1.2" in text
    assert "met     learner in the run over alone (none_w1): 0.95" in text
    # a value exactly at its target meets it; a field or target missing gives no line
    assert targets({"benchmark": "learner", "ratio_of_flop_ceiling": 0.8, "target_ratio_of_flop_ceiling": 0.8}) == [
        {"label": "share of the FLOP ceiling", "field": "ratio_of_flop_ceiling", "value": 0.8, "target": 0.8,
         "met": True}]
    assert targets({"benchmark": "learner", "ratio_of_flop_ceiling": 0.5}) == []
    assert targets({"benchmark": "store", "ratio_shard_vs_plain_write": 0.06}) == [] and format_targets(
        {"benchmark": "store"}) == ""
