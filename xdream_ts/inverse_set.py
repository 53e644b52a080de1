"""Inverse sets: many diverse series whose activation lies in a range (Hada & Carreira-Perpinan 2020).

The best stimulus says what drives a unit hardest; the *inverse set* of the range [z1, z2] says what
else the unit responds to at that level: every series x with z1 <= a(x) <= z2. It is a large,
high-dimensional set; we sample it with n series that are as diverse as possible, so that a person
looking at them sees what they share (what the unit encodes) and what they do not (what it ignores).

    inv = inverse_set(decoder, scorer, (0.4 * amax, 0.6 * amax), n=500, out="unit17.zarr")
    inv.series, inv.activations, inv.diversity, inv.p_in_range

Constraints. One constraint is ``(z1, z2)`` (the scorer's first target), ``(target, z1, z2)`` with
``target`` a column index of a multi-target scorer's (n, k) output, one of its ``target_names``, or
another scorer (its first output), or ``(scorer, column, z1, z2)``. Several constraints at once sample
the *intersection* of inverse sets (the paper's Fig. 4 and 5): units of one layer (one scorer with k
targets, each column its own range) or of different layers / models (one scorer per constraint).

Two methods, same result type:

``gradient`` (the paper's): needs ``scorer.torch_forward(x) -> (n, k)`` and a differentiable decoder
    (``decoder.torch_module()``, or the identity / basis / PCA decoders, which are re-written in torch
    here). (1) K seed codes by an augmented Lagrangian: maximise their mean pairwise distance in feature
    space subject to z1 <= a(x_k) <= z2, each inequality pair handled by a slack variable s in [z1, z2]
    with a(x) = s (s eliminated in closed form), multipliers lambda and penalty mu updated after every
    inner minimisation (Adam steps on the codes), stopping as soon as all K are feasible. A seed that
    cannot get there (the unit silent for it, no progress, or still far once half the seeds are in
    range) is re-drawn near a feasible one. (2) The fast sampler: single gradient
    steps of the same objective (novelty against the accepted set + the constraint terms with the
    final multipliers) from randomly chosen accepted samples; every step that lands in range is kept,
    until n samples. A step is the normalised gradient plus an equal-sized random part (without it,
    two steps from one start would coincide), with a length adapted to keep 20-60 % of steps feasible.
``free`` (any scorer, noisy included): the project's optimizer (``make_optimizer``, genetic by
    default) first drives a population into range (maximising minus the range violation); then a
    population method on fitness = -violation + beta * novelty, novelty being the mean feature-space
    distance to the k nearest archived samples: parents by binary tournament on that fitness among the
    archive and the last generation, children by a spherical Gaussian mutation (code norm kept, step
    size adapted to a 25 % feasibility rate) or a blend of two parents; a share of each generation,
    in proportion to its success, is drawn afresh from the code prior (independent draws are the most
    diverse there are when the range is easy to hit). Every feasible sample is archived, until n.

Every returned sample was scored by ``scorer`` itself (numpy, exactly the float32 series returned),
and its mean over ``repeats`` presentations lies in range; the gradient path's torch activations only
propose. Presentations are counted as the loop counts them (each repeat of each series; a series
shown once counts once however many scorers record it); the gradient path also counts each series
passed through ``torch_forward``.

Noisy targets: a sample is feasible when the mean of its repeats lies in range. For each accepted
sample we report ``in_range_fraction`` (fraction of its repeats in range on every constraint),
a 95 % t-interval of each mean (``ci_low``/``ci_high``) and ``p_in_range``: the probability that its
true activation lies in range, P(z1 <= mu <= z2) with mu ~ mean + se * t(R - 1) (flat prior), the
product over constraints (noise taken independent across targets). With one repeat there is no
noise estimate and ``p_in_range`` is NaN. ``min_confidence`` accepts only samples with
p_in_range >= it. When the scorer is simulated (``clean``), the clean activations are stored too, so
the estimate can be checked.

Diversity is measured as in the paper: the mean pairwise Euclidean distance of feature vectors
(``diversity``). ``feature_fn``: ``'series'`` (default: the series themselves), ``'codes'``, or a
callable series (n, ...) -> (n, f) such as an OnnxScorer over every unit of a layer (``'gap'`` of the
shipped model); a feature callable with ``torch_forward`` is used by the gradient path too, a plain one
only for the archive and the measurement (the gradient path then spreads the samples in series space).
``baseline_from_run`` collects the in-range series a plain optimizer run visited, for comparison.

Stored (``out=``): a zarr v3 group (format ``xdream_ts.inverse_set/1``) with arrays series, codes,
activations (n, m: one column per constraint, mean over repeats), observed (n, R, m), clean_activations
(when known), features, p_in_range, in_range_fraction, ci_low, ci_high, and attributes method,
constraints, presentations, diversity, config, versions; plus ``gallery.png`` inside the folder.
No pickle anywhere. ``load_inverse_set(path)`` reads it back.

torch, scipy, matplotlib and zarr are imported inside functions: ``import xdream_ts`` stays light.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np

from .errors import UserError, require_torch

FORMAT = "xdream_ts.inverse_set/1"
METHODS = ("auto", "gradient", "free")


# ---------------------------------------------------------------------------------------------------
# Constraints
# ---------------------------------------------------------------------------------------------------
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
                "scorer": _describe(self.scorer) if self.scorer is not None else None}

    @property
    def width(self) -> float:
        return self.z2 - self.z1


def _is_scalar(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _is_scorer(x) -> bool:
    return callable(x) and not isinstance(x, (str, bytes)) and not _is_scalar(x)


def parse_constraints(constraints, scorer=None) -> list[Constraint]:
    """Normalise the accepted forms (see the module docstring) to a list of :class:`Constraint`."""
    if isinstance(constraints, Constraint):
        items = [constraints]
    elif isinstance(constraints, (tuple, list)) and constraints and (
            all(_is_scalar(c) for c in constraints) or _is_scorer(constraints[0]) or isinstance(constraints[0], str)):
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
        if not (_is_scalar(z1) and _is_scalar(z2)) or not (math.isfinite(z1) and math.isfinite(z2)):
            raise UserError(f"constraint {c!r}: the range ends must be finite numbers (z1, z2)")
        if not z1 < z2:
            raise UserError(f"constraint {c!r}: z1 = {z1} must be below z2 = {z2} (an empty or inverted range)")
        sc, target = None, 0
        if len(head) == 1:
            t = head[0]
            if _is_scorer(t):
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
            if not _is_scorer(sc) or not isinstance(target, (int, np.integer)) or target < 0:
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


def _describe(obj) -> dict:
    if hasattr(obj, "describe"):
        try:
            return obj.describe()
        except Exception:  # a describe() that fails must not cost the samples
            pass
    return {"name": getattr(obj, "name", type(obj).__name__), "class": type(obj).__name__}


# ---------------------------------------------------------------------------------------------------
# Evaluating constraints (numpy: what is accepted; torch: what proposes)
# ---------------------------------------------------------------------------------------------------
class _Targets:
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


def _stats(observed: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    """Per sample: mean, in-range fraction of repeats, 95 % t-interval, probability of being in range."""
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


# ---------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------
class _Features:
    """Feature vectors for novelty and diversity: 'series', 'codes' or a callable series -> (n, f)."""

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
        d = _pairwise(f[lo:lo + 1024], f)
        total += d.sum()
    return float(total / (n * (n - 1)))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
    dmin = _pairwise(f[chosen], f)[0]
    for _ in range(k - 1):
        j = int(np.argmax(dmin))
        chosen.append(j)
        dmin = np.minimum(dmin, _pairwise(f[j:j + 1], f)[0])
    return np.array(chosen)


def _knn_mean(dist: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k smallest entries of each row (the novelty of each row's sample)."""
    k = max(1, min(k, dist.shape[1]))
    part = np.partition(dist, k - 1, axis=1)[:, :k]
    return part.mean(axis=1)


# ---------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------
@dataclass
class InverseSet:
    """n series whose activations lie in the constraints' ranges, with everything needed to judge them."""

    series: np.ndarray             # (n, [C,] L) float32: exactly what was scored
    codes: np.ndarray              # (n, d)
    activations: np.ndarray        # (n, m): mean over repeats, one column per constraint
    observed: np.ndarray           # (n, R, m): every presentation
    features: np.ndarray           # (n, f)
    p_in_range: np.ndarray         # (n,): P(true activation in range), NaN with one repeat
    in_range_fraction: np.ndarray  # (n,): fraction of repeats in range on every constraint
    ci_low: np.ndarray             # (n, m): 95 % t-interval of the mean (NaN with one repeat)
    ci_high: np.ndarray
    constraints: list
    method: str
    presentations: int
    n_requested: int
    clean_activations: np.ndarray | None = None
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return int(len(self.series))

    @property
    def diversity(self) -> float:
        return diversity(self.features)

    @property
    def truly_in_range(self) -> np.ndarray | None:
        """(n,) bool from the clean activations (simulated targets only)."""
        if self.clean_activations is None:
            return None
        lo = np.array([c["z1"] if isinstance(c, dict) else c.z1 for c in self.constraints])
        hi = np.array([c["z2"] if isinstance(c, dict) else c.z2 for c in self.constraints])
        return np.all((self.clean_activations >= lo) & (self.clean_activations <= hi), axis=1)

    def summary(self) -> dict:
        cons = [c if isinstance(c, dict) else {"name": c.name, "z1": c.z1, "z2": c.z2} for c in self.constraints]
        s = {"path": str(self.path) if self.path else None, "method": self.method, "n": len(self),
             "n_requested": self.n_requested, "presentations": int(self.presentations),
             "diversity": self.diversity if len(self) > 1 else None, "features": self.config.get("features"),
             "constraints": [{"name": c.get("name"), "z1": c["z1"], "z2": c["z2"]} for c in cons],
             "repeats": int(self.observed.shape[1]) if self.observed.ndim == 3 else None}
        if len(self):
            s["activation_min"] = self.activations.min(axis=0).tolist()
            s["activation_max"] = self.activations.max(axis=0).tolist()
            if np.isfinite(self.p_in_range).any():
                s["p_in_range_mean"] = float(np.nanmean(self.p_in_range))
                s["p_in_range_min"] = float(np.nanmin(self.p_in_range))
            s["in_range_fraction_mean"] = float(np.mean(self.in_range_fraction))
            truly = self.truly_in_range
            if truly is not None:
                s["truly_in_range"] = float(np.mean(truly))
        return s

    # -- storage --------------------------------------------------------------------------------------
    def save(self, path, gallery: bool = True) -> Path:
        """Write the zarr v3 group (and gallery.png inside it); refuses to overwrite."""
        import zarr
        path = Path(path)
        if path.exists():
            raise UserError(f"{path} already exists: choose another --out (an inverse set is never overwritten)")
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        arrays = {"series": self.series.astype(np.float32), "codes": self.codes.astype(np.float64),
                  "activations": self.activations, "observed": self.observed, "features": self.features.astype(np.float32),
                  "p_in_range": self.p_in_range, "in_range_fraction": self.in_range_fraction,
                  "ci_low": self.ci_low, "ci_high": self.ci_high}
        if self.clean_activations is not None:
            arrays["clean_activations"] = self.clean_activations
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            arr = group.create_array(name, shape=a.shape, dtype=a.dtype, chunks=tuple(max(1, d) for d in a.shape),
                                     fill_value=np.nan if a.dtype.kind == "f" else 0)
            if a.size:
                arr[...] = a
        cons = [c if isinstance(c, dict) else c.describe() for c in self.constraints]
        group.attrs.update(_jsonable({"format": FORMAT, "method": self.method, "constraints": cons,
                                      "presentations": int(self.presentations), "n": len(self),
                                      "n_requested": int(self.n_requested),
                                      "diversity": self.diversity if len(self) > 1 else None,
                                      "config": self.config, "info": self.info,
                                      "gallery": "gallery.png" if gallery and len(self) else None}))
        self.path = path
        if gallery and len(self):
            plot_gallery(self, path / "gallery.png")
        return path


def _jsonable(obj):
    """Attributes must be plain JSON: numpy scalars -> Python, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def load_inverse_set(path) -> InverseSet:
    """Read an inverse set written by :func:`inverse_set` (``out=``) or ``InverseSet.save``."""
    import zarr
    path = Path(path)
    if not path.exists():
        raise UserError(f"no inverse set at {path}: check the path (the folder `xdream-ts inverse-set --out` wrote)")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:
        raise UserError(f"{path} is not a readable zarr group ({type(exc).__name__}): point to an inverse-set folder") from None
    if attrs.get("format") != FORMAT:
        raise UserError(f"{path} is not an inverse set (format {attrs.get('format')!r}, expected {FORMAT!r})")

    def read(name):
        return np.asarray(group[name][...]) if name in group else None

    return InverseSet(series=read("series"), codes=read("codes"), activations=read("activations"),
                      observed=read("observed"), features=read("features").astype(np.float64),
                      p_in_range=read("p_in_range"), in_range_fraction=read("in_range_fraction"),
                      ci_low=read("ci_low"), ci_high=read("ci_high"), constraints=attrs["constraints"],
                      method=attrs["method"], presentations=int(attrs["presentations"]),
                      n_requested=int(attrs["n_requested"]), clean_activations=read("clean_activations"),
                      config=attrs.get("config", {}), info=attrs.get("info", {}), path=path)


def plot_gallery(inv: InverseSet, path, k: int = 12, seed: int = 0) -> Path:
    """A PNG: k samples chosen farthest-first in feature space (so the page shows the set's range), the
    activation histogram of every constraint with its range, and a 2-D PCA map of the features."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(inv)
    idx = select_diverse(inv.features, min(k, n), seed=seed)
    cols = 4
    rows = max(1, math.ceil(len(idx) / cols))
    fig = plt.figure(figsize=(3.2 * cols, 1.9 * rows + 2.8))
    gs = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.5])
    for j, i in enumerate(idx):
        ax = fig.add_subplot(gs[j // cols, j % cols])
        s = inv.series[i]
        for ch in (s if s.ndim == 2 else s[None]):
            ax.plot(ch, lw=0.8)
        ax.set_title(" ".join(f"{a:.3g}" for a in inv.activations[i]), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    cons = [c if isinstance(c, dict) else {"name": c.name, "z1": c.z1, "z2": c.z2} for c in inv.constraints]
    ax = fig.add_subplot(gs[rows, : cols // 2])
    for j, c in enumerate(cons):
        color = f"C{j}"
        ax.hist(inv.activations[:, j], bins=30, alpha=0.6, color=color, label=c.get("name") or f"constraint {j}")
        ax.axvline(c["z1"], color=color, ls="--", lw=1)
        ax.axvline(c["z2"], color=color, ls="--", lw=1)
    ax.set_xlabel("activation (mean over repeats); dashed: range")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(gs[rows, cols // 2:])
    f = inv.features - inv.features.mean(axis=0)
    if n >= 3:
        _, _, vt = np.linalg.svd(f, full_matrices=False)
        xy = f @ vt[:2].T
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=inv.activations[:, 0], s=8, cmap="viridis")
        ax.scatter(xy[idx, 0], xy[idx, 1], facecolors="none", edgecolors="r", s=40, lw=0.8)
        fig.colorbar(sc, ax=ax, label=cons[0].get("name") or "activation")
    ax.set_title(f"features ({inv.config.get('features', '?')}), PCA; red: shown above", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    div = inv.diversity if n > 1 else float("nan")
    fig.suptitle(f"inverse set: {n} series ({inv.method}), {inv.presentations} presentations, "
                 f"diversity {div:.3g}; titles: activations", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# Archive of accepted samples
# ---------------------------------------------------------------------------------------------------
class _Archive:
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


class _Evaluator:
    """decoder -> series -> constraints + features; decides feasibility; fills the archive."""

    def __init__(self, decoder, targets: _Targets, features: _Features, repeats: int, min_confidence: float):
        self.decoder = decoder
        self.targets = targets
        self.features = features
        self.repeats = repeats
        self.min_confidence = min_confidence
        self.archive = _Archive()
        self.n_evaluated = 0

    def __call__(self, codes: np.ndarray) -> dict:
        codes = np.asarray(codes, dtype=np.float64)
        series = np.asarray(self.decoder(codes))
        if series.shape[0] != len(codes):
            raise UserError(f"the decoder returned {series.shape[0]} series for {len(codes)} codes")
        observed, clean = self.targets.evaluate(series, self.repeats)
        st = _stats(observed, self.targets.lo, self.targets.hi)
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


# ---------------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------------
def inverse_set(decoder, scorer, constraints, n: int = 500, method: str = "auto", feature_fn=None,
                budget: int | None = None, repeats: int = 1, seed: int | None = 0, out=None,
                progress: bool = True, *, min_confidence: float = 0.0, optimizer: str = "genetic",
                n_seeds: int = 16, beta: float = 1.0, k_nearest: int = 5, gallery: bool = True,
                callback=None) -> InverseSet:
    """Sample ``n`` diverse series whose activations lie in the ranges of ``constraints``.

    decoder      Decoder (codes -> series) or a spec ('identity', 'basis', 'default', ...)
    scorer       the target (series -> (n,) or (n, k)); None when every constraint names its own scorer
    constraints  (z1, z2) | (target, z1, z2) | (scorer, column, z1, z2) | a list of them (an intersection)
    n            samples wanted
    method       'gradient' (needs scorer.torch_forward and a differentiable decoder), 'free' (any
                 scorer, noisy included) or 'auto' (gradient when possible and the target is noiseless)
    feature_fn   'series' (default), 'codes' or a callable series -> (n, f): where diversity is measured
    budget       most presentations to spend (default: 50 n repeats, at least 5000 repeats); the
                 result holds fewer than n samples when it runs out
    repeats      presentations of each series; feasibility is judged on their mean
    out          zarr folder to write (with gallery.png inside), or None
    min_confidence   accept only samples with p_in_range >= this (needs repeats >= 2)
    optimizer    the project optimizer that first reaches the range (free path), default 'genetic'
    n_seeds      K, the seeds of the gradient path's augmented Lagrangian
    beta         weight of diversity/novelty against the constraint terms
    k_nearest    neighbours in the novelty term
    callback     called as callback(n_found, presentations) after every batch
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}: use auto, gradient or free")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"n must be a positive integer (samples wanted), got {n!r}")
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise UserError(f"repeats must be a positive integer, got {repeats!r}")
    if budget is not None and (not isinstance(budget, (int, np.integer)) or budget < repeats):
        raise UserError(f"budget must be an integer of at least one presentation per repeat ({repeats}), got {budget!r}")
    if not 0.0 <= float(min_confidence) < 1.0:
        raise UserError(f"min_confidence must be in [0, 1), got {min_confidence}")
    if min_confidence > 0 and repeats < 2:
        raise UserError("min_confidence needs repeats >= 2: one presentation gives no noise estimate")
    if out is not None and Path(out).exists():  # before the work, not after it
        raise UserError(f"{out} already exists: choose another out (an inverse set is never overwritten)")
    n, repeats = int(n), int(repeats)
    cons = parse_constraints(constraints, scorer)
    main = scorer if scorer is not None else cons[0].scorer
    if isinstance(decoder, str):
        from .decoders import make_decoder
        decoder = make_decoder(decoder, length=getattr(main, "length", None), channels=getattr(main, "channels", None))
    targets = _Targets(scorer, cons)
    features = _Features(feature_fn)
    budget = int(budget) if budget is not None else max(50 * n, 5000) * repeats

    if method == "gradient":  # torch is an extra: say how to get it before anything is built
        require_torch("the gradient inverse-set sampler (method 'gradient')")
    tdec = None
    why_not = None
    if method in ("auto", "gradient"):
        if targets.noisy:
            why_not = "the target is noisy (gradients of one noisy presentation mislead); use method='free'"
        elif not targets.differentiable:
            why_not = ("the scorer has no torch_forward (an ONNX or remote target); use method='free', or a "
                       "TorchScorer (xdream_ts.adapters.torch) for the same model")
        else:
            tdec, why_not = _torch_decoder(decoder)
        if method == "gradient" and why_not:
            raise UserError(f"method 'gradient' is not possible: {why_not}")
    use = "gradient" if (method == "gradient" or (method == "auto" and not why_not)) else "free"

    ev = _Evaluator(decoder, targets, features, repeats, float(min_confidence))
    rng = np.random.default_rng(seed)
    from .progress import progress_bar
    pbar = progress_bar(total=n, unit="sample", desc=f"inverse set ({use})", enabled=progress)

    def report():
        pbar.update(ev.archive.size - pbar.n)  # the archive's size is the position: step to it
        pbar.set_postfix_str(f"{targets.presentations} pres")
        if callback is not None:
            callback(ev.archive.size, targets.presentations)

    try:
        if use == "gradient":
            info = _gradient(ev, tdec, n, budget, rng, n_seeds=int(n_seeds), beta=float(beta),
                             k_nearest=int(k_nearest), report=report)
        else:
            info = _free(ev, n, budget, rng, seed, optimizer=optimizer, beta=float(beta),
                         k_nearest=int(k_nearest), report=report)
    finally:
        pbar.close()

    a = ev.archive
    k = a.size
    d = int(decoder.latent_dim)
    empty_series = np.zeros((0, *np.shape(decoder(np.zeros((1, d))))[1:]), np.float32) if k == 0 else None
    m = len(cons)
    config = {"decoder": _describe(decoder), "scorer": _describe(scorer) if scorer is not None else None,
              "features": features.name, "diversity_optimised_in": features.optimised_in if use == "gradient" else features.name,
              "method_requested": method, "n": n, "budget": budget, "repeats": repeats, "seed": seed,
              "min_confidence": float(min_confidence), "optimizer": optimizer if use == "free" else None,
              "n_seeds": int(n_seeds) if use == "gradient" else None, "beta": float(beta),
              "k_nearest": int(k_nearest), "versions": _versions()}
    info.update({"n_evaluated": ev.n_evaluated, "wall_seconds": round(time.perf_counter() - t0, 3),
                 "complete": k >= n})
    if why_not and method == "auto":
        info["why_not_gradient"] = why_not
    result = InverseSet(
        series=a.get("series") if k else empty_series,
        codes=a.get("codes") if k else np.zeros((0, d)),
        activations=a.get("mean") if k else np.zeros((0, m)),
        observed=a.get("observed") if k else np.zeros((0, repeats, m)),
        features=a.get("features") if k else np.zeros((0, 0)),
        p_in_range=a.get("p_in_range") if k else np.zeros(0),
        in_range_fraction=a.get("in_range_fraction") if k else np.zeros(0),
        ci_low=a.get("ci_low") if k else np.zeros((0, m)), ci_high=a.get("ci_high") if k else np.zeros((0, m)),
        constraints=cons, method=use, presentations=targets.presentations, n_requested=n,
        clean_activations=(a.get("clean") if k else np.zeros((0, m))) if targets.has_clean else None,
        config=config, info=info)
    if k < n:
        warnings.warn(f"inverse set: found {k} of {n} series in range within {targets.presentations} presentations "
                      f"(budget {budget}); raise the budget or widen the range", RuntimeWarning, stacklevel=2)
    if out is not None:
        result.save(out, gallery=gallery)
    return result


def _versions() -> dict:
    from .loop import _versions as loop_versions
    return loop_versions()


# ---------------------------------------------------------------------------------------------------
# Gradient-free path
# ---------------------------------------------------------------------------------------------------
#: Settings of the gradient-free path: the feasibility rate the mutation step size aims at, and how
#: many feasible samples (as a fraction of the population) the reach optimizer finds before the spread.
FREE_TUNING = {"target_rate": 0.25, "switch": 0.25}


def _sphere_step(parents: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian step of relative size sigma, the code norm kept: a random walk must not drift out of
    the decoder's typical set (for z-normalised decoders the norm is irrelevant anyway)."""
    norm = np.linalg.norm(parents, axis=1, keepdims=True)
    rms = np.maximum(norm / math.sqrt(parents.shape[1]), 1e-12)
    child = parents + sigma * rms * rng.standard_normal(parents.shape)
    return child / np.maximum(np.linalg.norm(child, axis=1, keepdims=True), 1e-12) * norm


def _free(ev: _Evaluator, n: int, budget: int, rng: np.random.Generator, seed, optimizer: str, beta: float,
          k_nearest: int, report) -> dict:
    from .optimizers import make_optimizer

    R = ev.repeats
    dim = int(ev.decoder.latent_dim)
    reach = make_optimizer(optimizer, dim, seed=seed, noisy=ev.targets.noisy)
    a = ev.archive
    pop_size = None
    n_switch = None
    scale = None  # feature-distance unit: mean pairwise distance of the first generation (prior samples)
    sigma, target_rate = 0.3, FREE_TUNING["target_rate"]
    r_prior, r_mut, from_prior = 0.0, target_rate, 0  # recent feasible rates of prior draws and mutations
    last = None  # the previous generation (codes, features, violation) for parent selection
    gens = {"reach": 0, "spread": 0}
    sigmas = []
    while a.size < n and ev.targets.presentations + R <= budget:
        room = (budget - ev.targets.presentations) // R
        if n_switch is None or a.size < n_switch:
            # Reach: the project's optimizer maximises -violation (all in-range codes tie at 0, so
            # selection among them is uniform and the population drifts inside the range).
            codes = np.asarray(reach.ask(), dtype=np.float64)
            P = len(codes)
            if pop_size is None:
                pop_size = P
                n_switch = min(n, max(2, int(P * FREE_TUNING["switch"])))
            k = min(P, room)
            e = ev(codes[:k])
            told = np.full(P, np.nan)
            told[:k] = -e["violation"]
            reach.tell(codes, told)
            gens["reach"] += 1
        else:
            # Spread: parents from the archive and the last generation by fitness = -violation + beta *
            # novelty, children by spherical mutation or blend; all feasible children archived.
            A_codes, A_feat = a.get("codes"), a.get("features")
            pool_codes, pool_feat = A_codes, A_feat
            pool_viol = np.zeros(len(A_codes))
            if last is not None and len(last["codes"]):
                keep = ~last["feasible"] & np.isfinite(last["violation"])
                pool_codes = np.concatenate([pool_codes, last["codes"][keep]])
                pool_feat = np.concatenate([pool_feat, last["features"][keep]])
                pool_viol = np.concatenate([pool_viol, last["violation"][keep]])
            dist = _pairwise(pool_feat, A_feat)
            self_mask = np.zeros_like(dist, dtype=bool)
            self_mask[np.arange(len(A_codes)), np.arange(len(A_codes))] = True
            dist[self_mask] = np.inf  # an archived sample is not its own neighbour
            nov = _knn_mean(dist, k_nearest) if len(A_codes) > 1 else np.ones(len(pool_codes))
            nov = np.where(np.isfinite(nov), nov, 0.0)
            fitness = -pool_viol + beta * nov / scale
            k = min(pop_size, room)
            # Independent draws from the code prior are the most diverse samples there are: when the
            # prior often lands in range, rejection sampling is the best sampler. Share each
            # generation between prior draws and mutations in proportion to their recent success.
            share = float(np.clip(r_prior / max(r_prior + r_mut, 1e-12), 0.05, 0.95))
            n_prior = int(rng.binomial(k, share))
            k_mut = k - n_prior
            i1 = rng.integers(len(pool_codes), size=k_mut)
            i2 = rng.integers(len(pool_codes), size=k_mut)
            parents = np.where((fitness[i1] >= fitness[i2])[:, None], pool_codes[i1], pool_codes[i2])
            blend = rng.random(k_mut) < 0.3
            if blend.any() and len(A_codes) > 1:
                mates = A_codes[rng.integers(len(A_codes), size=int(blend.sum()))]
                t = rng.random((int(blend.sum()), 1))
                mixed = parents[blend] + t * (mates - parents[blend])
                # keep the parents' norm (the blend of two codes is shorter than either)
                mixed *= np.linalg.norm(parents[blend], axis=1, keepdims=True) / np.maximum(
                    np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
                parents = parents.copy()
                parents[blend] = mixed
            children = np.concatenate([rng.standard_normal((n_prior, dim)), _sphere_step(parents, sigma, rng)])
            e = ev(children)
            feas = e["feasible"]
            if n_prior:
                r_prior = 0.8 * r_prior + 0.2 * float(np.mean(feas[:n_prior]))
                from_prior += int(feas[:n_prior].sum())
            if k_mut:
                rate = float(np.mean(feas[n_prior:]))
                r_mut = 0.8 * r_mut + 0.2 * rate
                # one-fifth-style rule on feasibility: big steps while the range is wide around us
                sigma = float(np.clip(sigma * (1.25 if rate > target_rate else 0.8), 1e-3, 3.0))
                sigmas.append(sigma)
            gens["spread"] += 1
        if scale is None:  # the first generation is the optimizer's initial population: prior samples
            d = diversity(e["features"])
            scale = d if np.isfinite(d) and d > 0 else 1.0
            r_prior = float(np.mean(e["feasible"]))
        ev.accept(e, n - a.size)
        last = e
        report()
    return {"generations": gens, "population_size": pop_size, "sigma_final": sigmas[-1] if sigmas else None,
            "feature_scale": scale, "accepted_from_prior": from_prior, "reach_optimizer": _describe(reach)}


# ---------------------------------------------------------------------------------------------------
# Gradient path
# ---------------------------------------------------------------------------------------------------
def _znorm_t(x, eps: float = 1e-8):
    import torch
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, unbiased=False, keepdim=True)
    return torch.where(std > eps, (x - mean) / std.clamp_min(eps), torch.zeros_like(x))


def _torch_decoder(decoder):
    """(codes tensor -> series tensor, None) or (None, why it is not differentiable)."""
    from .decoders.basis import BasisDecoder
    from .decoders.identity import IdentityDecoder

    if isinstance(decoder, IdentityDecoder):
        shape = (decoder.length,) if decoder.channels is None else (decoder.channels, decoder.length)

        def f(z):
            x = z.reshape(z.shape[0], *shape)
            return _znorm_t(x) if decoder.normalize else x
        return f, None
    if isinstance(decoder, BasisDecoder):
        import torch
        basis = torch.as_tensor(decoder._basis, dtype=torch.float32)
        c = decoder.channels or 1

        def f(z):
            x = z.reshape(z.shape[0], c, decoder.n_basis) @ basis.to(z.device)
            x = x[:, 0] if decoder.channels is None else x
            return _znorm_t(x) if decoder.normalize else x
        return f, None
    if type(decoder).__name__ == "PCADecoder" and hasattr(decoder, "linear_map"):
        if decoder.length != decoder.fit_length:
            return None, "the PCA decoder resamples its output (length differs from its fit length)"
        import torch
        W, b = (torch.as_tensor(v, dtype=torch.float32) for v in decoder.linear_map())
        shape = decoder._shape(1, decoder.length)[1:]

        def f(z):
            x = (z @ W.to(z.device) + b.to(z.device)).reshape(z.shape[0], *shape)
            return _znorm_t(x) if decoder.normalize else x
        return f, None
    if hasattr(decoder, "torch_module"):
        try:
            module = decoder.torch_module()
        except UserError as exc:
            return None, str(exc)
        return module, None
    return None, (f"the decoder {type(decoder).__name__} is not differentiable (no torch_module()); "
                  "use method='free' or a decoder trained by 'xdream-ts train-decoder'")


def _gradient(ev: _Evaluator, tdec, n: int, budget: int, rng: np.random.Generator, n_seeds: int, beta: float,
              k_nearest: int, report, lr: float = 0.05, inner: int = 20, max_outer: int = 40,
              mu0: float = 10.0, mu_growth: float = 2.0, mu_max: float = 1e4, margin: float = 0.05,
              batch: int = 32) -> dict:
    """The paper's sampler: K seeds by an augmented Lagrangian, then single feasible gradient steps."""
    import torch

    T = ev.targets
    dim = int(ev.decoder.latent_dim)
    dev = getattr(T.scorers[0], "device", None) or "cpu"
    if hasattr(tdec, "to"):
        tdec = tdec.to(dev)
    w = torch.as_tensor(T.width, dtype=torch.float32, device=dev)
    # the Lagrangian aims at a range shrunk by `margin` widths, so that the seeds are not on its edge
    lo = torch.as_tensor(T.lo / T.width + margin, dtype=torch.float32, device=dev)
    hi = torch.as_tensor(T.hi / T.width - margin, dtype=torch.float32, device=dev)
    K = max(2, min(n_seeds, n))

    def forward(z):
        x = tdec(z)
        a = T.torch_activations(x) / w  # activations in range widths
        f = ev.features.torch(x, z)
        return x, a, f

    def al_terms(a, lam, mu):
        # min over slack s in [lo, hi] of -lam (a - s) + mu/2 (a - s)^2: s* = clip(a - lam/mu); by the
        # envelope theorem s* may be held fixed (detached) when differentiating.
        s = torch.minimum(torch.maximum(a.detach() - lam / mu, lo), hi)
        c = a - s
        return (-lam * c + 0.5 * mu * c * c).sum(dim=1), c.detach(), s

    def shell(z):
        # keep codes on the prior's typical shell |z| ~ sqrt(d): a learned decoder is only trained there
        return (z.norm(dim=1) / math.sqrt(dim) - 1.0) ** 2

    # ---- 1. seeds: augmented Lagrangian over K codes ---------------------------------------------
    z = torch.tensor(rng.standard_normal((K, dim)), dtype=torch.float32, device=dev, requires_grad=True)
    with torch.no_grad():
        _, _, f0 = forward(z)
        scale = float(torch.pdist(f0).mean()) if K > 1 else 1.0
        scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    lam = torch.zeros((K, len(T.constraints)), device=dev)
    mu = mu0
    # Adam by hand: torch.optim imports torch._dynamo, seconds of start-up for a few lines of arithmetic
    m1, m2, b1, b2 = torch.zeros_like(z), torch.zeros_like(z), 0.9, 0.999
    t_adam = torch.zeros((K, 1), device=dev)  # per-row step count: restarted rows restart their bias correction
    outer_done, steps, seeds_ok, restarts = 0, 0, False, 0
    best_viol, idle = np.full(K, np.inf), np.zeros(K, dtype=int)
    e = None
    for outer in range(max_outer):
        for _ in range(inner):
            if T.presentations + K > budget:
                break
            x, a, f = forward(z)
            # sum over seeds of each one's mean distance to the others (pdist: no zero self-distances,
            # whose gradient is undefined)
            spread = 2.0 * torch.pdist(f).sum() / (K - 1) / scale
            pen, c, _ = al_terms(a, lam, mu)
            loss = -beta * spread + (pen + shell(z)).sum()
            (g,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                t_adam += 1
                m1.mul_(b1).add_((1 - b1) * g)
                m2.mul_(b2).add_((1 - b2) * g * g)
                z -= lr * (m1 / (1 - b1 ** t_adam)) / ((m2 / (1 - b2 ** t_adam)).sqrt() + 1e-8)
            steps += 1
        outer_done = outer + 1
        if T.presentations + K * (1 + ev.repeats) > budget:
            break
        with torch.no_grad():
            _, a, _ = forward(z)
            _, c, _ = al_terms(a, lam, mu)
            lam = lam - mu * c  # first-order multiplier update, then a stiffer penalty
            mu = min(mu * mu_growth, mu_max)
        e = ev(z.detach().cpu().numpy().astype(np.float64))  # what counts: the numpy scorer's verdict
        if e["feasible"].all():
            seeds_ok = True
            break
        # A seed is stuck when its violation has not shrunk for 3 outer iterations, or at once when the
        # unit is silent for it (exactly 0 below the range: a ReLU at 0 has no gradient to follow), or
        # when, from the third outer iteration on, half the seeds are in range and it is still more than
        # a range width away (it started on the far side of the unit's landscape; e.g. a logit of the
        # other class). Stuck seeds are re-drawn near a feasible seed (else near the least violating
        # one) with fresh multipliers and Adam moments; the diversity term then pushes them away.
        viol = np.nan_to_num(e["violation"], nan=np.inf)
        better = viol < 0.99 * best_viol
        best_viol = np.where(better, viol, best_viol)
        idle = np.where(better, 0, idle + 1)
        silent = np.any((e["mean"] == 0.0) & (T.lo[None, :] > 0.0), axis=1)
        far = (outer >= 2) & (np.mean(e["feasible"]) >= 0.5) & (viol > 1.0)
        stuck = ~e["feasible"] & ((idle >= 3) | silent | far)
        if stuck.any():
            rows = np.flatnonzero(stuck)
            ok = np.flatnonzero(e["feasible"])
            if not len(ok):
                ok = np.flatnonzero(~stuck)
            if len(ok):
                fresh = _sphere_step(e["codes"][rng.choice(ok, size=len(rows))], 1.0, rng)
            else:
                fresh = rng.standard_normal((len(rows), dim))
            with torch.no_grad():
                z[rows] = torch.as_tensor(fresh, dtype=torch.float32, device=dev)
                lam[rows] = 0.0
                m1[rows], m2[rows], t_adam[rows] = 0.0, 0.0, 0.0
            best_viol[rows], idle[rows] = np.inf, 0
            restarts += len(rows)
    if e is not None:
        ev.accept(e, n)
        report()
    lam_new = lam.mean(dim=0, keepdim=True)  # multipliers for new samples: the seeds' average

    # ---- 2. fast sampler: single gradient steps from accepted samples, kept when feasible --------
    a_store = ev.archive
    eta, accepted_steps, tried_steps = 0.05, 0, 0
    while a_store.size < n and a_store.size > 0 and T.presentations + batch * (1 + ev.repeats) <= budget:
        codes = a_store.get("codes")
        feats = torch.as_tensor(a_store.get("features") if ev.features.differentiable else
                                a_store.get("series").reshape(a_store.size, -1), dtype=torch.float32, device=dev)
        B = min(batch, max(1, n - a_store.size) * 2)
        idx = rng.choice(len(codes), size=B, replace=B > len(codes))
        z0 = torch.tensor(codes[idx], dtype=torch.float32, device=dev, requires_grad=True)
        x, a, f = forward(z0)
        own = torch.zeros((B, len(codes)), dtype=torch.bool, device=dev)
        own[torch.arange(B), torch.as_tensor(idx, device=dev)] = True
        dist = torch.where(own, torch.full_like(f[:, :1], float("inf")), torch.cdist(f, feats))  # not its own neighbour
        kk = max(1, min(k_nearest, len(codes) - 1))
        nov = torch.topk(dist, kk, dim=1, largest=False).values
        nov = torch.where(torch.isfinite(nov), nov, torch.zeros_like(nov)).mean(dim=1) / scale
        pen, _, _ = al_terms(a, lam_new, mu)
        loss = (-beta * nov + pen + shell(z0)).sum()
        (g,) = torch.autograd.grad(loss, z0)
        with torch.no_grad():
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            zn = z0.norm(dim=1, keepdim=True)
            gdir = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            xi = torch.tensor(rng.standard_normal((B, dim)), dtype=torch.float32, device=dev)
            xi = xi / xi.norm(dim=1, keepdim=True).clamp_min(1e-12)
            size = eta * zn * torch.tensor(np.exp(rng.uniform(-1, 1, (B, 1))), dtype=torch.float32, device=dev)
            z1 = z0 - size * gdir + size * xi
        e = ev(z1.cpu().numpy().astype(np.float64))
        rate = float(np.mean(e["feasible"]))
        tried_steps += B
        accepted_steps += ev.accept(e, n - a_store.size)
        eta = float(np.clip(eta * (1.3 if rate > 0.6 else (1 / 1.3 if rate < 0.2 else 1.0)), 1e-4, 2.0))
        report()
    return {"seeds": K, "seed_outer_iterations": outer_done, "seed_steps": steps, "seeds_all_feasible": seeds_ok,
            "seed_restarts": restarts,
            "mu_final": mu, "feature_scale": scale, "fast_steps_tried": tried_steps,
            "fast_steps_accepted": accepted_steps, "eta_final": eta}


# ---------------------------------------------------------------------------------------------------
# Baseline: what a plain optimizer run visits in range
# ---------------------------------------------------------------------------------------------------
def baseline_from_run(run, constraints, feature_fn=None, scorer=None,
                      max_presentations: int | None = None) -> InverseSet:
    """The in-range series a plain ``xdream_ts.run`` visited (a Run or a run-store path), as an InverseSet.

    Constraint targets index the columns of the run's scores (one scorer per run); a series is in range
    when the mean of its repeats is, as in :func:`inverse_set`. ``max_presentations`` reads the run
    only up to the last generation within that many presentations (one run, compared at several budgets).
    """
    from .loop import Run, load_run
    if not isinstance(run, Run):
        run = load_run(run)
    cons = parse_constraints(constraints, scorer if scorer is not None else _NamedTargets(run))
    if any(c.scorer is not None for c in cons):
        raise UserError("baseline_from_run: constraints must index the run's targets (columns), not other scorers")
    G, P = run.objective.shape
    repeats = int(run.scores.shape[2])
    spent = np.cumsum(run.n_evaluated.astype(np.int64) * repeats)
    used = np.ones(G, dtype=bool) if max_presentations is None else spent <= int(max_presentations)
    presentations = int(spent[used][-1]) if used.any() else 0
    mask = (np.arange(P)[None, :] < run.n_evaluated[:, None]) & used[:, None]
    obs = run.scores[mask]  # (N, R[, k])
    obs = obs[..., None] if obs.ndim == 2 else obs
    k = obs.shape[-1]
    for c in cons:
        if c.target >= k:
            raise UserError(f"constraint {c.name}: column {c.target} is out of range, the run recorded {k} target(s)")
    observed = np.stack([obs[..., c.target] for c in cons], axis=-1)
    lo, hi = np.array([c.z1 for c in cons]), np.array([c.z2 for c in cons])
    st = _stats(observed, lo, hi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ok = np.all((st["mean"] >= lo) & (st["mean"] <= hi), axis=1)
    series, codes = run.series[mask][ok], run.codes[mask][ok]
    feats = _Features(feature_fn)(series, codes) if ok.any() else np.zeros((0, 0))
    clean = None
    if run.clean_scores is not None:
        cs = run.clean_scores[mask]
        cs = cs[..., None] if cs.ndim == 1 else cs
        clean = np.stack([cs[:, c.target] for c in cons], axis=-1)[ok]
    return InverseSet(series=series, codes=codes, activations=st["mean"][ok], observed=observed[ok],
                      features=feats, p_in_range=st["p_in_range"][ok], in_range_fraction=st["in_range_fraction"][ok],
                      ci_low=st["ci_low"][ok], ci_high=st["ci_high"][ok], constraints=cons, method="baseline",
                      presentations=presentations, n_requested=int(ok.sum()), clean_activations=clean,
                      config={"features": _Features(feature_fn).name, "run": str(run.path) if run.path else None,
                              "optimizer": run.config.get("optimizer", {}).get("name")},
                      info={"visited": int(mask.sum())})


class _NamedTargets:
    """Stands in for a scorer when parsing constraints against a stored run's target names."""

    def __init__(self, run):
        self.target_names = list(run.attrs.get("target_names") or [])

    def __call__(self, series):  # never called: only names are read
        raise RuntimeError


# ---------------------------------------------------------------------------------------------------
# CLI: xdream-ts inverse-set
# ---------------------------------------------------------------------------------------------------
def add_cli(sub) -> None:
    p = sub.add_parser(
        "inverse-set", help="sample many diverse series whose activation lies in a range",
        description="Sample the inverse set of a unit (Hada & Carreira-Perpinan 2020): --n diverse series whose "
                    "activation lies in [Z1, Z2], written to a zarr folder with a gallery.png inside. Without "
                    "--model the target is the built-in default (the shipped reference model when installed, "
                    "else a simulated neuron).")
    p.add_argument("--model", help="ONNX model to probe")
    p.add_argument("--layer", help="tensor name in the model (`xdream-ts inspect MODEL`); default: first output")
    p.add_argument("--unit", type=int, default=0, help="channel (or feature) of the tensor, default 0")
    p.add_argument("--position", default="center", help="center (default), mean, max, or a time step")
    p.add_argument("--range", nargs=2, type=float, required=True, metavar=("Z1", "Z2"),
                   help="activation range (absolute; with --relative, fractions of the unit's reference maximum)")
    p.add_argument("--relative", action="store_true", help="Z1 Z2 are fractions of the unit's reference maximum")
    p.add_argument("--also", nargs=3, action="append", default=[], metavar=("TARGET", "Z1", "Z2"),
                   help="another unit of the same model and its range, TENSOR:UNIT[@POSITION] (repeatable): "
                        "samples the intersection of the inverse sets")
    p.add_argument("--n", type=int, default=500, help="samples wanted, default 500")
    p.add_argument("--out", required=True, help="zarr folder to write (must not exist)")
    p.add_argument("--decoder", help="identity, basis[:N], pca:FILE.npz, default, or a trained decoder folder")
    p.add_argument("--method", choices=("auto", "gradient", "free"), default="auto",
                   help="gradient (needs a torch version of the model: the shipped reference model has one), "
                        "free (any target), auto (default)")
    p.add_argument("--features", default="series",
                   help="where diversity is measured: series (default), codes, or a TENSOR of the model (all its "
                        "units; mean over time for (batch, channels, time) tensors)")
    p.add_argument("--budget", type=int, help="most presentations to spend (default 50 n, at least 5000)")
    p.add_argument("--repeats", type=int, default=1, help="presentations of each series (noisy targets), default 1")
    p.add_argument("--noise", default="none", help="none, poisson[:SCALE], gain:SIGMA (simulated noise on the target)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="accept only samples in range with this probability (needs --repeats >= 2)")
    p.add_argument("--seed", type=int, default=0, help="seed, default 0")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads, default 1")
    p.add_argument("--length", type=int, help="series length when neither the model nor the decoder fixes it")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_inverse_set)


def _cli_target(args):
    """(scorer with noise, clean scorer, reference maximum of each constraint's unit or None), built as
    `xdream-ts run` builds its target (without --model: the shipped reference model when installed)."""
    from .adapters.onnx import OnnxScorer
    from .adapters.simulated import with_noise
    from .cli import RUN_DEFAULTS, build_target
    opts = {**RUN_DEFAULTS, "model": args.model, "layer": args.layer, "unit": args.unit, "position": args.position,
            "threads": args.threads, "length": args.length, "noise": "none", "seed": args.seed}
    if args.also:
        opts["target"] = [f"{args.layer or ''}:{args.unit}@{args.position}"] + [t for t, _, _ in args.also]
    clean, reference = build_target(opts)
    if isinstance(clean, OnnxScorer):
        refs = [_reference_max(clean.model_path, t) for t in clean.targets]
    else:
        if args.also:
            raise UserError("--also needs a model target (--model, or the shipped reference model)")
        refs = [reference]
    return with_noise(clean, args.noise, seed=args.seed), clean, refs


def _reference_max(model_path, target) -> float | None:
    """The unit's largest activation over all FordA series, when the model is the shipped one."""
    try:
        from .reference import ONNX_TENSORS, OUTPUT_NAME, is_reference_model, reference_activations
        if not is_reference_model(model_path):
            return None
        layer = target.layer or OUTPUT_NAME
        position = "none" if len(ONNX_TENSORS.get(layer, ((),))[0]) == 2 else target.position
        values = reference_activations().get(f"{layer}|{position}")
    except (ImportError, UserError):
        return None
    if values is None or not 0 <= target.unit < len(values):
        return None
    return float(values[target.unit])


def cmd_inverse_set(args) -> int:
    import json

    from .cli import _default_decoder_spec
    from .decoders import make_decoder

    if args.n < 1 or (args.budget is not None and args.budget < 1) or args.repeats < 1:
        raise UserError("--n, --budget and --repeats must be positive integers")
    if Path(args.out).exists():
        raise UserError(f"{args.out} already exists: choose another --out")
    scorer, clean, refs = _cli_target(args)
    ranges = [(float(args.range[0]), float(args.range[1]))]
    for _, z1, z2 in args.also:
        try:
            ranges.append((float(z1), float(z2)))
        except ValueError:
            raise UserError(f"--also {z1} {z2}: the range ends must be numbers") from None
    if args.relative:
        if any(r is None or not np.isfinite(r) or r <= 0 for r in refs):
            raise UserError("--relative needs the unit's reference maximum, which is unknown for this target: "
                            "give absolute Z1 Z2")
        ranges = [(z1 * r, z2 * r) for (z1, z2), r in zip(ranges, refs)]
    constraints = [(j, z1, z2) for j, (z1, z2) in enumerate(ranges)]

    torch_scorer = None
    if args.method in ("gradient", "auto") and args.noise in (None, "", "none"):
        torch_scorer = _torch_twin(clean, need=args.method == "gradient")
    length = getattr(scorer, "length", None) or args.length
    decoder = make_decoder(args.decoder or _default_decoder_spec(), length=length,
                           channels=getattr(scorer, "channels", None))
    features = args.features
    if features not in ("series", "codes"):
        features = _layer_features(clean, features, torch_scorer, args.threads)
    with warnings.catch_warnings():  # a short set is said in the summary, not by a Python warning
        warnings.simplefilter("ignore", RuntimeWarning)
        inv = inverse_set(decoder, torch_scorer or scorer, constraints, n=args.n, method=args.method,
                          feature_fn=features, budget=args.budget, repeats=args.repeats, seed=args.seed,
                          out=None, progress=args.progress, min_confidence=args.min_confidence)
    if len(inv) == 0:
        raise UserError(f"no series in range found within {inv.presentations} presentations: widen --range "
                        "or raise --budget (nothing was written)")
    inv.config["cli"] = {k: v for k, v in vars(args).items() if k not in ("func", "progress")}
    if torch_scorer is not None and inv.method == "gradient":
        # sampled through the torch twin: say how many the ONNX model itself puts in range
        a = np.asarray(clean(inv.series), dtype=np.float64).reshape(len(inv), -1)
        lo, hi = np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])
        inv.info["onnx_in_range"] = float(np.mean(np.all((a >= lo) & (a <= hi), axis=1)))
    inv.save(args.out)
    s = inv.summary()
    if "onnx_in_range" in inv.info:
        s["onnx_in_range"] = inv.info["onnx_in_range"]
    if args.json:
        print(json.dumps(_jsonable(s)))
    else:
        print(format_summary(s))
    return 0


def _torch_twin(clean, need: bool):
    """A TorchScorer for the same units as an OnnxScorer: the shipped reference model has a torch twin;
    another model is converted with onnx2torch when that optional package is installed."""
    from .adapters.onnx import OnnxScorer
    if not isinstance(clean, OnnxScorer):
        if need:
            raise UserError(f"method 'gradient' needs a torch model; the target {type(clean).__name__} has none: "
                            "use --method free")
        return None
    try:
        from .adapters.torch import TorchScorer
        from .reference import is_reference_model
        if is_reference_model(clean.model_path):
            return TorchScorer.from_reference(clean.targets)
        if need:
            return TorchScorer.from_onnx(clean.model_path, clean.targets, length=clean.length)
    except (ImportError, FileNotFoundError, UserError) as exc:
        if need:
            raise UserError(f"method 'gradient' is not possible for this model ({exc}); use --method free") from None
    return None


def _layer_features(clean, tensor: str, torch_twin, threads: int):
    """Every unit of a model tensor as the feature vector (mean over time for 3-D tensors); in torch too
    when the target has a torch twin, so that the gradient path spreads the samples in that space."""
    from .adapters.onnx import OnnxScorer, Target, inspect_model
    if not isinstance(clean, OnnxScorer):
        raise UserError(f"--features {tensor!r} needs a model target (--model); use --features series or codes")
    info = inspect_model(clean.model_path, length=clean.length)
    entry = next((t for t in info.get("tensors", []) if t.get("name") == tensor), None)
    if entry is None:
        raise UserError(f"--features {tensor!r}: no such (batch, features) or (batch, channels, time) tensor in the "
                        "model; `xdream-ts inspect MODEL` lists them (or use series, codes)")
    pos = "center" if entry["kind"] == "features" else "mean"
    targets = [Target(tensor, u, pos) for u in range(int(entry["units"]))]
    if torch_twin is not None and getattr(torch_twin, "name", None) == "reference":
        from .adapters.torch import TorchScorer
        features = TorchScorer.from_reference(targets)
    else:
        features = OnnxScorer(clean.model_path, targets, threads=threads, length=clean.length)
    features.feature_name = f"{tensor} ({len(targets)} units{', mean over time' if pos == 'mean' else ''})"
    return features


def format_summary(s: dict) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    cons = ", ".join(f"{c['name']} in [{c['z1']:.4g}, {c['z2']:.4g}]" for c in s["constraints"])
    lines = [f"inverse set    {s['path']}   (gallery.png inside)",
             f"constraints    {cons}",
             f"samples        {s['n']} of {s['n_requested']} by {s['method']} in {s['presentations']} presentations"
             f" (repeats {s['repeats']})" + ("" if s["n"] >= s["n_requested"] else
                                              "; the budget ran out first: raise --budget for more"),
             f"diversity      {f(s['diversity'])}  (mean pairwise distance of {s['features']} features)"]
    if s.get("n"):
        lines.append("activations    " + ", ".join(f"{lo:.4g}..{hi:.4g}" for lo, hi in
                                                   zip(s["activation_min"], s["activation_max"])))
        if "p_in_range_mean" in s:
            lines.append(f"P(in range)    mean {s['p_in_range_mean']:.3f}, min {s['p_in_range_min']:.3f} "
                         f"(t-interval over repeats; fraction of repeats in range {s['in_range_fraction_mean']:.3f})")
        if "onnx_in_range" in s:
            lines.append(f"ONNX check     {s['onnx_in_range']:.3f} of the samples (found with the torch twin) are in "
                         "range for the ONNX model too")
        if "truly_in_range" in s:
            lines.append(f"truly in range {s['truly_in_range']:.3f} (clean activations of the simulated target)")
    return "\n".join(lines)
