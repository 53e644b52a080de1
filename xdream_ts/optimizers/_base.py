"""What every built-in optimizer shares: a private RNG, the code dimension, exact state round trips."""
from __future__ import annotations

import copy

import numpy as np

from ..serial import rng_state, set_rng_state


class BaseOptimizer:
    """Ask/tell optimizer (maximising) with its own numpy Generator.

    Subclasses list the attributes that make up their state in ``_state_keys``; ``state_dict`` returns
    those plus the RNG state, so a resumed optimizer continues bit for bit. Each instance owns its RNG:
    two optimizers in one process never interfere.
    """

    name = "base"
    needs_gradients = False
    _state_keys: tuple[str, ...] = ()

    def __init__(self, dim: int, seed: int | None = None):
        if int(dim) < 1:
            from ..errors import UserError
            raise UserError(f"optimizer {self.name}: the code dimension must be >= 1, got {dim}")
        self.dim = int(dim)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        state = {k: copy.deepcopy(getattr(self, k)) for k in self._state_keys}
        state["rng"] = rng_state(self.rng)
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in self._state_keys:
            value = state[k]
            setattr(self, k, value.copy() if isinstance(value, np.ndarray) else copy.deepcopy(value))
        set_rng_state(self.rng, state["rng"])

    def describe(self) -> dict:
        """The resolved parameters, for the run store's config."""
        return {"name": self.name, "dim": self.dim, "seed": self.seed}

    @staticmethod
    def _check_tell(codes: np.ndarray, scores: np.ndarray, expected: np.ndarray | None = None) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(codes):
            raise ValueError(f"tell: {len(scores)} scores for {len(codes)} codes")
        if expected is not None and (codes.shape != expected.shape or not np.array_equal(codes, expected)):
            raise ValueError("tell: codes differ from the ones this optimizer asked for")
        return scores


class ShowsItsPick:
    """Under noise, an optimizer whose own pick is a point it computes (a search centre, a distribution mean,
    a recommendation) shows that point as the last member of every generation and reports the last one
    shown, with its one response (issue 19: a run reports what the optimizer would hand a user, never the
    luckiest single response). The pick is not selected by that response, so the response is unbiased; the
    optimizer's own update never sees it. Without noise nothing is shown and ``incumbent()`` is None: the
    best observed response is exact."""

    pick_code = np.zeros(0)
    pick_score = float("nan")

    def load_state_dict(self, state: dict) -> None:
        if "pick_code" not in state:
            # a store written before the pick was shown: its generations have no extra member, so the
            # resumed run shows none either
            self.noisy = False
            state = {**state, "pick_code": np.zeros(0), "pick_score": float("nan")}
        super().load_state_dict(state)

    def _note_pick(self, code: np.ndarray, score: float) -> None:
        if np.isfinite(score):
            self.pick_code, self.pick_score = np.array(code, dtype=np.float64), float(score)

    def incumbent(self) -> tuple[np.ndarray, float, int] | None:
        """(the pick last shown, its response, 1), or None before one was measured or without noise."""
        if len(self.pick_code) == 0:
            return None
        return self.pick_code.copy(), self.pick_score, 1
