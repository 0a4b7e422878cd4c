"""The SAC losses and their backward through ``torch.compile`` (``SACConfig.compile``).

    total, metrics = compiled_losses()(nets, batch, cfg, log_alpha, draw_noise(batch, generator))
    total.backward()                       # the compiled backward; Adam and Polyak stay eager

Imported only when ``compile`` is on: ``torch._inductor`` takes seconds to import. The
actors' noise is an input (dynamo cannot trace draws from a ``torch.Generator``), drawn by
``draw_noise`` in the order ``compute_losses`` draws it, so the compiled update equals the
eager one up to float32 rounding (tests/test_sac.py).

Two inductor settings, each measured on the shared 2-core AMD EPYC (AVX2, torch 2.13) where
the defaults made the compiled update slower than the eager one:

* ``EagerPartition``: the default min-cut partitioner saves each ReLU's backward mask as a
  bool tensor, and inductor's vectorised bool store cost ~2 ms per [512, 256] mask (40x the
  ReLU itself); saving the float ReLU outputs, as eager autograd does, lets the backward
  recompute the mask inside its fused kernel;
* ``cpp.enable_loop_tail_vec=False``: loop tails run scalar instead of as masked AVX2 stores,
  which are slow on AMD cores and hit every row of the 4-wide task and 6-wide action copies.

And ``cpp_wrapper``: the code that allocates buffers and calls the kernels and matmuls of each
graph is C++ too, not Python (in-process A/B, one thread: +2-3% updates/s; one cold compile
of the benchmark's shapes took 16 s with it, 23 s without).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch._functorch.partitioners import default_partition
from torch._inductor.custom_graph_pass import CustomPartitionerFn

from learner.core import Batch
from learner.sac.config import SACConfig
from learner.sac.losses import SACNetworks, actor_branch, compute_losses, critic_branch


class EagerPartition(CustomPartitionerFn):
    """AOTAutograd partitioner that saves for the backward what eager autograd saves."""

    def __call__(self, gm: torch.fx.GraphModule, joint_inputs: Any, **kwargs: Any) -> Any:
        kwargs.pop("compiler", None)
        return default_partition(gm, joint_inputs, **kwargs)

    def uuid(self) -> str:  # part of inductor's cache key
        return "hindsight-eager-partition-1"


def losses_with_metrics(nets: SACNetworks, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
                        noise: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss with its graph, ``Losses.metric_vector``): what gets compiled."""
    losses = compute_losses(nets, batch, cfg, log_alpha, None, noise)
    return losses.total, losses.metric_vector()


_COMPILED: dict[str, Callable] = {}


def _compile(fn: Callable) -> Callable:
    return torch.compile(
        fn, dynamic=False,
        options={"cpp.enable_loop_tail_vec": False, "custom_partitioner_fn": EagerPartition(), "cpp_wrapper": True},
    )


def compiled_losses() -> Callable:
    """``losses_with_metrics`` through ``torch.compile``, built once per process: dynamo
    specialises it per network shapes and config (states of the same shapes share it),
    inductor caches the generated code on disk across processes."""
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = _compile(losses_with_metrics)
    return _COMPILED["fn"]


def compiled_branches() -> tuple[Callable, Callable]:
    """``losses.critic_branch`` and ``losses.actor_branch`` through ``torch.compile`` (the
    update on two threads, ``learner/sac/branches.py``), built once per process. The C++
    wrapper releases the GIL while a graph runs, so the two run at once."""
    if "critic" not in _COMPILED:
        _COMPILED["critic"], _COMPILED["actor"] = _compile(critic_branch), _compile(actor_branch)
    return _COMPILED["critic"], _COMPILED["actor"]
