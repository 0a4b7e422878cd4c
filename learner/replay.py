"""Uniform replay on the learner's device: preallocated torch ring buffers.

    replay = Replay(capacity, obs_dim, action_dim, task_dim, device, reward_input_dim=I)
    replay.add(transitions)                              # TransitionBatch, any size
    batch = replay.sample(256, generator)                # Batch on ``device``

Storage lives where the update runs, so sampling is one index per field and no host
copy on the hot path; an insert is at most two contiguous slice copies per field.
"""

from __future__ import annotations

from typing import Any

import torch

from learner.core import Batch, to_torch
from relabel_service.core import TransitionBatch


class Replay:
    """Ring buffer of C transitions; when full, the oldest are overwritten first."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, task_dim: int,
                 device: torch.device | str = "cpu", reward_input_dim: int = 0):
        if capacity < 1:
            raise ValueError(f"Replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.dims = (obs_dim, action_dim, task_dim, reward_input_dim)
        f32 = {"dtype": torch.float32, "device": self.device}
        self._data = Batch(
            obs=torch.zeros(capacity, obs_dim, **f32),  # [C, O]
            action=torch.zeros(capacity, action_dim, **f32),  # [C, A]
            reward=torch.zeros(capacity, **f32),  # [C]
            next_obs=torch.zeros(capacity, obs_dim, **f32),  # [C, O]
            terminated=torch.zeros(capacity, dtype=torch.bool, device=self.device),  # [C]
            task=torch.zeros(capacity, task_dim, **f32),  # [C, Z]
            reward_inputs=torch.zeros(capacity, reward_input_dim, **f32),  # [C, I]
        )
        self._next = 0  # slot the next transition goes to
        self._size = 0
        self.inserted = 0  # transitions ever added (for samples-per-insert accounting)

    def __len__(self) -> int:
        return self._size

    def add(self, transitions: TransitionBatch | Batch) -> None:
        """Append B transitions (numpy ``TransitionBatch`` or a ``Batch`` already in torch)."""
        batch = transitions if isinstance(transitions, Batch) else to_torch(transitions, self.device)
        n = batch.size
        if n == 0:
            return
        got = (batch.obs.shape[1], batch.action.shape[1], batch.task.shape[1], batch.reward_inputs.shape[1])
        if got != self.dims:
            raise ValueError(f"Replay holds (obs, action, task, reward_inputs) dims {self.dims}, got {got}")
        n_in, start = n, self._next
        if n > self.capacity:  # only the last C rows would survive; write them where they would land
            start = (start + n - self.capacity) % self.capacity
            batch = Batch(*(x[n - self.capacity:] for x in batch))
            n = self.capacity
        first = min(n, self.capacity - start)
        for store, x in zip(self._data, batch):
            x = x.to(self.device, store.dtype)
            store[start:start + first] = x[:first]
            store[: n - first] = x[first:]
        self._next = (start + n) % self.capacity
        self._size = min(self._size + n, self.capacity)
        self.inserted += n_in

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement (``generator`` on ``device``)."""
        if self._size == 0:
            raise RuntimeError("cannot sample from an empty Replay")
        idx = torch.randint(0, self._size, (batch_size,), generator=generator, device=self.device)
        # index_select, not x[idx]: the same rows, without advanced indexing's dispatch
        # (on the CPU about half the time per field; the learner samples once per update)
        return Batch(*(torch.index_select(x, 0, idx) for x in self._data))

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (CPU tensors) and the ring pointers; can be large."""
        return {
            "capacity": self.capacity,
            "dims": list(self.dims),
            "next": self._next,
            "size": self._size,
            "inserted": self.inserted,
            "data": {k: v[: self._size].cpu() for k, v in self._data._asdict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity or tuple(state["dims"]) != self.dims:
            raise ValueError(
                f"Replay state for capacity {state['capacity']} dims {tuple(state['dims'])} "
                f"does not fit capacity {self.capacity} dims {self.dims}"
            )
        size = int(state["size"])
        for name, store in self._data._asdict().items():
            store[:size] = state["data"][name].to(self.device, store.dtype)
        self._next, self._size, self.inserted = int(state["next"]), size, int(state["inserted"])
