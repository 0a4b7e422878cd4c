"""Normalisation statistics that a family ships as a data file.

    python -m envs.stats cheetah_highdim                 # writes envs/data/cheetah_highdim_stats.json
    python -m envs.stats cheetah_highdim --out /tmp/s.json --episodes 20 --seed 1

``cheetah_highdim`` (HFR Cheetah-Highdim) rewards w . (s' - mean) / std. The reference code
loads mean and std from a pickle in its repository whose provenance it does not record; its
values (root x mean -0.20, std 0.25; joint velocities std 4-5.5) look like states of short
random-action episodes. We compute ours the same way, reproducibly: ``episodes`` episodes of
``horizon`` steps of HalfCheetah-v5 (root x in the observation, default reset noise), each reset
with seed ``seed + i``, actions uniform in [-1, 1] from ``np.random.default_rng(seed)``; the
statistics are over every post-step observation s' (what the reward normalises). The file also
records how it was made, so a different set can be compared or regenerated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def cheetah_highdim_stats(episodes: int = 100, horizon: int = 200, seed: int = 0) -> dict[str, Any]:
    """mean, std, min, max [18] of HalfCheetah-v5's [qpos, qvel] after random-action steps."""
    import gymnasium as gym
    import mujoco

    if episodes < 2 or horizon < 1:
        raise ValueError(f"cheetah_highdim stats need episodes >= 2 and horizon >= 1, got {episodes}, {horizon}")
    env = gym.make("HalfCheetah-v5", exclude_current_positions_from_observation=False)
    rng = np.random.default_rng(seed)
    states = np.empty((episodes, horizon, 18))
    for i in range(episodes):
        env.reset(seed=seed + i)
        actions = rng.uniform(-1.0, 1.0, size=(horizon, 6))
        for t in range(horizon):  # a simulator: one step at a time
            states[i, t] = env.step(actions[t])[0]
    env.close()
    flat = states.reshape(-1, 18)
    return {
        "family": "cheetah_highdim",
        "mean": flat.mean(axis=0).tolist(),
        "std": flat.std(axis=0).tolist(),
        "min": flat.min(axis=0).tolist(),
        "max": flat.max(axis=0).tolist(),
        "made_by": {
            "command": f"python -m envs.stats cheetah_highdim --episodes {episodes} --horizon {horizon} --seed {seed}",
            "env": "HalfCheetah-v5, exclude_current_positions_from_observation=False",
            "policy": "uniform random actions in [-1, 1]",
            "samples": int(flat.shape[0]),
            "gymnasium": gym.__version__,
            "mujoco": mujoco.__version__,
        },
    }


STATS = {"cheetah_highdim": cheetah_highdim_stats}


def main(argv: list[str] | None = None) -> int:
    from envs.meta_families import HIGHDIM_STATS_PATH

    parser = argparse.ArgumentParser(prog="python -m envs.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=sorted(STATS))
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help=f"default: {HIGHDIM_STATS_PATH}")
    args = parser.parse_args(argv)
    stats = STATS[args.family](episodes=args.episodes, horizon=args.horizon, seed=args.seed)
    out = args.out or HIGHDIM_STATS_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=1) + "\n")
    print(f"wrote {out} ({stats['made_by']['samples']} states)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
