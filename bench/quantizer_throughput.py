"""Throughput (elements/s) of fxtrain's stochastic fixed-point quantizer (one fused compiled pass,
:mod:`fxtrain.host.kernels`) versus QPyTorch's stochastic ``qtorch.quant.fixed_point_quantize`` (when importable),
fxtrain's own nearest-mode pass and a naive float64 numpy baseline (``FixedFormat.to_raw``), same run, same input.

Targets (issue 15): stochastic >= 10x QPyTorch's, and at most 2x the time of our nearest pass. Also reported: the
same pass writing into a preallocated tensor (``out=``), and the cost of allocating and first touching a result
tensor of that size (``torch.empty_like(x).fill_(0)``), which bounds any out-of-place quantizer::

    python bench/quantizer_throughput.py                 # 8,388,608 elements, 1 thread
    python bench/quantizer_throughput.py --threads 2
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
    parser.add_argument("--elements", type=int, default=1 << 23)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--format", default="16.8")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fmt = FixedFormat.parse(args.format)
    x = torch.randn(args.elements, generator=torch.Generator().manual_seed(0)) * 4
    gen = torch.Generator().manual_seed(1)
    out = torch.empty_like(x)
    ours = rate(lambda: quantize(x, fmt, "stochastic", gen), args.elements, args.repeats)
    nearest = rate(lambda: quantize(x, fmt, "nearest"), args.elements, args.repeats)
    ours_out = rate(lambda: quantize(x, fmt, "stochastic", gen, out=out), args.elements, args.repeats)
    nearest_out = rate(lambda: quantize(x, fmt, "nearest", out=out), args.elements, args.repeats)
    alloc = rate(lambda: torch.empty_like(x).fill_(0), args.elements, args.repeats)
    print(f"{args.elements} float32 elements, format {fmt}, {args.threads} thread(s), median of {args.repeats}")
    print(f"  fxtrain quantize, stochastic          {ours / 1e6:8.1f} M elements/s")
    print(f"  fxtrain quantize, nearest             {nearest / 1e6:8.1f} M elements/s  "
          f"-> stochastic costs {nearest / ours:.2f}x nearest (target <= 2x)")
    print(f"  fxtrain quantize, stochastic, out=    {ours_out / 1e6:8.1f} M elements/s")
    print(f"  fxtrain quantize, nearest, out=       {nearest_out / 1e6:8.1f} M elements/s  "
          f"-> stochastic costs {nearest_out / ours_out:.2f}x nearest")
    print(f"  allocate + first touch (empty+fill)   {alloc / 1e6:8.1f} M elements/s  (bound of any out-of-place pass)")
    try:
        from qtorch.quant import fixed_point_quantize
    except Exception as error:  # qtorch builds a C++ extension on first import
        print(f"  qtorch unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    else:
        try:
            theirs = rate(lambda: fixed_point_quantize(x, fmt.wl, fmt.fl, rounding="stochastic"), args.elements,
                          args.repeats)
            print(f"  qtorch fixed_point_quantize, stoch.   {theirs / 1e6:8.1f} M elements/s  "
                  f"-> ours {ours / theirs:.1f}x, ours with out= {ours_out / theirs:.1f}x (target >= 10x)")
        except Exception as error:
            print(f"  qtorch fixed_point_quantize failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    rng = np.random.default_rng(2)
    xn = x.numpy()
    naive = rate(lambda: fmt.to_raw(xn, "stochastic", rng) * fmt.resolution, args.elements, args.repeats)
    print(f"  naive numpy float64 (FixedFormat)     {naive / 1e6:8.1f} M elements/s  -> ours {ours / naive:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
