"""The XDream paper's figures (Xiao & Kreiman 2019) in the time-series domain, run as sweeps.

- Fig. 2, relative activation per depth: the shipped FordA ResNet's benchmark units (10 channels each of
  block1/out, block2/out, block3/out at the centre time step, and both logits), relative activation =
  best activation found / best activation over all 4921 FordA series for that unit (> 1: super stimulus).
- Fig. 5, optimizers under noise: every built-in gradient-free optimizer on simulated neurons (known
  optimum) without noise, with Poisson spiking noise and with multiplicative gain noise (Wang & Ponce
  2022); clean activation of the best-observed series, as a fraction of the neuron's optimum.
- Fig. 6, the genetic algorithm's hyperparameters varied one at a time around XDream's defaults
  (population 20, mutation rate 0.5, mutation size 0.5, selectivity 2, heritability 0.5).

Each figure is one ``xdream_ts.sweep`` (2 local worker processes) into ``--work`` (resumable: re-running
skips finished tasks), then ``xdream_ts.report`` writes its figures into
``experiments/results/xdream_figures[_quick]/figN/``; this script writes the tables and links to
``experiments/results/xdream_figures[_quick].md``. Also there: the "presentations until the first super
stimulus, median over units" table (Fig. 2 units).

    python experiments/bench_xdream_figures.py --quick   # small: ~2-10 minutes on 2 shared cores
    python experiments/bench_xdream_figures.py           # the papers' budgets (hours on 2 cores)
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GA_DEFAULTS = {"population_size": 20, "mutation_rate": 0.5, "mutation_size": 0.5, "selectivity": 2.0,
               "heritability": 0.5}
GA_VARIED = {"population_size": [10, 40], "mutation_rate": [0.25, 0.75], "mutation_size": [0.25, 1.0],
             "selectivity": [1.0, 4.0], "heritability": [0.75, 1.0]}


def decoder_spec() -> str:
    from xdream_ts.decoders import default_decoder_spec
    spec = default_decoder_spec()
    return "basis:32" if spec == "basis" else spec


def fig2_config(quick: bool, decoder: str, all_units: bool = False, optimizers=None) -> dict:
    from xdream_ts.reference import REFERENCE_UNITS, select_reference_units
    units = list(REFERENCE_UNITS) or select_reference_units()
    if quick and not all_units:  # the first unit of each depth
        seen, picked = set(), []
        for u in units:
            if u.tensor not in seen:
                seen.add(u.tensor)
                picked.append(u)
        units = picked
    targets = [{"kind": "reference", "layer": u.tensor, "units": [u.channel],
                "position": "center"} for u in units]
    return {"name": "fig2", "budget": 200 if quick else 10000, "seeds": 1 if quick else 2, "decoders": [decoder],
            "optimizers": optimizers or (["genetic"] if quick else ["genetic", "default"]), "noise": ["none"],
            "providers": "cpu",
            "targets": targets}


def fig5_config(quick: bool) -> dict:
    from xdream_ts.optimizers import BUILTIN
    opts = [n for n in ("genetic", "fdgd", "nes", "cmaes", "default", "random") if n in BUILTIN]
    return {"name": "fig5", "budget": 600 if quick else 3000, "seeds": 1 if quick else 3, "decoders": ["basis:32"],
            "optimizers": opts, "noise": ["none", "poisson:1", "gain:0.5"],
            "targets": [{"kind": "simulated", "length": 500, "seeds": [0, 1] if quick else list(range(5)),
                         "reference_max": "optimum"}]}


def fig6_config(quick: bool) -> dict:
    opts = [{"name": "genetic", "label": "ga-defaults"}]
    for p, values in GA_VARIED.items():
        for v in values:
            opts.append({"name": "genetic", "label": f"{p}={v:g}", p: v})
    return {"name": "fig6", "budget": 600 if quick else 3000, "seeds": 1 if quick else 3, "decoders": ["basis:32"],
            "optimizers": opts, "noise": ["none"],
            "targets": [{"kind": "simulated", "length": 500, "seeds": [0, 1] if quick else list(range(5)),
                         "reference_max": "optimum"}]}


def plot_fig6(runs, path: Path) -> Path:
    """Fraction of the optimum per hyperparameter value (median and range over neurons x seeds)."""
    from xdream_ts import plots
    plt = plots._plt()
    by_label: dict[str, list[float]] = {}
    for r in runs:
        by_label.setdefault(r.optimizer, []).append(r.relative)
    fig, axes = plt.subplots(1, len(GA_VARIED), figsize=(3.0 * len(GA_VARIED), 2.9), sharey=True)
    for ax, (p, values) in zip(axes, GA_VARIED.items()):
        xs = sorted([GA_DEFAULTS[p], *values])
        labels = ["ga-defaults" if x == GA_DEFAULTS[p] else f"{p}={x:g}" for x in xs]
        vals = [np.asarray(by_label.get(lab, [np.nan])) for lab in labels]
        med = [np.nanmedian(v) for v in vals]
        ax.plot(range(len(xs)), med, "o-", color="#1f77b4")
        ax.vlines(range(len(xs)), [np.nanmin(v) for v in vals], [np.nanmax(v) for v in vals], color="#1f77b4", alpha=0.5)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([f"{x:g}" + ("*" if x == GA_DEFAULTS[p] else "") for x in xs])
        ax.set_xlabel(p.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of the optimum\n(clean activation / optimum)")
    fig.suptitle("Genetic algorithm: one hyperparameter at a time around the defaults (*)", fontsize=10)
    fig.tight_layout()
    return plots.save(fig, path)


def run_figure(name, cfg, work: Path, figdir: Path, workers: int):
    from xdream_ts.report import collect, report
    from xdream_ts.sweep import sweep
    t0 = time.perf_counter()
    res = sweep(cfg, work / name, executor="processes", workers=workers, progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    print(res.summary_line(), f"({wall:.0f} s)", flush=True)
    rep = report(work / name, figdir / name)
    _, runs, _ = collect(work / name)
    return res, rep, runs, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--figures", default="fig2,fig5,fig6")
    ap.add_argument("--work", help="sweep folders (default experiments/_work/xdream_figures[_quick])")
    ap.add_argument("--budget", type=int, help="override every figure's budget (presentations per run)")
    ap.add_argument("--seeds", type=int, help="override every figure's number of seeds")
    ap.add_argument("--fig2-all-units", action="store_true", help="Fig. 2 on all 32 benchmark units even with --quick")
    ap.add_argument("--fig2-optimizers", help="comma-separated optimizers for Fig. 2")
    ap.add_argument("--name", help="results name (default xdream_figures[_quick])")
    args = ap.parse_args(argv)
    suffix = f"_{args.name}" if args.name else ("_quick" if args.quick else "")
    work = Path(args.work or ROOT / "experiments" / "_work" / f"xdream_figures{suffix}")
    figdir = RESULTS / f"xdream_figures{suffix}"
    decoder = decoder_spec()
    fig2_opts = args.fig2_optimizers.split(",") if args.fig2_optimizers else None
    makers = {"fig2": lambda: fig2_config(args.quick, decoder, args.fig2_all_units, fig2_opts),
              "fig5": lambda: fig5_config(args.quick),
              "fig6": lambda: fig6_config(args.quick)}
    from xdream_ts.report import first_super_table, md_table, normalize_runs, summary_table
    sections = []
    for name in [f for f in args.figures.split(",") if f]:
        cfg = makers[name]()
        if args.budget:
            cfg["budget"] = args.budget
        if args.seeds:
            cfg["seeds"] = args.seeds
        res, rep, runs, wall = run_figure(name, cfg, work, figdir, args.workers)
        normalize_runs(runs)
        extra = []
        if name == "fig6":
            extra.append(plot_fig6(runs, figdir / name / "fig6_hyperparameters.png"))
        table = md_table(summary_table(runs), [
            ("noise", "noise"), ("depth", "depth"), ("optimizer", "optimizer"), ("runs", "runs"), ("units", "units"),
            ("relative", "relative activation, median [IQR]" if name == "fig2" else "fraction of optimum, median [IQR]"),
            ("super_share", "super stimuli" if name == "fig2" else "runs > optimum"),
            ("normalized", "normalized activation, median [IQR]")])
        text = [f"## {name}: {cfg['name']} ({len(runs)} runs, {cfg['budget']} presentations each, "
                f"{wall:.0f} s for the sweep)", "",
                f"Sweep: `{len(res.entries)}` tasks, decoder {cfg['decoders'][0]}, optimizers "
                f"{', '.join(o if isinstance(o, str) else o['label'] for o in cfg['optimizers'])}, noise "
                f"{', '.join(cfg['noise'])}; full report: [{name}/report.md](xdream_figures{suffix}/{name}/report.md).",
                "", table, ""]
        if name == "fig2":
            fs = first_super_table(runs)
            text += ["Presentations until the first super stimulus (relative activation > 1), median over units "
                     "(per unit: median over seeds):", "", md_table(
                         [{**r, "median_presentations": f"{r['median_presentations']:.0f}" if r["median_presentations"]
                           is not None else f"not reached (> {r['budget']})",
                           "units_with_super": f"{r['units_with_super']}/{r['units']}"} for r in fs],
                         [("noise", "noise"), ("optimizer", "optimizer"), ("units_with_super", "units with a super stimulus"),
                          ("median_presentations", "presentations, median over units")]), ""]
        figs = {"fig2": ["violin_relative.png", "trajectories.png"], "fig5": ["violin_normalized.png",
                                                                              "violin_relative.png", "trajectories.png"],
                "fig6": ["fig6_hyperparameters.png", "trajectories.png"]}[name]
        text += [f"![{f}](xdream_figures{suffix}/{name}/{f})" for f in figs] + [""]
        sections.append("\n".join(text))
    cmd = "python experiments/bench_xdream_figures.py " + " ".join(argv if argv is not None else sys.argv[1:])
    quick_note = ("Quick mode: budgets far below the papers' 10,000 presentations and few units and seeds; the full "
                  "mode is the comparison." if args.quick else "")
    md = f"""# XDream's figures in the time-series domain{f' ({suffix[1:]})' if suffix else ''}

Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average at the
end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}); no GPU lent to this task (onnxruntime on CPU, 1 thread per
worker, {args.workers} worker processes). Python {platform.python_version()}. Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.
Command: `{cmd}`. Model: the shipped FordA ResNet (xdream_ts/assets/reference_resnet.onnx) as installed at
that date. Relative activation (Fig. 2) = best activation found / best over all 4921 FordA series for that
unit; for the simulated neurons (Fig. 5, 6) the reference is the neuron's closed-form optimum, so the
"relative" column is the fraction of the optimum reached (clean activation of the best-observed series).
{quick_note}

{chr(10).join(sections)}"""
    out = RESULTS / f"xdream_figures{suffix}.md"
    out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
