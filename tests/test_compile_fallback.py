"""A learner whose ``torch.compile`` fails, on real local Ray: the run says why on the console
once and trains with the eager update (learner/actor.py ``_warm_up``)."""

from __future__ import annotations

import logging
import os

import pytest
import ray

from hindsight.config import load_config
from hindsight.trainer import Trainer

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def ray_without_a_compiler():
    """A Ray session whose workers see no C++ compiler: inductor reads ``CXX`` when it is
    imported in each worker, and its caches are off so that it must build. The driver's own
    inductor (imported already) is untouched."""
    import torch._inductor.config  # noqa: F401 - this process's inductor reads the variables now, unset

    saved = {k: os.environ.get(k) for k in ("CXX", "TORCHINDUCTOR_FORCE_DISABLE_CACHES")}
    os.environ.update({"CXX": "/nonexistent/bin/c++", "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_failed_compile_is_reported_once_and_the_run_trains_eager(ray_without_a_compiler, tmp_path, caplog):
    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=300", "rollout.random_steps=100",
                                "learner.min_replay=100", "eval.every_steps=1000000000", "eval.episodes=1",
                                "learner.sac.compile=true"])
    with caplog.at_level(logging.WARNING, logger="hindsight.trainer"):
        summary = Trainer(cfg, progress=False).run()
    assert "InvalidCxxCompiler" in summary["learner_compile_error"], summary["learner_compile_error"]
    assert summary["updates"] > 0
    warnings = [r.getMessage() for r in caplog.records if "torch.compile of the SAC update failed" in r.getMessage()]
    assert len(warnings) == 1 and "InvalidCxxCompiler" in warnings[0], caplog.text
