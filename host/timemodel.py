"""Time per training epoch as a function of the number format, the board and the batch size.

The formula is derived term by term in ``docs/time-model.md``; every parameter comes from the sources the RTL
and the boards use, imported, never copied:

* engine geometry, word length and buffer depth: :class:`fxtrain.sim.gemm.EngineConfig` of the board
  (:mod:`fxtrain.boards.targets`), with ``wl`` set to the format's word length (the engine rounds and saturates
  to its synthesised ``wl``, so a format ``<WL, FL>`` runs on a bitstream built with ``wl = WL``);
* cycles of one engine run: :func:`fxtrain.sim.engine.run_cycles` (the RTL matches it exactly);
* the host driver's tiling, K-splitting and operand residency: replayed with the driver's own
  :class:`fxtrain.host.device.ResidentMemory` (:class:`DriverReplay` mirrors the loop of ``Device.gemm``);
* bytes on the wire: frame sizes from :func:`fxtrain.sim.protocol.encode_request` /
  :func:`~fxtrain.sim.protocol.encode_response`, payload sizes from :func:`~fxtrain.sim.protocol.entry_bytes`
  and :func:`~fxtrain.sim.protocol.result_row_bytes` (``ceil(WL / 8)`` bytes per word);
* UART bit time: :func:`fxtrain.rtl.uart.uart_divisor` of the board clock and baud rate, 10 bits per byte (8N1).

Members
-------
GEMM_KINDS : tuple of str
    ``("forward", "input_grad", "weight_grad")``.
MULTIPLIER_WIDTH : dict
    Signed operand width of one hardware multiplier per FPGA family (iCE40 SB_MAC16: 16, ECP5 MULT18X18D: 18).
PACKED_WL : dict
    Largest word length at which one DSP block could compute two products per cycle (a what-if, not in the RTL).
LayerGeometry, GemmShape
    One offloaded layer; one GEMM of a training step.
layer_geometry
    The offloadable layers of a torch model, measured by a forward pass with hooks.
training_gemms
    The GEMMs of one training step (forward ``im2col @ W``, input gradient ``dY @ W``, weight gradient
    ``im2col^T @ dY``).
Traffic
    Commands, operand entries and runs one or more GEMMs send to a device.
DriverReplay
    ``Device.gemm``'s command sequence and residency decisions without data.
LinkTiming
    Seconds per byte in each direction and per exchange.
Platform
    What runs the GEMMs: engine configuration, clock, link; :func:`board_platform` builds one for a board.
StepEstimate, EpochEstimate
    Predicted times with their breakdown.
HostModel
    Host-side seconds per step as a function of the batch size (fitted to measurements).
estimate_step, estimate_epoch
    The model.
lenet_layers
    Layer geometry of ``fxtrain.host.models`` LeNet.
step_traffic
    Steady-state :class:`Traffic` of one training step (cached).
TimedBackend, time_training_steps, StepTiming, measure_host_model
    Host time measured on the exact emulator (time outside ``backend.gemm``, CPU or wall-clock).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

from ..sim.engine import run_cycles
from ..sim.fixedpoint import MAX_WL, FixedFormat
from ..sim.gemm import EngineConfig
from ..sim.protocol import (MAX_LENGTH, Command, encode_request, encode_response, entry_bytes,
                            result_row_bytes)

__all__ = ["GEMM_KINDS", "MULTIPLIER_WIDTH", "PACKED_WL", "LayerGeometry", "GemmShape", "layer_geometry",
           "training_gemms", "Traffic", "DriverReplay", "LinkTiming", "Platform", "board_platform",
           "StepEstimate", "EpochEstimate", "HostModel", "estimate_step", "estimate_epoch", "lenet_layers",
           "request_frame_bytes", "response_frame_bytes", "step_traffic", "DEFAULT_EXCHANGE_S", "TimedBackend",
           "time_training_steps", "measure_host_model", "StepTiming"]

GEMM_KINDS = ("forward", "input_grad", "weight_grad")

#: Signed operand bits of one hardware multiplier: iCE40 SB_MAC16 is 16 x 16, ECP5 MULT18X18D is 18 x 18.
MULTIPLIER_WIDTH = {"ice40": 16, "ecp5": 18}

#: What-if (NOT implemented by the RTL, which does one product per DSP block per cycle): an SB_MAC16 can be
#: configured as two independent 8 x 8 multipliers, a MULT18X18D as two MULT9X9D, so at WL <= 8 (iCE40) or
#: WL <= 9 (ECP5) the same DSP blocks could hold twice as many PEs.
PACKED_WL = {"ice40": 8, "ecp5": 9}

BITS_PER_UART_BYTE = 10     # 8N1: start bit, 8 data bits, stop bit

# ----------------------------------------------------------------------------------------------------------------
# GEMM shapes of a training step


@dataclass(frozen=True)
class LayerGeometry:
    """Shape of one offloaded layer for one sample.

    Parameters
    ----------
    name : str
        Module name in the model (``"conv1"``).
    kind : str
        ``"conv"`` or ``"linear"``.
    in_features : int
        ``C_in * kh * kw`` for a convolution (the im2col row length), ``in_features`` for a linear layer.
    out_features : int
        ``C_out`` or ``out_features``.
    positions : int
        Output positions per sample, ``H_out * W_out`` (1 for a linear layer).
    first : bool
        Whether the layer sees the network input (its input gradient is not needed).

    Members
    -------
    macs_per_sample : int
    """

    name: str
    kind: str
    in_features: int
    out_features: int
    positions: int
    first: bool

    @property
    def macs_per_sample(self):
        return self.in_features * self.out_features * self.positions


@dataclass(frozen=True)
class GemmShape:
    """One GEMM ``C (M x N) = A (M x K) @ B (K x N)`` of a training step.

    ``b_weights`` says whether ``B`` is (an orientation of) the layer's weight matrix, which the layers send with
    a ``b_key`` so a device keeps it resident until the weights change. ``rounding`` is the ``(shift, mode)`` of
    the GEMM when known (``None``: assume it differs from the previous GEMM's, costing one SET_ROUNDING).

    Members
    -------
    macs : int
    """

    layer: str
    kind: str
    m: int
    k: int
    n: int
    b_weights: bool
    rounding: tuple = None

    @property
    def macs(self):
        return self.m * self.k * self.n


def layer_geometry(model, input_shape):
    """The offloadable layers (``Conv2d``/``Linear`` or anything with their attributes) of ``model`` in call order.

    Runs one forward pass of a zero input of ``input_shape`` (one sample, e.g. ``(1, 28, 28)``) with hooks that
    record each layer's output size, so the geometry is the model's own, never re-typed.
    """
    import torch

    records = []
    hooks = []

    def hook(module, output, name):
        if hasattr(module, "kernel_size"):
            kh, kw = module.kernel_size
            in_features = module.in_channels * kh * kw
            out_features = module.out_channels
            positions = int(output.shape[-2] * output.shape[-1])
            kind = "conv"
        else:
            in_features, out_features, positions, kind = module.in_features, module.out_features, 1, "linear"
        records.append(LayerGeometry(name, kind, in_features, out_features, positions, first=not records))

    for name, module in model.named_modules():
        is_conv = all(hasattr(module, a) for a in ("in_channels", "out_channels", "kernel_size"))
        is_linear = all(hasattr(module, a) for a in ("in_features", "out_features"))
        if is_conv or is_linear:
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: hook(m, o, name)))
    try:
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape)))
    finally:
        for h in hooks:
            h.remove()
    if not records:
        raise ValueError(f"Model {type(model).__name__} has no convolution or linear layer to offload")
    return records


def training_gemms(layers, batch, rounding=None):
    """The GEMMs of one training step of ``batch`` samples, forward in layer order, then backward in reverse.

    Per layer with ``P`` output positions per sample, ``F_in`` inputs (``C_in*kh*kw``) and ``F_out`` outputs
    (the table of :mod:`fxtrain.host.layers`): forward ``(B*P x F_in) @ (F_in x F_out)``, input gradient
    ``(B*P x F_out) @ (F_out x F_in)`` (not for the first layer, whose input needs no gradient), weight gradient
    ``(F_in x B*P) @ (B*P x F_out)``; backward issues the input gradient before the weight gradient.

    ``rounding`` maps a GEMM kind to its ``(shift, mode)``; by default each kind is taken to have its own
    (one SET_ROUNDING whenever the kind changes, at most 17 bytes more than needed per GEMM).
    """
    rounding = rounding or {}
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"Batch size must be a positive integer, not {batch!r}")
    forward, backward = [], []
    for layer in layers:
        rows = batch * layer.positions
        forward.append(GemmShape(layer.name, "forward", rows, layer.in_features, layer.out_features, True,
                                 rounding.get("forward", "forward")))
        step = []
        if not layer.first:
            step.append(GemmShape(layer.name, "input_grad", rows, layer.out_features, layer.in_features, True,
                                  rounding.get("input_grad", "input_grad")))
        step.append(GemmShape(layer.name, "weight_grad", layer.in_features, rows, layer.out_features, False,
                              rounding.get("weight_grad", "weight_grad")))
        backward = step + backward
    return forward + backward


def lenet_layers():
    """Geometry of the LeNet of :mod:`fxtrain.host.models` on 28 x 28 MNIST images."""
    try:
        from . import models
    except ImportError as error:
        raise ValueError(f"fxtrain.host.models is not available ({error}); cannot size LeNet") from None
    return layer_geometry(models.LeNet(), (1, 28, 28))


# ----------------------------------------------------------------------------------------------------------------
# Commands and bytes on the wire


@lru_cache(maxsize=None)
def request_frame_bytes(payload):
    """Bytes of a request frame with ``payload`` payload bytes (``sim.protocol.encode_request``)."""
    return len(encode_request(Command.IDENTIFY, 0, bytes(payload)))


@lru_cache(maxsize=None)
def response_frame_bytes(payload):
    """Bytes of a response frame with ``payload`` payload bytes (``sim.protocol.encode_response``)."""
    return len(encode_response(Command.IDENTIFY, 0, 0, bytes(payload)))


#: Payload bytes of the fixed-size requests Device.gemm sends (layouts in sim/protocol.py and docs/protocol.md).
RUN_PAYLOAD = 9            # <HHIB: a_base, b_base, k, flags
SET_ROUNDING_PAYLOAD = 2   # shift, mode
WRITE_HEADER_PAYLOAD = 4   # <HH: address, count


@dataclass
class Traffic:
    """What some GEMMs send to a device, independent of the word length.

    Members
    -------
    set_rounding : int
        SET_ROUNDING exchanges.
    writes : collections.Counter
        ``(Command.WRITE_A or WRITE_B, entries) -> number of blocks of that many entries sent``.
    reused : collections.Counter
        ``"A"``/``"B"`` -> entries found resident (not sent).
    runs : collections.Counter
        ``(k, drain) -> number of RUN exchanges``.
    read_results : int
        READ_RESULT exchanges (one per output tile).
    tiles : int
    macs : int
    """

    set_rounding: int = 0
    writes: Counter = field(default_factory=Counter)
    reused: Counter = field(default_factory=Counter)
    runs: Counter = field(default_factory=Counter)
    read_results: int = 0
    tiles: int = 0
    macs: int = 0

    def __iadd__(self, other):
        self.set_rounding += other.set_rounding
        self.writes += other.writes
        self.reused += other.reused
        self.runs += other.runs
        self.read_results += other.read_results
        self.tiles += other.tiles
        self.macs += other.macs
        return self

    def scaled(self, factor):
        """This traffic repeated ``factor`` times."""
        out = Traffic(self.set_rounding * factor, Counter({k: v * factor for k, v in self.writes.items()}),
                      Counter({k: v * factor for k, v in self.reused.items()}),
                      Counter({k: v * factor for k, v in self.runs.items()}), self.read_results * factor,
                      self.tiles * factor, self.macs * factor)
        return out

    def write_frames(self, config):
        """``[(command, payload_bytes, count)]`` of the WRITE frames (blocks split like ``Device._write_entries``)."""
        frames = Counter()
        for (cmd, entries), count in self.writes.items():
            eb = entry_bytes(config, "A" if cmd == Command.WRITE_A else "B")
            per_frame = (MAX_LENGTH - WRITE_HEADER_PAYLOAD) // eb
            for start in range(0, entries, per_frame):
                part = min(per_frame, entries - start)
                frames[(cmd, WRITE_HEADER_PAYLOAD + part * eb)] += count
        return [(cmd, payload, count) for (cmd, payload), count in sorted(frames.items())]

    def exchanges(self, config):
        """Number of request/response exchanges."""
        return (self.set_rounding + sum(c for _, _, c in self.write_frames(config)) + sum(self.runs.values())
                + self.read_results)

    def bytes(self, config):
        """``(bytes to the device, bytes from the device)`` on the wire for an engine of ``config``."""
        down = self.set_rounding * request_frame_bytes(SET_ROUNDING_PAYLOAD)
        down += sum(self.runs.values()) * request_frame_bytes(RUN_PAYLOAD)
        down += self.read_results * request_frame_bytes(0)
        writes = 0
        for _, payload, count in self.write_frames(config):
            down += count * request_frame_bytes(payload)
            writes += count
        acks = self.set_rounding + writes + sum(self.runs.values())
        up = acks * response_frame_bytes(0)
        up += self.read_results * response_frame_bytes(config.rows * result_row_bytes(config))
        return down, up

    def engine_cycles(self, config):
        """Cycles the engine is busy (``sim.engine.run_cycles`` summed over the runs)."""
        return sum(count * run_cycles(config, k, drain) for (k, drain), count in self.runs.items())


class DriverReplay:
    """``fxtrain.host.device.Device.gemm`` without data: the same tiling, K chunks and residency decisions.

    Mirrors the loop of ``Device.gemm`` (tiles ``tm`` outer, ``tn`` inner, K chunks of ``depth``; A chunks keyed
    by ``(gemm, tm, k0)``, B chunks by the caller's ``b_key`` or by the call) on the driver's own
    :class:`~fxtrain.host.device.ResidentMemory` allocators, so a B block is counted as sent exactly when the
    driver would send it. Contents are assumed to be what the keys say (a ``b_key`` names B's contents).
    ``tests/test_timemodel.py`` checks the replay against the driver's byte counters.

    Parameters
    ----------
    config : EngineConfig
        Only ``rows``, ``cols`` and ``depth`` matter (the traffic in entries does not depend on ``wl``).
    """

    def __init__(self, config):
        from .device import ResidentMemory

        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        self.config = config
        self._a_mem = ResidentMemory(config.depth)
        self._b_mem = ResidentMemory(config.depth)
        self._rounding = None
        self._gemm_id = 0

    def _resident(self, mem, key, length):
        if mem.lookup(key, None) is not None:
            return False
        mem.commit(key, None, mem.reserve(key, length), length)   # a link without errors: every write acknowledged
        return True

    def gemm(self, m, k, n, rounding=None, b_key=None):
        """The :class:`Traffic` of one ``M x K x N`` GEMM issued now (advances the residency state)."""
        for name, value in (("M", m), ("K", k), ("N", n)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GEMM dimension {name} must be a positive integer, not {value!r}")
        cfg = self.config
        if k > cfg.max_k:
            raise ValueError(f"K = {k} exceeds the engine's maximum K {cfg.max_k}")
        traffic = Traffic(macs=m * k * n)
        if rounding is None or rounding != self._rounding:
            traffic.set_rounding += 1
            self._rounding = rounding
        rows, cols, depth = cfg.rows, cfg.cols, cfg.depth
        mt, nt = -(-m // rows), -(-n // cols)
        chunks = [(k0, min(k, k0 + depth)) for k0 in range(0, k, depth)]
        self._gemm_id += 1
        b_scope = ("B", b_key, (k, n)) if b_key is not None else ("B-call", self._gemm_id)
        for tm in range(mt):
            for tn in range(nt):
                for k0, k1 in chunks:
                    length = k1 - k0
                    if self._resident(self._a_mem, ("A", self._gemm_id, tm, k0), length):
                        traffic.writes[(Command.WRITE_A, length)] += 1
                    else:
                        traffic.reused["A"] += length
                    if self._resident(self._b_mem, b_scope + (tn, k0), length):
                        traffic.writes[(Command.WRITE_B, length)] += 1
                    else:
                        traffic.reused["B"] += length
                    traffic.runs[(length, k1 == k)] += 1
                traffic.read_results += 1
        traffic.tiles = mt * nt
        return traffic

    def step(self, gemms, step_id=0):
        """The :class:`Traffic` of a list of :class:`GemmShape`; weights keyed by ``(layer, kind, step_id)``."""
        total = Traffic()
        for g in gemms:
            key = (g.layer, g.kind, step_id) if g.b_weights else None
            total += self.gemm(g.m, g.k, g.n, g.rounding, key)
        return total


# ----------------------------------------------------------------------------------------------------------------
# Platform and link timing


@dataclass(frozen=True)
class LinkTiming:
    """Seconds per byte in each direction and fixed seconds per request/response exchange.

    Parameters
    ----------
    down_byte_s : float
        Host to device, per byte (``10 / baud`` for a UART at ``baud``).
    up_byte_s : float
        Device to host, per byte (``10 * divisor / clk_freq``: the device's UART transmitter).
    exchange_s : float
        Fixed latency of one exchange beyond its bytes: USB scheduling, the USB-UART bridge's latency timer and
        the host OS (an assumption for boards, not measured here: no board is attached to this machine).
    """

    down_byte_s: float
    up_byte_s: float
    exchange_s: float = 0.0


@dataclass(frozen=True)
class Platform:
    """What runs the GEMMs.

    Parameters
    ----------
    name : str
    family : str
        ``"ice40"`` or ``"ecp5"``.
    config : EngineConfig
    clk_freq : int
        Engine clock in Hz.
    link : LinkTiming
    packed : bool
        What-if (not in the RTL): two products per DSP block, i.e. ``rows x 2*cols`` PEs on the same blocks.
    """

    name: str
    family: str
    config: EngineConfig
    clk_freq: int
    link: LinkTiming
    packed: bool = False


#: Default fixed latency per exchange on a board: a full-speed USB-UART bridge answers within about one 1 ms USB
#: frame when its latency timer is set to 1 ms (FTDI default: 16 ms). An assumption, overridable on the CLI.
DEFAULT_EXCHANGE_S = 1e-3


def board_platform(name, fmt, *, exchange_s=DEFAULT_EXCHANGE_S, packed=False):
    """The :class:`Platform` of board ``name`` (``fxtrain.boards.targets``) running format ``fmt``.

    The engine configuration is the board's with ``wl`` set to the format's word length. Raises ``ValueError``
    naming the value for an unknown board, a malformed format, a word length above ``MAX_WL`` or above the
    board's multiplier width, or ``packed`` at a word length the DSP blocks cannot split.
    """
    from ..boards.targets import get_target
    from ..rtl.uart import uart_divisor

    fmt = FixedFormat.parse(fmt)
    target = get_target(name)
    width = min(MULTIPLIER_WIDTH[target.family], MAX_WL)
    if fmt.wl > width:
        raise ValueError(f"Format {fmt} has WL {fmt.wl}, above the {width}-bit multipliers of board {name}")
    config = replace(target.config, wl=fmt.wl)
    if packed:
        if fmt.wl > PACKED_WL[target.family]:
            raise ValueError(f"Format {fmt}: two products per DSP block need WL <= {PACKED_WL[target.family]} "
                             f"on {target.family} (board {name}), not {fmt.wl}")
        config = replace(config, cols=2 * config.cols)
    divisor = uart_divisor(target.clk_freq, target.baud)
    link = LinkTiming(BITS_PER_UART_BYTE / target.baud, BITS_PER_UART_BYTE * divisor / target.clk_freq,
                      float(exchange_s))
    return Platform(name, target.family, config, target.clk_freq, link, bool(packed))


# ----------------------------------------------------------------------------------------------------------------
# The model


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
    link_s : float
        Wire time of all bytes (``bytes_down * down_byte_s + bytes_up * up_byte_s``).
    exchange_s : float
        Fixed per-exchange latency times the number of exchanges.
    host_s : float
    traffic : Traffic
    engine_cycles, bytes_down, bytes_up, exchanges : int
    """

    compute_s: float
    link_s: float
    exchange_s: float
    host_s: float
    traffic: Traffic
    engine_cycles: int
    bytes_down: int
    bytes_up: int
    exchanges: int

    @property
    def total_s(self):
        return self.compute_s + self.link_s + self.exchange_s + self.host_s


@dataclass
class EpochEstimate:
    """Predicted time of one epoch: ``steps`` full batches plus one partial batch of ``remainder`` samples.

    Members
    -------
    compute_s, link_s, exchange_s, host_s, total_s : float
    link_share : float
        ``(link_s + exchange_s) / total_s``.
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
    link_s = property(lambda self: self._sum("link_s"))
    exchange_s = property(lambda self: self._sum("exchange_s"))
    host_s = property(lambda self: self._sum("host_s"))
    total_s = property(lambda self: self._sum("total_s"))
    bytes_down = property(lambda self: self._sum("bytes_down"))
    bytes_up = property(lambda self: self._sum("bytes_up"))
    exchanges = property(lambda self: self._sum("exchanges"))
    engine_cycles = property(lambda self: self._sum("engine_cycles"))

    @property
    def link_share(self):
        return (self.link_s + self.exchange_s) / self.total_s if self.total_s else 0.0


def step_traffic(config, layers, batch, rounding=None):
    """Traffic of one training step in steady state (after a previous step, whose operands are stale: the weights
    changed), ``rounding`` as in :func:`training_gemms`."""
    rounding = tuple(sorted((rounding or {}).items()))
    return _step_traffic(config.rows, config.cols, config.depth, tuple(layers), batch, rounding)


@lru_cache(maxsize=64)
def _step_traffic(rows, cols, depth, layers, batch, rounding):
    replay = DriverReplay(EngineConfig(rows=rows, cols=cols, depth=depth))
    gemms = training_gemms(list(layers), batch, dict(rounding))
    replay.step(gemms, step_id=0)
    return replay.step(gemms, step_id=1)


def estimate_step(platform, layers, batch, host=HostModel()):
    """:class:`StepEstimate` of one training step of ``batch`` samples of a model of ``layers``.

    ``T = cycles / f_clk + bytes_down * t_down + bytes_up * t_up + exchanges * t_exchange + T_host(batch)``: the
    driver is strictly sequential (each request waits for its response; RUN answers when the engine is idle), so
    nothing overlaps (``docs/time-model.md``).
    """
    config = platform.config
    traffic = step_traffic(config, layers, batch)
    cycles = traffic.engine_cycles(config)
    down, up = traffic.bytes(config)
    exchanges = traffic.exchanges(config)
    link = platform.link
    return StepEstimate(cycles / platform.clk_freq, down * link.down_byte_s + up * link.up_byte_s,
                        exchanges * link.exchange_s, host.step_s(batch), traffic, cycles, down, up, exchanges)


def estimate_epoch(platform, layers, fmt, batch, train_size, host=HostModel()):
    """:class:`EpochEstimate` of one epoch of ``train_size`` samples in batches of ``batch``."""
    for name, value in (("Batch size", batch), ("Training set size", train_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    steps, remainder = divmod(train_size, batch)
    full = estimate_step(platform, layers, batch, host) if steps else None
    partial = estimate_step(platform, layers, remainder, host) if remainder else None
    if full is None:
        full, steps = partial, 1
        partial, remainder = None, 0
    return EpochEstimate(platform, FixedFormat.parse(fmt), batch, train_size, full, partial, steps, remainder)


# ----------------------------------------------------------------------------------------------------------------
# Host time, measured


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

    def gemm(self, a, b, shift, mode, *, b_key=None):
        import time

        start, cpu = time.perf_counter(), time.process_time()
        result = self.inner.gemm(a, b, shift, mode, b_key=b_key)
        self.gemm_s += time.perf_counter() - start
        self.gemm_cpu_s += time.process_time() - cpu
        self.calls.append((a.shape[0], a.shape[1], b.shape[1], shift, str(mode), b_key))
        return result


def time_training_steps(backend, batch, steps, *, seed=0, warmup=1, threads=None):
    """Wall-clock of ``steps`` LeNet training steps of ``batch`` random 28 x 28 images on ``backend``.

    The model is ``fxtrain.host.models`` LeNet converted by ``fxtrain.host.convert.convert`` (default formats),
    trained by SGD on cross-entropy; data are already in memory. ``backend`` may be a :class:`TimedBackend`
    (to read its ``calls`` afterwards). ``threads`` sets torch's intra-op threads for the measurement (restored
    afterwards; on a shared machine, spinning OpenMP threads inflate CPU time, so host measurements use 1).
    Returns one :class:`StepTiming` per step after the warm-up steps.
    """
    import time

    import torch

    from .convert import convert
    from .models import build_model

    timed = backend if isinstance(backend, TimedBackend) else TimedBackend(backend)
    model = convert(build_model("lenet", seed), timed)
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

    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', not {clock!r}")
    points = []
    for batch in batches:
        timings = time_training_steps(ExactEmulator(config or EngineConfig()), batch, steps, threads=1)
        points.append((batch, statistics.median(getattr(t, f"host_{clock}_s") for t in timings)))
    return HostModel.fit(points)
