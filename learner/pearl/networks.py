"""PEARL's networks: context encoder, and the SAC modules conditioned on z instead of a task.

    nets = make_networks(obs_dim, action_dim, cfg, seed)    # PEARLNetworks
    mu, var = nets.encoder(context)                          # [T, C, Z] each
    q = nets.critic(obs, action, z)                          # [2, B]  (SAC's TwinCritic)

The actor, the twin critic and the value network are the SAC modules of
``learner/sac/networks.py`` with task_dim = Z and z fed only at the input
(``task_to_all_layers=False``: PEARL's ``FlattenMlp`` on [s, a, z]); the same rlkit
initialisation. The encoder is an MLP on one context row emitting (mu, softplus -> var)
per transition (PEARL §4.1; oyster ``MlpEncoder`` + ``infer_posterior``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from learner.pearl.config import PEARLConfig, sac_view
from learner.pearl.context import Posterior, context_rows, product_of_gaussians, sample_z
from learner.sac.networks import Actor, TaskMLP, TwinCritic


class ContextEncoder(nn.Module):
    """phi(c_n) -> (mu_n, sigma_n^2) for every context row: [..., D_c] -> ([..., Z], [..., Z])."""

    def __init__(self, context_dim: int, cfg: PEARLConfig, seed: int = 0):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        enc_cfg = dataclasses.replace(sac_view(cfg), hidden_sizes=cfg.encoder_hidden)
        # a TaskMLP with a zero-width task is a plain MLP with rlkit's initialisation
        self.net = TaskMLP(context_dim, 0, 2 * cfg.latent_dim, enc_cfg, enc_cfg.q_last_init, seed)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = context.shape[:-1]
        flat = context.reshape(-1, context.shape[-1])  # [N, D_c]
        out = self.net(flat, flat.new_zeros(flat.shape[0], 0))  # [N, 2Z]
        mu, raw = out.reshape(*lead, 2 * self.latent_dim).chunk(2, dim=-1)
        return mu, F.softplus(raw)

    def posterior(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> Posterior:
        """q(z | c) of each task: context [T, C, D_c] -> Posterior([T, Z], [T, Z])."""
        mu, var = self(context)
        return product_of_gaussians(mu, var, mask)


class ValueNet(nn.Module):
    """V(s, z) [B] (SAC-v1's state value, PEARL's ``vf``)."""

    def __init__(self, obs_dim: int, cfg: PEARLConfig, seed: int = 0):
        super().__init__()
        sc = sac_view(cfg)
        self.net = TaskMLP(obs_dim, cfg.latent_dim, 1, sc, sc.q_last_init, seed)

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(obs, z).squeeze(-1)


class PEARLNetworks(NamedTuple):
    encoder: ContextEncoder
    actor: Actor
    critic: TwinCritic
    value: ValueNet
    target_value: ValueNet  # requires_grad False; Polyak-averaged copy of ``value``


def make_networks(obs_dim: int, action_dim: int, cfg: PEARLConfig, seed: int = 0) -> PEARLNetworks:
    """Fresh networks, each initialised on the CPU from its own seed derived from ``seed``."""
    s = [int(x) for x in np.random.SeedSequence(seed).generate_state(4)]
    sc = sac_view(cfg)
    encoder = ContextEncoder(cfg.context_dim(obs_dim, action_dim), cfg, s[0])
    actor = Actor(obs_dim, action_dim, cfg.latent_dim, sc, s[1])
    critic = TwinCritic(obs_dim, action_dim, cfg.latent_dim, sc, s[2])
    value = ValueNet(obs_dim, cfg, s[3])
    return PEARLNetworks(encoder, actor, critic, value, copy.deepcopy(value).requires_grad_(False))


class UtilityValueFunction:
    """HFR's post-adaptation value (HFR Eq. 9) from versioned PEARL weights, numpy in and out.

        vf = UtilityValueFunction(obs_dim, action_dim, cfg, weights)
        z = vf.infer(contexts [K, C, D_c], rng)              # [K, Z]: one sample of q(z | c_k)
        q = vf.q_values(states [K, N_U, O], z [K, Z], rng)   # [K, N_U]: min_e Q_e(s, a ~ pi(.|s,z), z)

    Built by ``UtilityFactory`` in relabel workers (relabel_service never imports learner).
    """

    def __init__(self, obs_dim: int, action_dim: int, cfg: PEARLConfig,
                 weights: Mapping[str, np.ndarray | torch.Tensor]):
        self.cfg = cfg
        self.obs_dim, self.action_dim = obs_dim, action_dim
        sc = sac_view(cfg)
        self.encoder = ContextEncoder(cfg.context_dim(obs_dim, action_dim), cfg).requires_grad_(False)
        self.actor = Actor(obs_dim, action_dim, cfg.latent_dim, sc).requires_grad_(False)
        self.critic = TwinCritic(obs_dim, action_dim, cfg.latent_dim, sc).requires_grad_(False)
        w = {k: torch.as_tensor(v) for k, v in weights.items()}
        for name, mod in (("encoder", self.encoder), ("actor", self.actor), ("critic", self.critic)):
            mod.load_state_dict({k[len(name) + 1:]: v for k, v in w.items() if k.startswith(name + ".")})
        self.generator = torch.Generator()

    def _seed(self, rng: np.random.Generator) -> None:
        self.generator.manual_seed(int(rng.integers(2**62)))

    @torch.inference_mode()
    def infer(self, contexts: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None) -> np.ndarray:
        self._seed(rng)
        c = torch.as_tensor(np.asarray(contexts, np.float32))
        m = None if mask is None else torch.as_tensor(np.asarray(mask, bool))
        post = self.encoder.posterior(c, m)
        return sample_z(post, self.generator).numpy()

    @torch.inference_mode()
    def q_values(self, states: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self._seed(rng)
        k, n, _ = states.shape
        s = torch.as_tensor(np.asarray(states, np.float32)).reshape(k * n, -1)
        zz = torch.as_tensor(np.asarray(z, np.float32))[:, None].expand(k, n, -1).reshape(k * n, -1)
        a, _ = self.actor.sample(s, zz, self.generator)
        return torch.amin(self.critic(s, a, zz), dim=0).reshape(k, n).double().numpy()

    @torch.inference_mode()
    def q_of(self, states: np.ndarray, actions: np.ndarray, z: np.ndarray) -> np.ndarray:
        """min_e Q_e(s, a, z) of GIVEN actions: states [K, N, O], actions [K, N, A], z [K, Z] -> [K, N]."""
        k, n, _ = states.shape
        s = torch.as_tensor(np.asarray(states, np.float32)).reshape(k * n, -1)
        a = torch.as_tensor(np.asarray(actions, np.float32)).reshape(k * n, -1)
        zz = torch.as_tensor(np.asarray(z, np.float32))[:, None].expand(k, n, -1).reshape(k * n, -1)
        return torch.amin(self.critic(s, a, zz), dim=0).reshape(k, n).double().numpy()

    def context(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
                next_obs: np.ndarray | None = None) -> np.ndarray:
        """Context rows [..., D_c] of recorded steps under some reward (float32)."""
        t = context_rows(torch.as_tensor(np.asarray(obs, np.float32)), torch.as_tensor(np.asarray(action, np.float32)),
                         torch.as_tensor(np.asarray(reward, np.float32)),
                         torch.as_tensor(np.asarray(next_obs, np.float32)) if self.cfg.use_next_obs_in_context else None)
        return t.numpy()


class UtilityFactory:
    """Picklable ``weights -> UtilityValueFunction`` injected into relabel workers by the
    composition root (built once, called per published version)."""

    def __init__(self, cfg: PEARLConfig, obs_dim: int, action_dim: int):
        self.cfg, self.dims = cfg, (obs_dim, action_dim)

    def __call__(self, weights: Mapping[str, np.ndarray | torch.Tensor]) -> UtilityValueFunction:
        return UtilityValueFunction(*self.dims, self.cfg, weights)
