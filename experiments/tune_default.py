#!/usr/bin/env python
"""Parameter sweeps of an optimizer (the default one first) on held-out units of the reference model.

The issue asks to tune the default optimizer on the shipped model's units. To keep the benchmark's
units (bench_optimizers.py ``medium``: the first two reference units per depth, seeds 0 and 1) a test
rather than a training set, sweeps run on other units (``--units``, default: the 3rd and 7th reference
unit per hidden depth and both logits) and other seeds (50, 51, ...). The score is the clean activation
of the series a run reports, divided by the best of 8 restarts of gradient ascent on the latent code
through the torch twin (cached in experiments/_work/tune_best.json); ``max`` is the best clean activation
among every series the run presented (what a perfect choice of the reported series would give).

Configurations: ``NAME`` or ``NAME|KEY=VALUE;KEY=VALUE`` (optimizer parameters, e.g.
``default|mean_rate=1.0;population_size=80``), optionally prefixed ``repR:`` to show every code R times
and tell the optimizer the mean (what the loop's ``--repeats R`` does; the optimizer plans over
budget / R evaluations). Runs advance in lockstep with bench_optimizers.py's batched, windowed scorer.

``--trace`` follows one run of the first configuration on the first unit instead (seed 50): the clean
value of the search centre (the default optimizer's recombined mean) every 5 generations, with the
spread of the generation's clean responses (sd / mean), which is what the noise has to be compared with.

    python experiments/tune_default.py default "default|mean_rate=1.0" --noises none,gain:0.5
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import bench_optimizers as bench  # noqa: E402
import xdream_ts.optimizers as optimizers  # noqa: E402

HELD_OUT = ("block1/out:11,block1/out:29,block2/out:33,block2/out:97,block3/out:3,block3/out:57,"
            "logits:0,logits:1")
DEPTHS = ("block1/out", "block2/out", "block3/out", "logits")


class Repeated:
    """Show every code ``r`` times and tell the optimizer the mean response (the loop's repeats)."""

    def __init__(self, opt, r: int):
        self.opt, self.r = opt, r

    def ask(self):
        self.codes = np.asarray(self.opt.ask())
        return np.repeat(self.codes, self.r, axis=0)

    def tell(self, codes, scores):
        s = np.asarray(scores, float).reshape(-1, self.r)
        self.opt.tell(self.codes, np.where(np.isfinite(s).all(axis=1), s.mean(axis=1), np.nan))

    def incumbent(self):
        return self.opt.incumbent() if hasattr(self.opt, "incumbent") else None


def parse_config(text: str) -> tuple[int, str, dict]:
    """'rep2:default|mean_rate=1.0;population_size=80' -> (2, 'default', {...})."""
    repeats = 1
    if text.startswith("rep"):
        head, _, text = text.partition(":")
        repeats = int(head[3:])
    name, _, params = text.partition("|")
    kw = {}
    for item in filter(None, params.split(";")):
        key, _, value = item.partition("=")
        kw[key] = json.loads(value)
    return repeats, name, kw


_make = optimizers.make_optimizer


def make_configured(config, dim, seed=None, noisy=False, evaluations=None):
    repeats, name, kw = parse_config(config)
    opt = _make(name, dim, seed=seed, noisy=noisy, evaluations=evaluations // repeats, **kw)
    return Repeated(opt, repeats) if repeats > 1 else opt


def trace(problem, config: str, noise: str, budget: int, best: float, seed: int = 50) -> None:
    from xdream_ts.adapters.simulated import with_noise
    opt = make_configured(config, problem.decoder.latent_dim, seed=seed, noisy=noise != "none", evaluations=budget)
    inner = getattr(opt, "opt", opt)
    noisy = None if noise == "none" else with_noise(bench._Null(), noise, seed=7 + seed)
    unit_of = lambda n: np.zeros(n, dtype=int)  # noqa: E731
    print(f"trace: {config} on {problem.units[0].name}, noise {noise}, seed {seed}")
    used, generation, top = 0, 0, -np.inf
    while used < budget:
        codes = np.asarray(opt.ask())
        clean = problem.score(np.asarray(problem.decoder(codes)), unit_of(len(codes)))
        opt.tell(codes, clean if noisy is None else np.asarray(noisy.add_noise(clean), dtype=float))
        used, generation, top = used + len(codes), generation + 1, max(top, float(clean.max()))
        if generation % 5 == 0 and hasattr(inner, "mean"):
            centre = problem.score(np.asarray(problem.decoder(inner.radius * inner.mean[None])), unit_of(1))[0]
            print(f"  presentations {used:5d}  step {inner.sigma:.2f} rad  centre {centre / best:.3f}  "
                  f"max {top / best:.3f}  clean spread {np.std(clean) / abs(np.mean(clean)):.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="NAME or [repR:]NAME|KEY=VALUE;KEY=VALUE")
    p.add_argument("--noises", default="gain:0.5", help="comma-separated noise specs")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--budget", type=int, default=3000)
    p.add_argument("--units", default=HELD_OUT)
    p.add_argument("--trace", action="store_true", help="follow one run (see the module doc)")
    a = p.parse_args(argv)
    for c in a.configs:
        parse_config(c)  # fail on a malformed configuration before anything runs
    args = argparse.Namespace(simulated=0, model=None, units=a.units, decoder=None, no_gradient=False)
    problem = bench.build_problem(args, {})
    cache = REPO / "experiments" / "_work" / "tune_best.json"
    best = json.loads(cache.read_text()) if cache.exists() else {}
    for i, u in enumerate(problem.units):
        if u.name not in best:
            best[u.name] = problem.gradient_ascent(i, "latent", 300, 8)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(best))
    if a.trace:
        for nz in a.noises.split(","):
            trace(problem, a.configs[0], nz, a.budget, best[problem.units[0].name])
        return 0
    # run_lockstep builds optimizers by name through xdream_ts.optimizers.make_optimizer
    optimizers.make_optimizer = make_configured
    specs = [bench.RunSpec(c, u, 50 + s, nz, a.budget) for nz in a.noises.split(",") for c in a.configs
             for u in range(len(problem.units)) for s in range(a.seeds)]
    t0 = time.perf_counter()
    results = bench.run_lockstep(problem, specs, log=lambda *_: None)
    print("| noise | configuration | score | +- | max | " + " | ".join(DEPTHS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(DEPTHS))
    for nz in a.noises.split(","):
        for c in a.configs:
            rs = [r for r in results if r["method"] == c and r["noise"] == nz]
            norm = lambda r, key: r[key] / best[problem.units[r["unit"]].name]  # noqa: E731
            score = np.array([norm(r, "picked_clean") for r in rs])
            top = np.array([norm(r, "max_clean") for r in rs])
            per = [np.mean([norm(r, "picked_clean") for r in rs if problem.units[r["unit"]].tensor == t])
                   for t in DEPTHS]
            print(f"| {nz} | `{c}` | {score.mean():.3f} | {score.std() / np.sqrt(len(score)):.3f} | "
                  f"{top.mean():.3f} | " + " | ".join(f"{v:.2f}" for v in per) + " |", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s for {len(specs)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
