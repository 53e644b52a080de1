"""The loop: codes --decoder--> series --scorer--> scores --optimizer--> codes, one generation at a time.

Every generation is appended to the run store before the next one starts, with the optimizer's and the
scorer's state, so a run killed at any moment resumes from its last complete generation and continues
exactly as an uninterrupted run would. The budget counts presentations (every repeat of every series),
as the papers do.
"""
from __future__ import annotations

import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import serial
from .errors import UserError
from .store import RunStore


# ---------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A finished (or interrupted) run, in memory. Arrays are (generation, population, ...)."""

    config: dict
    codes: np.ndarray
    series: np.ndarray
    scores: np.ndarray            # observed: (G, P, R[, k])
    objective: np.ndarray         # what the optimizer was told: (G, P)
    clean_scores: np.ndarray | None
    n_evaluated: np.ndarray
    presentations: int
    complete: bool
    path: Path | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def generations(self) -> int:
        return int(len(self.n_evaluated))

    @property
    def best_index(self) -> tuple[int, int]:
        """(generation, member) of the best series by observed objective (mean over its repeats)."""
        obj = np.where(np.isfinite(self.objective), self.objective, -np.inf)
        if not np.isfinite(obj).any():
            raise UserError("this run has no valid score yet: nothing to report")
        g, p = np.unravel_index(int(np.argmax(obj)), obj.shape)
        return int(g), int(p)

    @property
    def best_score(self) -> float:
        return float(self.objective[self.best_index])

    @property
    def best_series(self) -> np.ndarray:
        return self.series[self.best_index]

    @property
    def best_code(self) -> np.ndarray:
        return self.codes[self.best_index]

    @property
    def best_clean_score(self) -> float | None:
        """Clean (noiseless) response of the best-observed series: what an experimenter really got."""
        if self.clean_scores is None:
            return None
        value = self.clean_objective[self.best_index]
        return float(value)

    @property
    def clean_objective(self) -> np.ndarray | None:
        if self.clean_scores is None:
            return None
        return combine_targets(self.clean_scores, self.config.get("objective"))

    @property
    def best_per_generation(self) -> np.ndarray:
        """Running maximum of the observed objective, one value per generation."""
        per_gen = np.nanmax(np.where(np.isfinite(self.objective), self.objective, -np.inf), axis=1)
        return np.maximum.accumulate(per_gen)

    @property
    def reference_max(self) -> float | None:
        return self.config.get("reference_max")

    @property
    def reported_index(self) -> tuple[int, int]:
        """(generation, member) of the series this run reports: the optimizer's incumbent when it keeps one
        (``default`` under noise: its mean over several presentations, not one lucky response), else the
        best observed series."""
        rec = (self.attrs or {}).get("incumbent")
        return (int(rec["generation"]), int(rec["member"])) if rec else self.best_index

    @property
    def relative_activation(self) -> float | None:
        """Activation of the reported series (clean when known; else its mean observed response) / the
        unit's best activation over a reference dataset (> 1: a super stimulus)."""
        ref = self.reference_max
        if not ref:
            return None
        if self.clean_scores is not None:
            value = self.clean_objective[self.reported_index]
        else:
            rec = (self.attrs or {}).get("incumbent")
            value = rec["mean_score"] if rec else self.best_score
        return float(value / ref)

    @property
    def incumbent(self) -> dict | None:
        """The optimizer's own pick (noisy runs of ``default``): where it was shown, its mean response over
        ``measurements`` presentations, and its clean response when the scorer knows it. None otherwise."""
        rec = (self.attrs or {}).get("incumbent")
        if not rec:
            return None
        out = dict(rec)
        if self.clean_scores is not None:
            out["clean_score"] = float(self.clean_objective[rec["generation"], rec["member"]])
        return out

    def summary(self) -> dict:
        """The JSON-able summary that `xdream-ts show --json` prints."""
        has = np.isfinite(self.objective).any()
        return {
            "path": str(self.path) if self.path else None,
            "optimizer": self.config.get("optimizer", {}).get("name"),
            "decoder": self.config.get("decoder", {}).get("name"),
            "scorer": self.config.get("scorer", {}).get("name"),
            "best_score": self.best_score if has else None,
            "best_clean_score": self.best_clean_score if has else None,
            "relative_activation": self.relative_activation if has else None,
            "reference_max": self.reference_max,
            "presentations": int(self.presentations),
            "budget": self.config.get("budget"),
            "generations": self.generations,
            "repeats": self.config.get("repeats"),
            "missing_responses": int(np.isnan(self.scores[..., 0] if self.scores.ndim == 4 else self.scores)
                                     [self._evaluated_mask()].sum()),
            "seed": self.config.get("seed"),
            "complete": bool(self.complete),
            "incumbent": self.incumbent,
        }

    def _evaluated_mask(self) -> np.ndarray:
        P = self.objective.shape[1]
        return np.arange(P)[None, :] < self.n_evaluated[:, None]


def combine_targets(scores: np.ndarray, objective: dict | None) -> np.ndarray:
    """(…, k) per-target scores -> (…) objective values for the built-in objectives recorded in a config."""
    kind = (objective or {}).get("kind", "single")
    if kind == "single":
        return scores
    if kind == "sum":
        return scores.sum(axis=-1)
    if kind == "contrast":
        return scores[..., 0] - scores[..., 1:].mean(axis=-1)
    return scores[..., 0]  # a user function cannot be replayed from a store: first target


def load_run(path) -> Run:
    """Read a run store (complete or not) written by :func:`run`."""
    store = RunStore.open(path)
    return _run_from_store(store)


def _run_from_store(store: RunStore) -> Run:
    attrs = store.attrs
    return Run(
        config=attrs.get("config", {}), codes=store.read("codes"), series=store.read("series"),
        scores=store.read("scores"), objective=store.read("objective"), clean_scores=store.read("clean_scores"),
        n_evaluated=store.read("n_evaluated"), presentations=int(attrs["presentations"]),
        complete=bool(attrs.get("complete")), path=store.path, attrs=attrs,
    )


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def _versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in ("xdream-ts", "numpy", "zarr", "onnxruntime-gpu", "onnxruntime", "cma", "nevergrad", "torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _describe(obj, fallback: str) -> dict:
    """A component's resolved config for the store; always with a readable ``name``."""
    desc = dict(obj.describe()) if hasattr(obj, "describe") else {}
    desc.setdefault("name", getattr(obj, "name", None) or type(obj).__name__ or fallback)
    desc.setdefault("class", type(obj).__name__)
    return desc


def _score_chunked(fn, batch: np.ndarray, chunk_size: int | None) -> np.ndarray:
    if chunk_size is None or len(batch) <= chunk_size:
        return np.asarray(fn(batch), dtype=np.float64)
    parts = [np.asarray(fn(batch[i:i + chunk_size]), dtype=np.float64) for i in range(0, len(batch), chunk_size)]
    return np.concatenate(parts)


def _check_scores(scores: np.ndarray, n: int, what: str) -> np.ndarray:
    if scores.shape[0] != n or scores.ndim > 2:
        raise UserError(f"the scorer returned {what} of shape {scores.shape} for {n} series: "
                        f"it must return (n,) or (n, k) scores")
    if np.isinf(scores).any():
        raise UserError(f"the scorer returned inf for {int(np.isinf(scores).sum())} series: "
                        "fix the target (NaN, not inf, marks a missing response)")
    return scores


def _model_digests(described) -> set[str]:
    """Every model file digest (``sha256``) in a scorer's description, nested wrappers included."""
    found = set()
    if isinstance(described, dict):
        for k, v in described.items():
            if k == "sha256" and isinstance(v, str):
                found.add(v)
            else:
                found |= _model_digests(v)
    elif isinstance(described, list):
        for v in described:
            found |= _model_digests(v)
    return found


def run(decoder, scorer, optimizer, budget: int, repeats: int = 1, seed: int | None = 0, store=None,
        resume: bool = False, progress: bool = True, chunk_size: int | None = None,
        reference_max: float | None = None, config: dict | None = None, callback=None,
        write_behind: bool = True, optimizer_params: dict | None = None) -> Run:
    """Search for the series that maximise ``scorer`` through ``decoder``, proposing codes with ``optimizer``.

    decoder   a Decoder (codes (n, d) -> series) or a name such as "basis" / "identity" / "default"
    scorer    a Scorer (series -> (n,) or (n, k) scores; NaN = missing response)
    optimizer an Optimizer (ask/tell) or a name ("genetic", "cmaes", "ng:NGOpt", ...), seeded with ``seed``
    optimizer_params  keyword arguments for an optimizer given by name (e.g. {"population_size": 80},
              {"init": codes}); it is also told whether the scorer is noisy and the evaluations it gets
    budget    presentations: every repeat of every series counts, as in the papers
    repeats   presentations of each series per generation; the optimizer is told their mean
    store     path of a zarr run store (None: in memory); ``resume=True`` continues an interrupted run
    write_behind  write generation g to the store while g+1 is decoded and scored (at most one generation
              in flight; its commit marker is still written last). Disk writes then cost no wall time as
              long as scoring a generation takes longer than writing one (~15 ms here). A crash can lose
              only the generation being written, which resume redoes exactly. False: every generation
              is on disk before the next is presented (a slow lab rig gains nothing from write-behind).
    Returns a :class:`Run`.
    """
    from .decoders import make_decoder
    from .optimizers import make_optimizer

    if int(budget) < 1 or int(repeats) < 1:
        raise UserError(f"budget ({budget}) and repeats ({repeats}) must be positive integers")
    budget, repeats = int(budget), int(repeats)
    if isinstance(decoder, str):
        decoder = make_decoder(decoder, length=getattr(scorer, "length", None),
                               channels=getattr(scorer, "channels", None))
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, decoder.latent_dim, seed=seed, noisy=bool(getattr(scorer, "noisy", False)),
                                   evaluations=budget // repeats, **(optimizer_params or {}))
    elif optimizer_params:
        raise UserError("optimizer_params apply to an optimizer given by name; pass them to your optimizer instead")
    if getattr(optimizer, "needs_gradients", False):
        # gradient-based optimizers (dream) get the differentiable decoder+scorer, or refuse in one line
        optimizer.bind(decoder, scorer)

    has_clean = hasattr(scorer, "clean")
    target_names = list(getattr(scorer, "target_names", []) or [])
    cfg = {
        "decoder": _describe(decoder, "decoder"), "scorer": _describe(scorer, "scorer"),
        "optimizer": _describe(optimizer, "optimizer"), "budget": budget, "repeats": repeats, "seed": seed,
        # how several targets were combined, so a stored run can recompute its clean objective
        "objective": {"kind": getattr(scorer, "objective_name", "sum")} if len(target_names) > 1 else None,
        "reference_max": reference_max, **(config or {}),
    }

    st = None
    if store is not None and resume and Path(store).exists():
        st = RunStore.open(store, mode="r+")
        old = st.attrs.get("config", {})
        for key in ("decoder", "optimizer"):
            if old.get(key, {}).get("name") != cfg[key].get("name"):
                raise UserError(f"cannot resume {store}: it was run with {key} {old.get(key, {}).get('name')!r}, "
                                f"not {cfg[key].get('name')!r}; resume with the same settings")
        # the same model path with other weights (retrained, re-exported) would splice two targets into one run
        was, now = _model_digests(old.get("scorer")), _model_digests(cfg["scorer"])
        if was and now and was != now:
            raise UserError(f"cannot resume {store}: the model file changed since the run started (sha256 "
                            f"{', '.join(sorted(d[:12] for d in was))}, now {', '.join(sorted(d[:12] for d in now))}); "
                            "start a new run with another --out")
        st.ensure_capacity(_generations_for(budget, st.attrs["population_size"], repeats))
        g0 = st.generations_completed
        if g0 > 0:
            state = st.state(g0 - 1)
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scorer") is not None and hasattr(scorer, "load_state_dict"):
                scorer.load_state_dict(state["scorer"])
        # counted from the committed generations themselves, not from a separate counter
        presentations = int(st.read("n_evaluated").sum()) * int(st.attrs["repeats"])
        cfg = {**old, "budget": budget}
        st.group.update_attributes({"config": cfg, "budget": budget, "complete": False})
    else:
        g0, presentations = 0, 0

    pbar = None
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm
        pbar = tqdm(total=budget, initial=presentations, unit="pres", dynamic_ncols=True, leave=True)

    best = -np.inf
    if st is not None and g0 > 0:
        obj = st.read("objective")
        best = float(np.nanmax(obj)) if np.isfinite(obj).any() else -np.inf
    g = g0
    t_start = time.perf_counter()
    writer = ThreadPoolExecutor(max_workers=1) if write_behind else None
    pending = None
    try:
        while presentations < budget:
            codes = np.asarray(optimizer.ask(), dtype=np.float64)
            P = len(codes)
            n = min(P, (budget - presentations) // repeats)
            if n == 0:
                break
            series = np.asarray(decoder(codes[:n]))
            if st is None:
                st = RunStore.create(store, population_size=P, dim=codes.shape[1], series_shape=series.shape[1:],
                                     repeats=repeats, n_targets=max(1, len(target_names)), budget=budget,
                                     has_clean=has_clean,
                                     attrs={"config": cfg, "versions": _versions(), "seed": seed, "budget": budget,
                                            "target_names": target_names})
            elif P != st.attrs["population_size"]:
                raise RuntimeError(f"optimizer changed its population size from {st.attrs['population_size']} to {P}")

            # One scorer call per generation: every repeat of every series in one batch.
            if hasattr(scorer, "add_noise"):
                clean = _check_scores(_score_chunked(scorer.clean, series, chunk_size), n, "clean scores")
                observed = scorer.add_noise(np.concatenate([clean] * repeats))
            else:
                observed = _score_chunked(scorer, np.concatenate([series] * repeats), chunk_size)
                clean = (_check_scores(_score_chunked(scorer.clean, series, chunk_size), n, "clean scores")
                         if has_clean else None)
            observed = _check_scores(np.asarray(observed, dtype=np.float64), n * repeats, "scores")
            observed = np.moveaxis(observed.reshape(repeats, n, *observed.shape[1:]), 0, 1)  # (n, R[, k])

            with warnings.catch_warnings():  # all-NaN rows are missing responses, not errors
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(observed, axis=1)
            value = scorer.objective(mean) if mean.ndim == 2 and hasattr(scorer, "objective") else mean
            value = mean[:, 0] if np.ndim(value) == 2 else value
            told = np.full(P, np.nan)
            told[:n] = value  # codes the budget left unshown count as missing responses
            optimizer.tell(codes, told)

            presentations += n * repeats
            # state snapshot taken now, in this thread: the writer must not see later changes
            state = serial.dumps({"optimizer": optimizer.state_dict(),
                                  "scorer": scorer.state_dict() if hasattr(scorer, "state_dict") else None})
            record = dict(codes=codes, series=series, scores=observed, objective=told, clean=clean, n_evaluated=n,
                          state=state, presentations=presentations)
            if writer is None:
                st.append(g, **record)
            else:
                if pending is not None:
                    pending.result()  # at most one generation in flight; a write error surfaces here
                pending = writer.submit(st.append, g, **record)
            if np.isfinite(told).any():
                best = max(best, float(np.nanmax(told)))
            g += 1
            if pbar is not None:
                pbar.update(n * repeats)
                pbar.set_postfix_str(f"gen {g} best {best:.4g}")
            if callback is not None:
                callback(g, presentations, best)
    finally:
        if pending is not None:
            pending.result()  # whatever happened, the last complete generation reaches the disk
        if writer is not None:
            writer.shutdown()
        if pbar is not None:
            pbar.close()
    if st is None:
        raise UserError("the budget is smaller than one presentation of one series: raise --budget")
    result = _run_from_store(st)
    st.mark_complete({"best_score": result.best_score if np.isfinite(best) else None,
                      "wall_seconds": round(time.perf_counter() - t_start, 3),
                      "incumbent": _incumbent_record(optimizer, result)})
    result.complete = True
    result.attrs = st.attrs
    return result


def _incumbent_record(optimizer, result: Run) -> dict | None:
    """Where the optimizer's own pick of the best (mean response over several measurements, ``default``
    under noise) was shown, with its mean and count. Under noise the best *observed* response is a lucky
    draw; this is the series to report. None when the optimizer keeps no incumbent."""
    inc = optimizer.incumbent() if hasattr(optimizer, "incumbent") else None
    if inc is None:
        return None
    code, mean, n = inc
    hits = np.argwhere(np.all(result.codes == np.asarray(code)[None, None, :], axis=-1))
    hits = [h for h in hits if h[1] < result.n_evaluated[h[0]]]
    if not hits:
        return None
    g, p = (int(v) for v in hits[0])
    return {"generation": g, "member": p, "mean_score": float(mean), "measurements": int(n)}


def _generations_for(budget: int, population: int, repeats: int) -> int:
    return max(1, -(-budget // (population * repeats)))
