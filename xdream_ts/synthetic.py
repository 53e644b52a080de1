"""Synthetic time series for training the shipped prior: KernelSynth-style Gaussian processes and simple
structural families, seeded numpy only.

``generate(n, length=256, seed=0)`` returns float64 series (n, length) drawn from six families:

- ``kernelsynth``: a Gaussian-process sample whose kernel is 1-5 kernels drawn from a bank (RBF,
  periodic, linear, rational-quadratic, white noise, constant; several scales each) combined by random
  ``+`` or ``*``, after the KernelSynth recipe of Chronos (Ansari et al., "Chronos: Learning the
  Language of Time Series", TMLR 2024); sampled by Cholesky with a small jitter.
- ``ar``: a stationary AR(p) process, p in 1..4, roots drawn inside the unit circle.
- ``trend``: a linear / quadratic / exponential / logistic trend plus AR(1) noise.
- ``step``: a piecewise-constant level with 1-5 jumps plus noise.
- ``burst``: low noise with 1-4 localised oscillation or spike bursts.
- ``periodic``: 1-3 sinusoids (with harmonics, sometimes square or sawtooth) plus noise.

Series ``i`` depends only on ``(seed, i)`` (and its family), so a larger ``n`` extends a smaller one.
The series are in arbitrary units; callers z-normalise them.
"""
from __future__ import annotations

import numpy as np

from .errors import UserError

FAMILIES = ("kernelsynth", "ar", "trend", "step", "burst", "periodic")
# KernelSynth is the richest family (it covers smooth, periodic, trending and rough shapes): half the mix.
WEIGHTS = {"kernelsynth": 0.5, "ar": 0.1, "trend": 0.1, "step": 0.1, "burst": 0.1, "periodic": 0.1}
MAX_KERNELS = 5
JITTER = 1e-6


# ------------------------------------------------------------------------------------------- kernels

def _kernel_bank(length: int) -> list[tuple[str, dict]]:
    """The kernels KernelSynth draws from, on t in [0, 1]; periods in samples as in Chronos (24, 48, ...)."""
    bank: list[tuple[str, dict]] = []
    for p in (4, 8, 12, 24, 48, 96, 168, 336):  # hourly/daily/weekly-style periods, in samples
        if p < length:
            bank.append(("periodic", {"period": p / length, "scale": 1.0}))
    for ls in (0.01, 0.03, 0.1, 0.3, 1.0):
        bank.append(("rbf", {"scale": ls}))
    for ls in (0.03, 0.1, 0.3):
        for a in (0.1, 1.0, 10.0):
            bank.append(("rq", {"scale": ls, "alpha": a}))
    for c in (0.0, 1.0, 10.0):
        bank.append(("linear", {"c": c}))
    for s in (0.01, 0.1, 1.0):
        bank.append(("white", {"sigma": s}))
    bank.append(("constant", {"c": 1.0}))
    return bank


def _kernel(kind: str, p: dict, t: np.ndarray) -> np.ndarray:
    d = t[:, None] - t[None, :]
    if kind == "rbf":
        return np.exp(-0.5 * (d / p["scale"]) ** 2)
    if kind == "periodic":
        return np.exp(-2.0 * np.sin(np.pi * np.abs(d) / p["period"]) ** 2 / p["scale"] ** 2)
    if kind == "rq":
        return (1.0 + d ** 2 / (2.0 * p["alpha"] * p["scale"] ** 2)) ** (-p["alpha"])
    if kind == "linear":
        return (t[:, None] - 0.5) * (t[None, :] - 0.5) + 1e-2 * p["c"]  # DotProduct(sigma0^2 = c / 100)
    if kind == "white":
        return p["sigma"] ** 2 * np.eye(len(t))
    if kind == "constant":
        return np.full((len(t), len(t)), p["c"])
    raise ValueError(kind)  # pragma: no cover - the bank holds only the kinds above


def kernelsynth(rng: np.random.Generator, length: int) -> np.ndarray:
    bank = _kernel_bank(length)
    t = np.linspace(0.0, 1.0, length)
    j = int(rng.integers(1, MAX_KERNELS + 1))
    picks = rng.choice(len(bank), size=j, replace=True)
    K = _kernel(*bank[picks[0]], t)
    for k in picks[1:]:
        Kk = _kernel(*bank[k], t)
        K = K + Kk if rng.random() < 0.5 else K * Kk
    K = 0.5 * (K + K.T)
    scale = max(float(np.mean(np.diag(K))), 1e-12)
    for jitter in (JITTER, 1e-4, 1e-2):  # a product of kernels can be numerically rank-deficient
        try:
            L = np.linalg.cholesky(K + jitter * scale * np.eye(length))
            break
        except np.linalg.LinAlgError:
            continue
    else:  # pragma: no cover - the 1e-2 jitter makes K comfortably positive definite
        L = np.eye(length)
    return L @ rng.standard_normal(length)


# ----------------------------------------------------------------------------------------- families

def _ar_series(rng: np.random.Generator, length: int, p: int, burn: int = 100) -> np.ndarray:
    # roots inside the unit circle (real or conjugate pairs) give a stationary process
    roots = []
    while len(roots) < p:
        r = rng.uniform(0.3, 0.98)
        if p - len(roots) >= 2 and rng.random() < 0.6:
            th = rng.uniform(0.05, np.pi - 0.05)
            roots += [r * np.exp(1j * th), r * np.exp(-1j * th)]
        else:
            roots.append(r * rng.choice([-1.0, 1.0]))
    a = -np.real(np.poly(roots))[1:]  # x_t = sum a_k x_{t-k} + e_t
    e = rng.standard_normal(length + burn)
    x = np.zeros(length + burn)
    for i in range(length + burn):
        acc = e[i]
        for k in range(1, p + 1):
            if i - k >= 0:
                acc += a[k - 1] * x[i - k]
        x[i] = acc
    return x[burn:]


def ar(rng: np.random.Generator, length: int) -> np.ndarray:
    return _ar_series(rng, length, int(rng.integers(1, 5)))


def trend(rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, length)
    kind = rng.integers(4)
    if kind == 0:
        base = rng.normal() * t
    elif kind == 1:
        base = rng.normal() * t + rng.normal() * (t - rng.uniform()) ** 2
    elif kind == 2:
        base = np.exp(rng.uniform(-4, 4) * t)
    else:
        base = 1.0 / (1.0 + np.exp(-rng.uniform(5, 40) * (t - rng.uniform(0.2, 0.8))))
    base = (base - base.mean()) / max(base.std(), 1e-12)
    noise = _ar_series(rng, length, 1) * rng.uniform(0.02, 0.5)
    return base + noise / max(noise.std(), 1e-12) * rng.uniform(0.02, 0.5)


def step(rng: np.random.Generator, length: int) -> np.ndarray:
    k = int(rng.integers(1, 6))
    cuts = np.sort(rng.choice(np.arange(4, length - 4), size=k, replace=False))
    levels = np.cumsum(rng.normal(size=k + 1))
    x = np.repeat(levels, np.diff(np.concatenate([[0], cuts, [length]])))
    return x + rng.uniform(0.01, 0.3) * rng.standard_normal(length)


def burst(rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float64)
    x = rng.uniform(0.01, 0.2) * rng.standard_normal(length)
    for _ in range(int(rng.integers(1, 5))):
        c, w = rng.uniform(0, length), rng.uniform(1.0, length / 8)
        env = np.exp(-0.5 * ((t - c) / w) ** 2)
        if rng.random() < 0.5:
            x += rng.uniform(0.5, 3) * env * np.sin(2 * np.pi * t / rng.uniform(2.5, 32) + rng.uniform(0, 2 * np.pi))
        else:
            x += rng.normal(0, 2) * env
    return x


def periodic(rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float64)
    x = np.zeros(length)
    for _ in range(int(rng.integers(1, 4))):
        period = np.exp(rng.uniform(np.log(3.0), np.log(length)))
        ph = 2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
        shape = rng.integers(3)
        if shape == 0:
            w = np.sin(ph) + sum(rng.normal(0, 0.3) * np.sin(h * ph) for h in (2, 3))
        elif shape == 1:
            w = np.sign(np.sin(ph))
        else:
            w = (ph / (2 * np.pi)) % 1.0 - 0.5
        x += rng.uniform(0.3, 1.5) * w
    return x + rng.uniform(0.0, 0.3) * rng.standard_normal(length)


_MAKERS = {"kernelsynth": kernelsynth, "ar": ar, "trend": trend, "step": step, "burst": burst,
           "periodic": periodic}


def generate(n: int, length: int = 256, seed: int = 0, families=None, weights=None,
             return_families: bool = False):
    """``n`` synthetic series (n, length), float64, deterministic in ``seed``.

    families: the families to draw from (default all of ``FAMILIES``); weights: their relative
    probabilities (default ``WEIGHTS``). return_families: also return the family name of each series.
    """
    fams = tuple(families) if families is not None else FAMILIES
    bad = [f for f in fams if f not in _MAKERS]
    if bad or not fams:
        raise UserError(f"unknown synthetic families {bad}; choose from {', '.join(FAMILIES)}")
    if int(length) < 16:
        raise UserError(f"synthetic length={length}; pass at least 16")
    w = np.array([WEIGHTS[f] for f in fams] if weights is None else weights, dtype=np.float64)
    if w.shape != (len(fams),) or (w < 0).any() or w.sum() <= 0:
        raise UserError(f"weights must be {len(fams)} non-negative numbers, one per family")
    which = np.random.default_rng([int(seed), 0x5EED]).choice(len(fams), size=int(n), p=w / w.sum())
    out = np.empty((int(n), int(length)))
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i])
        x = _MAKERS[fams[which[i]]](rng, int(length))
        out[i] = x if np.isfinite(x).all() else rng.standard_normal(int(length))
    names = [fams[k] for k in which]
    return (out, names) if return_families else out


__all__ = ["generate", "FAMILIES", "WEIGHTS", "kernelsynth"]
