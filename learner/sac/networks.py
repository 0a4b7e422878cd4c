"""Task-conditioned networks of multi-task SAC: tanh-Gaussian actor, twin critic, inference copy.

    actor = Actor(obs_dim, action_dim, task_dim, cfg)
    critic = TwinCritic(obs_dim, action_dim, task_dim, cfg)
    q = critic(obs, action, task)                        # [E=2, B] in one batched call

Task conditioning follows GH's rlkit ``LatentConditionedMlp``: the task z [B, Z] is tiled R
times (``z.repeat(1, R)``), concatenated to the input, and with ``task_to_all_layers`` also
after every hidden layer, so the output layer sees it too.

The twin critic is ONE ensemble module: each layer's weights are stacked [E, in, out] and
applied with ``torch.baddbmm``, so both Q functions cost one call per layer (on CPU the
learner is the bottleneck; DESIGN.md "Performance facts").

Parameters are initialised on the CPU from an explicit seed and then moved, so the same
seed gives the same network on every device.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from learner.sac.config import SACConfig

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def _tile(task: torch.Tensor, repeats: int) -> torch.Tensor:
    """[B, Z] -> [B, Z*R], z repeated R times (``z.repeat(1, R)`` as in rlkit)."""
    return task if repeats == 1 else task.repeat(1, repeats)


def _init_layer(
    shape_w: tuple[int, ...], shape_b: tuple[int, ...], fan_in: int, last: bool, last_init: float,
    cfg: SACConfig, gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rlkit init: hidden W ~ U(+-1/sqrt(fan_in)), b = 0.1; output W, b ~ U(+-last_init)."""
    if last:
        w = torch.empty(shape_w).uniform_(-last_init, last_init, generator=gen)
        b = torch.empty(shape_b).uniform_(-last_init, last_init, generator=gen)
    else:
        bound = 1.0 / math.sqrt(fan_in)
        w = torch.empty(shape_w).uniform_(-bound, bound, generator=gen)
        b = torch.full(shape_b, cfg.hidden_bias_init)
    return w, b


def _affine(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """bias + x @ weight, batched over a leading ensemble dim when x is 3-D ([E, B, in] @
    [E, in, out] + [E, 1, out]).

    Eager: one ``addmm`` / ``baddbmm``. Under ``torch.compile`` the product and the bias add
    are written apart: ``baddbmm`` first copies the broadcast bias into its whole output and
    then accumulates into it (a pass over [E, B, out] per layer), while a separate add is
    fused by inductor into the ReLU or loss kernel that reads the product anyway."""
    if torch.compiler.is_compiling():
        return (torch.bmm(x, weight) if x.dim() == 3 else torch.mm(x, weight)) + bias
    return torch.baddbmm(bias, x, weight) if x.dim() == 3 else torch.addmm(bias, x, weight)


def _layer(h: torch.Tensor, z: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
           linear: bool = False, repeats: int = 1) -> torch.Tensor:
    """One layer on [h, tile(z, R)] (``z`` None: on h alone). ``weight`` is [W_h; W_z] in the
    ensemble's [E, in, out] layout, or with ``linear`` in ``nn.Linear``'s [out, in]; the
    output is h @ W_h + (z @ W_z' + bias), so [h, tile(z)] is never built.

    * No concatenation: it would copy every hidden activation into a new, wider buffer (and
      its backward slice the gradient back out), a pass over [E, B, H] per layer each way.
    * No tiling: tile(z, R) @ W_z = z @ W_z' with W_z' the sum of W_z's R blocks of Z rows,
      so the task part is a K = Z product instead of K = Z*R (at HalfCheetahMO's R = 5 the
      compiled update is ~3% faster). Autograd gives every block the same gradient
      z^T dL/dout, exactly what the tiled input gives it.
    * ``split`` keeps the parameter one tensor (checkpoints and the inference copy see the
      rlkit layout) and its backward assembles the gradients in the parameter's own layout
      (split along ``in`` where it is, so no gradient needs a transposing copy)."""
    if z is None:
        return _affine(bias, h, weight.t() if linear else weight)
    dim = -1 if linear else -2  # the in-dim
    w_h, w_z = weight.split((h.shape[-1], z.shape[-1] * repeats), dim=dim)
    if repeats > 1:  # [..., R*Z, ...] -> sum of the R blocks
        w_z = w_z.unflatten(dim, (repeats, z.shape[-1])).sum(dim - 1)
    if linear:
        w_h, w_z = w_h.t(), w_z.t()
    return _affine(_affine(bias, z, w_z), h, w_h)


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None,
                         eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(mean + std * eps) [B, A] and log pi(a) [B] of a tanh-Gaussian (``Actor.sample``;
    PEARL's losses call it with the mean and log-std they also regularise). ``eps`` [B, A]: a
    standard-normal draw made by the caller (a compiled update cannot draw from a
    ``torch.Generator``); None draws it here from ``generator``."""
    if eps is None:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + log_std.exp() * eps
    log_prob = (-0.5 * eps.square() - log_std - _LOG_SQRT_2PI).sum(-1)
    log_prob = log_prob - (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), log_prob


class TaskMLP(nn.Module):
    """MLP on [x, tile(z, R)] with the tiled task optionally re-appended after each hidden layer."""

    def __init__(self, in_dim: int, task_dim: int, out_dim: int, cfg: SACConfig, last_init: float,
                 seed: int = 0):
        super().__init__()
        self.task_repeat = cfg.task_repeat
        self.task_to_all_layers = cfg.task_to_all_layers
        gen = torch.Generator().manual_seed(seed)
        sizes = cfg.layer_sizes(in_dim, out_dim, task_dim * cfg.task_repeat)
        self.layers = nn.ModuleList()
        for i, (fan_in, fan_out) in enumerate(sizes):
            layer = nn.Linear(fan_in, fan_out)
            w, b = _init_layer((fan_out, fan_in), (fan_out,), fan_in, i == len(sizes) - 1, last_init, cfg, gen)
            with torch.no_grad():
                layer.weight.copy_(w)
                layer.bias.copy_(b)
            self.layers.append(layer)

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        h, last = x, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            z = task if i == 0 or self.task_to_all_layers else None
            h = _layer(h, z, layer.weight, layer.bias, linear=True, repeats=self.task_repeat)
            if i < last:
                h = F.relu(h)  # [B, H]
        return h


class EnsembleTaskMLP(nn.Module):
    """E independent ``TaskMLP``s evaluated in one batched call: [B, in] -> [E, B, out].

    ``weights[l]`` is [E, in_l, out_l] (the transpose of ``nn.Linear.weight``), ``biases[l]``
    [E, 1, out_l]. ``forward(..., params=...)`` runs with other tensors of the same shapes
    (e.g. detached copies, so that a loss reaches the input but not these parameters).
    """

    def __init__(self, in_dim: int, task_dim: int, out_dim: int, cfg: SACConfig, last_init: float,
                 ensemble_size: int = 2, seed: int = 0):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.task_repeat = cfg.task_repeat
        self.task_to_all_layers = cfg.task_to_all_layers
        gen = torch.Generator().manual_seed(seed)
        sizes = cfg.layer_sizes(in_dim, out_dim, task_dim * cfg.task_repeat)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(sizes):
            w, b = _init_layer((ensemble_size, fan_in, fan_out), (ensemble_size, 1, fan_out), fan_in,
                               i == len(sizes) - 1, last_init, cfg, gen)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def params(self) -> list[torch.Tensor]:
        """[W_0, b_0, W_1, b_1, ...] in the order ``forward(params=...)`` expects."""
        return [t for wb in zip(self.weights, self.biases) for t in wb]

    def forward(self, x: torch.Tensor, task: torch.Tensor,
                params: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        ps = self.params() if params is None else params
        e, b = self.ensemble_size, x.shape[0]
        h, task = x.expand(e, b, -1), task.expand(e, b, -1)  # [E, B, in], [E, B, Z]
        n = len(ps) // 2
        for i in range(n):
            z = task if i == 0 or self.task_to_all_layers else None
            h = _layer(h, z, ps[2 * i], ps[2 * i + 1], repeats=self.task_repeat)  # [E, B, out_i]
            if i < n - 1:
                h = F.relu(h)
        return h


class TwinCritic(nn.Module):
    """Q_1, Q_2 (s, a, z) as one ensemble: ``critic(obs, action, task) -> [2, B]``."""

    def __init__(self, obs_dim: int, action_dim: int, task_dim: int, cfg: SACConfig, seed: int = 0):
        super().__init__()
        self.net = EnsembleTaskMLP(obs_dim + action_dim, task_dim, 1, cfg, cfg.q_last_init, 2, seed)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, task: torch.Tensor,
                detach_params: bool = False) -> torch.Tensor:
        """[2, B]. ``detach_params``: gradients reach obs/action/task but not the critic
        (the actor loss differentiates through Q w.r.t. the action only; skipping the
        weight-gradient matmuls there makes the actor's backward through Q half as costly)."""
        params = [p.detach() for p in self.net.params()] if detach_params else None
        return self.net(torch.cat((obs, action), dim=-1), task, params).squeeze(-1)


class Actor(nn.Module):
    """tanh-Gaussian policy pi(a | s, z): one TaskMLP emitting mean and log-std [B, 2A]."""

    def __init__(self, obs_dim: int, action_dim: int, task_dim: int, cfg: SACConfig, seed: int = 0):
        super().__init__()
        self.log_std_min = cfg.log_std_min
        self.log_std_max = cfg.log_std_max
        self.net = TaskMLP(obs_dim, task_dim, 2 * action_dim, cfg, cfg.pi_last_init, seed)

    def forward(self, obs: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean [B, A] and clamped log-std [B, A] (rlkit clamps to [-20, 2])."""
        mean, log_std = self.net(obs, task).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, obs: torch.Tensor, task: torch.Tensor, generator: torch.Generator | None = None,
               eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised a = tanh(mean + std * eps) [B, A] and log pi(a | s, z) [B].

        log pi = log N(u; mean, std) - sum log(1 - tanh(u)^2), the latter written as
        2 (log 2 - u - softplus(-2u)) which is exact and stable for large |u|. ``eps``: the
        standard-normal noise [B, A] drawn by the caller, else drawn from ``generator``.
        """
        mean, log_std = self(obs, task)
        return tanh_gaussian_sample(mean, log_std, generator, eps)

    def log_prob(self, obs: torch.Tensor, task: torch.Tensor, action: torch.Tensor,
                 eps: float = 1e-6) -> torch.Tensor:
        """log pi(a | s, z) [B] of GIVEN actions a [B, A] (HIPI-RL scores stored actions).

        u = atanh(a), with a clamped to [-1 + eps, 1 - eps] (rlkit's ``TanhNormal``) because
        stored actions may be exactly +-1 after tanh saturates in float32; then the same
        density as ``sample``: log N(u; mean, std) - sum log(1 - tanh(u)^2).
        """
        mean, log_std = self(obs, task)
        u = torch.atanh(action.to(mean.dtype).clamp(-1.0 + eps, 1.0 - eps))
        z = (u - mean) * torch.exp(-log_std)
        log_prob = (-0.5 * z.square() - log_std - _LOG_SQRT_2PI).sum(-1)
        return log_prob - (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, task: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions [B, A]: tanh(mean) if ``deterministic`` (evaluation), else a sample.

        Same noise draw as ``sample`` (identical actions for the same generator state), but
        no log-probability: this is the rollout workers' per-step hot path.
        """
        mean, log_std = self(obs, task)
        if deterministic:
            return torch.tanh(mean)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.tanh(mean + log_std.exp() * eps)


class InferencePolicy:
    """The actor alone, numpy in, numpy out, no autograd, on any device: the local trainer's
    evaluation (``learner/local.py``). Rollout and evaluation workers run the same function
    in numpy (``actors.policy.NumpyPolicy``), so their processes never import torch.

        policy = InferencePolicy(obs_dim, action_dim, task_dim, cfg, seed=worker_id)
        policy.load_state_dict(weights)                    # from ``update.policy_weights``
        actions = policy(obs[W, O], tasks[W, Z])           # [W, A] float32, one forward pass

    Critics, targets and optimisers stay in the learner (STYLE.md practice 9).
    """

    def __init__(self, obs_dim: int, action_dim: int, task_dim: int, cfg: SACConfig,
                 device: torch.device | str = "cpu", seed: int = 0):
        self.device = torch.device(device)
        self.actor = Actor(obs_dim, action_dim, task_dim, cfg).to(self.device)
        self.actor.requires_grad_(False)
        self.actor.eval()
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.version = -1

    def load_state_dict(self, weights: Mapping[str, np.ndarray | torch.Tensor], version: int = -1) -> None:
        """Copy actor weights (numpy or torch, any device) in; remember their version."""
        self.actor.load_state_dict(_as_tensors(weights))
        self.version = version


    def state_dict(self) -> dict[str, np.ndarray]:
        """Actor weights as CPU numpy arrays (same keys as ``policy_weights``)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.actor.state_dict().items()}

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, task: np.ndarray, deterministic: bool = False,
            generator: torch.Generator | None = None) -> np.ndarray:
        """Actions [W, A] float32 for obs [W, O], task [W, Z]; noise from ``generator``
        (on ``device``) or, when None, from the policy's own seeded generator.

        On CPU only the MLP runs in torch; the few element-wise ops on [W, A] run in numpy,
        which for a handful of rows costs a fraction of torch's per-op dispatch (same noise
        draw as ``Actor.act``; results agree with it up to float32 rounding).
        """
        gen = self.generator if generator is None else generator
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        z = torch.as_tensor(np.asarray(task, dtype=np.float32), device=self.device)
        if self.device.type != "cpu":
            return self.actor.act(o, z, deterministic, gen).cpu().numpy()
        out = self.actor.net(o, z).numpy()  # [W, 2A]: mean, log-std
        mean, log_std = np.split(out, 2, axis=-1)
        if deterministic:
            return np.tanh(mean)
        eps = torch.randn(mean.shape, generator=gen).numpy()
        std = np.exp(np.clip(log_std, self.actor.log_std_min, self.actor.log_std_max))
        return np.tanh(mean + std * eps)

    def __call__(self, obs: np.ndarray, task: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.act(obs, task, deterministic)


def _as_tensors(weights: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in weights.items()}
