"""HIPI-RL: transition-level relabeling of every learner batch (HIPI Eq. 8, the HIPI code).

    relabeler = make_hipi_rl_relabeler(family, strategy_cfg)   # picklable; goes to the Learner actor
    batch, stats = relabeler(state, batch, generator)           # before every SAC ``update``
    batch, stats = hipi_rl_relabel(family, state, batch, generator, relabel_fraction=0.5)  # pure form

For a sampled batch of B transitions whose own tasks psi_1..psi_B are the candidates (J = B,
the HIPI README's ``candidate_task_type='tasks'``), the one-step soft value of transition i
under task j is (REFERENCE-CODE.md §4; ALGORITHMS.md §3)

    L_ij = scale * r(s_i, a_i | psi_j) - log pi(a_i | s_i, psi_j)
           + gamma * (1 - d_ij) * Q_1(s'_i, a'_ij, psi_j),     a'_ij ~ pi(. | s'_i, psi_j)

with the LIVE actor and the FIRST online critic, no alpha on log pi and no target network,
as the HIPI code (``_soft_relabel``). ``scale`` is ``SACConfig.reward_scale``: the critic
is trained on scale * r, so the reward term is in the critic's units; stored rewards stay
unscaled, as the SAC loss expects. Then

    log q(j | i) = hipi_log_probs(L, temperature, partition)   # - logsumexp_i per task j
    j_i ~ q(. | i)                                              # Gumbel-max, torch generator

and a random ``relabel_fraction`` of the rows takes task psi_{j_i} with its reward and
termination recomputed for that task; the other rows are returned untouched.

Cost: every network call runs on B * B rows (B = 256 -> 65,536; the HIPI README uses
B = 32), and the rewards and terminations are one ``family.rewards`` / ``family.terminals``
call each on the CPU (the only host round trip). The twin critic evaluates both members
in one call; only member 0 is used. Measured on one CPU thread: B = 128 with 64x64 nets
~38 ms per batch (the SAC update: ~2 ms); B = 256 with 256x256 nets ~1.4 s (update ~12 ms),
so on a CPU learner use small batches (as HIPI did) or a GPU.

Families with ``timeout_is_terminal`` store the time-limit step as terminal; that part of a
row's flag (stored terminal, yet not terminal under its own task) is kept under every task.
"""

from __future__ import annotations

import dataclasses

from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from envs import get_family
from envs.core import StepBatch, TaskFamily
from learner.core import Batch
from learner.sac.update import SACState
from relabel_service.strategies.config import StrategyConfig
from relabel_service.strategies.kernels import hipi_log_probs

#: the floats ``hipi_rl_relabel`` reports (TensorBoard ``relabel_in_learner/*``): rows relabeled;
#: rows whose sampled task differs from their own (all rows, relabeled or not); mean over rows
#: of max_j q(j | i); mean entropy of q(. | i) in nats (log B when uniform)
STAT_NAMES = ("fraction_relabeled", "fraction_chosen_differs", "mean_max_prob", "entropy")


class HipiRLScores(NamedTuple):
    """Everything HIPI-RL computes for transition i under candidate task j (J = B)."""

    logits: torch.Tensor  # [B, J] L_ij (see the module docstring)
    reward: torch.Tensor  # [B, J] r(s_i, a_i | psi_j), unscaled, batch dtype
    terminated: torch.Tensor  # [B, J] bool d_ij


@torch.no_grad()
def hipi_rl_scores(family: TaskFamily, state: SACState, batch: Batch,
                   generator: torch.Generator | None = None) -> HipiRLScores:
    """L_ij, r_ij and d_ij for every (transition i, batch task j), on ``batch``'s device.

    The only draw from ``generator`` is the next-action noise: one ``randn`` of shape
    [B * J, A] (``Actor.sample`` on rows i * J + j).
    """
    B = batch.size
    if batch.reward_inputs.shape[-1] != family.reward_input_dim:
        raise ValueError(
            f"hipi_rl: batch has reward_inputs of width {batch.reward_inputs.shape[-1]}, "
            f"family {family.name!r} needs {family.reward_input_dim}"
        )
    device, dtype = batch.reward.device, batch.reward.dtype

    # rewards and terminations on the CPU: one call each, [B, J]
    steps = StepBatch(*(x.cpu().numpy() for x in (batch.obs, batch.action, batch.next_obs, batch.reward_inputs)))
    tasks = batch.task.cpu().numpy()  # [J, Z] = the batch's own tasks
    reward = np.asarray(family.rewards(steps, tasks))  # [B, J]
    done = np.array(family.terminals(steps, tasks), dtype=bool)  # [B, J]
    if family.timeout_is_terminal:
        # the stored flag is terminal_fn | time limit (GH point envs); the time-limit part
        # holds under every task, and row i's own task is candidate j = i
        timeout = batch.terminated.cpu().numpy() & ~np.diagonal(done)
        done |= timeout[:, None]
    reward_t = torch.as_tensor(reward, dtype=dtype).to(device)  # [B, J]
    done_t = torch.as_tensor(done).to(device)  # [B, J]

    # row i * J + j: transition i under task j
    task = batch.task.repeat(B, 1)  # [B*J, Z]
    obs = batch.obs.repeat_interleave(B, dim=0)  # [B*J, O]
    action = batch.action.repeat_interleave(B, dim=0)  # [B*J, A]
    next_obs = batch.next_obs.repeat_interleave(B, dim=0)  # [B*J, O]
    next_action, _ = state.actor.sample(next_obs, task, generator)  # [B*J, A]
    next_q = state.critic(next_obs, next_action, task)[0].reshape(B, B)  # first critic, [B, J]
    log_pi = state.actor.log_prob(obs, task, action).reshape(B, B)  # [B, J]
    # torch.where, not (1 - d) * Q: a terminal row's next_obs may be NaN (see bellman_target)
    bootstrap = torch.where(done_t, torch.zeros_like(next_q), next_q)
    logits = state.cfg.reward_scale * reward_t - log_pi + state.cfg.discount * bootstrap
    return HipiRLScores(logits, reward_t, done_t)


def sample_task_indices(log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of log_probs [..., J] -> [...] long: Gumbel-max, argmax(log p + G).

    log_probs need not be normalised; -inf entries are never drawn."""
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=log_probs.dtype)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    return torch.argmax(log_probs + gumbel, dim=-1)


def relabel_rows(batch: Batch, scores: HipiRLScores, choice: torch.Tensor, mask: torch.Tensor) -> Batch:
    """Rows where ``mask`` [B] take task ``choice`` [B] (an index into the batch's tasks) with
    its reward and termination from ``scores``; the other rows are returned bit for bit."""
    rows = torch.arange(batch.size, device=choice.device)
    return batch._replace(
        task=torch.where(mask[:, None], batch.task[choice], batch.task),
        reward=torch.where(mask, scores.reward[rows, choice], batch.reward),
        terminated=torch.where(mask, scores.terminated[rows, choice], batch.terminated),
    )


@torch.no_grad()
def hipi_rl_relabel(family: TaskFamily, state: SACState, batch: Batch, generator: torch.Generator | None = None,
                    temperature: float = 1.0, partition: bool = True,
                    relabel_fraction: float = 0.5) -> tuple[Batch, dict[str, float]]:
    """Relabel a random ``relabel_fraction`` of ``batch``'s rows with tasks drawn from
    q(j | i) = softmax_j of the normalised logits; returns the batch and ``STAT_NAMES`` floats.

    Draws from ``generator``, in order: the next-action noise, the Gumbel noise, the row mask.
    """
    scores = hipi_rl_scores(family, state, batch, generator)
    log_q = hipi_log_probs(scores.logits, temperature, partition)  # [B, J]
    choice = sample_task_indices(log_q, generator)  # [B]
    # HIPI README relabel_prob: a Bernoulli mask per row (the code's inverted naming is
    # harmless at 0.5, REFERENCE-CODE.md §4); here True means relabel
    mask = torch.rand(batch.size, generator=generator, device=choice.device) < relabel_fraction
    out = relabel_rows(batch, scores, choice, mask)
    q = log_q.exp()
    values = torch.stack([
        mask.float().mean(),
        (batch.task[choice] != batch.task).any(dim=-1).float().mean(),  # over all rows
        q.amax(dim=-1).mean(),
        torch.special.entr(q).sum(dim=-1).mean(),  # nats; log B when uniform
    ]).tolist()  # one host sync
    return out, dict(zip(STAT_NAMES, values))


class HipiRLRelabeler:
    """The Learner's ``batch_relabeler`` for HIPI-RL: ``(state, batch, generator) -> (batch, stats)``.

    Holds the family's name and constructor kwargs, not the family, and builds it on first
    use, so it pickles small and the same way to any Ray actor.
    """

    def __init__(self, family_name: str, family_kwargs: Mapping[str, Any] | None = None,
                 temperature: float = 1.0, partition: bool = True, relabel_fraction: float = 0.5):
        if not temperature > 0:
            raise ValueError(f"hipi_rl: temperature must be > 0, got {temperature}")
        if not 0.0 <= relabel_fraction <= 1.0:
            raise ValueError(f"hipi_rl: relabel_fraction must be in [0, 1], got {relabel_fraction}")
        self.family_name = family_name
        self.family_kwargs = dict(family_kwargs or {})
        self.temperature = float(temperature)
        self.partition = bool(partition)
        self.relabel_fraction = float(relabel_fraction)
        self._family: TaskFamily | None = None

    @property
    def family(self) -> TaskFamily:
        if self._family is None:
            self._family = get_family(self.family_name, **self.family_kwargs)
        return self._family

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_family": None}

    def __call__(self, state: SACState, batch: Batch,
                 generator: torch.Generator | None = None) -> tuple[Batch, dict[str, float]]:
        return hipi_rl_relabel(self.family, state, batch, generator, self.temperature, self.partition,
                               self.relabel_fraction)


def make_hipi_rl_relabeler(family: TaskFamily, strategy_cfg: StrategyConfig,
                           family_kwargs: Mapping[str, Any] | None = None) -> HipiRLRelabeler:
    """HIPI-RL for ``family`` (a registered family built with ``family_kwargs``) with
    ``strategy_cfg``'s temperature, partition and hipi_relabel_fraction.

    Rejects a family the registry would not rebuild as given (an unregistered class, or
    constructor arguments not passed as ``family_kwargs``): the learner rebuilds it by name.
    """
    relabeler = HipiRLRelabeler(
        family.name, family_kwargs,
        temperature=strategy_cfg.temperature,
        partition=strategy_cfg.partition,
        relabel_fraction=strategy_cfg.hipi_relabel_fraction,
    )
    rebuilt = relabeler.family
    if type(rebuilt) is not type(family) or not _same_attributes(rebuilt, family):
        raise ValueError(
            f"hipi_rl: get_family({family.name!r}, **{relabeler.family_kwargs!r}) does not rebuild "
            f"the given family; pass the kwargs it was built with as family_kwargs"
        )
    return relabeler


def _same_attributes(a: TaskFamily, b: TaskFamily) -> bool:
    va, vb = vars(a), vars(b)
    if va.keys() != vb.keys():
        return False
    return all(_same_value(va[k], vb[k]) for k in va)


def _same_value(x: Any, y: Any) -> bool:
    # wrapper families (reward bias, discrete task sets) hold their base family: compare it
    # attribute by attribute, not by identity
    if isinstance(x, TaskFamily) or isinstance(y, TaskFamily):
        return type(x) is type(y) and _same_attributes(x, y)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return x == y
    return bool(np.array_equal(np.asarray(x, dtype=object), np.asarray(y, dtype=object)))
