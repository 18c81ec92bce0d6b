"""LFSR lanes in hardware: a leaping Fibonacci LFSR and a bank of independent lanes (``docs/numerics.md`` §4).

Golden model: :mod:`fxtrain.sim.lfsr`. A lane's ``next_state`` is the leap map ``L`` of its ``state``
(``leap`` bit steps at once, default ``width``), built as one XOR network from
:attr:`fxtrain.sim.lfsr.LeapMap.masks`: bit ``i`` of ``next_state`` is ``parity(state & masks[i])``.

Members
-------
LFSR
    One lane: seed load, advance, ``state`` register and combinational ``next_state``.
LFSRLanes
    ``n`` independent lanes with per-lane advance and one shared seed write port.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sim.lfsr import LANE_WIDTH, LeapMap, check_lfsr

__all__ = ["LFSR", "LFSRLanes"]


def _check_reset_seed(width, leap, reset_seed):
    check_lfsr(width, None, leap)
    if isinstance(reset_seed, bool) or not isinstance(reset_seed, int) or not 0 < reset_seed < (1 << width):
        raise ValueError(f"LFSR reset seed must be a non-zero {width}-bit integer, not {reset_seed!r}")


def _leap_network(state, width, leap):
    """The XOR network computing ``L(state)`` for the leap map of ``leap`` bit steps (one parity per bit)."""
    masks = LeapMap(width, width if leap is None else leap).masks
    return [(state & mask).xor() for mask in masks]


class LFSR(wiring.Component):
    """A leaping Fibonacci LFSR lane (§4.1, §4.2).

    Behaviour at each clock edge::

        if load and seed != 0:  state <= seed
        elif advance:           state <= next_state      # = L(state), leap bit steps
        else:                   state <= state

    ``next_state`` is combinational (latency 0 from ``state``); ``state`` is a register (latency 1 from ``seed``/
    ``advance``). A load of the value 0 is ignored (the state is kept, and ``advance`` in that cycle still acts), so
    a lane can never reach the all-zero lock-up state: from reset, only non-zero values are ever stored.
    Consumers use ``next_state`` in the same cycle they assert ``advance`` (advance-then-use, §4.2): the word they
    use equals the state the lane holds after that edge.

    Parameters
    ----------
    width : int
        Lane width, a key of :data:`fxtrain.sim.lfsr.LFSR_TAPS` (3 to 32). Default 32.
    leap : int, optional
        Bit steps per advance (default ``width``).
    reset_seed : int
        Non-zero state after reset (default 1).

    Raises
    ------
    ValueError
        If ``width``, ``leap`` or ``reset_seed`` is invalid; the message names the value.

    Members
    -------
    seed : In(width)
        Value to load.
    load : In(1)
        Load ``seed`` at the next edge (ignored when ``seed == 0``).
    advance : In(1)
        Take ``next_state`` at the next edge (unless a non-zero load happens).
    state : Out(width)
        The lane register.
    next_state : Out(width)
        ``L(state)``, combinational.
    width, leap, reset_seed : int
        The parameters (``leap`` resolved to ``width`` when not given).
    """

    def __init__(self, width=LANE_WIDTH, *, leap=None, reset_seed=1):
        _check_reset_seed(width, leap, reset_seed)
        self.width = width
        self.leap = width if leap is None else leap
        self.reset_seed = reset_seed
        super().__init__({
            "seed": In(width),
            "load": In(1),
            "advance": In(1),
            "state": Out(width, init=reset_seed),
            "next_state": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        for i, bit in enumerate(_leap_network(self.state, self.width, self.leap)):
            m.d.comb += self.next_state[i].eq(bit)
        with m.If(self.load & self.seed.any()):
            m.d.sync += self.state.eq(self.seed)
        with m.Elif(self.advance):
            m.d.sync += self.state.eq(self.next_state)
        return m


class LFSRLanes(wiring.Component):
    """``n`` independent LFSR lanes (§4) with per-lane advance and one seed write port.

    Lane ``j`` is an :class:`LFSR`; at each edge::

        if seed_load and seed_lane == j and seed != 0:  state[j] <= seed
        elif advance[j]:                                state[j] <= next_state[j]

    Latency: ``next_state`` is combinational from ``state``; ``state`` updates at the edge (1 cycle). Loading 0
    is ignored, so no lane can lock up. Distinct seeds per lane are the host's job
    (:func:`fxtrain.sim.lfsr.lane_seeds`); after reset every lane holds ``reset_seed``.

    Parameters
    ----------
    n : int
        Number of lanes (at least 1).
    width, leap, reset_seed
        As for :class:`LFSR`.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer, or a lane parameter is invalid.

    Members
    -------
    advance : In(n)
        Bit ``j`` advances lane ``j``.
    seed_lane : In(range(n))
        Lane written by a seed load.
    seed : In(width)
        Seed value.
    seed_load : In(1)
        Write ``seed`` into lane ``seed_lane`` at the next edge (ignored when ``seed == 0``).
    state : Out(ArrayLayout(width, n))
        Lane registers.
    next_state : Out(ArrayLayout(width, n))
        ``L(state[j])`` per lane, combinational.
    n, width, leap, reset_seed : int
        The parameters.
    """

    def __init__(self, n, width=LANE_WIDTH, *, leap=None, reset_seed=1):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Number of LFSR lanes must be a positive integer, not {n!r}")
        _check_reset_seed(width, leap, reset_seed)
        self.n = n
        self.width = width
        self.leap = width if leap is None else leap
        self.reset_seed = reset_seed
        super().__init__({
            "advance": In(n),
            "seed_lane": In(range(n)),
            "seed": In(width),
            "seed_load": In(1),
            "state": Out(data.ArrayLayout(width, n)),
            "next_state": Out(data.ArrayLayout(width, n)),
        })

    def elaborate(self, platform):
        m = Module()
        for j in range(self.n):
            lane = LFSR(self.width, leap=self.leap, reset_seed=self.reset_seed)
            m.submodules[f"lane_{j}"] = lane
            m.d.comb += [
                lane.seed.eq(self.seed),
                lane.load.eq(self.seed_load & (self.seed_lane == j)),
                lane.advance.eq(self.advance[j]),
                self.state[j].eq(lane.state),
                self.next_state[j].eq(lane.next_state),
            ]
        return m
