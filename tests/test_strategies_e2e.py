"""Every relabel strategy end to end on real local Ray (short budgets): the run completes,
the learner trains, and relabel statistics reach TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from hindsight.config import load_config
from hindsight.trainer import Trainer
from relabel_service.strategies import strategy_names
from tests.helpers_tb import tb_tags

pytestmark = [pytest.mark.ray]

STRATEGIES = sorted({*strategy_names(), "hipi_rl"})


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_runs_end_to_end(ray_session, tmp_path, strategy):
    # hipi_rl scores every batch row under every row's task with the critic (B^2 rows): at
    # batch 64 its updates cost about what the others' do at the default batch
    extra = ["learner.sac.batch_size=64"] if strategy == "hipi_rl" else []
    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=500", f"relabel.strategy={strategy}", "eval.every_steps=250",
                                *extra])
    s = Trainer(cfg, progress=False).run()
    assert s["env_steps"] >= 500
    assert s["updates"] > 0
    assert s["strategy"] == strategy
    tags = tb_tags(Path(s["run_dir"]) / "tb")
    if strategy == "hipi_rl":
        assert any(t.startswith("relabel_in_learner/") for t in tags), sorted(tags)
    else:
        assert "relabel/fraction_relabeled" in tags
    assert s["transitions_inserted"] >= s["env_steps"]
    if strategy in ("random", "air", "hipi", "her_final", "her_future"):
        # these always add a relabeled copy next to the original
        assert s["transitions_inserted"] > s["env_steps"]


@pytest.mark.timeout(240)
def test_results_of_prefetched_relabel_calls_keep_the_cursors_moving_forward(ray_session, tmp_path):
    """Four one-trajectory relabel calls queued on the worker: ray.wait returns their results
    in any order once several have finished. The run still ends (the store drained up to
    the cursors) and its recorded cursors are the end of every shard."""
    import json

    from relabel_service.store.shard import Shard

    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=600", "relabel.strategy=none",
                                "relabel.prefetch=4", "relabel.batch_trajectories=1", "learner.checkpoint_every=5",
                                "eval.every_steps=10000"])
    s = Trainer(cfg, progress=False).run()
    run_dir = Path(s["run_dir"])
    cursors = json.loads((run_dir / "trainer_state.json").read_text())["cursors"]
    ends = {}
    for d in sorted((run_dir / "store").glob("shard-*")):
        shard = Shard(d, int(d.name.split("-")[1]), background_sync=False)
        ends[str(shard.shard_id)] = shard.read(0, 1 << 20)[1]  # one past its last record
        shard.close()
    assert cursors == ends


def test_bf16_matmul_reaches_the_learner(ray_session, tmp_path, caplog):
    """``learner.bf16_matmul=true``: the learner's process computes its float32 matmuls with
    bfloat16 products where the CPU has them natively, and the run says so where it does not."""
    from learner.core import cpu_bf16_matmul_supported

    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=300", "relabel.strategy=none",
                                "learner.bf16_matmul=true"])
    with caplog.at_level("WARNING", logger="hindsight.trainer"):
        s = Trainer(cfg, progress=False).run()
    assert s["updates"] > 0
    if cpu_bf16_matmul_supported():
        assert s["learner_matmul_precision"] == "bf16"
    else:
        assert s["learner_matmul_precision"] == "none"
        assert "no native bfloat16" in caplog.text
