"""Learner throughput: our SAC ``update`` vs a plain PyTorch SAC step, same run, one thread.

    from benchmarks.learner import run; print(run(quick=True))

Both sides use HalfCheetahMultiObjective's dimensions (obs 17, action 6, task 4), batch 256
and 256x256 ReLU networks. The baseline is written the way CleanRL's
``sac_continuous_action.py`` writes it: two separate Q MLPs on [s, z, a], an actor with
mean and log-std heads, ``torch.optim.Adam`` with default settings (one optimiser for both
Qs, one for the actor, one for alpha), critic step, then actor and alpha steps every
update, no metric reads. Repetitions of the two are interleaved and the median rate of
each is reported, with the ratio ours / plain.

Ours is measured twice: with the default ``task_to_all_layers=True`` (slightly more FLOPs:
the task is re-appended to every hidden layer) and with the task on the input only, which
is exactly the baseline's architecture.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from learner.core import Batch
from learner.sac.config import SACConfig
from learner.sac.update import init_state, update

OBS, ACT, TASK, BATCH, HIDDEN = 17, 6, 4, 256, 256


class _SoftQ(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(OBS + TASK + ACT, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc3 = nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, a], 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class _Actor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(OBS + TASK, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc_mean = nn.Linear(HIDDEN, ACT)
        self.fc_logstd = nn.Linear(HIDDEN, ACT)

    def get_action(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        mean = self.fc_mean(x)
        log_std = torch.clamp(self.fc_logstd(x), -20, 2)
        normal = torch.distributions.Normal(mean, log_std.exp())
        x_t = normal.rsample()
        y_t = torch.tanh(x_t)
        log_prob = normal.log_prob(x_t) - torch.log(1 - y_t.pow(2) + 1e-6)
        return y_t, log_prob.sum(1, keepdim=True)


class PlainSAC:
    """CleanRL-style SAC on [s, z] inputs: the reference point of the benchmark."""

    def __init__(self, seed: int = 0, gamma: float = 0.99, tau: float = 0.005, lr: float = 3e-4):
        torch.manual_seed(seed)
        self.actor = _Actor()
        self.qf1, self.qf2 = _SoftQ(), _SoftQ()
        self.qf1_target, self.qf2_target = _SoftQ(), _SoftQ()
        self.qf1_target.load_state_dict(self.qf1.state_dict())
        self.qf2_target.load_state_dict(self.qf2.state_dict())
        self.q_optimizer = torch.optim.Adam(list(self.qf1.parameters()) + list(self.qf2.parameters()), lr=lr)
        self.actor_optimizer = torch.optim.Adam(list(self.actor.parameters()), lr=lr)
        self.target_entropy = -float(ACT)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha = self.log_alpha.exp().item()
        self.a_optimizer = torch.optim.Adam([self.log_alpha], lr=lr)
        self.gamma, self.tau = gamma, tau

    def step(self, b: Batch) -> None:
        obs = torch.cat([b.obs, b.task], 1)
        next_obs = torch.cat([b.next_obs, b.task], 1)
        dones = b.terminated.float()
        with torch.no_grad():
            next_actions, next_log_pi = self.actor.get_action(next_obs)
            qf1_next = self.qf1_target(next_obs, next_actions)
            qf2_next = self.qf2_target(next_obs, next_actions)
            min_qf_next = torch.min(qf1_next, qf2_next) - self.alpha * next_log_pi
            next_q = b.reward.flatten() + (1 - dones.flatten()) * self.gamma * min_qf_next.view(-1)
        qf1_a = self.qf1(obs, b.action).view(-1)
        qf2_a = self.qf2(obs, b.action).view(-1)
        qf_loss = F.mse_loss(qf1_a, next_q) + F.mse_loss(qf2_a, next_q)
        self.q_optimizer.zero_grad()
        qf_loss.backward()
        self.q_optimizer.step()

        pi, log_pi = self.actor.get_action(obs)
        min_qf_pi = torch.min(self.qf1(obs, pi), self.qf2(obs, pi))
        actor_loss = ((self.alpha * log_pi) - min_qf_pi).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        with torch.no_grad():
            _, log_pi = self.actor.get_action(obs)
        alpha_loss = (-self.log_alpha.exp() * (log_pi + self.target_entropy)).mean()
        self.a_optimizer.zero_grad()
        alpha_loss.backward()
        self.a_optimizer.step()
        self.alpha = self.log_alpha.exp().item()

        for param, target_param in zip(self.qf1.parameters(), self.qf1_target.parameters()):
            target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)
        for param, target_param in zip(self.qf2.parameters(), self.qf2_target.parameters()):
            target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)


def _batches(n: int, seed: int) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(
            obs=torch.randn(BATCH, OBS, generator=g),
            action=torch.rand(BATCH, ACT, generator=g) * 2 - 1,
            reward=torch.randn(BATCH, generator=g),
            next_obs=torch.randn(BATCH, OBS, generator=g),
            terminated=torch.rand(BATCH, generator=g) < 0.01,
            task=torch.randn(BATCH, TASK, generator=g),
            reward_inputs=torch.zeros(BATCH, 0),
        )
        for _ in range(n)
    ]


def _rate(step: Callable[[Batch], Any], batches: list[Batch], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        step(batches[i % len(batches)])
    return n / (time.perf_counter() - start)


def run(quick: bool = False) -> dict[str, Any]:
    """Updates/s of ours (two task-conditioning variants) and of the plain step; ratios."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reps, n, warmup = (3, 40, 10) if quick else (7, 150, 30)
        batches = _batches(8, seed=0)
        plain = PlainSAC(seed=0)
        ours_all = init_state(OBS, ACT, TASK, SACConfig(hidden_sizes=(HIDDEN, HIDDEN)), "cpu", seed=0)
        ours_input = init_state(OBS, ACT, TASK, SACConfig(hidden_sizes=(HIDDEN, HIDDEN), task_to_all_layers=False),
                                "cpu", seed=0)
        steps: dict[str, Callable[[Batch], Any]] = {
            "plain": plain.step,
            # metrics read every 100 updates, as a trainer would
            "ours_all_layers": lambda b: update(ours_all, b, with_metrics=ours_all.step % 100 == 0),
            "ours_input_only": lambda b: update(ours_input, b, with_metrics=ours_input.step % 100 == 0),
        }
        for step in steps.values():
            _rate(step, batches, warmup)
        rates: dict[str, list[float]] = {k: [] for k in steps}
        names = list(steps)
        for r in range(reps):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
                rates[name].append(_rate(steps[name], batches, n))
        med = {k: statistics.median(v) for k, v in rates.items()}
        return {
            "device": "cpu",
            "threads": 1,
            "batch_size": BATCH,
            "hidden": [HIDDEN, HIDDEN],
            "dims": {"obs": OBS, "action": ACT, "task": TASK},
            "updates_per_rep": n,
            "reps": reps,
            "plain_updates_per_s": med["plain"],
            "ours_updates_per_s": med["ours_all_layers"],
            "ours_input_only_updates_per_s": med["ours_input_only"],
            "ratio": med["ours_all_layers"] / med["plain"],
            "ratio_input_only": med["ours_input_only"] / med["plain"],
            "all_rates": rates,
        }
    finally:
        torch.set_num_threads(threads)
