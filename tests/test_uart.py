# amaranth: UnusedElaboratable=no
"""UART: divisor derivation and its build-time check, transmitter/receiver bit timing (Amaranth simulator)."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from fxtrain.rtl.uart import BAUD_TOLERANCE, MIN_DIVISOR, UARTReceiver, UARTTransmitter, uart_divisor


@pytest.mark.parametrize("clk, baud, divisor", [(12_000_000, 3_000_000, 4), (48_000_000, 3_000_000, 16),
                                                (12_000_000, 115_200, 104), (25_000_000, 115_200, 217)])
def test_divisor_of_board_clocks(clk, baud, divisor):
    """Board clock/baud pairs give round(clk / baud) cycles per bit."""
    assert uart_divisor(clk, baud) == divisor


def test_divisor_rejects_baud_error_above_tolerance_naming_both_numbers():
    """25 MHz cannot make 3 Mbaud within 2 %: the error names the requested and the achieved baud rate."""
    with pytest.raises(ValueError, match=r"Baud rate 3000000 .* 25000000 Hz .* 3125000 baud, 4.17 % off"):
        uart_divisor(25_000_000, 3_000_000)
    assert BAUD_TOLERANCE == 0.02


def test_divisor_rejects_too_few_cycles_per_bit_and_bad_types():
    with pytest.raises(ValueError, match=f"at least {MIN_DIVISOR}"):
        uart_divisor(10_000_000, 3_000_000)
    with pytest.raises(ValueError, match="Baud rate must be a positive integer"):
        uart_divisor(12_000_000, 0)
    with pytest.raises(ValueError, match="Clock frequency must be a positive integer"):
        uart_divisor(12e6, 115_200)
    with pytest.raises(ValueError, match="UART divisor must be an integer of at least 4"):
        UARTTransmitter(3)


def _line_levels(data, cycles_per_bit, stop_bits=1.0, idle=3):
    """Per-cycle levels of a serial line sending ``data`` with a (possibly fractional) bit period."""
    levels = [1] * idle
    t = 0.0
    for byte in data:
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        for bit in bits:
            t_end = t + cycles_per_bit
            levels += [bit] * (round(t_end) - round(t))
            t = t_end
        extra = (stop_bits - 1) * cycles_per_bit
        levels += [1] * round(extra)
        t += round(extra)
    return levels + [1] * (4 * int(cycles_per_bit) + 4)


@pytest.mark.parametrize("divisor", [4, 5, 16])
@pytest.mark.parametrize("baud_error", [-0.02, 0.0, 0.02])
def test_receiver_decodes_bytes_at_baud_error(divisor, baud_error):
    """The receiver decodes back-to-back bytes (0x00, 0xFF, 0x55, random) sent up to ±2 % off its rate."""
    seed = 1000 * divisor + int(100 * baud_error)
    rng = random.Random(seed)
    print("seed", seed)
    data = bytes([0x00, 0xFF, 0x55, 0xAA]) + bytes(rng.randrange(256) for _ in range(12))
    levels = _line_levels(data, divisor * (1 + baud_error))
    dut = UARTReceiver(divisor)
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for level in levels:
            ctx.set(dut.rx, level)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(payload)
        assert ctx.get(dut.framing_errors) == 0 and ctx.get(dut.overruns) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert bytes(got) == data


def test_receiver_counts_framing_error_when_stop_bit_is_low():
    """A byte whose stop bit is 0 is not delivered and counts as a framing error."""
    dut = UARTReceiver(4)
    levels = [1] * 3 + [0] * 4 + [0] * 32 + [0] * 4 + [1] * 20     # start, eight 0 bits, low stop bit

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        delivered = 0
        for level in levels:
            ctx.set(dut.rx, level)
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            delivered += valid
        assert delivered == 0
        assert ctx.get(dut.framing_errors) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("registered_ready", [False, True])
@pytest.mark.parametrize("divisor", [4, 7])
def test_transmitter_to_receiver_loopback_and_bit_timing(divisor, registered_ready):
    """TX -> RX loopback is lossless, and TX holds each bit exactly ``divisor`` cycles (10 per byte, back to
    back), with ``ready`` combinational or registered."""
    seed = 77 + divisor
    rng = random.Random(seed)
    print("seed", seed)
    data = bytes([0x00, 0xFF]) + bytes(rng.randrange(256) for _ in range(10))
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor, registered_ready=registered_ready)
    m.submodules.rx = rx = UARTReceiver(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, line = [], []

    async def bench(ctx):
        ctx.set(rx.o.ready, 1)
        for byte in data:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            while True:
                _, _, ready, level, valid, payload = await ctx.tick().sample(tx.i.ready, tx.tx, rx.o.valid,
                                                                            rx.o.payload)
                line.append(level)
                if valid:
                    got.append(payload)
                if ready:
                    break
        ctx.set(tx.i.valid, 0)
        for _ in range(12 * divisor):
            _, _, level, valid, payload = await ctx.tick().sample(tx.tx, rx.o.valid, rx.o.payload)
            line.append(level)
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert bytes(got) == data
    # reconstruct the bytes from the line with exact divisor-cycle bits
    start = line.index(0)
    decoded = []
    for i in range(len(data)):
        base = start + 10 * divisor * i
        bits = [line[base + divisor * b + divisor // 2] for b in range(10)]
        assert bits[0] == 0 and bits[9] == 1
        decoded.append(sum(bit << j for j, bit in enumerate(bits[1:9])))
    assert bytes(decoded) == data


def test_uart_soc_refuses_an_engine_clock_too_slow_for_the_line():
    """The two-clock SoC needs at least MIN_SYNC_CYCLES_PER_BYTE engine cycles per UART byte (its 4-entry
    receive crossing must drain in time): 8 MHz at 12 Mbaud (6.67 cycles per byte) is refused, naming both;
    9.6 MHz (exactly 8) is accepted; the byte-stream variant has no UART and no such limit."""
    from fxtrain.rtl.soc import MIN_SYNC_CYCLES_PER_BYTE, AcceleratorSoC
    from fxtrain.sim.gemm import EngineConfig
    config = EngineConfig(rows=2, cols=2, wl=16, depth=32)
    assert MIN_SYNC_CYCLES_PER_BYTE == 8
    with pytest.raises(ValueError, match=r"Engine clock 8000000 Hz is too slow for 12000000 baud: a UART byte "
                                         r"lasts 6.67 engine cycles, the receive path needs at least 8"):
        AcceleratorSoC(config, 8_000_000, 12_000_000, uart_freq=48_000_000)
    assert AcceleratorSoC(config, 9_600_000, 12_000_000, uart_freq=48_000_000).divisor == 4
    assert AcceleratorSoC(config, 8_000_000, 12_000_000, byte_stream=True).divisor is None
