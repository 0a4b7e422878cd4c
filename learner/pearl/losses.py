"""PEARL's losses on one meta-batch: encoder (through the critic loss and the KL), twin
critic, value and actor, computed with the parameters from before the step.

    losses = compute_losses(nets, batch, context, cfg, generator)
    losses.total.backward()       # each loss reaches exactly the parameters listed below

    batch    MetaBatch of T tasks x B transitions          context [T, C, D_c]
    z        ~ q(z | context_t) per task (PEARL Eq. 3), reparameterised, repeated over B

* kl:     kl_lambda * sum_t KL(q(z | c_t) || N(0, I))                 -> encoder
* critic: sum_e mean (Q_e(s, a, z) - y)^2, y = scale r + gamma [not d] V'(s', z)
          (SAC's ``bellman_target`` with alpha = 0 and V' in place of the soft next value;
          y under no_grad)                                             -> critics, encoder
* value:  mean (V(s, z-) - (min_e Q_e(s, a~pi, z-) - log pi))^2, target detached -> value
* actor:  mean (log pi(a|s, z-) - min_e Q_e(s, a, z-)) + mean_reg |mu|^2 + std_reg |log std|^2
          (Q with detached weights: the gradient reaches a, not Q)      -> actor

z- is z.detach(): the actor and the value network never train the encoder (PEARL §4.2;
oyster ``_take_step``: "encoder does not get grads from policy or vf"). Temperature fixed
at 1, as in PEARL's SAC-v1 (the reward scale sets the trade-off).

One difference from oyster: there the value and actor targets use the critics AFTER the
critic step; here every loss uses the pre-step parameters (one backward, as in
``learner/sac/losses.py``), a one-step lag at lr 3e-4.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from learner.pearl.config import PEARLConfig
from learner.pearl.context import Posterior, kl_to_standard_normal, sample_z
from learner.pearl.networks import PEARLNetworks
from learner.sac.losses import bellman_target
from learner.sac.networks import tanh_gaussian_sample


class MetaBatch(NamedTuple):
    """T tasks x B transitions on the learner's device (float32; ``terminated`` bool)."""

    obs: torch.Tensor  # [T, B, O]
    action: torch.Tensor  # [T, B, A]
    reward: torch.Tensor  # [T, B]
    next_obs: torch.Tensor  # [T, B, O]
    terminated: torch.Tensor  # [T, B] bool


class PEARLLosses(NamedTuple):
    kl: torch.Tensor  # kl_lambda * sum_t KL
    critic: torch.Tensor
    value: torch.Tensor
    actor: torch.Tensor
    q1: torch.Tensor  # detached diagnostics from here on
    q2: torch.Tensor
    v: torch.Tensor
    target_q: torch.Tensor
    entropy: torch.Tensor
    kl_raw: torch.Tensor  # mean over tasks of KL (unweighted)
    z_var: torch.Tensor  # mean posterior variance

    @property
    def total(self) -> torch.Tensor:
        return self.kl + self.critic + self.value + self.actor


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def compute_losses(nets: PEARLNetworks, batch: MetaBatch, context: torch.Tensor, cfg: PEARLConfig,
                   generator: torch.Generator | None = None) -> PEARLLosses:
    """The four losses of the module docstring for one meta-batch."""
    T, B = batch.reward.shape
    if context.dim() != 3 or context.shape[0] != T:
        raise ValueError(f"PEARL context must be [T={T}, C, D_c], got {tuple(context.shape)}")
    post: Posterior = nets.encoder.posterior(context)  # [T, Z] each
    kl_per_task = kl_to_standard_normal(post)  # [T]
    z = sample_z(post, generator)  # [T, Z], carries the encoder's graph
    z_rows = z[:, None, :].expand(T, B, z.shape[-1]).reshape(T * B, -1)  # [TB, Z]
    z_det = z_rows.detach()
    obs, action, next_obs = _flat(batch.obs), _flat(batch.action), _flat(batch.next_obs)
    reward, terminated = _flat(batch.reward), _flat(batch.terminated)

    with torch.no_grad():
        target_v = nets.target_value(next_obs, z_det)  # [TB]
        zero = torch.zeros((), device=reward.device)
        y = bellman_target(reward, terminated, target_v, torch.zeros_like(target_v), zero,
                           cfg.discount, cfg.reward_scale)  # [TB]
    q = nets.critic(obs, action, z_rows)  # [2, TB]; z with graph: the critic loss trains the encoder
    critic_loss = (q - y).square().mean(dim=1).sum()

    mean, log_std = nets.actor(obs, z_det)  # [TB, A] each
    new_action, log_pi = tanh_gaussian_sample(mean, log_std, generator)
    q_new = torch.amin(nets.critic(obs, new_action, z_det, detach_params=True), dim=0)  # [TB]
    v = nets.value(obs, z_det)  # [TB]
    value_loss = (v - (q_new - log_pi).detach()).square().mean()
    actor_loss = (log_pi - q_new).mean()
    actor_loss = actor_loss + cfg.policy_mean_reg * mean.square().mean() + cfg.policy_std_reg * log_std.square().mean()

    q = q.detach()
    return PEARLLosses(
        kl=cfg.kl_lambda * kl_per_task.sum(),
        critic=critic_loss,
        value=value_loss,
        actor=actor_loss,
        q1=q[0].mean(),
        q2=q[1].mean(),
        v=v.detach().mean(),
        target_q=y.mean(),
        entropy=-log_pi.detach().mean(),
        kl_raw=kl_per_task.detach().mean(),
        z_var=post.var.detach().mean(),
    )
