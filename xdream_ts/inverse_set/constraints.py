"""Constraints of an inverse set (z1 <= activation <= z2 of a target), parsed from the accepted forms,
and their evaluation: the activations of a batch of series (numpy: what is accepted; torch: what
proposes), presentations counted, and per-sample range statistics under noise."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from numbers import Real

import numpy as np

from ..errors import UserError


@dataclass
class Constraint:
    """z1 <= activation <= z2 for column ``target`` of ``scorer``'s output (None: the main scorer)."""

    z1: float
    z2: float
    target: int = 0
    scorer: object = None
    name: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "target": self.target, "z1": self.z1, "z2": self.z2,
                "scorer": describe_component(self.scorer) if self.scorer is not None else None}

    @property
    def width(self) -> float:
        return self.z2 - self.z1


def is_scalar(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def is_scorer(x) -> bool:
    return callable(x) and not isinstance(x, (str, bytes)) and not is_scalar(x)


def parse_constraints(constraints, scorer=None) -> list[Constraint]:
    """Normalise the accepted forms to a list of :class:`Constraint`.

    One constraint is ``(z1, z2)`` (the scorer's first target), ``(target, z1, z2)`` with ``target`` a
    column index of a multi-target scorer's (n, k) output, one of its ``target_names``, or another
    scorer (its first output), or ``(scorer, column, z1, z2)``. Several constraints at once sample the
    *intersection* of inverse sets (Hada & Carreira-Perpinan's Fig. 4 and 5): units of one layer (one
    scorer with k targets, each column its own range) or of different layers / models (one scorer per
    constraint).
    """
    if isinstance(constraints, Constraint):
        items = [constraints]
    elif isinstance(constraints, (tuple, list)) and constraints and (
            all(is_scalar(c) for c in constraints) or is_scorer(constraints[0]) or isinstance(constraints[0], str)):
        items = [constraints]  # one constraint: (z1, z2), (target, z1, z2) or (scorer, col, z1, z2)
    elif isinstance(constraints, (tuple, list)):
        items = list(constraints)
    else:
        raise UserError(f"constraints {constraints!r}: give (z1, z2), (target, z1, z2) or a list of them")
    if not items:
        raise UserError("no constraint given: give at least one range (z1, z2)")
    out = []
    names = list(getattr(scorer, "target_names", None) or [])
    for c in items:
        if isinstance(c, Constraint):
            out.append(c)
            continue
        if not isinstance(c, (tuple, list)) or len(c) not in (2, 3, 4):
            raise UserError(f"constraint {c!r}: write (z1, z2), (target, z1, z2) or (scorer, column, z1, z2)")
        *head, z1, z2 = c
        if not (is_scalar(z1) and is_scalar(z2)) or not (math.isfinite(z1) and math.isfinite(z2)):
            raise UserError(f"constraint {c!r}: the range ends must be finite numbers (z1, z2)")
        if not z1 < z2:
            raise UserError(f"constraint {c!r}: z1 = {z1} must be below z2 = {z2} (an empty or inverted range)")
        sc, target = None, 0
        if len(head) == 1:
            t = head[0]
            if is_scorer(t):
                sc = t
            elif isinstance(t, str):
                if t not in names:
                    raise UserError(f"constraint target {t!r} is not one of the scorer's targets "
                                    f"{names or '(it names none)'}: use a column index or one of those names")
                target = names.index(t)
            elif isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 0:
                target = int(t)
            else:
                raise UserError(f"constraint {c!r}: the target must be a column index >= 0, a target name or a scorer")
        elif len(head) == 2:
            sc, target = head
            if not is_scorer(sc) or not isinstance(target, (int, np.integer)) or target < 0:
                raise UserError(f"constraint {c!r}: write (scorer, column >= 0, z1, z2)")
            target = int(target)
        if sc is None and scorer is None:
            raise UserError(f"constraint {c!r} names no scorer and no scorer was given: pass scorer=, "
                            "or write (scorer, z1, z2)")
        out.append(Constraint(float(z1), float(z2), target, sc, ""))
    for i, c in enumerate(out):
        if not c.name:
            src = c.scorer if c.scorer is not None else scorer
            tn = list(getattr(src, "target_names", None) or [])
            base = tn[c.target] if c.target < len(tn) else f"target{c.target}"
            c.name = base if c.scorer is None else f"c{i}:{base}"
    return out


def describe_component(obj) -> dict:
    """A component's description for the stored config (a failing ``describe()`` costs no samples)."""
    if hasattr(obj, "describe"):
        try:
            return obj.describe()
        except Exception:  # a describe() that fails must not cost the samples
            pass
    return {"name": getattr(obj, "name", type(obj).__name__), "class": type(obj).__name__}


class ConstraintTargets:
    """The constraints' activations for a batch of series, counting presentations."""

    def __init__(self, scorer, constraints: list[Constraint]):
        self.constraints = constraints
        self.scorers: list = []
        self.cols: list[tuple[int, int]] = []  # per constraint: (scorer index, column)
        for c in constraints:
            sc = c.scorer if c.scorer is not None else scorer
            for i, s in enumerate(self.scorers):
                if s is sc:
                    break
            else:
                self.scorers.append(sc)
                i = len(self.scorers) - 1
            self.cols.append((i, c.target))
        self.lo = np.array([c.z1 for c in constraints])
        self.hi = np.array([c.z2 for c in constraints])
        self.width = self.hi - self.lo
        self.noisy = any(bool(getattr(s, "noisy", False)) or hasattr(s, "add_noise") for s in self.scorers)
        self.has_clean = all(hasattr(s, "clean") for s in self.scorers)
        self.differentiable = all(hasattr(s, "torch_forward") for s in self.scorers)
        self.presentations = 0
        self._checked = False

    def _columns(self, scores: np.ndarray, si: int, n: int) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[0] != n:
            raise UserError(f"the scorer returned scores of shape {np.shape(scores)} for {n} series: "
                            "it must return (n,) or (n, k)")
        if np.isinf(s).any():
            raise UserError("the scorer returned inf: fix the target (NaN, not inf, marks a missing response)")
        if not self._checked:
            self._check_columns(si, s.shape[1])
        return s

    def _check_columns(self, si: int, k: int) -> None:
        for (i, col), c in zip(self.cols, self.constraints):
            if i == si and col >= k:
                raise UserError(f"constraint {c.name}: column {col} is out of range, the scorer returns "
                                f"{k} target(s); use 0..{k - 1}")

    def evaluate(self, series: np.ndarray, repeats: int) -> tuple[np.ndarray, np.ndarray | None]:
        """observed (n, R, m) and clean (n, m) or None; every repeat of every series is a presentation."""
        n = len(series)
        per_scorer_obs, per_scorer_clean = [], []
        for si, sc in enumerate(self.scorers):
            if hasattr(sc, "add_noise"):  # as the loop does: one clean pass, noise drawn per repeat
                clean = self._columns(sc.clean(series), si, n)
                obs = np.asarray(sc.add_noise(np.concatenate([clean] * repeats)), dtype=np.float64)
                obs = obs[:, None] if obs.ndim == 1 else obs
            else:
                obs = self._columns(sc(np.concatenate([series] * repeats)), si, n * repeats)
                clean = self._columns(sc.clean(series), si, n) if hasattr(sc, "clean") else None
            per_scorer_obs.append(obs.reshape(repeats, n, -1).transpose(1, 0, 2))  # (n, R, k)
            per_scorer_clean.append(clean)
        self._checked = True
        observed = np.stack([per_scorer_obs[i][:, :, col] for i, col in self.cols], axis=-1)
        clean = None
        if self.has_clean:
            clean = np.stack([per_scorer_clean[i][:, col] for i, col in self.cols], axis=-1)
        self.presentations += n * repeats
        return observed, clean

    def violation(self, mean: np.ndarray) -> np.ndarray:
        """Sum over constraints of the distance to the range, in range widths (0: in range; NaN: missing)."""
        v = np.maximum(0.0, np.maximum(self.lo - mean, mean - self.hi)) / self.width
        return v.sum(axis=-1)

    def torch_activations(self, x):
        """(n, m) tensor of the constraints' activations, differentiable."""
        import torch
        outs = []
        for si, sc in enumerate(self.scorers):
            a = sc.torch_forward(x)
            a = a[:, None] if a.dim() == 1 else a
            self._check_columns(si, a.shape[1])
            outs.append(a)
        self.presentations += int(x.shape[0])
        return torch.stack([outs[i][:, col] for i, col in self.cols], dim=1)


def range_stats(observed: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    """Per sample: mean, in-range fraction of repeats, 95 % t-interval, probability of being in range.

    ``observed`` (n, R, m). A sample is feasible when the mean of its repeats lies in range;
    ``in_range_fraction`` is the fraction of its repeats in range on every constraint, ``ci_low`` /
    ``ci_high`` a 95 % t-interval of each mean, and ``p_in_range`` the probability that its true
    activation lies in range, P(z1 <= mu <= z2) with mu ~ mean + se * t(R - 1) (flat prior), the
    product over constraints (noise taken independent across targets). With one repeat there is no
    noise estimate: the interval and ``p_in_range`` are NaN.
    """
    with warnings.catch_warnings():  # all-NaN rows are missing responses, not errors
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(observed, axis=1)
        count = np.sum(np.isfinite(observed), axis=1)
        sd = np.nanstd(observed, axis=1, ddof=1) if observed.shape[1] > 1 else np.full(mean.shape, np.nan)
    inside = (observed >= lo) & (observed <= hi)
    frac = np.mean(np.all(inside, axis=2), axis=1)
    n, m = mean.shape
    ci_lo, ci_hi, p = np.full((n, m), np.nan), np.full((n, m), np.nan), np.full(n, np.nan)
    ok = count >= 2
    if ok.any():
        from scipy import stats
        dof = np.maximum(count - 1, 1)
        se = sd / np.sqrt(np.maximum(count, 1))
        half = stats.t.ppf(0.975, dof) * se
        ci_lo = np.where(ok, mean - half, np.nan)
        ci_hi = np.where(ok, mean + half, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            # a noiseless repeat (se = 0): the mean is the truth, in range or not
            p_hi = np.where(se > 0, stats.t.cdf((hi - mean) / se, dof), (mean <= hi).astype(float))
            p_lo = np.where(se > 0, stats.t.cdf((lo - mean) / se, dof), (mean < lo).astype(float))
        pj = np.clip(p_hi - p_lo, 0.0, 1.0)
        p = np.where(ok.all(axis=1), np.prod(pj, axis=1), np.nan)
    return {"mean": mean, "in_range_fraction": frac, "ci_low": ci_lo, "ci_high": ci_hi, "p_in_range": p}
