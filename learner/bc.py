"""HIPI-BC: behaviour cloning on experience relabeled by inverse RL (HIPI Alg. 3, §5.2, §6.2).

    trajs = load_all("runs/x/store")                          # task labels are never read
    out = train_bc(family, trajs, BCConfig(relabel="hipi"))    # a task-conditioned Gaussian policy
    weights = out.weights                                      # Actor state_dict on raw observations

The pipeline, once per epoch (Alg. 3 relabels what it samples; here the whole dataset is
relabeled each epoch, in batches of ``relabel_batch`` trajectories):

    M trajectories ──> candidates psi_k, k < K: ``candidates="prior"`` K fresh prior samples per
                       batch, ``"eval"`` the family's fixed evaluation list
                   ──> R[i, k] = sum_t r(s_t, a_t, s_t+1 | psi_k)            (kernels.discounted_returns)
                   ──> q(k | tau_i) ∝ exp(R_ik / temperature - log Z_k),
                       log Z_k = log sum_i exp(R_ik / temperature) over the batch  (HIPI Eq. 7,
                       ``kernels.hipi_log_probs``; ``partition=False`` drops log Z, HIPI Fig. 8)
                   ──> one task per trajectory sampled from q, given to all its steps
    steps (s_t, a_t, psi~_i) ──> minimise -mean log pi(a_t | s_t, psi~_i)    (Alg. 3, line 4)

``relabel="none"`` is task-agnostic BC on everything (the task input is zero in training and
removed from the exported policy, so it ignores the commanded task); ``"random"`` gives each
trajectory a task drawn from the prior, uninformative by construction.

The policy is the SAC actor (``learner.sac.networks.Actor``, tanh-Gaussian) trained by
log-likelihood of the stored actions. HIPI's BC used an MSE loss on normalised states and
actions (appendix C.2); we keep the Gaussian likelihood the issue asks for and normalise
observations with the dataset's mean and std, folded into the first layer on export, so
the exported weights act on raw observations and evaluate exactly like a SAC policy.
Returns in Eq. 7 are undiscounted (``discounted=True`` uses the family's gamma).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, NamedTuple, Sequence

import numpy as np
import torch

from envs.core import TaskFamily
from learner.sac.config import SACConfig, sac_config_for
from learner.sac.networks import Actor
from relabel_service.core import Trajectory, concat_steps
from relabel_service.strategies import kernels

RELABELS = ("none", "random", "hipi")


@dataclasses.dataclass(frozen=True)
class BCConfig:
    """Hyperparameters of HIPI-BC (defaults: HIPI appendix C.2 where it gives them)."""

    relabel: Literal["none", "random", "hipi"] = "hipi"
    """none: task-agnostic BC; random: a prior task per trajectory; hipi: HIPI Eq. 7."""
    partition: bool = True
    """hipi: subtract log Z(psi) (False: the Fig. 8 ablation)."""
    candidates: Literal["prior", "eval"] = "prior"
    """hipi: the tasks q ranges over: ``num_candidates`` fresh prior samples per relabel
    batch, or the family's fixed evaluation list (so a bias on its first task fires)."""
    num_candidates: int = 100
    """K for ``candidates="prior"``."""
    relabel_batch: int = 1000
    """Trajectories per relabel batch: they share candidates and the Monte-Carlo estimate of
    log Z (HIPI relabels a sampled batch)."""
    temperature: float = 1.0
    """q ∝ exp(R / temperature - log Z)."""
    discounted: bool = False
    """Use discounted returns in Eq. 7 (gamma of the family) instead of the plain sum."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Policy MLP (HIPI appendix C.2: two ReLU layers of 256)."""
    lr: float = 3e-4
    """Adam learning rate (appendix C.2)."""
    batch_size: int = 256
    """Steps per gradient step."""
    epochs: int = 30
    """Passes over the dataset (appendix C.2: training converged in 30-50 epochs)."""
    normalize_obs: bool = True
    """Standardise observations with the dataset's mean and std (appendix C.2)."""
    seed: int = 0
    """Seeds the network, the relabeling and the minibatch order."""

    def __post_init__(self) -> None:
        if self.relabel not in RELABELS:
            raise ValueError(f"relabel must be one of {RELABELS}, got {self.relabel!r}")
        if self.candidates not in ("prior", "eval"):
            raise ValueError(f"candidates must be 'prior' or 'eval', got {self.candidates!r}")
        for name in ("num_candidates", "relabel_batch", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"BCConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.temperature > 0 or not self.lr > 0:
            raise ValueError(f"temperature and lr must be > 0, got {self.temperature}, {self.lr}")

    @property
    def label(self) -> str:
        """Short name of the variant: none, random, hipi, hipi_nopart."""
        if self.relabel == "hipi" and not self.partition:
            return "hipi_nopart"
        return self.relabel


class Relabeled(NamedTuple):
    """The task given to each trajectory [M, Z] and what the relabeling looked like."""

    tasks: np.ndarray
    stats: dict[str, float]
    candidates: np.ndarray | None  # [K, Z] of the last batch (hipi)
    chosen: np.ndarray | None  # [M] index into its batch's candidates (hipi)


# ---- inverse RL (HIPI Eq. 7) --------------------------------------------------------------
def task_log_posterior(
    family: TaskFamily,
    trajs: Sequence[Trajectory],
    candidates: np.ndarray,
    temperature: float = 1.0,
    partition: bool = True,
    discount: float = 1.0,
) -> np.ndarray:
    """log q(psi_k | tau_i) [M, K] over candidates [K, Z] (HIPI Eq. 7, uniform prior over the
    candidates, log Z_k estimated over these M trajectories)."""
    R = kernels.discounted_returns(family, trajs, candidates, discount)  # [M, K]
    return kernels.hipi_log_probs(R, temperature, partition)


def relabel_trajectories(
    family: TaskFamily, trajs: Sequence[Trajectory], cfg: BCConfig, rng: np.random.Generator
) -> Relabeled:
    """A task for every trajectory [M, Z], chosen without reading the stored task."""
    M, Z = len(trajs), family.task_dim
    if cfg.relabel == "none":
        return Relabeled(np.zeros((M, Z)), {}, None, None)
    if cfg.relabel == "random":
        return Relabeled(family.sample_tasks(rng, M), {}, None, None)
    tasks = np.zeros((M, Z))
    chosen = np.zeros(M, dtype=np.int64)
    entropy, first = [], []
    discount = family.discount if cfg.discounted else 1.0
    order = rng.permutation(M)  # batches mix the dataset (the store keeps arrival order)
    cand = np.zeros((0, Z))
    for lo in range(0, M, cfg.relabel_batch):
        idx = order[lo : lo + cfg.relabel_batch]
        cand = family.eval_tasks() if cfg.candidates == "eval" else family.sample_tasks(rng, cfg.num_candidates)
        log_q = task_log_posterior(family, [trajs[i] for i in idx], cand, cfg.temperature, cfg.partition, discount)
        pick = kernels.sample_categorical(log_q, rng)  # [b]
        tasks[idx], chosen[idx] = cand[pick], pick
        q = np.exp(log_q)
        entropy.append(-np.sum(q * np.where(q > 0, log_q, 0.0), axis=1))
        first.append(pick == 0)
    return Relabeled(
        tasks,
        {"entropy": float(np.mean(np.concatenate(entropy))),
         "first_candidate_fraction": float(np.mean(np.concatenate(first)))},
        cand,
        chosen,
    )


# ---- behaviour cloning ----------------------------------------------------------------------
def bc_loss(actor: Actor, obs: torch.Tensor, task: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """-mean_i log pi(a_i | s_i, psi~_i): obs [B, O], task [B, Z], action [B, A] -> scalar."""
    return -actor.log_prob(obs, task, action).mean()


def bc_net_config(family: TaskFamily, cfg: BCConfig) -> SACConfig:
    """The actor's network config: the family's SAC row with BC's sizes, the task fed at the
    input only (HIPI concatenates the task to the state) and the obs normalisation foldable."""
    return sac_config_for(family, hidden_sizes=tuple(cfg.hidden_sizes), task_to_all_layers=False, task_repeat=1)


def step_arrays(trajs: Sequence[Trajectory], tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """obs [S, O], actions [S, A] and each step's trajectory task [S, Z] (tasks [M, Z])."""
    steps = concat_steps(trajs)
    lengths = kernels.trajectory_lengths(trajs)
    return (np.asarray(steps.obs, dtype=np.float32), np.asarray(steps.action, dtype=np.float32),
            np.repeat(np.asarray(tasks, dtype=np.float32), lengths, axis=0))


def export_weights(actor: Actor, obs_mean: np.ndarray, obs_std: np.ndarray, task_agnostic: bool) -> dict[str, np.ndarray]:
    """Actor weights acting on RAW observations: W x_norm + b with x_norm = (x - mean) / std is
    W' x + b' with W' = W / std, b' = b - W' mean (first layer, observation columns only).
    ``task_agnostic``: the task columns are zeroed (the network trained with task = 0)."""
    sd = {k: v.detach().cpu().numpy().astype(np.float32).copy() for k, v in actor.state_dict().items()}
    w, b = sd["net.layers.0.weight"], sd["net.layers.0.bias"]  # [H, O + Z], [H]
    O = len(obs_mean)
    w_obs = w[:, :O] / obs_std[None, :].astype(np.float32)
    b -= w_obs @ obs_mean.astype(np.float32)
    w[:, :O] = w_obs
    if task_agnostic:
        w[:, O:] = 0.0
    sd["net.layers.0.weight"], sd["net.layers.0.bias"] = w, b
    return sd


class BCResult(NamedTuple):
    weights: dict[str, np.ndarray]  # Actor state_dict on raw observations
    net_cfg: SACConfig
    history: list[dict[str, float]]  # one row per epoch
    relabeled: Relabeled  # the last epoch's relabeling


def train_bc(
    family: TaskFamily,
    trajs: Sequence[Trajectory],
    cfg: BCConfig = BCConfig(),
    on_epoch: Callable[[int, dict[str, float], Callable[[], dict[str, np.ndarray]]], dict[str, float] | None] | None = None,
) -> BCResult:
    """Train a task-conditioned policy on ``trajs`` (stored tasks ignored) by HIPI-BC.

    ``on_epoch(epoch, metrics, weights_fn)`` runs after every epoch (logging, evaluation);
    ``weights_fn()`` exports the current weights; what it returns is merged into the
    epoch's history row."""
    if not trajs:
        raise ValueError("HIPI-BC needs at least one trajectory; the store is empty")
    for t in trajs:
        if t.family != family.name:
            raise ValueError(f"trajectory {t.episode_id!r} is from family {t.family!r}, not {family.name!r}")
    rng = np.random.default_rng(cfg.seed)
    torch_gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    net_cfg = bc_net_config(family, cfg)
    actor = Actor(family.obs_dim, family.action_dim, family.task_dim, net_cfg, seed=int(rng.integers(2**31)))
    opt = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
    obs, actions, _ = step_arrays(trajs, np.zeros((len(trajs), family.task_dim)))
    mean = obs.mean(axis=0) if cfg.normalize_obs else np.zeros(obs.shape[1], np.float32)
    std = np.maximum(obs.std(axis=0), 1e-6) if cfg.normalize_obs else np.ones(obs.shape[1], np.float32)
    obs_t = torch.as_tensor((obs - mean) / std)
    act_t = torch.as_tensor(actions)
    S = len(obs_t)

    def weights_fn() -> dict[str, np.ndarray]:
        return export_weights(actor, mean, std, task_agnostic=cfg.relabel == "none")

    history: list[dict[str, float]] = []
    relabeled = Relabeled(np.zeros((0, family.task_dim)), {}, None, None)
    for epoch in range(cfg.epochs):
        relabeled = relabel_trajectories(family, trajs, cfg, rng)
        task_t = torch.as_tensor(step_arrays(trajs, relabeled.tasks)[2])
        perm = torch.randperm(S, generator=torch_gen)
        total, n = 0.0, 0
        for lo in range(0, S, cfg.batch_size):
            i = perm[lo : lo + cfg.batch_size]
            loss = bc_loss(actor, obs_t[i], task_t[i], act_t[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(i)
            n += len(i)
        row = {"epoch": float(epoch + 1), "loss": total / n, **relabeled.stats}
        if on_epoch is not None:
            row.update(on_epoch(epoch + 1, row, weights_fn) or {})
        history.append(row)
    return BCResult(weights_fn(), net_cfg, history, relabeled)


def evaluate_policy(
    family_name: str,
    family_kwargs: dict[str, Any],
    weights: dict[str, np.ndarray],
    net_cfg: SACConfig,
    episodes: int,
    seed: int,
    num_envs: int = 8,
) -> dict[str, Any]:
    """The training runs' evaluation (``RolloutWorker.evaluate``): deterministic policy on
    the family's evaluation tasks for ``episodes`` episodes (``TaskFamily.eval_tasks_for``,
    exactly the tasks a training run with ``eval.episodes = episodes`` evaluates on), initial
    states seeded from ``seed``; undiscounted returns of the commanded task."""
    from actors.policy import blas_threads
    from actors.rollout import RolloutWorker
    from envs import get_family

    family = get_family(family_name, **family_kwargs)
    tasks = family.eval_tasks_for(episodes)
    worker = RolloutWorker(0, family_name, min(num_envs, episodes), net_cfg, seed=seed, family_kwargs=family_kwargs)
    with blas_threads(1):  # as in the rollout pool
        return worker.evaluate((0, weights), tasks, seed)
