"""Basis decoder: a series is a weighted sum of smooth cosine (DCT-II) basis functions.

A handful of low-frequency components already describes most real sensor series, so this space is
small, smooth and works for any length (the basis is evaluated at the requested length). The constant
component is left out: per-series z-normalisation removes it anyway.
"""
from __future__ import annotations

import numpy as np

from ..series import znormalize


def dct_basis(n_basis: int, length: int) -> np.ndarray:
    """(n_basis, length) orthonormal DCT-II rows k = 1..n_basis (k = 0, the mean, is skipped)."""
    t = (np.arange(length) + 0.5) / length
    k = np.arange(1, n_basis + 1)[:, None]
    return np.sqrt(2.0 / length) * np.cos(np.pi * k * t)


class BasisDecoder:
    code_space = "linear"
    name = "basis"

    def __init__(self, length: int, n_basis: int = 32, channels: int | None = None, normalize: bool = True):
        if n_basis < 1 or n_basis >= length:
            from ..errors import UserError
            raise UserError(f"basis decoder: n_basis={n_basis} must be between 1 and length-1={length - 1}")
        self.length = int(length)
        self.n_basis = int(n_basis)
        self.channels = channels
        self.normalize = normalize
        self.latent_dim = self.n_basis * (channels or 1)
        self._basis = dct_basis(self.n_basis, self.length)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float64)
        c = self.channels or 1
        series = codes.reshape(len(codes), c, self.n_basis) @ self._basis
        if self.channels is None:
            series = series[:, 0]
        return (znormalize(series) if self.normalize else series).astype(np.float32)

    def torch_module(self):
        """The same map in torch (for gradients): block-diagonal, channel j's coefficients -> channel j."""
        from .torch_bridge import linear_module
        ch = self.channels or 1
        W = np.zeros((ch * self.n_basis, ch * self.length), np.float32)
        for j in range(ch):
            W[j * self.n_basis:(j + 1) * self.n_basis, j * self.length:(j + 1) * self.length] = self._basis
        shape = (self.length,) if self.channels is None else (self.channels, self.length)
        return linear_module(W, np.zeros(W.shape[1], np.float32), shape, self.normalize)

    def describe(self) -> dict:
        return {"name": self.name, "length": self.length, "n_basis": self.n_basis,
                "channels": self.channels, "normalize": self.normalize}
