"""Random search: independent N(0, scale^2 I) codes every generation. The baseline every comparison needs."""
from __future__ import annotations

import numpy as np

from ._base import BaseOptimizer


class RandomSearch(BaseOptimizer):
    name = "random"
    _state_keys = ("pending",)

    def __init__(self, dim: int, seed: int | None = None, population_size: int = 20, scale: float = 1.0):
        super().__init__(dim, seed)
        self.population_size = int(population_size)
        self.scale = float(scale)
        self.pending = self.rng.normal(0.0, self.scale, size=(self.population_size, dim))

    def ask(self) -> np.ndarray:
        return self.pending.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        self._check_tell(codes, scores, self.pending)
        self.pending = self.rng.normal(0.0, self.scale, size=(self.population_size, self.dim))

    def describe(self) -> dict:
        return {**super().describe(), "population_size": self.population_size, "scale": self.scale}
