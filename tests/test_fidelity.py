"""Relabeling-fidelity study (GH Fig. 7) on a tiny run directory made without Ray.

The run is an untrained ``test_linear`` SAC state saved where a trainer would put it, so
the numbers are not GH's; what is checked is the plumbing (files, TensorBoard tags, shapes,
ranges, determinism) and that every choice equals the definition evaluated by plain loops
over (trajectory, candidate) pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from envs import get_family
from hindsight.config import dump_config, load_config
from hindsight.fidelity import STRATEGIES, pearson, run_fidelity
from learner.sac.update import init_state, load_state, make_value_fn_factory, save_state, value_weights

NUM_TASKS, EPISODES, CANDIDATES = 5, 2, 6
M = NUM_TASKS * EPISODES  # trajectories


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(None, ["env.family=test_linear"])
    fam = get_family(cfg.env.family)
    state = init_state(fam.obs_dim, fam.action_dim, fam.task_dim, cfg.learner.sac, "cpu", seed=0)
    (run / "checkpoints").mkdir()
    save_state(state, run / "checkpoints" / "learner.pt")
    (run / "config.yaml").write_text(dump_config(cfg))
    return run


@pytest.fixture(scope="module")
def study(run_dir: Path) -> dict:
    return run_fidelity(
        run_dir, num_tasks=NUM_TASKS, candidates=CANDIDATES, seed=0, episodes_per_task=EPISODES, progress=False
    )


def _tb_tags(tb_dir: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    return set(tags["scalars"]), set(tags["images"])


def _plain_returns(family, trajs, candidates, discount) -> np.ndarray:
    """R[m, k] = sum_t gamma^t r(s_t, a_t, s_t+1 | v_mk), one pair at a time."""
    M, K, _ = candidates.shape
    out = np.zeros((M, K))
    for m, traj in enumerate(trajs):
        for k in range(K):
            r = family.rewards_for(traj.steps(), np.repeat(candidates[m, k][None], traj.length, axis=0))
            out[m, k] = sum(discount**t * r[t] for t in range(traj.length))
    return out


def test_writes_json_png_and_tensorboard(study, run_dir):
    out = run_dir / "fidelity"
    assert Path(study["paths"]["json"]) == out / "fidelity.json"
    assert (out / "fidelity.png").stat().st_size > 0
    saved = json.loads((out / "fidelity.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(study["summary"]))
    assert set(saved["pairs"]) >= {"commanded", "relabeled", "chosen_index", "own_index"}
    scalars, images = _tb_tags(run_dir / "tb")
    for s in STRATEGIES:
        for k in range(3):
            assert f"fidelity/{s}/corr_dim{k}" in scalars
            assert f"fidelity/{s}/mae_dim{k}" in scalars
    assert "fidelity/scatter" in images


def test_summary_ranges(study):
    summary = study["summary"]
    assert summary["family"] == "test_linear"
    assert summary["num_trajectories"] == M and summary["candidates"] == CANDIDATES
    assert summary["reference_size"] == M  # AIR compares with all rollouts
    assert summary["policy"] == "stochastic"
    assert summary["weight_labels"] is None  # test_linear's weights are its tasks
    for s in STRATEGIES:
        entry = summary["strategies"][s]
        assert len(entry["corr"]) == len(entry["mae"]) == 3
        assert all(c is None or -1.0 <= c <= 1.0 for c in entry["corr"])
        assert all(e >= 0.0 for e in entry["mae"])
        assert 0.0 <= entry["chosen_own_fraction"] <= 1.0


def test_pairs_have_the_right_shapes(study):
    pairs, arrays = study["pairs"], study["arrays"]
    K, Z = CANDIDATES, 3
    commanded = np.asarray(pairs["commanded"])
    assert commanded.shape == (M, Z)
    np.testing.assert_array_equal(commanded[0::2], commanded[1::2])  # each task rolled out twice
    assert arrays["candidates"].shape == (M, K, Z)
    for name in ("returns", "values", "percentiles"):
        assert arrays[name].shape == (M, K), name
    np.testing.assert_array_equal(arrays["candidates"][:, -1], commanded)  # commanded task last
    assert pairs["own_index"] == K - 1
    for s in STRATEGIES:
        chosen = np.asarray(pairs["chosen_index"][s])
        relabeled = np.asarray(pairs["relabeled"][s])
        assert chosen.shape == (M,) and relabeled.shape == (M, Z)
        assert chosen.min() >= 0 and chosen.max() < K
        np.testing.assert_array_equal(relabeled, arrays["candidates"][np.arange(M), chosen])
    # the rollouts really were of the commanded tasks
    np.testing.assert_array_equal(np.stack([t.task for t in study["trajectories"]]), commanded)


def test_choices_equal_plain_loops(study, run_dir):
    fam = get_family("test_linear")
    trajs, arrays = study["trajectories"], study["arrays"]
    cand = arrays["candidates"]
    M, K, _ = cand.shape
    R = _plain_returns(fam, trajs, cand, fam.discount)
    np.testing.assert_allclose(arrays["returns"], R, rtol=1e-10, atol=1e-10)

    # max-reward (GH Eq. 6): argmax by a plain loop, ties to the lower index
    for m in range(M):
        best = 0
        for k in range(1, K):
            if R[m, k] > R[m, best]:
                best = k
        assert study["pairs"]["chosen_index"]["max_reward"][m] == best

    # advantage (GH Eq. 7) with V(s0, v) from the checkpoint's critic, one pair at a time
    state = load_state(run_dir / "checkpoints" / "learner.pt")
    value_fn = make_value_fn_factory(state.cfg, 2, 2, 3)(value_weights(state))
    V = np.array([[value_fn(trajs[m].obs[:1], cand[m : m + 1, k : k + 1])[0, 0] for k in range(K)] for m in range(M)])
    np.testing.assert_allclose(arrays["values"], V, rtol=1e-5, atol=1e-6)
    A = R - arrays["values"]
    assert study["pairs"]["chosen_index"]["advantage"] == [int(np.argmax(A[m])) for m in range(M)]

    # AIR (GH Eq. 4): percentile among all rollouts under the same candidate, ties by advantage
    for m in range(M):
        P = []
        for k in range(K):
            R_ref = _plain_returns(fam, trajs, np.repeat(cand[m : m + 1, k : k + 1], M, axis=0), fam.discount)[:, 0]
            P.append(np.mean(R[m, k] >= R_ref - 1e-12))
        best = max(range(K), key=lambda k: (P[k], A[m, k], -k))
        assert study["pairs"]["chosen_index"]["air"][m] == best, m


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    y[:, 1] = 3.0 * x[:, 1] + 1.0
    expected = [np.corrcoef(x[:, k], y[:, k])[0, 1] for k in range(4)]
    np.testing.assert_allclose(pearson(x, y), expected, atol=1e-12)
    assert pearson(x, y)[1] == pytest.approx(1.0)
    x[:, 2] = 0.5  # a constant column has no correlation
    assert np.isnan(pearson(x, y)[2])


def test_cli_runs_the_same_study(study, run_dir, tmp_path, capsys):
    """``hindsight fidelity`` with the same arguments: the same summary numbers and the same
    pairs (one seed gives one study), written to ``--out``."""
    from hindsight.cli import main

    rc = main([
        "fidelity", "--checkpoint", str(run_dir), "--num-tasks", str(NUM_TASKS), "--candidates", str(CANDIDATES),
        "--episodes-per-task", str(EPISODES), "--seed", "0", "--out", str(tmp_path),
    ])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["strategies"] == json.loads(json.dumps(study["summary"]["strategies"]))
    saved = json.loads((tmp_path / "fidelity.json").read_text())
    assert saved["pairs"] == json.loads(json.dumps(study["pairs"]))
    assert (tmp_path / "fidelity.png").exists()
