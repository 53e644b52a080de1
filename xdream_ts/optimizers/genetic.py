"""XDream's genetic algorithm, as published (Xiao & Kreiman 2020; willwx/XDream ``Optimizers.Genetic``).

One generation, given scores y of the current population (NaN = no response):
  - codes whose score is missing are carried into the next generation unchanged, at its end, to be shown
    again;
  - the selection temperature is kT = std(y) / selectivity, the population std (ddof 0) of the valid scores
    as they came, before any capping; kT is floored at 1e-8 so that tied scores do not divide by zero;
  - the valid codes are ranked high to low, their scores are capped at the 95th percentile (one outlier must
    not take over the population), and fitness is w = exp((y_capped - max y_capped) / kT), so the best
    code has w = 1; a fitness that underflows to 0 is raised to the smallest positive one;
  - the best ``n_conserve`` codes survive unchanged, neither recombined nor mutated;
  - every child has two parents, each drawn independently, with replacement, from all ranked valid codes
    (the conserved ones included) with probability w / sum(w); the two may be the same code;
  - each component of the child comes from the first parent with probability ``heritability`` (folded to
    >= 0.5: which parent is "first" is arbitrary) and from the second otherwise;
  - each component of the child, independently with probability ``mutation_rate``, gets N(0, mutation_size)
    added.
Defaults are the published ones: population 20, mutation rate 0.5, mutation size 0.5, selectivity 2,
heritability 0.5, n_conserve 0 (1 under noise, see below). The initial population is standard normal (a
N(0, I) latent prior); start codes fewer than the population are completed with their mutated offspring
under equal fitness.

Under noise (``noisy=True``, which the loop sets for noisy scorers) the GA is XDream's recording set-up:
``n_conserve`` = 1, so the best code of each generation is shown again, unchanged, in the next one. Its
new response there was not what selected it, so it is an honest measurement; while a code stays the
conserved one its measurements accumulate. ``incumbent()`` is the conserved code of the last generation
shown, with the mean of those measurements: the series a GA user would be handed, and never the
luckiest single response of the run (issue 19).
"""
from __future__ import annotations

import numpy as np

from ._base import BaseOptimizer


def selection_temperature(scores: np.ndarray, selectivity: float) -> float:
    """kT = std / selectivity of the valid scores as given (not capped), floored at 1e-8 (all scores tied)."""
    return max(float(np.std(scores)) / selectivity, 1e-8)


def selection_weights(scores: np.ndarray, selectivity: float) -> np.ndarray:
    """XDream's fitness of each score (same order as ``scores``): exp((y_c - max y_c) / kT).

    y_c are the scores capped at their 95th percentile (so max y_c is that percentile) and kT comes from
    the uncapped scores (``selection_temperature``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    kT = selection_temperature(scores, selectivity)
    capped = np.minimum(scores, np.percentile(scores, 95))
    return np.exp((capped - capped.max()) / kT)


def _positive(fitness: np.ndarray) -> np.ndarray:
    """Fitness made strictly positive, as XDream's mating does: zeros (underflow) take the smallest positive."""
    fitness = np.array(fitness, dtype=np.float64)
    if fitness.max() <= 0:
        fitness[np.argmax(fitness)] = 1e-3
    if fitness.min() <= 0:
        fitness[fitness <= 0] = fitness[fitness > 0].min()
    return fitness


def selection_probabilities(scores: np.ndarray, selectivity: float) -> np.ndarray:
    """The probability that each code (same order as ``scores``) is drawn as a given parent."""
    fitness = _positive(selection_weights(scores, selectivity))
    return fitness / fitness.sum()


class Genetic(BaseOptimizer):
    name = "genetic"
    _state_keys = ("population", "conserved", "elite_code", "elite_sum", "elite_n")

    # n_conserve = 0 by default. XDream's class and its in-silico (CNN) demo use 0, its recording
    # experiment 1. Without noise (a model unit, the in-silico setting) a conserved code would be shown
    # again only to repeat its score, spending 1 presentation in 20. Under noise (a neuron, a rig, a noisy
    # scorer) it is the recording set-up, and the re-shown code is what the run reports.
    def __init__(self, dim: int, seed: int | None = None, population_size: int = 20, mutation_rate: float = 0.5,
                 mutation_size: float = 0.5, selectivity: float = 2.0, heritability: float = 0.5,
                 n_conserve: int | None = None, init: np.ndarray | None = None, init_scale: float = 1.0,
                 noisy: bool = False):
        super().__init__(dim, seed)
        from ..errors import UserError
        self.noisy = bool(noisy)
        if n_conserve is None:
            n_conserve = 1 if self.noisy else 0
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
        self.conserved = np.zeros(0)  # the code tell() put first in the population, to be shown again
        # the conserved code shown in the last generation told, and its responses as the conserved code
        self.elite_code, self.elite_sum, self.elite_n = np.zeros(0), 0.0, 0

    def load_state_dict(self, state: dict) -> None:
        # stores written before the GA reported its conserved code have none: it starts empty
        super().load_state_dict({"conserved": np.zeros(0), "elite_code": np.zeros(0), "elite_sum": 0.0,
                                 "elite_n": 0, **state})

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
        """n children of ``parents``; each parent drawn with replacement with probability fitness / sum."""
        cdf = np.cumsum(_positive(fitness))
        cdf /= cdf[-1]
        # inverse-CDF draws: index i is picked when cdf[i-1] <= u < cdf[i], i.e. with probability p_i
        first = np.minimum(np.searchsorted(cdf, self.rng.random(n), side="right"), len(parents) - 1)
        second = np.minimum(np.searchsorted(cdf, self.rng.random(n), side="right"), len(parents) - 1)
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
        if len(self.conserved) and np.isfinite(scores[0]) and np.array_equal(codes[0], self.conserved):
            # the conserved code's new response: accumulate while it stays the same code
            if not np.array_equal(self.elite_code, codes[0]):
                self.elite_code, self.elite_sum, self.elite_n = codes[0].copy(), 0.0, 0
            self.elite_sum += float(scores[0])
            self.elite_n += 1
        size = self.population_size
        new = np.empty((size, self.dim))
        missing = np.isnan(scores)
        n_missing = min(int(missing.sum()), size)
        if n_missing:
            new[size - n_missing:] = codes[missing][-n_missing:]  # shown again next generation
        valid = ~missing
        if valid.any():
            y = scores[valid]
            # fitness from all valid scores (kT uncapped, cap at their 95th percentile), then ranked
            fitness = selection_weights(y, self.selectivity)
            # high to low; ties in reverse population order (XDream's reversed argsort, made stable here so
            # that the order does not depend on numpy's platform-specific quicksort)
            order = np.argsort(y, kind="stable")[::-1]
            n_keep = min(len(order), size - n_missing)
            ranked, fitness = codes[valid][order][:n_keep], fitness[order][:n_keep]
            new[:n_keep] = ranked
            n_children = size - self.n_conserve - n_missing
            if n_children > 0:
                children = self._mate(ranked, fitness, n_children)
                new[self.n_conserve:self.n_conserve + n_children] = self._mutate(children)
            if self.n_conserve:
                self.conserved = new[0].copy()
        self.population = new

    def incumbent(self) -> tuple[np.ndarray, float, int] | None:
        """Under noise: (the conserved code last shown, its mean response as the conserved code, the number
        of those responses); None without noise, where the best observed response is exact."""
        if not self.noisy or self.elite_n == 0:
            return None
        return self.elite_code.copy(), self.elite_sum / self.elite_n, int(self.elite_n)

    def describe(self) -> dict:
        return {**super().describe(), "population_size": self.population_size, "mutation_rate": self.mutation_rate,
                "mutation_size": self.mutation_size, "selectivity": self.selectivity,
                "heritability": self.heritability, "n_conserve": self.n_conserve, "noisy": self.noisy}
