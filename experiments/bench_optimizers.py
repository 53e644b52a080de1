#!/usr/bin/env python
"""Benchmark every optimizer on the reference model's units, without noise and with Poisson and gain noise.

Protocol (after Wang & Ponce 2022, "High-performance evolutionary algorithms for online neuron
control"): each optimizer searches the decoder's latent space for the series that drive one unit hardest,
with a budget in presentations (3,000 by default), 3 seeds, and three noise conditions on the observed
responses (none; Poisson spike counts, ``poisson:1``; multiplicative gain noise ``gain:0.5``). The
score of a run is the **clean** activation of the series it reports as its best: the incumbent for
optimizers that track one by mean response (``default``), else the best *observed* response (the
loop's rule). That is divided by

- **best-ever**: the best clean activation any method ever reached on that unit in the same stimulus
  space: the max over every run of every optimizer in this benchmark, plus gradient ascent on the
  latent code through the differentiable decoder on the torch version of the model (Wang & Ponce's
  normalisation), and
- **unconstrained**: gradient ascent on the raw (z-normalised) series of the torch model.

Units: ``xdream_ts.reference.reference_units()``, the fixed selection of 10 channels each of block1/out,
block2/out, block3/out (centre time step) and both logits. Modes (``--mode``):

- ``quick``  (~2 min, a smoke test of the protocol, NOT a result): 1 unit per depth of the three hidden
  depths, 1 seed, budget 600, noiseless and gain noise only;
- ``medium`` (hours on 2 cores; run it in the background with ``nice``): 2 units per depth at all 4
  depths, 2 seeds, budget 3000, all three noise conditions;
- ``full`` (for bigger machines): all 32 units, 3 seeds, budget 3000, all noise conditions, and longer
  (5x budget) runs of cmaes and default added to best-ever.

Speed: runs advance in lockstep, one generation of every active run per step, and all their series are
scored in one ONNX call per target tensor. A unit at the centre time step of a hidden layer only sees
the samples inside its receptive field (+-21 samples for block3 of the reference ResNet: 'same'
convolutions of kernels 8, 5, 3 per block), so for those units the model is run on a 100-sample window
around the centre (a copy of the ONNX graph with a symbolic time axis); the script checks on random
series that this gives the same activations as the full model before it starts (max |diff| printed).

Re-running after a change to one optimizer: ``--methods default --reuse OLD.json`` runs only that
method and takes every other method's runs, and the gradient references, from the JSON of an earlier run
of the same protocol (same units, seeds, budget, noises: checked); best-ever is recomputed over the union
and the report says what was reused and from when.

Results go to experiments/results/optimizers[_MODE].md (+ a PNG of the curves); ``--out`` overrides.
    nice -n 10 python experiments/bench_optimizers.py --mode quick
"""
from __future__ import annotations

import os

# Before numpy is imported: BLAS threads fight over the few cores (pycma's eigendecomposition at d = 32
# runs 10x slower with OpenBLAS's default thread pool on a loaded 2-core machine).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ["genetic", "nes", "fdgd", "cmaes", "ng:NGOpt", "ng:TBPSA", "random", "default"]
NOISES = ["none", "poisson:1", "gain:0.5"]
WINDOWS = (32, 48, 64, 96, 128, 192)  # candidate windows around the centre for hidden centre units

MODES = {
    "quick": dict(per_depth=1, depths=("block1/out", "block2/out", "block3/out"), seeds=1, budget=600,
                  noises=("none", "gain:0.5"), long_factor=0, grad_steps=150, grad_restarts=4),
    "medium": dict(per_depth=2, depths=("block1/out", "block2/out", "block3/out", "logits"), seeds=2, budget=3000,
                   noises=tuple(NOISES), long_factor=0, grad_steps=300, grad_restarts=8),
    "full": dict(per_depth=10, depths=("block1/out", "block2/out", "block3/out", "logits"), seeds=3, budget=3000,
                 noises=tuple(NOISES), long_factor=5, grad_steps=500, grad_restarts=16),
}


# ---------------------------------------------------------------------------------------------------
# Problems: a decoder, units, and a batched clean scorer per unit group
# ---------------------------------------------------------------------------------------------------
@dataclass
class Unit:
    tensor: str
    channel: int
    position: str          # "center" or "none" (2-D tensors)
    reference_max: float | None = None

    @property
    def name(self) -> str:
        return f"{self.tensor}:{self.channel}" + (f"@{self.position}" if self.position != "none" else "")


def _windowed_copy(model_path: Path) -> Path:
    """A copy of the ONNX model whose time axis is symbolic, so it runs on a window of the series."""
    import onnx
    m = onnx.load(str(model_path))

    def free_time(vi):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 3:
            dims[2].ClearField("dim_value")
            dims[2].dim_param = "time"

    free_time(m.graph.input[0])
    for vi in list(m.graph.value_info) + list(m.graph.output):
        free_time(vi)
    out = Path(tempfile.mkdtemp(prefix="bench_opt_")) / "windowed.onnx"
    onnx.save(m, str(out))
    return out


class ModelProblem:
    """Units of an ONNX model (with an optional torch twin for gradient references), through a decoder."""

    def __init__(self, model_path, units: list[Unit], decoder, length: int = 500, window: bool = True,
                 torch_model=None, torch_modules: dict | None = None, torch_decoder=None):
        from xdream_ts.adapters.onnx import OnnxScorer, Target
        self.units, self.decoder, self.length = units, decoder, length
        self.torch_model, self.torch_modules, self.torch_decoder = torch_model, torch_modules or {}, torch_decoder
        self.windowed = window
        self.real = None  # real series (n, length): starts for the unconstrained gradient ascent
        win_path = _windowed_copy(Path(model_path)) if window else None
        self.groups = {}  # tensor -> (scorer, crop slice or None, [unit indices])
        self._full = {}
        for tensor in dict.fromkeys(u.tensor for u in units):
            idx = [i for i, u in enumerate(units) if u.tensor == tensor]
            pos = [units[i].position if units[i].position != "none" else "center" for i in idx]
            full = OnnxScorer(model_path, [Target(tensor, units[i].channel, p) for i, p in zip(idx, pos)],
                              threads=1, providers="cpu")
            self.groups[tensor] = (full, None, idx)
            if window and all(units[i].position == "center" for i in idx):
                found = self._smallest_exact_window(win_path, tensor, idx, full)
                if found is not None:
                    self.groups[tensor] = found
                    self._full[tensor] = full

    def _smallest_exact_window(self, win_path, tensor, idx, full, n: int = 32):
        """The shortest window around the centre giving the full model's activations exactly, or None."""
        from xdream_ts.adapters.onnx import OnnxScorer, Target
        rng = np.random.default_rng(123)
        series = np.asarray(self.decoder(rng.standard_normal((n, self.decoder.latent_dim))))
        want = np.asarray(full(series)).reshape(n, -1)
        for w in WINDOWS:
            if w >= self.length:
                break
            lo = self.length // 2 - w // 2
            scorer = OnnxScorer(win_path, [Target(tensor, self.units[i].channel, w // 2) for i in idx],
                                threads=1, providers="cpu", length=w)
            got = np.asarray(scorer(np.ascontiguousarray(series[..., lo:lo + w]))).reshape(n, -1)
            if np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()):
                return scorer, slice(lo, lo + w), idx
        return None

    def check_window(self, n: int = 64, seed: int = 0) -> float:
        """Max |windowed - full| activation over random decoded series (0 when the window is exact)."""
        if not self._full:
            return 0.0
        rng = np.random.default_rng(seed)
        series = self.decoder(rng.standard_normal((n, self.decoder.latent_dim)))
        worst = 0.0
        for t, full in self._full.items():
            scorer, crop, _ = self.groups[t]
            a = np.asarray(full(series)).reshape(n, -1)
            b = np.asarray(scorer(series[..., crop])).reshape(n, -1)
            worst = max(worst, float(np.abs(a - b).max()))
        return worst

    def score(self, series: np.ndarray, unit_of_row: np.ndarray) -> np.ndarray:
        """Clean activation of each row's unit: one call per tensor group over that group's rows."""
        out = np.empty(len(series))
        for tensor, (scorer, crop, idx) in self.groups.items():
            rows = np.flatnonzero(np.isin(unit_of_row, idx))
            if not len(rows):
                continue
            x = series[rows] if crop is None else series[rows][..., crop]
            acts = np.asarray(scorer(np.ascontiguousarray(x)), dtype=np.float64).reshape(len(rows), -1)
            col = {u: j for j, u in enumerate(idx)}
            out[rows] = acts[np.arange(len(rows)), [col[u] for u in unit_of_row[rows]]]
        return out

    # ---- gradient references (torch) ----------------------------------------------------------------
    def _torch_unit(self, x, unit: Unit):
        acts = {}
        name = self.torch_modules[unit.tensor]
        module = dict(self.torch_model.named_modules())[name]
        h = module.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
        try:
            self.torch_model(x)
        finally:
            h.remove()
        a = acts["a"]
        return a[:, unit.channel, a.shape[-1] // 2] if a.dim() == 3 else a[:, unit.channel]

    def gradient_ascent(self, unit_index: int, space: str, steps: int, restarts: int, seed: int = 0) -> float:
        """Best clean activation by Adam ascent on the latent code ('latent') or on the raw series ('raw')."""
        import torch
        if self.torch_model is None or (space == "latent" and self.torch_decoder is None):
            return float("nan")
        unit = self.units[unit_index]
        g = torch.Generator().manual_seed(seed)
        dim = self.decoder.latent_dim if space == "latent" else self.length
        z = torch.randn(restarts, dim, generator=g, dtype=torch.float32)
        if space == "raw" and self.real is not None:
            # half the restarts from the real series that drive the unit hardest: from white noise a
            # unit behind ReLUs is often silent, and a silent unit has no gradient to climb
            acts = self.score(self.real, np.full(len(self.real), unit_index))
            top = self.real[np.argsort(-acts)[: restarts // 2]]
            z[: len(top)] = torch.as_tensor(top, dtype=torch.float32)
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.05)

        def series_of(z):
            if space == "latent":
                return self.torch_decoder(z).reshape(len(z), 1, self.length)
            x = z - z.mean(dim=1, keepdim=True)
            return (x / x.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-8)).reshape(len(z), 1, self.length)

        crop = self.groups[unit.tensor][1]  # the exact window around the centre (hidden units): same
        crop = crop if crop is not None else slice(None)  # activation, a fraction of the forward cost
        for _ in range(steps):
            opt.zero_grad()
            loss = -self._torch_unit(series_of(z)[..., crop], unit).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            x = series_of(z).reshape(len(z), self.length).numpy().astype(np.float32)
        # score the final series with the ONNX model (the benchmark's own scorer), not torch
        return float(self.score(x, np.full(len(x), unit_index)).max())


class SimulatedProblem:
    """Linear-nonlinear simulated neurons (closed-form optimum = gain) through a decoder: a fast sanity check."""

    def __init__(self, n_units: int, decoder, length: int = 500):
        from xdream_ts.adapters.simulated import SimulatedNeuron
        self.decoder, self.length = decoder, length
        self.neurons = [SimulatedNeuron(length=length, seed=s) for s in range(n_units)]
        self.units = [Unit(f"simulated{s}", 0, "none", n.max_response) for s, n in enumerate(self.neurons)]
        self.W = np.stack([n.weights for n in self.neurons])
        self.windowed = False

    def check_window(self, **_) -> float:
        return 0.0

    def score(self, series, unit_of_row):
        x = np.asarray(series, dtype=np.float64).reshape(len(series), -1)
        drive = np.einsum("nl,nl->n", x, self.W[unit_of_row]) / np.sqrt(self.length)
        return 10.0 * np.maximum(0.0, drive)

    def gradient_ascent(self, unit_index, space, steps, restarts, seed=0) -> float:
        return float(self.neurons[unit_index].max_response) if space == "raw" else float("nan")


# ---------------------------------------------------------------------------------------------------
# Lockstep runs
# ---------------------------------------------------------------------------------------------------
class _Null:
    pass


@dataclass
class RunSpec:
    method: str
    unit: int
    seed: int
    noise: str
    budget: int


@dataclass
class _Run:
    spec: RunSpec
    opt: object
    noise: object | None
    used: int = 0
    best_obs: float = -np.inf
    best_obs_code: np.ndarray | None = None
    best_obs_clean: float = np.nan
    max_clean: float = -np.inf
    curve: list = field(default_factory=list)  # (presentations, max clean so far)
    seconds: float = 0.0
    population: int = 0


def run_lockstep(problem, specs: list[RunSpec], log=print, log_every: float = 60.0) -> list[dict]:
    """Advance every run one generation at a time; score all runs' series together."""
    from xdream_ts.adapters.simulated import with_noise
    from xdream_ts.optimizers import make_optimizer
    dim = problem.decoder.latent_dim
    runs = []
    for k, s in enumerate(specs):
        noise = None if s.noise == "none" else with_noise(_Null(), s.noise, seed=10_000 + 97 * s.seed + s.unit)
        # presentations = evaluations here (repeats 1): the budget an optimizer plans its run over
        opt = make_optimizer(s.method, dim, seed=s.seed, noisy=noise is not None, evaluations=s.budget)
        runs.append(_Run(s, opt, noise))
    t0 = last = time.perf_counter()
    total = sum(s.budget for s in specs)
    while True:
        active = [r for r in runs if r.used < r.spec.budget]
        if not active:
            break
        asked, rows_unit, cut = [], [], []
        for r in active:
            t = time.perf_counter()
            codes = np.asarray(r.opt.ask(), dtype=np.float64)
            r.seconds += time.perf_counter() - t
            n = min(len(codes), r.spec.budget - r.used)
            r.population = r.population or len(codes)
            asked.append(codes)
            cut.append(n)
            rows_unit.append(np.full(n, r.spec.unit))
        shown = np.concatenate([c[:n] for c, n in zip(asked, cut)])
        series = np.asarray(problem.decoder(shown))
        clean_all = problem.score(series, np.concatenate(rows_unit))
        at = 0
        for r, codes, n in zip(active, asked, cut):
            clean = clean_all[at:at + n]
            at += n
            observed = clean.copy() if r.noise is None else np.asarray(r.noise.add_noise(clean), dtype=np.float64)
            told = np.full(len(codes), np.nan)
            told[:n] = observed
            t = time.perf_counter()
            r.opt.tell(codes, told)
            r.seconds += time.perf_counter() - t
            r.used += n
            j = int(np.argmax(observed))
            if observed[j] > r.best_obs:  # the loop's rule: the best single observed response
                r.best_obs, r.best_obs_code, r.best_obs_clean = float(observed[j]), codes[j].copy(), float(clean[j])
            r.max_clean = max(r.max_clean, float(clean.max()))
            r.curve.append((r.used, r.max_clean))
        now = time.perf_counter()
        if now - last > log_every:
            done = sum(r.used for r in runs)
            log(f"  {done}/{total} presentations, {now - t0:.0f} s")
            last = now

    # what each run reports as its best: the optimizer's incumbent when it keeps one, else best observed
    picked_codes, picked_rows = [], []
    for k, r in enumerate(runs):
        inc = r.opt.incumbent() if hasattr(r.opt, "incumbent") else None
        if inc is not None:
            picked_codes.append(inc[0])
            picked_rows.append(k)
    picked_clean = {}
    if picked_codes:
        series = np.asarray(problem.decoder(np.array(picked_codes)))
        values = problem.score(series, np.array([runs[k].spec.unit for k in picked_rows]))
        picked_clean = dict(zip(picked_rows, values))
    out = []
    for k, r in enumerate(runs):
        out.append({**r.spec.__dict__, "picked_clean": float(picked_clean.get(k, r.best_obs_clean)),
                    "best_observed_clean": r.best_obs_clean, "max_clean": r.max_clean,
                    "optimizer_seconds": round(r.seconds, 3), "population": r.population,
                    "curve": [(int(a), float(b)) for a, b in r.curve]})
    return out


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def summarise(results: list[dict], best_ever: dict, unconstrained: dict, units: list[Unit]) -> dict:
    """Mean normalised score per (noise, method), overall and per depth."""
    table = {}
    for r in results:
        be, un = best_ever[r["unit"]], unconstrained.get(r["unit"], np.nan)
        key = (r["noise"], r["method"])
        d = table.setdefault(key, {"norm": [], "unc": [], "depth": {}})
        v = r["picked_clean"] / be if be > 0 else np.nan
        d["norm"].append(v)
        d["unc"].append(r["picked_clean"] / un if un and un > 0 else np.nan)
        d["depth"].setdefault(units[r["unit"]].tensor, []).append(v)
    return table


def _fmt(x, digits=2):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def write_report(path: Path, args, mode: dict, problem, results, best_ever, unconstrained, grad_latent, seconds,
                 window_err, command: str, reuse_note: str | None = None) -> None:
    units = problem.units
    table = summarise(results, best_ever, unconstrained, units)
    noises = list(dict.fromkeys(r["noise"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    depths = list(dict.fromkeys(u.tensor for u in units))
    lines = [f"# Optimizer benchmark ({args.mode} mode)", ""]
    if args.mode == "quick":
        lines += ["**Quick mode: a smoke test of the protocol, not a result** "
                  f"({len(units)} units, {mode['seeds']} seed, budget {mode['budget']}).", ""]
    lines += [
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {platform.node() or 'unknown'}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}",
        f"- command: `{command}`",
        f"- target: {args.model_label}; decoder: {args.decoder_label} (latent dim {problem.decoder.latent_dim})",
        f"- units ({len(units)}): " + ", ".join(u.name for u in units),
        f"- budget {mode['budget']} presentations per run, seeds {mode['seeds']}, noise: {', '.join(noises)}; "
        "population: each method's own default ("
        + ", ".join(f"{m} {p}" for m, p in dict((r['method'], r['population']) for r in results).items()) + ")",
        f"- wall time {seconds / 60:.1f} min; windowed scoring max |diff| vs full model: {window_err:.2g}",
    ] + ([f"- {reuse_note}"] if reuse_note else []) + [
        "",
        "Score = clean activation of the series a run reports as its best (under noise the optimizer's own pick "
        "when it keeps one: the default's incumbent by mean response, cmaes's last mean shown, the GA's conserved "
        "code; else the best observed response), divided by the best activation any method reached "
        "on that unit in this stimulus space (all runs here + gradient ascent on the latent code). "
        "`unconstrained` divides by gradient ascent on the raw z-normalised series instead. "
        "Mean over units and seeds; +- is the standard error over units x seeds.",
        "",
    ]
    for noise in noises:
        lines += [f"## noise: {noise}", "", "| method | score | +- | unconstrained | " + " | ".join(depths) + " |",
                  "|---|---|---|---|" + "---|" * len(depths)]
        for m in methods:
            d = table.get((noise, m))
            if not d:
                continue
            v = np.array(d["norm"], float)
            se = np.nanstd(v) / np.sqrt(max(1, np.isfinite(v).sum()))
            per_depth = [_fmt(np.nanmean(d["depth"].get(t, [np.nan]))) for t in depths]
            lines.append(f"| {m} | {_fmt(np.nanmean(v))} | {_fmt(se)} | {_fmt(np.nanmean(d['unc']))} | "
                         + " | ".join(per_depth) + " |")
        lines.append("")
        ratios = []
        for other in ("cmaes", "genetic"):
            a, b = table.get((noise, "default")), table.get((noise, other))
            if a and b:
                ratios.append(f"default/{other} = {np.nanmean(a['norm']) / np.nanmean(b['norm']):.2f}")
        if ratios:
            lines += ["Ratios (of mean scores): " + ", ".join(ratios), ""]
    lines += ["## per unit", "", "| unit | dataset max | best ever | gradient (latent) | unconstrained |",
              "|---|---|---|---|---|"]
    for i, u in enumerate(units):
        lines.append(f"| {u.name} | {_fmt(u.reference_max, 3)} | {_fmt(best_ever[i], 3)} | "
                     f"{_fmt(grad_latent.get(i), 3)} | {_fmt(unconstrained.get(i), 3)} |")
    opt_s = {}
    for r in results:
        opt_s.setdefault(r["method"], []).append(r["optimizer_seconds"])
    lines += ["", "Optimizer overhead (ask + tell, seconds per run, mean): "
              + ", ".join(f"{m} {np.mean(v):.2f}" for m, v in opt_s.items()), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def plot_curves(path: Path, results, best_ever, noises, methods) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(noises), figsize=(5 * len(noises), 4), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        for m in methods:
            rs = [r for r in results if r["noise"] == noise and r["method"] == m]
            if not rs:
                continue
            grid = np.linspace(0, rs[0]["budget"], 60)
            ys = []
            for r in rs:
                c = np.array(r["curve"])
                ys.append(np.interp(grid, c[:, 0], c[:, 1], left=np.nan) / best_ever[r["unit"]])
            ax.plot(grid, np.nanmean(ys, axis=0), label=m, lw=2.5 if m == "default" else 1.2)
        ax.set_title(f"noise: {noise} (max clean shown so far)")
        ax.set_xlabel("presentations")
        ax.set_ylabel("fraction of best ever")
        ax.set_ylim(0, 1.05)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------
def build_problem(args, mode):
    from xdream_ts.decoders import make_decoder
    if args.simulated:
        decoder = make_decoder(args.decoder or "basis", length=500)
        args.model_label, args.decoder_label = "simulated neurons (seeds 0..)", args.decoder or "basis"
        return SimulatedProblem(args.simulated, decoder)
    from xdream_ts import reference as ref
    model_path = Path(args.model) if args.model else ref.reference_model_path()
    if args.units:
        units = []
        for text in args.units.split(","):
            tensor, _, ch = text.rpartition(":")
            units.append(Unit(tensor, int(ch), "none" if tensor in ("gap", "logits") else "center"))
    else:
        units = []
        for depth in mode["depths"]:
            chosen = [u for u in ref.reference_units() if u.tensor == depth][: mode["per_depth"]]
            units += [Unit(u.tensor, u.channel, u.position) for u in chosen]
    for u in units:
        try:
            u.reference_max = float(ref.reference_max((u.tensor, u.channel, u.position)))
        except Exception:  # a model other than the shipped one has no shipped reference maxima
            u.reference_max = None
    spec = args.decoder
    if spec is None:  # the shipped VAE when installed (as the CLI decides), else the DCT basis
        from importlib import resources
        shipped = resources.files("xdream_ts.assets").joinpath("default_decoder", "decoder.onnx")
        spec = "default" if shipped.is_file() else "basis"
    decoder = make_decoder(spec, length=ref.SERIES_LENGTH)
    torch_model = torch_decoder = None
    if not args.no_gradient:
        try:
            torch_model = ref.load_reference_torch() if not args.model else None
            for p in torch_model.parameters():
                p.requires_grad_(False)
            torch_decoder = _torch_decoder(decoder)
        except Exception as exc:  # no torch twin: best-ever is the max over runs only
            print(f"gradient references unavailable: {exc}")
    args.model_label = str(model_path.name if not args.model else model_path)
    args.decoder_label = spec
    problem = ModelProblem(model_path, units, decoder, length=ref.SERIES_LENGTH, torch_model=torch_model,
                           torch_modules=ref.TORCH_MODULE_OF_TENSOR, torch_decoder=torch_decoder)
    if not args.model:
        problem.real = ref.sample_series()[0]
    return problem


def _torch_decoder(decoder):
    """A differentiable twin of the decoder (codes -> z-normalised series), or None."""
    import torch
    if hasattr(decoder, "torch_module"):
        return decoder.torch_module()
    if getattr(decoder, "name", "") == "basis":
        basis = torch.tensor(decoder._basis, dtype=torch.float32)

        def f(z):
            x = z @ basis
            x = x - x.mean(dim=1, keepdim=True)
            return x / x.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-8)
        return f
    if getattr(decoder, "name", "") == "identity":
        def g(z):
            x = z - z.mean(dim=1, keepdim=True)
            return x / x.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-8)
        return g
    return None


def load_reuse(path: Path, problem, mode: dict, noises: list, methods: list):
    """Runs of other methods and the gradient references from an earlier JSON of the same protocol."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--reuse {path}: cannot read it ({exc}); give a file written by --json") from None
    names = [u.name for u in problem.units]
    # JSONs written before the unit names were stored hold the same protocol's runs by unit index only
    if old.get("units", names) != names:
        raise SystemExit(f"--reuse {path}: its units {old['units']} differ from this run's {names}")
    runs = [r for r in old["results"] if r["method"] not in methods]
    if not runs:
        raise SystemExit(f"--reuse {path}: it holds no runs of methods other than {methods}")
    for r in runs:
        if (r["noise"] not in noises or r["unit"] >= len(names)
                or (r["seed"] < 100 and (r["budget"] != mode["budget"] or r["seed"] >= mode["seeds"]))):
            raise SystemExit(f"--reuse {path}: its run {r['method']} unit {r['unit']} seed {r['seed']} noise "
                             f"{r['noise']} budget {r['budget']} is not of this protocol")
    for m in {r["method"] for r in runs}:  # a method with runs missing would skew its means
        have = {(r["noise"], r["unit"], r["seed"]) for r in runs if r["method"] == m and r["seed"] < 100}
        if len(have) != len(noises) * len(names) * mode["seeds"]:
            raise SystemExit(f"--reuse {path}: it holds {len(have)} of the {len(noises) * len(names) * mode['seeds']} "
                             f"runs of {m} this protocol needs; re-run {m} too (add it to --methods)")
    grad = {int(k): v for k, v in old.get("gradient_latent", {}).items()}
    unc = {int(k): v for k, v in old.get("unconstrained", {}).items()}
    reused = sorted({r["method"] for r in runs})
    note = (f"reused from `{path.name}` ({old.get('date', 'an earlier run')}): the runs of "
            f"{', '.join(reused)}" + (" and the gradient references" if grad else ""))
    return runs, grad, unc, note


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=list(MODES), default="quick")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated optimizer names")
    p.add_argument("--noises", help="comma-separated noise specs (default: the mode's)")
    p.add_argument("--budget", type=int, help="override the mode's budget")
    p.add_argument("--seeds", type=int, help="override the mode's number of seeds")
    p.add_argument("--model", help="ONNX model (default: the shipped reference model)")
    p.add_argument("--units", help="TENSOR:CHANNEL,... instead of the reference selection")
    p.add_argument("--decoder", help="decoder spec (default: 'default' when shipped, else basis)")
    p.add_argument("--simulated", type=int, default=0, help="N simulated neurons instead of a model (sanity check)")
    p.add_argument("--no-gradient", action="store_true", help="skip the gradient-ascent references")
    p.add_argument("--out", help="report path (default experiments/results/optimizers[_MODE].md)")
    p.add_argument("--json", help="also write every run's result here")
    p.add_argument("--reuse", help="an earlier --json of the same protocol: take the runs of methods not in "
                                   "--methods, and the gradient references, from it")
    args = p.parse_args(argv)
    mode = dict(MODES[args.mode])
    if args.budget:
        mode["budget"] = args.budget
    if args.seeds:
        mode["seeds"] = args.seeds
    noises = args.noises.split(",") if args.noises else list(mode["noises"])
    methods = args.methods.split(",")
    command = "python experiments/bench_optimizers.py " + " ".join(argv if argv is not None else sys.argv[1:])

    t0 = time.perf_counter()
    problem = build_problem(args, mode)
    window_err = problem.check_window() if getattr(problem, "windowed", False) else 0.0
    print(f"{len(problem.units)} units, decoder {args.decoder_label} (dim {problem.decoder.latent_dim}); "
          f"windowed scoring max |diff| = {window_err:.3g}")
    specs = [RunSpec(m, u, s, nz, mode["budget"]) for nz in noises for m in methods
             for u in range(len(problem.units)) for s in range(mode["seeds"])]
    if mode["long_factor"]:
        specs += [RunSpec(m, u, 100 + s, "none", mode["budget"] * mode["long_factor"]) for m in ("cmaes", "default")
                  for u in range(len(problem.units)) for s in range(1)]
    print(f"{len(specs)} runs, {sum(s.budget for s in specs)} presentations")
    reused, reuse_note = [], None
    grad_latent, unconstrained = {}, {}
    if args.reuse:
        reused, grad_latent, unconstrained, reuse_note = load_reuse(Path(args.reuse), problem, mode, noises, methods)
    results = run_lockstep(problem, specs)
    results += reused
    # the report lists methods in the order runs appear: keep METHODS' order whatever was reused
    results.sort(key=lambda r: METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS))
    long_runs = [r for r in results if r["seed"] >= 100]
    results = [r for r in results if r["seed"] < 100]

    if not args.no_gradient and not grad_latent:
        for i in range(len(problem.units)):
            grad_latent[i] = problem.gradient_ascent(i, "latent", mode["grad_steps"], mode["grad_restarts"])
            unconstrained[i] = problem.gradient_ascent(i, "raw", mode["grad_steps"], mode["grad_restarts"])
    best_ever = {}
    for i in range(len(problem.units)):
        cands = [r["max_clean"] for r in results + long_runs if r["unit"] == i]
        if np.isfinite(grad_latent.get(i, np.nan)):
            cands.append(grad_latent[i])
        best_ever[i] = max(cands)
    seconds = time.perf_counter() - t0

    out = Path(args.out) if args.out else REPO / "experiments" / "results" / (
        "optimizers.md" if args.mode == "medium" else f"optimizers_{args.mode}.md")
    write_report(out, args, mode, problem, results, best_ever, unconstrained, grad_latent, seconds, window_err, command,
                 reuse_note)
    try:
        plot_curves(out.with_suffix(".png"), results, best_ever, noises, methods)
    except Exception as exc:
        print(f"no plot: {exc}")
    if args.json:
        Path(args.json).write_text(json.dumps({"units": [u.name for u in problem.units], "mode": mode,
                                               "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                                               "results": results + long_runs, "best_ever": best_ever,
                                               "unconstrained": unconstrained, "gradient_latent": grad_latent}))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
