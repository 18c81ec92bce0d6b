"""What GEMMs send to a device, counted without data: the driver's command schedule replayed and summed.

:class:`DriverReplay` runs :class:`fxtrain.sim.planner.CommandPlanner` (the schedule ``Device.gemm`` sends,
with the same residency decisions) and counts its items in a :class:`Traffic`; frame sizes come from
:mod:`fxtrain.sim.wire` and payload sizes from :mod:`fxtrain.sim.payloads`, so a byte counted here is a byte the
driver sends (``tests/test_timemodel.py`` checks the replay against the driver's byte counters).

Members
-------
Traffic
    Commands, operand entries and runs one or more GEMMs send to a device.
DriverReplay
    ``Device.gemm``'s command sequence and residency decisions without data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..sim.engine import run_cycles
from ..sim.gemm import EngineConfig
from ..sim.payloads import (DEFAULT_RX_BUFFER, ROUNDING_ARGS, RUN_ARGS, WRITE_HEADER, entry_bytes, result_bytes,
                            write_frames)
from ..sim.planner import CommandPlanner, ReadResult, Reused, Run, SetRounding, WriteOperand, plan_gemm
from ..sim.wire import Command, request_frame_bytes, response_frame_bytes

__all__ = ["Traffic", "DriverReplay"]


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
    gemms : int
        GEMM calls (a pipelined driver waits for the device once per call).
    """

    set_rounding: int = 0
    writes: Counter = field(default_factory=Counter)
    reused: Counter = field(default_factory=Counter)
    runs: Counter = field(default_factory=Counter)
    read_results: int = 0
    tiles: int = 0
    macs: int = 0
    gemms: int = 0

    def __iadd__(self, other):
        self.set_rounding += other.set_rounding
        self.writes += other.writes
        self.reused += other.reused
        self.runs += other.runs
        self.read_results += other.read_results
        self.tiles += other.tiles
        self.macs += other.macs
        self.gemms += other.gemms
        return self

    def scaled(self, factor):
        """This traffic repeated ``factor`` times."""
        out = Traffic(self.set_rounding * factor, Counter({k: v * factor for k, v in self.writes.items()}),
                      Counter({k: v * factor for k, v in self.reused.items()}),
                      Counter({k: v * factor for k, v in self.runs.items()}), self.read_results * factor,
                      self.tiles * factor, self.macs * factor, self.gemms * factor)
        return out

    def write_frames(self, config, rx_buffer=DEFAULT_RX_BUFFER):
        """``[(command, payload_bytes, count)]`` of the WRITE frames (blocks cut by ``sim.payloads.write_frames``
        to fit a device's ``rx_buffer``, as the driver cuts them)."""
        frames = Counter()
        for (cmd, entries), count in self.writes.items():
            which = "A" if cmd == Command.WRITE_A else "B"
            eb = entry_bytes(config, which)
            for _, part in write_frames(config, which, entries, rx_buffer):
                frames[(cmd, WRITE_HEADER.size + part * eb)] += count
        return [(cmd, payload, count) for (cmd, payload), count in sorted(frames.items())]

    def exchanges(self, config, rx_buffer=DEFAULT_RX_BUFFER):
        """Number of request/response exchanges (frames each way)."""
        return (self.set_rounding + sum(c for _, _, c in self.write_frames(config, rx_buffer))
                + sum(self.runs.values()) + self.read_results)

    def bytes(self, config, rx_buffer=DEFAULT_RX_BUFFER):
        """``(bytes to the device, bytes from the device)`` on the wire for an engine of ``config``."""
        down = self.set_rounding * request_frame_bytes(ROUNDING_ARGS.size)
        down += sum(self.runs.values()) * request_frame_bytes(RUN_ARGS.size)
        down += self.read_results * request_frame_bytes(0)
        writes = 0
        for _, payload, count in self.write_frames(config, rx_buffer):
            down += count * request_frame_bytes(payload)
            writes += count
        acks = self.set_rounding + writes + sum(self.runs.values())
        up = acks * response_frame_bytes(0)
        up += self.read_results * response_frame_bytes(result_bytes(config))
        return down, up

    def engine_cycles(self, config):
        """Cycles the engine is busy (``sim.engine.run_cycles`` summed over the runs)."""
        return sum(count * run_cycles(config, k, drain) for (k, drain), count in self.runs.items())


class DriverReplay:
    """``fxtrain.host.device.Device.gemm`` without data: the same planner, so the same tiling, K chunks and
    residency decisions (contents are assumed to be what the keys say: a ``b_key`` names B's contents).

    Parameters
    ----------
    config : EngineConfig
        Only ``rows``, ``cols``, ``depth`` and ``b_depth`` matter (the traffic in entries does not depend on ``wl``).
    """

    def __init__(self, config):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        self.config = config
        self.planner = CommandPlanner(config)

    def gemm(self, m, k, n, rounding=None, b_key=None):
        """The :class:`Traffic` of one ``M x K x N`` GEMM issued now (advances the residency state)."""
        plan = plan_gemm(self.config, m, k, n)
        traffic = Traffic(macs=m * k * n, tiles=len(plan.tiles), gemms=1)
        for item in self.planner.schedule(plan, rounding, b_key=b_key):
            if isinstance(item, WriteOperand):
                cmd = Command.WRITE_A if item.which == "A" else Command.WRITE_B
                traffic.writes[(cmd, item.chunk.length)] += 1
            elif isinstance(item, Reused):
                traffic.reused[item.which] += item.entries
            elif isinstance(item, Run):
                traffic.runs[(item.k, item.drain)] += 1
            elif isinstance(item, ReadResult):
                traffic.read_results += 1
            elif isinstance(item, SetRounding):
                traffic.set_rounding += 1
        return traffic

    def step(self, gemms, step_id=0):
        """The :class:`Traffic` of a list of :class:`GemmShape`; weights keyed by ``(layer, kind, step_id)``."""
        total = Traffic()
        for g in gemms:
            key = (g.layer, g.kind, step_id) if g.b_weights else None
            total += self.gemm(g.m, g.k, g.n, g.rounding, key)
        return total
