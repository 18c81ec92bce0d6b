"""Opening a :class:`fxtrain.host.device.Device` from a device spec string: ``emu`` (the protocol emulator),
``sim:verilator`` (free-running harness), ``sim:verilator-cocotb``, ``sim:icarus`` (the SoC RTL in simulation) or
``serial:PORT@BAUD`` (a board). The device is unseeded; :func:`fxtrain.host.backend.open_backend` opens and seeds
one from a backend spec.

Members
-------
open_device
    A :class:`~fxtrain.host.device.Device` for a spec.
"""

from __future__ import annotations

from ..sim.gemm import EngineConfig
from .device import Device

__all__ = ["open_device"]


def _parse_config(config):
    if config is None:
        return EngineConfig()
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    return config


def open_device(spec, *, config=None, expect=None, timeout=None, retries=3, **transport_options):
    """A :class:`Device` for ``spec``.

    ``emu`` (the protocol emulator over the engine model, ``config`` or the default ``EngineConfig``),
    ``sim:verilator`` (the SoC's RTL in the free-running Verilator harness; ``config`` defaults to
    ``EngineConfig()`` like ``emu``), ``sim:verilator-cocotb`` / ``sim:icarus`` (the same RTL behind the cocotb
    bridge; ``config`` defaults to a 2x2 engine of depth 32),
    ``serial:PORT@BAUD`` (a board; PORT may be a pyserial URL, BAUD defaults to 3000000).
    """
    from .transport import SIMULATION_BACKENDS, EmulatorTransport, SerialTransport, SimulationTransport

    if not isinstance(spec, str):
        raise TypeError(f"Device spec must be a string, not {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind == "emu" and rest == "":
        from ..sim.protocol import ProtocolEmulator
        transport = EmulatorTransport(ProtocolEmulator(_parse_config(config), **transport_options))
        default_timeout = 1.0
    elif kind == "sim" and rest in SIMULATION_BACKENDS:
        transport = SimulationTransport(rest, config, **transport_options)
        default_timeout = 60.0
    elif kind == "serial" and rest:
        port, _, baud = rest.rpartition("@") if "@" in rest else (rest, "", "3000000")
        try:
            baud = int(baud)
        except ValueError:
            raise ValueError(f"Baud rate in device spec {spec!r} must be an integer, not {baud!r}") from None
        transport = SerialTransport(port, baud)
        default_timeout = 2.0
    else:
        raise ValueError(f"Device spec must be 'emu', 'sim:verilator', 'sim:verilator-cocotb', 'sim:icarus' or "
                         f"'serial:PORT@BAUD', not {spec!r}")
    try:
        return Device(transport, expect=expect, timeout=default_timeout if timeout is None else timeout,
                      retries=retries)
    except BaseException:
        transport.close()
        raise

