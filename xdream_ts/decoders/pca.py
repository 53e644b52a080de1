"""PCA decoder: a series is the data mean plus a whitened combination of principal components.

The simplest learned decoder: fit on real series, codes are *whitened* component scores, so a code
drawn from N(0, I) is a Gaussian sample with the data's covariance (restricted to the kept components),
typical of the data in the same way as a VAE's prior samples. Linear, so encoding is an exact
projection, and fitting takes a second. Saved as .npz (no pickle).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..series import resample, znormalize

FORMAT = "xdream_ts.pca/1"


class PCADecoder:
    """codes (n, k) -> series (n, [C,] length): ``znorm(mean + (codes * sqrt(var)) @ components)``.

    Build it with :meth:`fit` or :meth:`load`. ``length`` may differ from the length it was fitted at:
    the output is then resampled (linear interpolation) and z-normalised again.
    """

    name = "pca"

    def __init__(self, components: np.ndarray, mean: np.ndarray, explained_variance: np.ndarray,
                 fit_length: int, channels: int | None = None, length: int | None = None,
                 normalize: bool = True, meta: dict | None = None):
        self.components_ = np.asarray(components, dtype=np.float64)  # (k, C*L)
        self.mean_ = np.asarray(mean, dtype=np.float64)  # (C*L,)
        self.explained_variance_ = np.asarray(explained_variance, dtype=np.float64)  # (k,)
        k, D = self.components_.shape
        self.fit_length = int(fit_length)
        self.channels = None if channels is None else int(channels)
        if (D != (self.channels or 1) * self.fit_length or self.mean_.shape != (D,)
                or self.explained_variance_.shape != (k,)):
            raise UserError("PCA decoder: components, mean and explained_variance have inconsistent shapes; "
                            "re-fit it with PCADecoder.fit")
        self.length = int(length) if length else self.fit_length
        self.normalize = normalize
        self.latent_dim = k
        self.meta = dict(meta or {})
        # Floor tiny variances: whitened scores of a near-null component would blow up in encode().
        self._scale = np.sqrt(np.maximum(self.explained_variance_, 1e-12 * max(self.explained_variance_.max(), 1e-30)))

    # ----------------------------------------------------------------------------------------- fit
    @classmethod
    def fit(cls, X, n_components: int = 64, length: int | None = None, seed: int = 0) -> "PCADecoder":
        """Fit on series X (n, L) or (n, C, L) (or a UCR name/folder: its TRAIN split).

        The series are resampled to ``length`` (default: their own) and z-normalised first.
        ``n_components`` is capped at min(n_series, C*length) (e.g. 50 for GunPoint's 50 series).
        """
        source = None
        if isinstance(X, (str, Path)):
            from ..data import load_ucr

            source = str(X)
            X = load_ucr(X, split="train")[0] if not str(X).endswith((".tsv", ".tsv.gz")) else load_ucr(X)[0]
        X = np.asarray(X, dtype=np.float64)
        if X.ndim not in (2, 3) or len(X) < 2:
            raise UserError(f"PCA decoder: data has shape {X.shape}; pass at least 2 series as (n, length) "
                            "or (n, channels, length)")
        if not np.isfinite(X).all():
            raise UserError("PCA decoder: data holds NaN/inf (e.g. padding of variable-length series); "
                            "resample each series to one length first")
        length = int(length or X.shape[-1])
        channels = X.shape[1] if X.ndim == 3 else None
        Z = znormalize(resample(X, length)).reshape(len(X), -1)
        k = int(min(n_components, Z.shape[0], Z.shape[1]))
        if k < 1:
            raise UserError(f"PCA decoder: n_components={n_components} must be >= 1")
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(Z)
        meta = {"n_series": int(len(X)), "n_components_requested": int(n_components),
                "explained_variance_ratio": float(pca.explained_variance_ratio_.sum())}
        if source:
            meta["source"] = source
        return cls(pca.components_, pca.mean_, pca.explained_variance_, length, channels, length, meta=meta)

    # -------------------------------------------------------------------------------------- decode
    def _shape(self, n: int, length: int) -> tuple:
        return (n, length) if self.channels is None else (n, self.channels, length)

    def linear_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (k, C*fit_length), b (C*fit_length,)): the series before normalisation is ``codes @ W + b``."""
        return self.components_ * self._scale[:, None], self.mean_

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise UserError(f"decoder pca: codes have shape {codes.shape}; expected (n, {self.latent_dim})")
        W, b = self.linear_map()
        x = (codes @ W + b).reshape(self._shape(len(codes), self.fit_length))
        if self.length != self.fit_length:
            x = resample(x, self.length)
        return (znormalize(x) if self.normalize else x).astype(np.float32)

    def encode(self, series: np.ndarray) -> np.ndarray:
        """Series (n, [C,] any length) -> whitened scores (n, k): resampled, z-normalised, projected."""
        x = np.asarray(series, dtype=np.float64)
        want = 2 if self.channels is None else 3
        if x.ndim == want - 1:
            x = x[None]
        if x.ndim != want or (self.channels is not None and x.shape[1] != self.channels):
            raise UserError(f"encode: series have shape {x.shape}; this PCA decoder expects "
                            f"{'(n, length)' if self.channels is None else f'(n, {self.channels}, length)'}")
        z = znormalize(resample(x, self.fit_length)).reshape(len(x), -1)
        return ((z - self.mean_) @ self.components_.T) / self._scale

    # ----------------------------------------------------------------------------------------- I/O
    def save(self, path) -> Path:
        """Write an .npz (arrays only, loadable with allow_pickle=False)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, format=np.array(FORMAT), components_=self.components_, mean_=self.mean_,
                 explained_variance_=self.explained_variance_, fit_length=np.array(self.fit_length),
                 channels=np.array(-1 if self.channels is None else self.channels),
                 explained_variance_ratio=np.array(self.meta.get("explained_variance_ratio", np.nan)),
                 source=np.array(str(self.meta.get("source", ""))))
        return path

    @classmethod
    def load(cls, path, length: int | None = None) -> "PCADecoder":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                if "format" not in f or str(f["format"]) != FORMAT:
                    raise UserError(f"{path} is not a PCA decoder file (format {FORMAT}); save one with "
                                    "PCADecoder.save")
                ch = int(f["channels"])
                meta = {"explained_variance_ratio": float(f["explained_variance_ratio"])}
                if str(f["source"]):
                    meta["source"] = str(f["source"])
                return cls(f["components_"], f["mean_"], f["explained_variance_"], int(f["fit_length"]),
                           None if ch < 0 else ch, length, meta=meta)
        except UserError:
            raise
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot read PCA decoder {path}: {str(e).splitlines()[0][:200]}; pass an .npz "
                            "written by PCADecoder.save") from None

    def describe(self) -> dict:
        return {"name": self.name, "length": self.length, "fit_length": self.fit_length,
                "channels": self.channels, "latent_dim": self.latent_dim, "normalize": self.normalize, **self.meta}
