"""The accelerator system on chip: host link (UART or byte stream), frame codec, command executor, GEMM engine.

Boards instantiate :class:`AcceleratorSoC` with their clock frequency, baud rate and engine configuration and
connect ``rx``/``tx`` to the UART pins; nothing else is board specific. Simulation uses the byte-stream variant
(``byte_stream=True``), which replaces the UART with ``rx_bytes``/``tx_bytes`` streams so a bench can move one
byte per cycle without bit timing.

Dataflow::

    rx ─ UARTReceiver ─ FIFO(rx_buffer) ─ [R] ─ FrameDecoder ─ events ─ CommandExecutor ─ engine ports ─ GemmEngine
    tx ─ UARTTransmitter ─────── FrameEncoder ─ header + payload ─┘

Members
-------
identify_payload
    The IDENTIFY payload a SoC built from the same parameters reports (``fxtrain.sim.protocol.Identity``).
AcceleratorSoC
    The top-level component.
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.gemm import EngineConfig
from ..sim.payloads import DEFAULT_RX_BUFFER, Identity
from .command import CommandExecutor
from .framing import FrameDecoder, FrameEncoder
from .uart import UARTReceiver, UARTTransmitter, uart_divisor

__all__ = ["identify_payload", "AcceleratorSoC"]

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
        Clock frequency of the ``sync`` domain in Hz (reported by IDENTIFY, sets the UART divisor and the
        default frame timeout).
    baud : int
        UART baud rate; ``ValueError`` if the clock cannot make it within ``rtl.uart.BAUD_TOLERANCE``.
        Reported by IDENTIFY (the byte-stream variant reports it too, without using it).
    frame_timeout : int, optional
        Idle cycles after which a started request frame is abandoned with a TIMEOUT response (default
        ``sim.protocol.default_frame_timeout(clk_freq)``: 10 ms).
    byte_stream : bool
        Replace the UART by byte streams (simulation).
    rx_buffer : int
        Bytes of the receive FIFO between the UART and the frame decoder (a power of two; block RAM), reported
        by IDENTIFY. The host keeps the bytes of requests not yet answered within it (``docs/protocol.md``
        §2.2), so no byte is lost while the executor runs or answers. The byte-stream variant has no FIFO (its
        input has back-pressure) and reports the same value.

    Latency: see :class:`~.command.CommandExecutor`; the UART adds ``10 * divisor`` cycles per byte, and the
    register after the receive FIFO (``rx_q``, so the FIFO's block RAM output meets no decoder logic) delays
    each received byte's way to the decoder by one cycle (throughput unchanged: one byte per cycle).

    Members
    -------
    rx : In(1), tx : Out(1)
        UART pins (UART variant).
    rx_bytes : In(stream.Signature(8)), tx_bytes : Out(stream.Signature(8))
        Byte streams (byte-stream variant).
    identity : Identity
        What IDENTIFY answers.
    divisor : int or None
        UART clock cycles per bit.
    """

    def __init__(self, config, clk_freq, baud, *, frame_timeout=None, byte_stream=False,
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
        self.byte_stream = bool(byte_stream)
        self.divisor = None if byte_stream else uart_divisor(clk_freq, baud)
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
        else:
            m.submodules.uart_rx = uart_rx = UARTReceiver(self.divisor)
            m.submodules.uart_tx = uart_tx = UARTTransmitter(self.divisor)
            m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.rx_buffer)
            # rx_q: a register between the FIFO (whose data is its block RAM's read port) and the decoder
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
        return m


