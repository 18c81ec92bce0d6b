"""``fxtrain sweep``: many ``fxtrain train`` runs on Ray Tune (:mod:`fxtrain.host.sweep`), with ASHA early stopping.

Every ``fxtrain train`` option takes a list ``a,b,c`` (grid) or ``uniform:LO:HI`` / ``loguniform:LO:HI`` /
``randint:LO:HI`` / ``choice:a,b`` (random search, ``--samples`` draws); ``--space FILE`` (JSON or TOML) gives the
same as a table. Needs ``pip install 'fxtrain[sweep]'``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .sweep_report import summarize, trial_rows, write_report

_CONTROL = {"space", "samples", "scheduler", "grace_period", "reduction_factor", "metric", "mode", "cpus_per_trial",
            "boards", "board_spec", "max_concurrent", "address", "num_cpus", "out", "resume", "lock_dir",
            "command", "_module"}


def _sweepable():
    from .sweep import SWEEPABLE
    return SWEEPABLE


def add_arguments(parser):
    for name in _sweepable():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="VALUES",
                            help=f"values of train's --{name.replace('_', '-')}")
    parser.add_argument("--space", metavar="FILE", help="search space as a .json or .toml table (flags override)")
    parser.add_argument("--samples", type=int, default=1,
                        help="random draws (per grid point) for random-search options (default 1)")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default="asha",
                        help="asha: stop trials that are behind after --grace-period epochs (default); fifo: run "
                             "every trial to the end")
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    parser.add_argument("--reduction-factor", type=float, default=2,
                        help="ASHA: keep the best 1/F of the trials at each rung (default 2)")
    parser.add_argument("--metric", default="test_accuracy", help="metric ASHA and the best trial use")
    parser.add_argument("--mode", choices=("max", "min"), default="max")
    parser.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs a trial takes (default 1)")
    parser.add_argument("--boards", default="", metavar="PORT,PORT",
                        help="board trials: serial ports of the boards (one board per trial, never shared)")
    parser.add_argument("--board-spec", default="serial:{port}@3000000",
                        help="backend of a board trial, {port} replaced by its port (default serial:{port}@3000000)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray instance (default: all of this machine's)")
    parser.add_argument("--lock-dir", default=None, help="board lease locks (default $TMPDIR/fxtrain-board-locks)")
    parser.add_argument("--out", default=None, metavar="DIR", help="sweep directory (default runs/sweep)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --out")


def build_sweep(args):
    from .sweep import SweepConfig, load_space, parse_values

    values = load_space(args.space) if args.space else {}
    for name in _sweepable():
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    if values.get("data"):
        values["data"] = str(Path(values["data"]).resolve())  # trials run in their own directories
    space = {name: parse_values(name, value) for name, value in values.items()}
    _check_values(space)
    swept = [name for name, value in space.items() if not isinstance(value, (str, int, float))]
    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, not {args.samples}")
    boards = [p for p in args.boards.split(",") if p] if args.boards else []
    sweep = SweepConfig(space=space, out_dir=args.out or "runs/sweep", num_samples=args.samples,
                        asha=args.scheduler == "asha", grace_period=args.grace_period,
                        reduction_factor=args.reduction_factor, metric=args.metric, mode=args.mode,
                        cpus_per_trial=args.cpus_per_trial, boards=boards, board_spec=args.board_spec,
                        max_concurrent=args.max_concurrent, address=args.address, num_cpus=args.num_cpus,
                        resume=args.resume, lock_dir=args.lock_dir)
    return sweep, swept


def run(args) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("fxtrain sweep needs Ray Tune: pip install 'fxtrain[sweep]'") from None
    from .sweep import run_sweep

    sweep, swept = build_sweep(args)
    record = Path(sweep.out_dir) / "sweep.json"
    if sweep.resume:
        if record.is_file():
            swept = json.loads(record.read_text())["swept"]
    else:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"swept": swept, "scheduler": args.scheduler}))
    start = time.perf_counter()
    results = run_sweep(sweep)
    wall = time.perf_counter() - start
    rows = trial_rows(results, swept)
    paths = write_report(sweep.out_dir, rows, title=f"{sweep.name}: {args.scheduler}, {len(rows)} trials")
    total = summarize(rows)
    best = total["best_test_accuracy"]
    print(f"sweep {sweep.name}: {total['trials']} trials, {total['completed']} completed, "
          f"{total['stopped_early']} stopped early, {total['errors']} failed; {total['epochs_run']} of "
          f"{total['epochs_planned']} epochs run; {wall:.1f} s wall; best test accuracy "
          f"{'-' if best is None else f'{100 * best:.2f}%'} ({total['best_trial']}); "
          f"{paths['markdown']}, {paths['csv'].name}, {paths['plot'].name}")
    if total["unfinished"]:
        print(f"sweep interrupted with {total['unfinished']} trials unfinished: continue with fxtrain sweep --resume "
              f"--out {sweep.out_dir}")
    return 1 if total["errors"] else 0



def _check_values(space):
    """Raise ValueError (naming the value) for a constant or grid value that ``fxtrain train`` would refuse, before
    any trial starts."""
    from .train import TrainConfig

    for name, value in space.items():
        candidates = value["grid_search"] if isinstance(value, dict) and "grid_search" in value else [value]
        for candidate in candidates:
            if isinstance(candidate, (str, int, float)):
                TrainConfig(**{name: candidate})
