"""Decoder quality: how well each decoder represents real series, and how real its random samples look.

    XDREAM_TS_DATA=../shared/data/ucr nice -n 10 python experiments/decoder_quality.py \
        [--out experiments/results/decoder_quality.md]

1. Reconstruction: MSE between held-out TEST series (z-normalised, native length) and
   decode(encode(series)), per dataset, for
   - vae: the shipped default decoder (one VAE for these five sets and more, trained at length 256 on TRAIN),
     encoded with its encoder ('ivt') and with 300 Adam steps on the code started there ('opt',
     first 200 TEST series per dataset);
   - pca-pooled: 64 components fitted on the VAE's TRAIN mixture of these five sets, at length 256 (the fair
     linear baseline for the VAE);
   - pca: 64 components (capped at the number of TRAIN series) fitted on that dataset's TRAIN split;
   - basis: 32 DCT components, least squares (capped at length-1);
   - identity: the code is the series (0 by construction: the sanity row).
2. Samples: codes drawn from N(0, I), decoded, compared with real TEST series through simple
   features (log power in 16 frequency bands, autocorrelation at lags 1..64, skewness, kurtosis, all
   computed at length 256):
   - FD: Frechet distance between Gaussian fits of the standardised features (0 = same mean and
     covariance);
   - C2ST: 5-fold cross-validated accuracy of a gradient-boosted classifier telling decoded samples
     from real series (0.5 = indistinguishable, 1.0 = always told apart).
   Both are shown beside the same numbers for two halves of the real TEST series (the noise floor).
   The default decoder and pca-pooled are compared with the TEST mixture in the training proportions;
   the per-dataset decoders with that dataset's TEST split.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATASETS = ["FordA", "FordB", "GunPoint", "ECG200", "ItalyPowerDemand"]

def _mix_weights() -> dict:
    """The shipped prior's sampling weights of these five sets (its decoder.json), renormalised to sum to 1:
    the prior also saw UEA and synthetic series, which this UCR measurement leaves out (their reconstruction
    is in compare_priors.md)."""
    import json

    cfg = json.loads((ROOT / "xdream_ts" / "assets" / "default_decoder" / "decoder.json").read_text())
    w = {d["source"]: d["sampling_weight"] for d in cfg["training"]["data"] if d["source"] in DATASETS}
    return {k: w[k] / sum(w.values()) for k in DATASETS}


MIX_WEIGHTS = _mix_weights()
FEATURE_LENGTH = 256


# ---------------------------------------------------------------------------------------- features

def features(X: np.ndarray) -> np.ndarray:
    """(n, L) series -> (n, 25) features: 16 log band powers, 7 autocorrelations, skewness, kurtosis."""
    from xdream_ts.series import resample, znormalize

    X = znormalize(resample(np.asarray(X, np.float64), FEATURE_LENGTH))
    P = np.abs(np.fft.rfft(X, axis=1)) ** 2 / FEATURE_LENGTH
    bands = P[:, 1:129].reshape(len(X), 16, 8).mean(2)
    logp = np.log10(bands + 1e-6)
    lags = [1, 2, 4, 8, 16, 32, 64]
    ac = np.stack([(X[:, :-k] * X[:, k:]).mean(1) for k in lags], 1)
    skew = (X ** 3).mean(1, keepdims=True)
    kurt = (X ** 4).mean(1, keepdims=True)
    return np.concatenate([logp, ac, skew, kurt], 1)


def frechet(Fa: np.ndarray, Fb: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of feature sets, in units of Fb's feature std."""
    mu_b, sd_b = Fb.mean(0), Fb.std(0) + 1e-8
    A, B = (Fa - mu_b) / sd_b, (Fb - mu_b) / sd_b
    ma, mb = A.mean(0), B.mean(0)
    Sa, Sb = np.cov(A, rowvar=False), np.cov(B, rowvar=False)
    # Tr sqrt(Sa Sb) = sum sqrt(eig(Sa^1/2 Sb Sa^1/2)), a symmetric PSD matrix (no complex sqrtm)
    w, U = np.linalg.eigh(Sa)
    ra = (U * np.sqrt(np.clip(w, 0, None))) @ U.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(ra @ Sb @ ra), 0, None)).sum()
    return float(((ma - mb) ** 2).sum() + np.trace(Sa) + np.trace(Sb) - 2 * tr_sqrt)


def c2st(Fa: np.ndarray, Fb: np.ndarray, seed: int = 0) -> float:
    """Classifier two-sample test: mean 5-fold CV accuracy telling Fa from Fb (balanced)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n = min(len(Fa), len(Fb))
    rng = np.random.default_rng(seed)
    A = Fa[rng.permutation(len(Fa))[:n]]
    B = Fb[rng.permutation(len(Fb))[:n]]
    X = np.concatenate([A, B])
    y = np.r_[np.zeros(n), np.ones(n)]
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, X, y, cv=cv).mean())


def split_half(F: np.ndarray, seed: int = 0):
    perm = np.random.default_rng(seed).permutation(len(F))
    h = len(F) // 2
    return F[perm[:h]], F[perm[h:2 * h]]


# -------------------------------------------------------------------------------------------- data

def load_all(data_dir: Path) -> dict:
    from xdream_ts.data import load_ucr

    return {name: load_ucr(data_dir / name) for name in DATASETS}


def test_mixture(data: dict, n_total: int, seed: int = 0) -> np.ndarray:
    """Real TEST series in the training proportions, at length 256, without repetition."""
    from xdream_ts.series import resample, znormalize

    rng = np.random.default_rng(seed)
    parts = []
    for name, w in MIX_WEIGHTS.items():
        X = data[name].X_test
        k = min(len(X), int(round(w * n_total)))
        parts.append(znormalize(resample(X[rng.permutation(len(X))[:k]].astype(np.float64), FEATURE_LENGTH)))
    return np.concatenate(parts)


def train_mixture(data: dict, n_total: int, seed: int = 0) -> np.ndarray:
    """TRAIN series in the training proportions (small sets repeated as the VAE's sampler does)."""
    from xdream_ts.series import resample, znormalize

    rng = np.random.default_rng(seed)
    parts = []
    for name, w in MIX_WEIGHTS.items():
        X = data[name].X_train
        idx = rng.choice(len(X), size=int(round(w * n_total)), replace=len(X) < w * n_total)
        parts.append(znormalize(resample(X[idx].astype(np.float64), FEATURE_LENGTH)))
    return np.concatenate(parts)


# -------------------------------------------------------------------------------------------- main

def mse(a, b) -> float:
    return float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())


def sample_quality(decoder, real_F: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    codes = np.random.default_rng(seed).standard_normal((n, decoder.latent_dim))
    F = features(decoder(codes))
    return frechet(F, real_F), c2st(F, real_F, seed)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical cores (shared), no GPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("XDREAM_TS_DATA", str(ROOT.parent / "shared/data/ucr")))
    ap.add_argument("--decoder", default=None, help="VAE decoder folder (default: the shipped one)")
    ap.add_argument("--out", default=str(HERE / "results" / "decoder_quality.md"))
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--opt-steps", type=int, default=300)
    ap.add_argument("--opt-series", type=int, default=200, help="TEST series per dataset for 'vae opt'")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from xdream_ts.decoders.basis import BasisDecoder
    from xdream_ts.decoders.encode import encode
    from xdream_ts.decoders.identity import IdentityDecoder
    from xdream_ts.decoders.onnx_decoder import OnnxDecoder, load_default_decoder
    from xdream_ts.decoders.pca import PCADecoder
    from xdream_ts.series import znormalize

    t_start = time.time()
    data = load_all(Path(args.data))
    vae = OnnxDecoder(args.decoder) if args.decoder else load_default_decoder()
    pooled = PCADecoder.fit(train_mixture(data, 4000, args.seed), 64, FEATURE_LENGTH)

    rec_rows = []
    for name in DATASETS:
        d = data[name]
        L = d.X_train.shape[1]
        T = znormalize(d.X_test.astype(np.float64))
        row = {"dataset": f"{name} (L={L}, {len(T)} test)"}
        v = OnnxDecoder(vae.folder, length=L)
        c_ivt = encode(v, T, "ivt")
        row["vae ivt"] = mse(v(c_ivt), T)
        k = min(len(T), args.opt_series)  # Adam through the decoder is slow on a shared CPU: a subset
        c_opt = encode(v, T[:k], "opt", steps=args.opt_steps, init=c_ivt[:k])
        row["vae opt"] = mse(v(c_opt), T[:k])
        row["vae ivt subset"] = mse(v(c_ivt[:k]), T[:k])
        row["opt n"] = k
        pl = PCADecoder(pooled.components_, pooled.mean_, pooled.explained_variance_, pooled.fit_length, length=L)
        row["pca-pooled"] = mse(pl(encode(pl, T)), T)
        p = PCADecoder.fit(d.X_train, 64)
        row["pca"] = mse(p(encode(p, T)), T)
        row["pca k"] = p.latent_dim
        b = BasisDecoder(L, min(32, L - 1))
        row["basis"] = mse(b(encode(b, T, "opt")), T)
        row["basis k"] = b.n_basis
        i = IdentityDecoder(L)
        row["identity"] = mse(i(encode(i, T, "opt")), T)
        rec_rows.append(row)
        print(row, flush=True)

    # samples: the pooled decoders against the TEST mixture
    mix = features(test_mixture(data, args.n_samples * 2, args.seed))
    h1, h2 = split_half(mix, args.seed)
    n = len(h1)
    samp_mix = [("real TEST mixture, half vs half (floor)", frechet(h1, h2), c2st(h1, h2, args.seed))]
    for label, dec in [("vae (default decoder)", vae), ("pca-pooled (64)", pooled),
                       ("basis (32 DCT)", BasisDecoder(FEATURE_LENGTH, 32)),
                       ("identity (white noise)", IdentityDecoder(FEATURE_LENGTH))]:
        samp_mix.append((label, *sample_quality(dec, h2, n, args.seed)))
        print(samp_mix[-1], flush=True)

    # which dataset do the VAE's random samples resemble? (a 5-way classifier trained on real TRAIN)
    from sklearn.ensemble import HistGradientBoostingClassifier

    Ftr = np.concatenate([features(data[k].X_train) for k in DATASETS])
    ytr = np.concatenate([np.full(len(data[k].X_train), j) for j, k in enumerate(DATASETS)])
    wts = np.concatenate([np.full(len(data[k].X_train), MIX_WEIGHTS[k] / len(data[k].X_train)) for k in DATASETS])
    clf = HistGradientBoostingClassifier(max_iter=200, random_state=args.seed).fit(Ftr, ytr, sample_weight=wts)
    Fte = np.concatenate([features(data[k].X_test) for k in DATASETS])
    yte = np.concatenate([np.full(len(data[k].X_test), j) for j, k in enumerate(DATASETS)])
    clf_acc = float((clf.predict(Fte) == yte).mean())
    z = np.random.default_rng(args.seed + 7).standard_normal((args.n_samples, vae.latent_dim))
    assign = np.bincount(clf.predict(features(vae(z))), minlength=len(DATASETS)) / args.n_samples
    assign_real = np.bincount(clf.predict(mix), minlength=len(DATASETS)) / len(mix)

    # samples: per-dataset decoders against that dataset's TEST split
    samp_ds = []
    for name in DATASETS:
        d = data[name]
        L = d.X_train.shape[1]
        F = features(d.X_test)
        a, b2 = split_half(F, args.seed)
        m = len(b2)
        r = {"dataset": name, "floor": (frechet(a, b2), c2st(a, b2, args.seed))}
        r["pca"] = sample_quality(PCADecoder.fit(d.X_train, 64), b2, m, args.seed)
        r["basis"] = sample_quality(BasisDecoder(L, min(32, L - 1)), b2, m, args.seed)
        r["identity"] = sample_quality(IdentityDecoder(L), b2, m, args.seed)
        samp_ds.append(r)
        print(r, flush=True)

    write_report(Path(args.out), args, vae, rec_rows, samp_mix, n, (assign, assign_real), clf_acc, samp_ds,
                 time.time() - t_start)
    return 0


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def write_report(out: Path, args, vae, rec_rows, samp_mix, n_half, assign, clf_acc, samp_ds, seconds) -> None:
    desc = vae.describe()
    try:
        desc["path"] = str(Path(desc["path"]).resolve().relative_to(ROOT))
    except ValueError:
        pass
    cfg = vae.config
    tr = cfg.get("training", {})
    weights = ", ".join(f"{Path(x['source']).name} {x['sampling_weight']}" for x in tr.get("data", []))
    lines = [
        "# Decoder quality",
        "",
        f"Generated by `experiments/decoder_quality.py` on {datetime.date.today().isoformat()} "
        f"(git {_git_rev()}, {seconds / 60:.1f} min).",
        "",
        f"- Machine: {machine()}.",
        f"- Command: `XDREAM_TS_DATA=../shared/data/ucr nice -n 10 {Path(sys.executable).name} "
        f"experiments/decoder_quality.py` (seed {args.seed}, {args.n_samples} samples, "
        f"{args.opt_steps} Adam steps for 'vae opt' on {args.opt_series} series per dataset).",
        f"- VAE: `{desc['path']}` (latent {desc['latent_dim']}, trained at length {desc['trained_length']} "
        f"on the TRAIN splits of {', '.join(Path(s).name for s in desc['data'])}; "
        f"sampling weights {weights}; "
        f"best epoch {tr.get('best_epoch')} of {tr.get('epochs_run')}, {tr.get('seconds', 0) / 60:.1f} min; "
        f"validation MSE {tr.get('val_mse', float('nan')):.4f}).",
        "",
        "## Reconstruction of held-out TEST series",
        "",
        "MSE between each z-normalised TEST series at its native length and decode(encode(series)); "
        "lower is better. The VAE works at length 256 (input resampled to 256, output resampled back). "
        "`vae ivt` uses the VAE's encoder; `vae opt` refines those codes with Adam through the decoder; "
        "`pca-pooled` is a 64-component PCA fitted on the same TRAIN mixture as the VAE (the fair linear "
        "baseline); `pca` is fitted on the dataset's own TRAIN split (k components, capped by the number "
        "of TRAIN series); `basis` is least squares on k DCT components; `identity` is exact by construction.",
        "",
        f"`vae opt` is measured on the first {args.opt_series} TEST series of each dataset (Adam through "
        "the decoder is slow on a shared CPU), with `vae ivt` on the same series in brackets.",
        "",
        "| dataset | vae ivt | vae opt [ivt, same series] | pca-pooled | pca (k) | basis (k) | identity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rec_rows:
        lines.append(f"| {r['dataset']} | {r['vae ivt']:.4f} | {r['vae opt']:.4f} [{r['vae ivt subset']:.4f}] | "
                     f"{r['pca-pooled']:.4f} | "
                     f"{r['pca']:.4f} ({r['pca k']}) | {r['basis']:.4f} ({r['basis k']}) | {r['identity']:.4f} |")
    lines += [
        "",
        "## Random codes N(0, I): do the decoded samples look like real series?",
        "",
        "Features of each series at length 256: log power in 16 frequency bands, autocorrelation at lags "
        "1, 2, 4, ..., 64, skewness, kurtosis. FD: Frechet distance between Gaussian fits of the features "
        "(standardised by the real series' feature std; 0 = same mean and covariance). C2ST: 5-fold "
        "cross-validated accuracy of a gradient-boosted tree classifier separating samples from real "
        "series (0.5 = indistinguishable, 1.0 = always told apart). Lower is better for both; the first "
        "row of each table is two halves of the real TEST series (the noise floor).",
        "",
        f"### Pooled decoders vs the TEST mixture in the training proportions ({n_half} series each)",
        "",
        "| samples | FD | C2ST accuracy |",
        "|---|---|---|",
    ]
    for label, fd, acc in samp_mix:
        lines.append(f"| {label} | {fd:.2f} | {acc:.3f} |")
    lines += [
        "",
        f"Which dataset do the default decoder's random samples resemble? A 5-way classifier on the same "
        f"features, trained on the real TRAIN splits with the training proportions (accuracy on real TEST "
        f"series: {clf_acc:.3f}), assigns {args.n_samples} decoded N(0, I) samples to:",
        "",
        "| series | " + " | ".join(DATASETS) + " |",
        "|---|" + "---|" * len(DATASETS),
        "| decoded N(0, I) samples | " + " | ".join(f"{a:.1%}" for a in assign[0]) + " |",
        "| real TEST mixture (reference) | " + " | ".join(f"{a:.1%}" for a in assign[1]) + " |",
        "| training weight | " + " | ".join(f"{MIX_WEIGHTS[k]:.0%}" for k in DATASETS) + " |",
        "",
        "The reference row shows what the classifier makes of real series in the training proportions. "
        "Read the two rows side by side: a decoder whose random samples cover the data in the training "
        "proportions matches the reference row.",
        "",
        "### Per-dataset decoders vs that dataset's TEST split",
        "",
        "FD / C2ST accuracy (the default VAE is pooled, so it appears in the mixture table above only).",
        "",
        "| dataset | real half vs half (floor) | pca (64) | basis (32 DCT) | identity |",
        "|---|---|---|---|---|",
    ]
    for r in samp_ds:
        cells = [f"{r[k][0]:.2f} / {r[k][1]:.3f}" for k in ("floor", "pca", "basis", "identity")]
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + " |")
    lines += [""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
