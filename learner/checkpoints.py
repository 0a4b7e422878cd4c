"""Checkpoint files written whole or not at all.

    atomic_save(payload, RUN/checkpoints/learner.pt)   # torch.save -> bytes -> tmp -> fsync -> rename

The payload is serialised in memory first and then written with plain file I/O, so a full
disk is an ``OSError`` with its errno (ENOSPC) that we can name, instead of the
``basic_ios::clear: iostream error`` torch's C++ writer raises mid-file. On any failure the
temporary file is removed and the previous checkpoint stays in place untouched.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path
from typing import Any

import torch


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous one (if any) is intact."""


def atomic_save(payload: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getbuffer()
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
