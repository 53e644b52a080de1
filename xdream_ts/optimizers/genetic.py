"""XDream's genetic algorithm, as its Methods define it (Xiao & Kreiman 2020).

One generation, given scores y of the current population (NaN = no response):
  - codes whose score is missing are carried into the next generation unchanged, to be shown again;
  - the valid codes are ranked; scores above the 95th percentile are clipped (one outlier must not
    take over the population), and fitness is w = exp((y - max y) / kT) with kT = std(y) / selectivity;
  - the best ``n_conserve`` codes survive unchanged (elitism, 0 by default as in the paper);
  - every child has two parents drawn with probability proportional to w; each component comes
    from the first parent with probability ``heritability`` and from the second otherwise;
  - a fraction ``mutation_rate`` of the child's components get N(0, mutation_size) added.
Defaults are the paper's: population 20, mutation rate 0.5, mutation size 0.5, selectivity 2,
heritability 0.5. The initial population is standard normal, matching a N(0, I) latent prior.
"""
from __future__ import annotations

import numpy as np

from ._base import BaseOptimizer


def selection_weights(scores: np.ndarray, selectivity: float) -> np.ndarray:
    """Fitness of valid scores sorted high to low (XDream): exp((y - y_max) / kT), kT = std / selectivity.

    Scores are clipped at their 95th percentile first, so y_max is that percentile.
    """
    scores = np.clip(scores, None, np.percentile(scores, 95))
    kT = max(float(np.std(scores)) / selectivity, 1e-8)  # kT -> 0 when all scores tie: avoid 0/0
    return np.exp((scores - scores.max()) / kT)


class Genetic(BaseOptimizer):
    name = "genetic"
    _state_keys = ("population",)

    def __init__(self, dim: int, seed: int | None = None, population_size: int = 20, mutation_rate: float = 0.5,
                 mutation_size: float = 0.5, selectivity: float = 2.0, heritability: float = 0.5,
                 n_conserve: int = 0, init: np.ndarray | None = None, init_scale: float = 1.0):
        super().__init__(dim, seed)
        from ..errors import UserError
        if not 0 <= mutation_rate <= 1:
            raise UserError(f"genetic: mutation_rate must be in [0, 1], got {mutation_rate}")
        if mutation_size <= 0 or selectivity <= 0:
            raise UserError("genetic: mutation_size and selectivity must be > 0")
        if not 0 <= n_conserve < population_size:
            raise UserError(f"genetic: n_conserve must be in [0, population_size), got {n_conserve}")
        self.population_size = int(population_size)
        self.mutation_rate = float(mutation_rate)
        self.mutation_size = float(mutation_size)
        self.selectivity = float(selectivity)
        # heritability is symmetric around 0.5 (which parent is "first" is arbitrary)
        h = min(1.0, max(0.0, float(heritability)))
        self.heritability = max(h, 1 - h)
        self.n_conserve = int(n_conserve)
        self.init_scale = float(init_scale)
        self.population = self._initial_population(init)

    def _initial_population(self, init: np.ndarray | None) -> np.ndarray:
        if init is None:
            return self.rng.normal(0.0, self.init_scale, size=(self.population_size, self.dim))
        init = np.asarray(init, dtype=np.float64).reshape(-1, self.dim)[: self.population_size]
        if len(init) == self.population_size:
            return init.copy()
        # Fewer start codes than the population: the rest are their mutated offspring (as XDream does).
        extra = self._mutate(self._mate(init, np.ones(len(init)), self.population_size - len(init)))
        return np.concatenate([init, extra])

    def _mate(self, parents: np.ndarray, fitness: np.ndarray, n: int) -> np.ndarray:
        p = fitness / fitness.sum()
        first = self.rng.choice(len(parents), size=n, p=p)
        second = self.rng.choice(len(parents), size=n, p=p)
        from_first = self.rng.random((n, self.dim)) < self.heritability
        return np.where(from_first, parents[first], parents[second])

    def _mutate(self, children: np.ndarray) -> np.ndarray:
        mask = self.rng.random(children.shape) < self.mutation_rate
        children = children.copy()
        children[mask] += self.rng.normal(0.0, self.mutation_size, size=int(mask.sum()))
        return children

    def ask(self) -> np.ndarray:
        return self.population.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = self._check_tell(codes, scores, self.population)
        size = self.population_size
        new = np.empty((size, self.dim))
        missing = np.isnan(scores)
        n_missing = min(int(missing.sum()), size)
        if n_missing:
            new[size - n_missing:] = codes[missing][-n_missing:]  # shown again next generation
        valid = ~missing
        n_keep = min(int(valid.sum()), size - n_missing)
        if n_keep:
            order = np.argsort(scores[valid], kind="stable")[::-1][:n_keep]
            ranked = codes[valid][order]
            fitness = selection_weights(scores[valid][order], self.selectivity)
            new[:n_keep] = ranked
            n_children = size - self.n_conserve - n_missing
            if n_children > 0:
                children = self._mate(ranked, fitness, n_children)
                new[self.n_conserve:self.n_conserve + n_children] = self._mutate(children)
        elif n_missing < size:  # nothing scored at all: keep searching around the current codes
            new[: size - n_missing] = self._mutate(codes[: size - n_missing])
        self.population = new

    def describe(self) -> dict:
        return {**super().describe(), "population_size": self.population_size, "mutation_rate": self.mutation_rate,
                "mutation_size": self.mutation_size, "selectivity": self.selectivity,
                "heritability": self.heritability, "n_conserve": self.n_conserve}
