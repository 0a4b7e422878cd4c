"""Training state and the SAC update step, checkpointing and weight publication.

    state = init_state(obs_dim, action_dim, task_dim, cfg, device, seed=0)
    state, metrics = update(state, batch)                # one gradient step + Polyak
    save_state(state, "ckpt.pt"); state = load_state("ckpt.pt", device)
    weights = policy_weights(state)                      # actor only, CPU numpy

All mutable training state (parameters, target critic, log alpha, optimiser moments,
step counter, the torch RNG that draws the actor's noise) lives in ``SACState``; ``update``
is a function of (state, batch) alone. PyTorch optimisers work in place, so the state is
updated in place and returned (Acme's ``update_step`` shape without copying tensors).
``save_state`` writes all of it, so save -> load -> update equals an uninterrupted run
bit for bit on the same device.

With ``cfg.compile`` the losses and their gradients are one ``torch.compile``d graph per
thread (``learner/sac/compiled.py``: ``torch.func.grad_and_value``, parameters in, gradients
out, set as the parameters' ``.grad``): the actors' noise is drawn beforehand from
``state.generator`` in the order ``compute_losses`` draws it, so the update equals the eager
one up to float32 rounding; fused Adam and the Polyak update stay eager (compiling them
measured slower: dynamo does not trace the fused Adam kernel and breaks the graph around it).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import threading
from typing import Callable

import numpy as np
import torch

from actors.policy import NumpyValueFnFactory
from learner.checkpoints import atomic_save, load_optimizer_state
from learner.core import Batch
from learner.sac.config import SACConfig
from learner.sac.branches import BranchThread
from learner.sac.losses import (
    METRIC_NAMES, SACNetworks, actor_branch, branch_metric_vector, compute_losses, critic_branch, draw_noise,
)
from learner.sac.networks import Actor, TwinCritic

_FORMAT = 1


@dataclasses.dataclass
class SACState:
    """Everything a SAC learner needs to continue training."""

    cfg: SACConfig
    obs_dim: int
    action_dim: int
    task_dim: int
    seed: int
    actor: Actor
    critic: TwinCritic
    target_critic: TwinCritic  # requires_grad False; moved only by Polyak averaging
    log_alpha: torch.nn.Parameter  # [] scalar
    optimizer: torch.optim.Adam  # param groups "critic", "actor" (, "alpha")
    generator: torch.Generator  # on ``device``; the actor's reparameterisation noise
    step: int = 0  # gradient steps taken
    # built on the first compiled update (``compiled.GradInputs``); not saved
    grad_inputs: object = dataclasses.field(default=None, repr=False, compare=False)
    # (target, online) parameter lists of the Polyak step, built on first use; not saved
    polyak_lists: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def nets(self) -> SACNetworks:
        return SACNetworks(self.actor, self.critic, self.target_critic)


def _make_adam(groups: list[dict]) -> torch.optim.Adam:
    """Adam with the fused kernel where this device / torch supports it, else foreach.

    One optimiser with a param group per part: Adam is per-parameter, so this equals three
    optimisers, and one fused kernel launch replaces three.
    """
    for impl in ({"fused": True}, {"foreach": True}, {}):
        try:
            return torch.optim.Adam(groups, **impl)
        except (RuntimeError, TypeError, ValueError):
            continue
    raise AssertionError("unreachable: plain Adam always constructs")


def adam_step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` for a fused CPU Adam, straight into its kernel.

    ``Optimizer.step`` walks every parameter in Python (hooks, gradient and state checks,
    grouping by device) before its one kernel call per group: about 0.25 ms of a SAC update
    here, 2-3% of a compiled update at one thread. When every parameter has a gradient and a
    state, this makes the same calls (the step counters' increment, then ``_fused_adam_``
    once per group) with lists built in one pass, which is the same arithmetic bit for bit
    (tests/test_sac.py). Anything else (the first step, which creates the state, a missing
    gradient, a CUDA or capturable, amsgrad or AdamW optimiser, a tensor lr) takes
    ``optimizer.step()``.
    """
    calls = fused_adam_calls(optimizer)
    if calls is None:
        optimizer.step()
    else:
        run_fused_adam(calls)


def fused_adam_calls(optimizer: torch.optim.Adam, need_grads: bool = True) -> list | None:
    """What ``adam_step`` passes to ``_fused_adam_``, one entry per param group (group,
    params, first and second moments, step counters), or None when the optimiser must take
    ``optimizer.step()`` (see ``adam_step``). ``need_grads=False`` checks everything but the
    gradients, for a caller that sets them afterwards; ``run_fused_adam`` reads them."""
    calls = []
    for g in optimizer.param_groups:
        if (not g.get("fused") or g["amsgrad"] or g["maximize"] or g["capturable"] or g["differentiable"]
                or g.get("decoupled_weight_decay") or isinstance(g["lr"], torch.Tensor)):
            return None
        params, avgs, sqs, group_steps = [], [], [], []
        for p in g["params"]:
            state = optimizer.state.get(p)
            if (need_grads and p.grad is None) or not state or p.device.type != "cpu":
                return None
            params.append(p)
            avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
            group_steps.append(state["step"])
        calls.append((g, params, avgs, sqs, group_steps))
    return calls


def run_fused_adam(calls: list) -> None:
    """Adam's step for ``fused_adam_calls``' entries (all of them, or some of the groups):
    the step counters' increment, then one ``_fused_adam_`` per group with the parameters'
    current ``.grad`` (``Optimizer.step``'s calls for a fused CPU Adam)."""
    torch._foreach_add_([t for c in calls for t in c[4]], 1)
    for g, params, avgs, sqs, group_steps in calls:
        beta1, beta2 = g["betas"]
        torch._fused_adam_(params, [p.grad for p in params], avgs, sqs, [], group_steps, lr=g["lr"],
                           beta1=float(beta1), beta2=float(beta2), weight_decay=g["weight_decay"], eps=g["eps"],
                           amsgrad=False, maximize=False)


def init_state(obs_dim: int, action_dim: int, task_dim: int, cfg: SACConfig,
               device: torch.device | str = "cpu", seed: int = 0) -> SACState:
    """Fresh networks (initialised on the CPU from ``seed``, then moved), targets, Adam, RNG."""
    device = torch.device(device)
    actor_seed, critic_seed, noise_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(3))
    actor = Actor(obs_dim, action_dim, task_dim, cfg, seed=actor_seed).to(device)
    critic = TwinCritic(obs_dim, action_dim, task_dim, cfg, seed=critic_seed).to(device)
    target_critic = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.nn.Parameter(torch.tensor(math.log(cfg.init_alpha), device=device))
    groups = [
        {"params": list(critic.parameters()), "lr": cfg.critic_lr, "name": "critic"},
        {"params": list(actor.parameters()), "lr": cfg.actor_lr, "name": "actor"},
    ]
    if cfg.learn_alpha:
        groups.append({"params": [log_alpha], "lr": cfg.alpha_lr, "name": "alpha"})
    else:
        log_alpha.requires_grad_(False)
    return SACState(
        cfg=cfg, obs_dim=obs_dim, action_dim=action_dim, task_dim=task_dim, seed=seed,
        actor=actor, critic=critic, target_critic=target_critic, log_alpha=log_alpha,
        optimizer=_make_adam(groups),
        generator=torch.Generator(device=device).manual_seed(noise_seed),
    )


def update(state: SACState, batch: Batch, with_metrics: bool = True,
           branches: BranchThread | None = None,
           side: Callable[[], None] | None = None) -> tuple[SACState, dict[str, float]]:
    """One SAC gradient step on ``batch`` (actor, twin critic, alpha) and the Polyak update.

    ``with_metrics=False`` skips the one host sync that reading the diagnostics costs (call with
    True every k steps on a GPU); on CPU it is nearly free. ``state.cfg.compile`` runs the losses
    and their backward compiled (module docstring). ``branches``: the actor's branch runs on
    that thread while the critic's runs on this one (``learner/sac/branches.py``); the same
    step (eager: bit for bit). ``side`` (with ``branches`` only): run on that thread after the
    actor's branch, before the join (the learner draws its next batch there, off the
    critic's thread); what it raises, ``update`` raises, with nothing stepped.
    """
    if side is not None and branches is None:
        raise ValueError("update(side=...) runs on the branch thread: pass branches= too")
    if branches is not None and state.cfg.compile:  # Adam and the Polyak step included
        metrics = _grad_graph_branches(state, batch, branches, with_metrics, side)
    else:
        if state.cfg.compile:  # the gradients are set, not accumulated: no zero_grad
            from learner.sac.compiled import compiled_all_grads  # imports inductor (seconds): only here

            g = _grad_inputs(state)
            grads, alpha_grad, metrics = compiled_all_grads()(g.module, g.both, batch, state.cfg, g.log_alpha,
                                                              draw_noise(batch, state.generator))
            _set_grads(state, g.params, grads.values(), alpha_grad)
        else:
            state.optimizer.zero_grad(set_to_none=True)
            if branches is not None:
                metrics = _branch_losses_backward(state, batch, branches, with_metrics, side)
            else:
                losses = compute_losses(state.nets, batch, state.cfg, state.log_alpha, state.generator)
                losses.total.backward()
                metrics = losses.metric_vector() if with_metrics else None
        adam_step(state.optimizer)
        polyak_step(state)
    state.step += 1
    if not with_metrics:
        return state, {}
    return state, dict(zip(METRIC_NAMES, metrics.tolist()))


def polyak_step(state: SACState) -> None:
    """target += tau * (online - target) for the twin critic, one foreach call (the
    parameter lists are built once per state)."""
    if state.polyak_lists is None:
        state.polyak_lists = (list(state.target_critic.parameters()), list(state.critic.parameters()))
    targets, onlines = state.polyak_lists
    with torch.no_grad():
        torch._foreach_lerp_(targets, onlines, state.cfg.tau)


def _branch_losses_backward(state: SACState, batch: Batch, branches: BranchThread,
                            with_metrics: bool, side: Callable[[], None] | None = None) -> torch.Tensor | None:
    """The critic's loss and backward here, the actor's and alpha's on ``branches``, at once;
    the metric vector (``with_metrics``). The noise is drawn first, in ``compute_losses``' order."""
    next_eps, eps = draw_noise(batch, state.generator)
    out: list[torch.Tensor] = []

    def actor_job() -> None:
        loss, m = actor_branch(state.nets, batch, state.cfg, state.log_alpha, eps)
        loss.backward()
        out.append(m)
        if side is not None:
            side()

    branches.submit(actor_job)
    try:
        loss, critic_metrics = critic_branch(state.nets, batch, state.cfg, state.log_alpha, next_eps)
        loss.backward()
    finally:
        branches.wait()  # never leave the actor's branch running into the optimiser step
    return branch_metric_vector(critic_metrics, out[0]) if with_metrics else None


def _grad_inputs(state: SACState):
    """The state's ``compiled.GradInputs``, built on first use."""
    if state.grad_inputs is None:
        from learner.sac.compiled import GradInputs

        state.grad_inputs = GradInputs(state.nets, state.log_alpha)
    return state.grad_inputs


def _set_grads(state: SACState, params: list[torch.nn.Parameter], grads, alpha_grad: torch.Tensor | None) -> None:
    """Gradients from a compiled gradient graph as the parameters' ``.grad`` (what Adam reads;
    the previous step's are released here)."""
    for p, grad in zip(params, grads, strict=True):
        p.grad = grad
    if alpha_grad is not None and state.cfg.learn_alpha:
        state.log_alpha.grad = alpha_grad


def _grad_graph_branches(state: SACState, batch: Batch, branches: BranchThread,
                         with_metrics: bool, side: Callable[[], None] | None = None) -> torch.Tensor | None:
    """The two-branch update with each branch one compiled graph that returns its gradients
    (``compiled.compiled_grad_branches``), set as the parameters' ``.grad``; then each thread
    steps its own parameters' Adam groups once both graphs are done (the critic's group and
    then the Polyak step here, beside the actor's and alpha's group on the branch thread).
    Adam is per parameter, so this is ``adam_step`` of all groups in two parts; the first
    step, which creates Adam's state, takes ``adam_step`` and the Polyak step after the join."""
    from learner.sac.compiled import compiled_grad_branches

    critic_fn, actor_fn = compiled_grad_branches()
    g = _grad_inputs(state)
    opt = state.optimizer
    calls = fused_adam_calls(opt, need_grads=False)  # None: the first step, or a non-fused Adam
    if calls is not None:
        critic_calls = [c for c in calls if c[0].get("name") == "critic"]
        actor_calls = [c for c in calls if c[0].get("name") != "critic"]  # the actor's and alpha's
    next_eps, eps = draw_noise(batch, state.generator)
    out: list = []

    # Each graph reads the other branch's parameters (the critic's targets the actor and
    # alpha, the actor's loss the critic): a branch steps its own only when both graphs are
    # done, and neither steps when either branch (or ``side``) raised: the update raises with
    # nothing stepped.
    critic_read, actor_read = threading.Event(), threading.Event()
    ok: dict[str, bool] = {}

    def actor_job() -> None:
        try:
            actor_grads, alpha_grad, actor_metrics = actor_fn(g.module, g.actor, batch, state.cfg, g.log_alpha, eps)
            _set_grads(state, g.actor_params, actor_grads.values(), alpha_grad)
            out.append(actor_metrics)
            if side is not None:
                side()
            ok["actor"] = True
        finally:
            actor_read.set()
        if calls is not None:
            critic_read.wait()
            if ok.get("critic"):
                run_fused_adam(actor_calls)

    branches.submit(actor_job)
    try:
        try:
            critic_grads, critic_metrics = critic_fn(g.module, g.critic, batch, state.cfg, g.log_alpha, next_eps)
            ok["critic"] = True
        finally:
            critic_read.set()
        _set_grads(state, g.critic_params, critic_grads.values(), None)
        if calls is not None:
            actor_read.wait()
            if ok.get("actor"):
                run_fused_adam(critic_calls)
                polyak_step(state)  # the critic's targets: nothing on the branch thread reads them
    finally:
        branches.wait()  # never leave the actor's branch running past the update
    if calls is None:
        adam_step(opt)
        polyak_step(state)
    return branch_metric_vector(critic_metrics, out[0]) if with_metrics else None


def policy_weights(state: SACState) -> dict[str, np.ndarray]:
    """The actor's weights as CPU numpy arrays (copies), for ``InferencePolicy.load_state_dict``."""
    return {k: v.detach().cpu().numpy().copy() for k, v in state.actor.state_dict().items()}


def value_weights(state: SACState) -> dict[str, np.ndarray]:
    """Actor and online critic weights (CPU numpy, keys ``actor.*`` / ``critic.*``) for
    V(s0, z) in the relabel service (``make_value_fn_factory``)."""
    out = {f"actor.{k}": v for k, v in policy_weights(state).items()}
    out.update({f"critic.{k}": v.detach().cpu().numpy().copy() for k, v in state.critic.state_dict().items()})
    return out


def make_value_fn_factory(cfg: SACConfig, obs_dim: int, action_dim: int, task_dim: int) -> NumpyValueFnFactory:
    """weights (``value_weights``) -> ValueFn V(s0, z) = min_e Q_e(s0, tanh mu(s0, z), z), in
    numpy (``actors.policy.NumpyValueFunction``): a relabel worker never imports torch."""
    return NumpyValueFnFactory(cfg, obs_dim, action_dim, task_dim)


def save_state(state: SACState, path: str | os.PathLike) -> None:
    """Write the whole training state to ``path`` atomically (temp file + rename)."""
    payload = {
        "format": _FORMAT,
        "cfg": state.cfg.to_dict(),
        "dims": [state.obs_dim, state.action_dim, state.task_dim],
        "seed": state.seed,
        "step": state.step,
        "actor": state.actor.state_dict(),
        "critic": state.critic.state_dict(),
        "target_critic": state.target_critic.state_dict(),
        "log_alpha": state.log_alpha.detach(),
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        "generator_device": state.device.type,
    }
    atomic_save(payload, path)


def load_state(path: str | os.PathLike, device: torch.device | str = "cpu") -> SACState:
    """Rebuild a ``SACState`` saved by ``save_state`` on ``device``.

    Any device may load any checkpoint; on the device type it was saved from, the
    continuation is exact (the noise generator resumes too); across CPU and CUDA the noise
    stream is reseeded from (seed, step) because the two generators' states differ.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a SAC checkpoint of format {_FORMAT} (got {payload.get('format')!r})")
    cfg = SACConfig.from_dict(payload["cfg"])
    state = init_state(*payload["dims"], cfg, device, payload["seed"])
    state.actor.load_state_dict(payload["actor"])
    state.critic.load_state_dict(payload["critic"])
    state.target_critic.load_state_dict(payload["target_critic"])
    with torch.no_grad():
        state.log_alpha.copy_(payload["log_alpha"])
    load_optimizer_state(state.optimizer, payload["optimizer"])
    state.step = int(payload["step"])
    if payload["generator_device"] == state.device.type:
        state.generator.set_state(payload["generator"])
    else:  # CPU and CUDA generators keep different states: continue with a fresh, seeded stream
        state.generator.manual_seed(int(np.random.SeedSequence([payload["seed"], state.step]).generate_state(1)[0]))
    return state
