"""The stimulus space: the units stimuli are made in, decided by the model's own data.

Two kinds:

- ``znorm``: every series (and channel) is z-normalised over time, as UCR data are. Chosen when the
  data are z-normalised (``Dataset.znormalized``) and, without data, the shipped default.
- ``data``: the data's own units. Per channel, a location and scale are learned from the data (the mean
  and standard deviation of all its values, pooled over series and time); decoders work in the
  standardised units ``(x - loc) / scale`` and the space restores ``loc + scale * x`` at their output.
  The amplitude is then kept within what the data show, with a margin: each channel is clipped to
  ``[min - margin * range, max + margin * range]`` of that channel in the data (``range = max - min``,
  ``margin = 0.1`` by default, ``MARGIN``). Chosen when the data are not z-normalised (a model whose
  graph standardises its input takes raw sensor units).

``describe()`` gives the JSON the stored config keeps; ``StimulusSpace.from_description`` rebuilds the
same space from it. Series are (n, length) for one channel or (n, channels, length).
"""
from __future__ import annotations

import json

import numpy as np

from .errors import UserError
from .series import znormalize

MARGIN = 0.1
KINDS = ("znorm", "data")
FORMAT = "xdream_ts.space/1"


class StimulusSpace:
    """Where stimuli live: ``znorm`` (z-normalised per series and channel) or ``data`` (the data's units).

    Build with :meth:`fit` (from a Dataset), :meth:`znormalised` (no data), or :meth:`from_description`.
    """

    def __init__(self, kind: str, loc=None, scale=None, low=None, high=None, margin: float = MARGIN,
                 source: str | None = None):
        if kind not in KINDS:
            raise UserError(f"stimulus space {kind!r}: use one of {', '.join(KINDS)}")
        self.kind = kind
        self.margin = float(margin)
        self.source = source
        if kind == "data":
            arrays = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (loc, scale, low, high)]
            if any(a.size == 0 for a in arrays) or len({a.size for a in arrays}) != 1:
                raise UserError("stimulus space 'data' needs loc, scale, low and high with one value per channel; "
                                "fit it with StimulusSpace.fit(dataset)")
            self.loc, self.scale, self.low, self.high = arrays
            if not (np.all(self.scale > 0) and np.all(self.low <= self.high)):
                raise UserError("stimulus space 'data': scale must be > 0 and low <= high per channel; "
                                "fit it with StimulusSpace.fit(dataset)")
        else:
            self.loc = self.scale = self.low = self.high = None

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def fit(cls, dataset, margin: float = MARGIN) -> "StimulusSpace":
        """The space a Dataset decides: ``znorm`` if it is z-normalised, else its units (see module doc)."""
        if dataset.znormalized:
            return cls("znorm", source=dataset.source)
        if margin < 0:
            raise UserError(f"margin={margin}; pass a margin >= 0 (a fraction of each channel's range)")
        X = np.asarray(dataset.X, dtype=np.float64)  # (n, c, L), finite
        loc = X.mean(axis=(0, 2))
        std = X.std(axis=(0, 2))
        # a constant channel has no scale to learn: keep its units (scale 1) rather than divide by ~0
        scale = np.where(std > 1e-12 * np.maximum(np.abs(loc), 1.0), std, 1.0)
        lo, hi = X.min(axis=(0, 2)), X.max(axis=(0, 2))
        pad = margin * (hi - lo)
        return cls("data", loc, scale, lo - pad, hi + pad, margin, dataset.source)

    @classmethod
    def znormalised(cls) -> "StimulusSpace":
        """The space without data: z-normalised per series and channel."""
        return cls("znorm")

    @property
    def normalize(self) -> bool:
        """True when stimuli are z-normalised per series (the decoders' ``normalize`` flag)."""
        return self.kind == "znorm"

    @property
    def channels(self) -> int | None:
        return None if self.loc is None else int(self.loc.size)

    # ---------------------------------------------------------------------------------- transforms
    def _per_channel(self, v: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(c,) -> broadcastable against x (n, L) or (n, c, L)."""
        if x.ndim == 2:
            if v.size != 1:
                raise UserError(f"stimulus space has {v.size} channels; series of shape {x.shape} have one "
                                f"(pass (n, {v.size}, length))")
            return v[0]
        if x.ndim != 3 or x.shape[1] != v.size:
            raise UserError(f"stimulus space has {v.size} channel(s); series have shape {x.shape}, expected "
                            f"(n, {v.size}, length)" + (" or (n, length)" if v.size == 1 else ""))
        return v[None, :, None]

    def to_standard(self, x: np.ndarray) -> np.ndarray:
        """Stimulus-space series -> the standardised units decoders work in (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "znorm":
            return znormalize(x)
        return (x - self._per_channel(self.loc, x)) / self._per_channel(self.scale, x)

    def from_standard(self, z: np.ndarray) -> np.ndarray:
        """Standardised decoder output -> stimuli in this space (data units restored and clipped)."""
        z = np.asarray(z, dtype=np.float64)
        if self.kind == "znorm":
            return znormalize(z)
        return self.clip(z * self._per_channel(self.scale, z) + self._per_channel(self.loc, z))

    def clip(self, x: np.ndarray) -> np.ndarray:
        """Keep each channel within the data's range plus the margin (a no-op for ``znorm``)."""
        x = np.asarray(x)
        if self.kind == "znorm":
            return x
        return np.clip(x, self._per_channel(self.low, x), self._per_channel(self.high, x))

    def wrap(self, decoder):
        """A decoder whose output (standardised, e.g. z-normalised) is mapped into this space."""
        return decoder if self.kind == "znorm" else SpaceDecoder(decoder, self)

    # ----------------------------------------------------------------------------------- (de)serialise
    def describe(self) -> dict:
        """JSON-able: which space and its parameters; ``from_description`` rebuilds it."""
        d = {"format": FORMAT, "kind": self.kind}
        if self.kind == "data":
            d.update(loc=self.loc.tolist(), scale=self.scale.tolist(), low=self.low.tolist(),
                     high=self.high.tolist(), margin=self.margin,
                     rule="stimuli = clip(loc + scale * decoder output, low, high) per channel; "
                          "low/high = data min/max -/+ margin * range")
        if self.source:
            d["source"] = self.source
        return d

    @classmethod
    def from_description(cls, d) -> "StimulusSpace":
        """Rebuild from ``describe()`` output (a dict or its JSON text)."""
        if isinstance(d, (str, bytes)):
            try:
                d = json.loads(d)
            except ValueError as e:
                raise UserError(f"stimulus space: not valid JSON ({str(e)[:80]}); pass StimulusSpace.describe() "
                                "output") from None
        if not isinstance(d, dict) or d.get("kind") not in KINDS:
            raise UserError(f"stimulus space: expected a dict with kind in {KINDS}, got {str(d)[:80]!r}")
        if d["kind"] == "znorm":
            return cls("znorm", source=d.get("source"))
        try:
            return cls("data", d["loc"], d["scale"], d["low"], d["high"], d.get("margin", MARGIN), d.get("source"))
        except KeyError as e:
            raise UserError(f"stimulus space 'data' description lacks {e}; store StimulusSpace.describe()") from None

    def __eq__(self, other) -> bool:
        if not isinstance(other, StimulusSpace) or self.kind != other.kind:
            return False
        if self.kind == "znorm":
            return True
        return all(np.array_equal(a, b) for a, b in zip((self.loc, self.scale, self.low, self.high),
                                                         (other.loc, other.scale, other.low, other.high)))

    def __repr__(self) -> str:
        return f"StimulusSpace({self.kind!r}" + ("" if self.kind == "znorm" else f", channels={self.channels}") + ")"


class SpaceDecoder:
    """Any decoder whose output is standardised (z-normalised per series, or in a space's standard units),
    mapped into a ``data`` stimulus space: ``space.from_standard(decoder(codes))``.

    For a z-normalising decoder every stimulus then has the channel's pooled mean and spread; the PCA
    decoder fitted by ``fit_data_decoder`` takes the space itself instead, so it keeps the data's
    variation in level and amplitude.
    """

    def __init__(self, decoder, space: StimulusSpace):
        self.decoder, self.space = decoder, space
        self.latent_dim = int(decoder.latent_dim)
        self.length = getattr(decoder, "length", None)
        self.channels = getattr(decoder, "channels", None)
        self.name = getattr(decoder, "name", type(decoder).__name__)
        self.normalize = False  # stimuli are in data units, not z-normalised
        self.has_encoder = callable(getattr(decoder, "encode", None)) and getattr(decoder, "has_encoder", True)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        return self.space.from_standard(self.decoder(codes)).astype(np.float32)

    def encode(self, series: np.ndarray) -> np.ndarray:
        if not self.has_encoder:
            raise UserError(f"decoder {self.name} has no encoder; use encode(..., method='opt')")
        return self.decoder.encode(self.space.to_standard(series))

    def describe(self) -> dict:
        inner = self.decoder.describe() if callable(getattr(self.decoder, "describe", None)) else {"name": self.name}
        return {**inner, "normalize": False, "space": self.space.describe()}


__all__ = ["StimulusSpace", "SpaceDecoder", "MARGIN"]
