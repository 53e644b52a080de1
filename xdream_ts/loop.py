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
from .objective import replay
from .protocols import (Describable, GradientOptimizer, HasClean, KeepsIncumbent, MultiTarget, Noisy, Stateful,
                        is_noisy, shape_of)
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
        return replay(self.clean_scores, self.config.get("objective"))

    @property
    def best_per_generation(self) -> np.ndarray:
        """Running maximum of the observed objective, one value per generation; for a plausible run, of the
        activation of its feasible stimuli (NaN before the first feasible one), what it would report so far."""
        obj = self.objective
        if self.config.get("plausible"):  # its told objective is a penalised value, not the activation
            from .plausible import feasible_activation
            obj = feasible_activation(self)
        best = np.maximum.accumulate(np.max(np.where(np.isfinite(obj), obj, -np.inf), axis=1))
        return np.where(np.isfinite(best), best, np.nan)

    @property
    def reference_max(self) -> float | None:
        return self.config.get("reference_max")

    @property
    def reported_index(self) -> tuple[int, int]:
        """(generation, member) of the series this run reports: the optimizer's incumbent when it keeps one
        (under noise: the default's by its mean over several presentations, cmaes's last mean shown, the
        GA's conserved code; never one lucky response), else the best observed series."""
        if self.config.get("plausible"):  # a plausible run reports its best feasible stimulus (issue 16)
            from .plausible import reported_index
            return reported_index(self)
        rec = (self.attrs or {}).get("incumbent")
        return (int(rec["generation"]), int(rec["member"])) if rec else self.best_index

    @property
    def relative_activation(self) -> float | None:
        """Activation of the reported series (clean when known; else its mean observed response) / the
        unit's best activation over a reference dataset (> 1: a super stimulus)."""
        ref = self.reference_max
        if not ref:
            return None
        if self.config.get("plausible"):  # its told objective is a rank, not the activation
            from .plausible import activation_and_distance
            return float(activation_and_distance(self)[0][self.reported_index] / ref)
        if self.clean_scores is not None:
            value = self.clean_objective[self.reported_index]
        else:
            rec = (self.attrs or {}).get("incumbent")
            value = rec["mean_score"] if rec else self.best_score
        return float(value / ref)

    @property
    def incumbent(self) -> dict | None:
        """The optimizer's own pick (noisy runs of default, cmaes, genetic): where it was shown, its mean
        response over ``measurements`` presentations, and its clean response when the scorer knows it. None
        otherwise."""
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
            # the series this run reports (issue 16): the incumbent, the best observed, or for a plausible
            # run its best feasible stimulus
            "reported": dict(zip(("generation", "member"), self.reported_index)) if has else None,
            **({"plausibility": self._plausibility()} if self.config.get("plausible") and has else {}),
        }

    def _plausibility(self) -> dict | None:
        from .plausible import summary
        return summary(self)

    def _evaluated_mask(self) -> np.ndarray:
        P = self.objective.shape[1]
        return np.arange(P)[None, :] < self.n_evaluated[:, None]


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
# The session: one generation at a time, driven by run() or from outside (the lab rig)
# ---------------------------------------------------------------------------------------------------
def versions() -> dict:
    """Versions of Python and the packages a run depends on, for the store."""
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in ("xdream-ts", "numpy", "zarr", "onnxruntime-gpu", "onnxruntime", "cma", "nevergrad", "torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def describe(obj, fallback: str) -> dict:
    """A component's resolved config for the store; always with a readable ``name``."""
    desc = dict(obj.describe()) if isinstance(obj, Describable) else {}
    desc.setdefault("name", getattr(obj, "name", None) or type(obj).__name__ or fallback)
    desc.setdefault("class", type(obj).__name__)
    return desc


def model_digests(described) -> set[str]:
    """Every model file digest (``sha256``) in a component's description, nested wrappers included."""
    found = set()
    if isinstance(described, dict):
        for k, v in described.items():
            if k == "sha256" and isinstance(v, str):
                found.add(v)
            else:
                found |= model_digests(v)
    elif isinstance(described, list):
        for v in described:
            found |= model_digests(v)
    return found


def generations_for(budget: int, population: int, repeats: int) -> int:
    """Generations a budget of presentations takes at this population and number of repeats."""
    return max(1, -(-budget // (population * repeats)))


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


@dataclass
class Generation:
    """One generation asked and not yet told: codes (P, d), and the series of the ``n`` the budget lets
    be shown (the rest count as missing responses)."""

    index: int
    codes: np.ndarray
    series: np.ndarray
    n: int


class Session:
    """ask -> present -> tell -> commit, one generation at a time, resumable.

    ``ask()`` opens the next generation (None when the budget is spent); ``present(gen)`` shows it to the
    scorer (every repeat of every series in one call); ``tell(gen, observed, clean)`` tells the optimizer
    the mean over repeats and commits the generation to the store with the optimizer's and the scorer's
    state. A caller that presents stimuli itself (the lab rig) calls ask and tell and never present.
    ``finish()`` marks the store complete and returns the :class:`Run`. Arguments as :func:`run`.
    """

    def __init__(self, decoder, scorer, optimizer, budget: int, repeats: int = 1, seed: int | None = 0,
                 store=None, resume: bool = False, chunk_size: int | None = None,
                 reference_max: float | None = None, config: dict | None = None, write_behind: bool = True,
                 optimizer_params: dict | None = None, n_targets: int | None = None):
        from .decoders import make_decoder
        from .optimizers import make_optimizer

        if isinstance(budget, bool) or isinstance(repeats, bool) or int(budget) < 1 or int(repeats) < 1:
            raise UserError(f"budget ({budget}) and repeats ({repeats}) must be positive integers")
        self.budget, self.repeats, self.seed, self.chunk_size = int(budget), int(repeats), seed, chunk_size
        length, channels = shape_of(scorer) if scorer is not None else (None, None)
        if isinstance(decoder, str):
            decoder = make_decoder(decoder, length=length, channels=channels)
        if isinstance(optimizer, str):
            optimizer = make_optimizer(optimizer, decoder.latent_dim, seed=seed, noisy=is_noisy(scorer),
                                       evaluations=self.budget // self.repeats, **(optimizer_params or {}))
        elif optimizer_params:
            raise UserError("optimizer_params apply to an optimizer given by name; pass them to your optimizer instead")
        if isinstance(optimizer, GradientOptimizer) and optimizer.needs_gradients:
            # gradient-based optimizers (dream) get the differentiable decoder+scorer, or refuse in one line
            optimizer.bind(decoder, scorer)
        self.decoder, self.scorer, self.optimizer = decoder, scorer, optimizer
        self.has_clean = isinstance(scorer, HasClean)
        self.target_names = list(scorer.target_names or []) if isinstance(scorer, MultiTarget) else []
        self.cfg = {
            "decoder": describe(decoder, "decoder"), "scorer": describe(scorer, "scorer"),
            "optimizer": describe(optimizer, "optimizer"), "budget": self.budget, "repeats": self.repeats,
            "seed": seed,
            # how several targets were combined, so a stored run can recompute its clean objective
            "objective": ({"kind": getattr(scorer, "objective_name", "sum")} if len(self.target_names) > 1 else None),
            "reference_max": reference_max, **(config or {}),
        }
        self.n_targets = n_targets or max(1, len(self.target_names))
        self.path = None if store is None else Path(store)
        self.store: RunStore | None = None
        self.g, self.presentations, self.best = 0, 0, -np.inf
        if self.path is not None and resume and self.path.exists():
            self._reopen()
        self._writer = ThreadPoolExecutor(max_workers=1) if write_behind else None
        self._pending = None
        self.t_start = time.perf_counter()

    # -- resume --------------------------------------------------------------------------------------
    def _reopen(self) -> None:
        st = RunStore.open(self.path, mode="r+")
        old = st.attrs.get("config", {})
        for key in ("decoder", "optimizer"):
            if old.get(key, {}).get("name") != self.cfg[key].get("name"):
                raise UserError(f"cannot resume {self.path}: it was run with {key} {old.get(key, {}).get('name')!r}, "
                                f"not {self.cfg[key].get('name')!r}; resume with the same settings")
        if old.get("repeats", self.repeats) != self.repeats:
            raise UserError(f"cannot resume {self.path}: it was run with repeats {old.get('repeats')}, not "
                            f"{self.repeats}; resume with the same settings")
        # the same model path with other weights (retrained, re-exported) would splice two targets into one run
        was, now = model_digests(old.get("scorer")), model_digests(self.cfg["scorer"])
        if was and now and was != now:
            raise UserError(f"cannot resume {self.path}: the model file changed since the run started (sha256 "
                            f"{', '.join(sorted(d[:12] for d in was))}, now {', '.join(sorted(d[:12] for d in now))}); "
                            "start a new run with another --out")
        st.ensure_capacity(generations_for(self.budget, st.attrs["population_size"], self.repeats))
        self.g = st.generations_completed
        if self.g > 0:
            state = st.state(self.g - 1)
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scorer") is not None and isinstance(self.scorer, Stateful):
                self.scorer.load_state_dict(state["scorer"])
            obj = st.read("objective")
            self.best = float(np.nanmax(obj)) if np.isfinite(obj).any() else -np.inf
        # counted from the committed generations themselves, not from a separate counter
        self.presentations = int(st.read("n_evaluated").sum()) * int(st.attrs["repeats"])
        self.cfg = {**old, "budget": self.budget}
        st.group.update_attributes({"config": self.cfg, "budget": self.budget, "complete": False})
        self.store = st

    @property
    def done(self) -> bool:
        return self.presentations >= self.budget

    # -- one generation ------------------------------------------------------------------------------
    def ask(self) -> Generation | None:
        """The next generation's codes and series, or None when the budget is spent."""
        if self.done:
            return None
        codes = np.asarray(self.optimizer.ask(), dtype=np.float64)
        P = len(codes)
        n = min(P, (self.budget - self.presentations) // self.repeats)
        if n == 0:
            return None
        series = np.asarray(self.decoder(codes[:n]))
        if self.store is None:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.store = RunStore.create(self.path, population_size=P, dim=codes.shape[1],
                                         series_shape=series.shape[1:], repeats=self.repeats,
                                         n_targets=self.n_targets, budget=self.budget, has_clean=self.has_clean,
                                         attrs={"config": self.cfg, "versions": versions(), "seed": self.seed,
                                                "budget": self.budget, "target_names": self.target_names})
        elif P != self.store.attrs["population_size"]:
            raise RuntimeError(f"optimizer changed its population size from {self.store.attrs['population_size']} to {P}")
        return Generation(self.g, codes, series, n)

    def present(self, gen: Generation) -> tuple[np.ndarray, np.ndarray | None]:
        """(observed (n, R[, k]), clean (n[, k]) or None): one scorer call for every repeat of every series."""
        s, n, R, chunk = self.scorer, gen.n, self.repeats, self.chunk_size
        if isinstance(s, Noisy):
            clean = _check_scores(_score_chunked(s.clean, gen.series, chunk), n, "clean scores")
            observed = s.add_noise(np.concatenate([clean] * R))
        else:
            observed = _score_chunked(s, np.concatenate([gen.series] * R), chunk)
            clean = _check_scores(_score_chunked(s.clean, gen.series, chunk), n, "clean scores") if self.has_clean else None
        observed = _check_scores(np.asarray(observed, dtype=np.float64), n * R, "scores")
        return np.moveaxis(observed.reshape(R, n, *observed.shape[1:]), 0, 1), clean

    def tell(self, gen: Generation, observed: np.ndarray, clean: np.ndarray | None = None,
             attrs: dict | None = None) -> float:
        """Tell the optimizer the mean over repeats and commit the generation; returns the value told
        for its best member (NaN when none responded). ``attrs``: extra store attributes to record."""
        observed = np.asarray(observed, dtype=np.float64)
        with warnings.catch_warnings():  # all-NaN rows are missing responses, not errors
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(observed, axis=1)
        value = self.scorer.objective(mean) if mean.ndim == 2 and isinstance(self.scorer, MultiTarget) else mean
        value = mean[:, 0] if np.ndim(value) == 2 else value
        told = np.full(len(gen.codes), np.nan)
        told[:gen.n] = value  # codes the budget left unshown count as missing responses
        self.optimizer.tell(gen.codes, told)
        self.presentations += gen.n * self.repeats
        # state snapshot taken now, in this thread: the writer must not see later changes
        state = serial.dumps({"optimizer": self.optimizer.state_dict(),
                              "scorer": self.scorer.state_dict() if isinstance(self.scorer, Stateful) else None})
        record = dict(codes=gen.codes, series=gen.series, scores=observed, objective=told, clean=clean,
                      n_evaluated=gen.n, state=state, presentations=self.presentations)
        if self._writer is None:
            self.store.append(gen.index, **record)
            if attrs:
                self.store.group.update_attributes(attrs)
        else:
            if self._pending is not None:
                self._pending.result()  # at most one generation in flight; a write error surfaces here
            self._pending = self._writer.submit(self._commit, gen.index, record, attrs)
        gen_best = float(np.nanmax(told)) if np.isfinite(told).any() else float("nan")
        if np.isfinite(gen_best):
            self.best = max(self.best, gen_best)
        self.g += 1
        return gen_best

    def _commit(self, g: int, record: dict, attrs: dict | None) -> None:
        self.store.append(g, **record)
        if attrs:
            self.store.group.update_attributes(attrs)

    def step(self) -> Generation | None:
        """ask, present, tell: one generation; None when the budget is spent."""
        gen = self.ask()
        if gen is not None:
            self.tell(gen, *self.present(gen))
        return gen

    def flush(self) -> None:
        """Wait for the generation being written (whatever happened, it reaches the disk)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None

    def finish(self, attrs: dict | None = None) -> Run:
        """Mark the store complete (with the optimizer's incumbent) and return the :class:`Run`."""
        self.close()
        if self.store is None:
            raise UserError("the budget is smaller than one presentation of one series: raise --budget")
        result = _run_from_store(self.store)
        if not self.store.attrs.get("complete"):
            self.store.mark_complete({"best_score": result.best_score if np.isfinite(self.best) else None,
                                      "wall_seconds": round(time.perf_counter() - self.t_start, 3),
                                      "incumbent": _incumbent_record(self.optimizer, result), **(attrs or {})})
        result.complete = True
        result.attrs = self.store.attrs
        return result


def run(decoder, scorer, optimizer, budget: int, repeats: int = 1, seed: int | None = 0, store=None,
        resume: bool = False, progress: bool = True, chunk_size: int | None = None,
        reference_max: float | None = None, config: dict | None = None, callback=None,
        write_behind: bool = True, optimizer_params: dict | None = None, plausible: float | None = None,
        plausibility_layer: str | None = None, plausibility_method: str = "penalty",
        plausibility_model: str | None = None) -> Run:
    """Search for the series that maximise ``scorer`` through ``decoder``, proposing codes with ``optimizer``.

    decoder   a Decoder (codes (n, d) -> series) or a name such as "basis" / "identity" / "default"
    scorer    a Scorer (series -> (n,) or (n, k) scores; NaN = missing response), or a
              :class:`~xdream_ts.targets.TargetSpec`: built here, recorded in the store, and its reference
              maximum used when ``reference_max`` is not given
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
    callback  called as ``callback(generation, presentations, best)`` after each generation
    plausible QUANTILE (e.g. 0.99; needs a TargetSpec of an ONNX model): maximise the activation subject to
              the stimulus' Mahalanobis distance in ``plausibility_layer`` (default: the penultimate layer)
              lying within that quantile of the real data's own distances (``xdream_ts.plausible``);
              ``plausibility_method`` 'penalty' (adaptive, default) or 'feasibility-first';
              ``plausibility_model`` a reference ONNX model whose layer measures the distance instead (for
              targets without layers: a simulated neuron, an endpoint); dream ascends it as a differentiable penalty
    Returns a :class:`Run`.
    """
    from .targets import TargetSpec, build
    if plausible is not None and not isinstance(scorer, TargetSpec):
        raise UserError("plausible= needs the target as a TargetSpec (the constraint reads the model's own layer "
                        "and data): pass scorer=TargetSpec(...)")
    chosen_start = "init" in (optimizer_params or {})
    if isinstance(scorer, TargetSpec):
        if plausible is not None:
            from .plausible import check_request
            check_request(scorer, plausible, optimizer, plausibility_model=plausibility_model)
        built = build(scorer, differentiable=getattr(optimizer, "needs_gradients", False) or optimizer == "dream")
        decoder, optimizer_params, config = prepare(built, decoder, optimizer, optimizer_params, config, store,
                                                    resume, seed)
        scorer = built.scorer
        reference_max = built.reference_max if reference_max is None else reference_max
        if plausible is not None:
            from .plausible import constrain
            scorer, optimizer_params = constrain(built, decoder, optimizer, optimizer_params, config, plausible,
                                                 plausibility_layer, plausibility_method, plausibility_model, seed,
                                                 start=not resume and not chosen_start)
    session = Session(decoder, scorer, optimizer, budget, repeats=repeats, seed=seed, store=store, resume=resume,
                      chunk_size=chunk_size, reference_max=reference_max, config=config, write_behind=write_behind,
                      optimizer_params=optimizer_params)
    from .progress import progress_bar
    bar = progress_bar(total=session.budget, initial=session.presentations, unit="pres", desc="run", enabled=progress)
    try:
        while (gen := session.step()) is not None:
            bar.update(gen.n * session.repeats)
            bar.set_postfix_str(f"gen {session.g} best {session.best:.4g}")
            if callback is not None:
                callback(session.g, session.presentations, session.best)
    finally:
        session.close()
        bar.close()
    return session.finish()


START_FROM_DATA = 10  # encoded real series in the first generation when the data are known


def prepare(built, decoder, optimizer, optimizer_params: dict | None, config: dict | None, store=None,
            resume: bool = False, seed: int | None = 0):
    """What the data decide, for a built target (``xdream_ts.targets.build``): the decoder ('auto' or a
    name is made for the target's shape, fitted on its data when given, cached beside the store), the
    start (the encoded real series that drive the target hardest, when the optimizer takes start codes),
    and the config recording the spec and the stimulus space. Returns (decoder, optimizer_params, config)."""
    from .decoders import make_decoder
    from .optimizers import takes_start_codes
    length, channels = shape_of(built.scorer)
    params = dict(optimizer_params or {})
    config = {**(config or {}), "target": built.spec.to_dict()}
    if isinstance(decoder, str):
        cache = Path(store).parent if store is not None else None
        decoder = make_decoder(decoder, length=length or built.spec.length, channels=channels, data=built.data,
                               cache_dir=cache)
    if built.data is None:
        return decoder, params, config
    config["data"] = {**built.data.describe(), "space": "znorm" if built.data.znormalized else "data",
                      "best_real_score": float(np.nanmax(built.real_scores))}
    if takes_start_codes(optimizer) and "init" not in params and not resume:
        from .targets import start_from_data
        params["init"], config["init_info"] = start_from_data(built, decoder, START_FROM_DATA, seed=int(seed or 0))
    return decoder, params, config


def _incumbent_record(optimizer, result: Run) -> dict | None:
    """Where the optimizer's own pick of the best (under noise: default, cmaes, genetic) was shown, with its
    mean and count. Under noise the best *observed* response is a lucky draw; this is the series to report.
    None when the optimizer keeps no incumbent."""
    inc = optimizer.incumbent() if isinstance(optimizer, KeepsIncumbent) else None
    if inc is None:
        return None
    code, mean, n = inc
    hits = np.argwhere(np.all(result.codes == np.asarray(code)[None, None, :], axis=-1))
    hits = [h for h in hits if h[1] < result.n_evaluated[h[0]]]
    # a presentation that got a response (a code shown again after a missing one appears twice)
    hits = [h for h in hits if np.isfinite(result.objective[h[0], h[1]])] or hits
    if not hits:
        return None
    g, p = (int(v) for v in hits[0])
    return {"generation": g, "member": p, "mean_score": float(mean), "measurements": int(n)}
