"""PEARL's task inference: context rows -> per-transition Gaussian factors -> posterior.

    factors = encoder(context)                           # mu, var: [T, C, Z] each
    post = product_of_gaussians(*factors)                # Posterior(mu [T, Z], var [T, Z])
    z = sample_z(post, generator)                        # [T, Z], reparameterised
    kl = kl_to_standard_normal(post)                     # [T]

PEARL (Rakelly et al. 2019, Eq. 3 and §4.1) models q(z | c) as a product of independent
Gaussian factors, one per context transition: q(z | c_1:C) ∝ prod_n N(z; mu_n, sigma_n^2),
which is permutation invariant and has the closed form

    sigma^2 = 1 / sum_n (1 / sigma_n^2),     mu = sigma^2 * sum_n (mu_n / sigma_n^2).

Every function here is batched over the T tasks of a meta-batch (no per-task loop) and
pure: tensors in, tensors out. A task with no context has the prior N(0, I) as posterior.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from learner.pearl.config import VAR_MIN  # noqa: F401 - the clamp product_of_gaussians uses


class Posterior(NamedTuple):
    """Diagonal Gaussian q(z | c) per task."""

    mu: torch.Tensor  # [T, Z]
    var: torch.Tensor  # [T, Z]


def prior(num_tasks: int, latent_dim: int, device: torch.device | str = "cpu") -> Posterior:
    """N(0, I) for every task: the posterior before any context."""
    return Posterior(torch.zeros(num_tasks, latent_dim, device=device),
                     torch.ones(num_tasks, latent_dim, device=device))


def product_of_gaussians(mu: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None) -> Posterior:
    """Product of the C factors of each task: mu, var [T, C, Z] -> Posterior([T, Z], [T, Z]).

    ``mask`` [T, C] (bool) drops factors (contexts of unequal length padded to C); a task
    whose factors are all dropped gets N(0, I).
    """
    if mu.shape != var.shape or mu.dim() != 3:
        raise ValueError(f"product_of_gaussians: mu {tuple(mu.shape)} and var {tuple(var.shape)} must be equal [T, C, Z]")
    precision = 1.0 / var.clamp_min(VAR_MIN)  # [T, C, Z]
    if mask is not None:
        if mask.shape != mu.shape[:2]:
            raise ValueError(f"product_of_gaussians: mask {tuple(mask.shape)} must be [T, C] = {tuple(mu.shape[:2])}")
        precision = precision * mask[..., None].to(precision.dtype)
        # an empty context is the prior: one N(0, 1) factor contributes precision 1, mean 0
        empty = ~mask.any(dim=1)  # [T]
        extra = empty[:, None].to(precision.dtype)  # [T, 1]
    else:
        extra = torch.zeros((), dtype=precision.dtype, device=precision.device)
    total = precision.sum(dim=1) + extra  # [T, Z]
    post_var = 1.0 / total
    post_mu = post_var * (precision * mu).sum(dim=1)
    return Posterior(post_mu, post_var)


def kl_to_standard_normal(post: Posterior) -> torch.Tensor:
    """KL(N(mu, diag var) || N(0, I)) per task: [T] = 0.5 sum_z (var + mu^2 - 1 - log var)."""
    return 0.5 * (post.var + post.mu.square() - 1.0 - post.var.log()).sum(dim=-1)


def sample_z(post: Posterior, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sqrt(var) * eps, eps ~ N(0, I): [T, Z] (reparameterised: gradients reach mu, var)."""
    eps = torch.randn(post.mu.shape, generator=generator, device=post.mu.device, dtype=post.mu.dtype)
    return post.mu + post.var.sqrt() * eps


def context_rows(obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                 next_obs: torch.Tensor | None = None) -> torch.Tensor:
    """[..., O + A + 1 (+ O)]: the (s, a, r) (, s') rows the encoder reads (PEARL §4.1)."""
    parts = [obs, action, reward[..., None]]
    if next_obs is not None:
        parts.append(next_obs)
    return torch.cat(parts, dim=-1)
