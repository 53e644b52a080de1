"""`xdream-ts demo` (the README's `make demo`): the loop on the shipped model, start to finish.

Searches four units at different depths of the shipped FordA ResNet (block1, block2, block3 at the
centre time step, and a logit) through the shipped decoder, once with XDream's genetic algorithm and
once with the default optimizer, at the same budget. Prints one row per unit and optimizer (best real
FordA series, best found, relative activation, presentations) and writes plots (score per generation,
best stimulus beside the best real series, stimuli at log-spaced generations) as PNG files into a folder
it names at the end. Sized to finish within about 3 minutes on 2 CPU cores.
"""
from __future__ import annotations

import time
from pathlib import Path

DEMO_UNITS = (("block1/out", "center"), ("block2/out", "center"), ("block3/out", "center"), ("logits", "none"))
OPTIMIZERS = ("genetic", "default")


def demo_units():
    """One unit per depth: the first of the shipped benchmark selection at each tensor (logit 1 = FordA class 1)."""
    from .reference import ReferenceUnit, select_reference_units
    units = select_reference_units()
    chosen = []
    for tensor, position in DEMO_UNITS:
        picks = [u for u in units if u.tensor == tensor]
        chosen.append(picks[-1] if tensor == "logits" else picks[0])
    return [ReferenceUnit(*u) for u in chosen]


def run_demo(out: str | Path = "demo-output", budget: int = 2000, seed: int = 0, progress: bool = True,
             units=None, optimizers=OPTIMIZERS, plots: bool = True) -> list[dict]:
    from .decoders import make_decoder
    from .loop import run
    from .reference import best_real_series
    from .targets import Target, TargetSpec, build

    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    decoder_spec = _decoder_spec()
    decoder = make_decoder(decoder_spec, length=500)
    rows = []
    for unit in units or demo_units():
        position = "center" if unit.position == "none" else unit.position
        target = build(TargetSpec(units=[Target(unit.tensor, unit.channel, position)]))
        scorer, ref = target.scorer, target.reference_max
        real = best_real_series(unit)
        real_score = float(scorer(real[None])[0])
        for name in optimizers:
            tag = f"{unit.tensor.replace('/', '-')}-u{unit.channel}-{name}"
            store = runs_dir / f"{tag}.zarr"
            if store.exists():
                import shutil
                shutil.rmtree(store)  # the demo's own output from a previous demo: start afresh
            t0 = time.perf_counter()
            r = run(decoder, scorer, name, budget=budget, seed=seed, store=store, progress=progress,
                    reference_max=ref, config={"unit": unit._asdict(), "best_real_score": real_score,
                                               "target": target.spec.to_dict()})
            rows.append({"unit": f"{unit.tensor}:{unit.channel}", "optimizer": name, "best_real": real_score,
                         "best_found": r.best_score, "relative": r.relative_activation,
                         "presentations": r.presentations, "seconds": time.perf_counter() - t0,
                         "store": str(store)})
    print(format_table(rows, decoder_spec))
    if plots:
        from .report import report
        report([Path(r["store"]) for r in rows], out / "plots")
        print(f"\nplots written to {out / 'plots'}/  (run stores in {runs_dir}/)")
    return rows


def _decoder_spec() -> str:
    from .decoders import default_decoder_spec
    return default_decoder_spec()


def format_table(rows: list[dict], decoder: str) -> str:
    head = (f"{'unit':16s} {'optimizer':9s} {'best real':>10s} {'best found':>11s} {'relative':>9s} "
            f"{'presentations':>13s} {'time':>6s}")
    lines = [f"shipped FordA ResNet, decoder {decoder}; relative = best found / best over all 4921 FordA series",
             head, "-" * len(head)]
    for r in rows:
        rel = "n/a" if r["relative"] is None else f"{r['relative']:.2f}"
        lines.append(f"{r['unit']:16s} {r['optimizer']:9s} {r['best_real']:10.3f} {r['best_found']:11.3f} "
                     f"{rel:>9s} {r['presentations']:13d} {r['seconds']:5.0f}s")
    return "\n".join(lines)


def add_cli(sub) -> None:
    p = sub.add_parser("demo", help="search units of the shipped model; print a table, write plots",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--out", default="demo-output", help="folder for run stores and plots (default demo-output)")
    p.add_argument("--budget", type=int, default=2000, help="presentations per search (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from .errors import UserError
    if args.budget < 1:
        raise UserError(f"--budget must be a positive integer, got {args.budget}")
    run_demo(args.out, budget=args.budget, seed=args.seed, progress=args.progress)
    return 0
