"""A univariate decoder applied to each channel: the shipped prior for a model of any channel count.

``ChannelwiseDecoder(base, channels)`` takes codes (n, channels * d), cuts each into ``channels`` codes
of the base decoder's d, decodes every one and stacks them: series (n, channels, length), each channel
z-normalised as the base writes it. The prior knows nothing of how channels relate: with no data there
is nothing to learn that from, so the search finds the coupling a unit wants (with ``--data`` the auto
decoder is fitted on the channels jointly instead). A code of N(0, I) stays a typical draw of the prior
in every channel, so the optimizers' sphere means the same thing as for one channel.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError


class ChannelwiseDecoder:
    code_space = "latent"

    def __init__(self, base, channels: int):
        if int(channels) < 1:
            raise UserError(f"channels={channels} must be >= 1")
        if getattr(base, "channels", None) not in (None, 1):
            raise UserError("a channel-wise decoder needs a univariate base decoder")
        self.base, self.channels = base, int(channels)
        self.d = int(base.latent_dim)
        self.latent_dim = self.d * self.channels
        self.length = int(base.length)
        self.name = f"{getattr(base, 'name', 'decoder')}-channelwise"

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise UserError(f"decoder {self.name}: codes have shape {codes.shape}; expected (n, {self.latent_dim})")
        n = len(codes)
        out = np.asarray(self.base(codes.reshape(n * self.channels, self.d)))
        return out.reshape(n, self.channels, out.shape[-1])

    @property
    def has_encoder(self) -> bool:
        return bool(getattr(self.base, "has_encoder", False))

    def encode(self, series: np.ndarray) -> np.ndarray:
        """Series (n, channels, any length) -> codes (n, channels * d): each channel by the base encoder."""
        x = np.asarray(series, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1] != self.channels:
            raise UserError(f"encode: series have shape {x.shape}; this decoder expects (n, {self.channels}, length)")
        n = len(x)
        return np.asarray(self.base.encode(x.reshape(n * self.channels, -1))).reshape(n, self.latent_dim)

    def torch_module(self, length: int | None = None):
        """The base decoder's torch module, applied per channel (gradients flow through every channel)."""
        from ..errors import require_torch

        torch = require_torch("a gradient through the decoder")
        inner = self.base.torch_module(length)
        c, d = self.channels, self.d

        class Channelwise(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, z):
                x = self.inner(z.reshape(len(z) * c, d))
                return x.reshape(len(z), c, x.shape[-1])

        return Channelwise().eval()

    def describe(self) -> dict:
        base = self.base.describe() if hasattr(self.base, "describe") else {"name": getattr(self.base, "name", None)}
        return {**base, "name": self.name, "channels": self.channels, "latent_dim": self.latent_dim,
                "base_latent_dim": self.d, "channelwise": True}


def default_prior(length: int, channels: int | None = None, threads: int = 1):
    """``--decoder auto`` without data: the shipped VAE at ``length``; for several channels one code of
    its size per channel (:class:`ChannelwiseDecoder`), so any channel count gets the learned prior
    rather than a smooth basis."""
    from .onnx_decoder import load_default_decoder

    return per_channel(load_default_decoder(length=length, threads=threads), channels)


def per_channel(base, channels: int | None):
    """``base`` for one channel (or none given) and for a decoder that has several channels of its own;
    a univariate ``base`` on a target of several channels: one code of it per channel."""
    if channels is None or int(channels) <= 1 or getattr(base, "channels", None) not in (None, 1):
        return base
    return ChannelwiseDecoder(base, int(channels))
