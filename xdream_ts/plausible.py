"""Plausible super stimuli: maximise a target's activation subject to the stimulus staying where real
series live, in the model's own activation space (issue 16).

The constraint: the Mahalanobis distance of a stimulus' activation vector in a layer (default the
penultimate one, :func:`xdream_ts.analysis.default_layer`) from the real data's distribution there
must be at most the ``quantile`` (default 0.99) of the real series' own distances. The fit is the one
``xdream-ts show --plausibility`` makes (:func:`xdream_ts.analysis.fit_reference`, on the same
reference series), so a run and ``show`` agree on every distance.

:class:`PlausibleScorer` wraps ONE ONNX session that returns the target unit(s) and every unit of the
layer from the same forward pass. It scores ``(n, k + 1)``: the k raw target activations, then the
distance; the store keeps both per presented series (a scorer of several targets, as the loop already
records them), and ``objective`` turns them into the one value the optimizer is told:

- ``penalty`` (the default): an adaptive penalty (after Hadj-Alouane & Bean 1997), ``activation - lam *
  scale * violation / threshold``; lam doubles after a generation whose best stimulus was infeasible and
  shrinks by 1.5 after one whose best was feasible. It lets the search cross slightly infeasible ground
  while hugging the boundary, where the most activating plausible stimuli lie.
- ``feasibility-first`` (Deb 2000): every feasible stimulus ranks above every infeasible one; feasible
  ones by their activation, infeasible ones by their violation (smaller is better). No weight to tune.
  Written as a number, an infeasible stimulus gets ``floor - scale * violation / threshold``, where
  ``floor`` is below every feasible activation seen so far (it starts one real-data range below the
  lowest feasible real activation and moves down when a feasible stimulus scores lower), so that
  value-based optimizers (genetic, fdgd, nes) see values on the activation's own scale.

Why penalty is the default, measured by hand (shipped model, 8 units at four depths x 2 seeds, default
optimizer, auto decoder, 1,000 presentations, quantile 0.99): every reported stimulus was feasible with
either method; penalty gave the higher relative activation in 15 of 16 runs (median 1.51 against 1.45),
and in 6 of 6 more with genetic and cmaes (e.g. block3/out:0 under genetic 1.32 against 0.92):
feasibility-first pushes every infeasible sample straight back inside, so the search stays off the
boundary. Whichever the method, the run REPORTS its best feasible stimulus (``reported_index``), so the
penalty's tolerance of infeasible samples never reaches the result.

Scorers without internal layers (a remote endpoint, a simulated neuron), or ``--plausibility-layer input``
on a model: plausibility in input space, the Mahalanobis distance of the series' own principal
components under the data (:class:`InputFeatures`, fitted on ``--data``); or, with
``--plausibility-model PATH``, in a layer of that reference ONNX model (default its penultimate layer)
on the same series (:class:`_ReferenceJoint`; the real series: ``--data``, or the shipped sample when the
reference is the shipped model). A model target can ask for a reference model too.

Gradient path (``dream``): when the target was built differentiable (``build(..., differentiable=True)``),
the joint scorer is the target model's torch twin returning the target units and the layer's units from
one forward pass, and :meth:`PlausibleScorer.torch_objective` writes the same constraint in torch with the
SAME fit (its location and precision): ``activation - lam * scale * relu(d - threshold) / threshold``
(feasibility-first: the activation inside, ``floor - scale * violation`` outside, per member). lam is
the adaptive weight of the gradient-free runs, updated once per generation from the told scores.
"""
from __future__ import annotations

import numpy as np

from .errors import UserError

DEFAULT_QUANTILE = 0.99
METHODS = ("penalty", "feasibility-first")  # the first is the default (see above)
DISTANCE_NAME = "plausibility:mahalanobis"


def check_quantile(q) -> float:
    """The --plausible QUANTILE, checked where it is given: a number strictly between 0 and 1."""
    try:
        if isinstance(q, bool):
            raise ValueError
        q = float(q)
    except (TypeError, ValueError):
        raise UserError(f"--plausible must be a quantile between 0 and 1 (e.g. 0.99), got {q!r}") from None
    if not 0.0 < q < 1.0:
        raise UserError(f"--plausible must be a quantile strictly between 0 and 1 (e.g. 0.99), got {q!r}")
    return q


def feasibility_first(activation, violation, floor: float, scale: float = 1.0) -> np.ndarray:
    """The value told for each stimulus: its activation when feasible (``violation <= 0``), else
    ``floor - scale * violation``. With ``floor`` at or below every feasible activation, every feasible
    stimulus ranks above every infeasible one, and among infeasible ones a smaller violation ranks
    higher. NaN (a missing response) stays NaN."""
    a = np.asarray(activation, dtype=np.float64)
    v = np.asarray(violation, dtype=np.float64)
    floor = min(float(floor), float(np.nanmin(a[v <= 0]))) if np.any(v <= 0) else float(floor)
    out = np.where(v <= 0, a, floor - float(scale) * np.maximum(v, 0.0))
    return np.where(np.isnan(a) | np.isnan(v), np.nan, out)


class PlausibleScorer:
    """Target activation(s) and plausibility distance from one forward pass; see the module docstring.

    joint: a scorer returning (n, k + D), the k targets first, then the D units of ``layer``;
    fit: a :class:`xdream_ts.analysis.ReferenceFit` of the layer on the reference series.
    """

    noisy = False
    objective_name = "plausible"

    def __init__(self, joint, k: int, fit, quantile: float, layer: str, objective: str = "sum",
                 method: str = "penalty", floor: float = 0.0, scale: float = 1.0,
                 target_names=None, reference: dict | None = None):
        from .objective import Objective

        if method not in METHODS:
            raise UserError(f"unknown plausibility method {method!r}: use {' or '.join(METHODS)}")
        self.joint, self.k, self.fit, self.layer, self.method = joint, int(k), fit, layer, method
        self.quantile = check_quantile(quantile)
        self.threshold = float(np.quantile(fit.distances, self.quantile))
        self.inner = Objective(objective, n_targets=self.k)
        self.floor, self.scale, self.lam = float(floor), float(scale) or 1.0, 1.0
        names = list(target_names or getattr(joint, "target_names", None) or [])[: self.k]
        # one name per stored column, even for a scorer that names none (a simulated neuron): the store
        # sizes its score array by the names
        names += [f"target{i}" for i in range(len(names), self.k)]
        self.target_names = names + [f"{DISTANCE_NAME}@{layer}"]
        self.length, self.channels = getattr(joint, "length", None), getattr(joint, "channels", None)
        self.reference = dict(reference or {})
        self.space = ""  # one line: where the distance is measured (set by plausible_scorer)
        self._torch_fit = None
        if callable(getattr(joint, "torch_forward", None)):
            # only a differentiable joint offers the gradient path: dream's bind looks for torch_forward
            self.torch_forward = joint.torch_forward
            self.device = getattr(joint, "device", None)
            self.differentiable = True

    # -- scoring: (n, k + 1) ---------------------------------------------------------------------
    def __call__(self, series: np.ndarray) -> np.ndarray:
        out = np.asarray(self.joint(series), dtype=np.float64)
        return self.split(out)

    def split(self, joint_scores: np.ndarray) -> np.ndarray:
        """(n, k + D) joint scores -> (n, k + 1): the targets and the distance of the layer's part."""
        d = self.fit.mahalanobis(joint_scores[:, self.k:])
        return np.concatenate([joint_scores[:, : self.k], d[:, None]], axis=1)

    def activation(self, scores: np.ndarray) -> np.ndarray:
        """(n, k + 1) -> (n,) the targets' objective (one target: its activation)."""
        return self.inner(scores[:, : self.k]) if self.k > 1 else scores[:, 0]

    def violation(self, scores: np.ndarray) -> np.ndarray:
        return (scores[:, self.k] - self.threshold) / self.threshold

    def objective(self, scores: np.ndarray) -> np.ndarray:
        """The value told to the optimizer. Session.tell calls it once per generation (mean over
        repeats), and it keeps its floor / weight as state, which the store records for resume."""
        s = np.asarray(scores, dtype=np.float64)
        a, v = self.activation(s), self.violation(s)
        ok = np.isfinite(a) & np.isfinite(v)
        if self.method == "feasibility-first":
            value = feasibility_first(a, v, self.floor, self.scale)
            feas = ok & (v <= 0)
            if feas.any():  # the floor only moves down: every feasible value stays above it
                self.floor = min(self.floor, float(a[feas].min()))
            return value
        value = np.where(ok, a - self.lam * self.scale * np.maximum(v, 0.0), np.nan)
        if ok.any():
            best = int(np.nanargmax(np.where(ok, value, -np.inf)))
            self.lam = self.lam * 2.0 if v[best] > 0 else max(self.lam / 1.5, 1e-3)
        return value

    # -- the gradient path (dream) ------------------------------------------------------------------
    def torch_distance(self, acts):
        """Mahalanobis distances of (n, D) layer activations (a torch tensor), with the fit's own location
        and precision, so the gradient path and the recorded (numpy) distances measure the same thing."""
        import torch

        if self._torch_fit is None or self._torch_fit[0].device != acts.device:
            est = self.fit.estimator
            self._torch_fit = (torch.as_tensor(est.location_, dtype=acts.dtype, device=acts.device),
                               torch.as_tensor(est.get_precision(), dtype=acts.dtype, device=acts.device))
        mu, prec = self._torch_fit
        diff = acts - mu
        # the clamp keeps sqrt's gradient finite at the mean (d = 0)
        return torch.sqrt(torch.clamp(((diff @ prec) * diff).sum(dim=-1), min=1e-12))

    def torch_objective(self, scores):
        """The value dream ascends, per member, from the joint torch scores (n, k + D); see the module
        docstring. Uses the current lam / floor; ``objective`` (numpy, once per generation) moves them."""
        import torch

        a = self.inner(scores[:, : self.k]) if self.k > 1 else scores[:, 0]
        v = (self.torch_distance(scores[:, self.k:]) - self.threshold) / self.threshold
        if self.method == "feasibility-first":
            return torch.where(v <= 0, a, self.floor - self.scale * v)
        return a - self.lam * self.scale * torch.relu(v)

    # -- state, description --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"floor": self.floor, "lam": self.lam}

    def load_state_dict(self, state: dict) -> None:
        self.floor, self.lam = float(state["floor"]), float(state["lam"])

    def describe(self) -> dict:
        inner = self.joint.describe() if hasattr(self.joint, "describe") else {}
        # model_path and sha256 at the top: show --plausibility and resume look for them there
        return {"name": "plausible", "kind": "plausible", "model_path": inner.get("model_path"),
                "sha256": inner.get("sha256"), "layer": self.layer, "quantile": self.quantile,
                "threshold": self.threshold, "method": self.method,
                "targets": (inner.get("targets") or [])[: self.k], "target_names": list(self.target_names),
                "providers": inner.get("providers"), "space": self.space,
                **({"plausibility_model": inner["plausibility_model"]} if inner.get("plausibility_model") else {})}

    def record(self) -> dict:
        """What a run's config keeps (``config["plausible"]``): enough for ``show`` to report distances
        and percentiles without the model, and to refit the same reference for ``--plausibility``."""
        return {"quantile": self.quantile, "layer": self.layer, "threshold": self.threshold, "method": self.method,
                "space": self.space, "model": getattr(self.joint, "plausibility_model", None),
                "k": self.k, "objective": self.inner.name, "reference": self.reference, "fit": self.fit.summary(),
                "reference_distances": [float(x) for x in self.fit.distances]}


def plausible_scorer(built, quantile: float = DEFAULT_QUANTILE, layer: str | None = None,
                     method: str = "penalty", model: str | None = None) -> PlausibleScorer:
    """The constrained scorer of a built target (:func:`xdream_ts.targets.build`): one ONNX session for
    the target unit(s) and every unit of ``layer`` (default: the penultimate layer), the covariance fitted
    on the run's data (``--data``), or on the shipped FordA sample for the shipped model.

    A target built differentiable (dream) gets its torch twin instead, for the targets and the layer in
    one forward pass, and with it the gradient path. ``model``: a reference ONNX model
    (``--plausibility-model``) whose ``layer`` measures the distance on the same series, for targets
    without layers of their own (or a model target that asks)."""
    from .analysis import default_layer, layer_targets
    from .targets import build, differentiable_twin, is_shipped, shipped_model

    spec = built.spec
    quantile = check_request(spec, quantile, plausibility_model=model)
    differentiable = callable(getattr(built.clean, "torch_forward", None))
    if model is not None:
        return _reference_model_scorer(built, quantile, str(model), layer, method, differentiable)
    if spec.kind != "onnx" or layer == INPUT:
        if differentiable:
            raise UserError("dream --plausible measures the distance in a model layer (its gradient): drop "
                            "--plausibility-layer input, or use a gradient-free optimizer")
        return _input_space_scorer(built, quantile, method)
    model = spec.model or shipped_model()
    layer = layer or default_layer(model)
    units = layer_targets(model, layer)
    joint_spec = spec.with_(units=[*spec.units, *units], data=None, noise="none", reference=None, objective="sum")
    # the gradient path scores through the twin: targets and layer from the same torch forward pass
    joint = differentiable_twin(joint_spec) if differentiable else build(joint_spec).clean
    X, reference = _real_series(built, shipped=is_shipped(spec))
    if X is None:
        raise UserError("--plausible needs the model's real series to measure plausibility against: pass --data")
    scorer = _finish(built, joint, X, quantile, layer, method, reference)
    scorer.space = (f"plausibility measured in layer {layer!r} of the target's own model "
                    f"({_name(model)}{', torch twin' if differentiable else ''}), fitted on {reference['source']}")
    return scorer


def constrain(built, decoder, optimizer, params: dict, config: dict, quantile: float, layer: str | None = None,
              method: str = "penalty", model: str | None = None, seed: int | None = 0, start: bool = True):
    """What ``--plausible`` adds to a run, in one place for ``xdream_ts.run``, ``xdream-ts run`` and sweep
    tasks: the constrained scorer of a built target (:func:`plausible_scorer`), recorded in
    ``config["plausible"]``, and, when ``start`` (not on resume, nor when the caller chose a start), the
    optimizer's start from the most activating feasible real series (:func:`start_codes`). Returns
    (scorer, params)."""
    scorer = plausible_scorer(built, quantile, layer, method, model=model)
    config["plausible"] = scorer.record()
    if start:
        params, info = start_codes(scorer, decoder, optimizer, params, seed)
        if info:
            config["init_info"] = info
    return scorer, params


def _real_series(built, shipped: bool):
    """(X, reference record) of the real series a plausibility fit is made on: the run's data (the series
    scored up front), else the shipped FordA sample when the measuring model is the shipped one; (None,
    None) when neither is there."""
    if built.data is not None:
        idx = built.real_index
        return built.data.squeeze()[idx], {"kind": "data", "source": built.spec.data, "indices": [int(i) for i in idx]}
    if shipped:
        from .reference import sample_series
        return sample_series()[0], {"kind": "shipped", "source": "shipped FordA sample"}
    return None, None


def _name(path) -> str:
    from pathlib import Path
    return Path(str(path)).name


def _input_space_scorer(built, quantile, method) -> "PlausibleScorer":
    X, reference = _real_series(built, shipped=False)
    if X is None:
        raise UserError("--plausible in input space needs the real series to measure against: pass --data")
    scorer = _finish(built, _InputJoint(built.clean, InputFeatures(X)), X, quantile, INPUT, method, reference)
    scorer.space = (f"plausibility measured in input space (the principal components of {built.spec.data}), "
                    "not in a model layer")
    return scorer


def _reference_model_scorer(built, quantile, model: str, layer, method, differentiable) -> "PlausibleScorer":
    """Plausibility in a layer of a reference ONNX model (``--plausibility-model``) on the same series."""
    from pathlib import Path

    from .analysis import default_layer, layer_targets
    from .protocols import shape_of
    from .reference import is_reference_model
    from .targets import TargetSpec, build

    if differentiable:
        raise UserError("dream --plausible with --plausibility-model is not supported: the reference model's "
                        "distance gives no gradient here; use a gradient-free optimizer (default, cmaes, ...)")
    if not Path(model).is_file():
        raise UserError(f"--plausibility-model {model}: no such file; give the reference .onnx model")
    layer = layer or default_layer(model)
    units = layer_targets(model, layer)  # a layer it lacks: one line naming the ones it has
    ref = build(TargetSpec(model=model, units=units, threads=built.spec.threads)).clean
    (tl, tc), (rl, rc) = shape_of(built.clean), shape_of(ref)
    if (tl and rl and int(tl) != int(rl)) or (tc and rc and int(tc) != int(rc)):
        raise UserError(f"--plausibility-model {_name(model)} takes series of length {rl} x {rc or 1} channel(s), "
                        f"the target {tl} x {tc or 1}: the reference model must read the target's series")
    X, reference = _real_series(built, shipped=is_reference_model(model))
    if X is None:
        raise UserError(f"--plausibility-model {_name(model)} needs the real series its layer is fitted on: pass "
                        "--data (only the shipped reference model brings its own sample)")
    joint = _ReferenceJoint(built.clean, ref, model)
    scorer = _finish(built, joint, X, quantile, layer, method, reference)
    scorer.space = (f"plausibility measured in layer {layer!r} of the reference model {_name(model)} "
                    f"(--plausibility-model) on the same series, fitted on {reference['source']}")
    return scorer


class _ReferenceJoint:
    """Target scores and a reference model's layer on the same series, (n, k + D)."""

    def __init__(self, target, reference, model: str):
        self.target, self.reference, self.plausibility_model = target, reference, str(model)
        self.length = getattr(target, "length", None) or getattr(reference, "length", None)
        self.channels = getattr(target, "channels", None) or getattr(reference, "channels", None)
        self.target_names = list(getattr(target, "target_names", None) or [])

    def __call__(self, series) -> np.ndarray:
        s = np.asarray(self.target(series), dtype=np.float64)
        r = np.asarray(self.reference(series), dtype=np.float64)
        return np.concatenate([s[:, None] if s.ndim == 1 else s, r], axis=1)

    def describe(self) -> dict:
        from .loop import describe
        inner = describe(self.target, "scorer")
        ref = describe(self.reference, "scorer")
        # a target without a model of its own (simulated, endpoint): the reference model is the model
        # show --plausibility refits in
        return {**inner, "model_path": inner.get("model_path") or ref.get("model_path"),
                "sha256": inner.get("sha256") or ref.get("sha256"), "plausibility_model": self.plausibility_model}


def _finish(built, joint, X, quantile, layer, method, reference) -> "PlausibleScorer":
    from .analysis import fit_reference

    spec = built.spec
    k = len(spec.units)
    out = np.asarray(joint(X), dtype=np.float64)
    fit = fit_reference(out[:, k:])
    scorer = PlausibleScorer(joint, k, fit, quantile, layer, objective=spec.objective, method=method,
                             target_names=getattr(built.clean, "target_names", None), reference=reference)
    real = scorer.activation(out[:, :k])
    feas = scorer.violation(scorer.split(out)) <= 0
    span = float(np.ptp(real)) if len(real) > 1 else 0.0
    scorer.scale = span if span > 0 else max(abs(float(real.mean())), 1.0)
    # one real range below the lowest feasible real activation: below what a search starting from the
    # real series is likely ever to present, so the floor seldom has to move
    scorer.floor = float(real[feas].min() if feas.any() else real.min()) - scorer.scale
    scorer.reference["n"] = int(len(X))
    # kept for the start (start_codes), not recorded: the config keeps where they came from
    scorer.reference_series, scorer.reference_values = X, feasibility_first(real, scorer.violation(scorer.split(out)),
                                                                            scorer.floor, scorer.scale)
    return scorer


START_N = 10  # encoded real series in the first generation, as the loop starts from --data


def start_codes(scorer: PlausibleScorer, decoder, optimizer, params: dict, seed: int | None = 0):
    """Start the search from the real series that rank best under the constraint (the most activating
    feasible ones), encoded by the decoder, when the optimizer takes start codes. A start at random codes
    lies far outside the real data (distances of 40 to 70 against a real 99th percentile near 8 on the
    shipped model) and may never find the feasible region within a small budget. Returns
    (params, init_info or None); a start the caller chose is kept."""

    from .decoders.encode import initial_codes
    from .optimizers import takes, takes_start_codes

    if not takes_start_codes(optimizer):
        return params, None
    if takes(optimizer, "start_radius_scale"):
        # the default searches a sphere twice the start's norm, away from typical series; here the feasible
        # region is the data's (in whitened codes the norm grows with the distance to the data): keep the
        # sphere through the start, unless the caller chose otherwise
        params = {"start_radius_scale": 1.0, **params}
    X, values = scorer.reference_series, scorer.reference_values
    n = max(1, min(START_N, int(np.isfinite(values).sum())))
    # the decoder's own shape: (n, L) real series for a decoder that writes (n, 1, L), or back
    ndim = np.asarray(decoder(np.zeros((1, decoder.latent_dim)))).ndim
    if ndim == 3 and X.ndim == 2:
        X = X[:, None, :]
    elif ndim == 2 and X.ndim == 3 and X.shape[1] == 1:
        X = X[:, 0]
    codes, idx = initial_codes(decoder, X, values, n, "best", seed=int(seed or 0), return_indices=True)
    info = {"which": "best plausible", "n": n, "source": scorer.reference.get("source"), "ranked": int(len(X)),
            "indices": [int(i) for i in idx]}
    return {**params, "init": codes}, info


INPUT = "input"  # the --plausibility-layer of input space


class InputFeatures:
    """A series' coordinates in input space: its projections on the principal components of the real
    series that hold ``variance`` of their variance (at most ``max_components``). The auto decoder is a
    whitened PCA of the same data, so this is the decoder's latent distance under the data for its own
    stimuli; unlike a layer, it is blind to what lies outside those components (1 % of the real variance)."""

    def __init__(self, X, variance: float = 0.99, max_components: int = 64):
        from sklearn.decomposition import PCA

        F = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        n = min(max_components, len(F) - 1, F.shape[1])
        if n < 1:
            raise UserError(f"{len(F)} real series are too few for input-space plausibility: give hundreds (--data)")
        pca = PCA(n_components=n, svd_solver="full").fit(F)
        keep = min(n, int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), variance)) + 1)
        self.mean, self.components = pca.mean_, pca.components_[:keep]

    def __call__(self, series) -> np.ndarray:
        F = np.asarray(series, dtype=np.float64).reshape(len(series), -1)
        return (F - self.mean) @ self.components.T


class _InputJoint:
    """Target scores and input-space coordinates of the same series, (n, k + D)."""

    def __init__(self, target, features: InputFeatures):
        self.target, self.features = target, features
        self.length, self.channels = getattr(target, "length", None), getattr(target, "channels", None)
        self.target_names = list(getattr(target, "target_names", None) or [])

    def __call__(self, series) -> np.ndarray:
        s = np.asarray(self.target(series), dtype=np.float64)
        return np.concatenate([s[:, None] if s.ndim == 1 else s, self.features(series)], axis=1)

    def describe(self) -> dict:
        from .loop import describe
        return {**describe(self.target, "scorer"), "plausibility_space": INPUT}


def check_request(spec, quantile, optimizer=None, plausibility_model=None) -> float:
    """Every refusal of a --plausible run, before anything is built or written: the quantile, a target
    without layers (and neither data nor a reference model), noise, and dream where its distance would
    have no gradient."""
    q = check_quantile(quantile)
    if spec.kind != "onnx" and not spec.data and not plausibility_model:
        refuse_without_layers(spec)
    if spec.noise not in (None, "none"):
        raise UserError("--plausible with --noise is not supported yet: the noise would fall on the distance too; "
                        "drop --noise or --plausible")
    if plausibility_model and (optimizer == "dream" or getattr(optimizer, "needs_gradients", False)):
        raise UserError("dream --plausible with --plausibility-model is not supported: the reference model's "
                        "distance gives no gradient here; use a gradient-free optimizer (default, cmaes, ...)")
    return q


def refuse_without_layers(spec) -> None:
    """One line for a target with no internal layers and no data to measure plausibility against."""
    if spec.kind != "onnx":
        what = "a remote endpoint" if spec.kind == "endpoint" else "a simulated neuron"
        raise UserError(f"--plausible needs a model's internal layer, and {what} has none: pass a reference model "
                        "with --plausibility-model PATH (e.g. the shipped reference_resnet.onnx), or --data to "
                        "measure it in input space")


def reference_series(record: dict, length: int | None = None) -> np.ndarray:
    """The reference series a plausible run fitted its covariance on, from its config record; ``length``:
    the run's series length (the data are read at it, as the run read them)."""
    ref = record.get("reference") or {}
    if ref.get("kind") == "shipped":
        from .reference import sample_series
        return sample_series()[0]
    if ref.get("kind") == "data":
        from .data import load_dataset
        X = load_dataset(ref["source"], length=length).squeeze()
        return X[np.asarray(ref["indices"], dtype=np.intp)]
    raise UserError("this plausible run does not record its reference series: pass --reference-data")


def input_space_summary(run, rec: dict, reference=None) -> dict:
    """``show --plausibility`` of a run measured in input space: the features and the covariance refitted
    on the recorded reference series (or on ``reference``, a path or an array), the reported series' distance."""
    from .analysis import fit_reference, load_reference_data

    source = (rec.get("reference") or {}).get("source")
    if reference is None:
        X = reference_series(rec, run.series.shape[-1])
    elif isinstance(reference, np.ndarray):
        X, source = reference, "given"
    else:
        X, source = load_reference_data(reference), str(reference)
    feats = InputFeatures(X)
    fit = fit_reference(feats(X))
    g, p = run.reported_index
    d = fit.mahalanobis(feats(run.series[g, p][None]))
    return {"layer": INPUT, "reference_source": source, **fit.summary(), "best_distance": float(d[0]),
            "best_percentile": float(fit.percentile(d)[0])}


# ------------------------------------------------------------------------------------- reporting
def summary(run) -> dict | None:
    """A plausible run's report, from its store alone (no model needed): the reported (best feasible)
    stimulus with its activation, relative activation, distance and percentile, and beside it the best
    unconstrained stimulus seen. Keys as :func:`xdream_ts.analysis.plausibility_summary` (``best_*``)."""
    rec = (run.config or {}).get("plausible")
    if not rec:
        return None
    act, dist = activation_and_distance(run)
    if act is None or not np.isfinite(act).any():
        return None
    ref = np.sort(np.asarray(rec["reference_distances"], dtype=np.float64))

    def pct(d):
        return float(100.0 * np.searchsorted(ref, d, side="right") / len(ref))

    ref_max = run.reference_max

    def entry(g, p):
        a, d = float(act[g, p]), float(dist[g, p])
        return {"generation": int(g), "member": int(p), "activation": a,
                "relative_activation": a / ref_max if ref_max else None, "distance": d, "percentile": pct(d),
                "feasible": bool(d <= rec["threshold"])}

    g, p = reported_index(run)
    best = entry(g, p)
    free = np.where(np.isfinite(act), act, -np.inf)
    ug, up = np.unravel_index(int(np.argmax(free)), free.shape)
    fit = rec.get("fit") or {}
    return {"layer": rec["layer"], "space": rec.get("space"), "quantile": rec["quantile"], "threshold": rec["threshold"],
            "method": fit.get("method"), "constraint": rec["method"], "n_reference": fit.get("n_reference"),
            "reference_median": fit.get("reference_median"), "reference_p95": fit.get("reference_p95"),
            "reference_source": (rec.get("reference") or {}).get("source"),
            "best_distance": best["distance"], "best_percentile": best["percentile"], "feasible": best["feasible"],
            "n_feasible": int(np.sum(np.isfinite(act) & (dist <= rec["threshold"]))),
            "reported": best, "unconstrained": entry(ug, up)}


def activation_and_distance(run):
    """(activation (G, P), distance (G, P)) of a plausible run: means over repeats of its stored scores."""
    rec = (run.config or {}).get("plausible")
    s = np.asarray(run.scores, dtype=np.float64)
    if not rec or s.ndim != 4:
        return None, None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(s, axis=2)  # (G, P, k + 1)
    k = int(rec["k"])
    if k > 1:
        from .objective import Objective
        flat = mean[..., :k].reshape(-1, k)
        act = Objective(rec["objective"], n_targets=k)(flat).reshape(mean.shape[:2])
    else:
        act = mean[..., 0]
    shown = np.arange(s.shape[1])[None, :] < np.asarray(run.n_evaluated)[:, None]
    return np.where(shown, act, np.nan), np.where(shown, mean[..., k], np.nan)


def feasible_activation(run) -> np.ndarray | None:
    """(G, P) activation of a plausible run's feasible stimuli, NaN elsewhere (None for other runs): what
    its best, its trajectory and its report are read from, since it tells its optimizer a penalised value."""
    act, dist = activation_and_distance(run)
    if act is None:
        return None
    return np.where(np.isfinite(act) & (dist <= run.config["plausible"]["threshold"]), act, np.nan)


def reported_index(run) -> tuple[int, int]:
    """The best feasible stimulus by activation; when none is feasible, the one of smallest distance."""
    rec = run.config["plausible"]
    act, dist = activation_and_distance(run)
    ok = np.isfinite(act) & np.isfinite(dist)
    if not ok.any():
        raise UserError("this run has no valid score yet: nothing to report")
    feas = ok & (dist <= rec["threshold"])
    if feas.any():
        flat = np.where(feas, act, -np.inf)
    else:
        flat = np.where(ok, -dist, -np.inf)
    g, p = np.unravel_index(int(np.argmax(flat)), flat.shape)
    return int(g), int(p)


def format_lines(p: dict) -> list[str]:
    """Lines for ``xdream-ts show`` / ``run`` of a plausible run, after the plausibility line."""
    def f(v):
        return "n/a" if v is None else f"{v:.4g}"
    r, u = p["reported"], p["unconstrained"]
    space = [f"  space        {p['space']}"] if p.get("space") else []
    head = (f"plausible      {'feasible' if r['feasible'] else 'NO feasible stimulus found: reported the closest'}"
            f" (distance <= {f(p['threshold'])}, the {100 * p['quantile']:.3g}% quantile of the real series; "
            f"{p['n_feasible']} feasible presented)")
    rep = (f"  reported     activation {f(r['activation'])}  relative {f(r['relative_activation'])}  distance "
           f"{f(r['distance'])}  percentile {r['percentile']:.0f}  (generation {r['generation']}, member {r['member']})")
    free = (f"  unconstrained activation {f(u['activation'])}  relative {f(u['relative_activation'])}  distance "
            f"{f(u['distance'])}  percentile {u['percentile']:.0f}  (the best activation seen, feasible or not)")
    return [head, *space, rep, free]
