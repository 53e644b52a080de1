"""Benchmark of issue 19: the default optimizer against pycma and XDream's GA on units it was never tuned on.

The default was tuned on the shipped reference model (experiments/tune_default.py). Here it is measured,
side by side with ``cmaes`` (pycma) and ``genetic`` (XDream's GA as published), on models it never saw:

  fcn_forda     the third-party supervised-FCN FordA checkpoint (``../shared/models/third_party``),
                exported to ONNX by experiments/third_party_fcn.py (weights not committed)
  gunpoint_cnn  a CNN trained here on GunPoint (UCR), experiments/bench_data_space.py
  italy_gru     a GRU trained here on ItalyPowerDemand (UCR): a recurrent model
  jv_cnn        a CNN trained here on JapaneseVowels (UEA): 12 channels, raw units

Per model: hidden units of its ReLU (or GRU) layers, deepest first, at the centre time step where the
layer has a time axis (the first channel whose best response over the model's TRAIN data is positive),
and a logit. Every run: 3,000 presentations, the
shipped default decoder (``auto`` without data: the shipped prior, one code per channel), the same
seeds for every method, and three noise conditions on the observed responses (none, ``gain:0.5``,
``poisson:1``).

Score of a run = the clean (noiseless) activation of the series the run REPORTS (``Run.reported_index``:
under noise, each optimizer's own pick: the default's incumbent, judged by its mean over several
presentations; cmaes's last distribution mean shown (pycma's recommendation); the GA's conserved code,
with its re-measurements; without noise, the best observed response, which is then exact). Per unit, each score is
divided by the best clean activation any run reached on that unit in any condition (best-ever), and
the ratios asked for are of mean normalised scores: default/cmaes and default/genetic per noise
condition, with the per-unit ratio of clean activations (median, and on how many units the default
loses).

    .venv/bin/python experiments/bench_default_unseen.py --quick     # a smoke test, ~3 min
    nice -n 10 .venv/bin/python experiments/bench_default_unseen.py  # ~30 min on 2 shared cores

A variant of the default on the same runs, the others' rows reused from the committed JSON (~11 min):

    .venv/bin/python experiments/bench_default_unseen.py --methods default --default-params '{"population_size": 60}' \
        --keep experiments/results/default_unseen.json --out experiments/_work/pop60
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
SHARED = REPO.parent / "shared"
MODELS = REPO / "experiments" / "models" / "data_space"
WORK = REPO / "experiments" / "_work"
RESULTS = REPO / "experiments" / "results"
METHODS = ("default", "cmaes", "genetic")
NOISES = ("none", "gain:0.5", "poisson:1")

MODEL_FILES = {
    "fcn_forda": (None, SHARED / "data" / "ucr" / "FordA" / "FordA_TRAIN.tsv.gz"),
    "gunpoint_cnn": (MODELS / "gunpoint_cnn.onnx", SHARED / "data" / "ucr" / "GunPoint" / "GunPoint_TRAIN.tsv.gz"),
    "italy_gru": (MODELS / "italy_gru.onnx",
                  SHARED / "data" / "ucr" / "ItalyPowerDemand" / "ItalyPowerDemand_TRAIN.tsv.gz"),
    "jv_cnn": (MODELS / "jv_cnn.onnx", SHARED / "data" / "uea" / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts.gz"),
}


def model_path(name: str) -> Path:
    path, _ = MODEL_FILES[name]
    if path is not None:
        return path
    out = WORK / "fcn_forda.onnx"
    if not out.is_file():  # exported once from the third-party checkpoint (never committed)
        from third_party_fcn import export
        WORK.mkdir(parents=True, exist_ok=True)
        export(SHARED / "models" / "third_party" / "supervised-fcn" / "FordA.ckpt", out)
    return out


def pick_units(name: str, per_model: int) -> list[str]:
    """Units of the model's hidden layers, deepest first (the first channel with a positive best response
    over its TRAIN data, so that the unit is live on real series; the centre time step of layers with a
    time axis), and logit 0 last: ``per_model`` in all."""
    from xdream_ts.adapters.onnx import inspect_model
    from xdream_ts.analysis import load_reference_data
    from xdream_ts.targets import TargetSpec, build
    path = model_path(name)
    info = inspect_model(str(path))
    # ReLU layers, and a recurrent layer's hidden state over time (a GRU's output)
    hidden = [t for t in info["tensors"] if t.get("op") == "Relu" or ("gru" in t["name"].lower() and t.get("time"))]
    X = load_reference_data(MODEL_FILES[name][1], max_series=300, length=info["input"].get("length"))
    units = []
    for t in reversed(hidden):
        for ch in range(int(t["units"])):
            unit = f"{t['name']}:{ch}" + ("@center" if t.get("time") else "")
            if float(np.nanmax(build(TargetSpec(model=str(path), units=[unit])).clean(X))) > 0:
                units.append(unit)
                break
        if len(units) >= per_model - 1:
            break
    return units + ["logits:0"]


def one_run(name: str, unit: str, method: str, noise: str, seed: int, budget: int,
            params: dict | None = None, decoder: str = "auto") -> dict:
    import xdream_ts
    from xdream_ts.targets import TargetSpec
    spec = TargetSpec(model=str(model_path(name)), units=[unit], noise=noise, noise_seed=seed)
    t0 = time.perf_counter()
    r = xdream_ts.run(decoder, spec, method, budget=budget, seed=seed, progress=False, store=None,
                      optimizer_params=params or None)
    g, p = r.reported_index
    clean = r.clean_objective
    value = float(clean[g, p]) if clean is not None else float(r.objective[g, p])
    return {"model": name, "unit": unit, "method": method, "noise": noise, "seed": seed, "budget": budget,
            "clean": value, "wall_s": round(time.perf_counter() - t0, 1)}


def counts_for(noise: str, unit: str) -> bool:
    """Whether a (noise, unit) pair enters the tables: Poisson counts of a logit do not. The noise draws a
    count from the rectified response, so a logit below 0 (most of them, most of the time) is seen as
    silence and a search gets no signal until it happens to cross 0 (the rows are kept in the JSON)."""
    return not (noise.startswith("poisson") and unit.startswith("logits"))


def summarise(rows):
    rows = [r for r in rows if counts_for(r["noise"], r["unit"])]
    units = sorted({(r["model"], r["unit"]) for r in rows})
    best = {u: max(r["clean"] for r in rows if (r["model"], r["unit"]) == u) for u in units}
    out = {}
    for noise in dict.fromkeys(r["noise"] for r in rows):
        sel = [r for r in rows if r["noise"] == noise]
        score = {m: [r["clean"] / best[(r["model"], r["unit"])] for r in sel if r["method"] == m] for m in METHODS}
        entry = {m: (float(np.mean(v)), float(np.std(v) / np.sqrt(len(v)))) for m, v in score.items() if v}
        per_unit = {}
        for u in sorted({(r["model"], r["unit"]) for r in sel}):
            mean = {m: np.mean([r["clean"] for r in sel if (r["model"], r["unit"]) == u and r["method"] == m] or [np.nan])
                    for m in METHODS}
            per_unit[u] = mean
        ratios = {}
        for other in ("cmaes", "genetic"):
            if "default" in entry and other in entry:
                per = [v["default"] / v[other] for v in per_unit.values() if v[other] > 0 and np.isfinite(v["default"])]
                ratios[other] = {"of_means": entry["default"][0] / entry[other][0],
                                 "median_per_unit": float(np.median(per)) if per else None,
                                 "units_lost": int(sum(v["default"] < v[other] for v in per_unit.values())),
                                 "units": len(per_unit)}
        out[noise] = {"scores": entry, "ratios": ratios, "per_unit": per_unit}
    return out, best


def write_report(path: Path, rows, args, command: str, wall: float, complete: bool) -> dict:
    table, best = summarise(rows)
    units = sorted({(r["model"], r["unit"]) for r in rows})
    lines = [f"# The default optimizer on units it never saw ({'quick' if args.quick else 'full'} mode)", "",
             *machine_lines(), f"- command: `{command}`",
             f"- budget {args.budget} presentations per run, seeds {args.seeds}, decoder `auto` without data (the "
             f"shipped prior); wall time {wall / 60:.1f} min{'' if complete else '; INCOMPLETE (interrupted)'}",
             f"- units ({len(units)}): " + ", ".join(f"{m}: `{u}`" for m, u in units),
             *([f"- a variant: the default with {json.dumps(args.default_params)}"] if args.default_params else []),
             *([f"- rows of the methods not run ({', '.join(m for m in METHODS if m not in args.methods.split(','))}) "
                f"reused from `{args.keep}` (seeded runs, so the same)"] if args.keep else []), "",
             "Score = clean activation of the series each run reports (under noise each optimizer's own pick: the "
             "default's incumbent by mean response, cmaes's last distribution mean shown, the GA's conserved code; "
             "without noise the best observed) / the best clean activation any run reached on that unit. "
             "Mean over units x seeds, +- its standard error. Ratios: of the mean scores (the issue's metric), and "
             "the median over units of the per-unit ratio of mean clean activations. Poisson rows of logits are "
             "left out (a Poisson count of a rectified response cannot see a logit below 0; they are in the JSON).",
             ""]
    lines += ["| noise | default | cmaes | genetic | default/cmaes | default/genetic | median per unit (cmaes, genetic) "
              "| units where default loses (to cmaes, to genetic) |", "|---|---|---|---|---|---|---|---|"]
    for noise, e in table.items():
        s, r = e["scores"], e["ratios"]

        def sc(m):
            return f"{s[m][0]:.2f} +- {s[m][1]:.2f}" if m in s else "n/a"

        def ra(o, key):
            v = r.get(o, {}).get(key)
            return "n/a" if v is None else f"{v:.2f}"
        lost = ", ".join(f"{r[o]['units_lost']}/{r[o]['units']}" if o in r else "n/a" for o in ("cmaes", "genetic"))
        lines.append(f"| {noise} | {sc('default')} | {sc('cmaes')} | {sc('genetic')} | {ra('cmaes', 'of_means')} | "
                     f"{ra('genetic', 'of_means')} | {ra('cmaes', 'median_per_unit')}, "
                     f"{ra('genetic', 'median_per_unit')} | {lost} |")
    lines += ["", "## Per unit (mean clean activation over seeds)", "",
              "| model | unit | noise | best-ever | default | cmaes | genetic |", "|---|---|---|---|---|---|---|"]
    for noise, e in table.items():
        for (m, u), v in e["per_unit"].items():
            lines.append(f"| {m} | `{u}` | {noise} | {best[(m, u)]:.3g} | " +
                         " | ".join(f"{v[k]:.3g}" for k in METHODS) + " |")
    path.write_text("\n".join(lines) + "\n")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the committed JSON")
    ap.add_argument("--quick", action="store_true", help="budget 600, 1 seed, 2 units of two models, none and gain")
    ap.add_argument("--budget", type=int)
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--models", help=f"comma-separated subset of {','.join(MODEL_FILES)}")
    ap.add_argument("--units-per-model", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated subset of the methods to run; with --keep the others' rows are reused")
    ap.add_argument("--keep", type=Path,
                    help="a previous JSON: its rows of the methods not run are reused (seeded, so identical), and "
                         "the report compares the new rows with them")
    ap.add_argument("--default-params", type=json.loads, default={},
                    help='parameters of the default, as JSON (e.g. \'{"population_size": 60}\'), to measure a variant')
    ap.add_argument("--out", type=Path, help="write NAME.json and NAME.md to this folder (default: results)")
    args = ap.parse_args(argv)
    run_methods = [m for m in args.methods.split(",") if m]
    if set(run_methods) - set(METHODS):
        ap.error(f"--methods: choose from {', '.join(METHODS)}")
    args.budget = args.budget or (600 if args.quick else 3000)
    args.seeds = args.seeds or (1 if args.quick else 2)
    models = args.models.split(",") if args.models else (["gunpoint_cnn", "italy_gru"] if args.quick
                                                          else list(MODEL_FILES))
    noises = ("none", "gain:0.5") if args.quick else NOISES
    per = 2 if args.quick else args.units_per_model
    name = "default_unseen_quick" if args.quick else "default_unseen"
    out_dir = args.out or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = [r for r in json.loads(args.keep.read_text()) if r["method"] not in run_methods] if args.keep else []
    if args.report_only:
        rows = json.loads((out_dir / f"{name}.json").read_text())
        # the report again from the rows (e.g. after a change to the tables); wall time: the runs' own, summed
        write_report(out_dir / f"{name}.md", rows, args, "python experiments/bench_default_unseen.py"
                     + (" --quick" if args.quick else "") + "; this report: --report-only",
                     sum(r["wall_s"] for r in rows), True)
        return 0
    command = "python experiments/bench_default_unseen.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows, t0, complete = [], time.perf_counter(), False
    try:
        for model in models:
            for unit in pick_units(model, per):
                for noise in noises:
                    for seed in range(args.seeds):
                        for method in METHODS:
                            if method not in run_methods:
                                continue
                            row = one_run(model, unit, method, noise, seed, args.budget,
                                          args.default_params if method == "default" else None)
                            if method == "default" and args.default_params:
                                row["params"] = args.default_params
                            rows.append(row)
                            print(json.dumps(row), flush=True)
        complete = True
    finally:
        if rows:
            done = {(r["model"], r["unit"], r["noise"], r["seed"]) for r in rows}
            rows = rows + [r for r in kept if (r["model"], r["unit"], r["noise"], r["seed"]) in done]
            (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
            table = write_report(out_dir / f"{name}.md", rows, args, command.strip(), time.perf_counter() - t0,
                                 complete)
            for noise, e in table.items():
                print(noise, {o: round(v["of_means"], 3) for o, v in e["ratios"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
