"""Host time of a training step, measured: the exact emulator runs LeNet steps and the time outside
``backend.gemm`` is the host's share (fitted to :class:`fxtrain.host.timemodel.HostModel`).

Members
-------
TimedBackend
    A backend wrapper that times ``gemm`` and records every call.
time_training_steps, StepTiming
    Measured LeNet training steps.
measure_host_model
    :class:`~fxtrain.host.timemodel.HostModel` fitted to measured steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sim.gemm import EngineConfig

__all__ = ["TimedBackend", "time_training_steps", "StepTiming", "measure_host_model"]


class TimedBackend:
    """A backend wrapper that times ``gemm`` and records every call's shapes, rounding and ``b_key``.

    Members
    -------
    inner
        The wrapped backend.
    gemm_s, gemm_cpu_s : float
        Wall-clock and process CPU seconds spent inside ``inner.gemm``.
    calls : list
        ``(M, K, N, shift, mode, b_key)`` per call.
    """

    accepts_torch = False         # the layers hand it numpy operands, as to a Device
    restores_state = False

    def __init__(self, inner):
        self.inner = inner
        self.config = inner.config
        self.gemm_s = 0.0
        self.gemm_cpu_s = 0.0
        self.calls = []

    @property
    def counters(self):
        return self.inner.counters

    def seed(self, seed):
        self.inner.seed(seed)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def close(self):
        self.inner.close()

    def gemm(self, a, b, shift, mode, *, b_key=None, a_view=None):
        import time

        start, cpu = time.perf_counter(), time.process_time()
        result = self.inner.gemm(a, b, shift, mode, b_key=b_key, a_view=a_view)
        self.gemm_s += time.perf_counter() - start
        self.gemm_cpu_s += time.process_time() - cpu
        self.calls.append((a.shape[0], a.shape[1], b.shape[1], shift, str(mode), b_key))
        return result


def time_training_steps(backend, batch, steps, *, seed=0, warmup=1, threads=None, input_grad="patches"):
    """Wall-clock of ``steps`` LeNet training steps of ``batch`` random 28 x 28 images on ``backend``.

    The model is ``fxtrain.host.models`` LeNet converted by ``fxtrain.host.convert.convert`` (default formats),
    trained by SGD on cross-entropy; data are already in memory. ``backend`` may be a :class:`TimedBackend`
    (to read its ``calls`` afterwards). ``threads`` sets torch's intra-op threads for the measurement (restored
    afterwards; on a shared machine, spinning OpenMP threads inflate CPU time, so host measurements use 1).
    ``input_grad``: the layers' ``FixedConfig.input_grad``. Returns one :class:`StepTiming` per step after the
    warm-up steps.
    """
    import torch

    from .convert import convert
    from .models import build_model

    timed = backend if isinstance(backend, TimedBackend) else TimedBackend(backend)
    model = convert(build_model("lenet", seed), timed, input_grad=input_grad)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 1, 28, 28), generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    out = []
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        _run_steps(model, optimizer, timed, x, y, warmup, steps, out)
    finally:
        torch.set_num_threads(saved_threads)
    return out


def _run_steps(model, optimizer, timed, x, y, warmup, steps, out):
    import time

    import torch

    for i in range(warmup + steps):
        gemm_before, gemm_cpu_before = timed.gemm_s, timed.gemm_cpu_s
        start, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if i >= warmup:
            out.append(StepTiming(wall, timed.gemm_s - gemm_before, cpu, timed.gemm_cpu_s - gemm_cpu_before))


@dataclass(frozen=True)
class StepTiming:
    """Measured times of one training step: wall-clock and process CPU seconds, in total and inside ``gemm``.

    Members
    -------
    host_wall_s, host_cpu_s : float
        ``wall_s - gemm_wall_s`` and ``cpu_s - gemm_cpu_s``: the host's share.
    """

    wall_s: float
    gemm_wall_s: float
    cpu_s: float
    gemm_cpu_s: float

    @property
    def host_wall_s(self):
        return self.wall_s - self.gemm_wall_s

    @property
    def host_cpu_s(self):
        return self.cpu_s - self.gemm_cpu_s


def measure_host_model(batches=(8, 32), steps=3, config=None, clock="cpu"):
    """:class:`HostModel` fitted to the host time of LeNet steps on the exact emulator: process CPU seconds
    (``clock="cpu"``, robust to other load on the machine) or wall-clock seconds (``"wall"``) outside
    ``backend.gemm``, median of ``steps`` steps per batch size, torch on one thread."""
    import statistics

    from .emulator import ExactEmulator
    from .timemodel import HostModel

    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', not {clock!r}")
    points = []
    for batch in batches:
        timings = time_training_steps(ExactEmulator(config or EngineConfig()), batch, steps, threads=1)
        points.append((batch, statistics.median(getattr(t, f"host_{clock}_s") for t in timings)))
    return HostModel.fit(points)
