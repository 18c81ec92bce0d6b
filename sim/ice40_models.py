"""Behavioural Verilog model of the iCE40UP5K primitive the RTL instantiates, for Verilator and Icarus benches.

The B operand memory on iCE40 (:class:`fxtrain.rtl.operand_memory.OperandMemory` with ``kind="spram"``) is made
of ``SB_SPRAM256KA`` instances, which Yosys' ``synth_ice40`` maps to the UP5K's single-port RAMs. A bench of that
version appends :data:`SB_SPRAM256KA_MODEL` to the design's Verilog. The model follows the iCE40 SPRAM usage
guide (FPGA-TN-02022) and Yosys' ``share/ice40/cells_sim.v``: 16,384 x 16 bits; on a rising ``CLOCK`` with
``CHIPSELECT`` high, ``WREN`` high writes the nibbles of ``DATAIN`` enabled by ``MASKWREN`` at ``ADDRESS`` and
leaves ``DATAOUT`` undefined (``x``), ``WREN`` low loads ``DATAOUT`` with the entry at ``ADDRESS``; with
``CHIPSELECT`` low ``DATAOUT`` holds. Entries never written read as ``x`` (undefined after power-up, as on the
part; the golden model's memories start at zero, so benches read only entries they wrote, and the host planner
never runs on entries it did not write). The low-power inputs are not modelled: ``STANDBY`` or ``SLEEP`` high, or
``POWEROFF`` low (it is active low), stops the simulation with ``$fatal`` instead of being simulated wrongly.

Members
-------
SB_SPRAM256KA_MODEL : str
    The Verilog text.
with_ice40_models
    A design's Verilog text with the model appended.
"""

__all__ = ["SB_SPRAM256KA_MODEL", "with_ice40_models"]

SB_SPRAM256KA_MODEL = """
// Behavioural model of the iCE40UP5K SB_SPRAM256KA (sim/ice40_models.py).
module SB_SPRAM256KA(
    input [13:0] ADDRESS,
    input [15:0] DATAIN,
    input [3:0] MASKWREN,
    input WREN, CHIPSELECT, CLOCK, STANDBY, SLEEP, POWEROFF,
    output reg [15:0] DATAOUT
);
    reg [15:0] mem [0:16383];
    always @(posedge CLOCK) begin
        if (STANDBY !== 1'b0 || SLEEP !== 1'b0 || POWEROFF !== 1'b1) begin
            $display("SB_SPRAM256KA model: STANDBY/SLEEP/POWEROFF low-power modes are not modelled");
            $fatal(1);
        end
        if (CHIPSELECT) begin
            if (!WREN) begin
                DATAOUT <= mem[ADDRESS];
            end else begin
                if (MASKWREN[0]) mem[ADDRESS][3:0] <= DATAIN[3:0];
                if (MASKWREN[1]) mem[ADDRESS][7:4] <= DATAIN[7:4];
                if (MASKWREN[2]) mem[ADDRESS][11:8] <= DATAIN[11:8];
                if (MASKWREN[3]) mem[ADDRESS][15:12] <= DATAIN[15:12];
                DATAOUT <= 16'bx;
            end
        end
    end
endmodule
"""


def with_ice40_models(verilog_text):
    """``verilog_text`` followed by the primitive model (for :func:`fxtrain.sim.runner.run_bench`)."""
    return verilog_text + "\n" + SB_SPRAM256KA_MODEL
