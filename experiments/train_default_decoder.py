"""Train the default decoder shipped in xdream_ts/assets/default_decoder/.

Exact command (from the repository root; about 10 CPU-minutes: some 15 minutes on 2 lightly shared
cores, much longer when other jobs hold them):

    XDREAM_TS_DATA=../shared/data/ucr nice -n 10 python experiments/train_default_decoder.py \
        > experiments/_work/decoder/default_decoder.log 2>&1

One 1-D convolutional VAE (latent 64, length 256, see xdream_ts/decoders/vae.py) on the TRAIN splits of
five UCR datasets, each resampled to 256 samples and z-normalised. FordA (the Sequence Dreaming
paper's dataset, the priority use case) and FordB would drown the three small datasets if sampled by
size (3601 + 3636 series vs 50 + 100 + 67), so each epoch draws 4000 series with fixed dataset weights:
FordA 0.4, FordB 0.3, GunPoint / ECG200 / ItalyPowerDemand 0.1 each; a random crop-and-stretch
(crop 90-100 %) keeps the small ones from being memorised. After training the code space is calibrated
(a linear map fitted to the aggregate posterior) so that N(0, I) codes decode to typical series.
TEST splits are never read: experiments/decoder_quality.py uses them to measure the decoder.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "xdream_ts" / "assets" / "default_decoder"
DATASETS = {"FordA": 0.4, "FordB": 0.3, "GunPoint": 0.1, "ECG200": 0.1, "ItalyPowerDemand": 0.1}
SETTINGS = dict(latent_dim=64, length=256, epochs=40, batch_size=64, samples_per_epoch=4000, seed=0,
                val_fraction=0.1, patience=8, beta=1.0, sigma=0.2, warmup_epochs=5, free_bits=0.0, lr=2e-3,
                widths=(32, 48, 64, 64), augment=0.9, threads=1)

README = """# Default decoder

A 1-D convolutional VAE decoder (latent {latent_dim}, length {length}) shipped with xdream_ts and used by
`--decoder default` / `xdream_ts.decoders.onnx_decoder.load_default_decoder(length)`.

- `decoder.onnx`: code (batch, {latent_dim}) -> series (batch, {length}), z-normalised per series (ONNX opset 17).
- `encoder.onnx`: series (batch, {length}) -> code (batch, {latent_dim}) (posterior mean, calibrated space).
- `weights.pt`: the torch state_dict of the whole VAE (float32; `torch.load(..., weights_only=True)`).
- `decoder.json`: architecture, training data and weights, losses, seed, versions.

Trained by `experiments/train_default_decoder.py` (see its docstring for the exact command) on the TRAIN
splits of the UCR archive datasets FordA, FordB, GunPoint, ECG200 and ItalyPowerDemand (Dau et al., "The
UCR Time Series Archive", IEEE/CAA J. Autom. Sinica 2019). Measured quality: experiments/results/decoder_quality.md.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    args = ap.parse_args(argv)
    if not os.environ.get("XDREAM_TS_DATA"):
        os.environ["XDREAM_TS_DATA"] = str(ROOT.parent / "shared" / "data" / "ucr")

    from xdream_ts.train_decoder import train_decoder

    settings = {**SETTINGS, "epochs": args.epochs}
    t0 = time.time()
    info = train_decoder(list(DATASETS), args.out, dataset_weights=list(DATASETS.values()), progress=True,
                         **settings)
    out = Path(args.out)
    (out / "README.md").write_text(README.format(**settings))
    t = info["training"]
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(f"done in {(time.time() - t0) / 60:.1f} min: best epoch {t['best_epoch']}/{t['epochs_run']}, "
          f"val_mse {t['val_mse']:.4f}, val_kl {t['val_kl']:.1f}, onnx vs torch {info['onnx_max_abs_diff']:.1e}")
    print("files:", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()),
          f"(total {sum(sizes.values()) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
