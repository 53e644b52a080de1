"""CMA-ES through pycma, with its own RNG and an exact, pickle-free resume.

pycma maximises nothing and pickles everything, so this wrapper adds three things:

- **Its own RNG.** pycma's ``seed`` option reseeds numpy's *global* RNG, so two instances in one
  process would steal each other's numbers. Every sample pycma draws goes through its ``randn``
  option instead, which here draws from this instance's own ``np.random.Generator``.
- **Missing responses.** pycma minimises the loss ``-score``. A NaN score (no response) gets the worst
  finite loss of its generation, so it ranks last and carries the least weight (pycma itself would
  put NaN at the *median*, pulling the mean towards a code nobody measured). A generation without a
  single response tells pycma nothing: the same codes are asked again.
- **Exact resume by replay.** pycma's state is a graph of Python objects (sampler, step-size
  adaptation, archives, injection lists); pickling it is what pycma does, and a run store must not
  contain pickle. Copying its internals by hand ties us to private attributes of one pycma version,
  and costs 2 d^2 floats per generation (C and its eigenbasis B: 4 MB per generation at d = 500,
  about 600 MB for a 3,000-presentation run, since the store keeps every generation's state).
  Instead the state is what determines the run: the initial RNG state, the settings, and every
  score told so far (P floats per generation). ``load_state_dict`` rebuilds pycma and replays
  ask/tell; with its own RNG pycma is deterministic, so the replay lands on the same bits (the
  contract test checks it). A digest of the pending codes detects a replay that went elsewhere
  (another pycma or BLAS) and warns. Replay costs what pycma's own updates cost so far, e.g. about
  5 s after 150 generations at d = 500 (experiments/results/optimizers.md has the measurements).

Under noise (``noisy=True``, which the loop sets for noisy scorers) the series to report is pycma's own
recommendation, ``es.result.xfavorite`` (the distribution mean, which pycma documents as the best
available estimate), not the best observed response: that one is the luckiest draw of thousands
(issue 19). A recommendation is only worth reporting if it was shown, so every generation shows the
current mean as its last member: pycma samples ``population_size - 1`` codes and is told only theirs
(the mean is not a sample of its distribution and must not enter its update); ``incumbent()`` is the
last mean shown, with its one response. Not selected by its score, that response is unbiased.
"""
from __future__ import annotations

import copy
import hashlib
import warnings

import numpy as np

from ..serial import rng_state, set_rng_state
from ._base import BaseOptimizer, ShowsItsPick


def _digest(codes: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(codes, dtype=np.float64).tobytes()).hexdigest()


def _pycma_options(population_size: int, bounds, randn, extra: dict | None) -> dict:
    opts = {
        "popsize": population_size,
        "randn": randn,
        "seed": np.nan,          # NaN: pycma leaves numpy's global RNG alone
        "verbose": -9,           # no console output
        "verb_log": 0,           # no outcmaes/ folder
        "verb_disp": 0,
        "bounds": [None, None] if bounds is None else [bounds[0], bounds[1]],
    }
    opts.update(extra or {})
    return opts


class CMAES(ShowsItsPick, BaseOptimizer):
    """pycma's CMA-ES (maximising), population ``population_size`` every generation.

    sigma0       initial step size, in code units (codes have a N(0, I) prior: 1.0 samples like it)
    bounds       None, or (lower, upper): scalars or length-``dim`` sequences (pycma's BoundTransform)
    init         start mean: the first row of ``init`` (e.g. an encoded real series), else zeros
    cma_options  further pycma options (JSON-able values), e.g. {"CMA_diagonal": True} for large dim
    noisy        show the distribution mean as the last member of every generation and report it (see the
                 module doc); repeated presentations are the loop's ``repeats``
    """

    name = "cmaes"

    def __init__(self, dim: int, seed: int | None = None, population_size: int = 20, sigma0: float = 1.0,
                 bounds=None, cma_options: dict | None = None, noisy: bool = False,
                 init: np.ndarray | None = None):
        super().__init__(dim, seed)
        from ..errors import UserError
        if int(population_size) < 4:
            raise UserError(f"cmaes: population_size must be >= 4, got {population_size}")
        if not float(sigma0) > 0:
            raise UserError(f"cmaes: sigma0 must be > 0, got {sigma0}")
        if bounds is not None:
            try:
                lo, hi = bounds
                lo_a, hi_a = np.broadcast_to(np.asarray(lo, float), (dim,)), np.broadcast_to(np.asarray(hi, float), (dim,))
            except (TypeError, ValueError):
                raise UserError(f"cmaes: bounds must be (lower, upper), scalars or {dim} values each") from None
            if not np.all(lo_a < hi_a):
                raise UserError("cmaes: bounds: every lower bound must be below its upper bound, e.g. bounds=(-3, 3)")
            bounds = [np.asarray(lo, float).tolist(), np.asarray(hi, float).tolist()]
        mean0 = np.zeros(self.dim) if init is None else np.asarray(init, dtype=np.float64).reshape(-1, self.dim)[0]
        if bounds is not None:  # pycma refuses a start outside the box
            mean0 = np.clip(mean0, lo_a, hi_a)
        self.noisy = bool(noisy)
        if self.noisy and int(population_size) < 5:
            raise UserError(f"cmaes: under noise population_size must be >= 5 (4 samples and the mean), "
                            f"got {population_size}")
        self._config = {"population_size": int(population_size), "sigma0": float(sigma0), "bounds": bounds,
                        "cma_options": copy.deepcopy(cma_options) or {}, "mean0": mean0.copy(),
                        "show_mean": self.noisy}
        self._rng0 = copy.deepcopy(rng_state(self.rng))
        self._start()

    @property
    def population_size(self) -> int:
        return self._config["population_size"]

    # ---- pycma ------------------------------------------------------------------------------------
    def _randn(self, *shape):
        return self.rng.standard_normal(shape)

    def _start(self) -> None:
        import cma  # pycma: imported when a CMAES is built, not with the package
        c = self._config
        # stores written before show_mean existed have no key: they did not show the mean
        self._show_mean = bool(c.get("show_mean", False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycma warns about ignored defaults on construction
            self.es = cma.CMAEvolutionStrategy(
                c["mean0"].copy(), c["sigma0"],
                _pycma_options(c["population_size"] - self._show_mean, c["bounds"], self._randn, c["cma_options"]))
        self._told: list[np.ndarray] = []
        self.pick_code, self.pick_score = np.zeros(0), float("nan")  # the last mean shown (ShowsItsPick)
        self._pending = self._ask()

    def _ask(self) -> np.ndarray:
        codes = np.array(self.es.ask(), dtype=np.float64)
        if self._show_mean:
            codes = np.concatenate([codes, np.asarray(self.es.result.xfavorite, dtype=np.float64)[None]])
        return codes

    def _apply(self, scores: np.ndarray) -> None:
        """One generation's update; shared by tell and replay, so both take the same path."""
        samples = self._pending
        if self._show_mean:
            self._note_pick(samples[-1], scores[-1])
            samples, scores = samples[:-1], scores[:-1]
        ok = np.isfinite(scores)
        if not ok.any():
            return  # nothing was measured: ask the same codes again
        loss = -scores
        loss[~ok] = loss[ok].max()  # a missing response ranks with the worst one measured
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.es.tell(list(samples), loss.tolist())
        self._pending = self._ask()

    # ---- ask/tell ---------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        return self._pending.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = self._check_tell(np.asarray(codes), scores, self._pending)
        self._told.append(scores.copy())
        self._apply(scores.copy())

    @property
    def mean(self) -> np.ndarray:
        return np.array(self.es.mean, dtype=np.float64)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        told = np.array(self._told, dtype=np.float64).reshape(len(self._told), self.population_size)
        return {"kind": "cmaes-replay", "config": copy.deepcopy(self._config), "rng0": copy.deepcopy(self._rng0),
                "told": told, "pending_sha1": _digest(self._pending)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "cmaes-replay":
            from ..errors import UserError
            raise UserError("this optimizer state was not written by the cmaes optimizer: resume with --optimizer cmaes")
        cfg = copy.deepcopy(state["config"])
        cfg["mean0"] = np.asarray(cfg["mean0"], dtype=np.float64)
        self._config = cfg
        self._rng0 = copy.deepcopy(state["rng0"])
        set_rng_state(self.rng, copy.deepcopy(self._rng0))
        self._start()
        for row in np.asarray(state["told"], dtype=np.float64):
            self._told.append(row.copy())
            self._apply(row.copy())
        if _digest(self._pending) != state.get("pending_sha1"):
            warnings.warn("cmaes: replaying the stored scores did not reproduce the stored codes (another pycma "
                          "or BLAS version?); the run continues from the replayed state, not bit for bit",
                          RuntimeWarning, stacklevel=2)

    def describe(self) -> dict:
        c = self._config
        return {**super().describe(), "population_size": c["population_size"], "sigma0": c["sigma0"],
                "bounds": c["bounds"], "cma_options": c["cma_options"], "noisy": self.noisy,
                "shows_mean": self._show_mean, "start_mean_norm": float(np.linalg.norm(c["mean0"]))}
