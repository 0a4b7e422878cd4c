"""Float64 sin, exp and log, in place on numpy arrays, through torch's vectorised CPU kernels.

    from envs import fastmath
    fastmath.log_(x)          # x <- log(x), x a float64 numpy array (any layout, views too)
    fastmath.sin_(x); fastmath.exp_(x)

numpy evaluates float64 sin, exp and log one element at a time on a CPU without AVX-512
(on the AVX2 development VM, AIR-like inputs: 20, 12 and 9 ns an element), while torch's
CPU kernels (SLEEF, four doubles per AVX2 instruction) take 4.2, 2.1 and 3.4 ns, within
one ulp of numpy's results.
AIR's returns on the GH point families are mostly these calls (``segment_returns`` of
PointTrajectory and PointReacher: one pair of them per (step, candidate task)).

The arrays stay numpy: torch works on a view of the same memory (``torch.from_numpy``) and
the result is written back in place, so callers keep their numpy code and dtypes (strided
views too). Arrays of another dtype go to numpy unchanged. torch is imported on the first
call (a second or two, once per process; a relabel worker of the point families imports
it then). An elementwise torch op runs on the calling thread only up to ``CHUNK``
elements (torch splits larger ones over its intra-op threads), so longer arrays are done
in chunks of that size: a relabel worker never spreads onto cores Ray did not give it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: elements per torch call: at most torch's grain size for splitting an elementwise op
#: over threads (``at::internal::GRAIN_SIZE``), so every call runs on this thread alone
CHUNK = 1 << 15

_torch: Any = None


def _torch_module() -> Any:
    global _torch
    if _torch is None:
        import torch

        _torch = torch
    return _torch


def _apply(name: str, x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float64 or not x.flags.writeable or min(x.strides, default=0) < 0:
        getattr(np, name)(x, out=x)
        return x
    op = getattr(_torch_module(), name + "_")
    if x.size <= CHUNK:
        op(_torch.from_numpy(x))  # a view of x (strided views too): written in place
    elif x.flags.c_contiguous:
        flat = _torch.from_numpy(x.reshape(-1))
        for i in range(0, flat.numel(), CHUNK):
            op(flat[i:i + CHUNK])
    elif x.ndim > 1 and x[0].size > CHUNK:  # a large strided view: one leading index at a time
        for row in x:
            _apply(name, row)
    else:  # a large strided view: slices of leading indices of at most CHUNK elements
        per = max(1, CHUNK // max(1, x[0].size)) if x.ndim > 1 else CHUNK
        for i in range(0, len(x), per):
            op(_torch.from_numpy(x[i:i + per]))
    return x


def sin_(x: np.ndarray) -> np.ndarray:
    """x <- sin(x) in place; returns x."""
    return _apply("sin", x)


def exp_(x: np.ndarray) -> np.ndarray:
    """x <- exp(x) in place; returns x."""
    return _apply("exp", x)


def log_(x: np.ndarray) -> np.ndarray:
    """x <- log(x) in place; returns x."""
    return _apply("log", x)
