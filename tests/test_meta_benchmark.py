"""The meta-RL comparison's table code (benchmarks/meta_learning.py) on a hand-made result:
per-evaluation mean and std over seeds, duplicate final evaluations dropped."""

from __future__ import annotations

import json

import pytest

from benchmarks import meta_learning as ml


def _run(strategy, seed, hist):
    return {"strategy": strategy, "seed": seed, "eval_history": [
        {"iteration": it, "env_steps": 100 * it, "return_mean": ret, "success_rate": succ} for it, ret, succ in hist]}


def test_dedupe_keeps_one_entry_per_iteration_in_order():
    h = [{"iteration": 2, "x": 1}, {"iteration": 4, "x": 2}, {"iteration": 4, "x": 3}]
    assert ml._dedupe(h) == [{"iteration": 2, "x": 1}, {"iteration": 4, "x": 3}]


def test_per_evaluation_mean_and_std_over_seeds():
    runs = [_run("hfr", 0, [(2, -10.0, 0.0), (4, -6.0, 0.5)]),
            _run("hfr", 1, [(2, -14.0, 0.5), (4, -8.0, 1.0)]),
            _run("none", 0, [(2, -9.0, None), (4, -9.0, None)]),
            _run("none", 1, [(2, -11.0, None)])]  # seed 1 never reached iteration 4
    rows = ml.per_evaluation(runs, ["hfr", "none"])
    by = {(r["strategy"], r["iteration"]): r for r in rows}
    assert set(by) == {("hfr", 2), ("hfr", 4), ("none", 2)}
    assert by["hfr", 2]["return_mean"] == -12.0 and by["hfr", 2]["return_std"] == 2.0
    assert by["hfr", 4]["return_mean"] == -7.0 and by["hfr", 4]["return_std"] == 1.0
    assert by["hfr", 4]["success_mean"] == 0.75 and by["hfr", 4]["success_std"] == 0.25
    assert by["none", 2]["return_mean"] == -10.0 and by["none", 2]["success_mean"] is None
    table = ml.markdown({"families": {"fam": {"per_eval": rows}}})
    assert "| hfr | 4 | 400 | -7.00 ± 1.00 | 0.75 ± 0.25 | 2 |" in table
    assert "| none | 2 | 200 | -10.00 ± 1.00 | - | 2 |" in table


def test_from_json_rerenders_table_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    result = {"strategies": ["hfr"], "families": {"fam": {"runs": [
        _run("hfr", 0, [(1, -3.0, 0.0), (1, -3.0, 0.0), (2, -1.0, 1.0)]),
        _run("hfr", 1, [(1, -5.0, 0.0), (2, -2.0, 0.0)])]}}}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(result))
    ml.main(["--from-json", str(f), "--logdir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "| hfr | 1 | 100 | -4.00 ± 1.00 | 0.00 ± 0.00 | 2 |" in out
    assert "| hfr | 2 | 200 | -1.50 ± 0.50 | 0.50 ± 0.50 | 2 |" in out
    assert (tmp_path / "out" / "meta-learning-fam.png").stat().st_size > 0
