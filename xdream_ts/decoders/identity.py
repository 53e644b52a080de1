"""Identity decoder: the code IS the series (XDream's raw-pixel baseline).

Searching raw samples is the hardest space for a gradient-free optimizer (XDream Fig. 4): every
sample is a free dimension and nothing makes neighbouring samples agree. It is the baseline every
learned decoder must beat.
"""
from __future__ import annotations

import numpy as np

from ..series import znormalize


class IdentityDecoder:
    name = "identity"
    code_space = "raw"  # the code is the series: gradient methods may smooth or clip it directly

    def __init__(self, length: int, channels: int | None = None, normalize: bool = True):
        self.length = int(length)
        self.channels = channels
        self.normalize = normalize
        self.latent_dim = self.length * (channels or 1)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float64)
        shape = (len(codes), self.length) if self.channels is None else (len(codes), self.channels, self.length)
        series = codes.reshape(shape)
        return (znormalize(series) if self.normalize else series).astype(np.float32)

    def torch_module(self):
        """The same map in torch (for gradients)."""
        from .torch_bridge import linear_module
        shape = (self.length,) if self.channels is None else (self.channels, self.length)
        return linear_module(np.eye(self.latent_dim, dtype=np.float32), np.zeros(self.latent_dim, np.float32), shape,
                             self.normalize)

    def describe(self) -> dict:
        return {"name": self.name, "length": self.length, "channels": self.channels, "normalize": self.normalize}
