"""The SAC losses and their gradients through ``torch.compile`` (``SACConfig.compile``).

    g = GradInputs(state.nets, state.log_alpha)            # once per state
    grads, alpha_grad, metrics = compiled_all_grads()(g.module, g.both, batch, cfg, g.log_alpha,
                                                      draw_noise(batch, generator))
    # two threads: compiled_grad_branches() -> (critic's graph, actor's and alpha's graph)

Each is one graph, parameters in and gradients out (``torch.func.grad_and_value`` of a
``functional_call``), called once from Python per update and thread; ``update`` sets the
gradients as the parameters' ``.grad`` and Adam and Polyak stay eager. Against compiling the
forward and letting autograd run the compiled backward (the previous form: several Python
crossings per update, the forward's wrapper, ``.backward()``, the engine's call into the
backward graph, which two threads take turns at on the GIL), measured in one process,
interleaved, HalfCheetahMO's dims: +5.8% updates/s on one thread, +4.8% on two branches.
functorch takes the gradients while dynamo traces, so inductor gets one graph holding the
forward and backward ops and there is no forward/backward partition (the previous form needed
a custom partitioner so that the backward recomputed the ReLU masks instead of saving them
as bool tensors, whose vectorised stores were slow here).

Imported only when ``compile`` is on: ``torch._inductor`` takes seconds to import. The
actors' noise is an input (dynamo cannot trace draws from a ``torch.Generator``), drawn by
``draw_noise`` in the order ``compute_losses`` draws it, so the compiled update equals the
eager one up to float32 rounding (tests/test_sac.py).

One inductor setting, measured on the shared 2-core AMD EPYC (AVX2, torch 2.13):
``cpp.enable_loop_tail_vec=False``: loop tails run scalar instead of as masked AVX2 stores,
which are slow on AMD cores and hit every row of the 4-wide task and 6-wide action copies.
And ``cpp_wrapper``: the code that allocates buffers and calls the kernels and matmuls of each
graph is C++ too, not Python (in-process A/B, one thread: +2-3% updates/s; one cold compile
of the benchmark's shapes took 16 s with it, 23 s without).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from learner.core import Batch
from learner.sac.config import SACConfig
from learner.sac.losses import SACNetworks, actor_branch, compute_losses, critic_branch


def losses_with_metrics(nets: SACNetworks, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
                        noise: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, ``Losses.metric_vector``): the one-thread update's loss."""
    losses = compute_losses(nets, batch, cfg, log_alpha, None, noise)
    return losses.total, losses.metric_vector()


_COMPILED: dict[str, Callable] = {}


def _compile(fn: Callable) -> Callable:
    return torch.compile(
        fn, dynamic=False,
        options={"cpp.enable_loop_tail_vec": False, "cpp_wrapper": True},
    )


class BranchModule(torch.nn.Module):
    """The three networks as one module whose ``forward`` runs either branch, so that
    ``torch.func.functional_call`` can swap in one branch's parameters (as the tensors the
    gradients are taken with respect to) and leave the rest of the module as it is."""

    def __init__(self, nets: SACNetworks):
        super().__init__()
        self.actor, self.critic, self.target_critic = nets

    def forward(self, which: str, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
                noise: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, diagnostics) of ``which``: "critic" (``critic_branch``, noise: next_eps),
        "actor" (``actor_branch``, noise: eps) or "all" (``losses_with_metrics``, noise:
        both draws)."""
        nets = SACNetworks(self.actor, self.critic, self.target_critic)
        if which == "all":
            return losses_with_metrics(nets, batch, cfg, log_alpha, noise)
        branch = critic_branch if which == "critic" else actor_branch
        return branch(nets, batch, cfg, log_alpha, noise)


class GradInputs:
    """What the gradient graphs take for one state, built once (``SACState.grad_inputs``):
    the ``BranchModule``, and detached aliases of the critic's and the actor's parameters
    and of log alpha. The aliases share storage with the parameters, so the optimiser's
    in-place steps show through them; being detached, the graphs hand back plain gradient
    tensors and build no autograd graph around themselves."""

    def __init__(self, nets: SACNetworks, log_alpha: torch.Tensor):
        self.module = BranchModule(nets)
        self.critic_params = [p for _, p in nets.critic.named_parameters()]
        self.actor_params = [p for _, p in nets.actor.named_parameters()]
        self.critic = {f"critic.{k}": p.detach() for k, p in nets.critic.named_parameters()}
        self.actor = {f"actor.{k}": p.detach() for k, p in nets.actor.named_parameters()}
        self.log_alpha = log_alpha.detach()
        self.both = {**self.critic, **self.actor}
        self.params = self.critic_params + self.actor_params  # in ``both``'s order


def critic_grads(module: BranchModule, params: dict[str, torch.Tensor], batch: Batch, cfg: SACConfig,
                 log_alpha: torch.Tensor, next_eps: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(d critic loss / d critic params, the critic's diagnostics ``critic_branch`` gives)."""

    def loss(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(module, p, ("critic", batch, cfg, log_alpha, next_eps))

    grads, (_, metrics) = torch.func.grad_and_value(loss, has_aux=True)(params)
    return grads, metrics


def actor_grads(module: BranchModule, params: dict[str, torch.Tensor], batch: Batch, cfg: SACConfig,
                log_alpha: torch.Tensor, eps: torch.Tensor,
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(d (actor + alpha loss) / d actor params, d / d log alpha, the diagnostics
    ``actor_branch`` gives). The actor's loss reads alpha detached, so the log-alpha
    gradient is the alpha loss's alone (0 when alpha is fixed)."""

    def loss(p: dict[str, torch.Tensor], la: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(module, p, ("actor", batch, cfg, la, eps))

    (grads, alpha_grad), (_, metrics) = torch.func.grad_and_value(loss, argnums=(0, 1), has_aux=True)(
        params, log_alpha)
    return grads, alpha_grad, metrics


def all_grads(module: BranchModule, params: dict[str, torch.Tensor], batch: Batch, cfg: SACConfig,
              log_alpha: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor],
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The whole update's gradients on one thread: (d total / d critic and actor params,
    d / d log alpha, ``Losses.metric_vector``)."""

    def loss(p: dict[str, torch.Tensor], la: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(module, p, ("all", batch, cfg, la, noise))

    (grads, alpha_grad), (_, metrics) = torch.func.grad_and_value(loss, argnums=(0, 1), has_aux=True)(
        params, log_alpha)
    return grads, alpha_grad, metrics


def compiled_all_grads() -> Callable:
    """``all_grads`` through ``torch.compile``, built once per process (as
    ``compiled_grad_branches``)."""
    if "all_grads" not in _COMPILED:
        _COMPILED["all_grads"] = _compile(all_grads)
    return _COMPILED["all_grads"]


def compiled_grad_branches() -> tuple[Callable, Callable]:
    """``critic_grads`` and ``actor_grads`` through ``torch.compile`` with the settings
    above, built once per process: dynamo specialises them per network shapes and config
    (states of the same shapes share them; the learner compiles on a scratch state),
    inductor caches the generated code on disk across processes. The C++ wrapper releases
    the GIL while a graph runs, so the two run at once (``learner/sac/branches.py``)."""
    if "critic_grads" not in _COMPILED:
        _COMPILED["critic_grads"], _COMPILED["actor_grads"] = _compile(critic_grads), _compile(actor_grads)
    return _COMPILED["critic_grads"], _COMPILED["actor_grads"]
