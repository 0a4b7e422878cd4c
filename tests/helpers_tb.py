"""Reading a run's TensorBoard events in tests."""

from __future__ import annotations

from pathlib import Path


def tb_tags(tb_dir: Path) -> set[str]:
    """Every scalar and histogram tag written under ``tb_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    return set(tags["scalars"]) | set(tags["histograms"])
