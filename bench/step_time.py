"""LeNet training-step time (batch 64) with every conv/linear GEMM offloaded, versus float32 PyTorch, same run.

Targets (issue 15): fast emulator <= 1.5x float32, exact emulator <= 4x. Each configuration runs ``--warmup``
steps, then the median of ``--steps`` timed steps is reported, for each thread count of ``--threads`` (torch's and
the compiled kernels' thread count; float32 is measured again at each count, the ratio uses the same count)::

    python bench/step_time.py                  # 1 and 2 threads
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from fxtrain.host.emulator import ExactEmulator, FastEmulator
from fxtrain.host.convert import convert
from fxtrain.host.models import build_model


def step_times(model, x, y, warmup, steps):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--exact-steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounding", default="stochastic", choices=("stochastic", "nearest"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    for threads in args.threads:
        torch.set_num_threads(threads)  # the compiled kernels follow torch's thread count
        base = step_times(build_model("lenet"), x, y, args.warmup, args.steps)
        print(f"LeNet, batch {args.batch}, {args.rounding} rounding, {threads} thread(s), median of timed steps")
        print(f"  float32        {1e3 * base:8.1f} ms/step")
        for name, backend, steps, target in (("fast emulator", FastEmulator(), args.steps, 1.5),
                                             ("exact emulator", ExactEmulator(), args.exact_steps, 4.0)):
            model = convert(build_model("lenet"), backend, rounding=args.rounding)
            t = step_times(model, x, y, args.warmup, steps)
            print(f"  {name:14s} {1e3 * t:8.1f} ms/step  {t / base:6.1f}x float32 (target <= {target}x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
