"""Simulator-independent stimulus and cycle-by-cycle checks of the LFSR, rounder and PE blocks.

One check routine per block plays a seeded per-cycle program on the design through a small port-access object
and compares **every output in every cycle** with the golden models (:mod:`fxtrain.sim.lfsr`,
:func:`fxtrain.sim.rounding.round_shift`, :class:`fxtrain.sim.pe_model.PECycleModel`). The same routines run
under the Amaranth simulator (:class:`AmaranthPorts`, the fast unit tests) and under cocotb on Verilator/Icarus
(:class:`CocotbPorts`, the benches ``lfsr_bench``, ``rounder_bench``, ``pe_bench``).

Timing convention of the port objects: ``set`` drives inputs for the coming rising edge, ``await tick()`` lets
that edge happen and returns mid-cycle, where ``get`` reads the registered outputs it produced. A value
presented before edge ``t`` to a block of latency ``L`` (registers) is therefore read after tick ``t + L - 1``;
checking at exactly that tick verifies the latency.

Several benches can share one Verilog build: their designs become signature members of one top, the runner gets
their modules as one comma-separated ``test_module``, and each bench reads its own parameter section
(:func:`bench_sections`, a list: one entry per instance of its design) with the member name as ``prefix``.

Members
-------
bench_sections, start_bench
    A bench's own parameter sets; clock, reset and idle inputs.
AmaranthPorts, CocotbPorts
    Port access for ``amaranth.sim`` testbenches and for cocotb.
lfsr_program, check_lfsr_lanes
    Stimulus and check of :class:`fxtrain.rtl.lfsr.LFSRLanes`.
rounder_program, check_rounder
    Stimulus and check of the rounder harness (``rounder_bench.RounderWithLane``).
pe_program, check_pe
    Stimulus and check of the PE harness (``pe_bench.PEWithRounder``).
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np

from ..lfsr import LeapMap, lane_seeds
from ..pe import pe_accumulate
from ..pe_model import PECycleModel
from ..rounding import round_shift

__all__ = ["bench_sections", "start_bench", "AmaranthPorts", "CocotbPorts", "lfsr_program", "check_lfsr_lanes",
           "rounder_program", "statistics_program", "check_rounder", "rounder_coverage", "pe_program", "check_pe"]


def bench_sections(name):
    """This bench's parameter sets: ``bench_params()[name]`` (a list of dicts, one per design instance) when the
    run combines several benches or parameter sets, else ``[bench_params()]``."""
    from ..runner import bench_params

    params = bench_params()
    return params[name] if name in params else [params]


async def start_bench(dut, ports):
    """Zero the inputs of every :class:`CocotbPorts` in ``ports``, start the clock, pulse reset, and return at
    the first falling edge after reset (all registers at their reset values)."""
    from cocotb.triggers import FallingEdge

    from .drivers import start_clock_and_reset

    for port in ports:
        port.zero_inputs()
    await start_clock_and_reset(dut)
    await FallingEdge(dut.clk)


def _port_shapes(component):
    """``{name: (width, signed, is_input)}`` of a component's signature members (arrays as one flat vector)."""
    from amaranth.hdl import Shape
    from amaranth.lib import data
    from amaranth.lib.wiring import In

    ports = {}
    for name, member in component.signature.members.items():
        shape = member.shape
        if isinstance(shape, data.Layout):
            width, signed = shape.size, False
        else:
            shape = Shape.cast(shape)
            width, signed = shape.width, shape.signed
        ports[name] = (width, signed, member.flow == In)
    return ports


class AmaranthPorts:
    """Port access inside an ``amaranth.sim`` testbench (``ctx`` from ``add_testbench``)."""

    def __init__(self, ctx, component):
        from amaranth.hdl import Value

        self._ctx = ctx
        self._values = {name: Value.cast(getattr(component, name)) for name in component.signature.members}

    def set(self, name, value):
        self._ctx.set(self._values[name], value)

    def get(self, name):
        return self._ctx.get(self._values[name])

    async def tick(self):
        await self._ctx.tick()


class CocotbPorts:
    """Port access inside a cocotb test (:func:`start_bench` runs the clock and reset).

    ``component`` is the Amaranth design whose ports are accessed (for their widths, signedness and
    direction); when it is embedded in a larger top as signature member ``prefix`` (e.g. ``"lfsr"``), its
    Verilog ports are ``<prefix>__<name>``.
    """

    def __init__(self, dut, component, prefix=""):
        self._dut = dut
        self._ports = _port_shapes(component)
        self._handles = {name: getattr(dut, f"{prefix}__{name}" if prefix else name) for name in self._ports}

    def zero_inputs(self):
        for name, handle in self._handles.items():
            if self._ports[name][2]:
                handle.value = 0

    def set(self, name, value):
        width = self._ports[name][0]
        self._handles[name].value = int(value) & ((1 << width) - 1)

    def get(self, name):
        width, signed, _ = self._ports[name]
        value = self._handles[name].value
        bits = value.to_unsigned() if width > 1 else int(value)     # 1-bit ports read as cocotb.types.Logic
        return bits - (1 << width) if signed and bits >> (width - 1) else bits

    async def tick(self):
        from cocotb.triggers import FallingEdge

        await FallingEdge(self._dut.clk)


def _split(bits, width, n):
    return [(bits >> (width * j)) & ((1 << width) - 1) for j in range(n)]


# ---------------------------------------------------------------------------------------------------------- LFSR

def lfsr_program(n, width, seed, cycles, words):
    """Per-cycle inputs of :class:`LFSRLanes`: a random phase, then lane 0 advancing ``words`` times in a row.

    The random phase loads the ``lane_seeds(seed, n)`` seeds, then mixes random per-lane advances with seed
    loads into random lanes, one in four of them of the value 0 (which the lanes must ignore). The capture phase
    reloads lane 0 with its seed and advances it every cycle (the words an always-busy rounder would get).
    Each entry is ``(advance_mask, seed_load, seed_lane, seed)``.
    """
    rng = random.Random(seed)
    seeds = lane_seeds(seed, n, width)
    program = [(0, 1, j, s) for j, s in enumerate(seeds)]
    for _ in range(cycles):
        load = rng.random() < 0.1
        value = 0 if rng.random() < 0.25 else rng.randrange(1, 1 << width)
        junk = rng.randrange(1 << width)
        program.append((rng.randrange(1 << n), int(load), rng.randrange(n), value if load else junk))
    program.append((0, 1, 0, seeds[0]))
    program += [(1, 0, 0, 0)] * words
    return program


async def check_lfsr_lanes(ports, lanes, program, reset_seed):
    """Play ``program`` on an :class:`LFSRLanes`, comparing ``state`` and ``next_state`` of every lane each cycle.

    Returns the ``next_state`` words lane 0 presented in the cycles it advanced without a load (the words
    consumers use, §4.2), in order.
    """
    n, width = lanes.n, lanes.width
    leap = LeapMap(width, lanes.leap)
    state = [reset_seed] * n
    used = []
    for cycle, (advance, load, lane, seed) in enumerate(program + [(0, 0, 0, 0)]):
        got_state = _split(ports.get("state"), width, n)
        got_next = _split(ports.get("next_state"), width, n)
        want_next = [leap(s) for s in state]
        assert got_state == state, f"cycle {cycle}: state {got_state} != model {state}"
        assert got_next == want_next, f"cycle {cycle}: next_state {got_next} != model {want_next}"
        ports.set("advance", advance)
        ports.set("seed_load", load)
        ports.set("seed_lane", lane)
        ports.set("seed", seed)
        if advance & 1 and not (load and lane == 0 and seed):
            used.append(want_next[0])
        for j in range(n):
            if load and lane == j and seed:
                state[j] = seed
            elif advance >> j & 1:
                state[j] = want_next[j]
        await ports.tick()
    return used


# ------------------------------------------------------------------------------------------------------- rounder

_ROUNDER_IDLE = {"i_valid": 0, "acc": 0, "rand_in": 0, "use_lane": 0, "shift": 0, "mode": 0, "load": 0, "seed": 0}


def rounder_program(wl, acc_width, shift_max, seed, count):
    """Per-cycle rounder inputs (dicts): adversarial cases first, then ``count`` random ones, with idle gaps.

    Adversarial: both modes at ``s = 0`` and ``s = shift_max`` and every shift in between, ``acc`` at the
    extremes of ``acc_width`` (and ±1, 0), at the saturation thresholds ``(2**(wl-1) - 1) * 2**s`` and
    ``-2**(wl-1) * 2**s`` plus and minus a few units and plus/minus the largest offsets, rand 0 and all ones,
    exact ties for nearest rounding. Random: ``acc`` of random magnitude (uniform bit length), random rand,
    shift and mode. One cycle in eight is idle (``i_valid = 0`` with junk data), so ``o_valid`` is checked too.
    """
    rng = random.Random(seed)
    lo, hi = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    rand_max = (1 << 32) - 1
    cases = []
    for s in range(shift_max + 1):
        step = 1 << s
        for acc in (lo, lo + 1, hi, hi - 1, 0, 1, -1,
                    ((1 << (wl - 1)) - 1) * step, (1 << (wl - 1)) * step, (1 << (wl - 1)) * step - 1,
                    -(1 << (wl - 1)) * step, -(1 << (wl - 1)) * step - 1, -(1 << (wl - 1)) * step + 1,
                    ((1 << (wl - 1)) - 1) * step + step // 2, -(1 << (wl - 1)) * step - step // 2,
                    step // 2, -step // 2, step // 2 - 1, 3 * step // 2, -3 * step // 2):
            acc = min(max(acc, lo), hi)
            for mode in (0, 1):
                for rand in (0, rand_max, rng.randrange(rand_max + 1)):
                    cases.append({"acc": acc, "rand_in": rand, "shift": s, "mode": mode})
    for _ in range(count):
        bits = rng.randrange(acc_width)
        acc = rng.randrange(-(1 << bits), 1 << bits) if bits else rng.randrange(-1, 1)
        cases.append({"acc": min(max(acc, lo), hi), "rand_in": rng.randrange(rand_max + 1),
                      "shift": rng.randrange(shift_max + 1), "mode": rng.randrange(2)})
    program = []
    for case in cases:
        while rng.random() < 0.125:
            program.append(dict(_ROUNDER_IDLE, acc=rng.randrange(lo, hi + 1), rand_in=rng.randrange(rand_max + 1),
                                shift=rng.randrange(shift_max + 1), mode=rng.randrange(2)))
        program.append(dict(_ROUNDER_IDLE, i_valid=1, **case))
    return program


def statistics_program(acc, shift, count, lane_seed):
    """Rounder inputs rounding the constant ``acc`` ``count`` times in each mode with words from the lane.

    The lane is loaded with ``lane_seed`` before each mode's run, so both modes see the same lane words
    (advance-then-use: the first rounding uses ``L(lane_seed)``).
    """
    program = []
    for mode in (1, 0):
        program.append(dict(_ROUNDER_IDLE, load=1, seed=lane_seed))
        program += [dict(_ROUNDER_IDLE, i_valid=1, acc=acc, use_lane=1, shift=shift, mode=mode)] * count
    return program


async def check_rounder(ports, harness, program):
    """Play ``program`` on a ``RounderWithLane`` harness, checking ``o_valid``, ``out``, ``sat`` every cycle.

    Expected values come from :func:`round_shift` with the rand word of the lane model (advance-then-use) or the
    ``rand_in`` port; they are compared exactly ``harness.latency`` cycles after the input was presented.
    Returns the list of ``(mode, out, sat, shift)`` of the valid outputs, in order.
    """
    latency = harness.latency
    leap = LeapMap(harness.lane_width, harness.lane_width)
    lane = harness.reset_seed
    pending = deque([None] * (latency - 1))
    results = []
    for cycle, inputs in enumerate(program + [_ROUNDER_IDLE] * latency):
        for name, value in inputs.items():
            ports.set(name, value)
        rand = leap(lane) if inputs["use_lane"] else inputs["rand_in"]
        if inputs["load"] and inputs["seed"]:
            lane = inputs["seed"]
        elif inputs["i_valid"] and inputs["use_lane"]:
            lane = leap(lane)
        out, sat = round_shift(inputs["acc"], inputs["shift"], inputs["mode"], rand, harness.wl)
        pending.append((inputs, rand, int(out), bool(sat)))
        await ports.tick()
        expect = pending.popleft()
        got_valid = ports.get("o_valid")
        if expect is None:
            assert got_valid == 0, f"cycle {cycle}: o_valid high before any input reached the output"
            continue
        inputs, rand, out, sat = expect
        assert got_valid == inputs["i_valid"], f"cycle {cycle}: o_valid {got_valid} for input {inputs}"
        got = (ports.get("out"), bool(ports.get("sat")))
        assert got == (out, sat), (f"cycle {cycle}: acc={inputs['acc']} shift={inputs['shift']} "
                                   f"mode={inputs['mode']} rand={rand:#x}: (out, sat) {got} != model {(out, sat)}")
        if inputs["i_valid"]:
            results.append((inputs["mode"], out, sat, inputs["shift"]))
    return results


def rounder_coverage(results):
    """Coverage of :func:`check_rounder` results: saturations up/down and the shifts seen per mode."""
    shifts = {mode: sorted({r[3] for r in results if r[0] == mode}) for mode in (0, 1)}
    return {"sat_high": sum(1 for r in results if r[2] and r[1] > 0),
            "sat_low": sum(1 for r in results if r[2] and r[1] < 0), "shifts": shifts}


# ------------------------------------------------------------------------------------------------------------ PE

_PE_IDLE = {"a_in": 0, "b_in": 0, "in_valid": 0, "in_clear": 0, "shift_in": 0, "shift_en": 0,
            "r_valid": 0, "r_rand": 0, "r_shift": 0, "r_mode": 0}


def pe_program(wl, acc_width, max_k, shift_max, seed, runs):
    """Per-cycle PE-harness inputs: dot-product runs, each read out through the rounder when it is complete.

    Run kinds: K = 1 and K = ``max_k`` with the most negative operands on both sides (the largest sum,
    ``max_k * 2**(2*wl-2)``), K = ``max_k`` of ``max * min`` (the most negative sum), random K (1, ``max_k`` or
    in between) with random or extreme operands. Invalid cycles (junk operands, ``in_valid = 0``) are sprinkled
    inside runs, drain shifts with extreme ``shift_in`` come between some runs, and some runs continue without
    ``in_clear``. Every run is read through the rounder (random shift, mode and rand, so saturation at both ends
    is reached) in cycle ``last + 2``, where ``last`` is the cycle of its last pair: the first cycle its final
    ``acc`` is visible (latency 2). Half of the time the next run starts at ``last + 1``, so that cycle is also
    the last one the value is visible, which pins the latency from both sides.

    Returns ``(program, sums)``: ``sums[cycle]`` is the exact dot product (:func:`pe_accumulate`) of a run
    started with ``in_clear`` that ``acc`` must hold in that cycle.
    """
    rng = random.Random(seed)
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    acc_lo, acc_hi = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    directed = [("neg", 1), ("neg", max_k), ("minmax", max_k), ("random", 1), ("extreme", max_k)]
    program, sums, readouts = [], {}, []
    overlap = False
    for run in range(runs):
        if run < len(directed):
            kind, k = directed[run]
        else:
            kind, k = rng.choice(("random", "extreme")), rng.choice((1, max_k, rng.randint(1, max_k)))
        if kind == "neg":
            a, b = [lo] * k, [lo] * k
        elif kind == "minmax":
            a, b = [hi] * k, [lo] * k
        elif kind == "extreme":
            a = [rng.choice((lo, hi, 0, 1, -1)) for _ in range(k)]
            b = [rng.choice((lo, hi, 0, 1, -1)) for _ in range(k)]
        else:
            a = [rng.randint(lo, hi) for _ in range(k)]
            b = [rng.randint(lo, hi) for _ in range(k)]
        clear = run < len(directed) or rng.random() < 0.8
        if not overlap and rng.random() < 0.25:
            for _ in range(rng.randint(1, 2)):
                value = rng.choice((acc_lo, acc_hi, rng.randint(acc_lo, acc_hi)))
                program.append(dict(_PE_IDLE, shift_en=1, shift_in=value))
        for i in range(k):
            while rng.random() < 0.15:
                program.append(dict(_PE_IDLE, a_in=rng.randint(lo, hi), b_in=rng.randint(lo, hi)))
            program.append(dict(_PE_IDLE, a_in=a[i], b_in=b[i], in_valid=1, in_clear=int(clear and i == 0)))
        readout = len(program) + 1
        readouts.append(readout)
        if clear:
            sums[readout] = pe_accumulate(np.array(a), np.array(b), wl, max_k)
        overlap = rng.random() < 0.5
        if not overlap:
            program += [dict(_PE_IDLE) for _ in range(2)]
    program += [dict(_PE_IDLE) for _ in range(4)]
    for cycle in readouts:
        program[cycle].update(r_valid=1, r_rand=rng.randrange(1 << 32), r_shift=rng.randint(0, shift_max),
                              r_mode=rng.randrange(2))
    return program, sums


async def check_pe(ports, harness, program, sums):
    """Play ``program`` on a ``PEWithRounder`` harness, comparing every PE output each cycle with
    :class:`PECycleModel`, ``acc`` with the exact dot products ``sums`` at their readout cycles, and the rounder
    outputs with :func:`round_shift` of the model's ``acc`` ``harness.rounder_latency`` cycles later.

    Returns coverage counts: ``readouts`` (rounder readouts checked), ``sat_high``/``sat_low`` (readouts
    that saturated up/down), ``sums`` (exact dot products checked) and ``extreme_sum`` (whether ``acc`` held
    ``max_k * 2**(2*wl-2)``, the largest possible sum).
    """
    model = PECycleModel(harness.wl, harness.acc_width)
    pending = deque([None] * harness.rounder_latency)
    names = ("acc", "a_out", "b_out", "out_valid", "out_clear")
    coverage = {"readouts": 0, "sat_high": 0, "sat_low": 0, "sums": 0, "extreme_sum": False}
    extreme = harness.max_k << (2 * harness.wl - 2)
    for cycle, inputs in enumerate(program):
        want = model.outputs()
        got = {name: ports.get(name) for name in names}
        assert got == want, f"cycle {cycle}: PE outputs {got} != model {want}"
        if cycle in sums:
            assert got["acc"] == sums[cycle], f"cycle {cycle}: acc {got['acc']} != exact dot product {sums[cycle]}"
            coverage["sums"] += 1
            coverage["extreme_sum"] |= got["acc"] == extreme
        expect = pending.popleft()
        if expect is not None:
            assert ports.get("r_out_valid") == expect[0], f"cycle {cycle}: rounder o_valid"
            if expect[0]:
                got_r = (ports.get("r_out"), bool(ports.get("r_sat")))
                assert got_r == expect[1:], f"cycle {cycle}: rounder (out, sat) {got_r} != model {expect[1:]}"
                coverage["readouts"] += 1
                if got_r[1]:
                    coverage["sat_high" if got_r[0] > 0 else "sat_low"] += 1
        for name, value in inputs.items():
            ports.set(name, value)
        out, sat = round_shift(want["acc"], inputs["r_shift"], inputs["r_mode"], inputs["r_rand"], harness.wl)
        pending.append((inputs["r_valid"], int(out), bool(sat)))
        model.tick(inputs["a_in"], inputs["b_in"], inputs["in_valid"], inputs["in_clear"], inputs["shift_in"],
                   inputs["shift_en"])
        await ports.tick()
    return coverage
