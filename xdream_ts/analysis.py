"""Plausibility: how far a stimulus lies from real data, in a model's own activation space.

A stimulus that drives a unit hard may do it by being nothing like the data the model was trained on
(adversarial noise). Sequence Dreaming (Schlegel, Keim & Sutter 2024) measures this with the
Mahalanobis distance of the stimulus' activation vector in a layer (e.g. ``gap``, the penultimate
layer) from the distribution of real series' activations there:

    d(a) = sqrt((a - mu)^T Sigma^-1 (a - mu))

- ``activations(model, layer, series)``: a layer's activation vector, all of its units, the mean over
  time for (batch, channels, time) tensors; through the ONNX scorer for an .onnx file, the torch scorer
  for a torch module.
- ``fit_reference(activations)``: mu and Sigma with scikit-learn. ``EmpiricalCovariance`` when there
  are plenty of samples for the dimension; ``LedoitWolf`` shrinkage when samples are few (fewer than
  ten per dimension) or the sample covariance is singular or ill-conditioned (dead ReLU units give
  zero-variance directions, which the pseudo-inverse of the plain estimate would silently ignore, so a
  stimulus that lights up a unit real data never uses would look typical). The choice and its reason
  are recorded.
- ``mahalanobis``: the distance itself. scikit-learn's ``.mahalanobis`` returns SQUARED distances;
  everything here reports the square root.
- The *percentile* of a distance is the share (in %) of the real series whose own distance is at most
  it. The real series' distances are computed under the same fit that includes them (leave-in), which
  makes real series look slightly more typical than new ones; with hundreds of series per dimension the
  difference is small, and it errs on the side of calling a stimulus implausible.
- ``plot_pca``: real and generated activations projected on the first two principal components of
  the real ones (matplotlib, Agg, PNG).
- ``plausibility_summary(run, ...)``: the above for the series a run reports (``Run.reported_index``), as
  a dict for ``show`` and reports.

sklearn and matplotlib are imported inside functions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

MIN_SAMPLES_PER_DIM = 10
MAX_CONDITION = 1e8
_LIGHT = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#d9d9d9")  # real data: light, generated: strong colours


# ------------------------------------------------------------------------------------ activations
def _is_torch_module(obj) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)


def _as_series(series) -> np.ndarray:
    x = np.asarray(series, dtype=np.float32)
    if x.ndim not in (2, 3):
        raise UserError(f"series must be shaped (n, length) or (n, channels, length), got {x.shape}")
    if len(x) == 0:
        raise UserError("no series given: pass at least one")
    return x


def activation_scorer(model, layer: str, position: str = "mean", threads: int = 1, batch_size: int | None = 256):
    """A scorer returning every unit of ``layer`` ((n, units)), for an ONNX path, an OnnxScorer, a
    TorchScorer or a torch module. 3-D tensors are reduced over time by ``position`` (default mean)."""
    from .targets import Target, TargetSpec, build

    if isinstance(model, (str, os.PathLike)) or type(model).__name__ == "OnnxScorer":
        path = model if isinstance(model, (str, os.PathLike)) else model.model_path
        targets = layer_targets(path, layer, position)
        return build(TargetSpec(model=str(path), units=targets, threads=threads, batch_size=batch_size)).clean
    from .adapters.torch import TorchScorer

    if isinstance(model, TorchScorer):
        module, names, length, channels = model.module, model._layer_names, model.length, model.channels
        layout, tlayout = model.layout, model._tensor_layout
    elif _is_torch_module(model):
        module, names, length, channels, layout, tlayout = model, None, None, None, "NCL", "NCL"
    else:
        raise UserError(f"cannot read activations from a {type(model).__name__}: give an .onnx path, an OnnxScorer, "
                        "a TorchScorer or a torch module")
    probe = TorchScorer(module, [Target(layer, 0, "center")], length=length, channels=channels, layout=layout,
                        tensor_layout=tlayout, layer_names=names)
    return _LazyTorchLayer(probe, layer, position, batch_size)


def layer_targets(model_path, layer: str, position: str = "mean") -> list:
    """Every unit of ``layer`` of an ONNX model as targets, read as the activation space reads them
    (features as they are, (batch, channels, time) tensors reduced by ``position``). The plausibility
    constraint of a run (xdream_ts.plausible) scores the same list, so that its distances and
    ``show --plausibility`` measure the same vector."""
    from .adapters.onnx import inspect_model
    from .targets import Target

    info = inspect_model(model_path)
    entry = next((t for t in info["tensors"] if t["name"] == layer), None)
    if entry is None:
        names = [t["name"] for t in info["tensors"]]
        raise UserError(f"no targetable tensor {layer!r} in {Path(model_path).name}; choose one of "
                        f"{', '.join(names[-6:])} (`xdream-ts inspect MODEL` lists all)")
    pos = "center" if entry["kind"] == "features" else position
    return [Target(layer, u, pos) for u in range(int(entry["units"]))]


class _LazyTorchLayer:
    """Builds the all-units TorchScorer after one probe forward tells the layer's width."""

    def __init__(self, probe, layer, position, batch_size):
        self.probe, self.layer, self.position, self.batch_size = probe, layer, position, batch_size
        self.scorer = None

    def __call__(self, series: np.ndarray) -> np.ndarray:
        from .targets import Target
        from .adapters.torch import TorchScorer

        if self.scorer is None:
            self.probe(series[:1])
            shp = next(iter(self.probe.target_shapes.values()))
            p = self.probe
            if len(shp) == 2:
                units, pos = shp[1], "center"
            else:
                lay = p._layout_of(p._paths[0], self.layer)
                units, pos = (shp[1] if lay == "NCL" else shp[2]), self.position
            self.scorer = TorchScorer(p.module, [Target(self.layer, u, pos) for u in range(units)], length=p.length,
                                      channels=p.channels, layout=p.layout, tensor_layout=p._tensor_layout,
                                      layer_names=p._layer_names, batch_size=self.batch_size)
        out = self.scorer(series)
        return out[:, None] if out.ndim == 1 else out


def activations(model, layer: str, series, position: str = "mean", threads: int = 1,
                batch_size: int | None = 256) -> np.ndarray:
    """(n, units) activations of every unit of ``layer`` for ``series`` (n, [c,] L); float64.

    model: an .onnx path, an OnnxScorer, a TorchScorer or a torch module. 3-D (batch, channels, time)
    tensors are averaged over time (``position='mean'``; 'max', 'center' or a time index also work).
    """
    scorer = activation_scorer(model, layer, position=position, threads=threads, batch_size=batch_size)
    out = np.asarray(scorer(_as_series(series)), dtype=np.float64)
    return out[:, None] if out.ndim == 1 else out


# ------------------------------------------------------------------------------------- the fit
@dataclass
class ReferenceFit:
    """A fitted activation distribution: ``estimator`` (scikit-learn), which ``method`` and why."""

    estimator: Any
    method: str
    reason: str
    n_samples: int
    dim: int
    distances: np.ndarray = field(repr=False)  # the reference samples' own distances (leave-in)

    def mahalanobis(self, acts) -> np.ndarray:
        return mahalanobis(self, acts)

    def percentile(self, distances) -> np.ndarray:
        return percentile(self, distances)

    def summary(self) -> dict:
        q = np.percentile(self.distances, [50, 95, 100])
        return {"method": self.method, "reason": self.reason, "n_reference": self.n_samples, "dim": self.dim,
                "reference_median": float(q[0]), "reference_p95": float(q[1]), "reference_max": float(q[2])}


def fit_reference(acts, method: str = "auto") -> ReferenceFit:
    """Fit the mean and covariance of reference activations (n, d).

    method: 'auto' (see the module docstring), 'empirical' (``EmpiricalCovariance``) or 'ledoitwolf'.
    """
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf

    A = np.asarray(acts, dtype=np.float64)
    if A.ndim != 2:
        raise UserError(f"reference activations must be (n, d), got shape {A.shape}")
    n, d = A.shape
    if n < 2:
        raise UserError(f"{n} reference series are too few to fit a distribution: give at least 2 (hundreds is better)")
    if not np.isfinite(A).all():
        raise UserError("reference activations contain NaN or inf; check the reference series and the model")
    method = str(method).lower().replace("-", "").replace("_", "")
    if method not in ("auto", "empirical", "ledoitwolf"):
        raise UserError(f"unknown covariance method {method!r}: use auto, empirical or ledoitwolf")
    if method == "auto":
        if n < MIN_SAMPLES_PER_DIM * d:
            method, reason = "ledoitwolf", f"{n} samples for {d} dimensions (< {MIN_SAMPLES_PER_DIM} per dimension)"
        else:
            ev = np.linalg.eigvalsh(np.cov(A, rowvar=False, bias=True).reshape(d, d))
            cond = ev.max() / ev.min() if ev.min() > 0 else np.inf
            if not cond < MAX_CONDITION:
                method, reason = "ledoitwolf", f"sample covariance singular or ill-conditioned (condition {cond:.3g})"
            else:
                method, reason = "empirical", f"{n} samples for {d} dimensions, condition {cond:.3g}"
    else:
        reason = "chosen by the caller"
    est = (EmpiricalCovariance() if method == "empirical" else LedoitWolf()).fit(A)
    fit = ReferenceFit(est, method, reason, n, d, np.empty(0))
    fit.distances = mahalanobis(fit, A)
    return fit


def mahalanobis(fit, acts) -> np.ndarray:
    """Mahalanobis DISTANCES (not squared) of activations (n, d) under a fit (ReferenceFit or a fitted
    scikit-learn covariance estimator)."""
    est = fit.estimator if isinstance(fit, ReferenceFit) else fit
    A = np.asarray(acts, dtype=np.float64)
    if A.ndim == 1:
        A = A[None]
    dim = est.location_.shape[0]
    if A.shape[1] != dim:
        raise UserError(f"activations have {A.shape[1]} dimensions, the reference fit {dim}: use the same layer")
    # scikit-learn returns squared distances; clip tiny negative rounding before the root
    return np.sqrt(np.maximum(est.mahalanobis(A), 0.0))


def percentile(fit: ReferenceFit, distances) -> np.ndarray:
    """Share (%) of the reference series whose own (leave-in) distance is <= each distance."""
    ref = np.sort(fit.distances)
    d = np.atleast_1d(np.asarray(distances, dtype=np.float64))
    return 100.0 * np.searchsorted(ref, d, side="right") / len(ref)


# ----------------------------------------------------------------------------------- the space
class ActivationSpace:
    """A model layer's activation space fitted on real series: distances and percentiles of new ones.

    model: an .onnx path, an OnnxScorer, a TorchScorer or a torch module; layer: a tensor / layer name
    (e.g. 'gap'); reference_series: real series (n, [c,] L) of the data the model was trained on.
    """

    def __init__(self, model, layer: str, reference_series, position: str = "mean", method: str = "auto",
                 threads: int = 1, batch_size: int | None = 256):
        self.layer, self.position = layer, position
        self._scorer = activation_scorer(model, layer, position=position, threads=threads, batch_size=batch_size)
        self.reference_activations = self.activations(reference_series)
        self.fit = fit_reference(self.reference_activations, method=method)

    @property
    def method(self) -> str:
        return self.fit.method

    def activations(self, series) -> np.ndarray:
        out = np.asarray(self._scorer(_as_series(series)), dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    def distance(self, series) -> np.ndarray:
        """Mahalanobis distance (n,) of each series' activations from the reference distribution."""
        return mahalanobis(self.fit, self.activations(series))

    def percentile(self, distances) -> np.ndarray:
        return percentile(self.fit, distances)

    def plot_pca(self, generated_series, path, labels=None, title: str | None = None,
                 reference_labels=None) -> Path:
        return plot_pca(self.reference_activations, self.activations(generated_series), path, labels=labels,
                        title=title or f"{self.layer}: real vs generated (PCA of real activations)",
                        reference_labels=reference_labels)


def plot_pca(reference_acts, generated_acts, path, labels=None, title: str | None = None,
             reference_labels=None) -> Path:
    """Scatter real (grey, or coloured by ``reference_labels``) and generated activations (markers, one
    legend entry per distinct label) on the first two principal components of the real ones. PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    R = np.asarray(reference_acts, dtype=np.float64)
    G = np.asarray(generated_acts, dtype=np.float64).reshape(-1, R.shape[1])
    pca = PCA(n_components=min(2, R.shape[1]), random_state=0).fit(R)
    r, g = pca.transform(R), pca.transform(G)
    if r.shape[1] == 1:
        r, g = np.c_[r, np.zeros(len(r))], np.c_[g, np.zeros(len(g))]
    fig = Figure(figsize=(6.0, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if reference_labels is None:
        ax.scatter(r[:, 0], r[:, 1], s=8, c="0.7", label=f"real ({len(r)})")
    else:
        rl = np.asarray(reference_labels)
        for i, lab in enumerate(np.unique(rl)):
            m = rl == lab
            ax.scatter(r[m, 0], r[m, 1], s=8, alpha=0.6, color=_LIGHT[i % len(_LIGHT)], label=f"real {lab} ({m.sum()})")
    labels = np.asarray(["generated"] * len(g) if labels is None else labels).astype(str)
    markers = "*^sDvoP"
    for i, lab in enumerate(dict.fromkeys(labels)):
        m = labels == lab
        ax.scatter(g[m, 0], g[m, 1], s=70, marker=markers[i % len(markers)], color=f"C{i}", edgecolor="k",
                   linewidth=0.5, label=lab)
    ev = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}% of real variance)")
    if len(ev) > 1:
        ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}%)")
    ax.set_title(title or "real vs generated activations (PCA of real)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ------------------------------------------------------------------------------------ run summary
def default_layer(model_path) -> str:
    """The layer plausibility is measured in by default: the last (batch, features) tensor that is not a
    model output (the penultimate layer, e.g. 'gap'), else the last (batch, channels, time) tensor."""
    from .adapters.onnx import inspect_model

    info = inspect_model(model_path)
    feats = [t["name"] for t in info["tensors"] if t["kind"] == "features" and not t["output"]]
    if feats:
        return feats[-1]
    conv = [t["name"] for t in info["tensors"] if t["kind"] == "channels-time"]
    if conv:
        return conv[-1]
    raise UserError(f"{Path(model_path).name} has no hidden layer to measure plausibility in; pass --layer")


def plausibility_summary(run, model=None, layer: str | None = None, reference_series=None, top: int = 1,
                         method: str = "auto", threads: int = 1) -> dict:
    """Mahalanobis distance and percentile of the series ``run`` (a Run or a run store path) reports.

    model: an .onnx path (default: the run's ONNX model, from its stored scorer config); layer: default
    the penultimate layer (``default_layer``); reference_series: real series (n, [c,] L), or a UCR
    dataset folder / file; default: the shipped FordA sample when the model is the shipped one; for a
    plausible run (issue 16), its own layer and the reference series it fitted on.
    top: also report the best ``top`` distinct series (by objective), not only the best.
    """
    from .loop import Run, load_run

    r = run if isinstance(run, Run) else load_run(run)
    rec = r.config.get("plausible")  # a plausible run: its own layer and reference series (issue 16)
    if rec and rec["layer"] == "input" and layer is None and model is None:
        from .plausible import input_space_summary
        return input_space_summary(r, rec, reference_series)
    if model is None:
        model = (r.config.get("scorer") or {}).get("model_path")
        if not model:
            raise UserError("this run's target is not an ONNX model (no model_path in its config): pass the model "
                            "(an .onnx file) to measure plausibility in")
    if isinstance(model, (str, os.PathLike)) and not Path(model).is_file():
        raise UserError(f"model {model} not found: pass the .onnx file the run probed")
    from .reference import is_reference_model
    shipped = isinstance(model, (str, os.PathLike)) and is_reference_model(model)
    if layer is None:
        layer = rec["layer"] if rec else ("gap" if shipped else default_layer(model))
    source = "given"
    if reference_series is None and rec:
        from .plausible import reference_series as recorded_reference
        reference_series = recorded_reference(rec, r.series.shape[-1])
        source = (rec.get("reference") or {}).get("source") or "recorded"
    if reference_series is None:
        if not shipped:
            raise UserError("plausibility needs real series of the model's data: pass a UCR dataset folder or file "
                            "(--reference-data)")
        from .reference import sample_series
        reference_series, source = sample_series()[0], "shipped FordA sample"
    elif isinstance(reference_series, (str, os.PathLike)):
        reference_series, source = load_reference_data(reference_series), str(reference_series)
    space = ActivationSpace(model, layer, reference_series, method=method, threads=threads)
    obj = np.where(np.isfinite(r.objective), r.objective, -np.inf).reshape(-1)
    # the series the run reports first (its incumbent, or a plausible run's best feasible), then the best others
    first = int(np.ravel_multi_index(r.reported_index, r.objective.shape))
    rest = [int(i) for i in np.argsort(-obj, kind="stable") if i != first]
    order = np.array([first, *rest][: max(1, int(top))])
    flat = r.series.reshape(-1, *r.series.shape[2:])
    series = flat[order]
    d = space.distance(series)
    pct = space.percentile(d)
    return {"layer": layer, "reference_source": source, **space.fit.summary(),
            "best_distance": float(d[0]), "best_percentile": float(pct[0]),
            "top": [{"objective": float(obj[i]), "distance": float(di), "percentile": float(pi)}
                    for i, di, pi in zip(order, d, pct)]}


def known_reference(run):
    """The real series a run's plausibility is measured against without a flag (issue 16 item 4):
    ``(series, source)`` from the run's ``--data`` (read again at the run's length, as the run read them),
    or the shipped FordA sample when the run probed the shipped model; None when neither is known, or
    when the model or the data file is no longer there (``show`` then says nothing rather than fail)."""
    from .reference import is_reference_model, sample_series

    model = (run.config.get("scorer") or {}).get("model_path")
    if not model or not Path(model).is_file():
        return None
    data = (run.config.get("data") or {}).get("source")
    if data:
        if not Path(data).exists():
            return None
        return load_reference_data(data, length=run.series.shape[-1]), str(data)
    if is_reference_model(model):
        return sample_series()[0], "shipped FordA sample"
    return None


def known_plausibility(run, threads: int = 1) -> dict | None:
    """:func:`plausibility_summary` of a run whose reference data are known (:func:`known_reference`),
    in the default layer; None for a plausible run (it records its own) and when nothing is known or
    the model no longer reads the run's series."""
    if run.config.get("plausible"):
        return None
    ref = known_reference(run)
    if ref is None:
        return None
    try:
        return {**plausibility_summary(run, reference_series=ref[0], threads=threads), "reference_source": ref[1]}
    except UserError:
        return None


def distance_activation(run, threads: int = 1, max_points: int = 6000, seed: int = 0) -> dict | None:
    """What ``report`` draws as distance against activation (issue 16 item 3): the real series (a cloud),
    the run's stimuli with their generation (at most ``max_points``, a seeded sample that always keeps
    the reported series), the plausibility threshold (a plausible run's own; else the real series' 99th
    percentile) and the reported series. Activations are clean ones (the noiseless response where the
    noise was simulated). None when the run's reference data are not known."""
    from .objective import Objective
    from .targets import TargetSpec, build

    rec = run.config.get("plausible")
    spec = TargetSpec.from_config(run.config)
    shown = np.arange(run.objective.shape[1])[None, :] < np.asarray(run.n_evaluated)[:, None]
    reported = run.reported_index
    if rec:
        from .plausible import activation_and_distance, reference_series
        act, dist = activation_and_distance(run)
        X = reference_series(rec, run.series.shape[-1])
        real_d = np.asarray(rec["reference_distances"], dtype=np.float64)
        threshold, layer = rec["threshold"], rec["layer"]
        source = (rec.get("reference") or {}).get("source")
        idx = np.argwhere(shown & np.isfinite(act))
    else:
        ref = known_reference(run)
        if ref is None:
            return None
        X, source = ref
        model = run.config["scorer"]["model_path"]
        from .reference import is_reference_model
        layer = "gap" if is_reference_model(model) else default_layer(model)
        try:
            space = ActivationSpace(model, layer, X, threads=threads)
        except UserError:
            return None
        real_d = np.asarray(space.fit.distances, dtype=np.float64)
        threshold = float(np.quantile(real_d, 0.99))
        clean = run.clean_objective
        act = np.asarray(clean if clean is not None else run.objective, dtype=np.float64)
        idx = np.argwhere(shown & np.isfinite(act))
        dist = None
    if len(idx) > max_points:  # a seeded sample, the reported series always in it
        keep = np.random.default_rng(seed).choice(len(idx), max_points - 1, replace=False)
        idx = np.concatenate([np.array([reported]), idx[keep]])
    g, p = idx[:, 0], idx[:, 1]
    if dist is None:
        d = space.distance(run.series[g, p])
    else:
        d = dist[g, p]
    target = build(spec.with_(noise="none", data=None, reference=None)).clean
    real_scores = np.asarray(target(X), dtype=np.float64)
    real_a = Objective(spec.objective)(real_scores) if real_scores.ndim == 2 else real_scores
    at = int(np.flatnonzero((g == reported[0]) & (p == reported[1]))[0]) if len(g) else None
    return {"layer": layer, "reference_source": source, "threshold": float(threshold), "plausible": bool(rec),
            "real_activation": real_a, "real_distance": real_d, "generation": g, "activation": act[g, p],
            "distance": np.asarray(d, dtype=np.float64), "reported": at,
            "reported_percentile": float(100.0 * np.mean(real_d <= d[at])) if at is not None else None}


def load_reference_data(path, max_series: int = 2000, seed: int = 0, length: int | None = None) -> np.ndarray:
    """Real series in any format ``xdream_ts.data.load_dataset`` reads, as the model takes them (their own
    units: z-normalised only if they are), resampled to ``length`` when given; at most ``max_series``
    (a seeded random subset), since the fit needs hundreds, not all. (n, L) for one channel, else (n, c, L)."""
    from .data import load_dataset

    data = load_dataset(path, length=length)
    X = data.squeeze()
    if len(X) > max_series:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), max_series, replace=False))]
    return np.asarray(X, dtype=np.float32)


def format_plausibility(p: dict) -> str:
    """Lines for ``xdream-ts show``."""
    return (f"plausibility   Mahalanobis {p['best_distance']:.3g} in {p['layer']} = percentile {p['best_percentile']:.0f} "
            f"of {p['n_reference']} real series (median real {p['reference_median']:.3g}, 95% {p['reference_p95']:.3g};"
            f" {p['method']})")
