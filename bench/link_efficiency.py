"""Bytes on the host link per MAC for the conv layers of a LeNet-style network, with and without residency.

The forward GEMMs of conv 1->6 5x5 and conv 6->16 5x5 on 28x28 MNIST (batch 64; im2col A = (batch*Ho*Wo) x
(Cin*25), B = weights (Cin*25) x Cout) go through the real host driver (``fxtrain.host.device.Device``) and the
protocol emulator (``fxtrain.sim.protocol.ProtocolEmulator``, byte-exact with the RTL), which count every byte
of every frame. Three policies:

* ``none``: every run sends its A and B chunk (the canonical tiling without any reuse),
* ``per-call``: the driver's default without ``b_key`` (an A chunk is sent once per tile row, B chunks once per
  call),
* ``b_key``: a second batch through the same layer with the weights named by ``b_key`` (already resident).

Also reported: protocol efficiency = payload bytes / bytes on the wire, and the wire time at 3 Mbaud (10 bits
per byte). Run ``python bench/link_efficiency.py`` (``--batch`` to change the batch, ``--json`` to save).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fxtrain.host.device import Device
from fxtrain.host.transport import EmulatorTransport
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.protocol import ProtocolEmulator

LAYERS = (("conv1 1->6 5x5", 1, 6, 28), ("conv2 6->16 5x5", 6, 16, 12))
CONFIGS = (("icebreaker 4x2", EngineConfig(rows=4, cols=2, wl=16, depth=512)),
           ("ulx3s-85f 12x12", EngineConfig(rows=12, cols=12, wl=16, depth=512)))
BAUD = 3_000_000


def layer_gemm(rng, batch, cin, cout, size, wl):
    """Random operands of the shapes of one conv layer's forward GEMM (values do not change byte counts)."""
    out = size - 4
    m, k = batch * out * out, cin * 25
    hi = 1 << (wl - 1)
    return rng.integers(-hi, hi, (m, k)), rng.integers(-hi, hi, (k, cout))


def measure(config, a, b, policy):
    dev = Device(EmulatorTransport(ProtocolEmulator(config, baud=BAUD)), residency=policy != "none")
    dev.seed(1)
    key = "weights" if policy == "b_key" else None
    if policy == "b_key":
        dev.gemm(a, b, 8, "stochastic", b_key=key)
    before = dict(dev.counters)
    start = time.perf_counter()
    dev.gemm(a, b, 8, "stochastic", b_key=key)
    seconds = time.perf_counter() - start
    d = {k: dev.counters[k] - before[k] for k in before}
    wire = d["bytes_sent"] + d["bytes_received"]
    payload = d["payload_sent"] + d["payload_received"]
    return {"macs": d["macs"], "wire_bytes": wire, "bytes_per_mac": wire / d["macs"],
            "payload_efficiency": payload / wire, "frames": d["frames"],
            "wire_seconds_at_3mbaud": 10 * wire / BAUD, "host_seconds": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    print(f"batch {args.batch}; bytes on the wire (both directions) per MAC, forward GEMM")
    print(f"{'engine':16} {'layer':16} {'policy':9} {'MACs':>10} {'wire bytes':>11} {'B/MAC':>7} "
          f"{'payload/wire':>12} {'frames':>7} {'s @3Mbaud':>9}")
    for cname, config in CONFIGS:
        for lname, cin, cout, size in LAYERS:
            a, b = layer_gemm(rng, args.batch, cin, cout, size, config.wl)
            for policy in ("none", "per-call", "b_key"):
                r = measure(config, a, b, policy)
                rows.append({"engine": cname, "layer": lname, "policy": policy, **r})
                print(f"{cname:16} {lname:16} {policy:9} {r['macs']:10d} {r['wire_bytes']:11d} "
                      f"{r['bytes_per_mac']:7.3f} {r['payload_efficiency']:12.3f} {r['frames']:7d} "
                      f"{r['wire_seconds_at_3mbaud']:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
