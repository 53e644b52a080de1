"""A 1-D convolutional variational autoencoder: the learned latent space the optimizers search.

Searching a learned space instead of raw samples is what makes XDream efficient and its stimuli
plausible (Xiao & Kreiman 2019, Fig. 4). This module holds the torch model only; it is needed to
*train* a decoder (``xdream_ts.train_decoder``) or to get gradients through it (the gradient-based
``dream`` optimizer). The search path runs the exported ONNX file (``onnx_decoder.OnnxDecoder``) and
never imports torch. torch is imported inside the functions here, never at module import.

Architecture (``length`` divisible by 2**n_up, default 16):

    encoder: conv7(C->w0) GELU, n_up x [conv5 stride 2 + BatchNorm + GELU]  -> (w, L/16)
             flatten -> linear -> (mu, logvar), each (d,)
    decoder: linear(d -> w*L/16) -> (w, L/16), n_up x [linear upsample x2 + conv5 + BatchNorm + GELU]
             conv7 -> (C, L) -> per-series, per-channel z-normalisation (the last op, so the ONNX export
             includes it and gradients flow through it)
    prior calibration (after training): code -> z = m + A code, a Gaussian fit of the aggregate
             posterior, so that N(0, I) codes decode to typical series (``calibrate_prior``)

Loss: sum of squared reconstruction errors / (2 sigma^2) + beta * KL(q(z|x) || N(0, I)), with a linear
KL warm-up and optional free bits. The prior is N(0, I): random N(0, 1) codes must decode to plausible
series, because that is where the optimizers start searching.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import UserError

ZNORM_EPS = 1e-12  # on the variance: tiny, so that the output std is 1 even for a near-flat pre-normalised output


@dataclass
class VAEConfig:
    """Everything that fixes the network's shape (stored in decoder.json; enough to rebuild it)."""

    latent_dim: int = 64
    length: int = 256
    channels: int | None = None  # None = univariate: series (n, L); else (n, C, L)
    widths: list[int] = field(default_factory=lambda: [32, 48, 64, 64])  # encoder stages, shallow -> deep
    kernel: int = 5
    znorm_eps: float = ZNORM_EPS
    # False: no z-normalisation at the output (the hybrid decoder's learned branch models a residual, whose
    # amplitude carries information; decoders/hybrid.py)
    normalize: bool = True

    @property
    def n_up(self) -> int:
        return len(self.widths)

    @property
    def base_length(self) -> int:
        return self.length // 2 ** self.n_up

    def validate(self) -> "VAEConfig":
        if self.latent_dim < 1:
            raise UserError(f"VAE: latent_dim={self.latent_dim} must be >= 1")
        step = 2 ** self.n_up
        if self.length < step or self.length % step:
            raise UserError(f"VAE: length={self.length} must be a positive multiple of {step}; "
                            f"pick e.g. {max(step, round(self.length / step) * step)}")
        if self.channels is not None and self.channels < 1:
            raise UserError(f"VAE: channels={self.channels} must be >= 1 (or None for univariate)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}).validate()


_CLASSES: dict = {}


def znorm(x, eps: float = ZNORM_EPS):
    """A torch tensor z-normalised over its last axis (time), the variance floored at ``eps``: the decoders'
    output normalisation (the VAE's, the hybrid's in a ``znorm`` space)."""
    import torch

    x = x - x.mean(dim=-1, keepdim=True)
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def _classes() -> dict:
    """Build the torch module classes on first use (keeps torch out of module import)."""
    if _CLASSES:
        return _CLASSES
    import torch
    from torch import nn

    class Encoder(nn.Module):
        """(n, [C,] L) series -> (mu, logvar), each (n, d)."""

        def __init__(self, cfg: VAEConfig):
            super().__init__()
            self.univariate = cfg.channels is None
            c_in = cfg.channels or 1
            k = cfg.kernel
            layers = [nn.Conv1d(c_in, cfg.widths[0], 7, padding=3), nn.GELU()]
            w_prev = cfg.widths[0]
            for w in cfg.widths:
                layers += [nn.Conv1d(w_prev, w, k, stride=2, padding=k // 2), nn.BatchNorm1d(w), nn.GELU()]
                w_prev = w
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(w_prev * cfg.base_length, 2 * cfg.latent_dim)
            self.latent_dim = cfg.latent_dim
            d = cfg.latent_dim
            # prior calibration (see calibrate_prior): code = (mu - z_mean) @ z_inverse.T
            self.register_buffer("z_mean", torch.zeros(d))
            self.register_buffer("z_inverse", torch.eye(d))

        def forward(self, x):
            """Raw posterior (mu, logvar) in the latent space the VAE was trained in."""
            if self.univariate:
                x = x.unsqueeze(1)
            h = self.features(x).flatten(1)
            mu, logvar = self.head(h).split(self.latent_dim, dim=1)
            return mu, logvar

        def code(self, x):
            """Series -> the code that decodes to it through ``Decoder.forward`` (calibrated space)."""
            return (self.forward(x)[0] - self.z_mean) @ self.z_inverse.T

    class Decoder(nn.Module):
        """(n, d) codes -> (n, [C,] L) series, z-normalised per series and channel."""

        def __init__(self, cfg: VAEConfig):
            super().__init__()
            self.univariate = cfg.channels is None
            self.eps = float(cfg.znorm_eps)
            self.normalize = bool(cfg.normalize)
            k = cfg.kernel
            widths = list(reversed(cfg.widths))  # deep -> shallow
            self.base = (widths[0], cfg.base_length)
            self.fc = nn.Linear(cfg.latent_dim, widths[0] * cfg.base_length)
            layers = []
            w_prev = widths[0]
            for w in widths:
                layers += [nn.Upsample(scale_factor=2, mode="linear", align_corners=False),
                           nn.Conv1d(w_prev, w, k, padding=k // 2), nn.BatchNorm1d(w), nn.GELU()]
                w_prev = w
            layers += [nn.Conv1d(w_prev, cfg.channels or 1, 7, padding=3)]
            self.body = nn.Sequential(*layers)
            d = cfg.latent_dim
            # prior calibration (see calibrate_prior): z = z_mean + code @ z_transform.T
            self.register_buffer("z_mean", torch.zeros(d))
            self.register_buffer("z_transform", torch.eye(d))

        def forward(self, code):
            """Codes in the calibrated space (N(0, I) is typical of the data) -> series."""
            return self.raw(self.z_mean + code @ self.z_transform.T)

        def raw(self, z):
            """Latents in the space the VAE was trained in -> series."""
            h = self.fc(z).reshape(z.shape[0], *self.base)
            x = self.body(h)
            x = znorm(x, self.eps) if self.normalize else x
            return x.squeeze(1) if self.univariate else x

    class ConvVAE(nn.Module):
        def __init__(self, cfg: VAEConfig):
            super().__init__()
            self.config = cfg
            self.encoder = Encoder(cfg)
            self.decoder = Decoder(cfg)

        def forward(self, x, sample: bool = True):
            mu, logvar = self.encoder(x)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
            return self.decoder.raw(z), mu, logvar

    class Resampled(nn.Module):
        """Decoder followed by linear resampling to another length and z-normalisation, in torch.

        Matches ``xdream_ts.series.resample`` (endpoints kept) followed by ``znormalize``, so a
        gradient optimizer sees the same series as the ONNX decoder with ``length`` set.
        """

        def __init__(self, decoder: nn.Module, length: int, eps: float):
            super().__init__()
            self.decoder = decoder
            self.length = int(length)
            self.eps = eps

        def forward(self, z):
            x = self.decoder(z)
            uni = x.dim() == 2
            x = x.unsqueeze(1) if uni else x
            x = nn.functional.interpolate(x, size=self.length, mode="linear", align_corners=True)
            x = znorm(x, self.eps)
            return x.squeeze(1) if uni else x

    _CLASSES.update(ConvVAE=ConvVAE, Encoder=Encoder, Decoder=Decoder, Resampled=Resampled, znorm=znorm)
    return _CLASSES


def build_vae(config: VAEConfig):
    """A freshly initialised ``ConvVAE`` torch module (uses the current torch RNG)."""
    return _classes()["ConvVAE"](config.validate())


def resampled_module(decoder, length: int, eps: float = ZNORM_EPS):
    """Wrap a torch decoder so its output is resampled to ``length`` and z-normalised again."""
    return _classes()["Resampled"](decoder, length, eps)


def calibrate_prior(model, X, weights=None, batch_size: int = 512) -> dict:
    """Make N(0, I) codes typical of the data: fit a Gaussian to the aggregate posterior.

    A trained VAE's aggregate posterior q(z) = E_x q(z|x) is never exactly N(0, I) (with five datasets
    its covariance eigenvalues here span 0.2 to 5), so codes drawn from N(0, I), where every optimizer
    starts, land partly where the decoder saw no data. We fit q(z) with a Gaussian (mean m, covariance
    Cov(mu) + E[diag(sigma^2)], weighted like the training sampler) and reparametrise the code space
    linearly: decoder(code) = raw_decoder(m + A code) with A = Cov^(1/2) (symmetric square root), and
    the exported encoder returns A^-1 (mu - m). Linear, so nothing else changes: same series reachable,
    gradients flow, the search space is still R^d with the N(0, I) prior the optimizers assume.
    """
    import numpy as np
    import torch

    was = model.training
    model.eval()
    mus, vars_ = [], []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            mu, logvar = model.encoder(torch.as_tensor(X[i:i + batch_size]))
            mus.append(mu.double().numpy())
            vars_.append(logvar.double().exp().numpy())
    mu, var = np.concatenate(mus), np.concatenate(vars_)
    w = np.full(len(mu), 1.0 / len(mu)) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    m = w @ mu
    cov = ((mu - m) * w[:, None]).T @ (mu - m) + np.diag(w @ var)
    cov = 0.5 * (cov + cov.T)
    ev, U = np.linalg.eigh(cov)
    ev = np.maximum(ev, 1e-6 * ev.max())
    A = (U * np.sqrt(ev)) @ U.T
    A_inv = (U / np.sqrt(ev)) @ U.T
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    model.decoder.z_mean.copy_(f32(m))
    model.decoder.z_transform.copy_(f32(A))
    model.encoder.z_mean.copy_(f32(m))
    model.encoder.z_inverse.copy_(f32(A_inv))
    model.train(was)
    return {"type": "gaussian fit of the aggregate posterior, code = A^-1 (z - m)",
            "n_series": int(len(mu)), "mean_abs_m": float(np.abs(m).mean()),
            "eigenvalues_min_median_max": [float(ev.min()), float(np.median(ev)), float(ev.max())]}


def vae_loss(model, x, beta: float, sigma: float, free_bits: float = 0.0):
    """(total, recon, kl) per-series means for a batch ``x``; see the module docstring."""
    import torch

    recon_x, mu, logvar = model(x)
    sse = ((recon_x - x) ** 2).flatten(1).sum(1)
    recon = (sse / (2.0 * sigma ** 2)).mean()
    kl_dim = 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)  # (n, d)
    kl = kl_dim.sum(1).mean()
    if free_bits > 0:
        kl_opt = torch.clamp(kl_dim.mean(0), min=free_bits).sum()
    else:
        kl_opt = kl
    return recon + beta * kl_opt, recon, kl, sse.mean()
