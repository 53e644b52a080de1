"""Any nevergrad optimizer by name (``ng:NAME``), batched into generations, with exact resume by replay.

nevergrad asks one candidate at a time; the loop wants a population. Each generation asks
``population_size`` candidates (the optimizer is built with ``num_workers = population_size``, so it
expects that many to be pending at once) and tells all their losses (``-score``: nevergrad minimises).

- **Randomness.** The parametrization gets its own ``RandomState`` seeded from this instance's seed.
  Some nevergrad optimizers also draw from numpy's *global* RNG (mutation radii, rescaled portfolio
  members, the inner search of MetaModel). Every call into nevergrad therefore runs with the global
  RNG swapped for this instance's private legacy state and swapped back afterwards, so two instances
  in one process never interfere and every run is reproducible. (Not thread-safe: do not drive
  nevergrad optimizers from several threads at once.)
- **Noise.** ``noisy=True`` sets ``parametrization.function.deterministic = False`` before the optimizer
  is built: the documented way to tell nevergrad the loss is noisy, so NGOpt and friends choose
  noise-robust strategies (NGOpt's ``has_noise`` becomes True). Its recommendation
  (``provide_recommendation``: for noisy optimizers its estimate of the best, not the luckiest) is then
  shown as the last member of every generation, nevergrad is told the other ``population_size - 1``, and
  the run reports the last recommendation shown (``ShowsItsPick``).
- **Missing responses.** A NaN score is told as the worst finite loss of its generation: finite (some
  optimizers fit models to losses and break on inf) and ranked last. A generation without a single
  response tells nothing and the same candidates are asked again.
- **Exact resume by replay.** nevergrad optimizers are arbitrary Python object graphs, serialisable
  only by pickle, which a run store must not hold. The state is instead what determines the run: the
  settings, the seeds and every loss told so far (P floats per generation, not the codes).
  ``load_state_dict`` rebuilds the optimizer and replays ask/tell; with all randomness owned by the
  instance the replay lands on the same candidates (the contract test checks it). A digest of the
  pending codes detects a replay that went elsewhere (another nevergrad version) and warns.
- **budget** is nevergrad's budget in evaluations (presentations / repeats); NGOpt picks its algorithm
  from it (e.g. CMA for 3,000 noiseless evaluations at these dimensions, a noise-robust portfolio when
  noisy). Asking beyond it is allowed.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import sys
import warnings

import numpy as np

from ..errors import UserError
from ._base import BaseOptimizer, ShowsItsPick


def _digest(codes: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(codes, dtype=np.float64).tobytes()).hexdigest()


def _import_ng():
    try:
        import nevergrad as ng  # ~3 s: imported only when an ng:NAME optimizer is used
    except ModuleNotFoundError:
        raise UserError("ng:NAME optimizers need nevergrad: pip install nevergrad") from None
    return ng


class _GlobalRNG:
    """Runs nevergrad with numpy's global RNG replaced by a private one (restored afterwards)."""

    def __init__(self, seed: int):
        self.state = np.random.RandomState(seed).get_state()

    @contextlib.contextmanager
    def active(self):
        saved = np.random.get_state()
        np.random.set_state(self.state)
        try:
            yield
        finally:
            self.state = np.random.get_state()
            np.random.set_state(saved)


@contextlib.contextmanager
def _quiet():
    """nevergrad prints and warns a lot on construction (and some __del__ raise): keep the console clean."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda *args: None
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        import gc
        gc.collect()  # run the noisy __del__ methods while their output is still swallowed
        sys.unraisablehook = hook


class NevergradOptimizer(ShowsItsPick, BaseOptimizer):
    """nevergrad's ``registry[name]`` as a generational ask/tell optimizer (maximising)."""

    name = "ng"

    def __init__(self, dim: int, seed: int | None = None, name: str = "NGOpt", population_size: int = 20,
                 budget: int = 3000, noisy: bool = False, init: np.ndarray | None = None):
        super().__init__(dim, seed)
        if int(population_size) < 2 + bool(noisy):
            raise UserError(f"ng:{name}: population_size must be >= {2 + bool(noisy)} (under noise one member is "
                            f"the recommendation), got {population_size}")
        if int(budget) < 1:
            raise UserError(f"ng:{name}: budget must be >= 1, got {budget}")
        init0 = None if init is None else np.asarray(init, dtype=np.float64).reshape(-1, self.dim)[0].copy()
        # two independent streams from this instance's seed: the parametrization's and the global stand-in
        seeds = [int(s) for s in self.rng.integers(0, 2 ** 32, size=2)]
        self._config = {"name": str(name), "population_size": int(population_size), "budget": int(budget),
                        "noisy": bool(noisy), "init": init0, "seeds": seeds, "show_recommendation": bool(noisy)}
        self.name = f"ng:{name}"
        self._start()

    @property
    def population_size(self) -> int:
        return self._config["population_size"]

    @property
    def noisy(self) -> bool:
        return self._config["noisy"]

    # ---- nevergrad --------------------------------------------------------------------------------
    def _start(self) -> None:
        ng = _import_ng()
        c = self._config
        if c["name"] not in ng.optimizers.registry:
            import difflib
            close = difflib.get_close_matches(c["name"], list(ng.optimizers.registry), n=1)
            hint = f" (did you mean ng:{close[0]}?)" if close else ""
            raise UserError(f"unknown nevergrad optimizer ng:{c['name']}{hint}; `xdream-ts optimizers --all` lists them")
        self._global = _GlobalRNG(c["seeds"][1])
        param = ng.p.Array(shape=(self.dim,)) if c["init"] is None else ng.p.Array(init=np.asarray(c["init"]))
        param.random_state = np.random.RandomState(c["seeds"][0])
        if c["noisy"]:
            param.function.deterministic = False
        error = None
        with self._global.active(), _quiet():
            try:
                self.optimizer = ng.optimizers.registry[c["name"]](
                    parametrization=param, budget=c["budget"], num_workers=c["population_size"])
            except Exception as exc:  # e.g. sequential-only optimizers refuse num_workers > 1
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if error:  # raised outside the quiet block, once the half-built optimizer has been collected
            raise UserError(f"nevergrad optimizer ng:{c['name']} cannot be used here ({error}); "
                            "`xdream-ts optimizers --all` lists the usable ones")
        self._told: list[np.ndarray] = []
        # under noise nevergrad's recommendation is shown last and reported (ShowsItsPick); stores written
        # before that have no key and showed none
        self._show_pick = bool(c.get("show_recommendation", False))
        self.pick_code, self.pick_score = np.zeros(0), float("nan")
        self._ask_generation()

    def _ask_generation(self) -> None:
        try:
            with self._global.active(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._candidates = [self.optimizer.ask() for _ in range(self.population_size - self._show_pick)]
        except Exception as exc:
            raise UserError(f"nevergrad optimizer ng:{self._config['name']} failed to propose codes "
                            f"({type(exc).__name__}: {exc}); choose another optimizer") from None
        codes = [np.asarray(c.value, dtype=np.float64).reshape(self.dim) for c in self._candidates]
        self._pending = np.array(codes + ([self.recommendation()] if self._show_pick else []))

    def _apply(self, scores: np.ndarray) -> None:
        """One generation's update; shared by tell and replay, so both take the same path."""
        if self._show_pick:  # the recommendation's response is the report's, not nevergrad's
            self._note_pick(self._pending[-1], scores[-1])
            scores = scores[:-1]
        ok = np.isfinite(scores)
        if not ok.any():
            return  # nothing was measured: the same candidates are asked again
        loss = -scores
        loss[~ok] = loss[ok].max()  # missing response: as bad as the worst one measured
        try:
            with self._global.active(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for cand, value in zip(self._candidates, loss):
                    self.optimizer.tell(cand, float(value))
        except Exception as exc:
            raise UserError(f"nevergrad optimizer ng:{self._config['name']} failed on its update "
                            f"({type(exc).__name__}: {exc}); choose another optimizer") from None
        self._ask_generation()

    # ---- ask/tell ---------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        return self._pending.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = self._check_tell(np.asarray(codes), scores, self._pending)
        self._told.append(scores.copy())
        self._apply(scores.copy())

    def recommendation(self) -> np.ndarray:
        """nevergrad's own recommendation (for noisy optimizers: its estimate of the best, not the luckiest)."""
        with self._global.active(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.optimizer.provide_recommendation().value, dtype=np.float64).reshape(self.dim)

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        told = np.array(self._told, dtype=np.float64).reshape(len(self._told), self.population_size)
        return {"kind": "nevergrad-replay", "config": copy.deepcopy(self._config), "told": told,
                "pending_sha1": _digest(self._pending)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "nevergrad-replay":
            raise UserError("this optimizer state was not written by an ng:NAME optimizer: resume with the same --optimizer")
        cfg = copy.deepcopy(state["config"])
        if cfg.get("init") is not None:
            cfg["init"] = np.asarray(cfg["init"], dtype=np.float64)
        cfg["seeds"] = [int(s) for s in cfg["seeds"]]
        self._config = cfg
        self.name = f"ng:{cfg['name']}"
        self._start()
        for row in np.asarray(state["told"], dtype=np.float64):
            self._told.append(row.copy())
            self._apply(row.copy())
        if _digest(self._pending) != state.get("pending_sha1"):
            warnings.warn(f"{self.name}: replaying the stored scores did not reproduce the stored codes (another "
                          "nevergrad version?); the run continues from the replayed state, not bit for bit",
                          RuntimeWarning, stacklevel=2)

    def describe(self) -> dict:
        c = self._config
        return {**super().describe(), "name": self.name, "population_size": c["population_size"],
                "budget": c["budget"], "noisy": c["noisy"], "nevergrad_seeds": c["seeds"],
                "chosen": _chosen(self.optimizer)}


def _chosen(optimizer) -> str:
    """What a meta-optimizer (NGOpt, ...) picked, e.g. 'NGOpt > CMA > CMAstd' (for the run's config)."""
    names, o = [str(getattr(optimizer, "name", type(optimizer).__name__))], optimizer
    for _ in range(5):
        try:
            o = o.optim
        except Exception:  # not a meta-optimizer (no .optim), or one that cannot say
            break
        names.append(str(getattr(o, "name", type(o).__name__)))
    return " > ".join(names)


@functools.lru_cache(maxsize=1)
def list_nevergrad() -> tuple[list[str], list[tuple[str, str]]]:
    """(usable names, [(refused name, reason)]): registry optimizers that accept a population.

    Each is built for a 4-dimensional array with budget 10 and num_workers 4 and asked once (some only
    import their backend on the first ask); a refusal is listed with its reason. About 1 s after the
    import; cached for the process.
    """
    ng = _import_ng()
    usable, refused = [], []
    saved = np.random.get_state()
    try:
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            for name in sorted(ng.optimizers.registry):
                param = ng.p.Array(shape=(4,))
                param.random_state = np.random.RandomState(0)
                try:
                    ng.optimizers.registry[name](parametrization=param, budget=10, num_workers=4).ask()
                    usable.append(name)
                except Exception as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    refused.append((name, f"{type(exc).__name__}: {reason}"[:160]))
    finally:
        np.random.set_state(saved)
    return usable, refused
