"""`xdream-ts sweep CONFIG.toml --out DIR`: the command line of sweeps."""
from __future__ import annotations

from pathlib import Path


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="run the product of targets, decoders, optimizers, noise models and seeds",
        description="Run a sweep described by CONFIG.toml (see `python -c \"import xdream_ts.sweep as s; "
                    "help(s.load_config)\"` for the format). One run store per task under --out; re-running the "
                    "same command skips finished tasks, resumes interrupted ones and retries failed ones.")
    p.add_argument("config", help="sweep TOML file")
    p.add_argument("--out", help="sweep folder (default: sweeps/CONFIG-NAME)")
    p.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://HOST:8786): run the tasks on that cluster")
    p.add_argument("--executor", choices=("processes", "dask", "serial"),
                   help="processes (default), dask (a LocalCluster unless --scheduler), serial (this process)")
    p.add_argument("--plausible", nargs="?", const=0.99, type=float, metavar="QUANTILE",
                   help="every model target searches under plausibility (as `run --plausible`; default 0.99), "
                        "unless its table sets plausible itself")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from .runner import sweep
    out = args.out or str(Path("sweeps") / Path(args.config).stem)
    result = sweep(args.config, out, executor=args.executor, scheduler=args.scheduler, workers=args.workers,
                   progress=args.progress, plausible=args.plausible)
    print(result.summary_line())
    return 1 if result.failed else 0
