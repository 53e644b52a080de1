"""Benchmark of issue 16 item 5: plausible super stimuli, and what plausibility costs.

For units at four depths of two or three models, one search per (method, constraint, seed) at 3,000
presentations (``--quick``: 300, one unit per model, one seed; a smoke test of a few minutes):

  shipped       the shipped FordA ResNet (``reference_resnet.onnx``): block1/out, block2/out, block3/out at
                the centre and a logit; the shipped prior as decoder (``auto`` without data); plausibility in
                its ``gap`` layer (the input of the logits) against the shipped FordA sample
  gunpoint_cnn  a CNN trained on GunPoint (UCR, z-normalised; experiments/bench_data_space.py trains it):
                relu1, relu2, relu3, a logit; ``data`` = its TRAIN split, so the decoder is the data's PCA (plus its residual directions)
                and the search starts from the data; plausibility in its penultimate layer (the
                global-average-pooled features) against the same data
  jv_cnn        a CNN trained on JapaneseVowels (UEA, 12 channels, raw units, standardisation inside the
                graph), as gunpoint_cnn (full mode only)

Methods: ``default`` (the default optimizer; with ``--plausible`` its adaptive penalty, the default
method), ``default-ff`` (the default optimizer with the feasibility-first ranking; plausible runs only),
``cmaes`` (pycma), ``dream`` (Sequence Dreaming through the model's torch twin; only the shipped model
has one: onnx2torch is not a dependency). Each method runs unconstrained and with ``plausible=0.99``.

Per run: the relative activation of the series the run reports (a plausible run: its best feasible
stimulus; otherwise the best observed) = its activation / the best activation over the real series
(the shipped sample, or the data); the Mahalanobis distance of that series in the plausibility layer and
whether it lies within the 99th percentile of the real series' own distances (the threshold the
plausible run fitted; the unconstrained run's reported series is measured with
``xdream_ts.analysis.plausibility_summary`` in the same layer against the same real series, and the
consistency of the two fits is checked on the plausible run's series: column ``fit check``).

A unit has a *plausible super stimulus* when the reported series has relative activation > 1 and is
within the threshold. The target (issue 16): >= 80 % of units, gradient-free.

    .venv/bin/python experiments/bench_plausible.py --quick
    nice -n 10 .venv/bin/python experiments/bench_plausible.py        # ~40 min on 2 shared cores
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))
from machine import machine_lines  # noqa: E402
SHARED = REPO.parent / "shared" / "data"
MODELS = REPO / "experiments" / "models" / "data_space"
RESULTS = REPO / "experiments" / "results"

UNITS = {
    "shipped": ["block1/out:{b1}@center", "block2/out:{b2}@center", "block3/out:{b3}@center", "logits:1"],
    # live units only (best response over TRAIN > 0: experiments/results/data_space.md lists which are dead)
    "gunpoint_cnn": ["/relu1/Relu_output_0:1@center", "/relu2/Relu_output_0:1@mean",
                     "/relu3/Relu_output_0:2@center", "logits:1@center"],
    "jv_cnn": ["/relu1/Relu_output_0:0@mean", "/relu2/Relu_output_0:1@mean", "/relu3/Relu_output_0:1@center",
               "logits:0@center"],
}
DATA = {"gunpoint_cnn": SHARED / "ucr" / "GunPoint" / "GunPoint_TRAIN.tsv.gz",
        "jv_cnn": SHARED / "uea" / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts.gz"}
METHODS = ("default", "default-ff", "cmaes", "dream")
QUANTILE = 0.99


def shipped_units() -> list[str]:
    """One unit per depth: the first benchmark unit of each block (xdream_ts.reference.reference_units)."""
    from xdream_ts.reference import reference_units
    first = {}
    for u in reference_units():
        first.setdefault(u.tensor, u.channel)
    return [u.format(b1=first["block1/out"], b2=first["block2/out"], b3=first["block3/out"])
            for u in UNITS["shipped"]]


def spec_of(model: str, unit: str):
    from xdream_ts.reference import reference_model_path
    from xdream_ts.targets import TargetSpec
    if model == "shipped":
        return TargetSpec(model=str(reference_model_path()), units=[unit])
    return TargetSpec(model=str(MODELS / f"{model}.onnx"), units=[unit], data=str(DATA[model]))


def one_run(model: str, unit: str, method: str, plausible: bool, seed: int, budget: int) -> dict:
    import xdream_ts
    from xdream_ts.analysis import plausibility_summary

    optimizer = "default" if method.startswith("default") else method
    kw = {}
    if plausible:
        kw = dict(plausible=QUANTILE, plausibility_method="feasibility-first" if method == "default-ff" else "penalty")
    t0 = time.perf_counter()
    r = xdream_ts.run("auto", spec_of(model, unit), optimizer, budget=budget, seed=seed, progress=False, store=None,
                      **kw)
    wall = time.perf_counter() - t0
    row = {"model": model, "unit": unit, "method": method, "plausible": plausible, "seed": seed, "budget": budget,
           "reference_max": r.reference_max, "relative": r.relative_activation, "wall_s": round(wall, 1)}
    if plausible:
        p = r.summary()["plausibility"]
        rep = p["reported"]
        row.update(layer=p["layer"], threshold=p["threshold"], distance=rep["distance"], percentile=rep["percentile"],
                   feasible=rep["feasible"], n_feasible=p["n_feasible"],
                   unconstrained_relative=p["unconstrained"]["relative_activation"],
                   unconstrained_distance=p["unconstrained"]["distance"])
        # the same series measured by the independent fit the unconstrained runs are measured with
        ref = None if model == "shipped" else str(DATA[model])
        check = plausibility_summary(r, layer=p["layer"], reference_series=_reference(model, ref))
        row["fit_check"] = abs(check["best_distance"] - rep["distance"]) / max(rep["distance"], 1e-9)
    return row


def _reference(model, path):
    if path is None:
        from xdream_ts.reference import sample_series
        return sample_series()[0]
    from xdream_ts.analysis import load_reference_data
    length = json.loads((MODELS / "models.json").read_text())[model]["length"]  # what the model takes
    return load_reference_data(path, length=length)


def measure_unconstrained(row: dict, r_layer: str, threshold: float, run) -> None:
    from xdream_ts.analysis import plausibility_summary
    ref = None if row["model"] == "shipped" else str(DATA[row["model"]])
    s = plausibility_summary(run, layer=r_layer, reference_series=_reference(row["model"], ref))
    row.update(layer=r_layer, threshold=threshold, distance=s["best_distance"], percentile=s["best_percentile"],
               feasible=bool(s["best_distance"] <= threshold))


def pair(model: str, unit: str, method: str, seed: int, budget: int) -> list[dict]:
    """The plausible run, then (unless default-ff) the unconstrained one measured in the same layer and threshold."""
    import xdream_ts
    rows = [one_run(model, unit, method, True, seed, budget)]
    if method == "default-ff":
        return rows
    t0 = time.perf_counter()
    r = xdream_ts.run("auto", spec_of(model, unit), method, budget=budget, seed=seed, progress=False, store=None)
    row = {"model": model, "unit": unit, "method": method, "plausible": False, "seed": seed, "budget": budget,
           "reference_max": r.reference_max, "relative": r.relative_activation,
           "wall_s": round(time.perf_counter() - t0, 1)}
    measure_unconstrained(row, rows[0]["layer"], rows[0]["threshold"], r)
    return rows + [row]


# ---------------------------------------------------------------------------------------------- report
def _f(v, fmt="{:.2f}"):
    return "n/a" if v is None else fmt.format(v)


def summarise(rows):
    """{(method, plausible): {...}} over units; a unit's value is its median over seeds."""
    out = {}
    for m in METHODS:
        for pl in (True, False):
            sel = [r for r in rows if r["method"] == m and r["plausible"] == pl and r["relative"] is not None]
            if not sel:
                continue
            units = sorted({(r["model"], r["unit"]) for r in sel})
            per = {}
            for u in units:
                rs = [r for r in sel if (r["model"], r["unit"]) == u]
                rel = float(np.median([r["relative"] for r in rs]))
                ok = [bool(r["feasible"]) and r["relative"] > 1 for r in rs]
                per[u] = {"relative": rel, "feasible": float(np.mean([bool(r["feasible"]) for r in rs])),
                          "plausible_super": float(np.mean(ok)),
                          "percentile": float(np.median([r["percentile"] for r in rs]))}
            out[(m, pl)] = {
                "units": len(per),
                "plausible_super": float(np.mean([v["plausible_super"] for v in per.values()])),
                "super": float(np.mean([v["relative"] > 1 for v in per.values()])),
                "feasible": float(np.mean([v["feasible"] for v in per.values()])),
                "median_relative": float(np.median([v["relative"] for v in per.values()])),
                "median_percentile": float(np.median([v["percentile"] for v in per.values()])),
                "per_unit": per}
    return out


def write_report(path: Path, rows, args, command, wall, complete):
    table = summarise(rows)
    models = sorted({r["model"] for r in rows})
    lines = [f"# Plausible super stimuli ({'quick' if args.quick else 'full'} mode)", "",
             *machine_lines(torch=True), f"- command: `{command}`",
             f"- budget {args.budget} presentations per run, seeds {args.seeds}, quantile {QUANTILE}; "
             f"wall time {wall / 60:.1f} min (this invocation; the runs' own wall times sum to "
             f"{sum(r['wall_s'] for r in rows) / 60:.1f} min" + (", some taken from --reuse" if args.reuse else "")
             + ")" + ("" if complete else " (INCOMPLETE: interrupted)"),
             f"- models: {', '.join(models)}; units: " + "; ".join(
                 f"{m}: " + ", ".join(sorted({r['unit'] for r in rows if r['model'] == m})) for m in models),
             "- decoder `auto`: the shipped prior for the shipped model; with the model's data (gunpoint_cnn, jv_cnn: "
             "TRAIN), the data's PCA plus 64 directions outside its span, starting from the data",
             "", "Relative activation = activation of the reported series / best activation over the real series. "
             "Feasible = Mahalanobis distance in the plausibility layer within the 99th percentile of the real "
             "series' own distances. Plausible super stimulus = feasible and relative > 1. Shares are over units "
             "(a unit's value: its mean over seeds; relative activation: median over seeds, then over units).", "",
             "| method | constraint | units | plausible super stimuli | super stimuli | feasible | median relative "
             "| median percentile |", "|---|---|---|---|---|---|---|---|"]
    for (m, pl), v in table.items():
        lines.append(f"| {m} | {'plausible 0.99' if pl else 'none'} | {v['units']} | {100 * v['plausible_super']:.0f} % "
                     f"| {100 * v['super']:.0f} % | {100 * v['feasible']:.0f} % | {v['median_relative']:.2f} "
                     f"| {v['median_percentile']:.0f} |")
    lines += ["", "## What plausibility costs", "",
              "Per unit, relative activation of the plausible run's reported series / that of the unconstrained "
              "run (same method, unit, seed); median over units and seeds.", "",
              "| method | median cost ratio | units where the plausible run is higher |", "|---|---|---|"]
    for m in ("default", "cmaes", "dream"):
        ratios = []
        for r in rows:
            if r["method"] == m and r["plausible"]:
                free = [q for q in rows if q["method"] == m and not q["plausible"] and q["model"] == r["model"]
                        and q["unit"] == r["unit"] and q["seed"] == r["seed"]]
                if free and free[0]["relative"] and r["relative"] is not None:
                    ratios.append(r["relative"] / free[0]["relative"])
        if ratios:
            lines.append(f"| {m} | {np.median(ratios):.2f} | {sum(x > 1 for x in ratios)} of {len(ratios)} |")
    checks = [r["fit_check"] for r in rows if r.get("fit_check") is not None]
    lines += ["", f"Fit check (relative difference between the plausible run's recorded distance and an independent "
              f"refit by `analysis.plausibility_summary`, max over runs): {max(checks) if checks else float('nan'):.1e}",
              "", "## Per unit", "",
              "| model | unit | method | constraint | relative | distance | percentile | feasible | wall s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['unit']} | {r['method']} | {'0.99' if r['plausible'] else 'none'} "
                     f"| {_f(r['relative'])} | {_f(r.get('distance'))} | {_f(r.get('percentile'), '{:.0f}')} "
                     f"| {'yes' if r.get('feasible') else 'no'} | {r['wall_s']} |")
    path.write_text("\n".join(lines) + "\n")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="budget 300, one unit per model, one seed, no jv_cnn")
    ap.add_argument("--budget", type=int)
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--models", help="comma-separated subset of shipped,gunpoint_cnn,jv_cnn")
    ap.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--reuse", help="the log (stdout) of an interrupted run of the same protocol: its rows are "
                                    "taken as they are and those runs skipped")
    args = ap.parse_args(argv)
    args.budget = args.budget or (300 if args.quick else 3000)
    args.seeds = args.seeds or 1
    models = args.models.split(",") if args.models else (["shipped", "gunpoint_cnn"] if args.quick
                                                          else ["shipped", "gunpoint_cnn", "jv_cnn"])
    methods = args.methods.split(",") if args.methods else list(METHODS)
    for m in models:
        if m != "shipped" and not (MODELS / f"{m}.onnx").is_file():
            sys.exit(f"{MODELS / (m + '.onnx')} is missing: run experiments/bench_data_space.py once to train it")
    name = "plausible_quick" if args.quick else "plausible"
    command = "python experiments/bench_plausible.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    rows, t0 = [], time.perf_counter()
    reused = []
    if args.reuse:
        for line in Path(args.reuse).read_text().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                if r["budget"] == args.budget:
                    reused.append(r)
        print(f"reusing {len(reused)} rows of {args.reuse}", flush=True)
    jsonl = RESULTS / f"{name}.json"
    complete = False
    try:
        for model in models:
            units = shipped_units() if model == "shipped" else UNITS[model]
            for unit in units[-1:] if args.quick else units:  # quick: the logit only
                for method in methods:
                    if method == "dream" and model != "shipped":
                        continue  # no torch twin of an ONNX model without onnx2torch
                    for seed in range(args.seeds):
                        new = [r for r in reused if (r["model"], r["unit"], r["method"], r["seed"]) ==
                               (model, unit, method, seed)]
                        if len(new) != (1 if method == "default-ff" else 2):
                            new = pair(model, unit, method, seed, args.budget)
                        rows += new
                        for r in new:
                            print(json.dumps(r), flush=True)
        complete = True
    finally:
        if rows:
            jsonl.write_text(json.dumps(rows, indent=1) + "\n")
            table = write_report(RESULTS / f"{name}.md", rows, args, command.strip(), time.perf_counter() - t0, complete)
            for (m, pl), v in table.items():
                print(f"{m:10s} {'plausible' if pl else 'free':9s} plausible-super {100 * v['plausible_super']:.0f}% "
                      f"median relative {v['median_relative']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
