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
    The SoC's RTL in simulation: ``SimulationTransport("verilator", ...)`` is a :class:`HarnessTransport`
    (free-running Verilator harness), ``"verilator-cocotb"`` and ``"icarus"`` a :class:`CocotbTransport`.
HarnessTransport
    Runs the free-running Verilator harness (:mod:`fxtrain.sim.freerun`) in a subprocess and talks to it over
    its stdin/stdout; ``resync`` asks the harness on its control pipe to report the SoC idle.
CocotbTransport
    Starts the cocotb SoC server (:mod:`fxtrain.sim.benches.soc_server`) in a subprocess and talks to it over a
    local TCP socket through :class:`SerialTransport` (every clock cycle driven from Python: slow).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..sim.gemm import EngineConfig

__all__ = ["Transport", "SerialTransport", "EmulatorTransport", "SimulationTransport", "HarnessTransport",
           "CocotbTransport", "TransportError", "SIMULATION_BACKENDS"]

#: ``sim:<name>`` simulations: the free-running Verilator harness, and the cocotb bridge under either simulator.
SIMULATION_BACKENDS = ("verilator", "verilator-cocotb", "icarus")
#: Engine of a SoC behind the cocotb bridge unless told otherwise (small geometries simulate fast there). The
#: free-running harness defaults to ``EngineConfig()``, the emulators' default, so that ``sim:verilator`` and
#: ``emu`` train bit-identically and LeNet's weight gradients (K = batch x 576) fit its accumulator.
SIM_CONFIG = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12, b_depth=1024)


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
    """The SoC's Verilog in simulation; ``SimulationTransport(simulator, config, **options)`` returns a
    :class:`HarnessTransport` for ``"verilator"`` and a :class:`CocotbTransport` for ``"verilator-cocotb"`` and
    ``"icarus"``.

    Parameters (both)
    -----------------
    simulator : str
        One of :data:`SIMULATION_BACKENDS`.
    config : EngineConfig
        Engine of the simulated SoC (default: ``EngineConfig()`` in the harness, :data:`SIM_CONFIG` behind
        cocotb).
    clk_freq, baud : int
        Reported by IDENTIFY.
    frame_timeout : int
        Idle cycles after which the simulated device abandons a partial frame.
    build_root : path, optional
        Build cache (default ``fxtrain.sim.runner.default_build_root()``).
    start_timeout : float
        Seconds to wait for the build and the server to come up.

    Members
    -------
    process : subprocess.Popen
    log_path : pathlib.Path
        Output of the simulation process (and, for cocotb, the build).
    """

    def __new__(cls, simulator="verilator", *args, **kwargs):
        if cls is SimulationTransport:
            if simulator not in SIMULATION_BACKENDS:
                raise ValueError(f"Simulator must be one of {SIMULATION_BACKENDS}, not {simulator!r}")
            cls = HarnessTransport if simulator == "verilator" else CocotbTransport
        return super().__new__(cls)



class HarnessTransport(SimulationTransport):
    """The byte-stream SoC under the free-running Verilator harness (``sim/freerun_harness.cpp``), served on the
    harness process's stdin/stdout.

    The harness is built once per design (cached under ``build_root``); a missing compiler or a failed build
    raises :class:`TransportError` with one line naming the cause and the build log. The process ends when this
    transport closes its pipes, and also when the host process dies (its pipes close with it).
    ``resync`` is exact: the harness answers a ``sync`` on its control pipe once the SoC has nothing left to do
    (any partial frame abandoned and answered) and every byte it sent is in the pipe, which is then drained.

    Members
    -------
    cycles, run_seconds : int, float
        Simulated cycles and the harness's time spent simulating them, as of the last :meth:`sync`.
    """

    quiet_time = 0.0

    def __init__(self, simulator="verilator", config=None, *, clk_freq=12_000_000, baud=3_000_000,
                 frame_timeout=2000, build_root=None, start_timeout=600.0):
        from ..sim.benches.soc_server import soc_for
        from ..sim.freerun import HarnessError, build_harness, check_toolchain

        self.process = None
        try:
            check_toolchain()
        except HarnessError as error:
            raise TransportError(f"sim:verilator cannot start: {error}") from None
        soc = soc_for(config or EngineConfig(), clk_freq, baud, frame_timeout)
        try:
            exe = build_harness(soc, "fxtrain_soc", build_root=build_root)
        except HarnessError as error:
            raise TransportError(f"sim:verilator cannot start: {error}") from None
        self._dir = Path(tempfile.mkdtemp(prefix="fxtrain-harness-"))
        self.log_path = self._dir / "harness.log"
        self._log = open(self.log_path, "w")
        ctl_in_r, self._ctl_w = os.pipe()
        self._ctl_r, ctl_out_w = os.pipe()
        try:
            self.process = subprocess.Popen([str(exe), "--control", f"{ctl_in_r},{ctl_out_w}"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                            pass_fds=(ctl_in_r, ctl_out_w))
        except OSError as error:
            raise TransportError(f"sim:verilator cannot run the harness {exe}: {error}") from None
        finally:
            os.close(ctl_in_r)
            os.close(ctl_out_w)
        self._out = self.process.stdout.fileno()
        os.set_blocking(self._out, False)
        self.name = "sim:verilator"
        self.cycles, self.run_seconds = 0, 0.0
        self._start_timeout = start_timeout
        try:
            self.sync(timeout=start_timeout)
        except BaseException:
            self.close()
            raise

    def _dead(self, doing):
        code = self.process.poll()
        state = "is unresponsive" if code is None else f"exited with code {code}"
        tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
        return TransportError(f"sim:verilator harness {state} while {doing}; log tail:\n{tail}")

    def sync(self, timeout=60.0):
        """Wait until the simulated SoC is idle with all its output in the pipe; update :attr:`cycles`."""
        try:
            os.write(self._ctl_w, b"sync\n")
        except OSError:
            raise self._dead("asked to synchronise") from None
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self._ctl_r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._ctl_r, 256) if ready else b""
            if not chunk:
                raise self._dead("synchronising")
            line += chunk
        _, cycles, run_ns = line.split()
        self.cycles, self.run_seconds = int(cycles), int(run_ns) * 1e-9

    def write(self, data):
        try:
            self.process.stdin.write(bytes(data))
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._dead("writing") from None

    def read(self, timeout):
        ready, _, _ = select.select([self._out], [], [], max(0.0, timeout))
        if not ready:
            return b""
        out = bytearray()
        while True:
            try:
                chunk = os.read(self._out, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                if not out:
                    raise self._dead("reading")
                break
            out += chunk
        return bytes(out)

    def resync(self):
        """Exact: wait until the harness reports the SoC idle (any partial frame abandoned and answered), then
        drop everything it sent."""
        self.sync(timeout=self._start_timeout)
        while self.read(0.0):
            pass

    def close(self):
        process = self.process
        if process is None:
            return
        self.process = None
        for f in (process.stdin,):
            try:
                f.close()
            except OSError:
                pass
        for fd in (self._ctl_w, self._ctl_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        if not self._log.closed:
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)       # errors quoted the log's tail when they were raised

    def __del__(self):
        if getattr(self, "process", None) is not None:
            self.close()


class CocotbTransport(SimulationTransport):
    """The SoC's Verilog under Verilator or Icarus, served over TCP by a cocotb test in a subprocess (every clock
    cycle is driven from Python: about 25 k cycles/s; the free-running :class:`HarnessTransport` is far faster).

    ``simulator`` is ``"verilator-cocotb"`` (or ``"verilator"`` when this class is named directly) or
    ``"icarus"``; other parameters as :class:`SimulationTransport`.
    """

    quiet_time = 1.0

    def __init__(self, simulator="icarus", config=None, *, clk_freq=12_000_000, baud=3_000_000,
                 frame_timeout=2000, build_root=None, start_timeout=600.0):
        from ..sim.runner import simulator_available

        name = simulator
        simulator = {"verilator-cocotb": "verilator"}.get(simulator, simulator)
        ok, why = simulator_available(simulator)
        if not ok:
            raise TransportError(f"Simulator {simulator!r} is not available: {why}")
        config = config or SIM_CONFIG
        self._dir = Path(tempfile.mkdtemp(prefix="fxtrain-soc-"))
        port_file = self._dir / "port"
        self.log_path = self._dir / "server.log"
        args = [sys.executable, "-m", "fxtrain.sim.benches.soc_server", "--simulator", simulator,
                "--rows", str(config.rows), "--cols", str(config.cols), "--wl", str(config.wl),
                "--depth", str(config.depth), "--b-depth", str(config.b_depth), "--max-k-log2", str(config.max_k_log2),
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
        self.name = f"sim:{name}"

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
