"""Vocabulary of the learner: the typed torch batch, its conversion, device choice.

    device = pick_device("auto")                         # cuda if present, else cpu
    batch = to_torch(transitions, device)                # TransitionBatch (numpy) -> Batch
    state, metrics = update(state, batch)                # learner/sac/update.py

Shapes (letters used in every shape comment of this package):
    B  batch (transitions)       E  ensemble members (twin critics: E = 2)
    O  obs_dim                   A  action_dim
    Z  task_dim                  R  task repeats (GH ``latent_shape_multiplier``)
    H  hidden width of a layer   C  replay capacity
    W  environments stepped together (rollout / evaluation)
    I  reward_input_dim (per-step reward inputs the observation lacks; may be 0)
"""

from __future__ import annotations

import contextlib
import math

from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

from relabel_service.core import TransitionBatch


class Batch(NamedTuple):
    """B transitions on the learner's device, float32 except ``terminated`` (bool)."""

    obs: torch.Tensor  # [B, O]
    action: torch.Tensor  # [B, A] in [-1, 1]
    reward: torch.Tensor  # [B] under ``task`` (unscaled)
    next_obs: torch.Tensor  # [B, O]; may hold NaN where ``terminated`` (never read there)
    terminated: torch.Tensor  # [B] bool; a time-limit end is NOT terminal unless the family says so
    task: torch.Tensor  # [B, Z]
    reward_inputs: torch.Tensor  # [B, I]: with (obs, action, next_obs) rewards the row under any task

    # A property, not ``__len__``: overriding ``__len__`` on a NamedTuple breaks
    # ``_replace`` / ``_make``, which check len(result) against the number of fields.
    @property
    def size(self) -> int:
        return int(self.reward.shape[0])


def to_torch(batch: TransitionBatch, device: torch.device | str) -> Batch:
    """Move a numpy ``TransitionBatch`` to ``device`` as a typed ``Batch``; checks shapes."""
    n = len(batch)
    for name in ("obs", "action", "next_obs", "task", "reward_inputs"):
        x = getattr(batch, name)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"TransitionBatch.{name} must have shape [{n}, *], got {x.shape}")
    if batch.obs.shape != batch.next_obs.shape:
        raise ValueError(f"obs {batch.obs.shape} and next_obs {batch.next_obs.shape} differ")
    for name in ("reward", "terminated"):
        if getattr(batch, name).shape != (n,):
            raise ValueError(f"TransitionBatch.{name} must have shape [{n}], got {getattr(batch, name).shape}")

    def f32(x: np.ndarray) -> torch.Tensor:
        a = np.asarray(x, dtype=np.float32)
        if not a.flags.writeable:  # Ray hands arguments over as read-only views of its object
            a = a.copy()           # store; torch warns on (and must not write into) those
        return torch.from_numpy(a).to(device, non_blocking=True)

    return Batch(
        obs=f32(batch.obs),
        action=f32(batch.action),
        reward=f32(batch.reward),
        next_obs=f32(batch.next_obs),
        terminated=torch.as_tensor(np.asarray(batch.terminated) > 0.5).to(device, non_blocking=True),
        task=f32(batch.task),
        reward_inputs=f32(batch.reward_inputs),
    )


@contextlib.contextmanager
def denormals_flushed(on: bool = True) -> Iterator[None]:
    """Within the block, this thread's CPU float arithmetic treats denormal inputs and
    results as zero (x86 DAZ/FTZ through ``torch.set_flush_denormal``; a no-op where the CPU
    has no such mode), and after it, IEEE gradual underflow again. The mode is per thread:
    other threads keep theirs (a thread inherits its creator's when it starts, e.g. the
    intra-op pool started inside the block). ``on=False``: nothing changes."""
    if not on or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def cpu_bf16_matmul_supported() -> bool:
    """Whether oneDNN runs bfloat16 matmuls natively here (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def set_cpu_bf16_matmul(enabled: bool) -> str:
    """Float32 matmuls on the CPU (mm, addmm, bmm, linear; eager and compiled) computed by
    oneDNN with bfloat16 products and float32 accumulation when ``enabled``, exact float32
    otherwise: the CPU's counterpart of TF32 (``LearnerConfig.bf16_matmul``). The setting is
    the process's (every thread's). Returns "" or, asked on a CPU without native bfloat16
    (where it would be slower, not faster), why it stays float32."""
    if enabled and not cpu_bf16_matmul_supported():
        torch.backends.mkldnn.matmul.fp32_precision = "none"
        return "learner.bf16_matmul: this CPU has no native bfloat16 matmuls (AVX512-BF16 or AMX); float32 it is"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16" if enabled else "none"
    return ""


@contextlib.contextmanager
def cpu_bf16_matmuls(enabled: bool = True) -> Iterator[str]:
    """``set_cpu_bf16_matmul`` within the block (its note), the previous setting after it."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    try:
        yield set_cpu_bf16_matmul(enabled)
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


def pick_device(pref: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA device if there is one, else the CPU; otherwise ``pref`` itself.

    Asking for CUDA where there is none is an error that says so (no silent CPU fallback).
    """
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(pref)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {pref!r} requested but torch sees no CUDA device")
    return device


#: the share of a further core that gets a learner a thread there when its update runs in
#: two branches (``threads_for``)
BRANCH_THREAD_SHARE = 0.1
#: the widest hidden layer from which the two-branch update pays (``branches_pay``)
BRANCH_MIN_WIDTH = 128


def branches_pay(hidden_sizes: tuple[int, ...], device: torch.device) -> bool:
    """Whether the update's two branches on two threads (``learner/sac/branches.py``) beat
    one thread: on the CPU, with layers of ``BRANCH_MIN_WIDTH`` or more. Each branch's
    Python holds the GIL between its ops, so small networks lose: one thread vs two, eager,
    on the 2-core box: 32x32 at batch 32 443 -> 394 updates/s, 64x64 at 128 352 -> 377,
    256x256 at 256 81 -> 131, 400x300 at 128 97 -> 157, 300x300x300 at 256 40 -> 68."""
    return device.type == "cpu" and max(hidden_sizes, default=0) >= BRANCH_MIN_WIDTH


def learner_threads(cfg: Any, device: torch.device) -> tuple[int, bool]:
    """(torch threads, whether the update runs in two branches) of a learner with config
    ``cfg`` (``LearnerConfig``) on ``device``: ``learner.threads``, else the whole cores of its
    ``num_cpus`` (``threads_for``), and two branches where they pay (``branches_pay``) and
    there are 2+ threads. The learner actor picks by this; ``bench e2e`` predicts with it."""
    split = getattr(cfg, "parallel_branches", True) and branches_pay(cfg.sac.hidden_sizes, device)
    threads = int(getattr(cfg, "threads", 0)) or threads_for(cfg.num_cpus, branches=split)
    return threads, bool(split and threads >= 2)


def threads_for(num_cpus: float, branches: bool = False) -> int:
    """Torch threads for a learner holding ``num_cpus`` Ray CPUs: the whole cores, at least 1,
    and with ``branches`` (its update runs in two branches) one more for a share of at
    least ``BRANCH_THREAD_SHARE`` of a further core: the actor's branch is the shorter one
    (about 7 : 9 against the critic's by their forward and backward passes; timed alone,
    6.5 against 7.0 ms), so it shares that core with the other actors, whose
    reservations are ceilings (one rollout worker of one HalfCheetahMO env steps 6.7k/s
    alone, so at 150 env steps/s it needs ~2% of a core, not its 0.25).

    A fractional share rounds down for torch's intra-op threads: the other actors use the
    rest of that core, and an intra-op thread they preempt stalls its siblings at every op.
    On the 2-core box a 2-thread learner beside one rollout worker ran 0.58 of its rate
    alone (33.7 vs 58.0 updates/s), a 1-thread one 0.94 (40.1 vs 42.5). The two-branch
    update joins its threads once per update, so the other actors' use of the shared core
    delays it once, not at every op: HalfCheetahMO at one update per env step with 1.35
    CPUs learned 142-162 env steps/s on two threads in two branches (0.79-0.92 of that
    update's rate alone) against 94-104 on one thread and 117-128 with two intra-op threads
    (0.69); ``make run`` (PointReacher, five updates per env step, an AIR relabel worker
    beside it, 1.1 CPUs) ~15.5 env steps/s against ~10 on one thread.
    """
    whole = math.floor(num_cpus + 1e-9)
    extra = branches and whole >= 1 and num_cpus - whole >= BRANCH_THREAD_SHARE - 1e-9
    return max(1, whole) + int(extra)

