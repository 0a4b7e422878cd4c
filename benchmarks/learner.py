"""Learner throughput: our SAC ``update`` vs a plain PyTorch SAC step and vs its FLOP ceiling.

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
is exactly the baseline's architecture. The default architecture is also measured with
``SACConfig.compile`` (losses and backward through ``torch.compile``, ``compiled_*``
fields; its one-off compile time is ``compile_seconds``), interleaved with the eager one.

FLOP ceiling (``ratio_of_flop_ceiling``): every matmul one update runs (forward and
backward, recorded with a dispatch mode) is timed alone on operands of the same shapes in
the same run; their summed time is the fastest an update could be if everything but its
matmuls were free. Reported at one thread and, as the learner runs by default, at every
core of the machine (``all_cores``), for the eager and the compiled update
(``ratio_of_flop_ceiling_eager`` / ``_compiled``); ``ratio_of_flop_ceiling`` is the path
a HalfCheetahMO run takes by default (``default_path``: its family default of
``SACConfig.compile``, on). The
``*_cpu_time_*`` ratios time both sides with this thread's CPU clock instead of the wall
clock, which on a shared machine leaves out the time other processes held the core.

``denormals``: the GH families' eager update (PointReacher, PointTrajectory dims and
settings, lr 3e-3) after 1,500 updates on random batches, with IEEE gradual underflow and
with denormals as zero (``learner.flush_denormal``): updates/s and the share of the state
then denormal (``denormals_block``).

``--device cuda``: eager updates and CUDA-graph launches of k = 1, 8, 32 updates
(``learner/sac/graphed.py``, replay sampling on the device) at batch 256, 256x256, with
TF32 off and on; the ceiling likewise from the GPU's own matmul timings.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from learner.core import Batch
from learner.sac.branches import BranchThread, split_threads
from learner.sac.config import SACConfig, sac_defaults
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


def _batches(n: int, seed: int, batch: int = BATCH, obs: int = OBS, act: int = ACT, task: int = TASK) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(
            obs=torch.randn(batch, obs, generator=g),
            action=torch.rand(batch, act, generator=g) * 2 - 1,
            reward=torch.randn(batch, generator=g),
            next_obs=torch.randn(batch, obs, generator=g),
            terminated=torch.rand(batch, generator=g) < 0.01,
            task=torch.randn(batch, task, generator=g),
            reward_inputs=torch.zeros(batch, 0),
        )
        for _ in range(n)
    ]


def _rates(step: Callable[[Batch], Any], batches: list[Batch], n: int) -> tuple[float, float]:
    """Calls per second of wall time and of this thread's CPU time (which leaves out the time
    other processes on a shared machine took the core; exact at one torch thread)."""
    start, cpu = time.perf_counter(), time.thread_time()
    for i in range(n):
        step(batches[i % len(batches)])
    return n / (time.perf_counter() - start), n / (time.thread_time() - cpu)


# ---- the FLOP ceiling ------------------------------------------------------------------------
_MATMULS = None


def _matmul_ops() -> set:
    global _MATMULS
    if _MATMULS is None:
        aten = torch.ops.aten
        _MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
    return _MATMULS


def _recorded_matmuls(step: Callable[[], Any]) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    """(op, operand shapes) of every matmul one call of ``step`` runs, backward included."""
    from torch.utils._python_dispatch import TorchDispatchMode

    ops: list[tuple[str, tuple[tuple[int, ...], ...]]] = []
    mm = _matmul_ops()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
            if func in mm:
                # the two matrix operands (addmm / baddbmm carry the bias first)
                a, b = (args[1], args[2]) if func.__name__.startswith(("addmm", "baddbmm")) else (args[0], args[1])
                ops.append(("bmm" if a.dim() == 3 else "mm", (tuple(a.shape), tuple(b.shape))))
            return func(*args, **(kwargs or {}))

    with Record():
        step()
    return ops


def _flops(kind: str, shapes: tuple[tuple[int, ...], ...]) -> float:
    a, b = shapes
    return 2.0 * (a[0] if kind == "bmm" else 1) * a[-2] * a[-1] * b[-1]


def flop_ceiling(step: Callable[[], Any], device: torch.device, reps: int) -> dict[str, float]:
    """The update's matmul FLOPs and the update rate if it ran only its matmuls at the speed
    this machine gives them: every recorded (op, shapes) timed here on fresh contiguous
    operands, ``reps`` times, median, summed with multiplicity."""
    ops = _recorded_matmuls(step)
    counts: dict[tuple, int] = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    total_s = total_cpu_s = 0.0
    for (kind, (sa, sb)), count in counts.items():
        x, y = torch.randn(sa, device=device), torch.randn(sb, device=device)
        fn = torch.bmm if kind == "bmm" else torch.mm
        out = fn(x, y)
        for _ in range(3):
            fn(x, y, out=out)
        times, cpu_times = [], []
        for _ in range(reps):
            _sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(10):
                fn(x, y, out=out)
            _sync(device)
            times.append((time.perf_counter() - t0) / 10)
            cpu_times.append((time.thread_time() - c0) / 10)
        total_s += count * statistics.median(times)
        total_cpu_s += count * statistics.median(cpu_times)
    flops = sum(_flops(k, s) for k, s in ops)
    return {
        "matmuls_per_update": len(ops),
        "flops_per_update": flops,
        "matmul_seconds_per_update": total_s,
        "ceiling_updates_per_s": 1.0 / total_s,
        "matmul_gflops": flops / total_s / 1e9,
        # the same in this thread's CPU time (meaningful on CPU only)
        "ceiling_updates_per_s_cpu_time": 1.0 / total_cpu_s,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the run ------------------------------------------------------------------------------------
def _branch_step(st: Any, worker: BranchThread, own: int, after: int) -> Callable[[Batch], None]:
    """One update of ``st`` in two branches (the caller's share of threads ``own``, the rest
    on ``worker``), metrics every 100 as a trainer reads them; ``after`` threads again after it."""

    def step(b: Batch) -> None:
        torch.set_num_threads(own)
        try:
            update(st, b, with_metrics=st.step % 100 == 0, branches=worker)
        finally:
            torch.set_num_threads(after)

    return step


def _cpu_block(threads: int, quick: bool, with_plain: bool) -> dict[str, Any]:
    torch.set_num_threads(threads)
    reps, n, warmup = (2, 8, 3) if quick else (7, 150, 30)
    batches = _batches(8, seed=0)
    cfg = SACConfig(hidden_sizes=(HIDDEN, HIDDEN))
    ours_all = init_state(OBS, ACT, TASK, dataclasses.replace(cfg, compile=False), "cpu", seed=0)
    ours_compiled = init_state(OBS, ACT, TASK, dataclasses.replace(cfg, compile=True), "cpu", seed=0)
    t0 = time.perf_counter()
    update(ours_compiled, batches[0], with_metrics=False)  # the compile (or its cache hit)
    compile_seconds = time.perf_counter() - t0
    steps: dict[str, Callable[[Batch], Any]] = {
        # metrics read every 100 updates, as a trainer would
        "ours_all_layers": lambda b: update(ours_all, b, with_metrics=ours_all.step % 100 == 0),
        "ours_compiled": lambda b: update(ours_compiled, b, with_metrics=ours_compiled.step % 100 == 0),
    }
    branch_compile_seconds = None
    if threads >= 2:  # the two-branch update the learner runs with 2+ threads (learner/sac/branches.py)
        own, branch_threads = split_threads(threads)
        worker = BranchThread(branch_threads)
        branch_eager = init_state(OBS, ACT, TASK, dataclasses.replace(cfg, compile=False), "cpu", seed=0)
        branch_compiled = init_state(OBS, ACT, TASK, dataclasses.replace(cfg, compile=True), "cpu", seed=0)

        def split(st: Any) -> Callable[[Batch], Any]:
            return _branch_step(st, worker, own, threads)

        t0 = time.perf_counter()
        split(branch_compiled)(batches[0])  # the branches' compile (or its cache hit)
        branch_compile_seconds = time.perf_counter() - t0
        steps["branches"] = split(branch_eager)
        steps["branches_compiled"] = split(branch_compiled)
    if with_plain:
        plain = PlainSAC(seed=0)
        ours_input = init_state(OBS, ACT, TASK, SACConfig(hidden_sizes=(HIDDEN, HIDDEN), task_to_all_layers=False),
                                "cpu", seed=0)
        steps["plain"] = plain.step
        steps["ours_input_only"] = lambda b: update(ours_input, b, with_metrics=ours_input.step % 100 == 0)
    for step in steps.values():
        _rates(step, batches, warmup)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    cpu_rates: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
            wall, cpu = _rates(steps[name], batches, n)
            rates[name].append(wall)
            cpu_rates[name].append(cpu)
    med = {k: statistics.median(v) for k, v in rates.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu_rates.items()}
    # the ceiling counts the eager update's matmuls; the compiled one runs the same products
    ceiling = flop_ceiling(lambda: update(ours_all, batches[0], with_metrics=False), torch.device("cpu"),
                           reps=2 if quick else 15)
    # the path ``hindsight train`` takes for HalfCheetahMO, whose dimensions these are
    default_path = "compiled" if sac_defaults("half_cheetah_mo").get("compile", cfg.compile) else "eager"
    ratio = {"eager": med["ours_all_layers"] / ceiling["ceiling_updates_per_s"],
             "compiled": med["ours_compiled"] / ceiling["ceiling_updates_per_s"]}
    out: dict[str, Any] = {
        "threads": threads,
        "ours_updates_per_s": med["ours_all_layers"],
        "compiled_updates_per_s": med["ours_compiled"],
        "compiled_over_eager": med["ours_compiled"] / med["ours_all_layers"],
        "compile_seconds": compile_seconds,
        **ceiling,
        "ratio_of_flop_ceiling_eager": ratio["eager"],
        "ratio_of_flop_ceiling_compiled": ratio["compiled"],
        "default_path": default_path,
        "ratio_of_flop_ceiling": ratio[default_path],
        # CPU time of this thread, ceiling likewise: what the code achieves while it holds a
        # core, less sensitive to the other sessions on a shared machine (1 thread only)
        "ratio_of_flop_ceiling_cpu_time_eager": med_cpu["ours_all_layers"] / ceiling["ceiling_updates_per_s_cpu_time"],
        "ratio_of_flop_ceiling_cpu_time_compiled": med_cpu["ours_compiled"] / ceiling["ceiling_updates_per_s_cpu_time"],
        "all_rates": rates,
        "all_rates_cpu_time": cpu_rates,
    }
    if "branches" in med:
        out.update({
            "branches_updates_per_s": med["branches"],
            "branches_compiled_updates_per_s": med["branches_compiled"],
            "branches_compile_seconds": branch_compile_seconds,
            "ratio_of_flop_ceiling_branches": med["branches"] / ceiling["ceiling_updates_per_s"],
            "ratio_of_flop_ceiling_branches_compiled": med["branches_compiled"] / ceiling["ceiling_updates_per_s"],
        })
    if with_plain:
        out.update({
            "plain_updates_per_s": med["plain"],
            "ours_input_only_updates_per_s": med["ours_input_only"],
            "ratio": med["ours_all_layers"] / med["plain"],
            "ratio_input_only": med["ours_input_only"] / med["plain"],
        })
    return out


def _cuda_block(quick: bool) -> dict[str, Any]:
    """Eager updates and CUDA-graph launches (k updates each, replay sampling on the device)
    at batch 256, 256x256, on the first GPU; TF32 off and on."""
    from learner.replay import Replay
    from learner.sac.graphed import GraphedUpdates, set_tf32
    from relabel_service.core import TransitionBatch

    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    n_rows = 100_000
    rows = TransitionBatch(
        torch.randn(n_rows, OBS, generator=g).numpy(), (torch.rand(n_rows, ACT, generator=g) * 2 - 1).numpy(),
        torch.randn(n_rows, generator=g).numpy(), torch.randn(n_rows, OBS, generator=g).numpy(),
        (torch.rand(n_rows, generator=g) < 0.01).numpy().astype("float32"), torch.randn(n_rows, TASK, generator=g).numpy(),
        torch.zeros(n_rows, 0).numpy(),
    )
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "replay_rows": n_rows}
    seconds = 2.0 if quick else 8.0
    for tf32 in (False, True):
        set_tf32(tf32)
        key = "tf32" if tf32 else "fp32"
        replay = Replay(n_rows, OBS, ACT, TASK, device, 0)
        replay.add(rows)
        eager_state = init_state(OBS, ACT, TASK, SACConfig(hidden_sizes=(HIDDEN, HIDDEN)), device, seed=0)
        gen = torch.Generator(device=device).manual_seed(0)

        def eager_step() -> None:
            update(eager_state, replay.sample(BATCH, gen), with_metrics=False)

        eager = _timed_rate(eager_step, device, seconds, per_call=1)
        res: dict[str, Any] = {"eager_updates_per_s": eager}
        for k in (1, 8, 32):
            state = init_state(OBS, ACT, TASK, SACConfig(hidden_sizes=(HIDDEN, HIDDEN)), device, seed=0)
            graphed = GraphedUpdates(state, replay, updates_per_launch=k)
            graphed.run(2)  # warm-up launch + capture + one replay
            res[f"graph_k{k}_updates_per_s"] = _timed_rate(lambda: graphed.run(1), device, seconds, per_call=k)
        ceiling = flop_ceiling(eager_step, device, reps=10)
        best = max(v for name, v in res.items() if name.startswith("graph_"))
        res.update({**ceiling, "best_updates_per_s": best, "ratio_of_flop_ceiling": best / ceiling["ceiling_updates_per_s"]})
        out[key] = res
    set_tf32(False)
    out["updates_per_s"] = out["fp32"]["best_updates_per_s"]
    out["updates_per_s_tf32"] = out["tf32"]["best_updates_per_s"]
    out["ratio_of_flop_ceiling"] = out["fp32"]["ratio_of_flop_ceiling"]
    out["target_updates_per_s"] = 3000
    return out


def _timed_rate(step: Callable[[], Any], device: torch.device, seconds: float, per_call: int) -> float:
    for _ in range(3):
        step()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            step()
        n += 10
        _sync(device)
    return n * per_call / (time.perf_counter() - t0)


def bf16_block(quick: bool, cores: int) -> dict[str, Any]:
    """``learner.bf16_matmul`` on the CPU: the compiled update (one thread and, with 2+ cores,
    two branches) with float32 and with bfloat16-product matmuls, interleaved in this run, and
    the FLOP ceiling with bfloat16-product matmuls (the same matmuls, timed under the switch)."""
    from learner.core import cpu_bf16_matmul_supported, cpu_bf16_matmuls

    if not cpu_bf16_matmul_supported():
        return {"supported": False, "note": "this CPU has no native bfloat16 matmuls (AVX512-BF16 or AMX)"}
    reps, n, warmup = (2, 8, 3) if quick else (7, 150, 30)
    batches = _batches(8, seed=0)
    cfg = SACConfig(hidden_sizes=(HIDDEN, HIDDEN), compile=True)
    torch.set_num_threads(1)
    steps: dict[tuple[str, str], Callable[[Batch], Any]] = {}
    for prec in ("fp32", "bf16"):
        st = init_state(OBS, ACT, TASK, cfg, "cpu", seed=0)
        steps[("one_thread", prec)] = lambda b, st=st: update(st, b, with_metrics=st.step % 100 == 0)
    worker = None
    if cores > 1:
        own, branch_threads = split_threads(cores)
        worker = BranchThread(branch_threads)
        for prec in ("fp32", "bf16"):
            steps[("branches", prec)] = _branch_step(init_state(OBS, ACT, TASK, cfg, "cpu", seed=0), worker, own, 1)
    try:
        for (_, prec), step in steps.items():
            with cpu_bf16_matmuls(prec == "bf16"):
                _rates(step, batches, warmup)  # the compile (or its cache hit) and the warm-up
        rates: dict[tuple[str, str], list[float]] = {k: [] for k in steps}
        names = list(steps)
        for r in range(reps):
            for k in names[r % len(names):] + names[: r % len(names)]:
                with cpu_bf16_matmuls(k[1] == "bf16"):
                    rates[k].append(_rates(steps[k], batches, n)[0])
    finally:
        if worker is not None:
            worker.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    eager = init_state(OBS, ACT, TASK, dataclasses.replace(cfg, compile=False), "cpu", seed=0)
    with cpu_bf16_matmuls(True):
        ceiling = flop_ceiling(lambda: update(eager, batches[0], with_metrics=False), torch.device("cpu"),
                               reps=2 if quick else 15)
    out: dict[str, Any] = {
        "supported": True,
        "compiled_updates_per_s_fp32": med[("one_thread", "fp32")],
        "compiled_updates_per_s_bf16": med[("one_thread", "bf16")],
        "speedup": med[("one_thread", "bf16")] / med[("one_thread", "fp32")],
        "ceiling_updates_per_s_bf16": ceiling["ceiling_updates_per_s"],
        "matmul_gflops_bf16": ceiling["matmul_gflops"],
        "ratio_of_flop_ceiling_bf16": med[("one_thread", "bf16")] / ceiling["ceiling_updates_per_s"],
        "all_rates": {f"{a}_{b}": v for (a, b), v in rates.items()},
    }
    if worker is not None:
        out.update({
            "branches_compiled_updates_per_s_fp32": med[("branches", "fp32")],
            "branches_compiled_updates_per_s_bf16": med[("branches", "bf16")],
            "speedup_branches": med[("branches", "bf16")] / med[("branches", "fp32")],
        })
    return out


def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """CPU: updates/s of ours (eager and compiled) at 1 thread and at every core, the plain
    step (1 thread), and each against the FLOP ceiling measured in the same run. CUDA: eager
    vs CUDA-graph rates."""
    base = {"batch_size": BATCH, "hidden": [HIDDEN, HIDDEN], "dims": {"obs": OBS, "action": ACT, "task": TASK}}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("bench learner --device cuda: torch sees no CUDA device")
        return {**base, "device": "cuda", **_cuda_block(quick)}
    threads = torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        one = _cpu_block(1, quick, with_plain=True)
        out: dict[str, Any] = {**base, "device": "cpu", "one_thread": one}
        # headline fields as before (one thread), plus the compiled path and the ceiling ratios
        for k in ("plain_updates_per_s", "ours_updates_per_s", "ours_input_only_updates_per_s", "ratio",
                  "ratio_input_only", "compiled_updates_per_s", "compiled_over_eager", "compile_seconds",
                  "ratio_of_flop_ceiling_eager", "ratio_of_flop_ceiling_compiled", "default_path",
                  "ratio_of_flop_ceiling", "ratio_of_flop_ceiling_cpu_time_eager",
                  "ratio_of_flop_ceiling_cpu_time_compiled"):
            out[k] = one[k]
        if cores > 1:
            every = _cpu_block(cores, quick, with_plain=False)
            out["all_cores"] = every
            out["ratio_of_flop_ceiling_all_cores"] = every["ratio_of_flop_ceiling"]
            out["speedup_all_cores"] = every["ours_updates_per_s"] / one["ours_updates_per_s"]
            # the learner's path with every core: the update in two branches, compiled for HalfCheetahMO
            key = "branches_compiled" if one["default_path"] == "compiled" else "branches"
            out["all_cores_default_path"] = key
            out["all_cores_default_updates_per_s"] = every[f"{key}_updates_per_s"]
            out["speedup_all_cores_default_path"] = every[f"{key}_updates_per_s"] / one[
                "compiled_updates_per_s" if key == "branches_compiled" else "ours_updates_per_s"]
        torch.set_num_threads(1)
        out["denormals"] = denormals_block(quick)
        # learner.bf16_matmul (off by default): its speed-up where the CPU has native bfloat16
        out["bf16_matmul"] = bf16 = bf16_block(quick, cores)
        if bf16["supported"]:
            out["compiled_updates_per_s_bf16_matmul"] = bf16["compiled_updates_per_s_bf16"]
            out["speedup_bf16_matmul"] = bf16["speedup"]
        torch.set_num_threads(1)
        out["target_ratio_of_flop_ceiling"] = 0.8
        return out
    finally:
        torch.set_num_threads(threads)


def _denormal_fraction(state: Any) -> float:
    """Share of the learner state's float32 values (networks, targets, Adam's moments) that
    are denormal: non-zero and below float32's smallest normal number."""
    tensors = [*state.actor.parameters(), *state.critic.parameters(), *state.target_critic.parameters()]
    tensors += [v for st in state.optimizer.state.values() for v in st.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0]
    tiny = torch.finfo(torch.float32).tiny
    total = sum(t.numel() for t in tensors)
    denormal = sum(int(((t.abs() > 0) & (t.abs() < tiny)).sum()) for t in tensors)
    return denormal / max(1, total)


def denormals_block(quick: bool) -> dict[str, Any]:
    """The GH families' eager update at one thread on random batches, with IEEE gradual
    underflow and with denormals as zero (``learner.flush_denormal``, the learner's
    default): updates/s over a timing after ``warm`` updates (Adam's second moments of units
    whose gradient stays zero reach the denormal range within about a thousand updates at
    lr 3e-3) and the share of the state's floats then denormal."""
    from envs import get_family
    from learner.core import denormals_flushed

    warm, seconds = (20, 0.3) if quick else (1500, 5.0)
    out: dict[str, Any] = {"warm_updates": warm, "threads": 1}
    for name in ("point_reacher", "point_trajectory"):
        fam = get_family(name)
        cfg = dataclasses.replace(SACConfig(**{**sac_defaults(name), "compile": False}), discount=fam.discount)
        batches = _batches(4, 0, cfg.batch_size, fam.obs_dim, fam.action_dim, fam.task_dim)
        row: dict[str, Any] = {"hidden": list(cfg.hidden_sizes), "batch_size": cfg.batch_size, "lr": cfg.critic_lr}
        for label, flush in (("ieee", False), ("flushed", True)):
            state = init_state(fam.obs_dim, fam.action_dim, fam.task_dim, cfg, "cpu", seed=0)
            calls = itertools.count()

            def step() -> None:
                update(state, batches[next(calls) % 4], with_metrics=False)

            with denormals_flushed(flush):
                for _ in range(warm):
                    step()
                row[f"{label}_updates_per_s"] = round(_timed_rate(step, torch.device("cpu"), seconds, 1), 1)
            row[f"{label}_denormal_fraction"] = round(_denormal_fraction(state), 4)
        row["flushed_over_ieee"] = round(row["flushed_updates_per_s"] / row["ieee_updates_per_s"], 3)
        out[name] = row
    return out
