"""The gradient-free sampler of an inverse set: any scorer, noisy included."""
from __future__ import annotations

import math

import numpy as np

from .constraints import describe_component
from .evaluation import Evaluator
from .features import diversity, knn_mean, pairwise


#: Settings of the gradient-free path: the feasibility rate the mutation step size aims at, and how
#: many feasible samples (as a fraction of the population) the reach optimizer finds before the spread.
FREE_TUNING = {"target_rate": 0.25, "switch": 0.25}


def sphere_step(parents: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian step of relative size sigma, the code norm kept: a random walk must not drift out of
    the decoder's typical set (for z-normalised decoders the norm is irrelevant anyway)."""
    norm = np.linalg.norm(parents, axis=1, keepdims=True)
    rms = np.maximum(norm / math.sqrt(parents.shape[1]), 1e-12)
    child = parents + sigma * rms * rng.standard_normal(parents.shape)
    return child / np.maximum(np.linalg.norm(child, axis=1, keepdims=True), 1e-12) * norm


def sample_free(ev: Evaluator, n: int, budget: int, rng: np.random.Generator, seed, optimizer: str, beta: float,
                k_nearest: int, report) -> dict:
    """Reach, then spread. The project's optimizer (``make_optimizer``, genetic by default) first drives
    a population into range (maximising minus the range violation); then a population method on
    fitness = -violation + beta * novelty, novelty being the mean feature-space distance to the k
    nearest archived samples: parents by binary tournament on that fitness among the archive and the
    last generation, children by a spherical Gaussian mutation (code norm kept, step size adapted to a
    25 % feasibility rate) or a blend of two parents; a share of each generation, in proportion to its
    success, is drawn afresh from the code prior (independent draws are the most diverse there are when
    the range is easy to hit). Every feasible sample is archived, until n."""
    from ..optimizers import make_optimizer

    R = ev.repeats
    dim = int(ev.decoder.latent_dim)
    reach = make_optimizer(optimizer, dim, seed=seed, noisy=ev.targets.noisy)
    a = ev.archive
    pop_size = None
    n_switch = None
    scale = None  # feature-distance unit: mean pairwise distance of the first generation (prior samples)
    sigma, target_rate = 0.3, FREE_TUNING["target_rate"]
    r_prior, r_mut, from_prior = 0.0, target_rate, 0  # recent feasible rates of prior draws and mutations
    last = None  # the previous generation (codes, features, violation) for parent selection
    gens = {"reach": 0, "spread": 0}
    sigmas = []
    while a.size < n and ev.targets.presentations + R <= budget:
        room = (budget - ev.targets.presentations) // R
        if n_switch is None or a.size < n_switch:
            # Reach: the project's optimizer maximises -violation (all in-range codes tie at 0, so
            # selection among them is uniform and the population drifts inside the range).
            codes = np.asarray(reach.ask(), dtype=np.float64)
            P = len(codes)
            if pop_size is None:
                pop_size = P
                n_switch = min(n, max(2, int(P * FREE_TUNING["switch"])))
            k = min(P, room)
            e = ev(codes[:k])
            told = np.full(P, np.nan)
            told[:k] = -e["violation"]
            reach.tell(codes, told)
            gens["reach"] += 1
        else:
            # Spread: parents from the archive and the last generation by fitness = -violation + beta *
            # novelty, children by spherical mutation or blend; all feasible children archived.
            A_codes, A_feat = a.get("codes"), a.get("features")
            pool_codes, pool_feat = A_codes, A_feat
            pool_viol = np.zeros(len(A_codes))
            if last is not None and len(last["codes"]):
                keep = ~last["feasible"] & np.isfinite(last["violation"])
                pool_codes = np.concatenate([pool_codes, last["codes"][keep]])
                pool_feat = np.concatenate([pool_feat, last["features"][keep]])
                pool_viol = np.concatenate([pool_viol, last["violation"][keep]])
            dist = pairwise(pool_feat, A_feat)
            self_mask = np.zeros_like(dist, dtype=bool)
            self_mask[np.arange(len(A_codes)), np.arange(len(A_codes))] = True
            dist[self_mask] = np.inf  # an archived sample is not its own neighbour
            nov = knn_mean(dist, k_nearest) if len(A_codes) > 1 else np.ones(len(pool_codes))
            nov = np.where(np.isfinite(nov), nov, 0.0)
            fitness = -pool_viol + beta * nov / scale
            k = min(pop_size, room)
            # Independent draws from the code prior are the most diverse samples there are: when the
            # prior often lands in range, rejection sampling is the best sampler. Share each
            # generation between prior draws and mutations in proportion to their recent success.
            share = float(np.clip(r_prior / max(r_prior + r_mut, 1e-12), 0.05, 0.95))
            n_prior = int(rng.binomial(k, share))
            k_mut = k - n_prior
            i1 = rng.integers(len(pool_codes), size=k_mut)
            i2 = rng.integers(len(pool_codes), size=k_mut)
            parents = np.where((fitness[i1] >= fitness[i2])[:, None], pool_codes[i1], pool_codes[i2])
            blend = rng.random(k_mut) < 0.3
            if blend.any() and len(A_codes) > 1:
                mates = A_codes[rng.integers(len(A_codes), size=int(blend.sum()))]
                t = rng.random((int(blend.sum()), 1))
                mixed = parents[blend] + t * (mates - parents[blend])
                # keep the parents' norm (the blend of two codes is shorter than either)
                mixed *= np.linalg.norm(parents[blend], axis=1, keepdims=True) / np.maximum(
                    np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
                parents = parents.copy()
                parents[blend] = mixed
            children = np.concatenate([rng.standard_normal((n_prior, dim)), sphere_step(parents, sigma, rng)])
            e = ev(children)
            feas = e["feasible"]
            if n_prior:
                r_prior = 0.8 * r_prior + 0.2 * float(np.mean(feas[:n_prior]))
                from_prior += int(feas[:n_prior].sum())
            if k_mut:
                rate = float(np.mean(feas[n_prior:]))
                r_mut = 0.8 * r_mut + 0.2 * rate
                # one-fifth-style rule on feasibility: big steps while the range is wide around us
                sigma = float(np.clip(sigma * (1.25 if rate > target_rate else 0.8), 1e-3, 3.0))
                sigmas.append(sigma)
            gens["spread"] += 1
        if scale is None:  # the first generation is the optimizer's initial population: prior samples
            d = diversity(e["features"])
            scale = d if np.isfinite(d) and d > 0 else 1.0
            r_prior = float(np.mean(e["feasible"]))
        ev.accept(e, n - a.size)
        last = e
        report()
    return {"generations": gens, "population_size": pop_size, "sigma_final": sigmas[-1] if sigmas else None,
            "feature_scale": scale, "accepted_from_prior": from_prior, "reach_optimizer": describe_component(reach)}
