"""Evaluation of candidate codes: decoder -> series -> constraints + features, feasibility decided on
the mean over repeats, and the archive of accepted samples."""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from .constraints import ConstraintTargets, range_stats
from .features import Features


class Archive:
    """The accepted samples, row blocks per field, concatenated on demand."""

    def __init__(self):
        self.parts: dict[str, list] = {}
        self.size = 0

    def add(self, **rows) -> None:
        k = len(next(iter(rows.values())))
        if k == 0:
            return
        for name, v in rows.items():
            self.parts.setdefault(name, []).append(v)
        self.size += k

    def get(self, name: str):
        parts = [p for p in self.parts.get(name, []) if p is not None]
        return np.concatenate(parts) if parts else None


class Evaluator:
    """decoder -> series -> constraints + features; decides feasibility; fills the archive."""

    def __init__(self, decoder, targets: ConstraintTargets, features: Features, repeats: int, min_confidence: float):
        self.decoder = decoder
        self.targets = targets
        self.features = features
        self.repeats = repeats
        self.min_confidence = min_confidence
        self.archive = Archive()
        self.n_evaluated = 0

    def __call__(self, codes: np.ndarray) -> dict:
        codes = np.asarray(codes, dtype=np.float64)
        series = np.asarray(self.decoder(codes))
        if series.shape[0] != len(codes):
            raise UserError(f"the decoder returned {series.shape[0]} series for {len(codes)} codes")
        observed, clean = self.targets.evaluate(series, self.repeats)
        st = range_stats(observed, self.targets.lo, self.targets.hi)
        mean = st["mean"]
        viol = self.targets.violation(mean)
        feasible = np.isfinite(viol) & (viol == 0.0)
        if self.min_confidence > 0:
            feasible &= np.nan_to_num(st["p_in_range"], nan=0.0) >= self.min_confidence
        feats = self.features(series, codes)
        self.n_evaluated += len(codes)
        ev = {"codes": codes, "series": series, "observed": observed, "clean": clean, "features": feats,
              "violation": viol, "feasible": feasible, **st}
        return ev

    def accept(self, ev: dict, limit: int) -> int:
        """Archive the feasible rows of ``ev`` (at most ``limit``); returns how many."""
        idx = np.flatnonzero(ev["feasible"])[:max(0, limit)]
        if len(idx) == 0:
            return 0
        self.archive.add(**{k: (None if ev[k] is None else ev[k][idx])
                            for k in ("codes", "series", "observed", "clean", "features", "mean",
                                      "in_range_fraction", "ci_low", "ci_high", "p_in_range")})
        return len(idx)
