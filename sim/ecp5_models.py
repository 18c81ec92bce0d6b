"""Behavioural Verilog models of the ECP5 primitives the RTL instantiates, for Verilator and Icarus benches.

Yosys ships ``MULT18X18D`` only as a black box (``share/ecp5/cells_bb.v``), so a bench of the DSP
multiplier (:class:`fxtrain.rtl.multiplier.RegisteredMultiplier` with ``kind="mult18x18d"``) appends
:data:`MULT18X18D_MODEL` to the design's Verilog. The model implements the subset of the primitive the RTL
uses, per the ECP5 sysDSP usage guide (FPGA-TN-02205): ``P = A * B`` over 18-bit operands, each signed when
its ``SIGNEDA``/``SIGNEDB`` input is high, a 36-bit product; the A, B and output registers each either
bypassed (``"NONE"``) or clocked by ``CLK0`` with clock enable ``CE0`` and synchronous reset ``RST0``
(``RESETMODE = "SYNC"``). Any other parameter value (another clock, the pipeline register, asynchronous
reset, ``SOURCEA``/``SOURCEB`` shift inputs) stops the simulation with ``$fatal`` instead of being
simulated wrongly.

Members
-------
MULT18X18D_MODEL : str
    The Verilog text.
with_ecp5_models
    A design's Verilog text with the models appended.
"""

__all__ = ["MULT18X18D_MODEL", "with_ecp5_models"]


def _mult18x18d_model():
    bits = lambda name, n: ", ".join(f"{name}{i}" for i in range(n))          # noqa: E731
    cat = lambda name, n: "{" + ", ".join(f"{name}{i}" for i in reversed(range(n))) + "}"   # noqa: E731
    p_assign = "\n".join(f"    assign P{i} = p_out[{i}];" for i in range(36))
    return f"""
// Behavioural model of the ECP5 MULT18X18D subset used by fxtrain (sim/ecp5_models.py).
module MULT18X18D(
    input {bits('A', 18)},
    input {bits('B', 18)},
    input {bits('C', 18)},
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CE0, RST0,
    output {bits('P', 36)}
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    initial begin
        if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0") ||
            (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0") ||
            (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0") ||
            REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_OUTPUT_CE != "CE0" ||
            REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0" || REG_OUTPUT_RST != "RST0" ||
            REG_PIPELINE_CLK != "NONE" || REG_INPUTC_CLK != "NONE" || RESETMODE != "SYNC" ||
            MULT_BYPASS != "DISABLED" || HIGHSPEED_CLK != "NONE") begin
            $display("MULT18X18D model: unsupported parameters");
            $fatal(1);
        end
    end

    wire [17:0] a_pin = {cat('A', 18)};
    wire [17:0] b_pin = {cat('B', 18)};
    reg [17:0] a_reg = 18'd0, b_reg = 18'd0;
    reg sa_reg = 1'b0, sb_reg = 1'b0;
    always @(posedge CLK0) begin
        if (SOURCEA !== 1'b0 || SOURCEB !== 1'b0) begin
            $display("MULT18X18D model: SOURCEA/SOURCEB shift inputs are not modelled");
            $fatal(1);
        end
        if (RST0) begin
            a_reg <= 18'd0; b_reg <= 18'd0; sa_reg <= 1'b0; sb_reg <= 1'b0;
        end else if (CE0) begin
            a_reg <= a_pin; b_reg <= b_pin; sa_reg <= SIGNEDA; sb_reg <= SIGNEDB;
        end
    end
    wire [17:0] a = (REG_INPUTA_CLK == "NONE") ? a_pin : a_reg;
    wire [17:0] b = (REG_INPUTB_CLK == "NONE") ? b_pin : b_reg;
    wire sa = (REG_INPUTA_CLK == "NONE") ? SIGNEDA : sa_reg;
    wire sb = (REG_INPUTB_CLK == "NONE") ? SIGNEDB : sb_reg;
    wire signed [36:0] a_ext = {{{{19{{sa & a[17]}}}}, a}};
    wire signed [36:0] b_ext = {{{{19{{sb & b[17]}}}}, b}};
    wire signed [73:0] product = a_ext * b_ext;
    wire [35:0] p_comb = product[35:0];
    reg [35:0] p_reg = 36'd0;
    always @(posedge CLK0) begin
        if (RST0)
            p_reg <= 36'd0;
        else if (CE0)
            p_reg <= p_comb;
    end
    wire [35:0] p_out = (REG_OUTPUT_CLK == "NONE") ? p_comb : p_reg;
{p_assign}
endmodule
"""


MULT18X18D_MODEL = _mult18x18d_model()


def with_ecp5_models(verilog_text):
    """``verilog_text`` followed by the primitive models (for :func:`fxtrain.sim.runner.run_bench`)."""
    return verilog_text + "\n" + MULT18X18D_MODEL
