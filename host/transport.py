"""Byte transports between the host driver (:mod:`.device`) and a device speaking ``docs/protocol.md``.

Every transport has ``write(data)``, ``read(timeout) -> bytes`` (whatever arrived within ``timeout`` seconds,
possibly nothing), ``resync()`` (wait until the device has abandoned any partial frame and drop what it sent),
``close()`` and a ``name``. It is also a context manager.

Members
-------
Transport
    Base class.
SerialTransport
    pyserial: a serial port, or any pyserial URL such as ``socket://127.0.0.1:PORT`` (the simulator's server).
EmulatorTransport
    In-process :class:`fxtrain.sim.protocol.ProtocolEmulator`.
SimulationTransport
    Starts the cocotb SoC server (:mod:`fxtrain.sim.benches.soc_server`) in a subprocess and talks to it over a
    local TCP socket through :class:`SerialTransport`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..sim.gemm import EngineConfig

__all__ = ["Transport", "SerialTransport", "EmulatorTransport", "SimulationTransport", "TransportError"]


class TransportError(RuntimeError):
    pass


class Transport:
    name = "transport"
    #: Seconds of silence after which the device has certainly abandoned a partial frame.
    quiet_time = 0.1

    def write(self, data):
        raise NotImplementedError

    def read(self, timeout):
        raise NotImplementedError

    def resync(self):
        """Drop everything the device sends until it has been quiet for ``quiet_time`` seconds."""
        while self.read(self.quiet_time):
            pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A pyserial port or URL.

    Parameters
    ----------
    url : str
        Device path (``/dev/ttyUSB1``) or pyserial URL (``socket://127.0.0.1:5555``, ``loop://``).
    baud : int
        Baud rate (ignored by socket URLs).
    """

    def __init__(self, url, baud=3_000_000):
        import serial

        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"Baud rate must be a positive integer, not {baud!r}")
        try:
            self.port = serial.serial_for_url(url, baudrate=baud, timeout=0.1, write_timeout=30)
        except (serial.SerialException, ValueError) as error:
            raise TransportError(f"Cannot open serial link {url!r} at {baud} baud: {error}") from error
        self.name = f"serial:{url}@{baud}"
        self.baud = baud
        sock = getattr(self.port, "_socket", None)
        if sock is not None:       # socket:// URL: send small frames at once (no Nagle delay)
            import socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data):
        self.port.write(bytes(data))
        self.port.flush()

    def read(self, timeout):
        self.port.timeout = timeout
        first = self.port.read(1)
        if not first:
            return b""
        waiting = self.port.in_waiting
        return first + (self.port.read(waiting) if waiting else b"")

    def close(self):
        self.port.close()


class EmulatorTransport(Transport):
    """Talks to an in-process :class:`~fxtrain.sim.protocol.ProtocolEmulator`.

    A ``read`` that finds nothing pending lets ``timeout * clk_freq`` clock cycles pass on the emulator (so a
    partial frame times out like on the device).
    """

    quiet_time = 0.0

    def __init__(self, emulator=None, config=None):
        from ..sim.protocol import ProtocolEmulator

        if emulator is None:
            emulator = ProtocolEmulator(config or EngineConfig())
        self.emulator = emulator
        self._pending = bytearray()
        self.name = "emu"

    def write(self, data):
        self._pending += self.emulator.feed(data)

    def read(self, timeout):
        if not self._pending:
            self._pending += self.emulator.idle(max(1, int(timeout * self.emulator.identity.clk_freq)))
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def resync(self):
        self._pending += self.emulator.idle(self.emulator.identity.frame_timeout)
        self._pending.clear()


class SimulationTransport(Transport):
    """The SoC's Verilog under Verilator or Icarus, served over TCP by a cocotb test in a subprocess.

    Parameters
    ----------
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    config : EngineConfig
        Engine of the simulated SoC (small geometries simulate fast).
    clk_freq, baud : int
        Reported by IDENTIFY.
    frame_timeout : int
        Idle cycles after which the simulated device abandons a partial frame.
    build_root : path, optional
        Build cache of :func:`fxtrain.sim.runner.run_bench`.
    start_timeout : float
        Seconds to wait for the build and the server to come up.

    Members
    -------
    process : subprocess.Popen
    log_path : pathlib.Path
        Output of the server process (build and cocotb log).
    """

    quiet_time = 1.0

    def __init__(self, simulator="verilator", config=None, *, clk_freq=12_000_000, baud=3_000_000,
                 frame_timeout=2000, build_root=None, start_timeout=600.0):
        from ..sim.runner import simulator_available

        ok, why = simulator_available(simulator)
        if not ok:
            raise TransportError(f"Simulator {simulator!r} is not available: {why}")
        config = config or EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12)
        self._dir = Path(tempfile.mkdtemp(prefix="fxtrain-soc-"))
        port_file = self._dir / "port"
        self.log_path = self._dir / "server.log"
        args = [sys.executable, "-m", "fxtrain.sim.benches.soc_server", "--simulator", simulator,
                "--rows", str(config.rows), "--cols", str(config.cols), "--wl", str(config.wl),
                "--depth", str(config.depth), "--max-k-log2", str(config.max_k_log2),
                "--clk-freq", str(clk_freq), "--baud", str(baud), "--frame-timeout", str(frame_timeout),
                "--port-file", str(port_file)]
        if build_root is not None:
            args += ["--build-root", str(build_root)]
        self._log = open(self.log_path, "w")
        env = dict(os.environ)
        env.pop("PYTEST_CURRENT_TEST", None)       # cocotb_tools refuses relative result paths under pytest
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + start_timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None:
                self._log.close()
                raise TransportError(f"The {simulator} SoC server exited with code {self.process.returncode} "
                                     f"before listening (log: {self.log_path}); log tail:\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.close()
                raise TransportError(f"The {simulator} SoC server did not start within {start_timeout} s")
            time.sleep(0.05)
        port = int(port_file.read_text().strip())
        self.serial = SerialTransport(f"socket://127.0.0.1:{port}")
        self.name = f"sim:{simulator}"

    def write(self, data):
        self.serial.write(data)

    def read(self, timeout):
        return self.serial.read(timeout)

    def close(self):
        serial = getattr(self, "serial", None)
        if serial is not None:
            serial.close()
            self.serial = None
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log.closed:
            self._log.close()
