"""Optimizers: ask/tell plugins, each in a file named after it, looked up by name.

Names: genetic, fdgd, nes, random (XDream's set and the baseline), cmaes (pycma), ng:NAME (any
nevergrad optimizer), default (our default), dream (gradient-based Sequence Dreaming). Modules are
imported only when asked for, so listing names costs nothing and nevergrad's slow import is paid once,
by whoever uses it.
"""
from __future__ import annotations

import importlib
import inspect

from ..errors import UserError

# name -> (module, class, one line on when to use it)
BUILTIN = {
    "default": ("default", "DefaultOptimizer", "our default: CMA on a sphere of fixed code norm with step decay, noise-aware"),
    "genetic": ("genetic", "Genetic", "XDream's genetic algorithm (population 20), the classic baseline"),
    "cmaes": ("cmaes", "CMAES", "pycma CMA-ES with its own RNG; strong when the budget allows a few hundred generations"),
    "fdgd": ("fdgd", "FDGD", "XDream's finite-difference gradient ascent"),
    "nes": ("nes", "NES", "XDream's natural evolution strategies"),
    "random": ("random", "RandomSearch", "random codes from the prior: the baseline every comparison needs"),
    "dream": ("dream", "Dream", "gradient-based Sequence Dreaming; needs a torch scorer and a differentiable decoder"),
}


def optimizer_class(name: str):
    if name.startswith("ng:"):
        name, module, cls = "ng", "nevergrad", "NevergradOptimizer"
    elif name not in BUILTIN:
        import difflib
        close = difflib.get_close_matches(name, list(BUILTIN), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown optimizer {name!r}{hint}: choose one of {', '.join(BUILTIN)} or ng:NAME; "
                        "`xdream-ts optimizers` lists them")
    else:
        module, cls, _ = BUILTIN[name]
    try:
        mod = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as exc:
        raise UserError(f"optimizer {name!r} is not available in this installation ({exc})") from None
    return getattr(mod, cls)


def takes(optimizer, parameter: str) -> bool:
    """Whether an optimizer given by name takes ``parameter``."""
    return isinstance(optimizer, str) and parameter in inspect.signature(optimizer_class(optimizer).__init__).parameters


def takes_start_codes(optimizer) -> bool:
    """Whether an optimizer given by name can start from given codes (an ``init`` parameter)."""
    return takes(optimizer, "init")


def make_optimizer(name: str, dim: int, seed: int | None = None, noisy: bool = False,
                   evaluations: int | None = None, **params):
    """Build an optimizer by name for codes of dimension ``dim``; unknown parameters are a UserError.

    ``evaluations`` is the run's budget in evaluations (presentations / repeats), a hint the loop gives:
    optimizers that plan over the run (the default's step decay) take it as their ``budget`` unless
    one was given explicitly; the others ignore it.
    """
    cls = optimizer_class(name)
    sig = inspect.signature(cls.__init__)
    accepted = {p for p in sig.parameters if p not in ("self", "dim", "seed")}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise UserError(f"optimizer {name!r} does not take {', '.join(unknown)}; it takes: "
                        f"{', '.join(sorted(accepted - {'noisy', 'name', 'init'}))}")
    if "noisy" in accepted:
        params["noisy"] = noisy
    if evaluations is not None and "budget" in accepted and "budget" not in params:
        params["budget"] = max(1, int(evaluations))
    if name.startswith("ng:"):
        params["name"] = name[3:]
    return cls(dim, seed=seed, **params)
