"""Sequence Dreaming (Schlegel, Keim & Sutter 2024) on the shipped FordA ResNet, and gradient vs gradient-free.

Three parts, results in experiments/results/sequence_dreaming[_quick].md with plots beside it:

1. **Class centre** (the paper's first use case): for each class, dream a series whose ``gap`` activation
   vector (the penultimate layer, 128 units) reaches the class centre (the mean ``gap`` vector of that
   class's real series): the scorer reads all 128 units and its objective is minus the Euclidean
   distance to the centre (``ClassCentre``). Without and with regularisers.
2. **Border / maximum activation** (the second): maximise the class's logit margin (logit c minus the
   other logit), far past any real series: the decision border's far side. Without regularisers, with
   a fixed regulariser set, and with the set ``autotune`` picks (activation and plausibility together).
   Every result gets its Mahalanobis distance in ``gap`` from the real series (LedoitWolf fit on the
   shipped FordA test sample) and its percentile among them.
3. **Gradient vs gradient-free** on reference units (one per block and a logit): ``compare`` at matched
   model evaluations (a backward pass counted at its measured cost), relative activation and
   Mahalanobis distance.

Dreams start from random series (N(0, 1), z-normalised by the identity decoder, as the loop's stimuli are).

    python experiments/sequence_dreaming.py            # full (about 40 minutes on 2 busy cores)
    python experiments/sequence_dreaming.py --quick    # ~5 minutes on 2 busy cores: fewer steps, units, seeds
    python experiments/sequence_dreaming.py --assets experiments/_work/smoke/assets   # a rebuilt model
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def settings(quick: bool) -> dict:
    if quick:
        return dict(steps=40, population=2, autotune_trials=4, autotune_steps=20, units_per_block=1,
                    evaluations=240, seeds=(0,), optimizers=("default", "genetic", "random", "dream"))
    return dict(steps=200, population=4, autotune_trials=8, autotune_steps=60, units_per_block=1,
                evaluations=1500, seeds=(0, 1, 2), optimizers=("default", "cmaes", "genetic", "random", "dream"))


# Fixed regulariser set in the spirit of the paper (its weights are not given in a form that carries over
# to z-normalised series): mild total variation and curvature penalties, exponential smoothing.
FIXED = {"tv": 0.05, "smooth": 0.5, "ema": 0.3}


def dream(decoder, scorer, params: dict, steps: int, population: int, seed: int = 0, lr: float = 0.05):
    from xdream_ts.optimizers.dream import Dream

    opt = Dream(decoder.latent_dim, seed=seed, population_size=population, learning_rate=lr, **params)
    opt.bind(decoder, scorer)
    t0 = time.perf_counter()
    x, obj = opt.optimize(steps)
    return decoder(x), obj, opt, time.perf_counter() - t0


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--assets", help="folder with a rebuilt reference model (default: the shipped one)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from xdream_ts.adapters.onnx import Target
    from xdream_ts.analysis import ActivationSpace
    from xdream_ts.compare import ModelAssets, _available, compare
    from xdream_ts.decoders.identity import IdentityDecoder
    from xdream_ts.optimizers.dream import ClassCentre, autotune, high_frequency_energy, total_variation

    S = settings(args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "sequence_dreaming" + ("_quick" if args.quick else "")
    ma = ModelAssets(args.assets)
    prov_path = ma._file(ma.ref.PROVENANCE_FILE)
    prov = json.loads(prov_path.read_text())
    X, y = ma.sample_series()
    dec = IdentityDecoder(500)
    t_start = time.perf_counter()
    report = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in S.items()}, "fixed": FIXED}

    # ---- the activation space: gap, fitted on the shipped FordA sample ----------------------------
    log("fitting the gap activation space on the FordA sample")
    gap_scorer = ma.torch_scorer([Target("gap", u) for u in range(128)])
    space = ActivationSpace(gap_scorer, "gap", X)
    G = space.reference_activations
    logits_real = ma.torch_scorer([Target("logits", 0), Target("logits", 1)])(X)
    real_acc = float((logits_real.argmax(1) == y).mean())
    report["space"] = space.fit.summary()
    log(f"  {space.fit.method}: {space.fit.reason}; real distances median {np.median(space.fit.distances):.2f}")

    def assess(series):
        d = space.distance(series)
        lg = ma.torch_scorer([Target("logits", 0), Target("logits", 1)])(series)
        return {"mahalanobis": d, "percentile": space.percentile(d), "logits": lg, "p": softmax(lg),
                "tv": total_variation(series), "hf": high_frequency_energy(series)}

    # ---- 1. class centre -------------------------------------------------------------------------------
    centre_rows, dreamed, labels = [], [], []
    for c in (0, 1):
        centre = G[y == c].mean(axis=0)
        real_dist = np.linalg.norm(G[y == c] - centre, axis=1)
        sc = ma.torch_scorer([Target("gap", u) for u in range(128)], objective=ClassCentre(centre))
        for setting, params in (("none", {}), ("fixed", FIXED)):
            s, obj, opt, wall = dream(dec, sc, params, S["steps"], S["population"], seed=c)
            a = assess(s)
            centre_rows.append({"class": c, "regularisers": setting, "distance_to_centre": float(np.mean(-obj)),
                                "real_distance_median": float(np.median(real_dist)),
                                "p_class": float(a["p"][:, c].mean()),
                                "mahalanobis": float(np.mean(a["mahalanobis"])),
                                "percentile": float(np.mean(a["percentile"])), "tv": float(np.mean(a["tv"])),
                                "hf": float(np.mean(a["hf"])), "n_forward": opt.n_forward,
                                "n_backward": opt.n_backward, "wall_s": round(wall, 1)})
            dreamed.append(s[0])
            labels.append(f"centre {c} ({setting})")
            log(f"  class centre {c} {setting}: distance {np.mean(-obj):.3f} (real median {np.median(real_dist):.3f}), "
                f"p(class) {a['p'][:, c].mean():.3f}, Mahalanobis {a['mahalanobis'].mean():.2f} ({wall:.0f} s)")
    report["class_centre"] = centre_rows

    # ---- 2. border: maximise the logit margin --------------------------------------------------------
    log("autotune (border, class 1)")
    margin1 = ma.torch_scorer([Target("logits", 1), Target("logits", 0)], objective="contrast")
    tuned = autotune(dec, margin1, space=space, trials=S["autotune_trials"], steps=S["autotune_steps"],
                     population_size=S["population"], seed=0)
    report["autotune"] = tuned
    log(f"  picked {tuned['best']}")
    border_rows = []
    real_margin = {c: float((logits_real[:, c] - logits_real[:, 1 - c]).max()) for c in (0, 1)}
    for c in (0, 1):
        sc = ma.torch_scorer([Target("logits", c), Target("logits", 1 - c)], objective="contrast")
        for setting, params in (("none", {}), ("fixed", FIXED), ("autotuned", tuned["best"])):
            s, obj, opt, wall = dream(dec, sc, params, S["steps"], S["population"], seed=10 + c)
            a = assess(s)
            border_rows.append({"class": c, "regularisers": setting, "margin": float(np.mean(obj)),
                                "real_margin_max": real_margin[c], "p_class": float(a["p"][:, c].mean()),
                                "mahalanobis": float(np.mean(a["mahalanobis"])),
                                "percentile": float(np.mean(a["percentile"])), "tv": float(np.mean(a["tv"])),
                                "hf": float(np.mean(a["hf"])), "n_forward": opt.n_forward,
                                "n_backward": opt.n_backward, "wall_s": round(wall, 1)})
            dreamed.append(s[0])
            labels.append(f"border {c} ({setting})")
            log(f"  border {c} {setting}: margin {np.mean(obj):.2f} (real max {real_margin[c]:.2f}), "
                f"Mahalanobis {a['mahalanobis'].mean():.2f} ({wall:.0f} s)")
    report["border"] = border_rows

    space.plot_pca(np.asarray(dreamed), out / f"{stem}_pca.png", labels=labels, reference_labels=y,
                   title="gap activations: FordA sample (by class) and dreamed series")
    plot_series(np.asarray(dreamed), labels, X, y, out / f"{stem}_series.png")

    # ---- 3. gradient vs gradient-free on reference units --------------------------------------------
    units = ma.reference_units()
    chosen = []
    for block in ("block1/out", "block2/out", "block3/out"):
        chosen += [u for u in units if u.tensor == block][: S["units_per_block"]]
    chosen += [u for u in units if u.tensor == "logits"][:1]
    gvg = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, u in enumerate(chosen):
            target = f"{u.tensor}:{u.channel}" + ("" if u.position == "none" else f"@{u.position}")
            log(f"compare on {target}")
            res = compare(target=target, optimizers=[o for o in S["optimizers"] if _available(o)], evaluations=S["evaluations"], seeds=S["seeds"],
                          out=Path(tmp) / f"u{i}", assets=args.assets, space=space,
                          log=lambda m: log("  " + m))
            if i == 1:  # keep one curve plot (a block2 unit)
                import shutil
                shutil.copy(Path(tmp) / f"u{i}" / "curves.png", out / f"{stem}_curves.png")
            report["gf_decoder"] = res["decoder"]
            for e in res["table"]:
                gvg.append({"unit": target, **e, "backward_cost": res["backward_cost"]})
    report["gradient_vs_gradient_free"] = gvg
    wall = time.perf_counter() - t_start

    md = render(report, prov, real_acc, stem, wall, args)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=float))
    log(f"wrote {out / (stem + '.md')} in {wall / 60:.1f} min")
    return 0


def plot_series(series, labels, X, y, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(series)
    fig = Figure(figsize=(8, 1.3 * (n + 1)), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(n + 1, 1, 1)
    for c in (0, 1):
        ax.plot(X[y == c][0], lw=0.7, label=f"a real class-{c} series")
    ax.legend(fontsize=6, loc="upper right")
    ax.tick_params(labelsize=6)
    for i, (s, lab) in enumerate(zip(series, labels)):
        ax = fig.add_subplot(n + 1, 1, i + 2)
        ax.plot(s, lw=0.7, color=f"C{2 + i % 8}")
        ax.set_ylabel(lab, fontsize=6, rotation=0, ha="right")
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path)


def render(r, prov, real_acc, stem, wall, args) -> str:
    import torch

    cmd = " ".join(shlex.quote(a) for a in ["python", "experiments/sequence_dreaming.py", *sys.argv[1:]])
    sp = r["space"]
    L = [f"# Sequence Dreaming on the FordA ResNet{' (quick mode)' if args.quick else ''}", "",
         f"- date: {_dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPU cores shared "
         f"with other jobs, torch {torch.__version__} CPU, {torch.get_num_threads()} thread(s); wall time {wall / 60:.1f} min",
         f"- command: `{cmd}`",
         f"- model: {'assets in ' + args.assets if args.assets else 'the shipped reference model'}; selected epoch "
         f"{prov.get('selected_epoch')}, test accuracy {prov.get('test_accuracy', float('nan')):.3f}; accuracy on the "
         f"300-series sample here {real_acc:.3f}",
         f"- plausibility: Mahalanobis distance in `gap` (128 units) from the 300 FordA test series of the sample, "
         f"{sp['method']} ({sp['reason']}); real series (leave-in): median {sp['reference_median']:.2f}, "
         f"95th percentile {sp['reference_p95']:.2f}, max {sp['reference_max']:.2f}",
         f"- dreams: raw series (identity decoder, z-normalised), Adam lr 0.05, {r['settings']['steps']} steps, "
         f"{r['settings']['population']} random restarts, values are means over restarts; fixed regularisers "
         f"{r['fixed']}",
         f"- part 3: gradient-free methods search the latent space of decoder `{r.get('gf_decoder')}` (compare's default), "
         f"dream raw series (identity decoder)", "",
         "## 1. Class centre: reach the mean gap activation of a class", "",
         "| class | regularisers | distance to centre | real series' median distance | p(class) | Mahalanobis | percentile | TV | HF energy |",
         "|---|---|---|---|---|---|---|---|---|"]
    for e in r["class_centre"]:
        L.append(f"| {e['class']} | {e['regularisers']} | {e['distance_to_centre']:.3f} | {e['real_distance_median']:.3f} | "
                 f"{e['p_class']:.3f} | {e['mahalanobis']:.2f} | {e['percentile']:.0f} | {e['tv']:.3f} | {e['hf']:.3f} |")
    L += ["", "## 2. Border: maximise the logit margin (logit c - other logit)", "",
          f"Autotune ({r['autotune']['steps']} steps x {len(r['autotune']['trials'])} trials on class 1, score = "
          f"margin / best margin + (1 - percentile / 100)) picked {r['autotune']['best']}.", "",
          "| class | regularisers | margin | max margin of a real series | Mahalanobis | percentile | TV | HF energy |",
          "|---|---|---|---|---|---|---|---|"]
    for e in r["border"]:
        L.append(f"| {e['class']} | {e['regularisers']} | {e['margin']:.2f} | {e['real_margin_max']:.2f} | "
                 f"{e['mahalanobis']:.2f} | {e['percentile']:.0f} | {e['tv']:.3f} | {e['hf']:.3f} |")
    L += ["", "Autotune trials:", "", "| " + " | ".join(["l2", "tv", "smooth", "ema", "margin", "Mahalanobis",
                                                          "percentile", "score"]) + " |", "|---" * 8 + "|"]
    for t in r["autotune"]["trials"]:
        L.append(f"| {t['l2']} | {t['tv']} | {t['smooth']} | {t['ema']} | {t['activation']:.2f} | "
                 f"{t['mahalanobis']:.2f} | {t['percentile']:.0f} | {t['score']:.3f} |")
    g = r["gradient_vs_gradient_free"]
    bc = g[0]["backward_cost"] if g else float("nan")
    L += ["", "## 3. Gradient vs gradient-free at matched model evaluations", "",
          f"{r['settings']['evaluations']} model evaluations per run, seeds {r['settings']['seeds']}; a backward pass "
          f"counted as its measured cost in forward passes (first unit: {bc:.2f}). Relative activation = best / "
          f"maximum over the 4921 FordA series; mean (± sd over seeds).", "",
          "| unit | optimizer | relative activation | best activation | Mahalanobis | percentile | wall s |",
          "|---|---|---|---|---|---|---|"]
    for e in g:
        sd = f" ± {e['relative_activation_sd']:.2f}" if e.get("relative_activation_sd") else ""
        ra = f"{e['relative_activation']:.2f}{sd}" if e.get("relative_activation") is not None else "n/a"
        L.append(f"| {e['unit']} | {e['optimizer']} | {ra} | {e['best_activation']:.3g} | {e.get('mahalanobis', float('nan')):.1f} | "
                 f"{e.get('percentile', float('nan')):.0f} | {e.get('wall_s', 0):.0f} |")
    L += ["", f"Plots: `{stem}_pca.png` (gap activations, PCA of the real ones), `{stem}_series.png` (dreamed series), "
              f"`{stem}_curves.png` (best activation against model evaluations, a block2 unit).", ""]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
