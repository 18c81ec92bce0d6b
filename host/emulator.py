"""GEMM-engine emulators: two implementations of :class:`fxtrain.host.backend.Backend`.

* :class:`ExactEmulator` — bit-identical to the RTL and the board (``docs/numerics.md`` §6, §6.1): the exact
  float64 product of the raw operands, then one compiled pass (:func:`fxtrain.host.kernels.lanes_round`) that
  makes the LFSR lane words in the engine's tile order and rounds; the lane states persist across calls. Tested
  against :func:`fxtrain.sim.gemm.tiled_gemm`, the golden model, bit for bit.
* :class:`FastEmulator` — same exact accumulation (§5, float64 products of raw integers) and the same rounder
  formula ``sat_WL(floor((acc + offset) / 2**s))`` (§3), but in stochastic mode ``offset`` is drawn uniformly
  from ``[0, 2**s)`` by a counter-based generator keyed from a :class:`torch.Generator` (§6.2) instead of the LFSR
  lanes: statistically equivalent, not bit identical. Nearest rounding is bit identical. It accepts and returns torch tensors, so the training layers
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

from . import kernels
from ..sim.gemm import EngineConfig, GemmResult, check_gemm, tiled_gemm
from ..sim.lfsr import check_lfsr, lane_advance, lane_seeds
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


def _exact_acc(config, a, b):
    """``A @ B`` of int64 raw operands as float64 (exact, numerics §6.1), or None where it would not be exact."""
    if a.shape[1] * (1 << (2 * config.wl - 2)) >= 1 << 53:
        return None
    return a.astype(np.float64) @ b.astype(np.float64)


def _float_operands_acc(config, a, b, shift, mode):
    """Validate torch operands holding raw integers (integer dtypes range-checked; floating ones trusted) and
    return ``(acc, shift, mode)`` with ``acc`` the exact float64 product as a numpy array."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"GEMM operands must be M x K and K x N matrices, not {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    m, k = a.shape
    n = b.shape[1]
    if min(m, k, n) < 1:
        raise ValueError(f"GEMM dimensions must be at least 1, not M={m}, K={k}, N={n}")
    if k > config.max_k:
        raise ValueError(f"K = {k} exceeds the engine's maximum K {config.max_k} "
                         f"(max_k_log2={config.max_k_log2})")
    shift = check_shift(shift)
    mode = parse_mode(mode)
    wl = config.wl
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
    if k * (1 << (2 * wl - 2)) >= 1 << 53:
        raise ValueError(f"K = {k} at WL {wl} exceeds the float64 exactness bound of the torch path "
                         f"(numerics §6.1); pass int64 numpy operands to the ExactEmulator")
    # Exact: every partial sum of at most K products of magnitude <= 2**(2*WL-2) stays below 2**53, so the order
    # of summation does not matter and C = (B^T A^T)^T may be used: when A is a transposed view (the weight-gradient
    # GEMM, long K) that is the layout BLAS runs 2-3x faster (measured for LeNet's shapes).
    a, b = a.to(torch.float64), b.to(torch.float64)
    if a.stride(1) != 1 and b.stride(1) == 1:
        acc = torch.mm(b.t(), a.t()).t().contiguous()
    else:
        acc = torch.mm(a, b)
    return acc.numpy(), shift, mode


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
        True: :meth:`gemm` also takes floating torch tensors holding raw integers (as :class:`FastEmulator`) and
        then returns torch tensors.
    restores_state : bool
        True.
    seed, gemm, state_dict, load_state_dict, close
    """

    accepts_torch = True
    restores_state = True

    def __init__(self, config: EngineConfig = None, seed: int = 0):
        self.config = _check_config(EngineConfig() if config is None else config)
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.seed(seed)

    def seed(self, seed: int) -> None:
        """Load the lanes with ``lane_seeds(seed, lanes)``, like the device's seed command."""
        self.lane_state = lane_seeds(_check_seed(seed), self.config.lanes, self.config.lane_width)

    def gemm(self, a, b, shift, mode, *, b_key=None, a_view=None):
        """``round(A @ B)`` exactly as the engine computes it; ``b_key`` and ``a_view`` are accepted and ignored.

        ``a`` (M x K) and ``b`` (K x N) are raw integer arrays (numpy, or torch integer tensors) fitting
        ``config.wl`` signed bits, or floating torch tensors that the caller guarantees hold such integers (the
        training layers' quantizers clamp; not checked, as in :class:`FastEmulator`); ``shift`` 0..32; ``mode``
        ``"nearest"``/``"stochastic"``/RoundingMode. Raises ValueError (from the golden model's validator) for
        operands, shapes or shifts the engine cannot take. Numpy/integer input gives a :class:`GemmResult` of
        numpy arrays (int64 ``c``), floating torch input one of torch tensors (float32 ``c``).
        """
        floating = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_floating_point() \
            and b.is_floating_point()
        if floating:
            acc, shift, mode = _float_operands_acc(self.config, a, b, shift, mode)
        else:
            a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
            a, b, shift, mode = check_gemm(self.config, a, b, shift, mode)
            acc = _exact_acc(self.config, a, b)
        lane_state = [int(s) for s in self.lane_state]
        if len(lane_state) != self.config.lanes:
            raise ValueError(f"Engine has {self.config.lanes} lanes, but {len(lane_state)} lane states were given")
        for state in lane_state:
            check_lfsr(self.config.lane_width, state)
        if acc is None:  # the float64 product would not be exact (numerics §6.1): the golden model's int64 path
            result = tiled_gemm(self.config, a, b, shift, mode, lane_state)
            self.lane_state = list(result.lane_state)
            self._count(a.shape[0], a.shape[1], b.shape[1], int(result.saturated.sum()))
            return result
        m, n = acc.shape
        k = a.shape[1]
        rows, cols = self.config.rows, self.config.cols
        stochastic = mode is RoundingMode.STOCHASTIC
        states = np.array(lane_state, dtype=np.uint64)
        c = np.empty((m, n), dtype=np.float32 if floating else np.int64)
        saturated = np.empty((m, n), dtype=np.bool_)
        count = kernels.lanes_round(acc, c, saturated, states, rows, cols, shift, self.config.wl, stochastic,
                                    self.config.lane_width)
        if stochastic:
            self.lane_state = [int(s) for s in states]
        else:  # no word is read, but every lane advances once per output row of each tile (numerics §6)
            advances = -(-m // rows) * -(-n // cols) * rows
            self.lane_state = [lane_advance(s, advances, self.config.lane_width) for s in lane_state]
        self._count(m, k, n, int(count))
        if floating:
            return GemmResult(torch.from_numpy(c), torch.from_numpy(saturated), list(self.lane_state), int(count))
        return GemmResult(c, saturated, list(self.lane_state), int(count))

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

    def gemm(self, a, b, shift, mode, *, b_key=None, a_view=None) -> GemmResult:
        """``sat_WL(floor((A @ B + offset) / 2**shift))`` with exact accumulation; ``b_key`` and ``a_view`` are
        ignored.

        Raises ValueError for non-matrix or mismatched operands, K above ``config.max_k``, operands that do not
        fit ``config.wl`` signed bits, or a shift outside 0..32.
        """
        numpy_in = not isinstance(a, torch.Tensor)
        a = torch.as_tensor(np.asarray(a) if numpy_in else a)
        b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b)
        acc, shift, mode = _float_operands_acc(self.config, a, b, shift, mode)
        m, n = acc.shape
        stochastic = mode is RoundingMode.STOCHASTIC and shift > 0
        key = kernels.draw_key(self.generator) if stochastic else 0
        c = np.empty((m, n), dtype=np.int64 if numpy_in else np.float32)
        saturated = np.empty((m, n), dtype=np.bool_)
        count = kernels.round_into(acc, c, saturated, shift, self.config.wl, stochastic, key)
        self.counters["gemms"] += 1
        self.counters["macs"] += m * a.shape[1] * n
        self.counters["outputs"] += m * n
        self.counters["saturated"] += int(count)
        if numpy_in:
            return GemmResult(c, saturated, None, int(count))
        return GemmResult(torch.from_numpy(c), torch.from_numpy(saturated), None, int(count))

    def state_dict(self) -> dict:
        return {"kind": "fast", "generator": self.generator.get_state(), "counters": dict(self.counters)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "fast":
            raise ValueError(f"Cannot load a {state.get('kind')!r} backend state into a FastEmulator")
        self.generator.set_state(state["generator"])
        self.counters = dict(state["counters"])

    def close(self) -> None:
        """Nothing to release."""
