"""The three SAC losses, computed from one batch with the current parameters.

    losses = compute_losses(nets, batch, cfg, log_alpha, generator)
    (losses.critic + losses.actor + losses.alpha).backward()   # disjoint parameters

As in GH's rlkit trainer (``sac_gher.py``) all losses use the parameters from before the
step. Each loss reaches only its own parameters, so one backward of their sum gives
exactly the per-loss gradients:

* critic: Q_e(s, a, z) against y = scale * r + gamma * [not terminated] * (min_e Q'_e(s', a', z)
  - alpha log pi(a' | s', z)), a' ~ pi(. | s', z) from the CURRENT actor; y under no_grad.
* actor: alpha log pi(a | s, z) - min_e Q_e(s, a, z), a ~ pi reparameterised; the critic is
  evaluated with detached weights (gradient reaches a, not Q) and alpha is detached.
* alpha: -log alpha * (log pi + target entropy), log pi detached (rlkit's form).

A time-limit end is not terminal (the batch's ``terminated`` already says which rows are).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from learner.core import Batch
from learner.sac.config import SACConfig
from learner.sac.networks import Actor, TwinCritic


class SACNetworks(NamedTuple):
    """The trained modules plus the Polyak-averaged target critic (never given gradients)."""

    actor: Actor
    critic: TwinCritic
    target_critic: TwinCritic


#: order of the diagnostics in ``Losses.metric_vector`` (and of ``update``'s metrics)
METRIC_NAMES = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "q1", "q2", "target_q", "entropy")


class Losses(NamedTuple):
    """Scalar losses (with graph) and detached scalar diagnostics."""

    critic: torch.Tensor  # sum over the twins of the mean squared TD error
    actor: torch.Tensor  # mean of alpha log pi - min Q
    alpha: torch.Tensor  # temperature loss (0 when alpha is fixed)
    q1: torch.Tensor  # mean Q_1(s, a, z) on the batch
    q2: torch.Tensor  # mean Q_2(s, a, z)
    target_q: torch.Tensor  # mean Bellman target y
    entropy: torch.Tensor  # -mean log pi(a | s, z) of fresh actions
    alpha_value: torch.Tensor  # alpha used in these losses

    @property
    def total(self) -> torch.Tensor:
        return self.critic + self.actor + self.alpha

    def metric_vector(self) -> torch.Tensor:
        """The diagnostics as one detached tensor [8] in ``METRIC_NAMES`` order (read with
        one host sync)."""
        return torch.stack([
            self.critic.detach(), self.actor.detach(), self.alpha.detach(), self.alpha_value,
            self.q1, self.q2, self.target_q, self.entropy,
        ])


def bellman_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                   next_log_prob: torch.Tensor, alpha: torch.Tensor, discount: float,
                   reward_scale: float) -> torch.Tensor:
    """y = scale * r + gamma * [not terminated] * (next_q - alpha * next_log_prob), all [B].

    ``torch.where`` rather than ``(1 - d) * v``: a terminal row's next observation may be
    NaN (nothing follows the end), and 0 * NaN = NaN would poison the batch.
    """
    soft_next = next_q - alpha * next_log_prob
    bootstrap = torch.where(terminated, torch.zeros_like(soft_next), soft_next)
    return reward_scale * reward + discount * bootstrap


def draw_noise(batch: Batch, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two standard-normal draws [B, A] that ``compute_losses`` makes from ``generator``
    (next actions first, then the actor's), in that order, drawn ahead of the losses."""
    shape, a = batch.action.shape, batch.action
    return tuple(torch.randn(shape, generator=generator, device=a.device, dtype=a.dtype) for _ in range(2))


def critic_loss(nets: SACNetworks, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
                generator: torch.Generator | None = None, next_eps: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The critic's branch: (loss, q [2, B] detached, Bellman target y [B]) and nothing else.

    It reads the actor (next actions, under no_grad) and alpha but gives them no gradient,
    and ``actor_loss`` reads the critic with detached weights: the two branches' graphs share
    no tensor that needs a gradient, so they can run on two threads at once (``update``).
    ``next_eps``: the next actions' noise (``draw_noise``'s first draw); None draws it."""
    alpha = log_alpha.detach().exp()
    with torch.no_grad():
        next_action, next_log_prob = nets.actor.sample(batch.next_obs, batch.task, generator, next_eps)
        next_q = torch.amin(nets.target_critic(batch.next_obs, next_action, batch.task), dim=0)  # [B]
        target = bellman_target(batch.reward, batch.terminated, next_q, next_log_prob, alpha,
                                cfg.discount, cfg.reward_scale)  # [B]
    q = nets.critic(batch.obs, batch.action, batch.task)  # [2, B]
    return (q - target).square().mean(dim=1).sum(), q.detach(), target, alpha


def actor_loss(nets: SACNetworks, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
               generator: torch.Generator | None = None, eps: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The actor's and temperature's branch: (actor loss, alpha loss, log pi [B] detached).
    ``eps``: the actor's noise (``draw_noise``'s second draw); None draws it."""
    alpha = log_alpha.detach().exp()
    action, log_prob = nets.actor.sample(batch.obs, batch.task, generator, eps)  # [B, A], [B]
    q_pi = torch.amin(nets.critic(batch.obs, action, batch.task, detach_params=True), dim=0)
    loss = (alpha * log_prob - q_pi).mean()
    log_prob = log_prob.detach()
    if cfg.learn_alpha:
        target_entropy = cfg.entropy_target(batch.action.shape[-1])
        alpha_loss = -(log_alpha * (log_prob + target_entropy)).mean()
    else:
        alpha_loss = torch.zeros((), device=log_prob.device)
    return loss, alpha_loss, log_prob


def compute_losses(nets: SACNetworks, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
                   generator: torch.Generator | None = None,
                   noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> Losses:
    """Critic, actor and temperature losses for ``batch`` (see the module docstring).

    ``noise``: the actors' reparameterisation noise as ``draw_noise(batch, generator)`` gives
    it (same values as drawing inside); None draws from ``generator`` here."""
    next_eps, eps = (None, None) if noise is None else noise
    critic, q, target, alpha = critic_loss(nets, batch, cfg, log_alpha, generator, next_eps)
    actor, alpha_loss, log_prob = actor_loss(nets, batch, cfg, log_alpha, generator, eps)
    return Losses(
        critic=critic,
        actor=actor,
        alpha=alpha_loss,
        q1=q[0].mean(),
        q2=q[1].mean(),
        target_q=target.mean(),
        entropy=-log_prob.mean(),
        alpha_value=alpha.reshape(()),
    )


def critic_branch(nets: SACNetworks, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
                  next_eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss with its graph, detached [critic_loss, q1, q2, target_q])."""
    loss, q, target, _ = critic_loss(nets, batch, cfg, log_alpha, None, next_eps)
    return loss, torch.stack([loss.detach(), q[0].mean(), q[1].mean(), target.mean()])


def actor_branch(nets: SACNetworks, batch: Batch, cfg: SACConfig, log_alpha: torch.Tensor,
                 eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(actor + alpha loss with its graph, detached [actor_loss, alpha_loss, alpha, entropy])."""
    loss, alpha_loss, log_prob = actor_loss(nets, batch, cfg, log_alpha, None, eps)
    alpha = log_alpha.detach().exp().reshape(())
    return loss + alpha_loss, torch.stack([loss.detach(), alpha_loss.detach(), alpha, -log_prob.mean()])


def branch_metric_vector(critic: torch.Tensor, actor: torch.Tensor) -> torch.Tensor:
    """The two branches' diagnostics in ``METRIC_NAMES`` order (``Losses.metric_vector``'s)."""
    return torch.stack([critic[0], actor[0], actor[1], actor[2], critic[1], critic[2], critic[3], actor[3]])
