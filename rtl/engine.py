"""The GEMM engine: operand memories, systolic array, per-column LFSR lanes and rounders, result banks, counters.

``GemmEngine(config)`` computes tiles of ``round(A @ B)`` exactly as :class:`fxtrain.sim.engine.EngineModel`
(and therefore :func:`fxtrain.sim.gemm.tiled_gemm`, ``docs/numerics.md`` §3-§6) and takes exactly
:func:`fxtrain.sim.engine.run_cycles` cycles per run. The port list, the run semantics, the counter definitions
and the timing contract are written once, in the docstring of :mod:`fxtrain.sim.engine`; ``docs/engine.md`` has
the dataflow picture and the resource estimate.

Dataflow::

    a_write --> A memory (depth x rows*wl) --[R]--+               lanes[j] --> next_state (rand)
                                                  v                               |
    b_write --> B memory (b_depth x cols*wl) -[R]-> SystolicArray --acc_out[j]--> rounder[j] --> result banks
                                                  ^  (rows x cols PEs,         (per column)   (2 x rows entries)
    run ------> controller ---- addresses --------+   output stationary)                         |
                  |  valid/clear (+[R]), shift_en                                               v
                  +--> counters, busy, error                    [R]: operand registers     result stream

Latency (cycle ``t0`` = the run command's transfer): the run reads operand entry ``base + i`` in cycle
``t0 + i`` (in ``t0`` from the command payload itself, so accumulating runs follow each other with no bubble);
the read data passes ``OPERAND_LATENCY = 1`` register (so every multiplier input is a flip-flop output, not a
block RAM read port) and reaches the array ``1 + OPERAND_LATENCY`` cycles after the read; the accumulators are
final ``rows + cols`` cycles after the last pair (:attr:`SystolicArray.settle`); a draining run then spends
``rows`` cycles shifting the accumulators of each column through its rounder, rows in increasing order,
advancing the column's lane before each rounding and feeding its ``next_state`` to the rounder
(advance-then-use, §4.2; in both modes); the rounded rows land in the result bank ``ROUNDER_LATENCY`` cycles
later, after which the engine is idle. Total: ``run_cycles(k, 1) = k + 2*rows + cols + 3``. The controller's
``DRAIN`` state raises the array's ``shift_en`` :attr:`SystolicArray.shift_latency` (2) cycles before the
shifts act (the array copies it into one register per row and per PE, so no net drives all PEs), and delays
the rounders' and lanes' valid by as many registers; this shifts the states, not the total: ``FLUSH`` lasts
``rows + cols + OPERAND_LATENCY - shift_latency`` cycles and ``TAIL`` ``shift_latency + ROUNDER_LATENCY``.

B memory: an :class:`~.operand_memory.OperandMemory` of ``b_depth`` entries (block RAM, or iCE40 SPRAM chosen
by the platform); ``b_write`` is not ready in the cycles a run reads it (the run's accept cycle and ``COMPUTE``),
so a single-ported SPRAM never sees a write and a read in one cycle. With ``config.expander`` the idle engine
lends the same read port to the EXPAND walker (``b_read_en``/``b_read_addr``/``b_read_data``; ``b_write`` is not
ready while ``b_read_en`` is high). A memory: block RAM, always writable.

Partial-sum memory (``config.psum_slots > 0``; nothing of it is built otherwise): one block RAM of
``psum_slots * rows`` entries of ``cols * acc_width`` bits, slot ``s`` row ``r`` at entry ``s * rows + r``, moved
through the same drain chains (:meth:`GemmEngine._psum_memory`). A LOAD run (cycle ``t0`` = accept) waits
``max(0, cols - 2)`` cycles in ``LOAD`` for the products of a run accepted just before to be added, then
asks for ``rows`` shifts while reading slot rows ``0 .. rows-1`` (registered into the bottom row's ``shift_in``:
row 0, shifted in first, ends at the top), and starts ``COMPUTE`` the cycle after (``load_cycles = rows +
max(0, cols - 2) + 1``). A SAVE run replaces ``DRAIN``/``TAIL`` by ``SAVE``: ``rows`` shifts after the same
``FLUSH``, ``acc_out`` written raw to slot rows ``0 .. rows-1`` ``shift_latency`` cycles after each request, zeros
shifted in; no rounder, lane or result bank (``save_cycles = OPERAND_LATENCY + 2*rows + cols - 2``). The
constants live in :mod:`fxtrain.sim.engine` (the engine checks them at elaboration). A LOAD/SAVE run breaking
:func:`fxtrain.sim.payloads.run_flags_ok` is rejected like an out-of-range run.

Exact arithmetic: PE ``(r, j)`` accumulates ``sum_i A_mem[a_base+i][r] * B_mem[b_base+i][j]`` exactly in
``acc_width`` bits; rounder ``j`` computes ``sat_WL((acc + offset) >> shift)`` with ``offset = rand mod 2**shift``
(stochastic) or ``2**(shift-1) - 1`` (nearest) (§3).

Members
-------
GemmEngine
    The engine component.
ARRAY_NAME : str
    Submodule name of the systolic array (``boards/build.py`` selects its PEs and fan-out registers by it).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.engine import (COUNTER_NAMES, COUNTER_WIDTH, OPERAND_LATENCY, ROUNDER_LATENCY, RESET_LANE_STATE, addr_bits,
                          b_addr_bits, engine_layouts, load_cycles, save_cycles)
from ..sim.gemm import EngineConfig
from ..sim.rounding import SHIFT_MAX
from .array import SystolicArray
from .lfsr import LFSRLanes
from .operand_memory import OperandMemory, memory_kind
from .platform_family import platform_family
from .rounder import StochasticRounder

__all__ = ["GemmEngine", "ARRAY_NAME"]

#: Submodule name of the :class:`~fxtrain.rtl.array.SystolicArray` inside the engine.
ARRAY_NAME = "array"


class GemmEngine(wiring.Component):
    """Tile GEMM engine (module docstring; ports and semantics in :mod:`fxtrain.sim.engine`).

    Parameters
    ----------
    config : EngineConfig
    multiplier : str
        The PEs' multiplier kind (:class:`fxtrain.rtl.multiplier.RegisteredMultiplier`): ``"auto"`` (ECP5
        MULT18X18D on an ECP5 platform, generic otherwise), ``"generic"`` or ``"mult18x18d"`` (benches of
        the DSP version in Verilator/Icarus, with :mod:`fxtrain.sim.ecp5_models`).
    b_memory : str
        The B memory's kind (:class:`fxtrain.rtl.operand_memory.OperandMemory`): ``"auto"`` (iCE40 SPRAM on an
        iCE40 platform when ``b_depth >= 2048``, block RAM otherwise), ``"generic"`` or ``"spram"`` (benches of
        the SPRAM version, with :mod:`fxtrain.sim.ice40_models`).

    Members
    -------
    a_write, b_write, run : In(stream.Signature(...))
        Operand writes and run commands (payload layouts from :func:`fxtrain.sim.engine.engine_layouts`).
    result : Out(stream.Signature(...))
        One row of ``cols`` rounded words, saturation flags and ``last`` per transfer.
    shift : In(range(33)); mode : In(1)
        Rounding parameters, sampled when a run is accepted.
    seed_lane : In(range(cols)); seed : In(32); seed_load : In(1)
        Lane seed write port.
    busy, error : Out(1)
    counters : Out(StructLayout of 32-bit counters)
    counters_clear : In(1)
    b_read_en : In(1); b_read_addr : In(log2 b_depth); b_read_data : Out(ArrayLayout(signed(wl), cols))
        Only with ``config.expander``: the B memory's read port for ``rtl/expander.py`` (see
        :mod:`fxtrain.sim.engine`).
    config : EngineConfig
    rounder_latency : int
        ``ROUNDER_LATENCY``.
    """

    def __init__(self, config, multiplier="auto", b_memory="auto"):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"Engine configuration must be an EngineConfig, not {config!r}")
        self.config = config
        self.multiplier = multiplier
        if b_memory != "auto":
            memory_kind(b_memory, None, config.b_depth)      # validates
        self.b_memory = b_memory
        self.layouts = engine_layouts(config)
        latency = StochasticRounder.latency
        if latency != ROUNDER_LATENCY:
            raise ValueError(f"StochasticRounder latency {latency} differs from the model's ROUNDER_LATENCY "
                             f"{ROUNDER_LATENCY}; update fxtrain.sim.engine")
        self.rounder_latency = latency
        super().__init__({
            "a_write": In(stream.Signature(self.layouts["a_write"])),
            "b_write": In(stream.Signature(self.layouts["b_write"])),
            "run": In(stream.Signature(self.layouts["run"])),
            "result": Out(stream.Signature(self.layouts["result"])),
            "shift": In(range(SHIFT_MAX + 1)),
            "mode": In(1),
            "seed_lane": In(range(config.lanes)),
            "seed": In(config.lane_width),
            "seed_load": In(1),
            "busy": Out(1),
            "error": Out(1),
            "counters": Out(self.layouts["counters"]),
            "counters_clear": In(1),
            **({"b_read_en": In(1), "b_read_addr": In(b_addr_bits(config)),
                "b_read_data": Out(self.layouts["b_write"]["data"].shape)} if config.expander else {}),
        })

    def elaborate(self, platform):
        cfg = self.config
        rows, cols, depth = cfg.rows, cfg.cols, cfg.depth
        aw, bw = addr_bits(cfg), b_addr_bits(cfg)
        latency = self.rounder_latency
        m = Module()
        psum = cfg.psum_slots > 0
        m.submodules[ARRAY_NAME] = array = SystolicArray(rows, cols, cfg.wl, cfg.acc_width, self.multiplier,
                                                         load_port=psum)
        shift_latency = array.shift_latency
        # FLUSH: cycles between the last operand read and the first DRAIN cycle. The last pair reaches the array
        # 1 + OPERAND_LATENCY cycles after its read (memory read port, then the operand registers) and the
        # accumulators are final settle cycles later; the FSM enters DRAIN shift_latency cycles before the first
        # shift acts (array docstring), so FLUSH lasts settle + OPERAND_LATENCY - shift_latency cycles.
        flush_cycles = array.settle + OPERAND_LATENCY - shift_latency
        assert flush_cycles >= 1
        tail_cycles = shift_latency + latency       # after the last DRAIN cycle: shift delay, then the rounder
        # LOAD: load_wait idle cycles, then rows shift requests. The shifts must not act before the products of
        # a run accepted just before are all added (pair presented in t0 + 1, last added in t0 + rows + cols),
        # else one would be added to the loaded sum: the last shift acts in t0 + load_len + 2 >= t0 + rows + cols
        load_wait = max(0, cols - 2)
        load_len = load_wait + rows
        if (load_cycles(cfg), save_cycles(cfg)) != (load_len + 1, flush_cycles + rows):
            raise ValueError(f"sim.engine load_cycles/save_cycles {load_cycles(cfg)}/{save_cycles(cfg)} differ from "
                             f"the RTL's {load_len + 1}/{flush_cycles + rows}; update fxtrain.sim.engine")

        # ---- operand memories: one write port (host), one synchronous read port (array) each; B's write port
        # waits while a run reads B (b_reading, below), so a single-ported B memory never sees both at once
        m.submodules.a_mem = a_mem = memory.Memory(shape=self.layouts["a_write"]["data"].shape, depth=depth, init=[])
        m.submodules.b_mem = b_mem = OperandMemory(cfg.cols * cfg.wl, cfg.b_depth, self.b_memory)
        a_wr, a_rd = a_mem.write_port(), a_mem.read_port()
        b_reading = Signal()
        m.d.comb += [self.a_write.ready.eq(1), a_wr.addr.eq(self.a_write.payload.addr),
                     a_wr.data.eq(self.a_write.payload.data), a_wr.en.eq(self.a_write.valid),
                     self.b_write.ready.eq(~b_reading), b_mem.w_addr.eq(self.b_write.payload.addr),
                     b_mem.w_data.eq(self.b_write.payload.data), b_mem.w_en.eq(self.b_write.valid & ~b_reading)]

        m.submodules.lanes = lanes = LFSRLanes(cols, cfg.lane_width, reset_seed=RESET_LANE_STATE)
        # shift_setup = 1: the rounders decode the latched shift/mode a cycle ahead (timing; see the rounders'
        # hook-up below), except on iCE40, whose UP5K has no logic cells left for the registers and whose clock is
        # not limited by the rounder
        shift_setup = 0 if platform_family(platform) == "ice40" else 1
        rounders = [StochasticRounder(cfg.wl, cfg.acc_width, shift_max=SHIFT_MAX, rand_width=cfg.lane_width,
                                      shift_setup=shift_setup) for _ in range(cols)]
        for j, rounder in enumerate(rounders):
            m.submodules[f"rounder_{j}"] = rounder

        # ---- run command latch and controller
        cmd = self.run.payload
        a_base = Signal(aw)
        b_base = Signal(bw)
        k_last = Signal(aw + 1)         # k - 1
        drain = Signal()
        shift = Signal(range(SHIFT_MAX + 1))
        mode = Signal()
        ptr = Signal(aw + 1)
        count = Signal(range(max(flush_cycles, rows, tail_cycles, load_len) + 1))
        rejected = Signal()
        issue_valid = Signal()
        issue_clear = Signal()
        shift_en = Signal()
        round_valid = Signal()
        bank_done = Signal()            # the result bank being written is complete (last row lands now)
        wr_bank = Signal()
        bank_full = Signal(2)
        accept = Signal()

        out_of_range = (cmd.k == 0) | (cmd.k > depth) | (cmd.a_base + cmd.k > depth) | (cmd.b_base + cmd.k > cfg.b_depth)
        if psum:
            # run_flags_ok (sim.payloads): LOAD excludes CLEAR, SAVE excludes DRAIN, LOAD/SAVE need slot < psum_slots
            flags_bad = ((cmd.load & cmd.clear) | (cmd.save & cmd.drain)
                         | ((cmd.load | cmd.save) & (cmd.slot >= cfg.psum_slots)))
            m.d.comb += rejected.eq(out_of_range | flags_bad)
            cmd_load, cmd_save = cmd.load, cmd.save
        else:
            m.d.comb += rejected.eq(out_of_range)
            cmd_load = cmd_save = 0
        save = Signal()                 # the run saves (latched)
        load_shift, save_shift = Signal(), Signal()     # LOAD / SAVE states: the array shifts in / out
        p_span = max(cfg.psum_slots, 1) * rows
        p_base = Signal(range(p_span))  # slot * rows
        p_addr = Signal(range(p_span))  # the row of the slot being read (LOAD) or shifted out (SAVE)

        def to_flush_or_idle(is_drain):
            with m.If(is_drain):            # a drain or a save
                m.d.sync += count.eq(flush_cycles - 1)
                m.next = "FLUSH"
            with m.Else():
                m.next = "IDLE"

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                with m.If(self.run.valid & ~rejected):
                    m.d.sync += [a_base.eq(cmd.a_base), b_base.eq(cmd.b_base), k_last.eq(cmd.k - 1),
                                 drain.eq(cmd.drain), mode.eq(self.mode), ptr.eq(1),
                                 shift.eq(Mux(self.shift > SHIFT_MAX, SHIFT_MAX, self.shift))]
                    if psum:
                        # slot * rows by shifts and adds (no multiplier: they are all the array's)
                        slot = cmd.slot[:max(1, (cfg.psum_slots - 1).bit_length())]
                        base = sum(slot << i for i in range(rows.bit_length()) if rows >> i & 1)
                        m.d.sync += [save.eq(cmd.save), p_base.eq(base), p_addr.eq(base)]
                    with m.If(cmd.k == 1):
                        to_flush_or_idle(cmd.drain | cmd_save)
                    with m.Else():
                        m.next = "COMPUTE"
                    if psum:                # a LOAD run overrides the above (the last assignment wins)
                        with m.If(cmd.load):
                            m.d.sync += [ptr.eq(0), count.eq(load_len - 1)]
                            m.next = "LOAD"
            if psum:
                with m.State("LOAD"):       # load_wait cycles, then rows shifts: slot row p_addr - p_base enters
                    m.d.sync += count.eq(count - 1)     # the bottom row
                    with m.If(load_shift):
                        m.d.sync += p_addr.eq(p_addr + 1)
                    with m.If(count == 0):
                        m.d.sync += p_addr.eq(p_base)
                        m.next = "COMPUTE"
                with m.State("SAVE"):       # rows shifts: acc_out shows rows 0 .. rows-1, written to the slot
                    m.d.sync += [count.eq(count - 1), p_addr.eq(p_addr + 1)]
                    with m.If(count == 0):
                        m.next = "IDLE"
            with m.State("COMPUTE"):
                m.d.sync += ptr.eq(ptr + 1)
                with m.If(ptr == k_last):
                    to_flush_or_idle(drain | save)
            with m.State("FLUSH"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += count.eq(rows - 1)
                    with m.If(bank_full.bit_select(wr_bank, 1)):
                        m.next = "WAIT_BANK"
                    with m.Else():
                        m.next = "DRAIN"
                    if psum:                # a saving run needs no result bank (the last assignment wins)
                        with m.If(save):
                            m.next = "SAVE"
            with m.State("WAIT_BANK"):
                with m.If(~bank_full.bit_select(wr_bank, 1)):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += count.eq(tail_cycles - 1)
                    m.next = "TAIL"
            with m.State("TAIL"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.next = "IDLE"

        # Outputs of the controller are plain expressions of the state (no comb assignments inside the FSM:
        # Icarus never evaluates an ``always @*`` block whose inputs do not change after time 0).
        in_wait = fsm.ongoing("WAIT_BANK")
        idle = fsm.ongoing("IDLE")
        starting = idle & self.run.valid & ~rejected
        loading = fsm.ongoing("LOAD") if psum else 0
        if psum:
            m.d.comb += [load_shift.eq(fsm.ongoing("LOAD") & (count < rows)), save_shift.eq(fsm.ongoing("SAVE"))]
        computing = fsm.ongoing("COMPUTE")
        draining = fsm.ongoing("DRAIN")
        last_count = count == 0
        # the expander's B reads (config.expander): the idle engine's B read port serves b_read_addr while
        # b_read_en is high (the executor raises it only while the engine is idle and no run is offered)
        if cfg.expander:
            peeking = self.b_read_en
            idle_b_addr = Mux(peeking, self.b_read_addr, cmd.b_base)
            m.d.comb += self.b_read_data.eq(b_mem.r_data)
        else:
            peeking, idle_b_addr = 0, cmd.b_base
        m.d.comb += [
            self.run.ready.eq(idle),
            accept.eq(idle & self.run.valid),
            a_rd.addr.eq(Mux(idle, cmd.a_base, a_base + ptr)),
            b_mem.r_addr.eq(Mux(idle, idle_b_addr, b_base + ptr)),
            # accepted runs, rejected ones included (no adder here); LOAD too, so a B write never lands between
            # a run's accept and its reads
            b_reading.eq(accept | computing | peeking | loading),
            issue_valid.eq((starting & ~cmd_load) | computing),
            issue_clear.eq(starting & cmd.clear),
            shift_en.eq(draining),
            bank_done.eq(fsm.ongoing("TAIL") & last_count),
        ]

        # ---- operands into the array: the read data arrives one cycle after the address and then passes
        # OPERAND_LATENCY registers, so every multiplier input is a flip-flop output (no block RAM read port
        # in front of a DSP block); valid/clear go through as many registers.
        a_op, b_op = a_rd.data, b_mem.r_data
        valid_op, clear_op = Signal(name="valid_rd"), Signal(name="clear_rd")
        m.d.sync += [valid_op.eq(issue_valid), clear_op.eq(issue_clear)]
        for stage in range(OPERAND_LATENCY):
            a_reg = Signal.like(a_rd.data, name=f"a_op{stage}")
            b_reg = Signal(len(b_mem.r_data), name=f"b_op{stage}")
            valid_reg, clear_reg = Signal(name=f"valid_op{stage}"), Signal(name=f"clear_op{stage}")
            m.d.sync += [a_reg.eq(a_op), b_reg.eq(b_op), valid_reg.eq(valid_op), clear_reg.eq(clear_op)]
            a_op, b_op, valid_op, clear_op = a_reg, b_reg, valid_reg, clear_reg
        m.d.comb += [array.a_in.eq(a_op), array.b_in.eq(b_op), array.in_valid.eq(valid_op),
                     array.in_clear.eq(clear_op), array.shift_en.eq(shift_en | load_shift | save_shift)]
        if psum:
            self._psum_memory(m, array, load_shift, save_shift, p_addr, p_span)

        # round_valid: the drain cycles delayed like the shift itself, so rounder j sees row 0, 1, ... of
        # column j on acc_out[j] in the cycles the array shifts them out
        round_valid_q = shift_en
        for stage in range(shift_latency):
            reg = Signal(name=f"round_valid_d{stage + 1}")
            m.d.sync += reg.eq(round_valid_q)
            round_valid_q = reg
        m.d.comb += round_valid.eq(round_valid_q)

        # ---- lanes and rounders: column j rounds rows 0..rows-1 through lane j, advance-then-use.
        # With shift_setup = 1 the rounders take shift/mode one cycle before each input. Both registers change only
        # in a run's accept cycle t0 (IDLE); that run's first rounding is presented in t0 + 1 + flush_cycles +
        # shift_latency or later (>= t0 + 4) and the previous run's last one shift_latency cycles after its last
        # DRAIN cycle, before TAIL (shift_latency + latency cycles) returns to IDLE: every rounding sees its own
        # run's parameters in the cycle before it.
        assert flush_cycles >= 1 and tail_cycles > shift_latency
        m.d.comb += [lanes.seed_lane.eq(self.seed_lane), lanes.seed.eq(self.seed), lanes.seed_load.eq(self.seed_load)]
        for j, rounder in enumerate(rounders):
            m.d.comb += [lanes.advance[j].eq(round_valid),
                         rounder.i_valid.eq(round_valid), rounder.acc.eq(array.acc_out[j]),
                         rounder.rand.eq(lanes.next_state[j]), rounder.shift.eq(shift), rounder.mode.eq(mode)]

        # ---- result banks: 2 x rows entries; the drain writes bank wr_bank, the stream reads bank rd_bank
        result_layout = data.StructLayout({"data": self.layouts["result"]["data"].shape, "sat": cols})
        m.submodules.res_mem = res_mem = memory.Memory(shape=result_layout, depth=2 * rows, init=[])
        res_wr = res_mem.write_port()
        res_rd = res_mem.read_port()
        wr_row = Signal(range(rows))
        written = rounders[0].o_valid
        sat_bits = Cat(rounder.sat for rounder in rounders)
        m.d.comb += [res_wr.en.eq(written), res_wr.addr.eq(Mux(wr_bank, rows, 0) + wr_row),
                     res_wr.data.sat.eq(sat_bits)]
        for j, rounder in enumerate(rounders):
            m.d.comb += res_wr.data.data[j].eq(rounder.out)
        with m.If(written):
            m.d.sync += wr_row.eq(Mux(wr_row == rows - 1, 0, wr_row + 1))
        with m.If(bank_done):
            m.d.sync += [bank_full.bit_select(wr_bank, 1).eq(1), wr_bank.eq(~wr_bank)]

        rd_bank = Signal()
        rd_row = Signal(range(rows))
        out_valid = Signal()
        out_last = Signal()
        fetch = Signal()
        m.d.comb += [fetch.eq(bank_full.bit_select(rd_bank, 1) & (~out_valid | self.result.ready)),
                     res_rd.addr.eq(Mux(rd_bank, rows, 0) + rd_row), res_rd.en.eq(fetch)]
        with m.If(fetch):
            m.d.sync += [out_valid.eq(1), out_last.eq(rd_row == rows - 1)]
            with m.If(rd_row == rows - 1):
                m.d.sync += [rd_row.eq(0), rd_bank.eq(~rd_bank), bank_full.bit_select(rd_bank, 1).eq(0)]
            with m.Else():
                m.d.sync += rd_row.eq(rd_row + 1)
        with m.Elif(self.result.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += [self.result.valid.eq(out_valid), self.result.payload.data.eq(res_rd.data.data),
                     self.result.payload.sat.eq(res_rd.data.sat), self.result.payload.last.eq(out_last)]

        # ---- status and counters (saturating; a cycle with counters_clear high is not counted)
        error = Signal()
        m.d.comb += [self.busy.eq(~idle), self.error.eq(error)]
        events = {
            "busy": (~idle & ~in_wait) | accept,
            "stall_in": idle & ~self.run.valid,
            "stall_out": in_wait,
            "runs": accept,
            "rejected": accept & rejected,
        }
        top = (1 << COUNTER_WIDTH) - 1
        for name in COUNTER_NAMES:
            counter = self.counters[name]
            if name == "saturated":
                amount = Mux(written, sum(rounder.sat for rounder in rounders), 0)
                total = counter + amount
                step = Mux(total > top, top, total)
            else:
                step = Mux((counter == top) | ~events[name], counter, counter + 1)
            m.d.sync += counter.eq(Mux(self.counters_clear, 0, step))
        with m.If(self.counters_clear):
            m.d.sync += error.eq(0)
        with m.If(accept & rejected):
            m.d.sync += error.eq(1)
        return m

    def _psum_memory(self, m, array, load_shift, save_shift, p_addr, p_span):
        """The partial-sum memory: ``psum_slots * rows`` entries of ``cols`` accumulators, slot ``s`` row ``r``
        at entry ``s * rows + r``. A shift asked for in cycle ``t`` acts at the end of ``t + shift_latency``
        (2): LOAD reads entry ``p_addr`` in ``t`` and registers the data into the array's ``shift_in`` for
        ``t + 2`` (0 in every other cycle, so drains and saves still shift zeros in); SAVE writes ``acc_out``
        (row ``p_addr - p_base``) to entry ``p_addr`` in ``t + 2`` (address and enable delayed alike)."""
        cfg, rows = self.config, self.config.rows
        layout = data.ArrayLayout(array.acc_out.shape().elem_shape, cfg.cols)
        m.submodules.psum_mem = psum_mem = memory.Memory(shape=layout, depth=p_span, init=[])
        wr = psum_mem.write_port()
        # with rows == 1 a LOAD can read the row the previous run's SAVE writes in the same cycle (module doc)
        rd = psum_mem.read_port(transparent_for=(wr,) if rows == 1 else ())
        loading_rd = Signal()
        shift_data = Signal(layout)
        m.d.comb += rd.addr.eq(p_addr)
        m.d.sync += [loading_rd.eq(load_shift), shift_data.eq(Mux(loading_rd, rd.data, 0))]
        m.d.comb += array.shift_in.eq(shift_data)
        w_en, w_addr = save_shift, p_addr
        for stage in range(array.shift_latency):
            en_q, addr_q = Signal(name=f"psum_w_en_d{stage + 1}"), Signal.like(p_addr, name=f"psum_w_addr_d{stage + 1}")
            m.d.sync += [en_q.eq(w_en), addr_q.eq(w_addr)]
            w_en, w_addr = en_q, addr_q
        m.d.comb += [wr.en.eq(w_en), wr.addr.eq(w_addr), wr.data.eq(array.acc_out)]
