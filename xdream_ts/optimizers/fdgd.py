"""Finite-difference gradient descent (ascent), as defined in XDream's Methods.

Each generation draws n/2 perturbations d_i ~ N(0, r^2 I) around a centre c and shows c + d_i and
c - d_i (antithetic sampling). The gradient estimate weights each perturbation by its score difference
over the square of its mean absolute size (the per-component L1 norm, as XDream's code does):
    g = mean_i [ (y(c + d_i) - y(c - d_i)) / 2 * d_i / |d_i|_1^2 ],   |d|_1 = mean_j |d_j|
and the centre moves c <- c + lr * g. Pairs with a missing response are left out of the mean.

Under noise (``noisy=True``, which the loop sets for noisy scorers) the centre c, what FDGD would hand a
user, is shown once more as the last member of each generation (population 2n + 1) and the last one shown
is reported (``ShowsItsPick``); its response does not enter the update.
"""
from __future__ import annotations

import numpy as np

from ._base import BaseOptimizer, ShowsItsPick


class FDGD(ShowsItsPick, BaseOptimizer):
    name = "fdgd"
    _state_keys = ("center", "steps", "pick_code", "pick_score")

    def __init__(self, dim: int, seed: int | None = None, population_size: int = 20, search_radius: float = 1.0,
                 learning_rate: float = 1.0, init: np.ndarray | None = None, noisy: bool = False):
        super().__init__(dim, seed)
        if population_size < 2 or search_radius <= 0 or learning_rate <= 0:
            from ..errors import UserError
            raise UserError("fdgd: population_size must be >= 2, search_radius and learning_rate > 0")
        self.n_pairs = int(population_size) // 2
        self.population_size = 2 * self.n_pairs
        self.search_radius = float(search_radius)
        self.learning_rate = float(learning_rate)
        # XDream starts from the all-zero code (or a given start code, e.g. an encoded real series)
        self.center = np.zeros(dim) if init is None else np.asarray(init, dtype=np.float64).reshape(-1, dim)[0].copy()
        self.steps = self.rng.normal(0.0, self.search_radius, size=(self.n_pairs, dim))
        self.noisy = bool(noisy)  # under noise the centre is shown last and reported (ShowsItsPick)

    def ask(self) -> np.ndarray:
        pairs = [self.center + self.steps, self.center - self.steps]
        return np.concatenate(pairs + [self.center[None]] if self.noisy else pairs)

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = self._check_tell(codes, scores, self.ask())
        if self.noisy:  # the centre's response is the report's, not the update's
            self._note_pick(self.center, scores[-1])
            scores = scores[:-1]
        diff = (scores[: self.n_pairs] - scores[self.n_pairs:]) / 2.0
        ok = np.isfinite(diff)
        if ok.any():
            l1 = np.mean(np.abs(self.steps[ok]), axis=1)
            grad = np.mean(diff[ok, None] * l1[:, None] ** -2 * self.steps[ok], axis=0)
            self.center = self.center + self.learning_rate * grad
        self.steps = self.rng.normal(0.0, self.search_radius, size=(self.n_pairs, self.dim))

    def describe(self) -> dict:
        return {**super().describe(), "population_size": self.population_size, "noisy": self.noisy,
                "search_radius": self.search_radius, "learning_rate": self.learning_rate}
