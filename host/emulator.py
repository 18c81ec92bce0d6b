"""GEMM-engine emulators: two implementations of :class:`fxtrain.host.backend.Backend`.

* :class:`ExactEmulator` — bit-identical to the RTL and the board (``docs/numerics.md`` §6): every GEMM goes
  through :func:`fxtrain.sim.gemm.tiled_gemm`, the golden model, and the LFSR lane states persist across calls.
* :class:`FastEmulator` — same exact accumulation (§5, float64 products of raw integers) and the same rounder
  formula ``sat_WL(floor((acc + offset) / 2**s))`` (§3), but in stochastic mode ``offset`` is drawn uniformly
  from ``[0, 2**s)`` by a :class:`torch.Generator` instead of the LFSR lanes: statistically equivalent, not bit
  identical. Nearest rounding is bit identical. It accepts and returns torch tensors, so the training layers
  avoid copies. Use it for long experiments.

Both return :class:`fxtrain.sim.gemm.GemmResult` and restore their random state from ``state_dict()`` (lane states
or generator state, and the counters), so a training checkpoint resumes the random sequence exactly
(``restores_state``).

Members
-------
ExactEmulator
    Golden-model backend.
FastEmulator
    Torch backend for long runs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..sim.gemm import EngineConfig, GemmResult, tiled_gemm
from ..sim.lfsr import lane_seeds
from ..sim.rounding import RoundingMode, check_shift, parse_mode

__all__ = ["ExactEmulator", "FastEmulator", "COUNTER_NAMES"]

COUNTER_NAMES = ("gemms", "macs", "outputs", "saturated")


def _check_config(config):
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an fxtrain.sim.gemm.EngineConfig, not {config!r}")
    return config


def _check_seed(seed):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"Seed must be a non-negative integer, not {seed!r}")
    return int(seed)


class ExactEmulator:
    """Bit-exact emulator of the GEMM engine (the golden model :func:`fxtrain.sim.gemm.tiled_gemm`).

    Parameters
    ----------
    config : EngineConfig
        Engine geometry and word length (default ``EngineConfig()``, the board's).
    seed : int
        Lane seeds are ``lane_seeds(seed, config.lanes)`` (§4.3), as after ``Device.seed(seed)``.

    Members
    -------
    config : EngineConfig
    counters : dict
        ``gemms``, ``macs`` (M*K*N summed), ``outputs`` (M*N summed), ``saturated`` (outputs clamped).
    lane_state : list of int
        Current LFSR lane states; assignable (validated by the next GEMM).
    accepts_torch : bool
        False: :meth:`gemm` converts torch input to numpy and returns numpy.
    restores_state : bool
        True.
    seed, gemm, state_dict, load_state_dict, close
    """

    accepts_torch = False
    restores_state = True

    def __init__(self, config: EngineConfig = None, seed: int = 0):
        self.config = _check_config(EngineConfig() if config is None else config)
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.seed(seed)

    def seed(self, seed: int) -> None:
        """Load the lanes with ``lane_seeds(seed, lanes)``, like the device's seed command."""
        self.lane_state = lane_seeds(_check_seed(seed), self.config.lanes, self.config.lane_width)

    def gemm(self, a, b, shift, mode, *, b_key=None) -> GemmResult:
        """``round(A @ B)`` exactly as the engine computes it; ``b_key`` is accepted and ignored.

        ``a`` (M x K) and ``b`` (K x N) are raw integer arrays (numpy, or torch integer tensors) fitting
        ``config.wl`` signed bits; ``shift`` 0..32; ``mode`` ``"nearest"``/``"stochastic"``/RoundingMode.
        Raises ValueError (from the golden model) for operands, shapes or shifts the engine cannot take.
        """
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        result = tiled_gemm(self.config, a, b, shift, mode, self.lane_state)   # validates (sim.gemm.check_gemm)
        self.lane_state = list(result.lane_state)
        (m, k), n = a.shape, b.shape[1]
        self._count(m, k, n, int(result.saturated.sum()))
        return result

    def _count(self, m, k, n, saturated):
        self.counters["gemms"] += 1
        self.counters["macs"] += m * k * n
        self.counters["outputs"] += m * n
        self.counters["saturated"] += saturated

    def state_dict(self) -> dict:
        return {"kind": "exact", "lane_state": list(self.lane_state), "counters": dict(self.counters)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "exact":
            raise ValueError(f"Cannot load a {state.get('kind')!r} backend state into an ExactEmulator")
        if len(state["lane_state"]) != self.config.lanes:
            raise ValueError(f"Saved state has {len(state['lane_state'])} lanes, the engine {self.config.lanes}")
        self.lane_state = [int(s) for s in state["lane_state"]]
        self.counters = dict(state["counters"])

    def close(self) -> None:
        """Nothing to release."""


class FastEmulator:
    """Statistically equivalent, fast torch emulator of the GEMM engine (see the module docstring).

    Parameters
    ----------
    config : EngineConfig
        Word length and maximum K are honoured; rows/cols only matter to the exact emulator's lane order.
    seed : int
        Seeds the internal :class:`torch.Generator` that draws the stochastic rounding offsets.

    Members
    -------
    config : EngineConfig
    counters : dict
        As :class:`ExactEmulator`.
    generator : torch.Generator
    accepts_torch : bool
        True: :meth:`gemm` takes torch tensors holding raw integers (integer dtypes, checked, or floating dtypes
        that the caller guarantees hold in-range integers — not checked, it would cost passes over the operands)
        and returns float64 tensors (int64 numpy for numpy input).
    restores_state : bool
        True.
    seed, gemm, state_dict, load_state_dict, close
    """

    accepts_torch = True
    restores_state = True

    def __init__(self, config: EngineConfig = None, seed: int = 0):
        self.config = _check_config(EngineConfig() if config is None else config)
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.generator = torch.Generator()
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(_check_seed(seed))

    def gemm(self, a, b, shift, mode, *, b_key=None) -> GemmResult:
        """``sat_WL(floor((A @ B + offset) / 2**shift))`` with exact accumulation; ``b_key`` is ignored.

        Raises ValueError for non-matrix or mismatched operands, K above ``config.max_k``, operands that do not
        fit ``config.wl`` signed bits, or a shift outside 0..32.
        """
        numpy_in = not isinstance(a, torch.Tensor)
        a = torch.as_tensor(np.asarray(a) if numpy_in else a)
        b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b)
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"GEMM operands must be M x K and K x N matrices, not {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        m, k = a.shape
        n = b.shape[1]
        if min(m, k, n) < 1:
            raise ValueError(f"GEMM dimensions must be at least 1, not M={m}, K={k}, N={n}")
        if k > self.config.max_k:
            raise ValueError(f"K = {k} exceeds the engine's maximum K {self.config.max_k} "
                             f"(max_k_log2={self.config.max_k_log2})")
        shift = check_shift(shift)
        mode = parse_mode(mode)
        wl = self.config.wl
        lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
        for name, x in (("A", a), ("B", b)):
            if x.is_floating_point():
                continue  # the caller guarantees raw integers in range (the layers' quantizers clamp)
            if x.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
                raise ValueError(f"Operand {name} must hold raw integers, not {x.dtype}")
            low, high = torch.aminmax(x)
            if int(low) < lo or int(high) > hi:
                raise ValueError(f"Operand {name} has values outside {wl} signed bits [{lo}, {hi}]: "
                                 f"{int(low) if int(low) < lo else int(high)}")
        # Exact: |products| < 2**30 and K <= 2**20 keep every partial sum below 2**53 (numerics §6.1).
        acc = a.to(torch.float64) @ b.to(torch.float64)
        if mode is RoundingMode.STOCHASTIC and shift > 0:
            # floor(u * 2**s) of a uniform u on the 2**-24 (float32) or 2**-53 (float64) grid is uniform on
            # [0, 2**s) for s <= 24 / 53.
            dtype = torch.float32 if shift <= 24 else torch.float64
            acc.add_(torch.rand(acc.shape, generator=self.generator, dtype=dtype).mul_(1 << shift).floor_())
        elif shift > 0:
            acc.add_((1 << (shift - 1)) - 1)
        acc.mul_(2.0 ** -shift).floor_()
        low, high = torch.aminmax(acc)
        if int(low) < lo or int(high) > hi:
            saturated = (acc < lo) | (acc > hi)
            acc.clamp_(lo, hi)
        else:
            saturated = torch.zeros(acc.shape, dtype=torch.bool)
        self.counters["gemms"] += 1
        self.counters["macs"] += m * k * n
        self.counters["outputs"] += m * n
        self.counters["saturated"] += int(saturated.sum())
        if numpy_in:
            return GemmResult(acc.to(torch.int64).numpy(), saturated.numpy())
        return GemmResult(acc, saturated)

    def state_dict(self) -> dict:
        return {"kind": "fast", "generator": self.generator.get_state(), "counters": dict(self.counters)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "fast":
            raise ValueError(f"Cannot load a {state.get('kind')!r} backend state into a FastEmulator")
        self.generator.set_state(state["generator"])
        self.counters = dict(state["counters"])

    def close(self) -> None:
        """Nothing to release."""
