"""`xdream-ts inverse-set`: the inverse set of a unit of a model (or of the built-in default target),
its target made by :mod:`xdream_ts.targets`, written to a zarr folder with a gallery."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from ..errors import UserError
from .sample import inverse_set
from .store import jsonable


def add_cli(sub) -> None:
    p = sub.add_parser(
        "inverse-set", help="sample many diverse series whose activation lies in a range",
        description="Sample the inverse set of a unit (Hada & Carreira-Perpinan 2020): --n diverse series whose "
                    "activation lies in [Z1, Z2], written to a zarr folder with a gallery.png inside. Without "
                    "--model the target is the built-in default (the shipped reference model when installed, "
                    "else a simulated neuron).")
    p.add_argument("--model", help="ONNX model to probe")
    p.add_argument("--layer", help="tensor name in the model (`xdream-ts inspect MODEL`); default: first output")
    p.add_argument("--unit", type=int, default=0, help="channel (or feature) of the tensor, default 0")
    p.add_argument("--position", default="center", help="center (default), mean, max, or a time step")
    p.add_argument("--range", nargs=2, type=float, required=True, metavar=("Z1", "Z2"),
                   help="activation range (absolute; with --relative, fractions of the unit's reference maximum)")
    p.add_argument("--relative", action="store_true", help="Z1 Z2 are fractions of the unit's reference maximum")
    p.add_argument("--also", nargs=3, action="append", default=[], metavar=("TARGET", "Z1", "Z2"),
                   help="another unit of the same model and its range, TENSOR:UNIT[@POSITION] (repeatable): "
                        "samples the intersection of the inverse sets")
    p.add_argument("--n", type=int, default=500, help="samples wanted, default 500")
    p.add_argument("--out", required=True, help="zarr folder to write (must not exist)")
    p.add_argument("--data", help="the model's real series (as `run --data`): their units, the auto decoder and, "
                                  "for one unit, the reference maximum of --relative")
    p.add_argument("--plausible", nargs="?", const=0.99, type=float, metavar="QUANTILE",
                   help="every sample also lies within this quantile (default 0.99) of the real series' own "
                        "Mahalanobis distances in --plausibility-layer (as `run --plausible`; gradient-free)")
    p.add_argument("--plausibility-layer", help="tensor the --plausible distance is measured in (default: the "
                                                "penultimate layer)")
    p.add_argument("--decoder", help="auto (default: fitted on --data, else the shipped prior), identity, basis[:N], "
                                     "pca:FILE.npz, default, or a trained decoder folder")
    p.add_argument("--method", choices=("auto", "gradient", "free"), default="auto",
                   help="gradient (needs a torch version of the model: the shipped reference model has one), "
                        "free (any target), auto (default)")
    p.add_argument("--features", default="series",
                   help="where diversity is measured: series (default), codes, or a TENSOR of the model (all its "
                        "units; mean over time for (batch, channels, time) tensors)")
    p.add_argument("--budget", type=int, help="most presentations to spend (default 50 n, at least 5000)")
    p.add_argument("--repeats", type=int, default=1, help="presentations of each series (noisy targets), default 1")
    p.add_argument("--noise", default="none", help="none, poisson[:SCALE], gain:SIGMA (simulated noise on the target)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="accept only samples in range with this probability (needs --repeats >= 2)")
    p.add_argument("--seed", type=int, default=0, help="seed, default 0")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads, default 1")
    p.add_argument("--length", type=int, help="series length when neither the model nor the decoder fixes it")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_inverse_set)


def cli_target(args):
    """The target of the command (a :class:`~xdream_ts.targets.BuiltTarget`: noise applied, clean scorer,
    spec) and the reference maximum of each constraint's unit (None where unknown), built as
    `xdream-ts run` builds its target (without --model: the shipped reference model when installed)."""
    from ..targets import TargetSpec, build, reference_maximum
    opts = {"model": args.model, "layer": args.layer, "unit": args.unit, "position": args.position,
            "threads": args.threads, "length": args.length, "noise": args.noise, "seed": args.seed,
            "data": args.data}
    if args.also:
        opts["target"] = [f"{args.layer or ''}:{args.unit}@{args.position}"] + [t for t, _, _ in args.also]
    spec = TargetSpec.from_options(opts)
    if args.also and spec.kind != "onnx":
        raise UserError("--also needs a model target (--model, or the shipped reference model)")
    built = build(spec)
    if spec.kind == "onnx":
        refs = [reference_maximum(spec.with_(units=[u])) for u in spec.units]
    else:
        refs = [built.reference_max]
    if built.data is not None and spec.single:
        refs = [built.reference_max]  # with the model's data: the best real response of the unit
    return built, refs


def cmd_inverse_set(args) -> int:
    import json

    from ..decoders import make_decoder

    if args.n < 1 or (args.budget is not None and args.budget < 1) or args.repeats < 1:
        raise UserError("--n, --budget and --repeats must be positive integers")
    if Path(args.out).exists():
        raise UserError(f"{args.out} already exists: choose another --out")
    target, refs = cli_target(args)
    scorer, clean = target.scorer, target.clean
    ranges = [(float(args.range[0]), float(args.range[1]))]
    for _, z1, z2 in args.also:
        try:
            ranges.append((float(z1), float(z2)))
        except ValueError:
            raise UserError(f"--also {z1} {z2}: the range ends must be numbers") from None
    if args.relative:
        if any(r is None or not np.isfinite(r) or r <= 0 for r in refs):
            raise UserError("--relative needs the unit's reference maximum, which is unknown for this target: "
                            "give absolute Z1 Z2")
        ranges = [(z1 * r, z2 * r) for (z1, z2), r in zip(ranges, refs)]
    constraints = [(j, z1, z2) for j, (z1, z2) in enumerate(ranges)]

    torch_scorer = None
    if args.plausible is not None:
        # the distance is one more constrained column of the scorer's output: (targets..., distance) in
        # [0, the quantile of the real series' own distances], from the same forward pass
        if args.method == "gradient":
            raise UserError("inverse-set --plausible samples gradient-free: use --method free (or auto)")
        from ..plausible import plausible_scorer
        scorer = plausible_scorer(target, args.plausible, args.plausibility_layer)
        constraints.append((len(constraints), 0.0, scorer.threshold))
        print(f"xdream-ts: {scorer.space}", file=sys.stderr)
    elif args.method in ("gradient", "auto") and args.noise in (None, "", "none"):
        torch_scorer = torch_twin(target, need=args.method == "gradient")
    length = getattr(scorer, "length", None) or args.length
    decoder = make_decoder(args.decoder or "auto", length=length, channels=getattr(scorer, "channels", None),
                           data=target.data, cache_dir=Path(args.out).parent if target.data is not None else None)
    features = args.features
    if features not in ("series", "codes"):
        features = layer_features(target, features, torch_scorer)
    with warnings.catch_warnings():  # a short set is said in the summary, not by a Python warning
        warnings.simplefilter("ignore", RuntimeWarning)
        inv = inverse_set(decoder, torch_scorer or scorer, constraints, n=args.n, method=args.method,
                          feature_fn=features, budget=args.budget, repeats=args.repeats, seed=args.seed,
                          out=None, progress=args.progress, min_confidence=args.min_confidence)
    if len(inv) == 0:
        raise UserError(f"no series in range found within {inv.presentations} presentations: widen --range "
                        "or raise --budget (nothing was written)")
    inv.config["cli"] = {k: v for k, v in vars(args).items() if k not in ("func", "progress")}
    inv.config["target"] = target.spec.to_dict()  # TargetSpec.from_config(inv.config) rebuilds it
    if args.plausible is not None:
        inv.config["plausible"] = scorer.record()
    if torch_scorer is not None and inv.method == "gradient":
        # sampled through the torch twin: say how many the ONNX model itself puts in range
        a = np.asarray(clean(inv.series), dtype=np.float64).reshape(len(inv), -1)
        lo, hi = np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])
        inv.info["onnx_in_range"] = float(np.mean(np.all((a >= lo) & (a <= hi), axis=1)))
    inv.save(args.out)
    s = inv.summary()
    if "onnx_in_range" in inv.info:
        s["onnx_in_range"] = inv.info["onnx_in_range"]
    if args.json:
        print(json.dumps(jsonable(s)))
    else:
        print(format_summary(s))
    return 0


def torch_twin(target, need: bool):
    """The target's differentiable twin (:func:`xdream_ts.targets.differentiable_twin`): the shipped
    reference model's torch copy; another model through onnx2torch, tried only when ``need``. None
    (or, when ``need``, a one-line refusal) for a target without one."""
    from ..targets import differentiable_twin, is_shipped
    spec = target.spec
    if spec.kind != "onnx":
        if need:
            raise UserError(f"method 'gradient' needs a torch model; the target {type(target.clean).__name__} has "
                            "none: use --method free")
        return None
    if not need and not is_shipped(spec):
        return None
    try:
        # torch's threads are left as they are (--threads is onnxruntime's); the length the ONNX scorer resolved
        return differentiable_twin(spec.with_(threads=0, length=getattr(target.clean, "length", None)))
    except (ImportError, FileNotFoundError, UserError) as exc:
        if need:
            raise UserError(f"method 'gradient' is not possible for this model ({exc}); use --method free") from None
    return None


def layer_features(target, tensor: str, twin):
    """Every unit of a model tensor as the feature vector (mean over time for 3-D tensors); in torch too
    when the target has a torch twin, so that the gradient path spreads the samples in that space."""
    from ..adapters.onnx import inspect_model
    from ..targets import Target, build, differentiable_twin
    spec, clean = target.spec, target.clean
    if spec.kind != "onnx":
        raise UserError(f"--features {tensor!r} needs a model target (--model); use --features series or codes")
    info = inspect_model(clean.model_path, length=clean.length)
    entry = next((t for t in info.get("tensors", []) if t.get("name") == tensor), None)
    if entry is None:
        raise UserError(f"--features {tensor!r}: no such (batch, features) or (batch, channels, time) tensor in the "
                        "model; `xdream-ts inspect MODEL` lists them (or use series, codes)")
    pos = "center" if entry["kind"] == "features" else "mean"
    units = [Target(tensor, u, pos) for u in range(int(entry["units"]))]
    layer = spec.with_(units=units, objective="sum", noise="none", length=clean.length)
    if twin is not None and getattr(twin, "name", None) == "reference":
        features = differentiable_twin(layer.with_(threads=0))
    else:
        features = build(layer).clean
    features.feature_name = f"{tensor} ({len(units)} units{', mean over time' if pos == 'mean' else ''})"
    return features


def format_summary(s: dict) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    cons = ", ".join(f"{c['name']} in [{c['z1']:.4g}, {c['z2']:.4g}]" for c in s["constraints"])
    lines = [f"inverse set    {s['path']}   (gallery.png inside)",
             f"constraints    {cons}",
             f"samples        {s['n']} of {s['n_requested']} by {s['method']} in {s['presentations']} presentations"
             f" (repeats {s['repeats']})" + ("" if s["n"] >= s["n_requested"] else
                                              "; the budget ran out first: raise --budget for more"),
             f"diversity      {f(s['diversity'])}  (mean pairwise distance of {s['features']} features)"]
    if s.get("n"):
        lines.append("activations    " + ", ".join(f"{lo:.4g}..{hi:.4g}" for lo, hi in
                                                   zip(s["activation_min"], s["activation_max"])))
        if "p_in_range_mean" in s:
            lines.append(f"P(in range)    mean {s['p_in_range_mean']:.3f}, min {s['p_in_range_min']:.3f} "
                         f"(t-interval over repeats; fraction of repeats in range {s['in_range_fraction_mean']:.3f})")
        if "onnx_in_range" in s:
            lines.append(f"ONNX check     {s['onnx_in_range']:.3f} of the samples (found with the torch twin) are in "
                         "range for the ONNX model too")
        if "truly_in_range" in s:
            lines.append(f"truly in range {s['truly_in_range']:.3f} (clean activations of the simulated target)")
    return "\n".join(lines)
