"""The accelerator system on chip: host link (UART or byte stream), frame codec, command executor, GEMM engine.

Boards instantiate :class:`AcceleratorSoC` with their engine and UART clock frequencies, baud rate and engine
configuration and connect ``rx``/``tx`` to the UART pins; nothing else is board specific. Simulation of the
executor uses the byte-stream variant (``byte_stream=True``), which replaces the UART and the clock crossing with
``rx_bytes``/``tx_bytes`` streams in the ``sync`` domain so a bench can move one byte per cycle without bit
timing (one clock).

Clock domains of the UART variant: ``uart`` (the UART receiver and transmitter, clocked at ``uart_freq``, which
sets the bit period) and ``sync`` (receive buffer, frame codec, executor, engine, at ``clk_freq``). The two are
asynchronous to each other; bytes cross in small :class:`amaranth.lib.fifo.AsyncFIFO` queues
(:data:`CDC_FIFO_DEPTH` entries, so that the ``uart`` domain holds only 2-bit Gray pointers and a 2:1 read
multiplexer, and closes timing at the UART clock of a full iCE40UP5K)::

    uart domain                │ sync domain
    rx ─ UARTReceiver ─ AsyncFIFO(2) ─ SyncFIFOBuffered(rx_buffer) ─ [R] ─ FrameDecoder ─ events ─ CommandExecutor ─ ...
    tx ─ UARTTransmitter ─ AsyncFIFO(2) ───────────────────────────────── FrameEncoder ─ header + payload ─┘

The receive buffer of ``docs/protocol.md`` §2.2 is the ``SyncFIFOBuffered`` in the ``sync`` domain, as in the
single-clock design. Why the rule "unanswered request bytes <= rx_buffer" still prevents overflow: a byte
leaves the receive buffer (the decoder reads it) before the response to its request begins, so the bytes in the
crossing FIFO and the buffer together are never more than the unanswered ones, at most ``rx_buffer``; hence the
buffer always has room for what the crossing FIFO holds, and the crossing FIFO drains at one byte per ``sync``
cycle after a latency of about 3 ``sync`` cycles (Gray pointer synchroniser, memory read), its write side seeing
the freed entry 1 ``sync`` + 2 ``uart`` cycles after the read. The receiver delivers at most one byte per
``10 * divisor`` ``uart`` cycles, so the 2-entry crossing FIFO never fills as long as a byte time lasts at least
:data:`MIN_SYNC_CYCLES_PER_BYTE` engine cycles, which the constructor checks. Both domains are reset together
(each crossing FIFO is reset from its write side).

Members
-------
identify_payload
    The IDENTIFY payload a SoC built from the same parameters reports (``fxtrain.sim.protocol.Identity``).
AcceleratorSoC
    The top-level component.
"""

from __future__ import annotations

from amaranth.hdl import DomainRenamer, Module, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.gemm import EngineConfig
from ..sim.payloads import DEFAULT_RX_BUFFER, Identity
from .command import CommandExecutor
from .framing import FrameDecoder, FrameEncoder
from .uart import UARTReceiver, UARTTransmitter, uart_divisor

__all__ = ["identify_payload", "AcceleratorSoC", "UART_DOMAIN", "CDC_FIFO_DEPTH", "MIN_SYNC_CYCLES_PER_BYTE"]

#: Name of the UART's clock domain.
UART_DOMAIN = "uart"

#: Entries of each clock-crossing FIFO (a power of two, as ``AsyncFIFO`` needs).
CDC_FIFO_DEPTH = 2

#: Fewest engine (``sync``) cycles per UART byte time (``10 * clk_freq / baud``) the UART variant accepts: the
#: receive crossing FIFO's round trip (about 3 ``sync`` + 3 ``uart`` cycles) stays well inside the
#: ``CDC_FIFO_DEPTH`` byte times it can absorb, and the decoder (one byte per cycle) keeps up with the line.
MIN_SYNC_CYCLES_PER_BYTE = 8

def identify_payload(config, clk_freq, baud, frame_timeout=None, rx_buffer=DEFAULT_RX_BUFFER):
    """:class:`~fxtrain.sim.payloads.Identity` of ``AcceleratorSoC(config, clk_freq, baud, frame_timeout=...,
    rx_buffer=...)``."""
    return Identity.from_parameters(config, clk_freq, baud, frame_timeout, rx_buffer=rx_buffer)


class AcceleratorSoC(wiring.Component):
    """GEMM accelerator reachable over a serial link (protocol: ``docs/protocol.md``).

    Parameters
    ----------
    config : EngineConfig
        Engine geometry and word length.
    clk_freq : int
        Clock frequency of the ``sync`` (engine) domain in Hz (reported by IDENTIFY; the frame timeout counts
        its cycles).
    baud : int
        UART baud rate; ``ValueError`` if ``uart_freq`` cannot make it (:func:`~.uart.uart_divisor`: at least
        ``MIN_DIVISOR`` cycles per bit, within ``BAUD_TOLERANCE``). Reported by IDENTIFY (the byte-stream
        variant reports it too, without using it).
    uart_freq : int, optional
        Clock frequency of the ``uart`` domain in Hz (default ``clk_freq``); sets the UART divisor
        ``round(uart_freq / baud)``. Unused by the byte-stream variant.
    frame_timeout : int, optional
        Idle cycles after which a started request frame is abandoned with a TIMEOUT response (default
        ``sim.protocol.default_frame_timeout(clk_freq)``: 10 ms).
    byte_stream : bool
        Replace the UART by byte streams (simulation).
    rx_buffer : int
        Bytes of the receive FIFO between the UART's clock crossing and the frame decoder (a power of two; block
        RAM, in the ``sync`` domain), reported by IDENTIFY. The host keeps the bytes of requests not yet answered within it (``docs/protocol.md``
        §2.2), so no byte is lost while the executor runs or answers. The byte-stream variant has no FIFO (its
        input has back-pressure) and reports the same value.

    Latency: see :class:`~.command.CommandExecutor`; the UART adds ``10 * divisor`` ``uart`` cycles per byte,
    each crossing FIFO 1 cycle of its write domain and 2-3 of its read domain (Gray pointer register,
    synchroniser, memory read), the receive buffer 1 ``sync`` cycle, and the register after it (``rx_q``, so
    the buffer's block RAM output meets no decoder logic) 1 more (throughput unchanged: one byte per cycle). No
    arithmetic of its own.

    Members
    -------
    rx : In(1), tx : Out(1)
        UART pins (UART variant).
    rx_bytes : In(stream.Signature(8)), tx_bytes : Out(stream.Signature(8))
        Byte streams (byte-stream variant).
    identity : Identity
        What IDENTIFY answers.
    divisor : int or None
        ``uart`` clock cycles per bit (``None`` for the byte-stream variant).
    uart_freq : int
        ``uart`` domain clock in Hz.

    two_clocks : bool
        UART variant with ``uart_freq != clk_freq``: the UART in the ``uart`` domain behind the crossing FIFOs.
        With equal clocks the UART and the receive buffer are in ``sync`` and there is no crossing.

    Clock domains: ``sync``; the two-clock UART variant also ``uart`` (Verilog ports ``uart_clk``, ``uart_rst``).
    """

    def __init__(self, config, clk_freq, baud, *, uart_freq=None, frame_timeout=None, byte_stream=False,
                 rx_buffer=DEFAULT_RX_BUFFER):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        if not isinstance(clk_freq, int) or clk_freq <= 0:
            raise ValueError(f"Clock frequency must be a positive integer in Hz, not {clk_freq!r}")
        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"Baud rate must be a positive integer, not {baud!r}")
        self.config = config
        self.clk_freq = clk_freq
        self.baud = baud
        if uart_freq is None:
            uart_freq = clk_freq
        if not isinstance(uart_freq, int) or uart_freq <= 0:
            raise ValueError(f"UART clock frequency must be a positive integer in Hz, not {uart_freq!r}")
        self.uart_freq = uart_freq
        self.byte_stream = bool(byte_stream)
        self.divisor = None if byte_stream else uart_divisor(uart_freq, baud)
        self.two_clocks = not byte_stream and uart_freq != clk_freq
        if self.two_clocks and 10 * clk_freq < MIN_SYNC_CYCLES_PER_BYTE * baud:
            raise ValueError(f"Engine clock {clk_freq} Hz is too slow for {baud} baud: a UART byte lasts "
                             f"{10 * clk_freq / baud:.2f} engine cycles, the receive path needs at least "
                             f"{MIN_SYNC_CYCLES_PER_BYTE}")
        self.identity = identify_payload(config, clk_freq, baud, frame_timeout, rx_buffer)
        if not rx_buffer:
            raise ValueError("The SoC needs a receive buffer of at least 2 bytes, not 0")
        self.rx_buffer = rx_buffer
        if self.byte_stream:
            ports = {"rx_bytes": In(stream.Signature(8)), "tx_bytes": Out(stream.Signature(8))}
        else:
            ports = {"rx": In(1, init=1), "tx": Out(1, init=1)}
        super().__init__(ports)

    def elaborate(self, platform):
        from .engine import GemmEngine

        m = Module()
        m.submodules.decoder = decoder = FrameDecoder(self.identity.frame_timeout)
        m.submodules.encoder = encoder = FrameEncoder()
        m.submodules.executor = executor = CommandExecutor(self.config, self.identity)
        engine = GemmEngine(self.config)
        m.submodules.engine = ResetInserter({"sync": executor.engine_reset})(engine)
        wiring.connect(m, executor.engine, engine)
        wiring.connect(m, decoder.o, executor.events)
        m.d.comb += [executor.cmd.eq(decoder.cmd), executor.seq.eq(decoder.seq),
                     executor.length.eq(decoder.length), decoder.abort.eq(executor.abort),
                     encoder.start.eq(executor.tx_start), encoder.cmd.eq(executor.tx_cmd),
                     encoder.seq.eq(executor.tx_seq), encoder.status.eq(executor.tx_status),
                     encoder.length.eq(executor.tx_length), executor.tx_busy.eq(encoder.busy)]
        wiring.connect(m, executor.tx_payload, encoder.payload)
        if self.byte_stream:
            wiring.connect(m, wiring.flipped(self.rx_bytes), decoder.i)
            wiring.connect(m, encoder.o, wiring.flipped(self.tx_bytes))
        elif not self.two_clocks:
            # UART clock = engine clock: one domain, no crossing (the receive buffer straight after the receiver)
            m.submodules.uart_rx = uart_rx = UARTReceiver(self.divisor)
            m.submodules.uart_tx = uart_tx = UARTTransmitter(self.divisor)
            m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.rx_buffer)
            rx_q = Signal(8)
            rx_q_valid = Signal()
            m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx),
                         rx_fifo.w_data.eq(uart_rx.o.payload), rx_fifo.w_en.eq(uart_rx.o.valid),
                         uart_rx.o.ready.eq(rx_fifo.w_rdy),
                         rx_fifo.r_en.eq(~rx_q_valid | decoder.i.ready),
                         decoder.i.payload.eq(rx_q), decoder.i.valid.eq(rx_q_valid)]
            with m.If(rx_fifo.r_en):
                m.d.sync += [rx_q.eq(rx_fifo.r_data), rx_q_valid.eq(rx_fifo.r_rdy)]
            wiring.connect(m, encoder.o, uart_tx.i)
        else:
            in_uart = DomainRenamer({"sync": UART_DOMAIN})
            m.submodules.uart_rx = uart_rx = in_uart(UARTReceiver(self.divisor))
            m.submodules.uart_tx = uart_tx = in_uart(UARTTransmitter(self.divisor, registered_ready=True))
            m.submodules.rx_cdc = rx_cdc = fifo.AsyncFIFO(
                width=8, depth=CDC_FIFO_DEPTH, w_domain=UART_DOMAIN, r_domain="sync", exact_depth=True)
            m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.rx_buffer)
            m.submodules.tx_cdc = tx_cdc = fifo.AsyncFIFO(
                width=8, depth=CDC_FIFO_DEPTH, w_domain="sync", r_domain=UART_DOMAIN, exact_depth=True)
            # rx_q: a register between the FIFO (whose data is its block RAM's read port) and the decoder
            rx_q = Signal(8)
            rx_q_valid = Signal()
            m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx),
                         rx_cdc.w_data.eq(uart_rx.o.payload), rx_cdc.w_en.eq(uart_rx.o.valid),
                         uart_rx.o.ready.eq(rx_cdc.w_rdy),
                         rx_fifo.w_data.eq(rx_cdc.r_data), rx_fifo.w_en.eq(rx_cdc.r_rdy),
                         rx_cdc.r_en.eq(rx_fifo.w_rdy),
                         rx_fifo.r_en.eq(~rx_q_valid | decoder.i.ready),
                         decoder.i.payload.eq(rx_q), decoder.i.valid.eq(rx_q_valid),
                         tx_cdc.w_data.eq(encoder.o.payload), tx_cdc.w_en.eq(encoder.o.valid),
                         encoder.o.ready.eq(tx_cdc.w_rdy),
                         uart_tx.i.payload.eq(tx_cdc.r_data), uart_tx.i.valid.eq(tx_cdc.r_rdy),
                         tx_cdc.r_en.eq(uart_tx.i.ready)]
            with m.If(rx_fifo.r_en):
                m.d.sync += [rx_q.eq(rx_fifo.r_data), rx_q_valid.eq(rx_fifo.r_rdy)]
        return m


