"""Issue 15, item 6: is a candidate prior (``auto`` without data) at least as good as the shipped one?

The prior is what a search runs through when the user has no data; replacing the shipped one changes every
committed figure that uses it, so a candidate (e.g. the broad prior of experiments/train_broad_prior.py: UCR,
UEA channel-split and synthetic series) is first measured here, side by side with the shipped prior, on:

1. search: the default optimizer, 3,000 presentations, 2 seeds,
   - the live units of experiments/bench_data_space.py (5 models trained on ../shared/data, one of 12 channels),
     ``auto`` without data; relative activation = best / best real response over the model's TRAIN data;
   - the units of experiments/bench_default_unseen.py (the third-party FordA FCN and 3 models trained here),
     without noise and under gain noise 0.5; score = the clean activation of the reported series / the best
     any run here reached on that unit;
2. reconstruction: mean squared error of decode(encode(x)) on z-normalised TEST series of every UCR and UEA set
   in ../shared/data (each channel of a multivariate set one series; NaN padding trimmed), at native length.

    .venv/bin/python experiments/compare_priors.py experiments/_work/broad_prior   # ~30 min on 2 shared cores
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

RESULTS = REPO / "experiments" / "results"
SHARED = REPO.parent / "shared" / "data"
SHIPPED = REPO / "xdream_ts" / "assets" / "default_decoder"


def data_space_units() -> list[tuple[str, str, float]]:
    """(model, unit, best real) of bench_data_space's committed run (its live units)."""
    rows = json.loads((RESULTS / "data_space.json").read_text())
    seen = {}
    for r in rows:
        if r["decoder"] == "auto":
            seen.setdefault((r["model"], r["unit"]), r["best_real"])
    return [(m, u, b) for (m, u), b in seen.items()]


def search_rows(prior: Path, label: str, seeds: int, budget: int, units_per_model: int) -> list[dict]:
    """The benchmarks' own runs (bench_data_space.one_run, bench_default_unseen.one_run) through ``prior``."""
    import bench_data_space as DS
    import bench_default_unseen as DU

    rows = []
    for name, unit, best_real in data_space_units():
        for seed in range(seeds):
            r = DS.one_run(name, unit, best_real, str(prior), seed, budget, {})
            rows.append({"bench": "data_space", "prior": label, "model": name, "unit": unit, "noise": "none",
                         "seed": seed, "value": r["relative"]})
            print(json.dumps(rows[-1]), flush=True)
    for name in DU.MODEL_FILES:
        for unit in DU.pick_units(name, units_per_model):
            for noise in ("none", "gain:0.5"):
                for seed in range(seeds):
                    r = DU.one_run(name, unit, "default", noise, seed, budget, decoder=str(prior))
                    rows.append({"bench": "default_unseen", "prior": label, "model": name, "unit": unit,
                                 "noise": noise, "seed": seed, "value": r["clean"]})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def held_out_sets():
    """(name, z-normalised TEST series as a list of 1-D arrays) for every data set in ../shared/data."""
    from xdream_ts.series import znormalize

    for folder in sorted(p for sub in ("ucr", "uea") for p in (SHARED / sub).iterdir() if p.is_dir()):
        tests = sorted(folder.glob("*_TEST.*"))
        if not tests:
            continue
        ds = _load_native(tests[0])
        out = []
        for x in ds:
            for ch in np.atleast_2d(x):
                ch = ch[np.isfinite(ch)]
                if len(ch) >= 4 and ch.std() > 0:
                    out.append(znormalize(ch[None])[0])
        yield folder.name, out


def _load_native(path):
    """The series of a data file at their own lengths (a list of (C, L) arrays), through the package's loader."""
    from xdream_ts.data import load_dataset
    ds = load_dataset(path)
    X = ds.X if ds.X.ndim == 3 else ds.X[:, None]
    return [x[:, np.isfinite(x).all(0)] for x in X]


def reconstruction(prior: Path, max_series: int = 400, seed: int = 0) -> dict:
    from xdream_ts.decoders.onnx_decoder import OnnxDecoder

    rng = np.random.default_rng(seed)
    out = {}
    for name, series in held_out_sets():
        if len(series) > max_series:
            series = [series[i] for i in sorted(rng.choice(len(series), max_series, replace=False))]
        errs = []
        by_len = {}
        for s in series:
            by_len.setdefault(len(s), []).append(s)
        for L, group in by_len.items():
            dec = OnnxDecoder(prior, length=L)
            X = np.stack(group)
            errs.extend(((dec(dec.encode(X)) - X) ** 2).mean(1).tolist())
        out[name] = (float(np.mean(errs)), len(errs))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("candidate", type=Path, help="a decoder folder written by train-decoder")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget", type=int, default=3000)
    ap.add_argument("--units-per-model", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "compare_priors.md")
    args = ap.parse_args(argv)
    if not (args.candidate / "decoder.onnx").is_file():
        ap.error(f"{args.candidate} holds no decoder.onnx; give a folder written by train-decoder")
    t0 = time.perf_counter()
    recon = {"shipped": reconstruction(SHIPPED), "candidate": reconstruction(args.candidate)}
    rows = []
    for label, folder in (("shipped", SHIPPED), ("candidate", args.candidate)):
        rows += search_rows(folder, label, args.seeds, args.budget, args.units_per_model)
    args.out.with_suffix(".json").write_text(json.dumps({"reconstruction": recon, "rows": rows}, indent=1) + "\n")
    write_report(args, recon, rows, time.perf_counter() - t0)
    print(f"wrote {args.out}")
    return 0


def write_report(args, recon, rows, wall) -> None:
    cand = json.loads((args.candidate / "decoder.json").read_text()) if (args.candidate / "decoder.json").is_file() else {}
    lines = ["# A candidate prior against the shipped one (issue 15, item 6)", "", *machine_lines(),
             f"- command: `python experiments/compare_priors.py {' '.join(sys.argv[1:])}`; wall time {wall / 60:.1f} min",
             f"- shipped: `{SHIPPED.relative_to(REPO)}`; candidate: `{args.candidate}`"
             + (" (trained on: " + ", ".join(f"{d['source']} {d.get('sampling_weight', '')}"
                                              for d in cand["training"]["data"]) + ")"
                if isinstance(cand.get("training"), dict) and cand["training"].get("data") else ""),
             f"- search: default optimizer, {args.budget} presentations, {args.seeds} seeds", "",
             "## Search (median over units of the per-unit mean over seeds; higher is better)", "",
             "| units | model | noise | shipped | candidate | candidate/shipped | units where the candidate is lower |",
             "|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["bench"], r["model"], r["noise"]), []).append(r)
    best = {}
    for r in rows:
        if r["bench"] == "default_unseen":
            k = (r["model"], r["unit"])
            best[k] = max(best.get(k, -np.inf), r["value"])
    overall = {}
    for (bench, model, noise), sel in groups.items():
        per = {}
        for r in sel:
            v = r["value"] / best[(r["model"], r["unit"])] if bench == "default_unseen" else r["value"]
            per.setdefault(r["unit"], {}).setdefault(r["prior"], []).append(v)
        s = np.median([np.mean(p["shipped"]) for p in per.values()])
        c = np.median([np.mean(p["candidate"]) for p in per.values()])
        lower = sum(np.mean(p["candidate"]) < np.mean(p["shipped"]) for p in per.values())
        for p in per.values():
            overall.setdefault((bench, noise), []).append((np.mean(p["shipped"]), np.mean(p["candidate"])))
        lines.append(f"| {bench} | {model} | {noise} | {s:.3f} | {c:.3f} | {c / s:.3f} | {lower}/{len(per)} |")
    lines += ["", "Over all units of a group (mean of per-unit means; data_space: relative activation, "
              "default_unseen: fraction of the best reached here):", ""]
    for (bench, noise), v in overall.items():
        a = np.array(v)
        lines.append(f"- {bench}, {noise}: shipped {a[:, 0].mean():.3f}, candidate {a[:, 1].mean():.3f} "
                     f"({len(a)} units)")
    lines += ["", "## Reconstruction of TEST series (MSE of decode(encode(x)), z-normalised, native length)", "",
              "| data set | series | shipped | candidate |", "|---|---|---|---|"]
    for name, (m, n) in recon["shipped"].items():
        lines.append(f"| {name} | {n} | {m:.4f} | {recon['candidate'][name][0]:.4f} |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
