"""Simulated targets: a neuron with a known best input, and the noise of real experiments.

SimulatedNeuron is a linear-nonlinear neuron: a temporal filter w applied to the whole series, then a
rectifier, r(x) = gain * max(0, <w, x> / sqrt(L)) with w zero-mean and unit-norm. Over z-normalised
series (mean 0, norm sqrt(L)) the Cauchy-Schwarz bound makes the optimum known in closed form:
x* = znormalize(w), r(x*) = gain. Tests and benchmarks measure how close a search gets to it.

The noise wrappers record what experiments see:
  PoissonNoise(s, scale)  Poisson(max(0, a) * scale) / scale per presentation (XDream's spiking neuron)
  GainNoise(s, sigma)     a * max(0, 1 + sigma * N(0, 1)) per presentation (Wang & Ponce 2022)
Both keep the clean score available (``clean``) so the run store records it, and keep their RNG state
(``state_dict``) so a resumed run draws the same noise as an uninterrupted one.
"""
from __future__ import annotations

import numpy as np

from ..serial import rng_state, set_rng_state
from ..series import znormalize


def gabor_filter(length: int, rng: np.random.Generator, channels: int | None = None) -> np.ndarray:
    """A random smooth, localised filter (Gaussian-windowed cosine), zero-mean and unit-norm."""
    t = np.arange(length) / length
    rows = []
    for _ in range(channels or 1):
        centre, width = rng.uniform(0.3, 0.7), rng.uniform(0.06, 0.2)
        freq, phase = rng.uniform(2.0, 8.0), rng.uniform(0, 2 * np.pi)
        rows.append(np.exp(-0.5 * ((t - centre) / width) ** 2) * np.cos(2 * np.pi * freq * t + phase))
    w = np.array(rows)
    w -= w.mean(axis=-1, keepdims=True)
    w /= np.linalg.norm(w)
    return w if channels else w[0]


class SimulatedNeuron:
    """r(x) = gain * max(0, <w, x> / sqrt(L * C)) for series x of shape (L,) or (C, L)."""

    name = "simulated_neuron"
    noisy = False

    def __init__(self, length: int = 500, channels: int | None = None, seed: int = 0, gain: float = 10.0,
                 weights: np.ndarray | None = None):
        self.length = int(length)
        self.channels = channels
        self.seed = seed
        self.gain = float(gain)
        if weights is None:
            weights = gabor_filter(self.length, np.random.default_rng(seed), channels)
        w = np.asarray(weights, dtype=np.float64)
        w = w - w.mean(axis=-1, keepdims=True)  # the mean is invisible after z-normalisation
        self.weights = w / np.linalg.norm(w)

    def __call__(self, series: np.ndarray) -> np.ndarray:
        x = np.asarray(series, dtype=np.float64).reshape(len(series), -1)
        if x.shape[1] != self.weights.size:
            from ..errors import UserError
            raise UserError(f"simulated neuron expects series of shape {self.weights.shape}, "
                            f"got {np.shape(series)[1:]}: set the decoder length to {self.length}")
        drive = x @ self.weights.reshape(-1) / np.sqrt(self.weights.size)
        return self.gain * np.maximum(0.0, drive)

    def optimum(self) -> np.ndarray:
        """The best z-normalised input, in closed form."""
        return znormalize(self.weights).astype(np.float32)

    @property
    def max_response(self) -> float:
        return float(self(self.optimum()[None])[0])

    def describe(self) -> dict:
        return {"name": self.name, "length": self.length, "channels": self.channels, "seed": self.seed,
                "gain": self.gain, "max_response": self.max_response}


class _Noise:
    """Per-presentation noise around a clean scorer; the loop calls ``clean`` once and ``add_noise`` per repeat."""

    name = "noise"
    noisy = True

    def __init__(self, scorer, seed: int | None = None):
        self.scorer = scorer
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        for attr in ("length", "channels", "target_names"):
            if hasattr(scorer, attr):
                setattr(self, attr, getattr(scorer, attr))
        if hasattr(scorer, "objective"):
            self.objective = scorer.objective

    def clean(self, series: np.ndarray) -> np.ndarray:
        return np.asarray(self.scorer(series), dtype=np.float64)

    def __call__(self, series: np.ndarray) -> np.ndarray:
        return self.add_noise(self.clean(series))

    def add_noise(self, clean: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        set_rng_state(self.rng, state["rng"])

    def describe(self) -> dict:
        inner = self.scorer.describe() if hasattr(self.scorer, "describe") else {"name": type(self.scorer).__name__}
        return {"name": f"{self.name}({inner.get('name')})", "noise": self.name, "seed": self.seed,
                "inner": inner, **self._params()}

    def _params(self) -> dict:
        return {}


class PoissonNoise(_Noise):
    """Spike counts: Poisson(max(0, a) * scale) / scale. Larger ``scale`` = more spikes = less noise."""

    name = "poisson"

    def __init__(self, scorer, scale: float = 1.0, seed: int | None = None):
        super().__init__(scorer, seed)
        parse_noise(f"poisson:{scale}")  # the same one-line check as a spec string
        self.scale = float(scale)

    def add_noise(self, clean: np.ndarray) -> np.ndarray:
        rate = np.maximum(0.0, np.nan_to_num(clean, nan=0.0)) * self.scale
        noisy = self.rng.poisson(rate) / self.scale
        return np.where(np.isnan(clean), np.nan, noisy)

    def _params(self) -> dict:
        return {"scale": self.scale}


class GainNoise(_Noise):
    """Multiplicative gain noise (Wang & Ponce 2022): a * max(0, 1 + sigma * N(0, 1))."""

    name = "gain"

    def __init__(self, scorer, sigma: float = 0.5, seed: int | None = None):
        super().__init__(scorer, seed)
        parse_noise(f"gain:{sigma}")
        self.sigma = float(sigma)

    def add_noise(self, clean: np.ndarray) -> np.ndarray:
        return clean * np.maximum(0.0, 1.0 + self.sigma * self.rng.standard_normal(np.shape(clean)))

    def _params(self) -> dict:
        return {"sigma": self.sigma}


def parse_noise(noise) -> tuple[str, float] | None:
    """A noise spec -> (kind, value) or None, checked once where it is given.

    none | poisson[:SCALE > 0] (default 1) | gain[:SIGMA >= 0] (default 0.5). A bad spec is a one-line
    UserError: a negative Poisson scale used to fail deep in numpy after the run store was made, and a
    negative sigma was accepted silently.
    """
    from ..errors import UserError
    if noise in (None, "", "none"):
        return None
    kind, _, arg = str(noise).partition(":")
    if kind not in ("poisson", "gain"):
        raise UserError(f"unknown noise {noise!r}: use none, poisson[:SCALE] or gain:SIGMA")
    if not arg:
        return kind, 1.0 if kind == "poisson" else 0.5
    try:
        value = float(arg)
    except ValueError:
        raise UserError(f"noise {noise!r}: {arg!r} is not a number; use none, poisson[:SCALE] or gain:SIGMA") from None
    if kind == "poisson" and not (np.isfinite(value) and value > 0):
        raise UserError(f"poisson scale must be > 0 (spikes per unit of activation), got {arg}; write poisson[:SCALE]")
    if kind == "gain" and not (np.isfinite(value) and value >= 0):
        raise UserError(f"gain noise sigma must be >= 0, got {arg}; write gain:SIGMA, e.g. gain:0.5")
    return kind, value


def with_noise(scorer, noise: str | None, seed: int | None = None):
    """Wrap ``scorer`` by a noise spec: None/'none', 'poisson[:SCALE]', 'gain[:SIGMA]' (see parse_noise)."""
    parsed = parse_noise(noise)
    if parsed is None:
        return scorer
    kind, value = parsed
    if kind == "poisson":
        return PoissonNoise(scorer, scale=value, seed=seed)
    return GainNoise(scorer, sigma=value, seed=seed)
