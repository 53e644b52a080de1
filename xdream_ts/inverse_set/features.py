"""Where the diversity of an inverse set is measured: feature vectors ('series', 'codes' or a callable),
the paper's diversity (mean pairwise distance), novelty (k nearest) and a farthest-first subset."""
from __future__ import annotations

import numpy as np

from ..errors import UserError


class Features:
    """Feature vectors for novelty and diversity: 'series', 'codes' or a callable series -> (n, f).

    A callable may be e.g. an OnnxScorer over every unit of a layer (``'gap'`` of the shipped model);
    one with ``torch_forward`` is used by the gradient path too, a plain one only for the archive and
    the measurement (the gradient path then spreads the samples in series space).
    """

    def __init__(self, feature_fn):
        if feature_fn is None:
            feature_fn = "series"
        if isinstance(feature_fn, str) and feature_fn not in ("series", "codes"):
            raise UserError(f"feature_fn {feature_fn!r}: use 'series', 'codes' or a function series -> (n, f)")
        if not isinstance(feature_fn, str) and not callable(feature_fn):
            raise UserError(f"feature_fn must be 'series', 'codes' or callable, got {type(feature_fn).__name__}")
        self.fn = feature_fn
        self.name = feature_fn if isinstance(feature_fn, str) else (
            getattr(feature_fn, "feature_name", None) or getattr(feature_fn, "name", None) or type(feature_fn).__name__)
        self.differentiable = isinstance(feature_fn, str) or hasattr(feature_fn, "torch_forward")

    def __call__(self, series: np.ndarray, codes: np.ndarray) -> np.ndarray:
        if self.fn == "series":
            f = series
        elif self.fn == "codes":
            f = codes
        else:
            f = self.fn(series)
        f = np.asarray(f, dtype=np.float64).reshape(len(series), -1)
        if not np.isfinite(f).all():
            raise UserError("the feature function returned NaN/inf: check feature_fn")
        return f

    def torch(self, x, z):
        """Differentiable features; a plain (numpy) callable falls back to the series themselves."""
        if self.fn == "codes":
            return z
        if self.fn == "series" or not hasattr(self.fn, "torch_forward"):
            return x.reshape(x.shape[0], -1)
        f = self.fn.torch_forward(x)
        return f.reshape(f.shape[0], -1)

    @property
    def optimised_in(self) -> str:
        return self.name if self.differentiable else "series"


def diversity(features: np.ndarray) -> float:
    """The paper's diversity: mean pairwise Euclidean distance between feature vectors (NaN below 2)."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = len(f)
    if n < 2:
        return float("nan")
    total = 0.0
    for lo in range(0, n, 1024):  # blocks: memory O(1024 n), not O(n^2 f)
        d = pairwise(f[lo:lo + 1024], f)
        total += d.sum()
    return float(total / (n * (n - 1)))


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and of ``b``."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def select_diverse(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of k rows chosen greedily farthest-first (a diverse subset; used for galleries)."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = len(f)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    dmin = pairwise(f[chosen], f)[0]
    for _ in range(k - 1):
        j = int(np.argmax(dmin))
        chosen.append(j)
        dmin = np.minimum(dmin, pairwise(f[j:j + 1], f)[0])
    return np.array(chosen)


def knn_mean(dist: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k smallest entries of each row (the novelty of each row's sample)."""
    k = max(1, min(k, dist.shape[1]))
    part = np.partition(dist, k - 1, axis=1)[:, :k]
    return part.mean(axis=1)
