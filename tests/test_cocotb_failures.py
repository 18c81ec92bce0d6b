"""A failing cocotb test shows up in the pytest failure with its assertion's text, not only as a count."""

import pytest

from fxtrain.sim.runner import BenchFailed

TINY = "module tiny(input wire a, output wire y);\n  assign y = a;\nendmodule\n"


def test_failed_bench_reports_the_failing_assertion(simulator, run_cocotb):
    with pytest.raises(BenchFailed) as failure:
        run_cocotb(TINY, "tiny", "failing_bench", simulator, {})
    message = str(failure.value)
    print(message[:2000])
    assert message.startswith(f"1 of 2 cocotb tests of failing_bench failed on {simulator}:")
    assert "fails_with_a_message: " in message
    assert "y is 0; this bench expects 99 on purpose" in message
