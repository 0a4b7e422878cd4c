"""Compiled return kernels of the GH point families: AIR's returns in one pass over the pairs.

    from envs import fused
    with fused.enabled(True):              # AIR's air_kernel="compiled" does this per request
        R = family.segment_returns(steps, tasks, weights, lengths)

``segment_returns`` of PointTrajectory and PointReacher (float64) evaluates a few
elementwise numpy passes per (step, task) pair: rotations or distances, then a sine and an
exp (PointTrajectory) or a log (PointReacher) through ``envs.fastmath``, then the weighted
segment sums. Each pass reads and writes a block of pairs, so the whole costs about
10-15 ns a pair on the AVX2 development VM although the sine and exp themselves take 4.2 and
2.1 ns. Here the same expression, in the same order of operations, is one ``torch.compile``d
graph: inductor fuses it into a single C++ loop over (task, step, segment) that keeps every
intermediate in registers and accumulates the discounted sum as it goes, with the sine, exp
and log from the same SLEEF routines torch's eager kernels use. The steps go in time-major
([L, M]: step t of every segment side by side), so the loop's vectorised axis is the
segments and the reduction over t is a running sum.

PointReacher's kernel also runs in float32 (AIR's ``air_precision="float32"``, the terms
its numpy float32 path evaluates in float32): twice the lanes per vector, about 1.25x the
AIR relabel rate of the float64 kernel (``hindsight bench relabel``, ``air (pool, compiled,
float32)``).

It applies where every segment has the same length L (time-limited episodes: the GH point
families never terminate early) and the tasks are shared by all segments (AIR's [K, Z]);
otherwise ``segment_returns`` takes its numpy path. The results equal the numpy path's up to
the order of the floating-point additions (relative 1e-13 in tests/test_envs.py).

Cost: ``torch._inductor`` is imported and the two graphs are compiled on first use in a
process (seconds with inductor's on-disk cache warm, ~10 s cold; ``warm_up`` does it
ahead of the first request). The graphs are compiled for dynamic sizes, so other K, M and L
reuse them. They run on the calling thread only (``cpp.threads`` = 1), like ``fastmath``.
If compiling fails (no C++ compiler, say) the error is logged once with its cause and every
later call takes the numpy path.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Callable, Iterator

import numpy as np

logger = logging.getLogger(__name__)

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("hindsight_fused_returns", default=False)
_compiled: dict[str, Callable] = {}
_failure: str | None = None

#: inductor options: one thread (a relabel worker owns one core); scalar loop tails (masked
#: AVX2 stores are slow on the AMD development VM, as in learner/sac/compiled.py)
_OPTIONS = {"cpp.threads": 1, "cpp.enable_loop_tail_vec": False}


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Within the block (this thread / context only), families with ``compiled_returns``
    evaluate ``segment_returns`` through the compiled kernels where they apply."""
    token = _ENABLED.set(bool(on))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def active() -> bool:
    """Whether ``segment_returns`` should try the compiled kernels here and now."""
    return _ENABLED.get() and _failure is None


def failure() -> str | None:
    """Why the kernels could not be compiled in this process (None: they could, or were not tried)."""
    return _failure


def uniform_segments(lengths: np.ndarray, n_steps: int) -> int | None:
    """L when all M segments have the same length L >= 1 (and M L == n_steps), else None."""
    lengths = np.asarray(lengths)
    if not len(lengths) or lengths[0] < 1 or not np.all(lengths == lengths[0]):
        return None
    L = int(lengths[0])
    return L if L * len(lengths) == n_steps else None


def _time_major(x: np.ndarray, M: int, L: int, fill: float | None = None, dtype: Any = np.float64) -> Any:
    """[M L] step values -> a contiguous ``dtype`` torch tensor [max(L, 2), max(M, 2)]: a
    single segment is repeated, and a single step gets a second one (``fill``, the weights'
    0, or a repeat), so that no size is 1 and the graphs compiled for dynamic sizes are
    never specialised again for it (a recompile costs seconds)."""
    import torch

    a = np.asarray(x, dtype=dtype).reshape(M, L).T
    if L == 1:
        a = np.concatenate([a, np.full_like(a, fill) if fill is not None else a])
    if M == 1:
        a = np.concatenate([a, a], axis=1)
    return torch.from_numpy(np.ascontiguousarray(a))


def _two_rows(params: np.ndarray, dtype: Any = np.float64) -> Any:
    """Per-task parameters [K, n] as a ``dtype`` tensor of at least 2 rows (see ``_time_major``)."""
    import torch

    params = np.asarray(params, dtype=dtype)
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([params, params]) if len(params) == 1 else params))


def _point_trajectory_graph(sigma: float) -> Callable:
    import torch

    scale = -0.5 / sigma**2

    def graph(x: Any, y: Any, params: Any, w: Any) -> Any:
        # x, y, w [L, M]; params [K, 5] = (cos theta, sin theta, pi / d, d, amp) -> [K, M]
        c, s, pod, d, amp = (params[:, i, None, None] for i in range(5))
        xr = c * x - s * y  # x'
        dev = s * x + c * y  # y'
        dev = dev - amp * torch.sin(xr * pod)  # y' - amp sin(pi x' / d)
        g = torch.exp(dev * dev * scale)  # sigma sqrt(2 pi) N(...)
        return (g * torch.clamp(xr / d, min=0.0) * w).sum(dim=1)

    return graph


def _point_reacher_graph(ex: Any, ey: Any, centers: Any, w: Any) -> tuple[Any, Any]:
    import torch

    # ex, ey, w [L, M]; centers [K, 4] = (goal x, goal y, obstacle x, obstacle y) -> 2 x [K, M]
    gx, gy, ox, oy = (centers[:, i, None, None] for i in range(4))
    dx, dy = gx - ex, gy - ey
    dist = torch.sqrt(dx * dx + dy * dy)  # ||e - g_k||
    qx, qy = ox - ex, oy - ey
    safety = torch.log(torch.sqrt(qx * qx + qy * qy) + 0.01)  # log(||e - o_k|| + .01)
    return (dist * w).sum(dim=1), (safety * w).sum(dim=1)


def _kernel(name: str, build: Callable[[], Callable], example: Callable[[], tuple]) -> Callable | None:
    """The compiled graph ``name``, compiled (and run once on ``example()``'s inputs, where
    inductor does its work) on first use; None after a failure to compile."""
    global _failure
    if _failure is not None:
        return None
    fn = _compiled.get(name)
    if fn is None:
        try:
            import torch

            fn = torch.compile(build(), dynamic=True, options=_OPTIONS)
            fn(*example())
        except Exception as exc:  # noqa: BLE001 - whatever stops compiling means the numpy path
            text = str(exc).strip()
            _failure = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            logger.warning("compiled return kernels unavailable, AIR's returns take the numpy path (%s)", _failure)
            return None
        _compiled[name] = fn
    return fn


def _example(n_centers: int, float32: bool = False) -> Callable[[], tuple]:
    """Small inputs of a kernel's shapes: x, y [L, M], per-task parameters [K, n], w [L, M].
    No two sizes equal (nor equal to n = 4 or 5): dynamo would assume that the sizes it saw
    equal stay equal ("duck sizing") and compile again at the first call where they differ."""
    def make() -> tuple:
        import torch

        dt = torch.float32 if float32 else torch.float64
        g = torch.Generator().manual_seed(0)
        L, M, K = 7, 9, 6
        x, y = (torch.rand(L, M, generator=g, dtype=dt) for _ in range(2))
        params = torch.rand(K, n_centers, generator=g, dtype=dt) + 0.5
        return x, y, params, torch.ones(L, M, dtype=dt)

    return make


def point_trajectory_sums(p: np.ndarray, tasks: np.ndarray, weights: np.ndarray, lengths: np.ndarray,
                          sigma: float) -> np.ndarray | None:
    """sum_{s in m} weights[s] sigma sqrt(2 pi) r(s | z_k) -> [M, K] for PointTrajectory's
    pre-step positions p [B, 2] and shared tasks [K, 3] (θ, d, amp); None where the kernel
    does not apply (uneven segments) or could not be compiled."""
    L = uniform_segments(lengths, len(p))
    if L is None or tasks.ndim != 2:
        return None
    M = len(lengths)
    K = len(tasks)
    theta, d = tasks[:, 0], tasks[:, 1]
    params = _two_rows(np.stack([np.cos(theta), np.sin(theta), np.pi / d, d, tasks[:, 2]], axis=1))
    fn = _kernel(f"point_trajectory/{sigma!r}", lambda: _point_trajectory_graph(sigma), _example(5))
    if fn is None:
        return None
    out = fn(_time_major(p[:, 0], M, L), _time_major(p[:, 1], M, L), params, _time_major(weights, M, L, 0.0))
    return out.numpy()[:K, :M].T


def point_reacher_sums(e: np.ndarray, goals: np.ndarray, obstacles: np.ndarray, weights: np.ndarray,
                       lengths: np.ndarray, float32: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """(D, S) [M, K]: the weighted segment sums of ||e - g_k|| and of log(||e - o_k|| + .01)
    for PointReacher's post-step positions e [B, 2] and shared goals, obstacles [K, 2];
    None where the kernel does not apply or could not be compiled. ``float32`` (AIR's
    ``air_precision="float32"``): the kernel in float32 (twice the lanes of a vector), as
    the numpy float32 path evaluates the same terms and sums."""
    L = uniform_segments(lengths, len(e))
    if L is None or goals.ndim != 2:
        return None
    M = len(lengths)
    K = len(goals)
    dtype = np.float32 if float32 else np.float64
    centers = _two_rows(np.concatenate([goals, obstacles], axis=1), dtype)
    fn = _kernel("point_reacher/float32" if float32 else "point_reacher", lambda: _point_reacher_graph,
                 _example(4, float32))
    if fn is None:
        return None
    D, S = fn(_time_major(e[:, 0], M, L, dtype=dtype), _time_major(e[:, 1], M, L, dtype=dtype), centers,
              _time_major(weights, M, L, 0.0, dtype))
    return D.numpy()[:K, :M].T, S.numpy()[:K, :M].T


def warm_up(family: Any, float32: bool = False) -> bool:
    """Compile ``family``'s kernel now (on small inputs; the graphs are shape-generic) so
    that the first request does not wait for it (``float32``: the float32 one, AIR's
    ``air_precision="float32"``). True when the kernel is ready."""
    if not getattr(family, "compiled_returns", False):
        return False
    rng = np.random.default_rng(0)
    M, L, K = 9, 7, 6  # distinct sizes, as in _example
    obs = rng.uniform(-1.0, 1.0, size=(M * L, family.obs_dim))
    from envs.core import StepBatch

    steps = StepBatch(obs, rng.uniform(-1.0, 1.0, size=(M * L, family.action_dim)), obs,
                      np.zeros((M * L, family.reward_input_dim)))
    weights = np.tile(np.power(0.9, np.arange(L)), M)
    with enabled(True):
        family.segment_returns(steps, family.sample_tasks(rng, K), weights, np.full(M, L), float32=float32)
    return _failure is None  # segment_returns compiled the kernel, or recorded why it could not


