"""``auto``: the decoder the data decide. With data, a whitened PCA fitted on them, in their stimulus space.

``fit_data_decoder(dataset)`` fits a :class:`PCADecoder` on the real series (multichannel: each series
flattened over (channels, length)), whitened so that codes ~ N(0, I) decode to Gaussian samples with
the data's mean and covariance, keeping as many components as explain ``variance`` (99 %) of it, at
most ``max_components``; then adds ``RESIDUAL`` (64) low-frequency directions outside their span, so
that a search can leave the shapes the real series share (``PCADecoder.with_residual``: why, and
what they gave). Its output lives in ``StimulusSpace.fit(dataset)``: z-normalised per series
when the data are, else the data's units (per-channel location/scale restored, range clipped).
PCA is linear, so ``encode`` is an exact projection: a real series encodes to a code that decodes back
to it up to the variance left out (none when all components are kept).

The fit is cached as an .npz (no pickle) named by a hash of the loaded data and the fit parameters:
in ``.xdream_ts/`` next to the data file when that folder is writable, else in ``cache_dir``. A second
call with the same data and parameters loads it instead of refitting (a sweep fits once).

Why ``auto`` with data stays PCA and does not train the learned decoder of ``train-decoder``: measured in
experiments/results/data_space.md on 5 models, the learned decoder gives the same super stimuli and medians
only 1.00-1.03 times PCA's (the principal components hold over 99.8 % of the held-out variance there), and
training it costs 26-62 s per data set on 2 cores before the first presentation; a user who wants it runs
``train-decoder`` once and passes the folder.

Without data, ``auto`` is the shipped prior: ``default`` (the VAE) for univariate series; for several
channels the same VAE with one code per channel (``decoders/channelwise.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..space import MARGIN, StimulusSpace
from .pca import PCADecoder

MAX_COMPONENTS = 64
VARIANCE = 0.99
RESIDUAL = 64        # directions outside the data's span (PCADecoder.with_residual says why and what they gave)
RESIDUAL_SCALE = 2.0
CACHE_FORMAT = "xdream_ts.auto-pca/3"  # /2: with the residual directions; /3: orthonormal for short series too
CACHE_FOLDER = ".xdream_ts"


def _key(dataset, params: dict) -> str:
    h = hashlib.sha256(dataset.digest().encode())
    h.update(json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True).encode())
    return h.hexdigest()[:20]


def _cache_dirs(dataset, cache_dir) -> list[Path]:
    dirs = []
    if getattr(dataset, "folder", None) is not None:
        dirs.append(Path(dataset.folder) / CACHE_FOLDER)
    if cache_dir is not None:
        dirs.append(Path(cache_dir))
    return dirs


def _load_cached(path: Path, key: str):
    """The cached decoder, or None when the file is absent, foreign or unreadable (then it is refitted)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f.get("cache_format", "")) != CACHE_FORMAT or str(f.get("cache_key", "")) != key:
                return None
    except (OSError, ValueError, EOFError):
        return None
    try:
        return PCADecoder.load(path)
    except UserError:
        return None


def _save(decoder: PCADecoder, dirs: list[Path], name: str, key: str) -> Path | None:
    """Write to the first writable folder; atomically, since sweep tasks may fit the same data at once."""
    for d in dirs:
        tmp = None
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.npz"
            decoder.save(tmp, cache_format=CACHE_FORMAT, cache_key=key)
            os.replace(tmp, d / name)
            return d / name
        except OSError:  # not writable (or full): try the next folder
            if tmp is not None:
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass
    return None


def fit_data_decoder(dataset, cache_dir=None, max_components: int = MAX_COMPONENTS, variance: float = VARIANCE,
                     length: int | None = None, margin: float | None = None, seed: int = 0,
                     residual: int = RESIDUAL, residual_scale: float = RESIDUAL_SCALE) -> PCADecoder:
    """A whitened PCA decoder fitted on ``dataset`` (a :class:`xdream_ts.data.Dataset`), in its stimulus space,
    with ``residual`` directions outside the data's span (:meth:`PCADecoder.with_residual`; 0: none).

    cache_dir: where to cache the fit when the data's folder is not writable (or the data are arrays).
    max_components: the cap on the latent dimension; variance: the fraction of variance to explain.
    length: the model's series length (default the data's); the data are resampled to it before fitting.
    margin: the range margin of a ``data`` space (default ``xdream_ts.space.MARGIN``).

    The decoder's ``space`` (None for ``znorm``) and ``describe()["space"]`` say which space it is in;
    ``describe()["cache"]`` where the fit is stored and ``["cached"]`` whether it was loaded from there.
    """
    margin = MARGIN if margin is None else float(margin)
    if length:
        # fit at the model's length, so the decoder stays linear with no resampling (dream, inverse sets)
        dataset = dataset.resampled(int(length))
    if dataset.n < 2:
        raise UserError(f"{dataset.source} has {dataset.n} series; fitting a decoder needs at least 2")
    if max_components < 1:
        raise UserError(f"max_components={max_components}; pass at least 1")
    params = {"max_components": int(max_components), "variance": float(variance), "margin": margin,
              "seed": int(seed), "residual": int(residual), "residual_scale": float(residual_scale)}
    key = _key(dataset, params)
    name = f"pca-{key}.npz"
    dirs = _cache_dirs(dataset, cache_dir)
    for d in dirs:
        dec = _load_cached(d / name, key)
        if dec is not None:
            return _stamp(dec, dataset, d / name, cached=True)
    dec = fit_pca(dataset, StimulusSpace.fit(dataset, margin=margin), max_components, variance, seed, residual,
                  residual_scale)
    return _stamp(dec, dataset, _save(dec, dirs, name, key), cached=False)


def fit_pca(dataset, space, max_components: int = MAX_COMPONENTS, variance: float = VARIANCE, seed: int = 0,
            residual: int = RESIDUAL, residual_scale: float = RESIDUAL_SCALE) -> PCADecoder:
    """The auto PCA itself, uncached: fitted on ``dataset`` in ``space`` (a StimulusSpace), plus ``residual``
    directions. Also the linear branch of the hybrid decoder (decoders/hybrid.py), so both search the same
    PCA."""
    return PCADecoder.fit(dataset.squeeze(), n_components=max_components, variance=variance, seed=seed,
                          space=space).with_residual(residual, residual_scale)


def _stamp(dec: PCADecoder, dataset, path: Path | None, cached: bool) -> PCADecoder:
    """What the stored config needs: how it was made, from what, in which space, where it is cached."""
    dec.meta.update(spec="auto", source=dataset.source, data_sha256=dataset.digest(),
                    cache=None if path is None else str(path), cached=cached)
    if dec.space is None:  # a data space is described by the decoder itself
        dec.meta["space"] = StimulusSpace.znormalised().describe()
    return dec


def auto_decoder(length: int | None = None, channels: int | None = None, data=None, cache_dir=None):
    """``make_decoder('auto', ...)``: fitted on ``data`` (a Dataset or a path for ``load_dataset``) when
    given, else the shipped prior (see the module docstring)."""
    if data is None:
        # the shipped prior: the default VAE, channel-wise for several channels (xdream_ts.decoders.channelwise)
        from .channelwise import default_prior

        if not length:
            raise UserError("decoder 'auto' without data needs the series length: pass --length or --data")
        return default_prior(length, channels)
    dataset = as_dataset(data, length)
    check_channels(dataset, channels)
    dec = fit_data_decoder(dataset, cache_dir=cache_dir, length=length)
    if channels == 1 and dec.channels is None:
        dec.channels = 1  # the target takes (n, 1, length): the same values, one more axis
    return dec


def as_dataset(data, length=None):
    """A Dataset from a Dataset, a path (``load_dataset``) or an array (n, [c,] L)."""
    from ..data import Dataset, load_dataset

    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(data, length=length)
    return Dataset.from_arrays(np.asarray(data), length=length)


def check_channels(dataset, channels) -> None:
    """Refuse data whose channels differ from the model's (None: the model does not say)."""
    if channels is not None and int(channels) != dataset.channels:
        raise UserError(f"{dataset.source} has {dataset.channels} channel(s) but the model takes {channels}; "
                        "pass data with the model's channels")


__all__ = ["fit_data_decoder", "fit_pca", "auto_decoder", "as_dataset", "check_channels", "MAX_COMPONENTS", "VARIANCE"]
