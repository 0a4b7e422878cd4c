"""HIPI's 2-D navigation mazes (HIPI appendix C.7; REFERENCE-CODE §1b), pure numpy.

A point moves in a grid maze; walls are unit cells. The layouts are the HIPI code's
(``hipi/envs/point_env.py``, after Eysenbach et al.'s search-on-the-replay-buffer envs),
optionally dilated: FourRooms x 3 is the 33 x 33 maze of the HIPI paper.

    fam = get_family("maze")                                  # FourRooms x 3, as the paper
    fam = get_family("maze", walls="Small", resize_factor=1)  # a 4 x 4 empty room (tests)
    R = fam.rewards(steps, goals)                             # [B, K] in {-1, 0}

Dynamics of one step (state s = (row, col) in [0, H] x [0, W], action a in [-1, 1]^2):
    a' = clip(a + N(0, action_noise^2 I), -1, 1)
    10 sub-steps; in each, for axis 0 then axis 1: s[axis] += a'[axis] / 10 unless the
    moved point is outside the box or inside a wall cell (then that axis stays put).
So a step moves at most one cell per axis and slides along walls.

Task = goal g in R^2. On the PRE-step state s_t, as HIPI's ``TaskDistribution`` evaluates:
    at_goal = ||s_t - g|| < at_goal_dist (1.0)
    r = 1[at_goal] - 1  (``negative_reward=True``, default; {0, 1} otherwise)
    terminated = at_goal
A goal family: achieved_goal = s_t, so HER's hindsight goal of a step scores r = 0 there.

Start and goals as HIPI's paper: the start is fixed at the corner (0, 0) (HIPI code
``random_initial_state=False``) and goals are uniform over the free space (a free cell plus
U[0, 1)^2) at least ``min_goal_distance`` away from the start (Euclidean, as the code's
rejection loop; the paper says "at least 15 steps away"). Horizon 75 (the HIPI README's
``max_episode_steps`` for 2-D navigation); the time limit is a truncation, not a terminal.

Difference from the HIPI code: it draws ONE scalar noise value and adds it to both action
components (``np.random.normal(0, sigma)`` without a size); we draw one per component, the
isotropic noise the paper describes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.core import StepBatch, TaskFamily

#: Wall layouts (1 = wall) of HIPI's ``point_env.py``; rows are the first coordinate.
WALLS: dict[str, np.ndarray] = {
    "Small": np.zeros((4, 4), dtype=np.int8),
    "Cross": np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=np.int8,
    ),
    "FourRooms": np.array(
        [
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            [1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1],
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
        ],
        dtype=np.int8,
    ),
}


def resize_walls(walls: np.ndarray, factor: int) -> np.ndarray:
    """Dilate a layout: every cell becomes a factor x factor block ([H, W] -> [fH, fW])."""
    if factor < 1:
        raise ValueError(f"resize_factor must be >= 1, got {factor}")
    return np.kron(walls, np.ones((factor, factor), dtype=walls.dtype))


def blocked(walls: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Whether points are outside [0, H] x [0, W] or inside a wall cell: [..., 2] -> bool [...].

    A point on the far boundary (row == H or col == W) belongs to the last cell."""
    H, W = walls.shape
    s = np.asarray(states, dtype=np.float64)
    outside = (s[..., 0] < 0) | (s[..., 0] > H) | (s[..., 1] < 0) | (s[..., 1] > W)
    i = np.clip(np.floor(s[..., 0]).astype(np.int64), 0, H - 1)
    j = np.clip(np.floor(s[..., 1]).astype(np.int64), 0, W - 1)
    return outside | (walls[i, j] == 1)


def maze_step(walls: np.ndarray, states: np.ndarray, actions: np.ndarray, substeps: int = 10) -> np.ndarray:
    """B points in lockstep: states [B, 2], (noisy, clipped) actions [B, 2] -> next states [B, 2].

    ``substeps`` moves of a / substeps, axis by axis; a move that would leave the box or
    enter a wall is skipped for that axis (HIPI's ``PointDynamics.step``)."""
    s = np.array(states, dtype=np.float64)
    a = np.asarray(actions, dtype=np.float64)
    dt = 1.0 / substeps
    for _ in range(substeps):
        for axis in range(2):
            moved = s.copy()
            moved[:, axis] += dt * a[:, axis]
            ok = ~blocked(walls, moved)
            s[ok] = moved[ok]
    return s


class MazeEnv(gym.Env):
    """One maze episode for one goal; reward and termination come from the family."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, family: "Maze", task: np.ndarray):
        self.family = family
        H, W = family.walls.shape
        self.observation_space = gym.spaces.Box(np.zeros(2), np.array([H, W], dtype=np.float64), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.task = np.zeros(2)
        self.set_task(task)
        self._s = family.start.copy()
        self._t = 0

    def set_task(self, task: np.ndarray) -> None:
        self.task = self.family.check_tasks(np.asarray(task)[None])[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._s = self.family.start.copy()
        self._t = 0
        return self._s.copy(), {}

    def step(self, action: Any):
        fam = self.family
        a = np.asarray(action, dtype=np.float64).reshape(2)
        noisy = a + fam.action_noise * self.np_random.normal(size=2) if fam.action_noise > 0 else a
        obs = self._s
        self._s = maze_step(fam.walls, obs[None], np.clip(noisy, -1.0, 1.0)[None], fam.substeps)[0]
        self._t += 1
        steps = StepBatch(obs[None], a[None], self._s[None].copy(), np.zeros((1, 0)))
        reward = float(fam.rewards_for(steps, self.task[None])[0])
        terminated = bool(fam.terminals_for(steps, self.task[None])[0])
        truncated = self._t >= fam.horizon and not terminated
        return self._s.copy(), reward, terminated, truncated, {"reward_inputs": np.zeros(0)}


class Maze(TaskFamily):
    """HIPI 2-D navigation (see the module docstring). Task = goal (row, col)."""

    name = "maze"
    obs_dim = 2
    action_dim = 2
    task_dim = 2
    reward_input_dim = 0
    horizon = 75
    discount = 0.99
    goal_dim = 2
    task_dependent_termination = True

    def __init__(
        self,
        walls: str = "FourRooms",
        resize_factor: int = 3,
        action_noise: float = 1.0,
        substeps: int = 10,
        at_goal_dist: float = 1.0,
        min_goal_distance: float = 15.0,
        negative_reward: bool = True,
        start: tuple[float, float] = (0.0, 0.0),
    ):
        if walls not in WALLS:
            raise ValueError(f"maze: unknown walls {walls!r}; valid: {', '.join(sorted(WALLS))}")
        if action_noise < 0 or substeps < 1 or at_goal_dist <= 0 or min_goal_distance < 0:
            raise ValueError(
                f"maze: need action_noise >= 0, substeps >= 1, at_goal_dist > 0, min_goal_distance >= 0; got "
                f"{action_noise}, {substeps}, {at_goal_dist}, {min_goal_distance}"
            )
        self.walls_name = walls
        self.walls = resize_walls(WALLS[walls], int(resize_factor))
        self.action_noise = float(action_noise)
        self.substeps = int(substeps)
        self.at_goal_dist = float(at_goal_dist)
        self.min_goal_distance = float(min_goal_distance)
        self.negative_reward = bool(negative_reward)
        self.start = np.asarray(start, dtype=np.float64)
        if self.start.shape != (2,) or blocked(self.walls, self.start):
            raise ValueError(f"maze: start {start} must be a free point of the {walls} x{resize_factor} maze")
        free = np.argwhere(self.walls == 0)  # [C, 2] free cells
        far = np.linalg.norm(free + 0.5 - self.start, axis=-1) + np.sqrt(0.5) >= self.min_goal_distance
        if not far.any():
            raise ValueError(
                f"maze: no free cell lies {min_goal_distance} from the start in the {walls} x{resize_factor} maze"
            )
        self._free = free[far]  # cells that can hold a goal

    def _sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        out = np.zeros((0, 2))
        while len(out) < n:  # rejection as HIPI's goal sampler, a whole batch per round
            m = 2 * (n - len(out)) + 8
            g = self._free[rng.integers(len(self._free), size=m)] + rng.uniform(size=(m, 2))
            ok = np.linalg.norm(g - self.start, axis=-1) >= self.min_goal_distance
            out = np.concatenate([out, g[ok]])
        return out[:n]

    def _at_goal(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.achieved_goal(steps) - tasks, axis=-1) < self.at_goal_dist

    def reward_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        r = self._at_goal(steps, tasks).astype(np.float64)
        return r - 1.0 if self.negative_reward else r

    def terminal_fn(self, steps: StepBatch, tasks: np.ndarray) -> np.ndarray:
        return self._at_goal(steps, tasks)

    def achieved_goal(self, steps: StepBatch) -> np.ndarray:
        """The pre-step position s_t [..., 2] (what the reward tests)."""
        return np.asarray(steps.obs, dtype=np.float64)[..., :2]

    def with_goal(self, tasks: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return np.array(goals, dtype=np.float64)

    def make_env(self, task: np.ndarray, seed: int | None = None) -> gym.Env:
        env = MazeEnv(self, task)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "walls": self.walls_name, "shape": list(self.walls.shape),
                "action_noise": self.action_noise}
