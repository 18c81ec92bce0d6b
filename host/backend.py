"""The GEMM backend interface, and the one registry that maps a backend spec string to a backend.

A *backend* runs the GEMMs of the converted layers (:mod:`fxtrain.host.layers`): ``round(A @ B)`` exactly as the
engine computes it (``docs/numerics.md`` §6), or, for the fast emulator, statistically equivalently. Every
backend implements :class:`Backend` and returns the one result type :class:`fxtrain.sim.gemm.GemmResult`.
Capabilities are declared attributes, never probed:

* ``accepts_torch`` — ``gemm`` takes torch tensors holding raw integers and returns torch tensors (the layers
  then skip the numpy round trip); otherwise it takes and returns numpy arrays;
* ``restores_state`` — ``load_state_dict(state_dict())`` restores the random state exactly, so a resumed
  training run continues bit for bit; otherwise only the counters come back.

Spec strings (:data:`BACKENDS`, :func:`open_backend`):

==================  =====================================================================================
``emu``             :class:`~fxtrain.host.emulator.ExactEmulator` (bit-exact golden model), = ``emu:exact``
``emu:fast``        :class:`~fxtrain.host.emulator.FastEmulator` (torch, statistically equivalent)
``float``           no backend: the float32 baseline, the model is not converted (``open_backend`` -> None)
``sim:verilator``   :class:`~fxtrain.host.device.Device` driving the SoC's RTL in the free-running Verilator
                    harness (``sim:verilator-cocotb`` / ``sim:icarus``: behind the cocotb bridge, slow)
``serial:PORT@BAUD`` :class:`~fxtrain.host.device.Device` on a board (PORT may be a pyserial URL)
``device:SPEC``     :class:`~fxtrain.host.device.Device` for a device spec; ``device:emu`` is the driver over
                    the in-process protocol emulator
==================  =====================================================================================

Members
-------
Backend
    The protocol (``typing.Protocol``, checkable with ``isinstance``).
BackendEntry, BACKENDS
    The registry: spec (or scheme before ``:``) to opener and one-line help.
register_backend
    Add an entry (other kinds of backends plug in here).
open_backend
    A backend from a spec string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from ..sim.gemm import EngineConfig, GemmResult
from ..sim.rounding import RoundingMode

__all__ = ["Backend", "BackendEntry", "BACKENDS", "register_backend", "open_backend", "backend_specs"]


@runtime_checkable
class Backend(Protocol):
    """What the converted layers, the training loop and the time model need from a GEMM backend.

    Members
    -------
    config : EngineConfig
        Geometry and word length of the engine it computes like.
    counters : dict
        At least ``gemms``, ``macs`` (M*K*N summed), ``outputs`` (M*N summed), ``saturated``.
    accepts_torch, restores_state : bool
        Capabilities (module docstring).
    """

    config: EngineConfig
    counters: dict
    accepts_torch: bool
    restores_state: bool

    def seed(self, seed: int) -> None:
        """Load the LFSR lanes with ``sim.lfsr.lane_seeds(seed, lanes)`` (or seed the backend's generator)."""

    def gemm(self, a, b, shift: int, mode: "RoundingMode | str", *, b_key=None, a_view=None) -> GemmResult:
        """``round(A @ B)``: ``a`` M x K and ``b`` K x N raw integers; ``b_key`` names B's contents (a backend
        may keep B resident under it); ``a_view`` (a :class:`fxtrain.sim.conv.ConvView` whose matrix is ``a``,
        also passed materialized) lets a device with the expander send the feature map instead of ``a``
        (:mod:`fxtrain.host.conv_offload`); the result equals the plain GEMM's bit for bit, emulators ignore it.
        Raises ValueError for arguments the engine cannot take."""

    def state_dict(self) -> dict:
        """The backend's random state and counters, for a checkpoint."""

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (ValueError for a state of another kind of backend)."""

    def close(self) -> None:
        """Release the link, simulator or other resources (a no-op for the emulators)."""


@dataclass(frozen=True)
class BackendEntry:
    """One registry entry: ``open(rest, config, seed, options)`` returns the backend (or None for ``float``);
    ``rest`` is what follows ``scheme:`` in the spec ("" for an exact match)."""

    open: Callable
    help: str


def _open_exact(rest, config, seed, options):
    from .emulator import ExactEmulator

    _no_options("emu", options)
    return ExactEmulator(config, seed)


def _open_fast(rest, config, seed, options):
    from .emulator import FastEmulator

    _no_options("emu:fast", options)
    return FastEmulator(config, seed)


def _open_float(rest, config, seed, options):
    _no_options("float", options)
    return None


def _open_device(spec):
    def open_(rest, config, seed, options):
        from .device_spec import open_device

        device = open_device(spec(rest), config=config, **options)
        try:
            device.seed(seed)
        except BaseException:
            device.close()
            raise
        return device
    return open_


def _no_options(spec, options):
    if options:
        raise TypeError(f"Backend {spec!r} takes no options, not {sorted(options)}")


#: Exact specs first, then schemes (the part before the first ``:``), in this order.
BACKENDS: "dict[str, BackendEntry]" = {
    "emu": BackendEntry(_open_exact, "bit-exact emulator (the golden model), default"),
    "emu:exact": BackendEntry(_open_exact, "same as emu"),
    "emu:fast": BackendEntry(_open_fast, "torch emulator, statistically equivalent, fast"),
    "float": BackendEntry(_open_float, "float32 baseline, no offload"),
    "sim": BackendEntry(_open_device(lambda rest: f"sim:{rest}"),
                        "sim:verilator (free-running) / sim:verilator-cocotb / sim:icarus: the SoC's RTL in "
                        "simulation, through the Device driver"),
    "serial": BackendEntry(_open_device(lambda rest: f"serial:{rest}"),
                           "serial:PORT@BAUD: a board running the bitstream"),
    "device": BackendEntry(_open_device(lambda rest: rest),
                           "device:SPEC: the Device driver on a device spec (device:emu: protocol emulator)"),
}


def register_backend(spec: str, open_: Callable, help: str) -> None:
    """Add (or replace) the registry entry ``spec``: an exact spec or a scheme; ``open_(rest, config, seed,
    options)`` returns the backend."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"Backend spec must be a non-empty string, not {spec!r}")
    BACKENDS[spec] = BackendEntry(open_, help)


def backend_specs() -> str:
    """The registry as one line of help text."""
    return "; ".join(f"{spec}: {entry.help}" for spec, entry in BACKENDS.items())


def open_backend(spec: str, *, config: "EngineConfig | None" = None, seed: int = 0, **options) -> "Backend | None":
    """The backend named by ``spec`` (module docstring), seeded with ``seed``; None for ``"float"``.

    ``config`` is the engine of an emulator (default ``EngineConfig()``) or the one a simulated SoC is built with;
    ``options`` go to :func:`fxtrain.host.device_spec.open_device` (``timeout``, ``expect``, ``build_root``, ...).
    Raises ValueError for an unknown spec, naming the known ones, and whatever opening it raises
    (``fxtrain.host.transport.TransportError`` for a port or simulator that cannot be opened,
    ``fxtrain.host.device.DeviceError`` for a device that does not answer).
    """
    if not isinstance(spec, str):
        raise TypeError(f"Backend spec must be a string, not {spec!r}")
    entry, rest = BACKENDS.get(spec), ""
    if entry is None:
        scheme, sep, rest = spec.partition(":")
        entry = BACKENDS.get(scheme) if sep and rest else None
    if entry is None:
        known = ", ".join(s if ":" in s or s in ("emu", "float") else f"{s}:..." for s in BACKENDS)
        raise ValueError(f"Unknown backend {spec!r}: use one of {known}")
    if config is not None and not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    return entry.open(rest, config, seed, options)
