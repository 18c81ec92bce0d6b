"""A cocotb bench that fails on purpose, for ``tests/test_cocotb_failures.py`` (not collected by pytest)."""

import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def passes(dut):
    dut.a.value = 1
    await Timer(1, "ns")
    assert int(dut.y.value) == 1


@cocotb.test()
async def fails_with_a_message(dut):
    dut.a.value = 0
    await Timer(1, "ns")
    value = int(dut.y.value)
    assert value == 99, f"y is {value}; this bench expects 99 on purpose"
