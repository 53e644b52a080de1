"""PCA decoder: a series is the data mean plus a whitened combination of principal components.

The simplest learned decoder: fit on real series, codes are *whitened* component scores, so a code
drawn from N(0, I) is a Gaussian sample with the data's covariance (restricted to the kept components),
typical of the data in the same way as a VAE's prior samples. Linear, so encoding is an exact
projection, and fitting takes a second. Saved as .npz (no pickle).

With a ``data`` stimulus space (``xdream_ts.space``), the PCA is fitted on the series standardised per
channel by the space and its output is mapped back to the data's units and clipped to their range;
``linear_map`` and ``encode`` then work in those units (exact inside the range).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..series import resample, znormalize

FORMAT = "xdream_ts.pca/1"
MAX_FIT_SERIES = 20000  # more series than this barely move the components; fit on a seeded sample


def _orthonormal_outside(rows: np.ndarray, span: np.ndarray, n: int, tol: float = 1e-6) -> np.ndarray:
    """Up to ``n`` orthonormal vectors from ``rows`` in order (modified Gram-Schmidt, twice for accuracy),
    orthogonal to the orthonormal ``span`` rows, skipping rows (nearly) dependent on those before."""
    out = []
    for r in rows:
        for _ in range(2):
            r = r - (r @ span.T) @ span
            if out:
                Q = np.asarray(out)
                r = r - (r @ Q.T) @ Q
        norm = np.linalg.norm(r)
        if norm > tol:
            out.append(r / norm)
        if len(out) == n:
            break
    return np.asarray(out).reshape(-1, span.shape[1])


class PCADecoder:
    """codes (n, k) -> series (n, [C,] length): ``znorm(mean + (codes * sqrt(var)) @ components)``.

    Build it with :meth:`fit` or :meth:`load`. ``length`` may differ from the length it was fitted at:
    the output is then resampled (linear interpolation) and z-normalised again.
    """

    code_space = "linear"

    name = "pca"

    def __init__(self, components: np.ndarray, mean: np.ndarray, explained_variance: np.ndarray,
                 fit_length: int, channels: int | None = None, length: int | None = None,
                 normalize: bool = True, meta: dict | None = None, space=None):
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
        # a 'data' space owns the output units; a 'znorm' one is the plain z-normalised decoder
        self.space = space if space is not None and space.kind == "data" else None
        if self.space is not None and self.space.channels != (self.channels or 1):
            raise UserError(f"PCA decoder: the stimulus space has {self.space.channels} channel(s), the "
                            f"decoder {self.channels or 1}; fit both on the same data")
        self.normalize = False if self.space is not None else normalize
        self.latent_dim = k
        self.meta = dict(meta or {})
        # Floor tiny variances: whitened scores of a near-null component would blow up in encode().
        self._scale = np.sqrt(np.maximum(self.explained_variance_, 1e-12 * max(self.explained_variance_.max(), 1e-30)))

    # ----------------------------------------------------------------------------------------- fit
    @classmethod
    def fit(cls, X, n_components: int = 64, length: int | None = None, seed: int = 0,
            variance: float | None = None, space=None) -> "PCADecoder":
        """Fit on series X (n, L) or (n, C, L) (or a data file, folder or name: a folder's TRAIN split).

        The series are resampled to ``length`` (default: their own), then z-normalised, or standardised
        by ``space`` when it is a ``data`` StimulusSpace (the output is then in the data's units).
        ``n_components`` is capped at min(n_series, C*length) (e.g. 50 for GunPoint's 50 series);
        ``variance`` (e.g. 0.99) keeps only as many as explain that fraction of the variance.
        Above ``MAX_FIT_SERIES`` series, a seeded sample of that many is fitted.
        """
        source = None
        if isinstance(X, (str, Path)):
            from ..data import load_dataset

            source = str(X)
            is_file = Path(X).expanduser().is_file()
            d = load_dataset(X, split=None if is_file else "train")
            X = d.squeeze()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim not in (2, 3) or len(X) < 2:
            raise UserError(f"PCA decoder: data has shape {X.shape}; pass at least 2 series as (n, length) "
                            "or (n, channels, length)")
        if not np.isfinite(X).all():
            raise UserError("PCA decoder: data holds NaN/inf (e.g. padding of variable-length series); "
                            "resample each series to one length first")
        length = int(length or X.shape[-1])
        channels = X.shape[1] if X.ndim == 3 else None
        if space is not None and space.kind == "data":
            Z = space.to_standard(resample(X, length)).reshape(len(X), -1)
        else:
            space = None
            Z = znormalize(resample(X, length)).reshape(len(X), -1)
        if len(Z) > MAX_FIT_SERIES:
            Z = Z[np.sort(np.random.default_rng(seed).choice(len(Z), MAX_FIT_SERIES, replace=False))]
        k = int(min(n_components, Z.shape[0], Z.shape[1]))
        if k < 1:
            raise UserError(f"PCA decoder: n_components={n_components} must be >= 1")
        if variance is not None and not 0 < variance <= 1:
            raise UserError(f"PCA decoder: variance={variance}; pass a fraction in (0, 1], e.g. 0.99")
        from sklearn.decomposition import PCA

        # the exact solver up to a few thousand dimensions; randomized (seeded) beyond, where exact is slow
        solver = "full" if min(Z.shape) <= 3000 else "randomized"
        pca = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(Z)
        ratio = np.cumsum(pca.explained_variance_ratio_)
        if variance is not None:
            k = int(min(k, np.searchsorted(ratio, variance - 1e-12) + 1))
        meta = {"n_series": int(len(X)), "n_components_requested": int(n_components),
                "explained_variance_ratio": float(ratio[k - 1])}
        if variance is not None:
            meta["variance_requested"] = float(variance)
        if source:
            meta["source"] = source
        return cls(pca.components_[:k], pca.mean_, pca.explained_variance_[:k], length, channels, length,
                   meta=meta, space=space)

    def with_residual(self, n_residual: int, scale: float = 1.0) -> "PCADecoder":
        """This decoder with ``n_residual`` more directions, outside the span of its components: the
        lowest-frequency cosines (DCT-II, per channel, channels interleaved) with that span projected out
        and orthonormalised, each with ``scale`` times the mean variance of the kept components.

        Why: the data's principal components confine a search to the few directions the real series
        vary in (11 components hold 99 % of GunPoint), and a unit may respond hardest to a shape no real
        series has. Measured at 3,000 presentations with the default optimizer, starting from the data,
        2 seeds (the auto defaults, 64 directions at scale 2, are in experiments/results/data_space.md):
        the GunPoint CNN's relu3 unit reached 1.03 times the best real series in the data's span alone;
        with 32 directions at scale 0.25 / 1 / 4: 47 / 84 / 96; with 64 at scale 1 / 2 / 4: 143 / 157 /
        161 (the shipped prior: 162). Its logit 1 went 1.81 -> 14.2 / 15.7 / 16.2 (64 at 1 / 2 / 4) and
        the ItalyPower GRU's logit 1.07 -> 1.20 / 1.22 / 1.24, while GunPoint's logit 0 fell from 1.49
        (scale 1) to 1.42 (2) and 1.18 (4): scale 2 is the compromise. The components stay first and
        unchanged, so a real series encodes to the same leading coordinates (and residual ones near 0).
        The plausibility constraint (``--plausible``) is what keeps a search near the data when that
        matters."""
        from .basis import dct_basis

        C = self.components_
        k, D = C.shape
        ch = self.channels or 1
        L = D // ch
        n_residual = int(min(n_residual, D - k))
        if n_residual < 1:
            return self
        nb = max(1, min(L - 1, -(-n_residual // ch) + k))  # enough cosines to survive the projection
        B = np.zeros((ch * nb, D))
        basis = dct_basis(nb, L)
        for j in range(ch):
            B[j * nb:(j + 1) * nb, j * L:(j + 1) * L] = basis
        order = np.argsort(np.tile(np.arange(nb), ch) * ch + np.repeat(np.arange(ch), nb), kind="stable")
        R = B[order] - (B[order] @ C.T) @ C
        R = R[np.linalg.norm(R, axis=1) > 0.3]  # cosines (nearly) inside the span add nothing
        if len(R) == 0:
            return self
        Q = np.linalg.qr(R.T)[0].T[:n_residual]  # Gram-Schmidt in frequency order
        if np.abs(Q @ C.T).max() > 1e-6:
            # Short series (ItalyPower's 24 samples, ECG200's 96): fewer of the first cosines are independent
            # outside the span than directions asked for, and QR fills the dependent ones with arbitrary unit
            # vectors, partly inside the span; encode() is then no exact projection. Skip the dependent ones.
            Q = _orthonormal_outside(R, C, n_residual)
        var = np.full(len(Q), float(scale) * float(self.explained_variance_.mean()))
        meta = {**self.meta, "n_components": int(k), "n_residual": int(len(Q)), "residual_scale": float(scale)}
        return PCADecoder(np.vstack([C, Q]), self.mean_, np.concatenate([self.explained_variance_, var]),
                          self.fit_length, self.channels, self.length, normalize=self.normalize, meta=meta,
                          space=self.space)

    # -------------------------------------------------------------------------------------- decode
    def _shape(self, n: int, length: int) -> tuple:
        return (n, length) if self.channels is None else (n, self.channels, length)

    def torch_module(self):
        """The same map in torch (for gradients), before the data space's range clip (which real series
        never reach). Only at the fit length: resampling the output would break linearity."""
        from .torch_bridge import linear_module
        if self.fit_length != self.length:
            raise UserError(f"the PCA decoder was fitted at length {self.fit_length}, the target takes {self.length}; "
                            "fit it at the target's length for gradients")
        W, b = self.linear_map()
        shape = (self.length,) if self.channels is None else (self.channels, self.length)
        return linear_module(W, b, shape, self.normalize)

    @property
    def score_scale(self) -> np.ndarray:
        """Per component, sqrt(explained variance) floored above 0: what one unit of a (whitened) code is
        in the standardised series' units."""
        return self._scale

    def linear_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (k, C*fit_length), b (C*fit_length,)): the series before normalisation is ``codes @ W + b``.

        With a ``data`` space, in the data's units (before the range clip, which real series never hit).
        """
        W, b = self.components_ * self._scale[:, None], self.mean_
        if self.space is None:
            return W, b
        L = self.fit_length
        s, m = np.repeat(self.space.scale, L), np.repeat(self.space.loc, L)  # flattened (C, L) order
        return W * s, b * s + m

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise UserError(f"decoder pca: codes have shape {codes.shape}; expected (n, {self.latent_dim})")
        W, b = self.components_ * self._scale[:, None], self.mean_  # standardised units
        x = (codes @ W + b).reshape(self._shape(len(codes), self.fit_length))
        if self.length != self.fit_length:
            x = resample(x, self.length)
        if self.space is not None:
            return self.space.from_standard(x).astype(np.float32)
        return (znormalize(x) if self.normalize else x).astype(np.float32)

    def encode(self, series: np.ndarray) -> np.ndarray:
        """Series (n, [C,] any length) -> whitened scores (n, k): resampled, standardised as in fit, projected."""
        x = np.asarray(series, dtype=np.float64)
        want = 2 if self.channels is None else 3
        if x.ndim == want - 1:
            x = x[None]
        if x.ndim != want or (self.channels is not None and x.shape[1] != self.channels):
            raise UserError(f"encode: series have shape {x.shape}; this PCA decoder expects "
                            f"{'(n, length)' if self.channels is None else f'(n, {self.channels}, length)'}")
        x = resample(x, self.fit_length)
        if self.space is not None:
            z = self.space.to_standard(x)
        else:
            z = znormalize(x) if self.normalize else x
        z = z.reshape(len(x), -1)
        return ((z - self.mean_) @ self.components_.T) / self._scale

    # ----------------------------------------------------------------------------------------- I/O
    def save(self, path, **extra) -> Path:
        """Write an .npz (arrays only, loadable with allow_pickle=False); ``extra`` arrays are stored too."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, format=np.array(FORMAT), components_=self.components_, mean_=self.mean_,
                 explained_variance_=self.explained_variance_, fit_length=np.array(self.fit_length),
                 channels=np.array(-1 if self.channels is None else self.channels),
                 explained_variance_ratio=np.array(self.meta.get("explained_variance_ratio", np.nan)),
                 source=np.array(str(self.meta.get("source", ""))), normalize=np.array(bool(self.normalize)),
                 space=np.array(json.dumps(self.space.describe()) if self.space is not None else ""),
                 # with_residual: how many of the rows are the data's components, how many residual directions
                 n_components=np.array(int(self.meta.get("n_components", self.latent_dim))),
                 residual_scale=np.array(float(self.meta.get("residual_scale", np.nan))),
                 **{k: np.asarray(v) for k, v in extra.items()})
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
                if "n_components" in f and int(f["n_components"]) < len(f["components_"]):
                    meta.update(n_components=int(f["n_components"]),
                                n_residual=len(f["components_"]) - int(f["n_components"]),
                                residual_scale=float(f["residual_scale"]))
                if str(f["source"]):
                    meta["source"] = str(f["source"])
                space = None
                if "space" in f and str(f["space"]):
                    from ..space import StimulusSpace

                    space = StimulusSpace.from_description(str(f["space"]))
                normalize = bool(f["normalize"]) if "normalize" in f else True  # files before the flag
                return cls(f["components_"], f["mean_"], f["explained_variance_"], int(f["fit_length"]),
                           None if ch < 0 else ch, length, normalize=normalize, meta=meta, space=space)
        except UserError:
            raise
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot read PCA decoder {path}: {str(e).splitlines()[0][:200]}; pass an .npz "
                            "written by PCADecoder.save") from None

    def describe(self) -> dict:
        d = {"name": self.name, "length": self.length, "fit_length": self.fit_length,
             "channels": self.channels, "latent_dim": self.latent_dim, "normalize": self.normalize, **self.meta}
        if self.space is not None:
            d["space"] = self.space.describe()
        return d
