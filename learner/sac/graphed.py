"""SAC updates as one CUDA graph: k updates per launch, replay sampling on the device inside.

Small MLPs on a GPU are bound by kernel launches, not FLOPs: one eager SAC update is a few
hundred small kernels, each launched from Python. Here k whole updates (index sampling in
the device replay, the gather, the three losses, backward, the fused capturable Adam step,
the Polyak update) are captured once in a CUDA graph and replayed with one launch:

    graphed = GraphedUpdates(state, replay, updates_per_launch=8)
    done = graphed.run(launches=4)          # 32 updates; graphed.metrics holds the last one's

Requirements the capture imposes, and how they are met:

* static addresses: the replay's ring buffers are preallocated at full capacity; the
  number of valid rows lives in a device scalar (``size``) written before each launch, and
  indices are ``floor(U[0, 1) * size)`` so the captured kernels read it;
* graph-safe randomness: index sampling and the actor's noise draw from the device's
  default generator (philox offsets advance per replay), not ``state.generator``;
* capturable optimiser: the state's Adam is switched to ``capturable=True`` (step counts on
  the device) and warmed up before capture, as the PyTorch CUDA-graph recipe asks;
* no host syncs inside: metrics are written to a static device tensor and read once per
  ``run``.

On a CPU state the same body runs eagerly (``state.generator`` for every draw): that is
how the tests check, without a GPU, that the body is k ordinary SAC updates on uniformly
sampled replay rows. The learner uses this class only on CUDA (``LearnerConfig.cuda_graph``);
the CPU path is ``update`` unchanged.
"""

from __future__ import annotations

import torch

from learner.core import Batch
from learner.replay import Replay
from learner.sac.losses import compute_losses
from learner.sac.update import METRIC_NAMES, SACState


def make_capturable(state: SACState) -> None:
    """Switch the state's Adam to ``capturable=True`` (required inside a CUDA graph)."""
    for group in state.optimizer.param_groups:
        group["capturable"] = True
    for st in state.optimizer.state.values():
        if "step" in st and st["step"].device != state.device:
            st["step"] = st["step"].to(state.device, torch.float32)


class GraphedUpdates:
    """k SAC updates per launch on ``state`` with batches drawn from ``replay`` (see module doc)."""

    def __init__(self, state: SACState, replay: Replay, updates_per_launch: int, batch_size: int | None = None):
        if updates_per_launch < 1:
            raise ValueError(f"updates_per_launch must be >= 1, got {updates_per_launch}")
        if replay.device != state.device:
            raise ValueError(f"replay on {replay.device} but the SAC state on {state.device}")
        self.state, self.replay, self.k = state, replay, int(updates_per_launch)
        self.batch_size = int(batch_size or state.cfg.batch_size)
        self.device = state.device
        self.graphed = self.device.type == "cuda"
        self.size = torch.zeros((), device=self.device)  # valid replay rows, as a float
        self.metrics = torch.zeros(len(METRIC_NAMES), device=self.device)
        self._graph: torch.cuda.CUDAGraph | None = None
        if self.graphed:
            make_capturable(state)

    # ---- the captured body ---------------------------------------------------------------------
    def _body(self) -> None:
        st, data = self.state, self.replay._data
        gen = None if self.graphed else st.generator  # graphs draw from the default generator
        params = [p for g in st.optimizer.param_groups for p in g["params"]]
        targets, onlines = list(st.target_critic.parameters()), list(st.critic.parameters())
        for i in range(self.k):
            u = torch.rand(self.batch_size, generator=gen, device=self.device)
            idx = (u * self.size).long()
            batch = Batch(*(x[idx] for x in data))
            losses = compute_losses(st.nets, batch, st.cfg, st.log_alpha, gen)
            if i > 0 or not self.graphed:
                for p in params:  # in place: the graph's gradient buffers stay where they are
                    if p.grad is not None:
                        p.grad.zero_()
            losses.total.backward()
            st.optimizer.step()
            with torch.no_grad():
                torch._foreach_lerp_(targets, onlines, st.cfg.tau)
        with torch.no_grad():
            self.metrics.copy_(losses.metric_vector())

    def _capture(self) -> None:
        """Warm up on a side stream (initialises Adam's state: real updates, counted by
        ``run``), then capture one launch."""
        st = self.state
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            st.optimizer.zero_grad(set_to_none=True)
            self._body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        st.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._body()
        self._graph = graph

    # ---- running ------------------------------------------------------------------------------
    def run(self, launches: int) -> int:
        """``launches`` x k updates (the first launch on CUDA is the eager warm-up that
        precedes the capture); returns the number of updates done."""
        if len(self.replay) == 0:
            raise RuntimeError("GraphedUpdates.run: the replay is empty")
        self.size.fill_(float(len(self.replay)))
        done = 0
        for _ in range(launches):
            if self.graphed and self._graph is None:
                self._capture()
            elif self.graphed:
                self._graph.replay()
            else:
                self._body()
            done += self.k
        self.state.step += done
        return done

    def read_metrics(self) -> dict[str, float]:
        """The last update's diagnostics (one device-to-host copy)."""
        return dict(zip(METRIC_NAMES, self.metrics.tolist()))


def set_tf32(enabled: bool) -> None:
    """Allow TF32 tensor-core matmuls (and convolutions) on Ampere or newer GPUs: ~10 bits of
    mantissa in the products, float32 accumulation. Off by default (LearnerConfig.tf32)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
