"""TensorBoard writer for a run: scalars, histograms and flattened metric dicts."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from torch.utils.tensorboard import SummaryWriter


class TBWriter:
    def __init__(self, logdir: str, purge_step: int | None = None):
        self.writer = SummaryWriter(logdir, purge_step=purge_step, flush_secs=10)
        self.tags: set[str] = set()

    def scalar(self, tag: str, value: Any, step: int) -> None:
        if value is None:
            return
        value = float(value)
        if np.isfinite(value):
            self.writer.add_scalar(tag, value, step)
            self.tags.add(tag)

    def scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        for k, v in values.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                self.scalar(f"{prefix}/{k}", v, step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        arr = np.asarray(values, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        if arr.size:
            self.writer.add_histogram(tag, arr, step)
            self.tags.add(tag)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)
        self.tags.add(tag)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
