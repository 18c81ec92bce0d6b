"""fmax of one ECP5 MULT18X18D between fabric flip-flops, with its registers off, output only, input and output.

Usage::

    python bench/dsp_registers.py [--device 45k] [--out build/dsp_registers]

The probe (Verilog below) is a 16 x 16 signed multiply: fabric flip-flops ``a``, ``b`` -> MULT18X18D ->
fabric flip-flops ``q`` -> one XOR-reduced output flip-flop. Yosys ``synth_ecp5`` keeps the explicit instance,
nextpnr-ecp5 places it out of context at a 300 MHz constraint and reports the fmax; nextpnr 0.11's timing model
honours the primitive's ``REG_*_CLK`` parameters. This is the DSP block's own limit in the same timing model as
the board builds (``docs/boards.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from fxtrain.boards.toolchain import toolchain_env

PROBE = """
module top(input clk, input [15:0] a_i, input [15:0] b_i, output o);
  reg [15:0] a, b; reg [31:0] q; reg r;
  wire [35:0] p;
  always @(posedge clk) begin a <= a_i; b <= b_i; q <= p[31:0]; r <= ^q; end
  assign o = r;
  MULT18X18D #(.REG_INPUTA_CLK(`RIN), .REG_INPUTB_CLK(`RIN), .REG_OUTPUT_CLK(`ROUT), .GSR("DISABLED")) m (
    %s
    .SIGNEDA(1'b1), .SIGNEDB(1'b1), .SOURCEA(1'b0), .SOURCEB(1'b0), .CLK0(clk), .CE0(1'b1), .RST0(1'b0),
    %s);
endmodule
""" % ("".join(f".A{i}(a[{min(i, 15)}]), .B{i}(b[{min(i, 15)}]), " for i in range(18)),
       ", ".join(f".P{i}(p[{i}])" for i in range(36)))

CONFIGS = {"no registers": ("NONE", "NONE"), "output register": ("NONE", "CLK0"),
           "input and output registers": ("CLK0", "CLK0")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="45k", help="nextpnr-ecp5 device option without dashes (default 45k)")
    parser.add_argument("--out", default="build/dsp_registers")
    args = parser.parse_args(argv)
    env = toolchain_env("ecp5")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "probe.v"), "w") as f:
        f.write(PROBE)
    results = {}
    for label, (rin, rout) in CONFIGS.items():
        tag = f"{rin}_{rout}"
        subprocess.run([env["YOSYS"], "-q", "-p", f'read_verilog -DRIN="{rin}" -DROUT="{rout}" probe.v; '
                        f"synth_ecp5 -top top -json {tag}.json"], cwd=args.out, env=env, check=True)
        subprocess.run([env["NEXTPNR_ECP5"], f"--{args.device}", "--package", "CABGA381", "--json", f"{tag}.json",
                        "--freq", "300", "--timing-allow-fail", "--out-of-context", "--seed", "1",
                        "--report", f"{tag}.report.json", "--log", f"{tag}.log", "--quiet"],
                       cwd=args.out, env=env, check=True)
        with open(os.path.join(args.out, f"{tag}.report.json")) as f:
            fmax = min(c["achieved"] for c in json.load(f)["fmax"].values())
        results[label] = round(fmax, 2)
        print(f"{label}: {fmax:.2f} MHz", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
