"""``fxtrain demo``: one GEMM in ``<WL, FL>`` fixed point, rounded to nearest and stochastically on the bit-exact
golden model, and a sub-ulp value rounded many times: nearest loses it, stochastic keeps it on average
(``docs/numerics.md`` §3).

With ``--device SPEC`` (``emu``, ``sim:verilator``, ``sim:icarus``, ``serial:PORT@BAUD``) the same GEMMs also run
on that device, seeded alike, and the demo reports whether every output word and saturation flag is identical to
the golden model's (the contract of ``docs/numerics.md``); it exits with status 1 if any differs."""

from __future__ import annotations

import numpy as np

from ..sim.fixedpoint import FixedFormat
from ..sim.gemm import EngineConfig, tiled_gemm
from ..sim.lfsr import lane_seeds


def add_arguments(parser):
    parser.add_argument("--format", default="16.8", help="operand/result format WL.FL (default 16.8)")
    parser.add_argument("--out-fl", type=int, default=None, help="result fraction bits (default: format's FL - 6)")
    parser.add_argument("--size", type=int, default=64, help="M = K = N of the GEMM (default 64)")
    parser.add_argument("--seed", type=int, default=1, help="seed of data and LFSR lanes (default 1)")
    parser.add_argument("--device", metavar="SPEC", default=None,
                        help="also run the GEMMs on this device (emu, sim:verilator, sim:icarus, serial:PORT@BAUD) "
                             "and check it is bit-identical to the golden model")


def _check_device(device, a, b, shift, mode, seed, golden):
    """Run one GEMM on ``device`` seeded with ``seed``; print and return whether it equals ``golden``."""
    device.seed(seed)
    got = device.gemm(a, b, shift, mode)
    words = int((np.asarray(got.c) != golden.c).sum())
    flags = int((np.asarray(got.saturated) != golden.saturated).sum())
    same = words == 0 and flags == 0
    verdict = "bit-identical" if same else f"DIFFERENT ({words} words, {flags} saturation flags)"
    print(f"  {mode:10s} on the device: {verdict} ({golden.c.size} outputs)")
    return same


def run(args):
    fmt = FixedFormat.parse(args.format)
    if not isinstance(args.size, int) or args.size < 1:
        raise ValueError(f"GEMM size must be a positive integer, not {args.size!r}")
    out_fl = fmt.fl - 6 if args.out_fl is None else args.out_fl
    shift = 2 * fmt.fl - out_fl
    device = None
    if args.device is not None:
        from .device_spec import open_device   # imported only when asked for: it pulls in the transports
        device = open_device(args.device, config=EngineConfig(wl=fmt.wl) if args.device == "emu" else None)
    try:
        config = EngineConfig(wl=fmt.wl) if device is None else device.config
        if config.wl != fmt.wl:
            raise ValueError(f"Device {args.device!r} has {config.wl}-bit operands, but the format is {fmt}")
        return _demo(args, fmt, out_fl, shift, config, device)
    finally:
        if device is not None:
            device.close()


def _demo(args, fmt, out_fl, shift, config, device):
    rng = np.random.default_rng(args.seed)
    x = rng.normal(0, 0.5, (args.size, args.size))
    w = rng.normal(0, 0.5, (args.size, args.size)) / np.sqrt(args.size)
    a, b = fmt.to_raw(x), fmt.to_raw(w)
    exact = fmt.from_raw(a) @ fmt.from_raw(b)
    print(f"GEMM {args.size}x{args.size}x{args.size}, operands {fmt}, result {fmt.wl}.{out_fl}, shift {shift}, "
          f"engine {config.rows}x{config.cols}" + (f", device {args.device}" if device is not None else ""))
    identical = True
    for mode in ("nearest", "stochastic"):
        result = tiled_gemm(config, a, b, shift, mode, lane_seeds(args.seed, config.lanes))
        error = result.c * 2.0 ** -out_fl - exact
        print(f"  {mode:10s} mean error {error.mean():+.3e}  rms error {np.sqrt((error ** 2).mean()):.3e}  "
              f"saturated {int(result.saturated.sum())}")
        if device is not None:
            identical &= _check_device(device, a, b, shift, mode, args.seed, result)
    # A value of 0.3 ulp of the result, rounded 4096 times (one row of a 1 x 1 x 4096 outer product).
    ones = np.ones((4096, 1), dtype=np.int64)
    tiny = np.full((1, 1), int(0.3 * 2 ** shift), dtype=np.int64)
    for mode in ("nearest", "stochastic"):
        result = tiled_gemm(config, ones, tiny, shift, mode, lane_seeds(args.seed, config.lanes))
        print(f"  0.3 ulp rounded 4096 times, {mode:10s}: mean {result.c.mean():.4f} ulp")
    return 0 if identical else 1
