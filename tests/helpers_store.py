"""Random trajectories for the codec and store tests, independent of ``envs``.

Family "test_goal" has the dims of the lead's tiny test family: obs 2, action 2, task 2,
reward_inputs 0 wide ([T, 0]).
"""

from __future__ import annotations

import types

import numpy as np

from envs.core import UnknownFamilyError
from relabel_service.core import Trajectory

TEST_GOAL = types.SimpleNamespace(name="test_goal", obs_dim=2, action_dim=2, task_dim=2, reward_input_dim=0)


def real_registry():
    """envs.get_family when the registry exists, else None."""
    try:
        from envs import get_family
    except ImportError:
        return None
    return get_family


def family_lookup(name: str):
    """The real family when the registry knows it; the "test_goal" dims otherwise."""
    get = real_registry()
    if get is not None:
        try:
            return get(name)
        except KeyError:
            pass
    if name == "test_goal":
        return TEST_GOAL
    raise UnknownFamilyError(f"unknown task family {name!r}")


def make_traj(
    rng: np.random.Generator,
    i: int = 0,
    T: int | None = None,
    *,
    family: str = "test_goal",
    dims: tuple[int, int, int, int] = (2, 2, 2, 0),
    task: np.ndarray | None = None,
    episode_id: str | None = None,
    created_at: float | None = None,
) -> Trajectory:
    """A random, valid trajectory. dims = (obs, action, task, reward_input)."""
    O, A, Z, I = dims
    T = int(rng.integers(1, 12)) if T is None else T
    return Trajectory(
        episode_id=episode_id or f"w{i % 3}-e{i}",
        worker_id=i % 3,
        policy_version=i // 10,
        family=family,
        task=rng.uniform(-1, 1, Z) if task is None else np.asarray(task, dtype=np.float64),
        obs=rng.normal(size=(T + 1, O)).astype(np.float32),
        actions=rng.uniform(-1, 1, (T, A)).astype(np.float32),
        rewards=rng.normal(size=T).astype(np.float32),
        terminated=np.arange(T) == T - 1 if i % 2 else np.zeros(T, dtype=bool),
        truncated=bool(i % 2 == 0),
        reward_inputs=rng.normal(size=(T, I)).astype(np.float32),
        created_at=1.7e9 + i if created_at is None else created_at,
    )


def assert_traj_equal(a: Trajectory, b: Trajectory) -> None:
    """Field by field; arrays bitwise (dtype, shape, bytes; NaN payloads included)."""
    for f in ("episode_id", "worker_id", "policy_version", "family", "truncated", "created_at"):
        assert getattr(a, f) == getattr(b, f), f
    for f in ("task", "obs", "actions", "rewards", "terminated", "reward_inputs"):
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        assert x.dtype == y.dtype, (f, x.dtype, y.dtype)
        assert x.shape == y.shape, (f, x.shape, y.shape)
        assert x.tobytes() == y.tobytes(), f
