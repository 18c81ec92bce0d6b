"""Throughput (elements/s) of the stochastic fixed-point quantizer fxtrain.host.quantize.quantize versus
QPyTorch's ``qtorch.quant.fixed_point_quantize`` (when importable) and a naive float64 numpy baseline
(``FixedFormat.to_raw``), same run, same input. Target: >= 5x the reference::

    python bench/quantizer_throughput.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from fxtrain.host.quantize import quantize
from fxtrain.sim.fixedpoint import FixedFormat


def rate(fn, n, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--elements", type=int, default=1 << 22)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--format", default="16.8")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fmt = FixedFormat.parse(args.format)
    x = torch.randn(args.elements, generator=torch.Generator().manual_seed(0)) * 4
    gen = torch.Generator().manual_seed(1)
    ours = rate(lambda: quantize(x, fmt, "stochastic", gen), args.elements, args.repeats)
    print(f"{args.elements} float32 elements, format {fmt}, stochastic, {args.threads} thread(s)")
    print(f"  fxtrain.host.quantize.quantize      {ours / 1e6:8.1f} M elements/s")
    try:
        from qtorch.quant import fixed_point_quantize
    except Exception as error:  # qtorch builds a C++ extension on first import
        print(f"  qtorch unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    else:
        try:
            theirs = rate(lambda: fixed_point_quantize(x, fmt.wl, fmt.fl, rounding="stochastic"), args.elements,
                          args.repeats)
            print(f"  qtorch fixed_point_quantize         {theirs / 1e6:8.1f} M elements/s  "
                  f"-> ours {ours / theirs:.1f}x (target >= 5x)")
        except Exception as error:
            print(f"  qtorch fixed_point_quantize failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    rng = np.random.default_rng(2)
    xn = x.numpy()
    naive = rate(lambda: fmt.to_raw(xn, "stochastic", rng) * fmt.resolution, args.elements, args.repeats)
    print(f"  naive numpy float64 (FixedFormat)   {naive / 1e6:8.1f} M elements/s  -> ours {ours / naive:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
