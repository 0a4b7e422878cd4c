"""Per-task replay for PEARL on the learner's device: one preallocated tensor per field
with a task axis, so a meta-batch of T tasks x B rows is one gather.

    rl = TaskReplay(num_tasks=100, capacity=100_000, obs_dim=20, action_dim=6, device=dev)
    rl.add(task_index, obs, action, reward, next_obs, terminated)     # rows of one or more tasks
    batch = rl.sample(task_ids [T], 256, generator)                   # MetaBatch [T, 256, ...]
    rl.clear([3, 7])                                                  # encoder buffers, per iteration

PEARL keeps an RL buffer and an encoder buffer per training task (oyster
``MultiTaskReplayBuffer``); HFR's relabeled trajectories go only to the chosen task's
buffers (REFERENCE-CODE.md §5). Storage is ``torch.empty``: untouched capacity costs no
memory on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from learner.pearl.losses import MetaBatch

_FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


class TaskReplay:
    """N ring buffers of capacity C, one per task, sampled together."""

    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, action_dim: int,
                 device: torch.device | str = "cpu"):
        if num_tasks < 1 or capacity < 1:
            raise ValueError(f"TaskReplay needs num_tasks >= 1 and capacity >= 1, got {num_tasks}, {capacity}")
        self.num_tasks, self.capacity = int(num_tasks), int(capacity)
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.device = torch.device(device)
        f32 = {"dtype": torch.float32, "device": self.device}
        n, c = self.num_tasks, self.capacity
        self._data = MetaBatch(
            obs=torch.empty(n, c, obs_dim, **f32),  # [N, C, O]
            action=torch.empty(n, c, action_dim, **f32),  # [N, C, A]
            reward=torch.empty(n, c, **f32),  # [N, C]
            next_obs=torch.empty(n, c, obs_dim, **f32),  # [N, C, O]
            terminated=torch.empty(n, c, dtype=torch.bool, device=self.device),  # [N, C]
        )
        self._next = np.zeros(n, dtype=np.int64)  # slot of each task's next row
        self._size = np.zeros(n, dtype=np.int64)
        self._size_t = torch.zeros(n, dtype=torch.int64, device=self.device)  # mirror for sampling

    def sizes(self) -> np.ndarray:
        return self._size.copy()

    def __len__(self) -> int:
        return int(self._size.sum())

    def add(self, task_index: np.ndarray | int, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray) -> None:
        """Append rows; ``task_index`` is one int or one per row [B]. A task's rows keep their order."""
        n = len(reward)
        if n == 0:
            return
        tasks = np.broadcast_to(np.asarray(task_index, dtype=np.int64), (n,))
        if tasks.min() < 0 or tasks.max() >= self.num_tasks:
            raise ValueError(f"TaskReplay: task index outside [0, {self.num_tasks}): {np.unique(tasks).tolist()}")
        if np.shape(obs) != (n, self.obs_dim) or np.shape(action) != (n, self.action_dim):
            raise ValueError(f"TaskReplay: obs {np.shape(obs)} / action {np.shape(action)} do not fit "
                             f"({n}, {self.obs_dim}) / ({n}, {self.action_dim})")
        rows = [np.asarray(x) for x in (obs, action, reward, next_obs, terminated)]
        for t in np.unique(tasks):  # one contiguous write per task present (insert path, not sampling)
            sel = np.flatnonzero(tasks == t)
            self._add_one(int(t), [x[sel] for x in rows])
        self._size_t.copy_(torch.as_tensor(self._size))

    def _add_one(self, t: int, rows: list[np.ndarray]) -> None:
        n = len(rows[0])
        if n > self.capacity:
            rows = [x[n - self.capacity:] for x in rows]
            n = self.capacity
        slots = (self._next[t] + np.arange(n)) % self.capacity
        idx = torch.as_tensor(slots, device=self.device)
        for store, x in zip(self._data, rows):
            store[t, idx] = torch.as_tensor(x).to(self.device, store.dtype)
        self._next[t] = (self._next[t] + n) % self.capacity
        self._size[t] = min(self._size[t] + n, self.capacity)

    def clear(self, task_ids: Any) -> None:
        """Empty the given tasks' buffers (oyster clears a task's encoder buffer each iteration)."""
        ids = np.atleast_1d(np.asarray(task_ids, dtype=np.int64))
        self._next[ids] = 0
        self._size[ids] = 0
        self._size_t.copy_(torch.as_tensor(self._size))

    def sample(self, task_ids: torch.Tensor, n: int, generator: torch.Generator | None = None) -> MetaBatch:
        """n rows per task drawn uniformly with replacement: task_ids [T] -> MetaBatch [T, n, ...]."""
        task_ids = task_ids.to(self.device)
        sizes = self._size_t[task_ids]  # [T]
        if bool((sizes == 0).any()):
            empty = task_ids[sizes == 0].tolist()
            raise RuntimeError(f"TaskReplay: cannot sample tasks {empty}: their buffers are empty")
        u = torch.rand(len(task_ids), n, generator=generator, device=self.device)  # [T, n]
        idx = (u * sizes[:, None]).long().clamp_max_(sizes[:, None] - 1)
        rows = task_ids[:, None]
        return MetaBatch(*(x[rows, idx] for x in self._data))

    def state_dict(self) -> dict[str, Any]:
        top = int(self._size.max()) if self._size.size else 0
        return {
            "shape": [self.num_tasks, self.capacity, self.obs_dim, self.action_dim],
            "next": self._next.copy(), "size": self._size.copy(),
            "data": {k: v[:, :top].cpu().clone() for k, v in self._data._asdict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["shape"]) != [self.num_tasks, self.capacity, self.obs_dim, self.action_dim]:
            raise ValueError(f"TaskReplay state of shape {state['shape']} does not fit "
                             f"{[self.num_tasks, self.capacity, self.obs_dim, self.action_dim]}")
        for name, store in self._data._asdict().items():
            x = state["data"][name]
            store[:, : x.shape[1]] = x.to(self.device, store.dtype)
        self._next = np.asarray(state["next"], dtype=np.int64).copy()
        self._size = np.asarray(state["size"], dtype=np.int64).copy()
        self._size_t.copy_(torch.as_tensor(self._size))
