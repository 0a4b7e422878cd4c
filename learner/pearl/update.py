"""PEARL's training state, meta-batch sampling, the update step, checkpoints, weights.

```
 RL buffers [N tasks] ──sample(ids [T], B)──► MetaBatch [T, B, ...] ─────────────────┐
 encoder buffers [N] ──sample(ids [T], C)──► context [T, C, s|a|r] ─► encoder ─► (mu, var) [T, C, Z]
                                                   product of Gaussians ─► q(z|c) [T, Z] ─► KL ─┤
                                                   z ~ q(z|c) [T, Z] ──repeat over B──► z [T*B, Z]
                                 critic loss (z with grad: trains the encoder) ◄──────┤
                                 value / actor losses (z.detach()) ◄──────────────────┘
                         one backward of kl + critic + value + actor; Adam; Polyak on V'
```

    state = init_state(obs_dim, action_dim, num_tasks, cfg, sched, device, seed=0)
    add_transitions(state, task_index, rows, to_rl, to_enc)   # per-task buffers
    ids, batch, context = sample_meta_batch(state)            # T tasks, one tensor op each
    state, metrics = update(state, batch, context)
    save_state(state, path); state = load_state(path, device)

All mutable training state (parameters, target value net, optimiser moments, the RNGs of
task choice, row sampling and z / action noise, the per-task buffers, the step counter)
lives in ``PEARLState``; ``save_state`` writes all of it, so save -> load -> update equals
an uninterrupted run bit for bit on the same device.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from learner.checkpoints import atomic_save, load_optimizer_state
from learner.pearl.buffers import TaskReplay
from learner.pearl.config import PEARLConfig, ScheduleConfig
from learner.pearl.context import context_rows
from learner.pearl.losses import MetaBatch, compute_losses
from learner.pearl.networks import PEARLNetworks, UtilityFactory, make_networks
from learner.sac.update import _make_adam

METRIC_NAMES = ("kl_loss", "critic_loss", "value_loss", "actor_loss", "q1", "q2", "v", "target_q",
                "entropy", "kl", "z_var")
_FORMAT = 1


@dataclasses.dataclass
class PEARLState:
    cfg: PEARLConfig
    sched: ScheduleConfig
    obs_dim: int
    action_dim: int
    num_tasks: int  # training tasks (buffer count)
    seed: int
    nets: PEARLNetworks
    optimizer: torch.optim.Adam  # groups "encoder", "critic", "value", "actor"
    generator: torch.Generator  # z and action noise, on ``device``
    sample_generator: torch.Generator  # task choice and row sampling, on ``device``
    rl: TaskReplay
    enc: TaskReplay
    step: int = 0

    @property
    def device(self) -> torch.device:
        return self.rl.device


def init_state(obs_dim: int, action_dim: int, num_tasks: int, cfg: PEARLConfig, sched: ScheduleConfig,
               device: torch.device | str = "cpu", seed: int = 0) -> PEARLState:
    device = torch.device(device)
    net_seed, noise_seed, sample_seed = (int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(3))
    cpu_nets = make_networks(obs_dim, action_dim, cfg, net_seed)
    nets = PEARLNetworks(*(m.to(device) for m in cpu_nets))
    groups = [
        {"params": list(nets.encoder.parameters()), "lr": cfg.lr, "name": "encoder"},
        {"params": list(nets.critic.parameters()), "lr": cfg.lr, "name": "critic"},
        {"params": list(nets.value.parameters()), "lr": cfg.lr, "name": "value"},
        {"params": list(nets.actor.parameters()), "lr": cfg.lr, "name": "actor"},
    ]
    return PEARLState(
        cfg=cfg, sched=sched, obs_dim=obs_dim, action_dim=action_dim, num_tasks=num_tasks, seed=seed,
        nets=nets, optimizer=_make_adam(groups),
        generator=torch.Generator(device=device).manual_seed(noise_seed),
        sample_generator=torch.Generator(device=device).manual_seed(sample_seed),
        rl=TaskReplay(num_tasks, sched.rl_capacity, obs_dim, action_dim, device),
        enc=TaskReplay(num_tasks, sched.enc_capacity, obs_dim, action_dim, device),
    )


def sample_meta_batch(state: PEARLState) -> tuple[torch.Tensor, MetaBatch, torch.Tensor]:
    """T = meta_batch task ids drawn uniformly (with replacement, as oyster's
    ``np.random.choice``) among tasks whose RL and encoder buffers hold data, then B RL rows
    and C context rows per task: (ids [T], MetaBatch [T, B, ...], context [T, C, D_c])."""
    cfg, gen = state.cfg, state.sample_generator
    ready = (state.rl._size_t > 0) & (state.enc._size_t > 0)  # [N]
    if not bool(ready.any()):
        raise RuntimeError("PEARL: no training task has data in both its RL and encoder buffers yet")
    ids = torch.multinomial(ready.float(), cfg.meta_batch, replacement=True, generator=gen)  # [T]
    batch = state.rl.sample(ids, cfg.batch_size, gen)
    c = state.enc.sample(ids, cfg.embedding_batch_size, gen)
    context = context_rows(c.obs, c.action, c.reward, c.next_obs if cfg.use_next_obs_in_context else None)
    return ids, batch, context


def update(state: PEARLState, batch: MetaBatch, context: torch.Tensor,
           with_metrics: bool = True) -> tuple[PEARLState, dict[str, float]]:
    """One gradient step on every part (see ``losses``) and the Polyak update of V'."""
    losses = compute_losses(state.nets, batch, context, state.cfg, state.generator)
    state.optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    state.optimizer.step()
    with torch.no_grad():
        for target, online in zip(state.nets.target_value.parameters(), state.nets.value.parameters()):
            target.lerp_(online, state.cfg.tau)
    state.step += 1
    if not with_metrics:
        return state, {}
    values = torch.stack([
        losses.kl.detach(), losses.critic.detach(), losses.value.detach(), losses.actor.detach(),
        losses.q1, losses.q2, losses.v, losses.target_q, losses.entropy, losses.kl_raw, losses.z_var,
    ]).tolist()
    return state, dict(zip(METRIC_NAMES, values))


def _numpy(module: torch.nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def policy_weights(state: PEARLState) -> dict[str, np.ndarray]:
    """Encoder and actor weights (CPU numpy; keys ``encoder.*`` / ``actor.*``) for the
    rollout workers' ``actors.policy.NumpyPEARLAgent``: they infer z from their own context."""
    return {**_numpy(state.nets.encoder, "encoder"), **_numpy(state.nets.actor, "actor")}


def value_weights(state: PEARLState) -> dict[str, np.ndarray]:
    """Encoder, actor and online twin critic (keys ``encoder.*``, ``actor.*``, ``critic.*``)
    for HFR's utility in the relabel service (``make_utility_factory``)."""
    return {**policy_weights(state), **_numpy(state.nets.critic, "critic")}


def make_utility_factory(cfg: PEARLConfig, obs_dim: int, action_dim: int) -> UtilityFactory:
    """weights (``value_weights``) -> UtilityValueFunction (HFR Eq. 9 pieces) on CPU."""
    return UtilityFactory(cfg, obs_dim, action_dim)


def save_state(state: PEARLState, path: str | os.PathLike, with_buffers: bool = True) -> None:
    """Write the whole training state atomically (temp file + rename)."""
    payload = {
        "format": _FORMAT,
        "cfg": state.cfg.to_dict(),
        "sched": state.sched.to_dict(),
        "dims": [state.obs_dim, state.action_dim, state.num_tasks],
        "seed": state.seed,
        "step": state.step,
        "nets": {name: m.state_dict() for name, m in state.nets._asdict().items()},
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        "sample_generator": state.sample_generator.get_state(),
        "generator_device": state.device.type,
        "rl": state.rl.state_dict() if with_buffers else None,
        "enc": state.enc.state_dict() if with_buffers else None,
    }
    atomic_save(payload, path)


def load_state(path: str | os.PathLike, device: torch.device | str = "cpu") -> PEARLState:
    """Rebuild a ``PEARLState`` saved by ``save_state`` on ``device`` (buffers too, if saved).

    On the device type it was saved from, the continuation is exact; across CPU and CUDA
    the RNG streams are reseeded from (seed, step)."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a PEARL checkpoint of format {_FORMAT} (got {payload.get('format')!r})")
    cfg = PEARLConfig.from_dict(payload["cfg"])
    sched = ScheduleConfig.from_dict(payload["sched"])
    state = init_state(*payload["dims"], cfg, sched, device, payload["seed"])
    for name, module in state.nets._asdict().items():
        module.load_state_dict(payload["nets"][name])
    load_optimizer_state(state.optimizer, payload["optimizer"])
    state.step = int(payload["step"])
    if payload["generator_device"] == state.device.type:
        state.generator.set_state(payload["generator"])
        state.sample_generator.set_state(payload["sample_generator"])
    else:
        s = np.random.SeedSequence([payload["seed"], state.step]).generate_state(2)
        state.generator.manual_seed(int(s[0]))
        state.sample_generator.manual_seed(int(s[1]))
    if payload["rl"] is not None:
        state.rl.load_state_dict(payload["rl"])
        state.enc.load_state_dict(payload["enc"])
    return state
