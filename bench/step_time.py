"""LeNet training-step time (batch 64) with every conv/linear GEMM offloaded, versus float32 PyTorch, same run.

Targets: fast emulator <= 1.5x float32, exact emulator <= 3x. Each configuration runs ``--warmup`` steps, then the
median of ``--steps`` timed steps is reported, with one torch thread for every configuration (the development
machine has 2 cores shared with other jobs; more threads only add spin-waiting there)::

    python bench/step_time.py
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
    parser.add_argument("--exact-steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounding", default="stochastic", choices=("stochastic", "nearest"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    base = step_times(build_model("lenet"), x, y, args.warmup, args.steps)
    print(f"LeNet, batch {args.batch}, {args.rounding} rounding, 1 thread, median of timed steps")
    print(f"  float32        {1e3 * base:8.1f} ms/step")
    for name, backend, steps, target in (("fast emulator", FastEmulator(), args.steps, 1.5),
                                         ("exact emulator", ExactEmulator(), args.exact_steps, 3.0)):
        model = convert(build_model("lenet"), backend, rounding=args.rounding)
        t = step_times(model, x, y, args.warmup, steps)
        print(f"  {name:14s} {1e3 * t:8.1f} ms/step  {t / base:6.1f}x float32 (target <= {target}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
