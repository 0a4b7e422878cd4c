"""The SAC actor's forward pass in numpy, for rollout and evaluation workers.

    policy = NumpyPolicy(obs_dim, action_dim, task_dim, net_cfg, seed=0)
    policy.load_weights(weights)                   # ``update.policy_weights``: numpy arrays
    policy.begin(tasks)                            # [W, Z], once per round of episodes
    policy.act_into(obs, out, rng=noise_rng)       # obs [W, O] -> actions into out [W, A]

The same function as ``learner.sac.networks.InferencePolicy`` (the ``Actor`` of
``learner/sac/networks.py``: a ``TaskMLP`` on [obs, tile(z, R)], the tiled task re-entering
every layer with ``task_to_all_layers``, mean and log-std out, a = tanh(mean + std eps)) in
float32, with the noise eps drawn from a numpy ``Generator``. A worker process that holds
only this never imports torch: on the 2-core box that is ~2 s of CPU less per rollout or
eval worker started, and ~140 MB less memory each (README "Speed"). The learner, the
checkpoints and PEARL's workers keep torch.

Per step the task part of every layer is a constant of the episode, c_l = tile(z) W_l^z +
b_l, computed in ``begin``; a step is one matmul per layer on the hidden activations into
preallocated buffers, as ``InferencePolicy.act_into`` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import math
import os
from typing import Any, Iterator, Mapping

import numpy as np

from learner.sac.config import SACConfig


@functools.lru_cache(maxsize=1)
def _openblas() -> tuple[Any, Any] | None:
    """(get, set) of the thread count of the OpenBLAS numpy ships with (its wheels bundle it
    under ``numpy.libs``), or None when numpy uses another BLAS or the library is not found."""
    here = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(here, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    return get, put
    return None


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS on ``n`` threads inside the block (restored after). Ray workers already
    run it on their whole CPUs (Ray sets OMP_NUM_THREADS before numpy loads); this is for a
    worker used in the driver's process (benchmarks, the fidelity study), where OpenBLAS
    would split each small per-step matmul across every core. A no-op where numpy's BLAS
    is not the bundled OpenBLAS."""
    fns = _openblas()
    if fns is None:
        yield
        return
    get, put = fns
    before = int(get())
    put(int(n))
    try:
        yield
    finally:
        put(before)


class NumpyPolicy:
    """pi(a | s, z) of a SAC actor from its weights (``net.layers.{i}.weight`` [out, in] and
    ``.bias`` [out], the ``Actor`` state_dict keys); numpy in, numpy out."""

    def __init__(self, obs_dim: int, action_dim: int, task_dim: int, cfg: SACConfig, seed: int = 0):
        self.dims = (int(obs_dim), int(action_dim), int(task_dim))
        self.task_repeat = int(cfg.task_repeat)
        self.task_to_all_layers = bool(cfg.task_to_all_layers)
        self.log_std_min, self.log_std_max = float(cfg.log_std_min), float(cfg.log_std_max)
        self.sizes = cfg.layer_sizes(obs_dim, 2 * action_dim, task_dim * cfg.task_repeat)
        self.rng = np.random.default_rng(seed)
        # the rlkit initialisation of ``networks._init_layer`` (the same distributions; the
        # values are the learner's once it publishes its first weights)
        init: dict[str, np.ndarray] = {}
        for i, (fan_in, fan_out) in enumerate(self.sizes):
            if i == len(self.sizes) - 1:
                lim = cfg.pi_last_init
                init[f"net.layers.{i}.weight"] = self.rng.uniform(-lim, lim, (fan_out, fan_in))
                init[f"net.layers.{i}.bias"] = self.rng.uniform(-lim, lim, fan_out)
            else:
                bound = 1.0 / math.sqrt(fan_in)
                init[f"net.layers.{i}.weight"] = self.rng.uniform(-bound, bound, (fan_out, fan_in))
                init[f"net.layers.{i}.bias"] = np.full(fan_out, cfg.hidden_bias_init)
        self.version = -1
        self.load_weights(init)
        self._rows = -1

    # ---- weights -------------------------------------------------------------------------
    def load_weights(self, weights: Mapping[str, Any], version: int = -1) -> None:
        """Copy the actor's weights in (numpy arrays, or anything ``np.asarray`` reads: CPU
        tensors too); a missing key or a shape that does not fit names itself. Call
        ``begin`` again before ``act_into``."""
        layers = []
        for i, (fan_in, fan_out) in enumerate(self.sizes):
            pair = []
            for name, shape in ((f"net.layers.{i}.weight", (fan_out, fan_in)), (f"net.layers.{i}.bias", (fan_out,))):
                if name not in weights:
                    raise KeyError(f"policy weights lack {name!r} (have {sorted(weights)})")
                x = np.array(weights[name], dtype=np.float32)  # a copy: the caller's arrays stay theirs
                if x.shape != shape:
                    raise ValueError(f"policy weight {name!r} has shape {x.shape}, the actor needs {shape}")
                pair.append(x)
            layers.append(tuple(pair))
        extra = set(weights) - {f"net.layers.{i}.{p}" for i in range(len(self.sizes)) for p in ("weight", "bias")}
        if extra:
            raise KeyError(f"policy weights have keys the actor lacks: {sorted(extra)}")
        self._layers: list[tuple[np.ndarray, np.ndarray]] = layers
        self.version = int(version)
        self._rows = -1  # bound tasks refer to the old weights

    load_state_dict = load_weights

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights (copies), under the ``Actor`` state_dict keys."""
        out = {}
        for i, (w, b) in enumerate(self._layers):
            out[f"net.layers.{i}.weight"], out[f"net.layers.{i}.bias"] = w.copy(), b.copy()
        return out

    # ---- acting --------------------------------------------------------------------------
    def begin(self, tasks: np.ndarray) -> None:
        """Bind the tasks [W, Z] of W slots for the ``act_into`` calls that follow."""
        z = np.asarray(tasks, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.dims[2]:
            raise ValueError(f"begin: tasks of shape {z.shape}, expected [W, {self.dims[2]}]")
        z = np.tile(z, (1, self.task_repeat))  # [W, Z R], rlkit's z.repeat(1, R)
        w = len(z)
        self._fast: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i, (weight, bias) in enumerate(self._layers):
            takes_task = i == 0 or self.task_to_all_layers
            width = weight.shape[1] - (z.shape[1] if takes_task else 0)
            w_h = np.ascontiguousarray(weight[:, :width].T)  # [in_h, out]
            c = z @ weight[:, width:].T + bias if takes_task else np.broadcast_to(bias, (w, len(bias))).copy()
            self._fast.append((w_h, np.ascontiguousarray(c, dtype=np.float32), np.empty((w, weight.shape[0]), np.float32)))
        self._x = np.empty((w, self.dims[0]), np.float32)
        self._eps = np.empty((w, self.dims[1]), np.float32)
        self._tasks = z
        self._rows = w

    def act_into(self, obs: np.ndarray, out: np.ndarray, deterministic: bool = False,
                 rng: np.random.Generator | None = None) -> None:
        """Actions for obs [W, O] (any float dtype, may be a strided view) of the tasks bound
        by ``begin``, written into ``out`` [W, A]; the noise from ``rng`` (default: the
        policy's own, seeded by ``seed``). Nothing is allocated per call."""
        if len(obs) != self._rows:
            raise ValueError(f"act_into: {len(obs)} observations for {self._rows} bound tasks (call begin first)")
        x = self._x
        x[:] = obs
        h = x
        last = len(self._fast) - 1
        for i, (w_h, c, buf) in enumerate(self._fast):
            np.matmul(h, w_h, out=buf)
            buf += c
            if i < last:
                np.maximum(buf, 0.0, out=buf)
            h = buf
        a = h.shape[1] // 2
        mean, log_std = h[:, :a], h[:, a:]
        if deterministic:
            np.tanh(mean, out=out)
            return
        (self.rng if rng is None else rng).standard_normal(dtype=np.float32, out=self._eps)
        np.clip(log_std, self.log_std_min, self.log_std_max, out=log_std)
        np.exp(log_std, out=log_std)
        log_std *= self._eps
        log_std += mean
        np.tanh(log_std, out=out)

    def act(self, obs: np.ndarray, task: np.ndarray, deterministic: bool = False,
            rng: np.random.Generator | None = None) -> np.ndarray:
        """Actions [W, A] float32 for obs [W, O], task [W, Z] (binds the tasks: a following
        ``act_into`` acts for these)."""
        obs = np.asarray(obs)
        self.begin(task)
        out = np.empty((len(obs), self.dims[1]), np.float32)
        self.act_into(obs, out, deterministic, rng)
        return out

    def __call__(self, obs: np.ndarray, task: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.act(obs, task, deterministic)
