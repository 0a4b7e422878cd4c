"""The learner's networks in numpy, for the workers: the SAC actor (rollout and evaluation
workers), V(s0, z) from the actor and the twin critic (relabel workers: AIR's tie-break and
advantage relabeling), PEARL's encoder and actor (meta rollout workers).

    policy = NumpyPolicy(obs_dim, action_dim, task_dim, net_cfg, seed=0)
    policy.load_weights(weights)                   # ``update.policy_weights``: numpy arrays
    policy.begin(tasks)                            # [W, Z], once per round of episodes
    policy.act_into(obs, out, rng=noise_rng)       # obs [W, O] -> actions into out [W, A]

The same function as ``learner.sac.networks.InferencePolicy`` (the ``Actor`` of
``learner/sac/networks.py``: a ``TaskMLP`` on [obs, tile(z, R)], the tiled task re-entering
every layer with ``task_to_all_layers``, mean and log-std out, a = tanh(mean + std eps)) in
float32, with the noise eps drawn from a numpy ``Generator``. A worker process that holds
only this never imports torch: on the 2-core box that is ~2 s of CPU less per rollout or
eval worker started, and ~140 MB less memory each (benchmarks/README.md). The learner and the
checkpoints keep torch; relabel workers hold ``NumpyValueFunction`` (via
``NumpyValueFnFactory``, which ``learner.sac.update.make_value_fn_factory`` returns) and PEARL's
meta workers ``NumpyPEARLAgent`` (the encoder and the actor), numpy too. (HFR's utility
function, in meta relabel workers, stays in torch, and a relabel worker of the point
families imports torch for its vectorised sine, exp and log, ``envs/fastmath.py``.)

Per step the task part of every layer is a constant of the episode, c_l = tile(z) W_l^z +
b_l, computed in ``begin``; a step is one matmul per layer on the hidden activations into
preallocated buffers, as ``InferencePolicy.act_into`` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
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


#: glibc mallopt parameters (malloc.h) and the values ``retain_freed_memory`` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
RETAIN_MMAP_THRESHOLD = 32 << 20  # glibc's largest (64-bit): blocks below it come from the heap
RETAIN_TRIM_THRESHOLD = 512 << 20  # freed heap kept up to this much, not handed back


def retain_freed_memory() -> bool:
    """Keep freed memory in this process's heap (glibc ``mallopt``): numpy temporaries of a
    few MB (a relabel worker's V(s0, z) layers, its returns' blocks) are then served from
    the heap instead of fresh ``mmap`` pages that fault in on first touch and go back to the
    OS when freed, call after call. glibc adapts its thresholds to what a process frees,
    but only up to the size of the blocks seen so far, and returns the heap's top above
    twice that: with these and V evaluated a few trajectories at a time
    (``NumpyValueFunction``), advantage relabeling ran 1.25-1.3x faster on the point families
    (``hindsight bench relabel``). The cost: the process keeps its peak heap. True when
    set; False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, RETAIN_MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, RETAIN_TRIM_THRESHOLD))


def _rlkit_init(sizes: list[tuple[int, int]], last_init: float, hidden_bias: float,
                rng: np.random.Generator, prefix: str = "") -> dict[str, np.ndarray]:
    """The rlkit initialisation of ``networks._init_layer`` (the same distributions: hidden
    W ~ U(+-1/sqrt(fan_in)), b = ``hidden_bias``; output W, b ~ U(+-``last_init``)), under the
    ``{prefix}net.layers.{i}.weight|bias`` keys. A worker acts with these only until the
    learner publishes its first weights."""
    init: dict[str, np.ndarray] = {}
    for i, (fan_in, fan_out) in enumerate(sizes):
        key = f"{prefix}net.layers.{i}"
        if i == len(sizes) - 1:
            init[f"{key}.weight"] = rng.uniform(-last_init, last_init, (fan_out, fan_in))
            init[f"{key}.bias"] = rng.uniform(-last_init, last_init, fan_out)
        else:
            bound = 1.0 / math.sqrt(fan_in)
            init[f"{key}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in))
            init[f"{key}.bias"] = np.full(fan_out, hidden_bias)
    return init


def _layers(weights: Mapping[str, Any], sizes: list[tuple[int, int]], prefix: str = "",
            what: str = "policy") -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W [out, in], b [out]) float32 copies] of an MLP's ``{prefix}net.layers.{i}`` entries
    in ``weights``; a missing key or a shape that does not fit names itself."""
    layers = []
    for i, (fan_in, fan_out) in enumerate(sizes):
        pair = []
        for name, shape in ((f"{prefix}net.layers.{i}.weight", (fan_out, fan_in)), (f"{prefix}net.layers.{i}.bias", (fan_out,))):
            if name not in weights:
                raise KeyError(f"{what} weights lack {name!r} (have {sorted(weights)})")
            x = np.array(weights[name], dtype=np.float32)  # a copy: the caller's arrays stay theirs
            if x.shape != shape:
                raise ValueError(f"{what} weight {name!r} has shape {x.shape}, the network needs {shape}")
            pair.append(x)
        layers.append((pair[0], pair[1]))
    return layers


def _keys(sizes: list[tuple[int, int]], prefix: str = "") -> set[str]:
    return {f"{prefix}net.layers.{i}.{p}" for i in range(len(sizes)) for p in ("weight", "bias")}


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
        self.version = -1
        self.load_weights(_rlkit_init(self.sizes, cfg.pi_last_init, cfg.hidden_bias_init, self.rng))
        self._rows = -1

    # ---- weights -------------------------------------------------------------------------
    def load_weights(self, weights: Mapping[str, Any], version: int = -1) -> None:
        """Copy the actor's weights in (numpy arrays, or anything ``np.asarray`` reads: CPU
        tensors too); a missing key or a shape that does not fit names itself. Call
        ``begin`` again before ``act_into``."""
        layers = _layers(weights, self.sizes)
        extra = set(weights) - _keys(self.sizes)
        if extra:
            raise KeyError(f"policy weights have keys the actor lacks: {sorted(extra)}")
        self._layers: list[tuple[np.ndarray, np.ndarray]] = layers
        # per layer (W_h^T [in_h, out], W_z^T [Z R, out] or None), contiguous, cut once per
        # weights: ``begin`` binds tasks every round, and a value function every few
        # hundred (s0, z) pairs
        zr = self.dims[2] * self.task_repeat
        self._cut: list[tuple[np.ndarray, np.ndarray | None]] = []
        for i, (weight, _) in enumerate(layers):
            takes_task = i == 0 or self.task_to_all_layers
            width = weight.shape[1] - (zr if takes_task else 0)
            self._cut.append((np.ascontiguousarray(weight[:, :width].T),
                              np.ascontiguousarray(weight[:, width:].T) if takes_task else None))
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
        for (w_h, w_z), (_, bias) in zip(self._cut, self._layers):
            if w_z is not None:
                c = z @ w_z  # [W, out]: the task's term of the layer
                c += bias
            else:
                c = np.broadcast_to(bias, (w, len(bias))).copy()
            self._fast.append((w_h, c, np.empty((w, w_h.shape[1]), np.float32)))
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


class NumpyPEARLAgent:
    """PEARL's encoder and actor for meta rollout workers, numpy in and out: the function of
    ``learner.pearl.networks.ContextEncoder`` and ``Actor`` (weights ``encoder.net.layers.*`` and
    ``actor.net.layers.*``, as ``pearl.update.policy_weights`` publishes them).

        agent.load_state_dict(weights, version)
        post = agent.posterior(context)          # context [C, D_c] -> (mu [Z], var [Z])
        z = agent.sample_z(post, rng)            # [Z] float32
        agent.begin(z[None]); agent.act_into(obs [1, O], out [1, A], deterministic)

    The encoder is a plain MLP on one context row emitting (mu, softplus -> var) per row;
    the posterior is the product of those Gaussians (variances clamped below at ``VAR_MIN``
    first, as ``pearl.context.product_of_gaussians``); the actor is ``NumpyPolicy`` on
    (obs, z) with z at the input only."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: Any, seed: int = 0):
        from learner.pearl.config import VAR_MIN, sac_view

        self.cfg, self.var_min = cfg, float(VAR_MIN)
        self.latent_dim = int(cfg.latent_dim)
        self.context_dim = int(cfg.context_dim(obs_dim, action_dim))
        sc = sac_view(cfg)
        self.enc_sizes = dataclasses.replace(sc, hidden_sizes=cfg.encoder_hidden).layer_sizes(
            self.context_dim, 2 * self.latent_dim, 0)
        self.rng = np.random.default_rng(seed)
        self.policy = NumpyPolicy(obs_dim, action_dim, self.latent_dim, sc, seed=int(self.rng.integers(2**62)))
        self._enc = _layers(_rlkit_init(self.enc_sizes, sc.q_last_init, sc.hidden_bias_init, self.rng, "encoder."),
                            self.enc_sizes, "encoder.")
        self.version = -1

    def load_state_dict(self, weights: Mapping[str, Any], version: int = -1) -> None:
        """The encoder's and the actor's weights (other networks' keys are refused by name)."""
        extra = set(weights) - _keys(self.enc_sizes, "encoder.") - _keys(self.policy.sizes, "actor.")
        if extra:
            raise KeyError(f"PEARL agent weights have keys the encoder and actor lack: {sorted(extra)}")
        enc = _layers(weights, self.enc_sizes, "encoder.", "encoder")
        self.policy.load_weights({k[6:]: v for k, v in weights.items() if k.startswith("actor.")}, version)
        self._enc, self.version = enc, int(version)

    def context(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
                next_obs: np.ndarray | None = None) -> np.ndarray:
        """Context rows [N, D_c] from recorded steps (s' only if the config uses it)."""
        parts = [np.asarray(obs, np.float32), np.asarray(action, np.float32), np.asarray(reward, np.float32)[:, None]]
        if self.cfg.use_next_obs_in_context:
            parts.append(np.asarray(next_obs, np.float32))
        return np.concatenate(parts, axis=1)

    def posterior(self, context: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(mu [Z], var [Z]) of q(z | context [C, D_c]); the prior N(0, I) for no context."""
        Z = self.latent_dim
        if context is None or len(context) == 0:
            return np.zeros(Z, np.float32), np.ones(Z, np.float32)
        h = np.asarray(context, np.float32)
        if h.ndim != 2 or h.shape[1] != self.context_dim:
            raise ValueError(f"posterior: context of shape {h.shape}, expected [C, {self.context_dim}]")
        last = len(self._enc) - 1
        for i, (w, b) in enumerate(self._enc):
            h = h @ w.T + b
            if i < last:
                np.maximum(h, 0.0, out=h)
        mu, raw = h[:, :Z], h[:, Z:]
        var = np.where(raw > 20.0, raw, np.log1p(np.exp(np.minimum(raw, 20.0))))  # torch's softplus
        precision = 1.0 / np.maximum(var, np.float32(self.var_min))  # [C, Z]
        post_var = 1.0 / precision.sum(axis=0)
        return (post_var * (precision * mu).sum(axis=0)).astype(np.float32), post_var.astype(np.float32)

    def sample_z(self, post: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        mu, var = post
        return (mu + np.sqrt(var) * rng.standard_normal(mu.shape)).astype(np.float32)

    def begin(self, z: np.ndarray) -> None:
        """Bind z [W, Z] for the ``act_into`` calls that follow (one episode)."""
        self.policy.begin(z)

    def act_into(self, obs: np.ndarray, out: np.ndarray, deterministic: bool = False) -> None:
        self.policy.act_into(obs, out, deterministic, self.rng)

    def act(self, obs: np.ndarray, z: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.policy.act(obs, z, deterministic, self.rng)


#: NumpyValueFunction evaluates V(s0, z) for this many (s0, z) pairs at a time
VALUE_CHUNK_ROWS = 1000


class NumpyValueFunction:
    """V(s0, z) = min_e Q_e(s0, tanh mu(s0, z), z) for relabeling (GH Advantage, Eq. 7; AIR's
    tie-break): obs0 [M, O], tasks [M, K, Z] -> [M, K] float64; the baseline is the online
    twin critic at the actor's deterministic action, as in GH's code (REFERENCE-CODE.md §8:
    no separate V network). From ``learner.sac.update.value_weights``: the actor under
    ``actor.net.layers.{i}.*`` and the twin critic's ensemble under ``critic.net.weights.{i}``
    [E, in, out] and ``critic.net.biases.{i}`` [E, 1, out] (``EnsembleTaskMLP``), float32 as
    in the learner."""

    def __init__(self, obs_dim: int, action_dim: int, task_dim: int, cfg: SACConfig,
                 weights: Mapping[str, Any]):
        self.dims = (int(obs_dim), int(action_dim), int(task_dim))
        self.task_repeat = int(cfg.task_repeat)
        self.task_to_all_layers = bool(cfg.task_to_all_layers)
        self.actor = NumpyPolicy(obs_dim, action_dim, task_dim, cfg)
        _layers(weights, self.actor.sizes, "actor.", "value")  # a missing or misfit key named in full
        self.actor.load_weights({k[6:]: v for k, v in weights.items() if k.startswith("actor.")})
        sizes = cfg.layer_sizes(obs_dim + action_dim, 1, task_dim * cfg.task_repeat)
        # per layer (W_h [E, in_h, out], W_z [E, Z, out] or None, b [E, 1, out]): the layer is
        # h W_h + (z W_z + b), where W_z sums W's R task blocks (tile(z, R) W = z sum_r W_r),
        # so [h, tile(z)] is never built (as ``networks._layer``)
        self.critic: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []
        for i, (fan_in, fan_out) in enumerate(sizes):
            pair = []
            for name, tail in ((f"critic.net.weights.{i}", (fan_in, fan_out)), (f"critic.net.biases.{i}", (1, fan_out))):
                if name not in weights:
                    raise KeyError(f"value weights lack {name!r} (have {sorted(weights)})")
                x = np.array(weights[name], dtype=np.float32)
                if x.ndim != 3 or x.shape[1:] != tail:
                    raise ValueError(f"value weight {name!r} has shape {x.shape}, the critic needs [E, {tail[0]}, {tail[1]}]")
                pair.append(x)
            w, b = pair
            if i == 0 or self.task_to_all_layers:
                zr = task_dim * self.task_repeat
                w_z = w[:, fan_in - zr:].reshape(len(w), self.task_repeat, task_dim, fan_out).sum(axis=1)
                self.critic.append((np.ascontiguousarray(w[:, : fan_in - zr]), w_z, b))
            else:
                self.critic.append((w, None, b))
        known = {f"critic.net.{p}.{i}" for i in range(len(sizes)) for p in ("weights", "biases")}
        extra = {k for k in weights if not k.startswith("actor.")} - known
        if extra:
            raise KeyError(f"value weights have keys the actor and critic lack: {sorted(extra)}")

    def __call__(self, obs0: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        tasks = np.asarray(tasks)
        m, k, _ = tasks.shape
        obs0 = np.asarray(obs0, dtype=np.float32)
        # a few trajectories' pairs at a time (about VALUE_CHUNK_ROWS): a chunk's [E, rows,
        # hidden] temporaries stay in cache and, in a process that retains freed memory
        # (``retain_freed_memory``, as relabel workers do), are reused from the heap; a whole
        # batch's (32 MB at 10,000 pairs and 400 units) are mapped afresh on every call.
        # PointTrajectory's V at 10,000 pairs: 74-78 ms against 99-114 ms in one block.
        step = max(1, VALUE_CHUNK_ROWS // max(k, 1))
        out = np.empty((m, k), dtype=np.float32)
        for i in range(0, m, step):
            n = min(step, m - i)
            o = np.repeat(obs0[i : i + n], k, axis=0)  # [n*K, O], row r*K + j
            z = tasks[i : i + n].reshape(n * k, -1).astype(np.float32)  # [n*K, Z]
            out[i : i + n] = self._min_q(o, z).reshape(n, k)
        return out.astype(np.float64)

    def _min_q(self, o: np.ndarray, z: np.ndarray) -> np.ndarray:
        """min_e Q_e(o, tanh mu(o, z), z) for rows o [B, O], z [B, Z] -> [B] float32."""
        a = self.actor.act(o, z, deterministic=True)  # [B, A]
        h = np.concatenate([o, a], axis=1)  # [B, O + A]: the first layer broadcasts it over E
        last = len(self.critic) - 1
        for i, (w_h, w_z, b) in enumerate(self.critic):
            out = np.matmul(h, w_h)  # [E, B, out]
            if w_z is not None:
                out += np.matmul(z, w_z)
            out += b
            if i < last:
                np.maximum(out, 0.0, out=out)
            h = out
        return h[..., 0].min(axis=0)


class NumpyValueFnFactory:
    """Picklable ``weights -> NumpyValueFunction`` that the trainer hands to relabel workers
    (built once there, called for every published version)."""

    def __init__(self, cfg: SACConfig, obs_dim: int, action_dim: int, task_dim: int):
        self.cfg, self.dims = cfg, (int(obs_dim), int(action_dim), int(task_dim))

    def __call__(self, weights: Mapping[str, Any]) -> NumpyValueFunction:
        return NumpyValueFunction(*self.dims, self.cfg, weights)
