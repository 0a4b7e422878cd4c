"""Single-process multi-task SAC learns ``test_goal`` (no relabeling, no Ray) on the CPU.

test_goal: a 2-D point starts at the origin, moves at most 0.2 per axis per step for 10
steps, r = -||p' - g|| for a goal g uniform in [-1, 1]^2. On the family's 8 fixed eval
tasks a uniform random policy scores about -8 (measured -7.7 .. -8.7 over seeds), the
greedy oracle a = clip((g - p) / 0.2) scores -0.94, and SAC after 2,000 env steps
(500 random warm-up, 1 update per step, 64x64 nets, lr 3e-3) scores -1.2 .. -1.35 on seeds
0-3 in about 5 s on one thread.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from envs.testing import TestGoal
from learner.local import evaluate, train_local
from learner.sac.config import sac_config_for


@pytest.mark.slow
def test_sac_beats_random_on_test_goal() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        family = TestGoal()
        start = time.perf_counter()
        out = train_local(family, sac_config_for(family), env_steps=2_000, seed=0, warmup_steps=500,
                          updates_per_step=1.0, eval_episodes=None, progress=False)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)

    trained, random = out["eval"]["mean_return"], out["random_eval"]["mean_return"]
    oracle = evaluate(lambda obs, goal: np.clip((goal - obs) / 0.2, -1.0, 1.0), family, family.eval_tasks())
    print(f"random {random:.3f}  trained {trained:.3f}  oracle {oracle['mean_return']:.3f}  {elapsed:.1f}s")
    assert out["updates"] == 1_500 and out["env_steps"] == 2_000
    assert random < -6.0
    assert trained > -2.5, f"SAC reached only {trained:.3f} (random {random:.3f})"
    assert trained - random > 5.0

    # the same checkpoint evaluates to the same numbers
    again = train_local(family, sac_config_for(family), env_steps=600, seed=0, warmup_steps=500,
                        progress=False)
    again2 = train_local(family, sac_config_for(family), env_steps=600, seed=0, warmup_steps=500,
                         progress=False)
    assert again["eval"] == again2["eval"] and again["metrics"] == again2["metrics"]


@pytest.mark.slow
def test_sac_learns_test_goal_with_bf16_matmuls() -> None:
    """``learner.bf16_matmul`` (bfloat16 products, float32 accumulation) on the same run as
    above: it still learns, and it is not the float32 run (the switch took effect)."""
    from learner.core import cpu_bf16_matmul_supported, cpu_bf16_matmuls

    if not cpu_bf16_matmul_supported():
        pytest.skip("this CPU has no native bfloat16 matmuls (AVX512-BF16 or AMX)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        family = TestGoal()
        with cpu_bf16_matmuls(True):
            out = train_local(family, sac_config_for(family), env_steps=2_000, seed=0, warmup_steps=500,
                              updates_per_step=1.0, eval_episodes=None, progress=False)
        fp32 = train_local(family, sac_config_for(family), env_steps=600, seed=0, warmup_steps=500, progress=False)
        with cpu_bf16_matmuls(True):
            bf16 = train_local(family, sac_config_for(family), env_steps=600, seed=0, warmup_steps=500,
                               progress=False)
    finally:
        torch.set_num_threads(threads)
    trained, random = out["eval"]["mean_return"], out["random_eval"]["mean_return"]
    assert trained > -2.5 and trained - random > 5.0, (trained, random)
    assert bf16["metrics"] != fp32["metrics"]
