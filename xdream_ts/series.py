"""Small helpers on batches of series shaped (n, length) or (n, channels, length)."""
from __future__ import annotations

import numpy as np


def znormalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Z-normalise each series (and each channel) over time, as UCR data is.

    A constant series has no shape to normalise: it maps to zeros instead of dividing by ~0.
    """
    x = np.asarray(x)
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return np.where(std > eps, (x - mean) / np.maximum(std, eps), 0.0).astype(x.dtype, copy=False)


def resample(x: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation along the last axis to ``length`` samples (endpoints kept)."""
    x = np.asarray(x)
    n_in = x.shape[-1]
    if n_in == length:
        return x
    src = np.linspace(0.0, 1.0, n_in)
    dst = np.linspace(0.0, 1.0, length)
    flat = x.reshape(-1, n_in)
    out = np.empty((flat.shape[0], length), dtype=np.result_type(x.dtype, np.float32))
    for i, row in enumerate(flat):
        out[i] = np.interp(dst, src, row)
    return out.reshape(*x.shape[:-1], length)
