#!/usr/bin/env python
"""Which decoder makes the search work? Activation reached per search space, and searchability.

Two measurements on the shipped FordA reference ResNet, with four decoders as search spaces:
``default`` (the shipped VAE, latent 64), ``basis:32`` (32 DCT components), ``pca:FordA:64`` (64
whitened principal components fitted on FordA TRAIN) and ``identity`` (the 500 raw samples).

(A) XDream Fig. 4 for time series: the same optimizer (``genetic`` and ``default``) with the same budget
    (3,000 presentations) drives units of the reference model through each decoder; the score of a run
    is its best clean activation divided by the unit's maximum over all 4921 FordA series
    (``reference.reference_max``): relative activation, 1 = as strong as the strongest real series.
    Units: the first 2 of each depth of ``reference.reference_units()`` (block1/out, block2/out,
    block3/out at the centre time step, and the two logits), seeds 0 and 1. Scoring reuses
    ``experiments/bench_optimizers.py`` (exact windowed scoring of hidden centre units, lockstep runs).

(B) XDream Fig. S2, searchability: the scorer returns minus the distance to a real held-out FordA TEST
    series, (i) in raw samples (z-normalised, ``-||x - t|| / sqrt(L)``) and (ii) in the reference
    model's ``gap`` features (128, ``-||gap(x) - gap(t)||``). Can the search through each decoder find
    that series again? Reported: the Pearson correlation between the best series found and the target
    at 1,000, 3,000 and 10,000 presentations (mean over targets), next to the ceiling
    corr(decode(encode(t)), t): a decoder cannot recover what it cannot represent.

Two diagnostics come with them: for (A), the fraction of the strongest series' energy inside a hidden
unit's receptive field (z-normalisation lets a search pack the variance where the unit looks); for (B),
the correlation maximised over time shifts, with the same measure for other real series as a baseline
(gap features average over time, so a shifted copy of the target would be as good as the target).

Modes:
- ``--quick`` (under a minute on 2 shared cores, a smoke test, not a result): A on 1 unit per hidden depth,
  seed 0, budget 600; B on 1 target, raw space only, ``default`` only, budget 1,500.
- full (default): A as above (8 units, 2 seeds, budget 3,000); B on 5 targets in raw space
  (``default`` and ``genetic``) and 2 targets in gap space (only 2: every gap presentation
  runs the full model, ~7 ms a series here; ``default`` and ``genetic``), budget 10,000, seed 0.
  About 32 min at nice 5 on 2 cores shared with two other benchmarks.

Results: experiments/results/decoder_search[_quick].md and PNGs next to it; every run's numbers in
experiments/_work/decoder_search[_quick].json.

    nohup nice -n 5 .venv/bin/python experiments/decoder_search.py > experiments/_work/decoder_search.log 2>&1 &
    nice -n 5 .venv/bin/python experiments/decoder_search.py --quick
"""
from __future__ import annotations

import os

# Before numpy/onnxruntime/torch load: the machine's cores are shared with other long jobs, and
# thread pools fighting over them slow everyone down.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import bench_optimizers as bo  # noqa: E402

LENGTH = 500
CHECKPOINTS = (1000, 3000, 10000)


def _ucr_folder() -> Path:
    for base in (REPO.parent / "shared" / "data" / "ucr", Path("/work/shared/data/ucr")):
        if (base / "FordA").is_dir():
            return base / "FordA"
    raise SystemExit("FordA not found under ../shared/data/ucr (needed for the PCA decoder)")


def decoder_specs() -> dict[str, str]:
    """Short label -> make_decoder spec."""
    return {"default": "default", "basis:32": "basis:32", "pca:FordA:64": f"pca:{_ucr_folder()}:64",
            "identity": "identity"}


MODES = {
    "quick": dict(a_depths=("block1/out", "block2/out", "block3/out"), a_per_depth=1, a_seeds=1, a_budget=600,
                  a_methods=("genetic", "default"),
                  b_targets=1, b_gap_targets=0, b_budget=1500, b_methods=("default",), b_gap_methods=()),
    "full": dict(a_depths=("block1/out", "block2/out", "block3/out", "logits"), a_per_depth=2, a_seeds=2,
                 a_budget=3000, a_methods=("genetic", "default"),
                 b_targets=5, b_gap_targets=2, b_budget=10000, b_methods=("default", "genetic"),
                 b_gap_methods=("default", "genetic")),
}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])


def shift_corr(x: np.ndarray, t: np.ndarray, max_lag: int = LENGTH // 2) -> float:
    """Max Pearson correlation of x and t over time shifts (overlap >= L - max_lag).

    The gap features average over time, so a gap-space search could return a shifted copy of the
    target, which the plain (lag 0) correlation would miss."""
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        a, c = (x[lag:], t[: len(t) - lag]) if lag >= 0 else (x[:lag], t[-lag:])
        a, c = a - a.mean(), c - c.mean()
        best = max(best, float(a @ c / np.sqrt((a @ a) * (c @ c) + 1e-300)))
    return best


def receptive_field(tensor: str, centre: int = LENGTH // 2) -> slice | None:
    """Input samples a centre unit of block b sees: 'same' convs k8 (3 before, 4 after), k5, k3 per
    block, so t-6b .. t+7b; None for tensors that see the whole series."""
    if not tensor.startswith("block"):
        return None
    b = int(tensor[len("block")])
    return slice(centre - 6 * b, centre + 7 * b + 1)


def rf_energy(x: np.ndarray, tensor: str) -> float:
    """Fraction of a z-normalised series' energy inside the unit's receptive field."""
    rf = receptive_field(tensor)
    x = np.asarray(x, np.float64)
    return float((x[rf] ** 2).sum() / (x ** 2).sum()) if rf is not None else float("nan")


# ---------------------------------------------------------------------------------------------------
# (A) relative activation per decoder
# ---------------------------------------------------------------------------------------------------
def part_a(mode: dict, decoders: dict, log) -> dict:
    from xdream_ts import reference as ref
    units = []
    real_rf = {}
    for depth in mode["a_depths"]:
        for u in [u for u in ref.reference_units() if u.tensor == depth][: mode["a_per_depth"]]:
            real_rf[len(units)] = rf_energy(ref.best_real_series(u), u.tensor)
            units.append(bo.Unit(u.tensor, u.channel, u.position,
                                 float(ref.reference_max((u.tensor, u.channel, u.position)))))
    out = {"units": [dict(name=u.name, tensor=u.tensor, channel=u.channel, position=u.position,
                          reference_max=u.reference_max) for u in units], "runs": [], "window_err": {},
           "seconds": {}, "rf_energy": {}}
    out["rf_energy"]["best real series"] = real_rf
    for label, dec in decoders.items():
        t0 = time.perf_counter()
        problem = bo.ModelProblem(ref.reference_model_path(), units, dec, length=LENGTH)
        out["window_err"][label] = problem.check_window()
        log(f"[A] {label}: windowed max |diff| {out['window_err'][label]:.2g}")
        score = problem.score
        for m in mode["a_methods"]:
            # run_lockstep keeps no series; remember the strongest one per unit to see WHERE it puts its energy
            best = {}

            def tracked(series, unit_of_row, _score=score, _best=best):
                acts = _score(series, unit_of_row)
                for i in np.unique(unit_of_row):
                    rows = np.flatnonzero(unit_of_row == i)
                    j = rows[int(np.argmax(acts[rows]))]
                    if acts[j] > _best.get(int(i), (-np.inf, None))[0]:
                        _best[int(i)] = (float(acts[j]), np.array(series[j], np.float64))
                return acts

            problem.score = tracked
            specs = [bo.RunSpec(m, i, s, "none", mode["a_budget"]) for i in range(len(units))
                     for s in range(mode["a_seeds"])]
            log(f"[A] {label} {m}: {len(specs)} runs x {mode['a_budget']}")
            for r in bo.run_lockstep(problem, specs, log=log):
                u = units[r["unit"]]
                r.pop("curve")
                out["runs"].append({**r, "decoder": label, "tensor": u.tensor, "unit_name": u.name,
                                    "relative": r["max_clean"] / u.reference_max,
                                    "relative_picked": r["picked_clean"] / u.reference_max})
            out["rf_energy"][f"{label}|{m}"] = {i: rf_energy(best[i][1], units[i].tensor) for i in best}
        problem.score = score
        out["seconds"][label] = time.perf_counter() - t0
        log(f"[A] {label} done in {out['seconds'][label]:.0f} s")
    return out


# ---------------------------------------------------------------------------------------------------
# (B) searchability: recover a real series from minus its distance
# ---------------------------------------------------------------------------------------------------
class _Search:
    def __init__(self, decoder_label, target, space, method, opt, budget):
        self.decoder, self.target, self.space, self.method = decoder_label, target, space, method
        self.opt, self.budget = opt, budget
        self.used, self.best, self.best_series = 0, -np.inf, None
        self.at = {}      # checkpoint -> corr of the best series so far with the target
        self.curve = []   # (presentations, corr) whenever the best improves


def part_b(mode: dict, decoders: dict, log, seed: int = 0) -> dict:
    from xdream_ts import reference as ref
    from xdream_ts.adapters.onnx import OnnxScorer, Target
    from xdream_ts.decoders.encode import encode, has_encoder
    from xdream_ts.optimizers import make_optimizer
    from xdream_ts.series import znormalize

    X, y = ref.sample_series()
    n_t = max(mode["b_targets"], mode["b_gap_targets"])
    targets = znormalize(X[:n_t].astype(np.float64)).astype(np.float32)
    budget = mode["b_budget"]
    checkpoints = sorted({c for c in CHECKPOINTS if c < budget} | {budget})

    gap = None
    gap_t = gap_scale = None
    if mode["b_gap_targets"]:
        gap = OnnxScorer(ref.reference_model_path(), [Target("gap", j) for j in range(128)], threads=1,
                         providers="cpu")
        gap_t = np.asarray(gap(targets), np.float64)
        # a scale for gap distances: how far the target's features are from other real series'
        others = np.asarray(gap(znormalize(X[n_t:].astype(np.float64)).astype(np.float32)), np.float64)
        gap_scale = [float(np.median(np.linalg.norm(others - gap_t[k], axis=1))) for k in range(n_t)]

    # ceilings: what each decoder can represent at all
    ceilings = {}
    for label, dec in decoders.items():
        c_auto = encode(dec, targets)
        rec = np.asarray(dec(c_auto))
        row = {"auto": [_pearson(rec[k], targets[k]) for k in range(n_t)]}
        if has_encoder(dec) and callable(getattr(dec, "torch_module", None)):
            # the VAE's encoder is amortised; refining its codes through the decoder is the fairer ceiling
            c_opt = encode(dec, targets, method="opt", seed=seed)
            rec_o = np.asarray(dec(c_opt))
            row["opt"] = [_pearson(rec_o[k], targets[k]) for k in range(n_t)]
            c_best = np.where(np.array(row["opt"])[:, None] >= np.array(row["auto"])[:, None], c_opt, c_auto)
        else:
            c_best = c_auto
        # the default optimizer searches a sphere of norm 0.5 sqrt(d); for the VAE the norm of a code
        # changes the series, so the best code projected onto that sphere is a (lower-bound) ceiling for it
        r = 0.5 * np.sqrt(dec.latent_dim)
        rec_s = np.asarray(dec(r * c_best / np.linalg.norm(c_best, axis=1, keepdims=True)))
        row["on_default_sphere"] = [_pearson(rec_s[k], targets[k]) for k in range(n_t)]
        row["code_norm"] = [float(v) for v in np.linalg.norm(c_best, axis=1)]
        row["sphere_radius"] = float(r)
        if gap is not None:
            g = np.asarray(gap(np.asarray(dec(c_best))[: mode["b_gap_targets"]]), np.float64)
            row["gap_dist"] = [float(np.linalg.norm(g[k] - gap_t[k])) for k in range(len(g))]
        ceilings[label] = row
        log(f"[B] ceiling {label}: corr {np.round(row['auto'], 3)}"
            + (f", opt {np.round(row['opt'], 3)}" if "opt" in row else "")
            + f", on default's sphere {np.round(row['on_default_sphere'], 3)}")

    searches = []
    for label, dec in decoders.items():
        jobs = [("raw", k, m) for m in mode["b_methods"] for k in range(mode["b_targets"])]
        jobs += [("gap", k, m) for m in mode["b_gap_methods"] for k in range(mode["b_gap_targets"])]
        for space, k, m in jobs:
            opt = make_optimizer(m, dec.latent_dim, seed=seed, evaluations=budget)
            searches.append(_Search(label, k, space, m, opt, budget))
    log(f"[B] {len(searches)} searches x {budget} presentations "
        f"({sum(s.space == 'gap' for s in searches)} in gap space)")

    t0 = last = time.perf_counter()
    total = sum(s.budget for s in searches)
    while True:
        active = [s for s in searches if s.used < s.budget]
        if not active:
            break
        asked = [np.asarray(s.opt.ask(), dtype=np.float64) for s in active]
        cut = [min(len(c), s.budget - s.used) for c, s in zip(asked, active)]
        series = [None] * len(active)
        for label, dec in decoders.items():  # one decoder call per decoder (the VAE pays per call)
            idx = [i for i, s in enumerate(active) if s.decoder == label]
            if idx:
                out = np.asarray(dec(np.concatenate([asked[i][: cut[i]] for i in idx])))
                at = 0
                for i in idx:
                    series[i] = out[at: at + cut[i]]
                    at += cut[i]
        scores = [None] * len(active)
        for i, s in enumerate(active):
            if s.space == "raw":
                scores[i] = -np.linalg.norm(series[i].astype(np.float64) - targets[s.target], axis=1) / np.sqrt(LENGTH)
        gi = [i for i, s in enumerate(active) if s.space == "gap"]
        if gi:  # all gap searches' series through the full model in one call
            feats = np.asarray(gap(np.concatenate([series[i] for i in gi])), np.float64)
            at = 0
            for i in gi:
                f = feats[at: at + cut[i]]
                at += cut[i]
                scores[i] = -np.linalg.norm(f - gap_t[active[i].target], axis=1)
        for i, s in enumerate(active):
            told = np.full(len(asked[i]), np.nan)
            told[: cut[i]] = scores[i]
            s.opt.tell(asked[i], told)
            before = s.used
            s.used += cut[i]
            j = int(np.argmax(scores[i]))
            if scores[i][j] > s.best:
                s.best, s.best_series = float(scores[i][j]), series[i][j].copy()
                s.curve.append((s.used, _pearson(s.best_series, targets[s.target])))
            for c in checkpoints:
                if before < c <= s.used:  # generation granularity: the first generation reaching c
                    s.at[c] = _pearson(s.best_series, targets[s.target])
        now = time.perf_counter()
        if now - last > 60:
            log(f"  [B] {sum(s.used for s in searches)}/{total} presentations, {now - t0:.0f} s")
            last = now

    # how similar is a random OTHER real series to the target under the same shift-invariant measure
    others = znormalize(X[n_t: n_t + 100].astype(np.float64))
    shift_base = [float(np.median([shift_corr(o, targets[k]) for o in others])) for k in range(n_t)]
    runs = []
    for s in searches:
        d = {"decoder": s.decoder, "target": s.target, "space": s.space, "method": s.method,
             "best_score": s.best, "corr_at": {str(c): v for c, v in s.at.items()},
             "shift_corr": shift_corr(s.best_series, targets[s.target]),
             "curve": [(int(a), float(b)) for a, b in s.curve]}
        if s.space == "gap":
            d["gap_dist_rel"] = -s.best / gap_scale[s.target]
        runs.append(d)
    return {"checkpoints": checkpoints, "ceilings": ceilings, "runs": runs, "labels": [int(v) for v in y[:n_t]],
            "gap_scale": gap_scale, "shift_baseline": shift_base, "seconds": time.perf_counter() - t0,
            "best_series": {f"{s.decoder}|{s.space}|{s.method}|{s.target}": s.best_series.tolist()
                            for s in searches}}


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------
def _f(x, d=2):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def plot_a(path: Path, a: dict, decoders: list[str], methods: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"genetic": "tab:blue", "default": "tab:orange"}
    depths = list(dict.fromkeys(u["tensor"] for u in a["units"]))
    markers = dict(zip(depths, "osD^v"))
    fig, ax = plt.subplots(figsize=(2.2 * len(decoders) + 1.5, 4.2))
    w = 0.8 / len(methods)
    rng = np.random.default_rng(0)
    for di, dec in enumerate(decoders):
        for mi, m in enumerate(methods):
            x0 = di + (mi - (len(methods) - 1) / 2) * w
            rs = [r for r in a["runs"] if r["decoder"] == dec and r["method"] == m]
            v = [r["relative"] for r in rs]
            bp = ax.boxplot([v], positions=[x0], widths=w * 0.8, patch_artist=True, showfliers=False)
            bp["boxes"][0].set_facecolor(colours.get(m, "grey"))
            bp["boxes"][0].set_alpha(0.35)
            for r in rs:
                ax.scatter(x0 + rng.uniform(-w / 4, w / 4), r["relative"], s=14, color=colours.get(m, "grey"),
                           marker=markers[r["tensor"]], edgecolor="k", linewidth=0.3, zorder=3)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(decoders)))
    ax.set_xticklabels(decoders)
    ax.set_ylabel("best activation / max over FordA")
    ax.set_title("(A) relative activation per search space")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=colours.get(m, "grey"), lw=6, alpha=0.5, label=m) for m in methods]
    handles += [Line2D([], [], color="grey", marker=markers[t], ls="", label=t) for t in depths]
    ax.legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_b(path: Path, b: dict, decoders: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    combos = list(dict.fromkeys((r["space"], r["method"]) for r in b["runs"]))
    fig, axes = plt.subplots(1, len(combos), figsize=(4.6 * len(combos), 3.8), squeeze=False)
    colours = dict(zip(decoders, ["tab:red", "tab:green", "tab:purple", "tab:grey"]))
    budget = b["checkpoints"][-1]
    grid = np.unique(np.geomspace(40, budget, 80).astype(int))
    for ax, (space, method) in zip(axes[0], combos):
        for dec in decoders:
            rs = [r for r in b["runs"] if r["decoder"] == dec and r["space"] == space and r["method"] == method]
            if not rs:
                continue
            ys = []
            for r in rs:
                c = np.array(r["curve"])
                # step function: the best series so far, held until the next improvement
                ys.append(c[np.clip(np.searchsorted(c[:, 0], grid, side="right") - 1, 0, None), 1]
                          * np.where(grid >= c[0, 0], 1, np.nan))
            ax.plot(grid, np.nanmean(ys, axis=0), color=colours[dec], label=dec)
            targets = sorted({r["target"] for r in rs})
            ceil = b["ceilings"][dec]
            best_ceil = np.maximum(ceil["auto"], ceil.get("opt", ceil["auto"]))
            ax.axhline(np.mean([best_ceil[k] for k in targets]), color=colours[dec], ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(-0.2, 1.02)
        ax.set_xlabel("presentations")
        ax.set_ylabel("corr(best series, target)")
        ax.set_title(f"(B) {space} distance, {method}", fontsize=10)
    axes[0][0].legend(fontsize=7, title="dashed: ceiling", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, mode_name: str, mode: dict, a: dict, b: dict, seconds: float, command: str,
                 decoder_spec: dict) -> None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
    except Exception:
        rev = "?"
    decoders = list(decoder_spec)
    methods = list(mode["a_methods"])
    depths = list(dict.fromkeys(u["tensor"] for u in a["units"]))
    L = [f"# Decoder as search space: activation reached and searchability ({mode_name} mode)", ""]
    if mode_name == "quick":
        L += ["**Quick mode: a smoke test of the protocol, not a result.**", ""]
    L += [f"Generated by `experiments/decoder_search.py` on {datetime.datetime.now():%Y-%m-%d %H:%M} "
          f"(git {rev}), wall time {seconds / 60:.1f} min.", "",
          f"- Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} logical cores shared with two "
          "other long benchmark processes (this one at nice 5, single-threaded), no GPU.",
          f"- Command: `{command}`",
          "- Decoders: " + ", ".join(f"`{k}` = `{v}`" for k, v in decoder_spec.items())
          + " (PCA fitted on FordA TRAIN); latent dims: "
          + ", ".join(f"{k} {d}" for k, d in a["latent_dims"].items()) + ".",
          ""]

    # ---- A
    L += ["## (A) Relative activation per decoder (XDream Fig. 4)", "",
          f"Same optimizer and budget for every decoder: {', '.join(methods)}, {mode['a_budget']} presentations, "
          f"seeds {', '.join(str(s) for s in range(mode['a_seeds']))}, no noise. "
          f"Units ({len(a['units'])}): " + ", ".join(u["name"] for u in a["units"]) + ". "
          "Relative activation = best clean activation shown during the run / the unit's maximum over all "
          "4921 FordA series (1.0 = the strongest real series). Without noise the series each run reports "
          "(incumbent for `default`, best observed for `genetic`) is that best one "
          f"(max |reported - best| relative: {_f(max(abs(r['relative'] - r['relative_picked']) for r in a['runs']), 3)}). "
          "Windowed scoring of hidden centre units vs the full model, max |diff|: "
          + ", ".join(f"{k} {v:.1g}" for k, v in a["window_err"].items()) + ".", "",
          "### median (mean) over units x seeds", "",
          "| decoder | " + " | ".join(f"{m} all" for m in methods) + " | "
          + " | ".join(f"{m} {t}" for m in methods for t in depths) + " |",
          "|---|" + "---|" * (len(methods) * (1 + len(depths)))]
    for dec in decoders:
        cells = []
        for m in methods:
            v = [r["relative"] for r in a["runs"] if r["decoder"] == dec and r["method"] == m]
            cells.append(f"{_f(np.median(v))} ({_f(np.mean(v))})")
        for m in methods:
            for t in depths:
                v = [r["relative"] for r in a["runs"] if r["decoder"] == dec and r["method"] == m and r["tensor"] == t]
                cells.append(f"{_f(np.median(v))} ({_f(np.mean(v))})")
        L.append(f"| {dec} | " + " | ".join(cells) + " |")
    L += ["", "### per unit (mean over seeds)", "",
          "| unit | FordA max | " + " | ".join(f"{d} {m}" for d in decoders for m in methods) + " |",
          "|---|---|" + "---|" * (len(decoders) * len(methods))]
    for i, u in enumerate(a["units"]):
        cells = [_f(np.mean([r["relative"] for r in a["runs"] if r["unit"] == i and r["decoder"] == d
                             and r["method"] == m])) for d in decoders for m in methods]
        L.append(f"| {u['name']} | {_f(u['reference_max'], 3)} | " + " | ".join(cells) + " |")
    hidden = [i for i, u in enumerate(a["units"]) if receptive_field(u["tensor"]) is not None]
    if hidden:
        rfe = a["rf_energy"]
        L += ["", "### where the strongest series put their energy (hidden centre units)", "",
              "Fraction of the z-normalised series' energy inside the unit's receptive field (block b: samples "
              "250-6b .. 250+7b, i.e. 14, 27, 40 samples; spread evenly it would be 0.03, 0.05, 0.08), for "
              "the strongest series any seed found, and for the real FordA series that reaches the unit's maximum.", "",
              "| unit | best real series | " + " | ".join(f"{d} {m}" for d in decoders for m in methods) + " |",
              "|---|---|" + "---|" * (len(decoders) * len(methods))]
        for i in hidden:
            cells = [_f(rfe.get(f"{d}|{m}", {}).get(i, rfe.get(f"{d}|{m}", {}).get(str(i))))
                     for d in decoders for m in methods]
            real = rfe["best real series"].get(i, rfe["best real series"].get(str(i)))
            L.append(f"| {a['units'][i]['name']} | {_f(real)} | " + " | ".join(cells) + " |")
    L += ["", "Wall time per decoder (s): " + ", ".join(f"{k} {v:.0f}" for k, v in a["seconds"].items())
          + f". Plot: `{path.with_suffix('.png').name}`.", ""]

    # ---- B
    cps = b["checkpoints"]
    n_raw = mode["b_targets"]
    L += ["## (B) Searchability: recovering a held-out FordA series (XDream Fig. S2)", "",
          f"Targets: the first {max(n_raw, mode['b_gap_targets'])} series of the shipped FordA TEST sample "
          f"(labels {b['labels']}), z-normalised, length {LENGTH}; neither the VAE nor the PCA saw them. "
          "Scorer: minus the distance to the target, (raw) `-||x - t|| / sqrt(L)` on z-normalised samples "
          f"({n_raw} target(s)), (gap) `-||gap(x) - gap(t)||` on the reference model's 128 pooled features "
          f"({mode['b_gap_targets']} target(s)). Budget {mode['b_budget']}, seed 0. Entry = Pearson correlation "
          "(raw samples) between the best-scoring series so far and the target, mean over targets "
          "(checkpoints at generation granularity: the first generation that reaches the count). In raw "
          "space the score is a monotone function of that correlation (||x - t||^2 / L = 2(1 - r) for "
          "z-normalised series), so the search maximises it directly.", "",
          "Ceilings (mean over the same targets): `encoder` = corr(decode(encode(t)), t) with "
          "`xdream_ts.decoders.encode.encode` (VAE: its encoder; linear decoders: least squares / projection, "
          "exact optimum); `refined` = VAE codes refined by Adam through the decoder (encode method='opt'); "
          "`on default's sphere` = the best of those codes rescaled to the default optimizer's code norm "
          "0.5 sqrt(d) (the default searches only that sphere; a lower bound on the best the sphere holds).", ""]
    combos = list(dict.fromkeys((r["space"], r["method"]) for r in b["runs"]))
    for space, method in combos:
        ks = sorted({r["target"] for r in b["runs"] if r["space"] == space})
        L += [f"### {space} distance, optimizer `{method}` ({len(ks)} target(s))", "",
              "| decoder | " + " | ".join(f"corr @ {c}" for c in cps) + " | ceiling: encoder | refined | "
              f"on default's sphere | shift-inv. corr @ {cps[-1]} |"
              + (" gap dist / median to other series |" if space == "gap" else ""),
              "|---|" + "---|" * (len(cps) + 4) + ("---|" if space == "gap" else "")]
        for dec in decoders:
            rs = [r for r in b["runs"] if r["decoder"] == dec and r["space"] == space and r["method"] == method]
            if not rs:
                continue
            c = b["ceilings"][dec]
            cells = [_f(np.mean([r["corr_at"][str(cp)] for r in rs]), 3) for cp in cps]
            cells += [_f(np.mean([c["auto"][k] for k in ks]), 3),
                      _f(np.mean([c["opt"][k] for k in ks]), 3) if "opt" in c else "=",
                      _f(np.mean([c["on_default_sphere"][k] for k in ks]), 3),
                      _f(np.mean([r["shift_corr"] for r in rs]), 3)]
            if space == "gap":
                cells.append(_f(np.mean([r["gap_dist_rel"] for r in rs]), 3))
            L.append(f"| {dec} | " + " | ".join(cells) + " |")
        L += ["", f"Shift-invariant corr of a random other FordA TEST series with the same target(s) (median over "
              f"100): {_f(np.mean([b['shift_baseline'][k] for k in ks]), 3)}.", ""]
    L += ["`shift-inv. corr`: max Pearson correlation over time shifts of up to 250 samples (overlap >= 250), "
          "because gap features average over time and could not tell a shifted copy from the target. It is "
          "inflated by the max over 501 shifts, hence the baseline of other real series under each table.", "",
          "Per target, corr at the full budget (raw space, `default`): "
          + "; ".join(f"{dec} " + ", ".join(_f(r["corr_at"][str(cps[-1])], 2) for r in b["runs"]
                                            if r["decoder"] == dec and r["space"] == "raw" and r["method"] == "default")
                      for dec in decoders) + ".", "",
          "Best-code norms vs the default optimizer's sphere radius: "
          + "; ".join(f"{dec} {np.mean(c['code_norm']):.1f} vs {c['sphere_radius']:.1f}"
                      for dec, c in b["ceilings"].items()) + ".", ""]
    if b.get("gap_scale"):
        gd = "; ".join(f"{dec} " + ", ".join(_f(v / b['gap_scale'][k], 2) for k, v in enumerate(c["gap_dist"]))
                       for dec, c in b["ceilings"].items() if "gap_dist" in c)
        L += [f"Gap distance of the encoded reconstruction / median gap distance to other series: {gd}.", ""]
    L += [f"Searches took {b['seconds'] / 60:.1f} min. Plot: `{path.stem}_recovery.png` (mean corr of the best "
          "series so far vs presentations; dashed: mean ceiling, the better of encoder and refined).", ""]
    L += ["## Reading", "", "<!-- READING -->", ""]
    path.write_text("\n".join(L))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test, under a minute (see the docstring)")
    p.add_argument("--only", choices=("A", "B"), help="run one part only (for development)")
    args = p.parse_args(argv)
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    command = "nice -n 5 .venv/bin/python experiments/decoder_search.py" + (" --quick" if args.quick else "")
    stem = "decoder_search_quick" if args.quick else "decoder_search"
    out = REPO / "experiments" / "results" / f"{stem}.md"
    work = REPO / "experiments" / "_work"
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.0f} s] {msg}", flush=True)

    try:
        import torch  # the VAE ceiling refines codes by Adam; one thread, as everything here
        torch.set_num_threads(1)
    except ImportError:
        pass
    from xdream_ts.decoders import make_decoder
    spec = decoder_specs()
    decoders = {k: make_decoder(v, length=LENGTH) for k, v in spec.items()}
    a = b = None
    if args.only != "B":
        a = part_a(mode, decoders, log)
        a["latent_dims"] = {k: d.latent_dim for k, d in decoders.items()}
        (work / f"{stem}_A.json").write_text(json.dumps(a))
    if args.only != "A":
        b = part_b(mode, decoders, log)
        (work / f"{stem}_B.json").write_text(json.dumps(b))
    if a is None or b is None:
        log("one part only: no report")
        return 0
    seconds = time.perf_counter() - t_start
    write_report(out, mode_name, mode, a, b, seconds, command, spec)
    plot_a(out.with_suffix(".png"), a, list(spec), list(mode["a_methods"]))
    plot_b(out.with_name(f"{stem}_recovery.png"), b, list(spec))
    log(f"done in {seconds / 60:.1f} min -> {out}")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
