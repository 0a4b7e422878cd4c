"""Checkpoint files written whole or not at all.

    atomic_save(payload, RUN/checkpoints/learner.pt)   # torch.save -> bytes -> tmp -> fsync -> rename
    atomic_write_json(meta, RUN/checkpoints/learner.json)  # json -> bytes -> tmp -> fsync -> rename

A process killed mid-write (SIGKILL of the learner, a node going away) leaves the previous
file in place, never a truncated one: ``Path.write_text`` truncates first and writes after,
so a kill between the two left an empty ``learner.json`` that the restarted learner could
not parse.

The payload is serialised in memory first and then written with plain file I/O, so a full
disk is an ``OSError`` with its errno (ENOSPC) that we can name, instead of the
``basic_ios::clear: iostream error`` torch's C++ writer raises mid-file. On any failure the
temporary file is removed and the previous checkpoint stays in place untouched.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous one (if any) is intact."""


def atomic_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save(payload, path)``, whole or not at all."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(buf.getbuffer(), path)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(saved)`` keeping this machine's kernel choice per group
    (``fused`` / ``foreach`` / ``capturable``), not the saving machine's: a CUDA-graph
    learner saves ``capturable=True``, which a CPU step refuses, and a fused Adam may not
    exist where the checkpoint is loaded."""
    impl = [{k: g.get(k) for k in ("fused", "foreach", "capturable")} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, impl):
        group.update(flags)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """``json.dump(obj, path)``, whole or not at all."""
    atomic_write_bytes(json.dumps(obj).encode(), path)


def read_json(path: str | os.PathLike) -> Any:
    """Load a checkpoint's JSON file; a missing or unreadable one is a ``CheckpointError``
    that names the file (not a bare ``JSONDecodeError`` from deep inside a restart)."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except OSError as e:
        raise CheckpointError(e.errno, f"checkpoint file {path} cannot be read: {e.strerror or e}") from e
    except ValueError as e:
        raise CheckpointError(errno.EINVAL, f"checkpoint file {path} is not valid JSON ({e}); "
                              "it was written by a process that died mid-write or was edited") from e


def atomic_write_bytes(data: bytes | memoryview, path: str | os.PathLike) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it and rename it over
    ``path``: readers see the old file or the new one. Raises ``CheckpointError`` (the
    previous file kept) when the write fails."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            try:
                free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
            except OSError:
                free = "free space unknown"
            why = f"the disk is full ({free}, the checkpoint needs {len(data) / 2**20:.1f} MiB)"
        else:
            why = e.strerror or str(e)
        raise CheckpointError(e.errno, f"checkpoint {path} not written: {why}; the previous checkpoint is kept") from e
