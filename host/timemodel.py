"""Time per training epoch as a function of the number format, the board and the batch size: the analytic model.

The formula is derived term by term in ``docs/time-model.md``; every parameter comes from the sources the RTL
and the boards use, imported, never copied:

* the GEMMs of a training step: :mod:`fxtrain.host.gemm_shapes` (measured on the torch model);
* commands, entries, runs and bytes on the wire: :mod:`fxtrain.host.traffic`, which replays the driver's own
  planner (:class:`fxtrain.sim.planner.CommandPlanner`) and sizes frames with :mod:`fxtrain.sim.wire` and
  :mod:`fxtrain.sim.payloads`;
* cycles of one engine run: :func:`fxtrain.sim.engine.run_cycles` (the RTL matches it exactly);
* engine geometry, clock and link timing of a board: :mod:`fxtrain.host.platforms`;
* host time per step: :class:`HostModel`, fitted by :mod:`fxtrain.host.host_timing`.

The names of those modules that callers of the model use are re-exported here.

Members
-------
HostModel
    Host-side seconds per step as a function of the batch size (fitted to measurements).
StepEstimate, EpochEstimate
    Predicted times with their breakdown.
step_traffic
    Steady-state :class:`~fxtrain.host.traffic.Traffic` of one training step (cached).
estimate_step, estimate_epoch
    The model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..sim.fixedpoint import FixedFormat
from ..sim.wire import request_frame_bytes, response_frame_bytes
from .gemm_shapes import GEMM_KINDS, GemmShape, LayerGeometry, layer_geometry, lenet_layers, training_gemms
from .host_timing import StepTiming, TimedBackend, measure_host_model, time_training_steps
from .platforms import (BITS_PER_UART_BYTE, DEFAULT_EXCHANGE_S, MULTIPLIER_WIDTH, PACKED_WL, LinkTiming, Platform,
                        board_platform)
from .traffic import DriverReplay, Traffic

__all__ = ["HostModel", "StepEstimate", "EpochEstimate", "step_traffic", "estimate_step", "estimate_epoch",
           # re-exported from the modules above
           "GEMM_KINDS", "LayerGeometry", "GemmShape", "layer_geometry", "training_gemms", "lenet_layers",
           "Traffic", "DriverReplay", "request_frame_bytes", "response_frame_bytes", "BITS_PER_UART_BYTE",
           "MULTIPLIER_WIDTH", "PACKED_WL", "LinkTiming", "Platform", "board_platform", "DEFAULT_EXCHANGE_S",
           "TimedBackend", "time_training_steps", "measure_host_model", "StepTiming"]


@dataclass(frozen=True)
class HostModel:
    """Host seconds per training step: ``fixed_s + per_sample_s * batch`` (quantisation, im2col, float layers,
    optimiser; fitted by :meth:`fit` to measured steps, see ``bench/time_model.py``)."""

    fixed_s: float = 0.0
    per_sample_s: float = 0.0

    def step_s(self, batch):
        return self.fixed_s + self.per_sample_s * batch

    @classmethod
    def fit(cls, measurements):
        """Least-squares line through ``[(batch, seconds), ...]`` (at least two distinct batch sizes)."""
        points = [(float(b), float(t)) for b, t in measurements]
        if len({b for b, _ in points}) < 2:
            raise ValueError(f"Fitting the host model needs two distinct batch sizes, not {measurements!r}")
        n = len(points)
        mb = sum(b for b, _ in points) / n
        mt = sum(t for _, t in points) / n
        slope = sum((b - mb) * (t - mt) for b, t in points) / sum((b - mb) ** 2 for b, _ in points)
        return cls(mt - slope * mb, slope)


@dataclass
class StepEstimate:
    """Predicted time of one training step.

    Members
    -------
    compute_s : float
        Engine busy time (``engine_cycles / clk_freq``).
    down_s, up_s : float
        Wire time of the bytes to and from the device.
    link_s : float
        ``down_s + up_s``.
    process_s : float
        Device time reading request bytes (``bytes_down`` cycles: the executor takes at most one byte per cycle).
    exchange_s : float
        Fixed latency per wait for the device times the number of waits.
    host_s : float
    pipelined : bool
        Whether the driver pipelines (``docs/protocol.md`` §2.2): then the device's work overlaps the wire.
    device_s : float
        The link and device part: ``max(down_s, up_s + compute_s + expand_s + process_s)`` pipelined (the down
        wire runs while the executor computes and answers, which it does one after the other), else
        ``compute_s + expand_s + link_s``.
    traffic : Traffic
    engine_cycles, bytes_down, bytes_up, exchanges, waits : int
        ``waits``: round trips the driver waits for (one per GEMM pipelined, one per exchange otherwise).
    expand_s : float
        Convolution mode: executor time of the EXPANDs (``Traffic.expand_cycles / clk_freq``; the engine is idle
        meanwhile).
    expand_cycles : int
    """

    compute_s: float
    down_s: float
    up_s: float
    process_s: float
    exchange_s: float
    host_s: float
    pipelined: bool
    traffic: Traffic
    engine_cycles: int
    bytes_down: int
    bytes_up: int
    exchanges: int
    waits: int
    expand_s: float = 0.0
    expand_cycles: int = 0

    @property
    def link_s(self):
        return self.down_s + self.up_s

    @property
    def device_s(self):
        if self.pipelined:
            return max(self.down_s, self.up_s + self.compute_s + self.expand_s + self.process_s)
        return self.compute_s + self.expand_s + self.link_s

    @property
    def total_s(self):
        return self.device_s + self.exchange_s + self.host_s


@dataclass
class EpochEstimate:
    """Predicted time of one epoch: ``steps`` full batches plus one partial batch of ``remainder`` samples.

    Members
    -------
    compute_s, down_s, up_s, link_s, process_s, device_s, exchange_s, host_s, total_s : float
        Sums over the steps (:class:`StepEstimate`).
    link_share : float
        ``(device_s + exchange_s - compute_s) / total_s`` sequential; pipelined, the share of the critical path
        that is not the engine.
    """

    platform: Platform
    fmt: FixedFormat
    batch: int
    train_size: int
    full: StepEstimate
    partial: StepEstimate
    steps: int
    remainder: int

    def _sum(self, name):
        value = self.steps * getattr(self.full, name)
        return value + (getattr(self.partial, name) if self.partial is not None else 0)

    compute_s = property(lambda self: self._sum("compute_s"))
    down_s = property(lambda self: self._sum("down_s"))
    up_s = property(lambda self: self._sum("up_s"))
    process_s = property(lambda self: self._sum("process_s"))
    expand_s = property(lambda self: self._sum("expand_s"))
    expand_cycles = property(lambda self: self._sum("expand_cycles"))
    device_s = property(lambda self: self._sum("device_s"))
    link_s = property(lambda self: self._sum("link_s"))
    exchange_s = property(lambda self: self._sum("exchange_s"))
    host_s = property(lambda self: self._sum("host_s"))
    total_s = property(lambda self: self._sum("total_s"))
    bytes_down = property(lambda self: self._sum("bytes_down"))
    bytes_up = property(lambda self: self._sum("bytes_up"))
    exchanges = property(lambda self: self._sum("exchanges"))
    waits = property(lambda self: self._sum("waits"))
    engine_cycles = property(lambda self: self._sum("engine_cycles"))

    @property
    def pipelined(self):
        return self.platform.pipelined

    @property
    def link_share(self):
        return (self.device_s + self.exchange_s - self.compute_s) / self.total_s if self.total_s else 0.0

    @property
    def busy_share(self):
        """Engine busy time over the total: ``compute_s / total_s``."""
        return self.compute_s / self.total_s if self.total_s else 0.0


def step_traffic(config, layers, batch, rounding=None, gemms=None, tile_loop=True, input_grad="patches"):
    """Traffic of one training step in steady state (after a previous step, whose operands are stale: the weights
    changed), ``rounding`` and ``input_grad`` as in :func:`training_gemms`. ``gemms``: the step's
    :class:`GemmShape` list when it is not :func:`training_gemms` (an approximate-training method's,
    :func:`fxtrain.host.methods.gemms.method_gemms`); ``layers``, ``rounding`` and ``input_grad`` are then unused.
    ``tile_loop``: as :class:`DriverReplay`."""
    rounding = tuple(sorted((rounding or {}).items()))
    gemms = None if gemms is None else tuple(gemms)
    return _step_traffic(config, tuple(layers), batch, rounding, gemms, bool(tile_loop), input_grad)


@lru_cache(maxsize=64)
def _step_traffic(config, layers, batch, rounding, gemms=None, tile_loop=True, input_grad="patches"):
    replay = DriverReplay(config, tile_loop)
    if gemms is None:
        gemms = training_gemms(list(layers), batch, dict(rounding), input_grad)
    replay.step(gemms, step_id=0)
    return replay.step(gemms, step_id=1)


def estimate_step(platform, layers, batch, host=HostModel(), gemms=None, input_grad="patches"):
    """:class:`StepEstimate` of one training step of ``batch`` samples of a model of ``layers``.

    Pipelined (the device reports a receive buffer, ``docs/protocol.md`` §2.2)::

        T = max(bytes_down * t_down, bytes_up * t_up + (cycles + expand_cycles) / f_clk + bytes_down / f_clk)
            + gemms * t_exchange + T_host(batch)

    the down wire streams while the executor computes, expands (convolution mode) and answers (one after the
    other) and the driver waits for the device once per GEMM; otherwise every request waits for its response and
    nothing overlaps: ``T = (cycles + expand_cycles) / f_clk + bytes_down * t_down + bytes_up * t_up + exchanges *
    t_exchange + T_host``
    (``docs/time-model.md``). ``gemms``: as :func:`step_traffic` (an approximate-training method's step);
    ``input_grad``: as :func:`training_gemms`.
    """
    config = platform.config
    traffic = step_traffic(config, layers, batch, gemms=gemms, tile_loop=platform.tile_loop, input_grad=input_grad)
    cycles = traffic.engine_cycles(config)
    expand = traffic.expand_cycles(config)
    down, up = traffic.bytes(config, platform.rx_buffer)
    exchanges = traffic.exchanges(config, platform.rx_buffer)
    waits = traffic.gemms if platform.pipelined else exchanges
    link = platform.link
    return StepEstimate(cycles / platform.clk_freq, down * link.down_byte_s, up * link.up_byte_s,
                        down / platform.clk_freq, waits * link.exchange_s, host.step_s(batch), platform.pipelined,
                        traffic, cycles, down, up, exchanges, waits, expand / platform.clk_freq, expand)


def estimate_epoch(platform, layers, fmt, batch, train_size, host=HostModel(), input_grad="patches"):
    """:class:`EpochEstimate` of one epoch of ``train_size`` samples in batches of ``batch`` (``input_grad``: as
    :func:`training_gemms`)."""
    for name, value in (("Batch size", batch), ("Training set size", train_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    steps, remainder = divmod(train_size, batch)
    full = estimate_step(platform, layers, batch, host, input_grad=input_grad) if steps else None
    partial = estimate_step(platform, layers, remainder, host, input_grad=input_grad) if remainder else None
    if full is None:
        full, steps = partial, 1
        partial, remainder = None, 0
    return EpochEstimate(platform, FixedFormat.parse(fmt), batch, train_size, full, partial, steps, remainder)
