"""Train a decoder on the model's own series and export it for the search loop.

    xdream-ts train-decoder --data PATH --out my_decoder [--length L] [--latent-dim 16] [--epochs 40] [--seed 0]
    xdream-ts train-decoder --kind vae --data FordA --out my_vae [--latent-dim 64] [--epochs 60] [--length 256]

``--kind hybrid`` (the default, ``train_hybrid_decoder``): the ``auto`` PCA fitted on the data (whitened,
99 % variance, cap 64, plus 64 directions outside its span) plus a learned nonlinear branch, a small conv
VAE decoder trained on what the PCA leaves of time-warped real series (``xdream_ts.decoders.hybrid`` says
why). Its search space contains the PCA's: a code whose learned part is 0 decodes to what the PCA gives.
Any channels, any length; the stimulus space is the data's (``xdream_ts.space``): z-normalised series
when the data are, else the data's units (per-channel loc/scale restored, clipped to their range with
the margin), inside the exported graph. ``--data`` is anything ``xdream_ts.data.load_dataset`` reads
(TRAIN split of a folder or name). Rerunning it on a folder trained with the same data and parameters
reuses that folder.

``--kind vae`` (``train_decoder``, how the shipped prior is trained): a conv VAE on z-normalised series;
``--data`` a UCR dataset folder, a .tsv(.gz) file or a name found through ``$XDREAM_TS_DATA``, several
comma separated to train one decoder on all of them, resampled to a common length (TRAIN splits only).
In Python, ``data`` may also be an array (n, L) or (n, C, L) of series.

The output folder holds everything needed to use the decoder without this package's training code:

    decoder.onnx   code (batch, d) -> series (batch, [C,] L) in the stimulus space (opset 17)
    encoder.onnx   series (batch, [C,] L) -> code (batch, d)  (the posterior mean: XDream's "ivt")
    weights.pt     torch state_dict (float32), load with torch.load(..., weights_only=True)
    pca.npz        hybrid: its linear branch, a ``PCADecoder`` file (``--decoder pca:DIR/pca.npz``)
    decoder.json   architecture, stimulus space, training data, losses, seed, versions

Load it with ``xdream_ts.decoders.onnx_decoder.OnnxDecoder(out_dir)`` (or ``--decoder DIR``).
Training is deterministic for a given seed, data and thread count (CPU).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from .errors import UserError, require_torch
from .series import resample, znormalize

FORMAT = "xdream_ts.vae/1"
STEP = 16  # the length must be a multiple of 2**n_up (4 upsampling stages by default)


# ----------------------------------------------------------------------------------------------- data

def _trim_nan(row: np.ndarray) -> np.ndarray:
    """UCR variable-length series are NaN-padded at the end: keep the valid prefix."""
    finite = np.isfinite(row)
    if finite.all():
        return row
    n = int(np.argmin(finite))  # first non-finite value
    if n < 2 or np.isfinite(row[n:]).any():
        raise UserError("training data holds NaN/inf values inside a series; remove or interpolate them "
                        "(only NaN padding at the end of a series is accepted)")
    return row[:n]


def _as_array(spec, label: str) -> tuple[np.ndarray, str]:
    """One data source -> float array (n, L) or (n, C, L) of TRAIN series (NaN padding still possible)."""
    if isinstance(spec, (str, os.PathLike)):
        from .data import load_ucr

        out = load_ucr(spec, split="train") if not str(spec).endswith((".tsv", ".tsv.gz")) else load_ucr(spec)
        X = np.asarray(out[0], dtype=np.float64)
        return X, str(spec)
    X = np.asarray(spec, dtype=np.float64)
    if X.ndim not in (2, 3):
        raise UserError(f"training data for {label} has shape {X.shape}; pass an array (n, length) or "
                        "(n, channels, length), a UCR dataset name or a folder")
    return X, f"array{list(X.shape)}"


def _prepare(X: np.ndarray, length: int) -> np.ndarray:
    """Resample each series to ``length`` and z-normalise it (per channel): float32 (n, [C,] length)."""
    if X.ndim == 2 and not np.isfinite(X).all():
        X = np.stack([resample(_trim_nan(r), length) for r in X])
    elif not np.isfinite(X).all():
        raise UserError("training data holds NaN/inf values; remove or interpolate them first")
    return znormalize(resample(X, length)).astype(np.float32)


def load_training_data(data, length: int | None = None):
    """Normalise the ``data`` argument of :func:`train_decoder`.

    Returns ``(arrays, length, channels, descriptions)``: one float32 array per source, resampled to
    ``length`` and z-normalised. ``length=None`` picks the longest native length rounded up to a
    multiple of 16.
    """
    multi = isinstance(data, (list, tuple)) and len(data) > 0 and all(
        isinstance(s, (str, os.PathLike)) or (isinstance(s, np.ndarray) and s.ndim >= 2) for s in data)
    sources = list(data) if multi else [data]
    if not sources:
        raise UserError("no training data given; pass a UCR dataset name/folder or an array of series")
    raw, desc = [], []
    for i, s in enumerate(sources):
        X, d = _as_array(s, f"source {i}")
        if len(X) < 2:
            raise UserError(f"training data {d} holds {len(X)} series; a decoder needs at least a few dozen")
        raw.append(X)
        desc.append({"source": d, "n": int(len(X)), "shape": list(X.shape[1:])})
    ndims = {X.ndim for X in raw}
    if len(ndims) > 1:
        raise UserError("training sources mix univariate (n, L) and multivariate (n, C, L) arrays; use one kind")
    channels = None
    if raw[0].ndim == 3:
        cs = {X.shape[1] for X in raw}
        if len(cs) > 1:
            raise UserError(f"training sources have different channel counts {sorted(cs)}; use one")
        channels = int(cs.pop())
    if length is None:
        native = max(X.shape[-1] for X in raw)
        length = max(STEP, int(math.ceil(native / STEP) * STEP))
    length = int(length)
    if length < STEP or length % STEP:
        raise UserError(f"--length {length} must be a positive multiple of {STEP}; "
                        f"try {max(STEP, int(round(length / STEP)) * STEP)}")
    return [_prepare(X, length) for X in raw], length, channels, desc


def _augment(batch: np.ndarray, rng: np.random.Generator, crop_min: float, normalize: bool = True) -> np.ndarray:
    """Random crop of a fraction [crop_min, 1] of each series, stretched back to full length, z-normalised
    (``normalize``; False keeps the units, for series in a ``data`` stimulus space).

    A mild time-shift and time-warp: the small datasets are seen many times per epoch, this keeps the
    decoder from memorising their exact phase.
    """
    if crop_min >= 1.0:
        return batch
    n, L = batch.shape[0], batch.shape[-1]
    frac = rng.uniform(crop_min, 1.0, size=n)
    start = rng.uniform(0.0, 1.0, size=n) * (1.0 - frac) * (L - 1)
    t = start[:, None] + np.linspace(0.0, 1.0, L)[None, :] * (frac[:, None] * (L - 1))
    i0 = np.clip(np.floor(t).astype(np.int64), 0, L - 2)
    w = (t - i0).astype(np.float32)
    flat = batch.reshape(n, -1, L)
    idx0 = np.broadcast_to(i0[:, None, :], flat.shape)
    out = (np.take_along_axis(flat, idx0, -1) * (1 - w[:, None]) + np.take_along_axis(flat, idx0 + 1, -1) * w[:, None])
    out = out.reshape(batch.shape)
    return (znormalize(out) if normalize else out).astype(np.float32)


# ------------------------------------------------------------------------------------------- training

def train_decoder(data, out_dir, latent_dim: int = 64, length: int | None = None, epochs: int = 60,
                  batch_size: int = 64, seed: int = 0, val_fraction: float = 0.1, patience: int = 10,
                  progress: bool = True, *, beta: float = 1.0, sigma: float = 0.2, warmup_epochs: int = 10,
                  free_bits: float = 0.0, lr: float = 2e-3, widths=(32, 48, 64, 64),
                  dataset_weights=None, samples_per_epoch: int | None = None, augment: float = 0.9,
                  threads: int | None = 1, calibrate: bool = True, verify: bool = True) -> dict:
    """Train a VAE on ``data`` and save ``decoder.onnx``, ``encoder.onnx``, ``weights.pt``, ``decoder.json``.

    data: array (n, L) / (n, C, L), a UCR name / folder / file, or a list of these (one decoder on all,
        each resampled to ``length``). Only TRAIN splits of UCR data are read.
    length: training length (multiple of 16); None = longest native length rounded up to 16.
    epochs, batch_size, lr: Adam with cosine decay over ``epochs``.
    val_fraction, patience: per-source random validation split; early stopping when the validation
        loss (at full beta, with the posterior mean) has not improved for ``patience`` epochs after the
        KL warm-up; the best weights are kept. val_fraction=0 validates on (part of) the training set.
    beta, sigma, warmup_epochs, free_bits: loss = SSE / (2 sigma^2) + beta * KL, beta ramped from 0
        over ``warmup_epochs``; ``free_bits`` > 0 floors the batch-mean KL of each latent dimension.
    dataset_weights: relative sampling weight of each source (default: proportional to its size);
        ``samples_per_epoch`` training series are drawn per epoch (default: all training series).
    augment: minimum crop fraction of the random crop-and-stretch augmentation (1.0 = off).
    calibrate: after training, reparametrise the code space so that N(0, I) codes follow a Gaussian
        fit of the aggregate posterior (``xdream_ts.decoders.vae.calibrate_prior``).
    threads: torch CPU threads during training (restored afterwards); None = leave torch's setting.
        Default 1: the model is small, more threads rarely help, and a thread pool spinning against
        other processes on a shared machine is many times slower than one thread.

    Returns the dict written to decoder.json (plus ``out_dir``).
    """
    torch = require_torch("train-decoder")

    from .decoders.vae import VAEConfig, build_vae, calibrate_prior, vae_loss

    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction={val_fraction} must be in [0, 1)")
    if epochs < 1 or batch_size < 1:
        raise UserError(f"epochs={epochs} and batch_size={batch_size} must be >= 1")
    arrays, length, channels, desc = load_training_data(data, length)
    cfg = VAEConfig(latent_dim=int(latent_dim), length=length, channels=channels,
                    widths=[int(w) for w in widths]).validate()
    if length % 2 ** cfg.n_up:
        raise UserError(f"length {length} must be a multiple of {2 ** cfg.n_up} for {cfg.n_up} stages")

    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for X, d in zip(arrays, desc):
        perm = rng.permutation(len(X))
        n_val = int(round(val_fraction * len(X))) if val_fraction > 0 else 0
        n_val = min(n_val, len(X) - 1)
        val_parts.append(X[perm[:n_val]])
        train_parts.append(X[perm[n_val:]])
        d.update(n_train=int(len(X) - n_val), n_val=int(n_val))
    sizes = np.array([len(t) for t in train_parts], dtype=np.float64)
    if dataset_weights is None:
        weights = sizes / sizes.sum()
    else:
        weights = np.asarray(dataset_weights, dtype=np.float64)
        if weights.shape != sizes.shape or (weights < 0).any() or weights.sum() <= 0:
            raise UserError(f"dataset_weights must be {len(sizes)} non-negative numbers, one per data source")
        weights = weights / weights.sum()
    for d, w in zip(desc, weights):
        d["sampling_weight"] = round(float(w), 6)
    X_train = np.concatenate(train_parts)
    X_val = np.concatenate(val_parts) if sum(len(v) for v in val_parts) else X_train[: min(len(X_train), 256)]
    per_sample_p = np.concatenate([np.full(int(s), w / s) for s, w in zip(sizes, weights)])
    uniform = dataset_weights is None
    n_epoch = int(samples_per_epoch or len(X_train))

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(seed)
        model = build_vae(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = max(1, math.ceil(n_epoch / batch_size))
        total_steps = epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        Xv = torch.from_numpy(X_val)
        best = (math.inf, None, -1)
        history = []
        from .progress import progress_bar
        bar = progress_bar(total=epochs, unit="epoch", desc="train-decoder", enabled=progress)
        t0 = time.time()
        step = 0
        for epoch in range(epochs):
            model.train()
            if uniform and n_epoch == len(X_train):
                idx = rng.permutation(len(X_train))
            else:
                idx = rng.choice(len(X_train), size=n_epoch, replace=True, p=per_sample_p)
            sums = np.zeros(3)
            for b in range(steps_per_epoch):
                batch = X_train[idx[b * batch_size:(b + 1) * batch_size]]
                if len(batch) < 2:  # BatchNorm needs 2 series
                    continue
                batch = _augment(batch, rng, augment)
                warm = min(1.0, (step + 1) / max(1, warmup_epochs * steps_per_epoch))
                loss, recon, kl, sse = vae_loss(model, torch.from_numpy(batch), beta * warm, sigma, free_bits)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                opt.step()
                sched.step()
                step += 1
                sums += [loss.item() * len(batch), sse.item() * len(batch), kl.item() * len(batch)]
            val = _evaluate(model, Xv, beta, sigma, batch_size=512)
            n_seen = min(n_epoch, steps_per_epoch * batch_size)
            rec = {"epoch": epoch + 1, "train_loss": sums[0] / n_seen,
                   "train_mse": sums[1] / n_seen / (cfg.length * (channels or 1)), "train_kl": sums[2] / n_seen, **val}
            history.append(rec)
            bar.update(1)
            bar.set_postfix_str(f"val_mse={val['val_mse']:.4f}, kl={val['val_kl']:.1f}")
            # During the KL warm-up the latest weights are always kept: the model is still moving
            # towards the full-beta objective; afterwards only improvements of the validation loss.
            if val["val_loss"] < best[0] or epoch + 1 <= warmup_epochs:
                best = (val["val_loss"], {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch + 1)
            elif epoch + 1 - best[2] >= patience:
                break
        bar.close()
        train_seconds = time.time() - t0
        model.load_state_dict(best[1])
        model.eval()
        final = _evaluate(model, Xv, beta, sigma, batch_size=512)
        calibration = calibrate_prior(model, X_train, per_sample_p) if calibrate else None

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float32) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        torch.save(state, out / "weights.pt")
        _export(model, cfg, out)
        import onnx

        info = {
            "format": FORMAT,
            "name": "vae",
            "latent_dim": cfg.latent_dim,
            "length": cfg.length,
            "channels": cfg.channels,
            "architecture": {"type": "conv1d-vae", **cfg.to_dict(), "n_up": cfg.n_up,
                             "n_parameters": int(sum(p.numel() for p in model.parameters())),
                             "decoder_parameters": int(sum(p.numel() for p in model.decoder.parameters())),
                             "output": "z-normalised per series and channel (inside the ONNX graph)"},
            "training": {"data": desc, "epochs_max": epochs, "epochs_run": len(history), "best_epoch": best[2],
                         "batch_size": batch_size, "lr": lr, "beta": beta, "sigma": sigma,
                         "warmup_epochs": warmup_epochs, "free_bits": free_bits, "augment_crop_min": augment,
                         "samples_per_epoch": n_epoch, "val_fraction": val_fraction, "patience": patience,
                         "threads": threads, "seconds": round(train_seconds, 1),
                         "val_loss": final["val_loss"], "val_mse": final["val_mse"], "val_kl": final["val_kl"],
                         "prior_calibration": calibration,
                         "history": [{k: round(float(v), 5) for k, v in h.items()} for h in history]},
            "seed": seed,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
                         "python": platform.python_version(), "xdream_ts": _version()},
            "files": {"decoder": "decoder.onnx", "encoder": "encoder.onnx", "weights": "weights.pt"},
        }
        if verify:
            info["onnx_max_abs_diff"] = _verify(model, cfg, out, seed)
        (out / "decoder.json").write_text(json.dumps(info, indent=1) + "\n")
        return {**info, "out_dir": str(out)}
    finally:
        torch.set_num_threads(old_threads)


def _evaluate(model, Xv, beta, sigma, batch_size=512) -> dict:
    """Validation loss with the posterior mean (deterministic) at full beta."""
    import torch

    was_training = model.training
    model.eval()
    tot = {"sse": 0.0, "kl": 0.0}
    with torch.no_grad():
        for i in range(0, len(Xv), batch_size):
            x = Xv[i:i + batch_size]
            mu, logvar = model.encoder(x)
            r = model.decoder.raw(mu)
            tot["sse"] += float(((r - x) ** 2).flatten(1).sum(1).sum())
            tot["kl"] += float((0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)).sum())
    model.train(was_training)
    n = len(Xv)
    per = Xv[0].numel()
    sse, kl = tot["sse"] / n, tot["kl"] / n
    return {"val_loss": sse / (2 * sigma ** 2) + beta * kl, "val_mse": sse / per, "val_kl": kl}


def _export_pair(decoder, encoder, method: str, cfg, out: Path, encoder_output: str) -> None:
    """decoder.onnx (code -> series, ``decoder``'s forward) and encoder.onnx (series -> ``encoder.method``),
    batch dimensions dynamic, opset 17, both in eval mode."""
    import warnings

    import torch

    class Calling(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return getattr(self.m, method)(x)

    shape = (2, cfg.length) if cfg.channels is None else (2, cfg.channels, cfg.length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(decoder.eval(), (torch.zeros(2, cfg.latent_dim),), str(out / "decoder.onnx"),
                          input_names=["code"], output_names=["series"],
                          dynamic_axes={"code": {0: "batch"}, "series": {0: "batch"}}, opset_version=17, dynamo=False)
        # eval() on the wrapper too: export restores the wrapper's mode, and so its submodule's
        torch.onnx.export(Calling(encoder).eval(), (torch.zeros(shape),), str(out / "encoder.onnx"),
                          input_names=["series"], output_names=[encoder_output],
                          dynamic_axes={"series": {0: "batch"}, encoder_output: {0: "batch"}},
                          opset_version=17, dynamo=False)


def _export(model, cfg, out: Path) -> None:
    model.eval()
    _export_pair(model.decoder, model.encoder, "code", cfg, out, "mu")


def _verify(model, cfg, out: Path, seed: int) -> float:
    """Max |ONNX - torch| decoder output on 16 random codes (recorded in decoder.json)."""
    import torch

    from .decoders.onnx_decoder import OnnxDecoder

    codes = np.random.default_rng(seed + 1).standard_normal((16, cfg.latent_dim)).astype(np.float32)
    with torch.no_grad():
        ref = model.decoder(torch.from_numpy(codes)).numpy()
    got = OnnxDecoder(out, _config={"latent_dim": cfg.latent_dim, "length": cfg.length,
                                    "channels": cfg.channels})(codes)
    return float(np.abs(ref - got).max())


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("xdream-ts")
    except Exception:  # noqa: BLE001 - not installed: a source checkout
        return "unknown"


# ----------------------------------------------------------------------------------- hybrid decoder
HYBRID_FORMAT_KEY = "xdream_ts.train-hybrid/3"  # bump when the training changes what a folder holds
HYBRID_LATENT = 16
HYBRID_WIDTHS = (32, 32, 32)


def load_hybrid_data(data, length: int | None = None):
    """The ``data`` argument of :func:`train_hybrid_decoder` -> a Dataset: a path any format
    ``xdream_ts.data.load_dataset`` reads (a folder's or name's TRAIN split only), an array (n, [C,] L)
    or a Dataset; resampled to ``length`` when given."""
    from .data import Dataset, load_dataset

    if isinstance(data, (str, os.PathLike)):
        return load_dataset(data, length=length, split="train")  # a file ignores the split
    if isinstance(data, Dataset):
        return data.resampled(int(length)) if length else data
    X = np.asarray(data, dtype=np.float64)
    if X.ndim not in (2, 3):
        raise UserError(f"training data has shape {X.shape}; pass an array (n, length) or (n, channels, length), "
                        "or a data file or folder")
    return Dataset.from_arrays(X, length=length)


def train_hybrid_decoder(data, out_dir, latent_dim: int = HYBRID_LATENT, length: int | None = None,
                         epochs: int = 40, batch_size: int = 64, seed: int = 0, margin: float | None = None,
                         pool: int = 2048, augment: float = 0.8, learned_scale: float = 1.0, beta: float = 1.0,
                         sigma: float = 0.3,
                         lr: float = 2e-3, widths=HYBRID_WIDTHS, val_fraction: float = 0.1, threads: int | None = 1,
                         progress: bool = True, reuse: bool = True, verify: bool = True) -> dict:
    """Train the hybrid decoder (``xdream_ts.decoders.hybrid``: the auto PCA + a learned residual branch)
    on ``data`` in its stimulus space and save decoder.onnx, encoder.onnx, weights.pt, pca.npz and
    decoder.json into ``out_dir``.

    data: a path (any format ``load_dataset`` reads; TRAIN split of a folder), an array or a Dataset.
    length: the model's length (the data are resampled to it); default the data's. Any length, any channels.
    latent_dim: size of the learned part of the code (the PCA part's size is the data's: components + 64).
    learned_scale: the learned branch's output is ``learned_scale`` times the residuals' RMS it was trained at.
    margin: the data space's range margin (default ``xdream_ts.space.MARGIN``).
    pool, augment: the branch trains on ``pool`` random crop-and-stretch copies (crop fraction in
        [augment, 1]) of the training series, seeded: time shifts and warps are what a linear span holds
        worst, and they give the branch residuals to learn even where PCA keeps every component.
    epochs, batch_size, lr, beta, sigma: Adam with cosine decay; loss SSE / (2 sigma^2) + beta * KL on
        unit-RMS residuals, beta warmed up over the first quarter.
    reuse: when ``out_dir`` already holds a decoder trained on the same data with the same parameters,
        load its record instead of training again (a benchmark or a rerun does not retrain).

    Returns the dict written to decoder.json (plus ``out_dir`` and ``reused``).
    """
    torch = require_torch("train-decoder")

    import hashlib

    from .decoders.auto import fit_pca
    from .decoders.hybrid import FORMAT, HybridConfig, build_hybrid, pca_buffers, residual
    from .decoders.vae import calibrate_prior, vae_loss
    from .space import MARGIN, StimulusSpace

    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction={val_fraction} must be in [0, 1)")
    if epochs < 1 or batch_size < 2 or latent_dim < 1 or pool < 2:
        raise UserError(f"epochs={epochs}, batch_size={batch_size}, latent_dim={latent_dim}, pool={pool}: "
                        "pass epochs, latent_dim >= 1 and batch_size, pool >= 2")
    dataset = load_hybrid_data(data, length)
    if dataset.n < 2:
        raise UserError(f"{dataset.source} has {dataset.n} series; a decoder needs at least 2")
    margin = MARGIN if margin is None else float(margin)
    params = {"latent_dim": int(latent_dim), "epochs": int(epochs), "batch_size": int(batch_size), "seed": int(seed),
              "margin": margin, "pool": int(pool), "augment": float(augment), "beta": float(beta),
              "sigma": float(sigma), "lr": float(lr), "learned_scale": float(learned_scale),
              "widths": [int(w) for w in widths],
              "val_fraction": float(val_fraction)}
    space = StimulusSpace.fit(dataset, margin=margin)
    pca = fit_pca(dataset, space, seed=seed)  # a second; in the key, so a change of the PCA code retrains
    h = hashlib.sha256(dataset.digest().encode())
    h.update(json.dumps({"format": HYBRID_FORMAT_KEY, **params}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(pca.components_, dtype=np.float32).tobytes())
    key = h.hexdigest()[:20]
    out = Path(out_dir)
    if reuse and (out / "decoder.json").is_file() and (out / "decoder.onnx").is_file() \
            and (out / "encoder.onnx").is_file():
        try:
            old = json.loads((out / "decoder.json").read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key:
            return {**old, "out_dir": str(out), "reused": True}

    C, L = dataset.channels, dataset.length
    channels = C if C > 1 else None
    n_comp = int(pca.meta.get("n_components", pca.latent_dim))
    cfg = HybridConfig(length=L, channels=channels, pca_dim=pca.latent_dim, n_components=n_comp, space_kind=space.kind,
                       learned=HybridConfig.branch(latent_dim, L, C, widths).to_dict())
    Lp = cfg.vae.length
    buf = pca_buffers(pca, space)

    rng = np.random.default_rng(seed)
    Z = space.to_standard(dataset.X.astype(np.float64))  # (n, C, L), the units both branches work in
    perm = rng.permutation(dataset.n)
    n_val = min(int(round(val_fraction * dataset.n)), dataset.n - 1)
    train_idx, val_idx = perm[n_val:], (perm[:n_val] if n_val else perm[:min(dataset.n, 64)])
    znorm = space.kind == "znorm"
    A_train = _augment(Z[rng.choice(train_idx, pool)].astype(np.float32), rng, augment, znorm).astype(np.float64)
    A_val = _augment(Z[rng.choice(val_idx, max(64, pool // 8))].astype(np.float32), rng, augment, znorm)
    A_val = A_val.astype(np.float64)
    R_train, R_val = residual(A_train, buf, n_comp), residual(A_val, buf, n_comp)
    gain = float(max(np.sqrt(np.mean(R_train ** 2)), 1e-6))

    def padded(R):
        return np.pad(R / gain, ((0, 0), (0, 0), (0, Lp - L))).astype(np.float32)

    X_train, X_val = padded(R_train), padded(R_val)

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(seed)
        model = build_hybrid(cfg, pca, space)
        # learned_scale > 1 widens what the learned part reaches beyond the residuals' size; the encoder divides
        # by the same gain, so it stays the branch's inverse
        model.gain.fill_(gain * float(learned_scale))
        vae = model.vae
        opt = torch.optim.Adam(vae.parameters(), lr=lr)
        steps = max(1, len(X_train) // batch_size)
        total = epochs * steps
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        warmup = max(1, total // 4)
        from .progress import progress_bar
        bar = progress_bar(total=epochs, unit="epoch", desc="train-decoder", enabled=progress)
        t0, step, history = time.time(), 0, []
        Xv = torch.from_numpy(X_val)
        for epoch in range(epochs):
            vae.train()
            idx = rng.permutation(len(X_train))
            tot = 0.0
            for b in range(steps):
                batch = torch.from_numpy(X_train[idx[b * batch_size:(b + 1) * batch_size]])
                loss, _, _, _ = vae_loss(vae, batch, beta * min(1.0, (step + 1) / warmup), sigma)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(vae.parameters(), 10.0)
                opt.step()
                sched.step()
                step += 1
                tot += loss.item()
            val = _evaluate(vae, Xv, beta, sigma)
            history.append({"epoch": epoch + 1, "train_loss": tot / steps, **val})
            bar.update(1)
            bar.set_postfix_str(f"val_mse={val['val_mse']:.4f}, kl={val['val_kl']:.1f}")
        bar.close()
        seconds = time.time() - t0
        vae.eval()
        calibration = calibrate_prior(vae, X_train)
        with torch.no_grad():
            # how much of the held-out (augmented) series each part reconstructs, in standardised units
            V = space.from_standard(A_val)  # the encoder takes the stimulus space's units
            V = torch.from_numpy((V if channels else V[:, 0]).astype(np.float32))
            Vs = model(model.encode(V)).numpy().astype(np.float64)
        Vs = space.to_standard(Vs if channels else Vs[:, None])
        ss = float(np.mean((A_val - A_val.mean(axis=0)) ** 2))
        fit = {"pca_fraction_unexplained": float(np.mean(residual(A_val, buf, pca.latent_dim) ** 2) / ss),
               "hybrid_fraction_unexplained": float(np.mean((Vs - A_val) ** 2) / ss)}

        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().to(torch.float32) if v.is_floating_point() else v
                    for k, v in model.state_dict().items()}, out / "weights.pt")
        pca.save(out / "pca.npz")
        _export_hybrid(model, cfg, out)
        import onnx

        info = {
            "format": FORMAT, "name": "hybrid", "key": key,
            "latent_dim": cfg.latent_dim, "length": L, "channels": channels,
            "space": space.describe(),
            "architecture": {**cfg.to_dict(), "type": "pca + learned residual (conv VAE decoder)",
                             "n_components": int(pca.meta.get("n_components", pca.latent_dim)),
                             "n_residual": int(pca.meta.get("n_residual", 0)),
                             "code": f"[PCA part: {pca.latent_dim} | learned part: {int(latent_dim)}]",
                             "output": "in the stimulus space (inside the ONNX graph): "
                                       + ("z-normalised per series and channel" if znorm else
                                          "the data's units, clipped to their range with the margin")},
            "training": {"data": [dataset.describe()], "params": params, "n_train": int(len(train_idx)),
                         "n_val": int(n_val), "residual_gain": gain, "seconds": round(seconds, 1),
                         **history[-1], **fit, "prior_calibration": calibration,
                         "history": [{k: round(float(v), 5) for k, v in r.items()} for r in history]},
            "seed": seed,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
                         "python": platform.python_version(), "xdream_ts": _version()},
            "files": {"decoder": "decoder.onnx", "encoder": "encoder.onnx", "weights": "weights.pt",
                      "pca": "pca.npz"},
        }
        if verify:
            info["onnx_max_abs_diff"] = _verify_hybrid(model, cfg, out, seed)
        (out / "decoder.json").write_text(json.dumps(info, indent=1) + "\n")
        return {**info, "out_dir": str(out), "reused": False}
    finally:
        torch.set_num_threads(old_threads)


def _export_hybrid(model, cfg, out: Path) -> None:
    model.eval()
    _export_pair(model, model, "encode", cfg, out, "code")


def _verify_hybrid(model, cfg, out: Path, seed: int) -> float:
    """Max |ONNX - torch| decoder output on 16 random codes (recorded in decoder.json)."""
    import torch

    from .decoders.onnx_decoder import OnnxDecoder

    codes = np.random.default_rng(seed + 1).standard_normal((16, cfg.latent_dim)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(codes)).numpy()
    got = OnnxDecoder(out, _config={"latent_dim": cfg.latent_dim, "length": cfg.length,
                                    "channels": cfg.channels})(codes)
    return float(np.abs(ref - got).max())


# ------------------------------------------------------------------------------------------------ CLI

def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``train-decoder`` on an argparse subparsers object; the handler is ``args.func(args)``."""
    p = subparsers.add_parser(
        "train-decoder", help="train a decoder (latent codes -> series) on your model's data",
        description="Train a decoder on your series and save decoder.onnx, encoder.onnx, weights.pt and "
                    "decoder.json into --out; use it with --decoder DIR. The default (--kind hybrid) is the "
                    "auto PCA plus a learned residual branch, in the data's stimulus space; --kind vae the "
                    "plain conv VAE (z-normalised series).")
    _add_arguments(p)
    p.set_defaults(func=run_cli)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="the series: a .tsv[.gz], .ts[.gz], .npy, .npz or .csv file, a dataset folder or a name "
                        "found via $XDREAM_TS_DATA (TRAIN split only); --kind vae: several comma separated")
    p.add_argument("--out", required=True, help="output folder (created; decoder files overwritten)")
    p.add_argument("--kind", choices=("hybrid", "vae"), default="hybrid",
                   help="hybrid (default): the auto PCA + a learned residual branch, in the data's units when "
                        "they are not z-normalised; vae: the plain conv VAE, z-normalised")
    p.add_argument("--latent-dim", type=int, default=None,
                   help=f"latent code size (default 64; hybrid: the learned part, default {HYBRID_LATENT})")
    p.add_argument("--length", type=int, default=None,
                   help="the model's series length (default: the data's; vae: a multiple of 16)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 60 with early stopping; hybrid 40)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=10, help="vae: early-stopping patience in epochs (default 10)")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (default 1.0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    if args.kind == "hybrid":
        info = train_hybrid_decoder(args.data, args.out, latent_dim=args.latent_dim or HYBRID_LATENT,
                                    length=args.length, epochs=args.epochs or 40, batch_size=args.batch_size,
                                    seed=args.seed, beta=args.beta, threads=args.threads, progress=not args.quiet)
        t = info["training"]
        print(f"{'reused' if info['reused'] else 'saved'} {info['out_dir']}: hybrid, code "
              f"{info['architecture']['code']}, length {info['length']}, {info['space']['kind']} space; "
              f"unexplained variance of held-out series {t['hybrid_fraction_unexplained']:.4f} "
              f"(PCA alone {t['pca_fraction_unexplained']:.4f}) ({t['seconds']:.0f} s)")
        return 0
    data = [s for s in (x.strip() for x in str(args.data).split(",")) if s]
    info = train_decoder(data if len(data) > 1 else data[0], args.out, latent_dim=args.latent_dim or 64,
                         length=args.length, epochs=args.epochs or 60, batch_size=args.batch_size, seed=args.seed,
                         patience=args.patience, beta=args.beta, threads=args.threads, progress=not args.quiet)
    t = info["training"]
    print(f"saved {info['out_dir']}: latent_dim={info['latent_dim']} length={info['length']} "
          f"val_mse={t['val_mse']:.4f} val_kl={t['val_kl']:.1f} epochs={t['epochs_run']} ({t['seconds']:.0f} s)")
    return 0


def main(argv=None) -> int:
    """``python -m xdream_ts.train_decoder --data ... --out ...``; UserErrors print one line, exit 2."""
    p = argparse.ArgumentParser(prog="xdream-ts train-decoder", description=add_cli.__doc__)
    _add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_cli(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
