"""The baseline an inverse set is compared with: the in-range series a plain optimizer run visited."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import UserError
from .constraints import parse_constraints, range_stats
from .features import Features
from .store import InverseSet


def baseline_from_run(run, constraints, feature_fn=None, scorer=None,
                      max_presentations: int | None = None) -> InverseSet:
    """The in-range series a plain ``xdream_ts.run`` visited (a Run or a run-store path), as an InverseSet.

    Constraint targets index the columns of the run's scores (one scorer per run); a series is in range
    when the mean of its repeats is, as in :func:`inverse_set`. ``max_presentations`` reads the run
    only up to the last generation within that many presentations (one run, compared at several budgets).
    """
    from ..loop import Run, load_run
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
    st = range_stats(observed, lo, hi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ok = np.all((st["mean"] >= lo) & (st["mean"] <= hi), axis=1)
    series, codes = run.series[mask][ok], run.codes[mask][ok]
    feats = Features(feature_fn)(series, codes) if ok.any() else np.zeros((0, 0))
    clean = None
    if run.clean_scores is not None:
        cs = run.clean_scores[mask]
        cs = cs[..., None] if cs.ndim == 1 else cs
        clean = np.stack([cs[:, c.target] for c in cons], axis=-1)[ok]
    return InverseSet(series=series, codes=codes, activations=st["mean"][ok], observed=observed[ok],
                      features=feats, p_in_range=st["p_in_range"][ok], in_range_fraction=st["in_range_fraction"][ok],
                      ci_low=st["ci_low"][ok], ci_high=st["ci_high"][ok], constraints=cons, method="baseline",
                      presentations=presentations, n_requested=int(ok.sum()), clean_activations=clean,
                      config={"features": Features(feature_fn).name, "run": str(run.path) if run.path else None,
                              "optimizer": run.config.get("optimizer", {}).get("name")},
                      info={"visited": int(mask.sum())})


class _NamedTargets:
    """Stands in for a scorer when parsing constraints against a stored run's target names."""

    def __init__(self, run):
        self.target_names = list(run.attrs.get("target_names") or [])

    def __call__(self, series):  # never called: only names are read
        raise RuntimeError
