"""The default optimizer: explore, then CMA-style search on a sphere of fixed code norm with step decay.

What the anchors teach (Wang & Ponce 2022, "High-performance evolutionary algorithms for online
neuron control"): in high-dimensional latent spaces CMA-ES barely learns a covariance; what makes it
beat XDream's GA (about 2x without noise, 1.5x with noise at 3,000 evaluations) is local search with
weighted recombination and a step size that decays. Their SphereCMA searched on a sphere of fixed code
norm with an exponentially decaying angular step (50 -> 7.33 degrees over the run, population 40, the
best half recombined, the mean moved 1.5x the recombined step) and did best without noise. This
optimizer is that search, with three additions, tuned on units of the shipped reference model (the
tuning runs were not kept; experiments/results/optimizers.md is the committed measurement, on all
32 reference units):

- **Explore first.** The first ``explore`` fraction of the budget (15 %) samples uniformly on the
  sphere; the local search starts from the best of those. Unit landscapes seen through a decoder are
  multimodal: where a local search starts decides which peak it climbs.
- **A smaller sphere.** Radius ``0.5 * sqrt(d)`` by default: half the norm where N(0, I) codes
  concentrate. On the shipped VAE such codes decode to series that drive units harder than codes of
  typical norm; decoders that z-normalise a linear map's output (identity, basis) do not see the
  norm at all.
- **Noise** (``noisy=True``, which the loop sets for noisy scorers): every ``snapshot_every``
  generations a snapshot of the search centre (the recombined mean, put on the sphere) is taken; the
  snapshot and the incumbent are shown again in every generation, so their mean responses accumulate.
  The incumbent is the snapshot with the best mean response, shrunk towards the last generation's
  median as if that were one more measurement, so one lucky draw cannot win; a sampled code is
  never reported on the strength of its single (selected, hence lucky) response. The angular step
  decays less (to ``sigma_end`` = 0.35 rad): a wider sample sees differences above the noise, and the
  recombination averages them (Beyer's rescaled mutations); without noise it decays to 0.128 rad.

Samples are the mean direction rotated by an angle ~ sigma towards a random tangent direction (the
exponential map), in mirrored pairs (+t, -t) which cancel the sampling noise of the recombination to
first order. Recombination uses CMA-ES's log-rank weights over the best half (ranks, not values:
robust to the scorer's scale and outliers; ties broken at random). A NaN response (missing) ranks
last; a generation without any response is asked again. Without noise the centre is shown in every
generation (the recombined point is often better than every sample) and the incumbent is the best
response seen.

The step decays over ``budget`` evaluations (presentations / repeats; default 3,000, the CLI's default
budget), and stays at ``sigma_end`` after it. ``incumbent()`` returns the code this optimizer believes
best with its mean response and number of measurements: under noise, the code to report.
"""
from __future__ import annotations

import math

import numpy as np

from ._base import BaseOptimizer


def log_rank_weights(mu: int) -> np.ndarray:
    """CMA-ES's positive recombination weights for the ``mu`` best, best first, summing to 1."""
    w = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    return w / w.sum()


class DefaultOptimizer(BaseOptimizer):
    """Explore, then search on a sphere with a decaying angular step; noise-aware (see the module doc).

    population_size  codes per generation (constant; 40 as in Wang & Ponce's SphereCMA)
    radius           norm of every code (default 0.5 * sqrt(dim); with ``init``, ``start_radius_scale`` (2) times
                     the norm of its first code)
    sigma0, sigma_end  angular step (radians) at the start and the end of ``budget``
                     (default 0.87 -> 0.128, or 0.87 -> 0.35 when noisy)
    budget           evaluations the run will give (presentations / repeats), for the step decay
    mean_rate        the mean moves this many times the angle to the recombined point (1.5)
    explore          fraction of the budget spent sampling uniformly on the sphere first (0.15)
    snapshot_every   noisy targets: generations between snapshots of the centre (10)
    init             start codes (e.g. encoded real series, best first): the first generation shows them as
                     they are (filled up with samples around the first), and the first's direction
                     replaces exploration
    """

    name = "default"
    _state_keys = ("mean", "n_told", "generation", "best_seen", "pending", "layout", "archive_codes",
                   "archive_sum", "archive_n", "prior", "incumbent_index", "snapshot_index", "radius", "explore")

    def __init__(self, dim: int, seed: int | None = None, population_size: int = 40, noisy: bool = False,
                 init: np.ndarray | None = None, radius: float | None = None, sigma0: float = 0.87,
                 sigma_end: float | None = None, budget: int = 3000, mean_rate: float = 1.5,
                 explore: float = 0.15, snapshot_every: int = 10, start_radius_scale: float = 2.0):
        super().__init__(dim, seed)
        from ..errors import UserError
        if self.dim < 2:
            raise UserError("default optimizer: a sphere needs codes of dimension >= 2; use cmaes or genetic")
        if int(population_size) < 4:
            raise UserError(f"default optimizer: population_size must be >= 4, got {population_size}")
        self.population_size = int(population_size)
        self.noisy = bool(noisy)
        self.sigma0 = float(sigma0)
        self.sigma_end = float(sigma_end if sigma_end is not None else (0.35 if self.noisy else 0.128))
        if not (0 < self.sigma_end <= self.sigma0 <= math.pi):
            raise UserError(f"default optimizer: need 0 < sigma_end <= sigma0 <= pi (radians), "
                            f"got sigma0={self.sigma0}, sigma_end={self.sigma_end}")
        if int(budget) < 1:
            raise UserError(f"default optimizer: budget must be >= 1, got {budget}")
        self.budget = int(budget)
        seeds = None if init is None else np.asarray(init, dtype=np.float64).reshape(-1, self.dim)[: self.population_size]
        start_norm = 0.0 if seeds is None else float(np.linalg.norm(seeds[0]))
        # Without a start, a sphere of norm 0.5 * sqrt(dim) (tuned on the prior). With one (an encoded real
        # series), a sphere ``start_radius_scale`` (2) times its norm: a smaller one than the start's pulls
        # every sample towards the data's mean shape; the start's own norm keeps the search among series as
        # typical as the data's and leaves activation unclaimed; twice it reached the shipped prior's
        # activation or more on 4 of 5 models (experiments/results/data_space.md). The start codes themselves
        # are shown as they are. --plausible keeps the start's norm (plausible.start_codes): its feasible
        # region is the data's.
        if not start_radius_scale > 0:
            raise UserError(f"default optimizer: start_radius_scale must be > 0, got {start_radius_scale}")
        self.start_radius_scale = float(start_radius_scale)
        self.radius = float(radius) if radius is not None else (
            self.start_radius_scale * start_norm if start_norm > 0 else 0.5 * math.sqrt(self.dim))
        if not self.radius > 0:
            raise UserError(f"default optimizer: radius must be > 0, got {radius}")
        self.mean_rate = float(mean_rate)
        if not 0 < self.mean_rate <= 2:
            raise UserError(f"default optimizer: mean_rate must be in (0, 2], got {mean_rate}")
        if not 0 <= explore < 1:
            raise UserError(f"default optimizer: explore must be a fraction of the budget in [0, 1), got {explore}")
        self.snapshot_every = int(snapshot_every)
        if self.snapshot_every < 1:
            raise UserError(f"default optimizer: snapshot_every must be >= 1, got {snapshot_every}")

        start = None if seeds is None else seeds[0]
        if start is not None and np.linalg.norm(start) > 0:
            self.explore_fraction, self.explore = 0.0, 0  # a given start replaces exploration
        else:
            start = self.rng.standard_normal(self.dim)
            self.explore_fraction = float(explore)
            # generations of uniform sampling (at least one when exploring at all)
            self.explore = max(1, round(self.explore_fraction * self.budget / self.population_size)) if explore else 0
        self.mean = start / np.linalg.norm(start)    # unit vector: direction of the search centre
        self.n_told = 0                               # evaluations told (drives the step decay)
        self.generation = 0
        self.best_seen = -np.inf                      # best response during exploration
        self.archive_codes = np.zeros((0, self.dim))  # candidates for the incumbent, with their responses
        self.archive_sum = np.zeros(0)
        self.archive_n = np.zeros(0, dtype=np.int64)
        self.prior = 0.0                              # median response of the last generation
        self.incumbent_index = -1
        self.snapshot_index = -1
        self.pending, self.layout = self._propose()
        if seeds is not None and np.linalg.norm(start) > 0:
            # The start codes themselves (encoded real series, best first) are the first generation, as they
            # are: a search that starts from the data never reports less than the best real series it started
            # from. The best one stands where the centre would, so it becomes the first candidate.
            k = len(seeds)
            fresh = self.pending[: max(0, self.population_size - k)]
            self.pending = np.concatenate([fresh, seeds[1:], seeds[:1]])
            self.layout = np.array([self.population_size - 1 if not self.noisy else self.population_size], dtype=np.int64)

    def load_state_dict(self, state: dict) -> None:
        # radius and explore follow from the start codes, which a resumed run does not pass again: they are
        # state. Stores written before they were keep the values this instance was built with.
        super().load_state_dict({"radius": self.radius, "explore": self.explore, **state})

    # ---- sampling ---------------------------------------------------------------------------------
    @property
    def sigma(self) -> float:
        """The current angular step (radians): geometric decay from sigma0 to sigma_end over the budget."""
        frac = min(1.0, self.n_told / self.budget)
        return self.sigma0 * (self.sigma_end / self.sigma0) ** frac

    @property
    def exploring(self) -> bool:
        return self.generation < self.explore

    def _sample(self, n: int) -> np.ndarray:
        if self.exploring:  # uniform directions on the sphere
            z = self.rng.standard_normal((n, self.dim))
            return self.radius * z / np.linalg.norm(z, axis=1, keepdims=True)
        m = self.mean
        half = (n + 1) // 2
        z = self.rng.standard_normal((half, self.dim))
        t = z - np.outer(z @ m, m)                         # tangent at m
        t = np.concatenate([t, -t])[:n]                    # mirrored pairs
        tn = np.linalg.norm(t, axis=1, keepdims=True)
        angle = self.sigma * tn / math.sqrt(self.dim - 1)  # chi-distributed around sigma
        return self.radius * (np.cos(angle) * m + np.sin(angle) * t / np.maximum(tn, 1e-300))

    def _propose(self) -> tuple[np.ndarray, np.ndarray]:
        """Fresh samples, then (noiseless) the centre, or (noisy) the archive rows shown again.

        ``layout`` = [number of fresh samples, archive rows shown after them...].
        """
        if not self.noisy:
            fresh = self._sample(self.population_size - 1)
            return np.concatenate([fresh, self.radius * self.mean[None]]), np.array([len(fresh)], dtype=np.int64)
        if self.snapshot_index < 0 or self.generation % self.snapshot_every == 0:
            centre = self.radius * self.mean
            same = np.flatnonzero(np.all(self.archive_codes == centre, axis=1))
            if len(same):  # the centre did not move (e.g. exploring): keep measuring that row
                self.snapshot_index = int(same[0])
            else:
                self._add(centre)  # a new snapshot of the centre, unmeasured yet
                self.snapshot_index = len(self.archive_n) - 1
        again = [self.snapshot_index]
        other = self.incumbent_index if self.incumbent_index != self.snapshot_index else self._runner_up()
        if other >= 0:
            again.append(other)
        fresh = self._sample(self.population_size - len(again))
        return np.concatenate([fresh, self.archive_codes[again]]), np.array([len(fresh)] + again, dtype=np.int64)

    def _runner_up(self) -> int:
        est = self._estimates()
        order = [int(i) for i in np.argsort(-est, kind="stable")
                 if int(i) != self.snapshot_index and self.archive_n[i] > 0]
        return order[0] if order else -1

    # ---- ask/tell ---------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        return self.pending.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = self._check_tell(codes, scores, self.pending)
        ok = np.isfinite(scores)
        if not ok.any():
            return  # nothing measured: the same codes are asked again
        self.n_told += int(ok.sum())
        self.generation += 1
        nf, again = int(self.layout[0]), [int(i) for i in self.layout[1:]]
        pool = self.pending

        # rank every measured code of this generation; ties (Poisson counts, a silent unit) at random
        order = np.lexsort((self.rng.random(len(scores)), np.where(ok, -scores, np.inf)))
        if self.generation <= self.explore:
            if scores[order[0]] > self.best_seen:  # the local search will start from the best explored
                self.best_seen = float(scores[order[0]])
                self.mean = pool[order[0]] / np.linalg.norm(pool[order[0]])
        else:
            mu = max(1, min(int(ok.sum()), self.population_size // 2))
            best = pool[order[:mu]]
            target = log_rank_weights(mu) @ (best / np.linalg.norm(best, axis=1, keepdims=True))
            self.mean = self._geodesic_step(self.mean, target, self.mean_rate)

        if self.noisy:
            for row, y in zip(again, scores[nf:]):
                if np.isfinite(y):
                    self.archive_sum[row] += y
                    self.archive_n[row] += 1
        else:  # candidates: the centre and the best new code, each measured exactly
            for j in (nf, int(np.argmax(np.where(ok[:nf], scores[:nf], -np.inf)))):
                if np.isfinite(scores[j]):
                    self._add(pool[j], scores[j])
        self.prior = float(np.median(scores[ok]))
        est = self._estimates()
        if len(est) and np.isfinite(est).any():
            self.incumbent_index = int(np.argmax(est))
        self._prune()
        self.pending, self.layout = self._propose()

    @staticmethod
    def _geodesic_step(m: np.ndarray, target: np.ndarray, rate: float) -> np.ndarray:
        """Move the unit vector m along the great circle towards ``target``'s direction, ``rate`` x the angle."""
        tn = np.linalg.norm(target)
        if not tn > 0:
            return m
        v = target / tn
        cos = float(np.clip(m @ v, -1.0, 1.0))
        e = v - cos * m
        en = np.linalg.norm(e)
        if not en > 1e-12:
            return m
        angle = rate * math.acos(cos)
        new = math.cos(angle) * m + math.sin(angle) * e / en
        return new / np.linalg.norm(new)

    # ---- the archive of candidates ------------------------------------------------------------------
    def _add(self, code: np.ndarray, y: float | None = None) -> None:
        self.archive_codes = np.concatenate([self.archive_codes, np.asarray(code, dtype=np.float64)[None]])
        self.archive_sum = np.append(self.archive_sum, 0.0 if y is None else float(y))
        self.archive_n = np.append(self.archive_n, 0 if y is None else 1).astype(np.int64)

    def _estimates(self) -> np.ndarray:
        """Estimated response of each candidate: its response (noiseless), or its mean response shrunk
        towards the last generation's median as if that were one more measurement. Unmeasured: -inf."""
        n = self.archive_n
        if self.noisy:
            est = (self.archive_sum + self.prior) / (n + 1)
        else:
            est = self.archive_sum / np.maximum(n, 1)
        return np.where(n > 0, est, -np.inf)

    def _prune(self, keep: int = 10) -> None:
        """Keep the archive small: the incumbent, the current snapshot and the best by estimate."""
        if len(self.archive_n) <= keep:
            return
        protect = {i for i in (self.incumbent_index, self.snapshot_index) if i >= 0}
        rest = [int(i) for i in np.argsort(-self._estimates(), kind="stable") if int(i) not in protect]
        rows = sorted(protect | set(rest[: keep - len(protect)]))
        remap = {old: new for new, old in enumerate(rows)}
        self.archive_codes, self.archive_sum, self.archive_n = (
            self.archive_codes[rows], self.archive_sum[rows], self.archive_n[rows])
        self.incumbent_index = remap.get(self.incumbent_index, -1)
        self.snapshot_index = remap.get(self.snapshot_index, -1)

    # ---- reporting ----------------------------------------------------------------------------------
    def incumbent(self) -> tuple[np.ndarray, float, int] | None:
        """(code, mean response over its measurements, number of measurements) of the believed best."""
        i = self.incumbent_index
        if i < 0:
            return None
        n = int(self.archive_n[i])
        return self.archive_codes[i].copy(), float(self.archive_sum[i] / n), n

    def describe(self) -> dict:
        return {**super().describe(), "population_size": self.population_size, "noisy": self.noisy,
                "radius": self.radius, "sigma0": self.sigma0, "sigma_end": self.sigma_end, "budget": self.budget,
                "mean_rate": self.mean_rate, "explore": self.explore_fraction,
                "snapshot_every": self.snapshot_every, "start_radius_scale": self.start_radius_scale}
