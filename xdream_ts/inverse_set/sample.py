"""The entry point, :func:`inverse_set`: checks the request, picks the method (gradient when the target
is differentiable and noiseless), runs it and assembles the :class:`InverseSet`."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import UserError, require_torch
from .constraints import ConstraintTargets, describe_component, parse_constraints
from .evaluation import Evaluator
from .features import Features
from .free import sample_free
from .gradient import sample_gradient, torch_decoder
from .store import InverseSet

METHODS = ("auto", "gradient", "free")


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

    The inverse set of [z1, z2] is every series x with z1 <= a(x) <= z2: what else the unit responds
    to at that level. The methods are described with :func:`~xdream_ts.inverse_set.gradient.sample_gradient`
    and :func:`~xdream_ts.inverse_set.free.sample_free`. Every returned sample was scored by ``scorer``
    itself (numpy, exactly the float32 series returned), and its mean over ``repeats`` presentations
    lies in range (see :func:`~xdream_ts.inverse_set.constraints.range_stats` for the statistics kept
    under noise); the gradient path's torch activations only propose. Presentations are counted as the
    loop counts them (each repeat of each series; a series shown once counts once however many scorers
    record it); the gradient path also counts each series passed through ``torch_forward``. When the
    scorer is simulated (``clean``), the clean activations are stored too, so the estimate can be checked.
    """
    from ..loop import versions

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
        from ..decoders import make_decoder
        decoder = make_decoder(decoder, length=getattr(main, "length", None), channels=getattr(main, "channels", None))
    targets = ConstraintTargets(scorer, cons)
    features = Features(feature_fn)
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
            tdec, why_not = torch_decoder(decoder)
        if method == "gradient" and why_not:
            raise UserError(f"method 'gradient' is not possible: {why_not}")
    use = "gradient" if (method == "gradient" or (method == "auto" and not why_not)) else "free"

    ev = Evaluator(decoder, targets, features, repeats, float(min_confidence))
    rng = np.random.default_rng(seed)
    from ..progress import progress_bar
    pbar = progress_bar(total=n, unit="sample", desc=f"inverse set ({use})", enabled=progress)

    def report():
        pbar.update(ev.archive.size - pbar.n)  # the archive's size is the position: step to it
        pbar.set_postfix_str(f"{targets.presentations} pres")
        if callback is not None:
            callback(ev.archive.size, targets.presentations)

    try:
        if use == "gradient":
            info = sample_gradient(ev, tdec, n, budget, rng, n_seeds=int(n_seeds), beta=float(beta),
                             k_nearest=int(k_nearest), report=report)
        else:
            info = sample_free(ev, n, budget, rng, seed, optimizer=optimizer, beta=float(beta),
                         k_nearest=int(k_nearest), report=report)
    finally:
        pbar.close()

    a = ev.archive
    k = a.size
    d = int(decoder.latent_dim)
    empty_series = np.zeros((0, *np.shape(decoder(np.zeros((1, d))))[1:]), np.float32) if k == 0 else None
    m = len(cons)
    config = {"decoder": describe_component(decoder), "scorer": describe_component(scorer) if scorer is not None else None,
              "features": features.name, "diversity_optimised_in": features.optimised_in if use == "gradient" else features.name,
              "method_requested": method, "n": n, "budget": budget, "repeats": repeats, "seed": seed,
              "min_confidence": float(min_confidence), "optimizer": optimizer if use == "free" else None,
              "n_seeds": int(n_seeds) if use == "gradient" else None, "beta": float(beta),
              "k_nearest": int(k_nearest), "versions": versions()}
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
