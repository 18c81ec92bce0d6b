"""``fxtrain estimate``: predicted time per training epoch on a board, by number format (``docs/time-model.md``).

Prints the epoch time of one board and format with its breakdown (engine compute, bytes on the link, per-exchange
latency, host), a table over word lengths 8 to 16 (FL does not change time), and writes a PNG plot of time per
epoch against word length for every board.

Members
-------
add_arguments, run
    The sub-command (``fxtrain.host.cli``).
format_breakdown, format_table, format_seconds, plot_boards
    Text and plot outputs, reused by ``bench/time_model.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sim.input_grad import INPUT_GRADS
from ..sim.fixedpoint import MAX_WL, FixedFormat
from . import timemodel

MODELS = ("lenet",)
TABLE_WLS = tuple(range(8, MAX_WL + 1))


def add_arguments(parser):
    parser.add_argument("--model", default="lenet", help=f"network to size: {', '.join(MODELS)} (default lenet)")
    parser.add_argument("--board", default="icebreaker", help="board name from fxtrain.boards.targets "
                        "(default icebreaker)")
    parser.add_argument("--format", default="16.8", help="operand format WL.FL or <WL,FL> (default 16.8)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--train-size", type=int, default=60000, help="training samples per epoch (default "
                        "60000, MNIST)")
    parser.add_argument("--exchange-ms", type=float, default=timemodel.DEFAULT_EXCHANGE_S * 1e3,
                        help="fixed latency of one request/response exchange over USB in ms (default "
                        f"{timemodel.DEFAULT_EXCHANGE_S * 1e3:g}, an assumption: FTDI latency timer at 1 ms)")
    parser.add_argument("--host-ms", type=float, nargs=2, metavar=("FIXED", "PER_SAMPLE"), default=None,
                        help="host time per step = FIXED + PER_SAMPLE * batch, in ms (default: measured now on "
                        "this machine with the exact emulator, a few seconds)")
    parser.add_argument("--no-host", action="store_true", help="leave host time out (board time only)")
    parser.add_argument("--packed", action="store_true", help="what-if NOT implemented by the RTL: two "
                        "products per DSP block where WL allows it (iCE40 WL<=8, ECP5 WL<=9)")
    parser.add_argument("--expander", action=argparse.BooleanOptionalAction, default=None,
                        help="convolution mode (EXPAND, feature maps sent once): default the board's; "
                        "--expander / --no-expander is a what-if where it differs (named so in the output)")
    parser.add_argument("--psum-slots", type=int, default=None, metavar="N",
                        help="partial-sum memory slots (K-split GEMMs chunk-outer, every operand chunk sent once "
                        "per group of N tiles): default the board's; a what-if where it differs (named so in the "
                        "output)")
    parser.add_argument("--input-grad", default="patches", choices=INPUT_GRADS,
                        help="a convolution's input gradient as the layers compute it (fxtrain train "
                        "--input-grad): the patch GEMM (default) or one convolution of dY (stride 1; its dY map "
                        "goes by EXPAND on a device with the expander)")
    parser.add_argument("--plot", default="time-per-epoch.png", help="PNG of time per epoch vs word length for "
                        "every board (default ./time-per-epoch.png; '' for none)")
    parser.add_argument("--plot-boards", default=None, help="comma-separated boards of the plot (default all)")


def _check_positive(name, value):
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value}")


def _check_nonnegative(name, value):
    if not value >= 0:
        raise ValueError(f"{name} must be non-negative, not {value}")


def model_layers(name):
    """Layer geometry of a named model (``--model``)."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODELS)}")
    return timemodel.lenet_layers()


def host_model(args):
    """The host model from ``--no-host``, ``--host-ms`` or a measurement now."""
    if args.no_host:
        return timemodel.HostModel()
    if args.host_ms is not None:
        fixed, per_sample = args.host_ms
        _check_nonnegative("Host fixed time (ms)", fixed)
        _check_nonnegative("Host time per sample (ms)", per_sample)
        return timemodel.HostModel(fixed * 1e-3, per_sample * 1e-3)
    print("measuring host time per step with the exact emulator ...", flush=True)
    return timemodel.measure_host_model()


def format_seconds(s):
    if s >= 86400:
        return f"{s / 86400:.2f} d"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s"


def format_breakdown(estimate):
    """Multi-line breakdown of one :class:`~fxtrain.host.timemodel.EpochEstimate`."""
    p = estimate.platform
    cfg = p.config
    total = estimate.total_s
    lines = [f"board {p.name} ({p.family}), engine {cfg.rows}x{cfg.cols} PEs, WL {cfg.wl}, depth {cfg.depth}, "
             f"B depth {cfg.b_depth}, "
             f"{p.clk_freq / 1e6:g} MHz" + (" [what-if: two products per DSP]" if p.packed else "")
             + (", convolution mode (expander)" if cfg.expander else ", no expander")
             + (" [what-if: expander " + ("on" if cfg.expander else "off") + ", the board's build differs]"
                if p.expander_whatif else "")
             + (f", {cfg.psum_slots} partial-sum slots" if cfg.psum_slots else ", no partial-sum memory")
             + (" [what-if: partial-sum slots, the board's build differs]" if p.psum_whatif else ""),
             f"format {estimate.fmt}: {value_bytes_text(cfg)}; batch {estimate.batch}, {estimate.train_size} samples "
             f"= {estimate.steps} step(s) of {estimate.batch}" +
             (f" + 1 of {estimate.remainder}" if estimate.remainder else ""),
             f"per epoch: {estimate.engine_cycles:,} engine cycles, {estimate.bytes_down:,} bytes to the device, "
             f"{estimate.bytes_up:,} bytes back, {estimate.exchanges:,} exchanges, {estimate.waits:,} waits"
             + (f" (pipelined, {p.rx_buffer}-byte receive buffer)" if estimate.pipelined else " (one per exchange)")]

    def line(label, value, share=True):
        text = f"  {label:34s} {format_seconds(value):>12s}"
        return text + (f"  {100 * value / total if total else 0.0:5.1f} %" if share else "")

    if estimate.pipelined:
        lines += [line("link down (bytes to the device)", estimate.down_s),
                  line("  overlapped with: link up", estimate.up_s, False),
                  line("  + compute (engine busy)", estimate.compute_s, False)]
        if estimate.expand_cycles:
            lines += [line("  + EXPAND (A from the maps)", estimate.expand_s, False)]
        lines += [line("  + reading requests (1 B/cycle)", estimate.process_s, False),
                  line("device and link (the larger)", estimate.device_s),
                  line("per-GEMM latency (waits)", estimate.exchange_s)]
    else:
        lines += [line("compute (engine busy)", estimate.compute_s), line("link (bytes on the wire)", estimate.link_s),
                  line("link (per-exchange latency)", estimate.exchange_s)]
    lines += [line("host", estimate.host_s), f"  {'total per epoch':34s} {format_seconds(total):>12s}",
              f"  engine busy {100 * estimate.busy_share:.1f} % of the time"]
    return "\n".join(lines)


def value_bytes_text(config):
    from ..sim.payloads import value_bytes
    n = value_bytes(config)
    return f"{n} byte{'s' if n > 1 else ''} per word on the wire"


def table_rows(board, layers, batch, train_size, fl, host, exchange_s, packed=False, wls=TABLE_WLS, expander=None,
               psum_slots=None, input_grad="patches"):
    """``[(wl, EpochEstimate or error text)]`` over word lengths for one board (FL clipped to WL); ``expander``
    and ``psum_slots`` as :func:`fxtrain.host.platforms.board_platform`, ``input_grad`` as
    :func:`fxtrain.host.timemodel.training_gemms`."""
    rows = []
    for wl in wls:
        fmt = FixedFormat(wl, min(fl, wl))
        try:
            platform = timemodel.board_platform(board, fmt, exchange_s=exchange_s, packed=packed, expander=expander,
                                                psum_slots=psum_slots)
        except ValueError as error:
            if not packed:
                rows.append((wl, str(error)))
                continue
            platform = timemodel.board_platform(board, fmt, exchange_s=exchange_s, expander=expander,
                                                psum_slots=psum_slots)
        rows.append((wl, timemodel.estimate_epoch(platform, layers, fmt, batch, train_size, host, input_grad)))
    return rows


def format_table(rows):
    """Markdown table of :func:`table_rows`."""
    out = ["| WL | bytes/word | compute | link down | link up | waits (latency) | host | total | link share |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for wl, e in rows:
        if isinstance(e, str):
            out.append(f"| {wl} | – | – | – | – | – | – | {e} | – |")
            continue
        from ..sim.payloads import value_bytes
        out.append(f"| {wl} | {value_bytes(e.platform.config)} | {format_seconds(e.compute_s)} | {format_seconds(e.down_s)} | "
                   f"{format_seconds(e.up_s)} | {format_seconds(e.exchange_s)} | {format_seconds(e.host_s)} | {format_seconds(e.total_s)} | "
                   f"{100 * e.link_share:.1f} % |")
    return "\n".join(out)


def plot_boards(path, boards, layers, batch, train_size, fl, host, exchange_s, packed=False, expander=None,
                psum_slots=None, input_grad="patches"):
    """PNG of predicted time per epoch vs word length, one line per board (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for board in boards:
        rows = [(wl, e) for wl, e in table_rows(board, layers, batch, train_size, fl, host, exchange_s, packed,
                                                expander=expander, psum_slots=psum_slots, input_grad=input_grad)
                if not isinstance(e, str)]
        ax.plot([wl for wl, _ in rows], [e.total_s / 3600 for _, e in rows], marker="o", label=board)
    ax.set_yscale("log")
    ax.set_xlabel("word length WL (bits)")
    ax.set_ylabel("predicted time per epoch (h)")
    ax.set_title(f"LeNet, batch {batch}, {train_size} samples per epoch" + (" (what-if: packed DSPs)"
                                                                            if packed else "")
                 + ("" if expander is None else f" (expander {'on' if expander else 'off'})")
                 + ("" if psum_slots is None else f" ({psum_slots} partial-sum slots)")
                 + ("" if input_grad == "patches" else f" ({input_grad} input gradients)"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def run(args):
    from ..boards.targets import TARGETS

    _check_positive("Batch size", args.batch)
    _check_positive("Training set size", args.train_size)
    _check_nonnegative("Exchange latency (ms)", args.exchange_ms)
    fmt = FixedFormat.parse(args.format)
    exchange_s = args.exchange_ms * 1e-3
    platform = timemodel.board_platform(args.board, fmt, exchange_s=exchange_s, packed=args.packed,
                                        expander=args.expander, psum_slots=args.psum_slots)
    layers = model_layers(args.model)
    host = host_model(args)
    estimate = timemodel.estimate_epoch(platform, layers, fmt, args.batch, args.train_size, host, args.input_grad)
    print(format_breakdown(estimate))
    print(f"  (a convolution's input gradient: {args.input_grad}, fxtrain train --input-grad)")
    print(f"  (host per step: {host.fixed_s * 1e3:.1f} ms + {host.per_sample_s * 1e3:.2f} ms x batch; exchange "
          f"latency {args.exchange_ms:g} ms, an assumption)")
    print(f"\ntime per epoch on {args.board} by word length (FL = {fmt.fl}, clipped to WL; FL does not change "
          f"time):")
    print(format_table(table_rows(args.board, layers, args.batch, args.train_size, fmt.fl, host, exchange_s,
                                  args.packed, expander=args.expander, psum_slots=args.psum_slots,
                                  input_grad=args.input_grad)))
    if args.plot:
        boards = list(TARGETS) if args.plot_boards is None else args.plot_boards.split(",")
        for board in boards:
            if board not in TARGETS:
                raise ValueError(f"Unknown board {board!r} in --plot-boards; known boards: {', '.join(TARGETS)}")
        path = plot_boards(args.plot, boards, layers, args.batch, args.train_size, fmt.fl, host,
                           exchange_s, args.packed, args.expander, args.psum_slots, args.input_grad)
        print(f"\nplot: {path}")
    return 0
