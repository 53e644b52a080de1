"""Inverse sets of units of the shipped FordA ResNet (Hada & Carreira-Perpinan 2020, their Table 1).

For each unit and each activation range [lo, hi] x the unit's reference maximum (its largest
activation over all 4921 FordA series, ``xdream_ts.reference``), three sets of series in range:

  gradient   ``inverse_set(method='gradient')`` on the torch twin of the model (augmented-Lagrangian
             seeds + the fast sampler; every torch forward counted as a presentation)
  free       ``inverse_set(method='free')`` on the ONNX model (the reach optimizer, then novelty-driven
             evolution)
  baseline   the series in range that a plain run of the same optimizer visits while maximising the
             unit (``xdream_ts.run`` with a run store, then ``baseline_from_run``), read at the same
             number of presentations as each sampler used (one run, truncated)

Every set is re-scored by the ONNX scorer (column "in range"), and its diversity is measured as the
paper does, the mean pairwise Euclidean distance of feature vectors: the 128 units of the model's
``gap`` layer (global average pooling, read with the ONNX scorer), and the series themselves.
The samplers spread their samples in the space where diversity is measured (``--features gap``, the
default, as the paper does; ``series`` for the other one).

    nice -n 10 python experiments/inverse_sets.py            # 4 units x 2 ranges, n = 100
    nice -n 10 python experiments/inverse_sets.py --quick    # ~2 minutes: 1 unit, 1 range, n = 30
    python experiments/inverse_sets.py --assets DIR          # a model rebuilt by train_reference.py

Results: experiments/results/inverse_sets[_quick].md and inverse_sets[_quick]_gallery.png.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Assets:
    """The shipped reference model, or the same files in another folder (a rebuild, for development)."""

    def __init__(self, folder: str | None):
        from xdream_ts import reference as ref
        self.ref = ref
        self.folder = Path(folder) if folder else None

    def file(self, name: str) -> Path:
        return self.ref._asset(name) if self.folder is None else self.folder / name

    @property
    def onnx(self) -> Path:
        return self.file(self.ref.ONNX_FILE)

    def activations(self) -> dict:
        with np.load(self.file(self.ref.ACTIVATIONS_FILE), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def torch_scorer(self, targets):
        import torch

        from xdream_ts.adapters.torch import TorchScorer
        model = self.ref.build_resnet()
        model.load_state_dict(torch.load(self.file(self.ref.STATE_DICT_FILE), map_location="cpu", weights_only=True))
        return TorchScorer(model.eval(), targets, length=self.ref.SERIES_LENGTH, channels=1,
                           layer_names=dict(self.ref.TORCH_MODULE_OF_TENSOR), name="reference")

    def onnx_scorer(self, targets):
        from xdream_ts.adapters.onnx import OnnxScorer
        return OnnxScorer(self.onnx, targets, providers="cpu", threads=1)

    def provenance(self) -> dict:
        import json
        p = self.file(self.ref.PROVENANCE_FILE)
        return json.loads(p.read_text()) if p.is_file() else {}


def pick_units(acts: dict, ref, quick: bool) -> list:
    """The first benchmark unit of each block and logit 1 (quick: the first of block 2)."""
    names = [str(s).split("|") for s in acts.get("reference_units", [])]
    units = [ref.ReferenceUnit(t, int(c), p) for t, c, p in names] or ref.select_reference_units(acts)
    firsts = []
    for tensor in ("block1/out", "block2/out", "block3/out"):
        firsts += [u for u in units if u.tensor == tensor][:1]
    firsts += [u for u in units if u.tensor == "logits"][1:2]
    return firsts[1:2] if quick else firsts


def make_decoder(spec: str, ref):
    """'default' (the shipped VAE) when present, else a PCA decoder fitted on the shipped FordA sample."""
    from xdream_ts.decoders import make_decoder as mk
    if spec == "auto":
        from xdream_ts.errors import UserError
        try:
            from xdream_ts.decoders.onnx_decoder import load_default_decoder
            return load_default_decoder(length=ref.SERIES_LENGTH)
        except (ImportError, UserError):
            spec = "pca-forda"
    if spec == "pca-forda":
        from xdream_ts.decoders.pca import PCADecoder
        X, _ = ref.sample_series() if hasattr(ref, "sample_series") else (None, None)
        dec = PCADecoder.fit(X, n_components=32, length=ref.SERIES_LENGTH, seed=0)
        dec.name = "pca-forda(32)"
        return dec
    return mk(spec, length=ref.SERIES_LENGTH)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one unit, one range, n = 30 (~2 minutes)")
    ap.add_argument("--assets", help="folder with a rebuilt reference model (default: the shipped one)")
    ap.add_argument("--decoder", default="auto", help="auto (default VAE, else PCA on FordA), or a decoder spec")
    ap.add_argument("--optimizer", default="genetic", help="reach optimizer of the free path and the baseline run")
    ap.add_argument("--n", type=int, help="samples per set (default 100; quick 30)")
    ap.add_argument("--budget", type=int, help="most presentations per sampler (default 4000; quick 1500)")
    ap.add_argument("--features", default="gap", choices=("gap", "series"),
                    help="where the samplers spread their samples: gap (default; the measure) or series")
    ap.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; quick 0)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for the markdown and the gallery")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Using padding='same'")
    from xdream_ts import run
    from xdream_ts.adapters.onnx import Target
    from xdream_ts.inverse_set import baseline_from_run, diversity, inverse_set, select_diverse

    assets = Assets(args.assets)
    ref = assets.ref
    if args.assets:  # the sample series of the rebuilt model, for the PCA decoder
        with np.load(assets.file(ref.SAMPLE_FILE), allow_pickle=False) as z:
            X_sample = z["X"].astype(np.float32)
        ref = _Ref(ref, X_sample)
    acts = assets.activations()
    units = pick_units(acts, ref, args.quick)
    ranges = [(0.4, 0.6)] if args.quick else [(0.4, 0.6), (0.8, 1.0)]
    n = args.n or (30 if args.quick else 100)
    budget = args.budget or (1500 if args.quick else 4000)
    decoder = make_decoder(args.decoder, ref)
    gap_targets = [Target("gap", u, "center") for u in range(ref.FILTERS[-1])]
    gap = assets.onnx_scorer(gap_targets)
    # the samplers' feature space: gap read by ONNX (free path) or by the torch twin (gradient path,
    # which differentiates through it), or the series themselves
    feature_fns = {"free": gap, "gradient": assets.torch_scorer(gap_targets)} if args.features == "gap" else \
        {"free": "series", "gradient": "series"}
    log(f"units {[tuple(u) for u in units]}, ranges {ranges}, n {n}, budget {budget}, decoder "
        f"{getattr(decoder, 'name', type(decoder).__name__)}, optimizer {args.optimizer}, features {args.features}")

    seeds = [int(v) for v in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    X_real = ref.sample_series()[0]  # FordA TEST sample shipped with the model: real series, for context
    rows, gallery = [], {}
    t_all = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for u in units:
            key = f"{u.tensor}|{u.position}"
            amax = float(acts[key][u.channel])
            target = Target(u.tensor, u.channel, "center")
            onnx_scorer = assets.onnx_scorer(target)
            torch_scorer = assets.torch_scorer([target])
            label = f"{u.tensor}:{u.channel}" + ("@center" if u.position == "center" else "")
            a_real = onnx_scorer(X_real)
            for lo, hi in ranges:
                z1, z2 = lo * amax, hi * amax
                real = X_real[(a_real >= z1) & (a_real <= z2)]
                rows.append({"unit": label, "range": f"[{lo}, {hi}]", "amax": amax, "method": "FordA sample",
                             "seed": None, "n": len(real), "presentations": float("nan"), "wall": float("nan"),
                             "cpu": float("nan"), "in_range": 1.0 if len(real) else float("nan"),
                             "div_gap": diversity(gap(real)) if len(real) > 1 else float("nan"),
                             "div_series": diversity(real) if len(real) > 1 else float("nan")})
                for seed in seeds:
                    sets = {}
                    for method, scorer in (("gradient", torch_scorer), ("free", onnx_scorer)):
                        t0, c0 = time.time(), time.process_time()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", RuntimeWarning)
                            inv = inverse_set(decoder, scorer, (z1, z2), n=n, method=method, budget=budget,
                                              seed=seed, optimizer=args.optimizer, progress=False,
                                              feature_fn=feature_fns[method])
                        inv.info["wall"], inv.info["cpu"] = time.time() - t0, time.process_time() - c0
                        sets[method] = inv
                        log(f"{label} [{lo}, {hi}] seed {seed} {method}: {len(inv)} samples, {inv.presentations} "
                            f"presentations, {inv.info['wall']:.0f} s ({inv.info['cpu']:.0f} s CPU)")
                    # one plain run, read at each sampler's number of presentations
                    P = max(s.presentations for s in sets.values())
                    t0, c0 = time.time(), time.process_time()
                    store = Path(tmp) / f"run-{len(rows)}.zarr"
                    r = run(decoder, onnx_scorer, args.optimizer, budget=P, seed=seed, store=store, progress=False)
                    wall_run, cpu_run = time.time() - t0, time.process_time() - c0
                    for method in ("gradient", "free"):
                        s = sets[method]
                        base = baseline_from_run(r, (z1, z2), max_presentations=s.presentations)
                        base.info["wall"] = wall_run * s.presentations / max(P, 1)
                        base.info["cpu"] = cpu_run * s.presentations / max(P, 1)
                        sets[f"baseline@{method}"] = base
                    log(f"{label} [{lo}, {hi}] seed {seed} baseline run: {P} presentations, best "
                        f"{r.best_score / amax:.2f} x ref max, {wall_run:.0f} s ({cpu_run:.0f} s CPU)")
                    for method, s in sets.items():
                        row = {"unit": label, "range": f"[{lo}, {hi}]", "amax": amax, "method": method, "seed": seed,
                               "n": len(s), "presentations": s.presentations, "wall": s.info.get("wall", float("nan")),
                               "cpu": s.info.get("cpu", float("nan")),
                               "in_range": float("nan"), "div_gap": float("nan"), "div_series": float("nan")}
                        if len(s):
                            a = onnx_scorer(s.series)
                            row["in_range"] = float(np.mean((a >= z1) & (a <= z2)))
                        if len(s) > 1:
                            row["div_gap"] = diversity(gap(s.series))
                            row["div_series"] = diversity(s.series.reshape(len(s), -1))
                        rows.append(row)
                    if u == units[0] and seed == seeds[0]:
                        gallery[(lo, hi)] = {m: s for m, s in sets.items() if m in ("gradient", "free", "baseline@free")}
    wall_all = time.time() - t_all

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "inverse_sets_quick" if args.quick else "inverse_sets"
    png = out / f"{stem}_gallery.png"
    plot(gallery, units[0], png, select_diverse)
    md = report(rows, args, assets, decoder, seeds, n, budget, wall_all, png)
    (out / f"{stem}.md").write_text(md)
    log(f"wrote {out / f'{stem}.md'} and {png} ({wall_all:.0f} s)")
    return 0


class _Ref:
    """xdream_ts.reference with sample_series from a rebuilt model's folder."""

    def __init__(self, ref, X):
        self._ref, self._X = ref, X

    def __getattr__(self, name):
        return getattr(self._ref, name)

    def sample_series(self):
        return self._X, None


def plot(gallery: dict, unit, path: Path, select_diverse) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ("gradient", "free", "baseline@free")
    fig, axes = plt.subplots(len(methods), len(gallery), figsize=(max(8.0, 5.5 * len(gallery)), 7.5), squeeze=False)
    for j, (rng_, sets) in enumerate(gallery.items()):
        for i, m in enumerate(methods):
            ax = axes[i, j]
            s = sets.get(m)
            if s is None or len(s) == 0:
                ax.text(0.5, 0.5, "no series in range", ha="center", va="center", transform=ax.transAxes)
            else:
                idx = select_diverse(s.series.reshape(len(s), -1), min(6, len(s)), seed=0)
                for k, i_ in enumerate(idx):
                    ax.plot(s.series[i_] + 4.5 * k, lw=0.7, color=f"C{k}")
                    ax.text(505, 4.5 * k, f"{s.activations[i_, 0]:.2f}", fontsize=7, va="center")
            ax.set_title(f"{m}, range {list(rng_)} x ref max: {len(s) if s is not None else 0} series", fontsize=9)
            if unit.position == "center":  # the unit reads time step 250: its receptive field is around it
                ax.axvline(250, color="k", lw=0.6, ls=":")
            ax.set_yticks([])
            ax.set_xlim(0, 540)
    fig.suptitle(f"Inverse sets of {unit.tensor}:{unit.channel}: 6 series per set, chosen farthest-first;\n"
                 "numbers: activation; dotted: the time step the unit reads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores shared with other jobs (load average {load} at the end)"


def report(rows, args, assets, decoder, seeds, n, budget, wall_all, png) -> str:
    import torch
    prov = assets.provenance()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    cmd = " ".join(shlex.quote(a) for a in ["python", "experiments/inverse_sets.py", *(sys.argv[1:])])

    def ms(values, fmt):
        v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
        if not len(v):
            return "n/a"
        return format(v.mean(), fmt) + (f" ± {format(v.std(ddof=1), fmt)}" if len(v) > 1 else "")

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["unit"], r["range"], r["method"]), []).append(r)
    ratio = {}  # per (unit, range, sampler): per-seed gap diversity / that of the baseline at its presentations
    for (unit, rng_, method), rs in groups.items():
        if method in ("gradient", "free"):
            base = {b["seed"]: b["div_gap"] for b in groups.get((unit, rng_, f"baseline@{method}"), [])}
            ratio[(unit, rng_, method)] = [r["div_gap"] / base[r["seed"]] for r in rs
                                          if np.isfinite(r["div_gap"]) and base.get(r["seed"])
                                          and np.isfinite(base[r["seed"]])]
    lines = [
        f"# Inverse sets{' (quick)' if args.quick else ''}: diversity of the samplers vs what an optimizer run visits",
        "",
        f"- date: {_dt.datetime.now().isoformat(timespec='minutes')}; commit {commit}; command `{cmd}`",
        f"- machine: {_machine()}; torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
        "onnxruntime CPU 1 thread",
        f"- model: {assets.onnx}" + (f" (test accuracy {prov.get('test_accuracy', float('nan')):.3f}, "
                                     f"epoch {prov.get('selected_epoch')})" if prov else ""),
        f"- decoder: {getattr(decoder, 'name', type(decoder).__name__)} (latent {decoder.latent_dim}); "
        f"reach/baseline optimizer: {args.optimizer}; samplers spread in: {args.features}; "
        f"n = {n} per set, at most {budget} presentations per sampler; seeds {seeds}; "
        f"total wall time {wall_all / 60:.1f} min",
        "",
        "Ranges are fractions of the unit's reference maximum (its largest activation over all FordA series). "
        "`baseline@M` = the in-range series a plain run of the optimizer (maximising the unit, same seed) visited "
        "within the presentations sampler M used (its CPU time: that share of the run's). `FordA sample`: the "
        "shipped 300 FordA test series whose activation lies in range (real data, for context; no search). "
        "*In range*: fraction of the set whose activation, re-scored by the ONNX model, lies in the range. "
        "*Diversity*: mean pairwise Euclidean distance of the `gap` layer's 128 activations (the paper's measure, "
        "in a layer of the model), and of the (z-normalised, length-500) series. *x baseline*: gap diversity over "
        "that of `baseline@M` for the same seed. Values: mean ± sd over seeds. CPU s: process time (torch and "
        "onnxruntime on 1 thread each); the gradient path's CPU includes the torch `gap` features it "
        "differentiates through (not counted as presentations; the baseline reads no features).",
        "",
        "| unit | range (x max) | method | series | presentations | CPU s | in range | diversity gap | x baseline | "
        "diversity series |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (unit, rng_, method), rs in groups.items():
        x = ms(ratio.get((unit, rng_, method), []), ".2f") if method in ("gradient", "free") else ""
        lines.append(f"| {unit} | {rng_} | {method} | {ms([r['n'] for r in rs], '.0f')} | "
                     f"{ms([r['presentations'] for r in rs], '.0f')} | {ms([r['cpu'] for r in rs], '.0f')} | "
                     f"{ms([r['in_range'] for r in rs], '.2f')} | {ms([r['div_gap'] for r in rs], '.2f')} | {x} | "
                     f"{ms([r['div_series'] for r in rs], '.1f')} |")
    lines += ["", "Summary over units and ranges (per-seed ratios of gap diversity to the baseline at equal "
              "presentations):", "", "| sampler | geometric mean x baseline | (unit, range) pairs above 1 |",
              "|---|---|---|"]
    for method in ("gradient", "free"):
        per_pair = [np.mean(v) for (u_, r_, m), v in ratio.items() if m == method and v]
        allv = [x for (u_, r_, m), v in ratio.items() if m == method for x in v if x > 0]
        if allv:
            lines.append(f"| {method} | {np.exp(np.mean(np.log(allv))):.2f} | "
                         f"{sum(p > 1 for p in per_pair)} of {len(per_pair)} |")
    lines += ["", f"Gallery: `{png.name}` (first unit, seed {seeds[0]}; 6 series per set chosen farthest-first in "
              "series space).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
