"""Natural evolution strategies, as XDream's Methods define them (after Ilyas et al. 2018).

Antithetic standard-normal directions e_i (and -e_i) around a centre c with search radius r:
    samples  c + r e_i,   c - r e_i
    centre   c <- c + lr * mean_i(y_i e_i) / r
    radius   r <- max(r_min, r + lr_r * mean_i(y_i (e_i^2 - 1)) / r)      (only when lr_r > 0)
The radius update is the natural-gradient step for a Gaussian's scale; XDream ships it switched off
(lr_r = 0), and so do we by default. Missing responses are left out of both means.

Under noise (``noisy=True``, which the loop sets for noisy scorers) the centre c, what NES would hand a
user, is shown once more as the last member of each generation (population 2n + 1) and the last one shown
is reported (``ShowsItsPick``); its response does not enter the update.
"""
from __future__ import annotations

import numpy as np

from ._base import BaseOptimizer, ShowsItsPick


class NES(ShowsItsPick, BaseOptimizer):
    name = "nes"
    _state_keys = ("center", "radius", "directions", "pick_code", "pick_score")

    def __init__(self, dim: int, seed: int | None = None, population_size: int = 20, search_radius: float = 1.0,
                 learning_rate: float = 1.0, search_radius_learning_rate: float = 0.0,
                 min_search_radius: float = 0.01, init: np.ndarray | None = None, noisy: bool = False):
        super().__init__(dim, seed)
        if population_size < 2 or search_radius <= 0 or learning_rate <= 0:
            from ..errors import UserError
            raise UserError("nes: population_size must be >= 2, search_radius and learning_rate > 0")
        self.n_pairs = int(population_size) // 2
        self.population_size = 2 * self.n_pairs
        self.learning_rate = float(learning_rate)
        self.radius_learning_rate = float(search_radius_learning_rate)
        self.min_radius = float(min_search_radius)
        self.radius = max(float(search_radius), self.min_radius)
        self.center = np.zeros(dim) if init is None else np.asarray(init, dtype=np.float64).reshape(-1, dim)[0].copy()
        self.directions = self._draw()
        self.noisy = bool(noisy)  # under noise the centre is shown last and reported (ShowsItsPick)

    def _draw(self) -> np.ndarray:
        e = self.rng.standard_normal((self.n_pairs, self.dim))
        return np.concatenate([e, -e])

    def ask(self) -> np.ndarray:
        samples = self.center + self.radius * self.directions
        return np.concatenate([samples, self.center[None]]) if self.noisy else samples

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = self._check_tell(codes, scores, self.ask())
        if self.noisy:  # the centre's response is the report's, not the update's
            self._note_pick(self.center, scores[-1])
            scores = scores[:-1]
        ok = np.isfinite(scores)
        if ok.any():
            y, e = scores[ok], self.directions[ok]
            self.center = self.center + self.learning_rate * np.mean(y[:, None] * e, axis=0) / self.radius
            if self.radius_learning_rate > 0:
                grad_r = np.mean(y[:, None] * (e ** 2 - 1)) / self.radius
                self.radius = max(self.min_radius, self.radius + self.radius_learning_rate * grad_r)
        self.directions = self._draw()

    def describe(self) -> dict:
        return {**super().describe(), "population_size": self.population_size, "noisy": self.noisy,
                "search_radius": self.radius,
                "learning_rate": self.learning_rate, "search_radius_learning_rate": self.radius_learning_rate}
