"""Train the default decoder shipped in xdream_ts/assets/default_decoder/ (the prior of ``--decoder auto``
without data, any channel count: xdream_ts.decoders.channelwise).

Exact command (from the repository root; 5.2 minutes on one shared core of the 2-core machine):

    nice -n 10 .venv/bin/python experiments/train_default_decoder.py \
        > experiments/_work/decoder/default_decoder.log 2>&1

One 1-D convolutional VAE (latent 64, length 256, univariate; xdream_ts/decoders/vae.py) on a weighted
mix of univariate series, each resampled to 256 samples and z-normalised:

- the TRAIN splits of the five UCR sets in /work/shared/data/ucr (FordA, FordB, GunPoint, ECG200,
  ItalyPowerDemand);
- the TRAIN splits of the three UEA sets in /work/shared/data/uea, each channel one univariate series:
  JapaneseVowels (12 channels, length 7-29), PickupGestureWiimoteZ (variable length 29-361, the NaN
  padding trimmed), ACSF1 (length 1460: the whole series plus random crops of 256-1460 samples, so
  the decoder sees both the long view and closer ones);
- synthetic series (xdream_ts/synthetic.py: KernelSynth-style Gaussian processes, AR, trends, steps,
  bursts, periodic; seed 0).

FordA (the Sequence Dreaming paper's dataset, the shipped reference model's) keeps the largest weight;
the mixture weights are in WEIGHTS. Each epoch draws SAMPLES series by those weights with a random
crop-and-stretch (90-100 %). Then the code space is calibrated (N(0, I) codes decode to typical
series). TEST splits are never read: experiments/decoder_quality.py uses them to measure the decoder.
No data of any other package is used.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "xdream_ts" / "assets" / "default_decoder"
DATA = ROOT.parent / "shared" / "data"
UCR = ["FordA", "FordB", "GunPoint", "ECG200", "ItalyPowerDemand"]
UEA = ["JapaneseVowels", "PickupGestureWiimoteZ", "ACSF1"]
WEIGHTS = {"FordA": 0.25, "FordB": 0.15, "GunPoint": 0.05, "ECG200": 0.05, "ItalyPowerDemand": 0.05,
           "JapaneseVowels": 0.08, "PickupGestureWiimoteZ": 0.05, "ACSF1": 0.07, "synthetic": 0.25}
N_SYNTHETIC = 6000
ACSF1_CROPS = 8  # random crops per ACSF1 series, beside the whole series
LENGTH = 256
SETTINGS = dict(latent_dim=64, length=LENGTH, epochs=30, batch_size=64, samples_per_epoch=4000, seed=0,
                val_fraction=0.1, patience=8, beta=1.0, sigma=0.2, warmup_epochs=5, free_bits=0.0, lr=2e-3,
                widths=(32, 48, 64, 64), augment=0.9, threads=1)

README = """# Default decoder (the shipped prior)

A 1-D convolutional VAE decoder (latent {latent_dim}, length {length}, one channel) shipped with xdream_ts:
`--decoder default`, and `--decoder auto` without `--data` for any number of channels and any length
(`xdream_ts.decoders.channelwise.ChannelwiseDecoder`: each channel its own {latent_dim}-d code, decoded by
this one decoder; the output is z-normalised per channel and resampled linearly to the model's length).

- `decoder.onnx`: code (batch, {latent_dim}) -> series (batch, {length}), z-normalised per series (ONNX opset 17).
- `encoder.onnx`: series (batch, {length}) -> code (batch, {latent_dim}) (posterior mean, calibrated space).
- `weights.pt`: the torch state_dict of the whole VAE (float32; `torch.load(..., weights_only=True)`).
- `decoder.json`: architecture, training data and weights, losses, seed, versions.

Trained by `experiments/train_default_decoder.py` (see its docstring for the exact command) only on the
TRAIN splits of the UCR sets FordA, FordB, GunPoint, ECG200, ItalyPowerDemand (Dau et al., "The UCR Time
Series Archive", IEEE/CAA J. Autom. Sinica 2019) and of the UEA sets JapaneseVowels, PickupGestureWiimoteZ
and ACSF1 (Bagnall et al., arXiv:1811.00075; each channel one series), plus synthetic series from
`xdream_ts/synthetic.py` (KernelSynth-style Gaussian processes after Ansari et al., "Chronos", TMLR
2024, and AR / trend / step / burst / periodic families). Sampling weights: {weights}.
Measured quality: experiments/results/decoder_quality.md.
"""


def _series_rows(P: np.ndarray) -> list[np.ndarray]:
    """(n, c, Lmax) NaN-padded -> every channel of every case as its own series (padding trimmed)."""
    rows = []
    for case in P:
        for ch in case:
            v = ch[np.isfinite(ch)]
            if len(v) >= 2 and v.std() > 1e-8:  # a flat channel has no shape to learn
                rows.append(v)
    return rows


def load_sources(seed: int = 0) -> tuple[list[np.ndarray], list[str], dict]:
    """The training arrays (n_i, LENGTH), their names, and notes for decoder.json."""
    from xdream_ts.data import load_ucr, read_ts_file
    from xdream_ts.series import resample
    from xdream_ts.synthetic import generate

    rng = np.random.default_rng(seed)
    arrays, names, notes = [], [], {}
    for name in UCR:
        X, _ = load_ucr(DATA / "ucr" / name, split="train")
        arrays.append(np.asarray(X, np.float64))
        names.append(name)
    for name in UEA:
        P, _, _ = read_ts_file(DATA / "uea" / name / f"{name}_TRAIN.ts.gz")
        rows = _series_rows(P)
        out = [resample(r, LENGTH) for r in rows]
        if name == "ACSF1":
            for r in rows:
                for _ in range(ACSF1_CROPS):
                    w = int(rng.integers(LENGTH, len(r) + 1))
                    s = int(rng.integers(0, len(r) - w + 1))
                    out.append(resample(r[s:s + w], LENGTH))
            notes[name] = f"{len(rows)} series + {ACSF1_CROPS} random crops of 256-{len(rows[0])} samples each"
        else:
            lens = [len(r) for r in rows]
            notes[name] = (f"{P.shape[0]} cases x {P.shape[1]} channel(s) -> {len(rows)} series, "
                           f"native length {min(lens)}-{max(lens)}")
        arrays.append(np.stack(out))
        names.append(name)
    arrays.append(generate(N_SYNTHETIC, LENGTH, seed=seed))
    names.append("synthetic")
    notes["synthetic"] = f"xdream_ts.synthetic.generate({N_SYNTHETIC}, {LENGTH}, seed={seed})"
    return arrays, names, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    ap.add_argument("--samples-per-epoch", type=int, default=SETTINGS["samples_per_epoch"])
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from xdream_ts.train_decoder import train_decoder

    settings = {**SETTINGS, "epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch}
    t0 = time.time()
    arrays, names, notes = load_sources(settings["seed"])
    print("sources:", ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays)), flush=True)
    info = train_decoder(arrays, args.out, dataset_weights=[WEIGHTS[n] for n in names], progress=True,
                         **settings)
    out = Path(args.out)
    # train_decoder names array sources by shape: put the data sets' names (and how they were made) back
    cfg = json.loads((out / "decoder.json").read_text())
    for d, n in zip(cfg["training"]["data"], names):
        d["source"] = n
        d["folder"] = ("/work/shared/data/ucr/" if n in UCR else "/work/shared/data/uea/" if n in UEA else "") + (
            n if n != "synthetic" else "")
        if n in notes:
            d["note"] = notes[n]
        if not d["folder"]:
            del d["folder"]
    cfg["training"]["splits"] = "TRAIN only (UCR and UEA); TEST splits are held out for decoder_quality.py"
    (out / "decoder.json").write_text(json.dumps(cfg, indent=1) + "\n")
    (out / "README.md").write_text(README.format(**settings, weights=", ".join(f"{k} {v}" for k, v in WEIGHTS.items())))
    t = info["training"]
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(f"done in {(time.time() - t0) / 60:.1f} min: best epoch {t['best_epoch']}/{t['epochs_run']}, "
          f"val_mse {t['val_mse']:.4f}, val_kl {t['val_kl']:.1f}, onnx vs torch {info['onnx_max_abs_diff']:.1e}")
    print("files:", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()),
          f"(total {sum(sizes.values()) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
