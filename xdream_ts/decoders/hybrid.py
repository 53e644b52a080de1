"""The hybrid decoder: a code ``[PCA part | learned part]`` decodes to PCA branch + learned branch.

Why (issue 15, item 5): a VAE trained on the model's data alone confines the search to data-like shapes,
as PCA alone does, and lacks the directions outside the data's span that let the ``auto`` PCA go beyond
the data (its posterior did not collapse). So the learned decoder keeps that search space and adds to it:

    series = to_space( PCA(code[:k]) + gain * (vae(code[k:]) - vae(0))[..., :L] )

- ``PCA``: the ``auto`` decoder's linear map (``decoders/auto.py:fit_pca``: whitened PCA, 99 % variance,
  cap 64, plus 64 low-frequency directions outside the data's span), in the space's standard units;
- ``vae``: a small conv VAE decoder (``decoders/vae.py``, no output normalisation) trained on what the
  data's principal components leave of time-warped real series (``train_decoder.train_hybrid_decoder``):
  the shifts, warps and detail their span cannot hold. Not what the residual directions leave: where
  the PCA part spans every dimension (a 64-sample series) nothing would be left to learn, while the
  branch's nonlinear shapes are what it adds to the search even inside that span. ``- vae(0)`` makes a
  learned part of 0 add nothing, so the search space contains the PCA's exactly; ``gain`` is the
  residuals' RMS (the VAE trains on unit-scale residuals, else its KL term would swamp a reconstruction
  loss of residuals that small; ``learned_scale`` 3 instead of 1 measured no better); its output is
  computed at the length rounded up to a multiple of 2**stages and cropped, so any length works;
- ``to_space``: the stimulus space (``xdream_ts.space``) inside the graph: z-normalised per series and
  channel (``znorm``), or ``loc + scale * x`` clipped to the data's range with its margin per channel
  (``data``), the same rule ``StimulusSpace.from_standard`` applies.

The encoder inverts it: the learned part is the VAE's posterior mean of what the components leave, the
PCA part the projection of what the branch then does not give; so a real series (``auto``'s start from
the data) decodes back exactly within the PCA part's span.

This module holds the torch modules only (torch imported inside functions); the search path runs the
ONNX export through ``OnnxDecoder``, which reads the space from decoder.json.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .vae import VAEConfig, build_vae, znorm

FORMAT = "xdream_ts.hybrid/1"


@dataclass
class HybridConfig:
    """What fixes the modules' shapes (stored in decoder.json; enough to rebuild them from weights.pt)."""

    length: int
    channels: int | None  # None: univariate series (n, L); else (n, C, L)
    pca_dim: int  # PCA components + residual directions: the code's first pca_dim entries
    n_components: int  # of which the data's principal components (the learned branch models what they leave)
    learned: dict  # the branch's VAEConfig (channels >= 1, length padded, normalize False)
    space_kind: str = "znorm"

    @property
    def vae(self) -> VAEConfig:
        return VAEConfig.from_dict(self.learned)

    @property
    def latent_dim(self) -> int:
        return int(self.pca_dim + self.vae.latent_dim)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HybridConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @staticmethod
    def branch(latent_dim: int, length: int, channels: int, widths) -> VAEConfig:
        """The learned branch's VAEConfig at ``length`` rounded up to what its stages need."""
        step = 2 ** len(widths)
        return VAEConfig(latent_dim=int(latent_dim), length=int(math.ceil(length / step) * step),
                         channels=int(channels), widths=[int(w) for w in widths], normalize=False).validate()


def build_hybrid(cfg: HybridConfig, pca=None, space=None):
    """The ``Hybrid`` torch module: with ``pca`` (a fitted PCADecoder) and ``space`` (its StimulusSpace) its
    linear part is set from them; without, zeros to be filled by ``load_state_dict`` (weights.pt)."""
    import torch
    from torch import nn

    C, L = cfg.channels or 1, int(cfg.length)
    D = C * L

    class Hybrid(nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = build_vae(cfg.vae)
            self.k = int(cfg.pca_dim)
            self.univariate = cfg.channels is None
            self.znorm = cfg.space_kind == "znorm"
            for name, shape in (("W", (self.k, D)), ("b", (D,)), ("P", (D, self.k)), ("gain", ()),
                                ("loc", (C, 1)), ("scale", (C, 1)), ("low", (C, 1)), ("high", (C, 1))):
                self.register_buffer(name, torch.zeros(shape))

        def linear(self, a):
            return (a @ self.W + self.b).reshape(a.shape[0], C, L)

        def forward(self, code):
            """Codes (n, k + m) -> series (n, [C,] L) in the stimulus space."""
            a, c = code[:, :self.k], code[:, self.k:]
            x = self.linear(a) + self.learned(c).reshape(-1, C, L)
            if self.znorm:
                x = znorm(x)
            else:  # StimulusSpace.from_standard: the data's units, clipped to their range with the margin
                x = torch.maximum(torch.minimum(x * self.scale + self.loc, self.high), self.low)
            return x.squeeze(1) if self.univariate else x

        def learned(self, c):
            """The learned branch, flattened (n, C*L): 0 at c = 0."""
            g = self.gain * (self.vae.decoder(c) - self.vae.decoder(torch.zeros_like(c)))[..., :L]
            return g.reshape(c.shape[0], D)

        def encode(self, x):
            """Series (n, [C,] L) in the stimulus space -> codes: the principal components' projection, the
            VAE's posterior mean of what they leave, and the residual directions' projection of what the
            branch then misses (so a series inside the PCA's span decodes back exactly)."""
            x = x.unsqueeze(1) if self.univariate else x
            if self.znorm:
                z = znorm(x)
            else:
                z = (x - self.loc) / self.scale
            k = int(cfg.n_components)
            f = z.reshape(z.shape[0], D) - self.b
            r = f - (f @ self.P[:, :k]) @ self.W[:k]  # what the principal components leave
            c = self.vae.encoder.code(nn.functional.pad((r / self.gain).reshape(-1, C, L), (0, cfg.vae.length - L)))
            # the linear part: the projection of what the branch does not give, onto the whole PCA part
            return torch.cat([(f - self.learned(c)) @ self.P, c], dim=1)

    model = Hybrid()
    if pca is not None:
        set_linear(model, pca, space)
    return model


def pca_buffers(pca, space) -> dict:
    """The PCA branch's arrays in the standardised units both branches share: ``W``/``b`` decode,
    ``P`` projects (``PCADecoder.encode``'s whitened scores), ``loc``/``scale``/``low``/``high`` the space."""
    s = pca.score_scale
    W = pca.components_ * s[:, None]
    # the inverse of W on its span (orthonormal components): whitened scores, as PCADecoder.encode gives
    P = pca.components_.T / s[None, :]
    out = {"W": W, "b": pca.mean_, "P": P}
    C = pca.channels or 1
    if space is not None and space.kind == "data":
        out.update(loc=space.loc, scale=space.scale, low=space.low, high=space.high)
    else:
        out.update(loc=np.zeros(C), scale=np.ones(C), low=np.zeros(C), high=np.zeros(C))  # unused in znorm
    return out


def residual(Z: np.ndarray, buffers: dict, n_components: int) -> np.ndarray:
    """(n, C, L) standardised series -> what the data's ``n_components`` principal components leave of
    them (the learned branch's training target): numpy, with ``pca_buffers``' arrays."""
    f = Z.reshape(len(Z), -1) - buffers["b"]
    a = f @ buffers["P"][:, :n_components]
    return (f - a @ buffers["W"][:n_components]).reshape(Z.shape)


def set_linear(model, pca, space) -> None:
    import torch

    for name, v in pca_buffers(pca, space).items():
        buf = getattr(model, name)
        buf.copy_(torch.as_tensor(np.asarray(v, np.float64).reshape(buf.shape), dtype=torch.float32))


__all__ = ["FORMAT", "HybridConfig", "build_hybrid", "pca_buffers", "residual", "set_linear"]
