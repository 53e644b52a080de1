"""`xdream-ts compare`: gradient-free optimizers and Sequence Dreaming on one target, at matched cost.

The unit of cost is a MODEL EVALUATION: one forward pass of one series. A gradient-free optimizer
spends one per presentation. Sequence Dreaming spends, per code and step, one forward pass (shared by
the loop's recording of that code, which scores the same series) and one backward pass, counted at
its measured cost relative to a forward pass (``measure_backward_cost``: forward+backward time over
forward time, minus one, on this machine, for this target; the ONNX and torch scorers both stop at the
target's layer, so they count the same network). Every method gets the same number of evaluations.

Per method and seed it records the best activation, the relative activation (best / maximum over the
reference data, for the shipped model's units), and the Mahalanobis distance of the best series in the
model's penultimate layer (``xdream_ts.analysis``). Under ``--out``: ``results.json``, ``table.md``,
``curves.png`` (best activation against model evaluations), ``best_series.png``, and every run store
in ``runs/``.

Gradient-free methods probe the ONNX model through onnxruntime; dream probes the same weights in torch
(the shipped model ships both; for your own ONNX model it needs onnx2torch, optional).
"""
from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import UserError

DEFAULT_OPTIMIZERS = ("default", "cmaes", "genetic", "random", "dream")
DREAM_DEFAULTS = {"population_size": 4, "learning_rate": 0.05, "l2": 0.0, "tv": 0.0, "smooth": 0.0, "ema": 0.0}


# --------------------------------------------------------------------------------- the shipped model
class ModelAssets:
    """The shipped reference model's files, or the same files in another ``folder`` (a smoke build of
    experiments/train_reference.py, to develop before the shipped assets exist)."""

    def __init__(self, folder=None):
        from . import reference as ref

        self.ref = ref
        self.folder = None if folder is None else Path(folder)
        if self.folder is not None and not (self.folder / ref.ONNX_FILE).is_file():
            raise UserError(f"{folder} has no {ref.ONNX_FILE}; pass a folder written by experiments/train_reference.py")

    def _file(self, name: str) -> Path:
        if self.folder is None:
            return self.ref._asset(name)
        p = self.folder / name
        if not p.is_file():
            raise UserError(f"{self.folder} has no {name}; rebuild it with experiments/train_reference.py")
        return p

    @property
    def onnx_path(self) -> Path:
        return self._file(self.ref.ONNX_FILE)

    def torch_scorer(self, targets, objective="sum", threads=None):
        from .adapters.torch import TorchScorer

        if self.folder is None:
            return TorchScorer.from_reference(targets, objective=objective, threads=threads)
        import torch

        model = self.ref.build_resnet()
        model.load_state_dict(torch.load(self._file(self.ref.STATE_DICT_FILE), map_location="cpu", weights_only=True))
        from .targets import Target, as_targets as _as_targets
        targets = [Target("logits", t.unit, t.position) if t.layer is None else t for t in _as_targets(targets)]
        return TorchScorer(model.eval(), targets, objective=objective, length=self.ref.SERIES_LENGTH, channels=1,
                           layer_names=dict(self.ref.TORCH_MODULE_OF_TENSOR), name="reference", threads=threads,
                           _describe_extra={"model_path": str(self.onnx_path), "reference": True})

    def sample_series(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self._file(self.ref.SAMPLE_FILE), allow_pickle=False) as z:
            return z["X"].astype(np.float32), z["y"].astype(np.int64)

    def activations(self) -> dict:
        with np.load(self._file(self.ref.ACTIVATIONS_FILE), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def reference_max(self, target) -> float | None:
        """Maximum of the unit over the reference data (FordA train + test), or None when not stored
        (a position other than center/mean)."""
        return self.ref.lookup_reference_max(target.layer, target.unit, target.position, self.activations())

    def reference_units(self) -> list:
        """The benchmark units stored with these assets (``xdream_ts.reference.reference_units``)."""
        acts = self.activations()
        if "reference_units" not in acts:
            return list(self.ref.select_reference_units(acts))
        out = []
        for s in acts["reference_units"]:
            tensor, channel, position = str(s).split("|")
            out.append(self.ref.ReferenceUnit(tensor, int(channel), position))
        return out

    def default_target(self):
        from .targets import Target
        units = self.reference_units()
        block2 = [u for u in units if u.tensor == "block2/out"]
        u = block2[0] if block2 else units[0]
        return Target(u.tensor, u.channel, "center" if u.position == "none" else u.position)


# ------------------------------------------------------------------------------ backward cost
def measure_backward_cost(scorer, batch: int = 4, reps: int = 7, length: int | None = None, seed: int = 0) -> dict:
    """Cost of one backward pass in forward passes, for ``scorer`` (a TorchScorer) on this machine.

    Times ``reps`` forward passes without gradients and ``reps`` forward+backward passes (gradient with
    respect to the input, as Sequence Dreaming takes it) on ``batch`` random series; the medians give
    ratio = t(forward + backward) / t(forward) - 1.
    """
    import torch

    L = length or scorer.length
    if not L:
        raise UserError("measure_backward_cost needs the series length: give length=")
    shape = (batch, L) if not scorer.channels or scorer.channels == 1 else (batch, scorer.channels, L)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen)
    tf, tfb = [], []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            scorer.torch_objective(scorer.torch_forward(x))
        t1 = time.perf_counter()
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(scorer.torch_objective(scorer.torch_forward(xg)).sum(), xg)
        t2 = time.perf_counter()
        if i:  # the first round warms caches and allocators up
            tf.append(t1 - t0)
            tfb.append(t2 - t1)
    f, fb = statistics.median(tf), statistics.median(tfb)
    return {"backward_cost": max(0.0, fb / f - 1.0), "forward_s": f, "forward_backward_s": fb, "batch": batch,
            "reps": reps}


# ------------------------------------------------------------------------------------ compare
def _curve(run, cost_per_presentation: float) -> tuple[list, list]:
    evals = np.cumsum(run.n_evaluated) * cost_per_presentation
    return [float(e) for e in evals], [float(b) for b in run.best_per_generation]


def _available(name: str) -> bool:
    from .optimizers import optimizer_class
    try:
        optimizer_class(name)
        return True
    except UserError:
        return False


def compare(model=None, target=None, optimizers=None, evaluations: int = 2000, seeds=(0, 1, 2),
            out="compare", decoder: str | None = None, dream_decoder: str = "identity", dream: dict | None = None,
            backward_cost: float | None = None, reference_data=None, layer: str | None = None, threads: int = 1,
            assets=None, torch_module=None, space=None, log=print, plausible: float | None = None,
            plausibility_method: str = "penalty") -> dict:
    """Run every optimizer with every seed at ``evaluations`` model evaluations; write results to ``out``.

    model: an ONNX file (None: the shipped reference model, or the same files in ``assets``);
    target: 'TENSOR:UNIT@POSITION' (None: a block2/out unit of the shipped model);
    optimizers: names (None: DEFAULT_OPTIMIZERS that this installation has);
    decoder: the gradient-free methods' decoder spec (None: the shipped default decoder when present,
    else basis); dream_decoder: Sequence Dreaming's (identity: raw series, as the paper);
    dream: Dream parameters (population_size, learning_rate, l2, tv, smooth, ema, lowpass, ...);
    backward_cost: a backward pass in forward passes (None: measured here);
    reference_data: real series (array, or a UCR folder/file) for Mahalanobis distances (None: the
    shipped FordA sample for the shipped model, none otherwise); layer: where to measure them (None:
    the penultimate layer); torch_module: with ``model``, the same network as a torch module, for dream
    (targets keep their ONNX tensor names when it was exported with torch.onnx.export; see
    ``xdream_ts.adapters.torch.layer_names_from_onnx``); without it dream converts with onnx2torch;
    space: an ``ActivationSpace`` already fitted for this model (instead of reference_data and layer).
    plausible: a quantile (e.g. 0.99): every method searches under the plausibility constraint of
    ``xdream-ts run --plausible`` (``xdream_ts.plausible``) in ``layer``, against ``reference_data`` (a
    file) or the shipped sample; dream through the model's torch twin; each row is the run's reported
    (best feasible) series.
    """
    from .targets import TargetSpec, build, parse_target
    from .analysis import ActivationSpace, default_layer, load_reference_data
    from .decoders import make_decoder
    from .loop import run as run_loop
    from .optimizers import make_optimizer
    from .optimizers.dream import Dream, matched_presentations

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty: choose another --out")
    if int(evaluations) < 1 or not seeds:
        raise UserError("--evaluations must be >= 1 and at least one seed is needed")
    from .optimizers import optimizer_class
    if optimizers is None:  # the default set, less those this installation lacks
        optimizers = [o for o in DEFAULT_OPTIMIZERS if _available(o)]
    optimizers = [o.strip() for o in optimizers if o.strip()]
    if not optimizers:
        raise UserError("no optimizer given: e.g. --optimizers default,genetic,dream")
    for name in optimizers:
        optimizer_class(name)  # unknown names fail now, before any run
    dream_params = {**DREAM_DEFAULTS, **(dream or {})}

    shipped = model is None
    ma = ModelAssets(assets) if shipped else None
    model_path = Path(ma.onnx_path if shipped else model)
    tgt = (ma.default_target() if target is None else parse_target(target)) if shipped else None
    if not shipped:
        if target is None:
            raise UserError("--target TENSOR:UNIT[@POSITION] is needed with --model (`xdream-ts inspect MODEL` lists tensors)")
        tgt = parse_target(target)
    built = build(TargetSpec(kind="onnx", model=str(model_path), units=[tgt], threads=threads))
    onnx_scorer = built.clean
    length, channels = onnx_scorer.length, onnx_scorer.channels
    ref_max = ma.reference_max(tgt) if shipped else None

    plausible_spec = None
    if plausible is not None:  # every refusal now, before any folder is written
        from .plausible import check_request, plausible_scorer
        if reference_data is not None and not isinstance(reference_data, (str, Path)):
            raise UserError("compare --plausible reads the real series from a file: pass --data PATH")
        if torch_module is not None and "dream" in optimizers:
            raise UserError("compare --plausible runs dream through the model's own torch twin: drop torch_module "
                            "(the shipped model, or onnx2torch installed)")
        plausible_spec = TargetSpec(kind="onnx", model=str(model_path), units=[tgt], threads=threads,
                                    data=str(reference_data) if reference_data is not None else None)
        check_request(plausible_spec, plausible)
        plausible_scorer(build(plausible_spec), plausible, layer, plausibility_method)  # the layer, the data's shape
        constrained = {"plausible": plausible, "plausibility_layer": layer, "plausibility_method": plausibility_method}
    torch_scorer = None
    if "dream" in optimizers:
        if shipped and ma.folder is not None:  # a smoke build's weights, not the shipped ones
            torch_scorer = ma.torch_scorer(tgt, threads=threads)
        elif torch_module is not None:
            from .adapters.torch import TorchScorer, layer_names_from_onnx
            torch_scorer = TorchScorer(torch_module, tgt, length=length, channels=channels, threads=threads,
                                       layer_names=layer_names_from_onnx(model_path),
                                       _describe_extra={"model_path": str(model_path)})
        else:
            try:
                torch_scorer = built.twin()
            except UserError as exc:
                raise UserError(f"dream needs a torch version of {model_path.name}: {exc}") from None
    cost_info = None
    if torch_scorer is not None and backward_cost is None:
        cost_info = measure_backward_cost(torch_scorer, batch=int(dream_params["population_size"]))
        backward_cost = cost_info["backward_cost"]
        log(f"backward pass = {backward_cost:.2f} forward passes (measured: forward {1e3 * cost_info['forward_s']:.1f} ms, "
            f"forward+backward {1e3 * cost_info['forward_backward_s']:.1f} ms for {cost_info['batch']} series)")

    if space is not None:
        ref_series = None
    elif reference_data is None and shipped:
        ref_series = ma.sample_series()[0]
    elif isinstance(reference_data, (str, Path)):
        ref_series = load_reference_data(reference_data)
    else:
        ref_series = reference_data
    user_data = reference_data is not None and space is None and ref_series is not None
    if space is not None:
        layer = space.layer
    elif ref_series is not None:
        layer = layer or ("gap" if shipped else default_layer(model_path))
        space = ActivationSpace(model_path, layer, ref_series, threads=threads)
        log(f"plausibility in {layer}: {space.fit.method} fit on {space.fit.n_samples} real series ({space.fit.reason})")

    if user_data and ref_max is None:
        # the model's own data: the best real response is the reference maximum, as in `run --data`
        # (a ratio needs a positive maximum: a logit below zero on every real series has none)
        best_real = float(np.nanmax(onnx_scorer(ref_series)))
        ref_max = best_real if best_real > 0 else None
    if decoder is None:
        decoder = "auto"  # fitted on the user's data when given, else the shipped prior
    gf_decoder = make_decoder(decoder, length=length, channels=channels, data=ref_series if user_data else None,
                              cache_dir=out)

    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    rows, curves = [], {}
    for name in optimizers:
        for seed in seeds:
            t0 = time.perf_counter()
            store = out / "runs" / f"{name.replace(':', '_')}-seed{seed}.zarr"
            if name == "dream":
                dec = make_decoder(dream_decoder, length=length, channels=channels)
                opt = Dream(dec.latent_dim, seed=seed, **dream_params)
                budget = matched_presentations(int(evaluations), backward_cost)
                r = run_loop(dec, plausible_spec or torch_scorer, opt, budget=budget, seed=seed, store=store,
                             progress=False, reference_max=ref_max, config={"compare": {"backward_cost": backward_cost}},
                             **(constrained if plausible_spec else {}))
                cost = 1.0 + backward_cost
                used = opt.n_forward + backward_cost * opt.n_backward
                extra = {"n_forward": int(opt.n_forward), "n_backward": int(opt.n_backward)}
            else:
                # under plausibility by name: the loop then starts it from the most activating feasible real
                # series, as `run --plausible` does (an optimizer object cannot take start codes)
                opt = name if plausible_spec else make_optimizer(name, gf_decoder.latent_dim, seed=seed,
                                                                 evaluations=int(evaluations))
                r = run_loop(gf_decoder, plausible_spec or onnx_scorer, opt, budget=int(evaluations), seed=seed,
                             store=store, progress=False, reference_max=ref_max,
                             **(constrained if plausible_spec else {}))
                cost, used, extra = 1.0, float(r.presentations), {}
            wall = time.perf_counter() - t0
            reported = r.series[r.reported_index]  # a plausible run's best feasible, else its best
            p = r.summary()["plausibility"] if plausible_spec else None
            best = p["reported"]["activation"] if p else r.best_score
            row = {"optimizer": name, "seed": seed, "best_activation": best,
                   "relative_activation": r.relative_activation, "evaluations": float(used),
                   "presentations": int(r.presentations), "wall_s": round(wall, 2), **extra}
            if p:
                row["feasible"] = bool(p["feasible"])
            if space is not None:
                d = float(space.distance(reported[None])[0])
                row.update(mahalanobis=d, percentile=float(space.percentile(d)[0]))
            rows.append(row)
            curves.setdefault(name, []).append(_curve(r, cost))
            log(f"{name:10s} seed {seed}: best {best:.4g}"
                + (f"  relative {r.relative_activation:.3f}" if r.relative_activation is not None else "")
                + (f"  Mahalanobis {row['mahalanobis']:.3g}" if "mahalanobis" in row else "") + f"  ({wall:.1f} s)")

    table = summarise(rows)
    result = {"model": str(model_path), "target": str(tgt), "evaluations": int(evaluations), "seeds": list(seeds),
              "decoder": decoder, "dream_decoder": dream_decoder, "dream": dream_params,
              "backward_cost": backward_cost, "backward_cost_measurement": cost_info, "reference_max": ref_max,
              "plausible": plausible, "plausibility_method": plausibility_method if plausible is not None else None,
              "plausibility": space.fit.summary() | {"layer": layer} if space is not None else None,
              "rows": rows, "table": table, "curves": curves}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "table.md").write_text(format_table(result))
    plot_curves(result, out / "curves.png")
    plot_best_series(out, rows, out / "best_series.png")
    log(f"results in {out}/ (table.md, curves.png, results.json)")
    return result


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds, per optimizer, in the order first seen."""
    out = []
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        rs = [r for r in rows if r["optimizer"] == name]
        entry = {"optimizer": name, "seeds": len(rs)}
        for key in ("best_activation", "relative_activation", "mahalanobis", "percentile", "evaluations", "wall_s"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                entry[key] = float(np.mean(vals))
                entry[key + "_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out.append(entry)
    return out


def format_table(result: dict) -> str:
    def f(e, key, fmt="{:.3g}"):
        if key not in e:
            return "n/a"
        return fmt.format(e[key]) + (" ± " + fmt.format(e[key + "_sd"]) if e.get(key + "_sd") else "")
    lines = [f"target `{result['target']}` of `{Path(result['model']).name}`, {result['evaluations']} model evaluations, "
             f"seeds {result['seeds']}; a backward pass counted as {result['backward_cost']:.2f} forward passes"
             if result.get("backward_cost") is not None else
             f"target `{result['target']}` of `{Path(result['model']).name}`, {result['evaluations']} model evaluations, "
             f"seeds {result['seeds']}", "",
             "| optimizer | best activation | relative activation | Mahalanobis (percentile of real) | evaluations | wall s |",
             "|---|---|---|---|---|---|"]
    for e in result["table"]:
        lines.append(f"| {e['optimizer']} | {f(e, 'best_activation')} | {f(e, 'relative_activation')} | "
                     f"{f(e, 'mahalanobis')} ({f(e, 'percentile', '{:.0f}')}) | {e.get('evaluations', 0):.0f} | "
                     f"{e.get('wall_s', 0):.1f} |")
    if result.get("plausible") is not None:
        lines += ["", f"Searched under plausibility (`--plausible {result['plausible']}`, "
                      f"{result['plausibility_method']}): "
                      "each row is the run's best feasible series, its Mahalanobis distance within that quantile of "
                      "the real series' own."]
    p = result.get("plausibility")
    if p:
        lines += ["", f"Mahalanobis distance in `{p['layer']}` ({p['method']}: {p['reason']}); real series: median "
                      f"{p['reference_median']:.3g}, 95th percentile {p['reference_p95']:.3g}, max {p['reference_max']:.3g}."]
    return "\n".join(lines) + "\n"


def plot_curves(result: dict, path) -> Path:
    """Best activation so far against model evaluations: mean over seeds (line) and range (band)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    E = result["evaluations"]
    grid = np.linspace(0, E, 200)
    for i, (name, runs) in enumerate(result["curves"].items()):
        ys = []
        for ev, best in runs:
            ev, best = np.asarray(ev), np.asarray(best)
            # a step function: the best found so far at each evaluation count (NaN before the first)
            idx = np.searchsorted(ev, grid, side="right") - 1
            ys.append(np.where(idx >= 0, best[np.clip(idx, 0, len(best) - 1)], np.nan))
        Y = np.asarray(ys)
        with warnings.catch_warnings():  # before a method's first generation every seed is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(Y, axis=0)
            lo, hi = np.nanmin(Y, axis=0), np.nanmax(Y, axis=0)
        ax.plot(grid, m, color=f"C{i}", label=name)
        if len(Y) > 1:
            ax.fill_between(grid, lo, hi, color=f"C{i}", alpha=0.15)
    if result.get("reference_max"):
        ax.axhline(result["reference_max"], color="k", ls="--", lw=0.8, label="max over real data")
    ax.set_xlabel("model evaluations (a backward pass counted at its measured cost)")
    ax.set_ylabel("best activation")
    ax.set_title(f"{result['target']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_best_series(out: Path, rows: list[dict], path) -> Path:
    """The best series of each optimizer's first seed (one panel each)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .loop import load_run

    first = {}
    for r in rows:
        first.setdefault(r["optimizer"], r["seed"])
    fig = Figure(figsize=(7.0, 1.5 * len(first) + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    for i, (name, seed) in enumerate(first.items()):
        run = load_run(out / "runs" / f"{name.replace(':', '_')}-seed{seed}.zarr")
        ax = fig.add_subplot(len(first), 1, i + 1)
        s = np.asarray(run.best_series)
        ax.plot(s.reshape(-1, s.shape[-1]).T, lw=0.8, color=f"C{i}")
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


# ---------------------------------------------------------------------------------------- CLI
def parse_dream(text: str | None) -> dict:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"--dream: {item!r} is not KEY=VALUE; e.g. --dream l2=0.01,tv=0.1,learning_rate=0.05")
        key = key.strip()
        if key not in ("population_size", "steps_per_generation"):
            try:
                out[key] = float(value)
            except ValueError:
                raise UserError(f"--dream: {key}={value!r} is not a number") from None
        else:
            out[key] = int(value)
    import inspect

    from .optimizers.dream import Dream
    allowed = set(inspect.signature(Dream.__init__).parameters) - {"self", "dim", "seed", "init", "noisy", "value_range"}
    bad = sorted(set(out) - allowed)
    if bad:
        raise UserError(f"--dream: unknown parameter(s) {', '.join(bad)}; use {', '.join(sorted(allowed))}")
    return out


def cmd_compare(args) -> int:
    seeds = list(range(args.seeds)) if args.seeds > 0 else []
    compare(model=args.model, target=args.target, optimizers=args.optimizers.split(",") if args.optimizers else None, evaluations=args.evaluations,
            seeds=seeds, out=args.out, decoder=args.decoder, dream_decoder=args.dream_decoder,
            dream=parse_dream(args.dream), backward_cost=args.backward_cost, reference_data=args.reference_data,
            layer=args.layer, threads=args.threads, assets=args.assets, plausible=args.plausible,
            plausibility_method=args.plausibility_method or "penalty")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("compare", help="gradient-free optimizers vs Sequence Dreaming at matched model evaluations",
                       description="Run several optimizers and Sequence Dreaming (dream) on one target with several "
                                   "seeds at the same number of model evaluations (a backward pass counted at its "
                                   "measured cost in forward passes). Writes table.md, curves.png, results.json and the "
                                   "run stores under --out. Default target: a block2/out unit of the shipped model.")
    p.add_argument("--model", help="ONNX model (default: the shipped reference model); dream then needs onnx2torch")
    p.add_argument("--target", help="TENSOR:UNIT[@POSITION], e.g. block2/out:17@center")
    p.add_argument("--optimizers", help=f"comma-separated, default {','.join(DEFAULT_OPTIMIZERS)} (those installed)")
    p.add_argument("--evaluations", type=int, default=2000, help="model evaluations per run, default %(default)s")
    p.add_argument("--seeds", type=int, default=3, help="seeds per optimizer (0..N-1), default %(default)s")
    p.add_argument("--out", default="compare", help="output folder (must not exist or be empty), default %(default)s")
    p.add_argument("--decoder", help="decoder of the gradient-free methods (default: auto, fitted on --data, else "
                                     "the shipped prior)")
    p.add_argument("--dream-decoder", default="identity",
                   help="decoder of dream: identity (raw series, as the paper; default), default, basis[:N]")
    p.add_argument("--dream", help="dream parameters KEY=VALUE,..., e.g. l2=0.01,tv=0.1,learning_rate=0.05")
    p.add_argument("--backward-cost", type=float, help="a backward pass in forward passes (default: measured)")
    p.add_argument("--data", "--reference-data", dest="reference_data",
                   help="the model's real series (what `run --data` reads): they fit the auto decoder, give the "
                        "reference maximum and the plausibility reference (default: the shipped FordA sample for "
                        "the shipped model); --reference-data is the older name")
    p.add_argument("--layer", help="layer for Mahalanobis distances and --plausible (default: the penultimate, gap)")
    p.add_argument("--plausible", nargs="?", const=0.99, type=float, metavar="QUANTILE",
                   help="every method maximises the target subject to the distance in --layer lying within this "
                        "quantile (default 0.99) of the real series' own (as `run --plausible`)")
    p.add_argument("--plausibility-method", choices=("penalty", "feasibility-first"),
                   help="how --plausible ranks stimuli (default: penalty)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime / torch threads, default %(default)s")
    p.add_argument("--assets", help=argparse_suppress())
    p.set_defaults(func=cmd_compare)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS  # --assets: a folder with a rebuilt reference model (development only)
