"""Meta-RL relabeling (HFR and its baselines) for PEARL's per-task buffers.

```
 new trajectories tau_i (task_id, phase) ──coin p = 0.5──► kept for their own task
            │ relabel (not the initial pool)
            ▼
   hfr:    U_psi_j(tau_i)  (Eq. 9: rewards rewritten under psi_j, z ~ q(z | tau_psi_j),
                            mean min-Q at N_U start states of psi_j, a ~ pi(.|s, z))
           log Z(psi_j)    (20 contexts of psi_j's original data, refreshed per weights version)
           psi ~ softmax_j(U_ij - log Z_j)                       (Eq. 8, ``kernels.hfr_log_probs``)
   hipi:   S_ij = mean_t min-Q(s_t, a_t, z_j), z_j ~ q(z | psi_j's context); HIPI Eq. 7 kernel
   random: psi uniform over the training tasks
            ▼
 MetaTransitions: every row of tau_i under its target task only (rewards and terminals
 recomputed for relabeled rows), task index, to_enc (initial / prior / posterior phases)
```

Everything here is a pure function of numpy arrays, a seeded ``np.random.Generator`` and
an injected ``UtilityModel`` (built by the composition root from versioned PEARL weights;
``relabel_service`` never imports ``learner``). Candidates are all training tasks
(REFERENCE-CODE.md §5). The reference flips one coin per collection call (the two prior
paths share one); we flip one per trajectory, the same expected fraction.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np

from envs.core import TaskFamily
from relabel_service.core import Trajectory, concat_steps
from relabel_service.strategies import kernels
from relabel_service.strategies.transitions import _timeout_terminals

META_STRATEGIES = ("none", "random", "hipi", "hfr")
#: phases whose data also feeds the encoder buffer (oyster ``add_to_enc_buffer``)
ENC_PHASES = frozenset({"initial", "prior", "posterior"})
#: phases that are never relabeled (REFERENCE-CODE §5: the initial pool)
NEVER_RELABELED = frozenset({"initial"})


class UtilityModel(Protocol):
    """What HFR and the meta HIPI baseline need from PEARL (``learner.pearl.networks.UtilityValueFunction``)."""

    def context(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
                next_obs: np.ndarray | None = None) -> np.ndarray: ...  # [..., D_c]

    def infer(self, contexts: np.ndarray, rng: np.random.Generator,
              mask: np.ndarray | None = None) -> np.ndarray: ...  # [K, C, D_c] -> z [K, Z]

    def q_values(self, states: np.ndarray, z: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray: ...  # [K, N, O], [K, Z] -> min-Q [K, N], a ~ pi

    def q_of(self, states: np.ndarray, actions: np.ndarray, z: np.ndarray) -> np.ndarray: ...  # -> [K, N]


class MetaTransitions(NamedTuple):
    """Rows on their way to PEARL's per-task buffers (numpy, float32 except the flags)."""

    obs: np.ndarray  # [B, O]
    action: np.ndarray  # [B, A]
    reward: np.ndarray  # [B] under the target task
    next_obs: np.ndarray  # [B, O]
    terminated: np.ndarray  # [B] bool
    task_index: np.ndarray  # [B] int64: the training task whose buffers receive the row
    to_enc: np.ndarray  # [B] bool: also into the encoder buffer

    # a property, not ``__len__``: overriding ``__len__`` on a NamedTuple breaks ``_replace``
    @property
    def size(self) -> int:
        return int(self.reward.shape[0])


@dataclasses.dataclass
class MetaRequest:
    family: TaskFamily
    new: Sequence[Trajectory]  # M trajectories, each with task_id and phase
    train_tasks: np.ndarray  # [J, Z]
    model: UtilityModel | None = None  # hfr / hipi
    start_states: np.ndarray | None = None  # hfr: [J, N_U, O] from each task's data
    log_Z: np.ndarray | None = None  # hfr: [J] (zeros before the first estimate)
    task_contexts: np.ndarray | None = None  # hipi: [J, C, D_c] of each task's original data
    temperature: float = 1.0
    probability: float = 0.5  # the coin


@dataclasses.dataclass
class MetaDecision:
    target: np.ndarray  # [M] int64 training-task index each trajectory goes to
    relabeled: np.ndarray  # [M] bool: target chosen by the strategy (rewards recomputed)
    stats: dict[str, np.ndarray | float] = dataclasses.field(default_factory=dict)


# ---- HFR utility (Eq. 9) and partition function ----------------------------------------------
def _padded(trajs: Sequence[Trajectory]) -> tuple[np.ndarray, ...]:
    """obs [M, T, O], action [M, T, A], next_obs [M, T, O], mask [M, T] (T = longest)."""
    M, T = len(trajs), max(t.length for t in trajs)
    O, A = trajs[0].obs.shape[1], trajs[0].actions.shape[1]
    obs, act, nxt = np.zeros((M, T, O)), np.zeros((M, T, A)), np.zeros((M, T, O))
    mask = np.zeros((M, T), dtype=bool)
    for i, t in enumerate(trajs):  # a copy per trajectory, not per step
        n = t.length
        obs[i, :n], act[i, :n], nxt[i, :n], mask[i, :n] = t.obs[:-1], t.actions, t.obs[1:], True
    return obs, act, nxt, mask


def _scatter_rewards(trajs: Sequence[Trajectory], R: np.ndarray, T: int) -> np.ndarray:
    """Flat per-step rewards [S, J] -> padded [M, T, J]."""
    lengths = kernels.trajectory_lengths(trajs)
    _, traj_idx, step_idx = kernels.step_layout(lengths)
    out = np.zeros((len(trajs), T, R.shape[1]))
    out[traj_idx, step_idx] = R
    return out


def hfr_utilities(family: TaskFamily, trajs: Sequence[Trajectory], tasks: np.ndarray, start_states: np.ndarray,
                  model: UtilityModel, rng: np.random.Generator, chunk: int = 8) -> np.ndarray:
    """U_psi_j(tau_i) of HFR Eq. 9 for every trajectory and task: [M, J].

    For each pair: tau_i's rewards rewritten under psi_j (one ``family.rewards`` call for all
    steps and tasks), the whole trajectory as context (s, a, r_psi_j), one z ~ q(z | context),
    U = mean over the N_U start states s of psi_j (``start_states[j]``) of
    min(Q1, Q2)(s, a ~ pi(.|s, z), z). Pairs are batched; ``chunk`` trajectories at a time
    bound the memory.
    """
    tasks = family.check_tasks(tasks)
    J = len(tasks)
    start_states = np.asarray(start_states, dtype=np.float64)
    if start_states.ndim != 3 or start_states.shape[0] != J:
        raise ValueError(f"hfr_utilities: start_states must be [J={J}, N_U, O], got {start_states.shape}")
    out = np.zeros((len(trajs), J))
    for lo in range(0, len(trajs), chunk):
        part = list(trajs[lo:lo + chunk])
        m = len(part)
        obs, act, nxt, mask = _padded(part)  # [m, T, *]
        T = obs.shape[1]
        R = _scatter_rewards(part, family.rewards(concat_steps(part), tasks), T)  # [m, T, J]
        rew = np.moveaxis(R, 2, 1)  # [m, J, T]
        shape = (m, J, T)
        ctx = model.context(np.broadcast_to(obs[:, None], shape + obs.shape[2:]),
                            np.broadcast_to(act[:, None], shape + act.shape[2:]), rew,
                            np.broadcast_to(nxt[:, None], shape + nxt.shape[2:]))  # [m, J, T, D_c]
        z = model.infer(ctx.reshape(m * J, T, -1), rng, np.repeat(mask, J, axis=0))  # [m*J, Z]
        states = np.broadcast_to(start_states[None], (m,) + start_states.shape).reshape(m * J, *start_states.shape[1:])
        out[lo:lo + m] = model.q_values(states, z, rng).mean(axis=1).reshape(m, J)
    return out


def hfr_reference_utilities(task_steps: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None],
                            start_states: np.ndarray, model: UtilityModel, rng: np.random.Generator,
                            num_contexts: int = 20, context_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Utilities of psi_j under ``num_contexts`` contexts of psi_j's ORIGINAL data: [J, L], and
    a [J] bool of tasks that had data (the rest get utility 0, i.e. log Z = 0 as in the
    reference's first iteration).

    ``task_steps[j]`` = (obs, action, reward, next_obs) of psi_j's recorded steps (rewards
    under psi_j), or None. Each context = ``context_size`` transitions drawn at random, not a
    contiguous trajectory (REFERENCE-CODE §5 ``compute_log_Z``).
    """
    J = len(task_steps)
    have = np.array([s is not None and len(s[2]) > 0 for s in task_steps])
    U = np.zeros((J, num_contexts))
    rows = np.flatnonzero(have)
    if not len(rows):
        return U, have
    ctxs = []
    for j in rows:  # one gather per task
        obs, act, rew, nxt = task_steps[j]
        pick = rng.integers(len(rew), size=(num_contexts, context_size))
        ctxs.append(model.context(obs[pick], act[pick], rew[pick], nxt[pick]))  # [L, C, D_c]
    ctx = np.stack(ctxs)  # [J', L, C, D_c]
    z = model.infer(ctx.reshape(len(rows) * num_contexts, context_size, -1), rng)  # [J'*L, Z]
    states = np.repeat(np.asarray(start_states, dtype=np.float64)[rows], num_contexts, axis=0)  # [J'*L, N_U, O]
    U[rows] = model.q_values(states, z, rng).mean(axis=1).reshape(len(rows), num_contexts)
    return U, have


# ---- strategies: which trajectories go to which task -------------------------------------------
def _coin(request: MetaRequest, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    own = np.array([t.task_id for t in request.new], dtype=np.int64)
    J = len(request.train_tasks)
    if own.size and (own.min() < 0 or own.max() >= J):
        bad = [t.episode_id for t in request.new if not 0 <= t.task_id < J]
        raise ValueError(f"meta relabeling: trajectories {bad[:3]} carry no training-task id in [0, {J})")
    eligible = np.array([t.phase not in NEVER_RELABELED for t in request.new], dtype=bool)
    heads = rng.random(len(own)) < request.probability
    return own, eligible & heads


def _decide(request: MetaRequest, rng: np.random.Generator,
            choose: Callable[[list[Trajectory], np.random.Generator], tuple[np.ndarray, dict]]) -> MetaDecision:
    own, flip = _coin(request, rng)
    target = own.copy()
    stats: dict = {}
    idx = np.flatnonzero(flip)
    if len(idx):
        chosen, stats = choose([request.new[i] for i in idx], rng)
        target[idx] = chosen
    stats["relabeled_fraction"] = float(flip.mean()) if len(flip) else 0.0
    stats["changed_task_fraction"] = float(np.mean(target != own)) if len(own) else 0.0
    stats["chosen_task_index"] = target[idx]
    return MetaDecision(target=target, relabeled=flip, stats=stats)


def meta_none(request: MetaRequest, rng: np.random.Generator) -> MetaDecision:
    own = np.array([t.task_id for t in request.new], dtype=np.int64)
    return MetaDecision(target=own, relabeled=np.zeros(len(own), dtype=bool),
                        stats={"relabeled_fraction": 0.0, "changed_task_fraction": 0.0})


def meta_random(request: MetaRequest, rng: np.random.Generator) -> MetaDecision:
    """HFR code's ``random``: a relabeled trajectory goes to a uniform random training task."""
    J = len(request.train_tasks)
    return _decide(request, rng, lambda trajs, g: (g.integers(J, size=len(trajs)), {}))


def meta_hipi(request: MetaRequest, rng: np.random.Generator) -> MetaDecision:
    """Trajectory-level HIPI (Eq. 7) with PEARL's critic as the soft value: z_j ~ q(z | psi_j's
    own context), S_ij = mean_t min-Q(s_t, a_t, z_j) over tau_i's steps, then the HIPI kernel
    (partition over the relabeled batch). Needs ``model`` and ``task_contexts``."""
    if request.model is None or request.task_contexts is None:
        raise ValueError("meta strategy 'hipi' needs request.model and request.task_contexts")
    model = request.model

    def choose(trajs: list[Trajectory], g: np.random.Generator) -> tuple[np.ndarray, dict]:
        J = len(request.train_tasks)
        z = model.infer(np.asarray(request.task_contexts), g)  # [J, Z]
        obs, act, _, mask = _padded(trajs)  # [m, T, *]
        m, T = mask.shape
        q = model.q_of(np.broadcast_to(obs[:, None], (m, J) + obs.shape[1:]).reshape(m * J, T, -1),
                       np.broadcast_to(act[:, None], (m, J) + act.shape[1:]).reshape(m * J, T, -1),
                       np.broadcast_to(z[None], (m, J, z.shape[1])).reshape(m * J, -1)).reshape(m, J, T)
        S = (q * mask[:, None]).sum(-1) / mask.sum(-1)[:, None]  # [m, J]
        log_q = kernels.hipi_log_probs(S, request.temperature, True)
        chosen = kernels.sample_categorical(log_q, g)
        return chosen, {"chosen_probability": np.exp(log_q[np.arange(m), chosen])}

    return _decide(request, rng, choose)


def meta_hfr(request: MetaRequest, rng: np.random.Generator) -> MetaDecision:
    """HFR Alg. 1: psi ~ softmax_j(U_psi_j(tau) - log Z(psi_j)) over all training tasks.
    Needs ``model``, ``start_states`` and ``log_Z``."""
    if request.model is None or request.start_states is None or request.log_Z is None:
        raise ValueError("meta strategy 'hfr' needs request.model, request.start_states and request.log_Z")

    def choose(trajs: list[Trajectory], g: np.random.Generator) -> tuple[np.ndarray, dict]:
        U = hfr_utilities(request.family, trajs, request.train_tasks, request.start_states, request.model, g)
        log_q = kernels.hfr_log_probs(U, request.log_Z, request.temperature)
        chosen = kernels.sample_categorical(log_q, g)
        rows = np.arange(len(trajs))
        q = np.exp(log_q)
        own = np.array([t.task_id for t in trajs])
        return chosen, {
            "chosen_probability": q[rows, chosen],
            "own_probability": q[rows, own],
            "entropy": float(np.mean(-np.sum(q * np.where(q > 0, log_q, 0.0), axis=1))),
            "utility_mean": float(U.mean()),
        }

    return _decide(request, rng, choose)


META_STRATEGY_FNS: dict[str, Callable[[MetaRequest, np.random.Generator], MetaDecision]] = {
    "none": meta_none, "random": meta_random, "hipi": meta_hipi, "hfr": meta_hfr,
}


def get_meta_strategy(name: str) -> Callable[[MetaRequest, np.random.Generator], MetaDecision]:
    try:
        return META_STRATEGY_FNS[name]
    except KeyError:
        raise ValueError(f"unknown meta-RL relabel strategy {name!r}; known: {', '.join(META_STRATEGIES)}") from None


# ---- rows for the learner -----------------------------------------------------------------------
def meta_transitions(family: TaskFamily, trajs: Sequence[Trajectory], train_tasks: np.ndarray,
                     decision: MetaDecision) -> MetaTransitions:
    """Every step of every trajectory, once, under its target task: originals keep their
    recorded rewards and terminations; relabeled ones are rewarded and terminated under the
    target task by one ``rewards_for`` / ``terminals_for`` call."""
    O, A = family.obs_dim, family.action_dim
    if not len(trajs):
        z = np.zeros
        return MetaTransitions(z((0, O), np.float32), z((0, A), np.float32), z(0, np.float32),
                               z((0, O), np.float32), z(0, bool), z(0, np.int64), z(0, bool))
    steps = concat_steps(trajs)
    lengths = kernels.trajectory_lengths(trajs)
    target = np.repeat(decision.target, lengths)  # [S]
    relabeled = np.repeat(decision.relabeled, lengths)
    reward = np.concatenate([t.rewards for t in trajs]).astype(np.float64)
    terminated = np.concatenate([t.terminated for t in trajs]).astype(bool) | _timeout_terminals(family, trajs)
    if relabeled.any():
        sel = np.flatnonzero(relabeled)
        sub = type(steps)(*(np.asarray(x)[sel] for x in steps))
        tasks = np.asarray(train_tasks, dtype=np.float64)[target[sel]]
        reward[sel] = family.rewards_for(sub, tasks)
        term = family.terminals_for(sub, tasks)
        timeout = _timeout_terminals(family, trajs)[sel]
        terminated[sel] = term | timeout
    to_enc = np.repeat(np.array([t.phase in ENC_PHASES for t in trajs]), lengths)
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    return MetaTransitions(f32(steps.obs), f32(steps.action), f32(reward), f32(steps.next_obs),
                           terminated, target.astype(np.int64), to_enc)
