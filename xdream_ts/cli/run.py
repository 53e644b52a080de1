"""`xdream-ts run`: flags or a TOML file -> a TargetSpec -> one search (the loop), and its summary."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import UserError
from .show import format_summary


RUN_DEFAULTS = {
    "optimizer": "default", "decoder": None, "budget": 3000, "repeats": 1, "noise": "none", "seed": 0,
    "out": None, "resume": False, "model": None, "layer": None, "unit": 0, "position": "center",
    "layout": None, "threads": 1, "length": None, "neuron_seed": 0, "progress": True, "reference": None,
    "target": None, "objective": "sum", "providers": None, "tensor_layout": None, "optimizer_params": None,
    "init": None, "init_data": None, "init_n": None, "data": None,
    # plausible super stimuli (issue 16, xdream_ts/plausible.py)
    "plausible": None, "plausibility_layer": None, "plausibility_method": "penalty",
    "plausibility_model": None,
    # a remote endpoint (adapters/remote.py): Open Inference Protocol v2
    "endpoint": None, "remote_model": None, "output": None, "token_env": None, "timeout": 30.0, "max_batch": 64,
}


def add_cli(sub):
    p = sub.add_parser("run", help="search for the series that drive a target hardest",
                       description="Run a search. Options come from CONFIG.toml (keys as the long flags, with "
                                   "underscores) and/or flags; flags win. Without --model the target is the "
                                   "built-in default (the shipped reference model when installed, else a "
                                   "simulated neuron).")
    p.add_argument("config", nargs="?", help="TOML file with run options")
    p.add_argument("--optimizer", help="default, genetic, cmaes, fdgd, nes, random, dream, ng:NAME "
                                       "(`xdream-ts optimizers`)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", dest="optimizer_params",
                   help="an optimizer parameter, e.g. population_size=60 or sigma0=0.5 (repeatable; TOML: a table "
                        "[optimizer_params]); a wrong name lists the ones the optimizer takes")
    p.add_argument("--data", help="the model's real series (UCR .tsv[.gz], UEA .ts[.gz], .npy/.npz, CSV, or a folder): "
                                  "they set the stimulus space (their units, or z-normalised if they are), the "
                                  "decoder (auto), the start and the reference maximum")
    p.add_argument("--plausible", nargs="?", const=0.99, type=float, metavar="QUANTILE",
                   help="maximise the target subject to the stimulus' Mahalanobis distance in a layer's activation "
                        "space lying within this quantile (default 0.99) of the real data's own distances (--data, "
                        "or the shipped FordA sample for the shipped model)")
    p.add_argument("--plausibility-layer", help="tensor the --plausible distance is measured in (default: the "
                                                "penultimate layer)")
    p.add_argument("--plausibility-model", metavar="PATH",
                   help="a reference ONNX model whose layer (--plausibility-layer, default its penultimate) measures "
                        "--plausible on the same series: for targets without layers (endpoint, simulated neuron), "
                        "or a model target that asks; needs --data unless it is the shipped model")
    p.add_argument("--plausibility-method", choices=("penalty", "feasibility-first"),
                   help="how --plausible ranks stimuli: penalty (default: an adaptive penalty on the violation) or "
                        "feasibility-first (every feasible above every infeasible); either way the run reports "
                        "its best feasible stimulus")
    p.add_argument("--decoder", help="auto (default: fitted on --data, else the shipped prior), identity, basis[:N], "
                                     "pca:FILE.npz, pca:DATA[:K], default, or a trained decoder folder")
    p.add_argument("--budget", type=int, help="presentations (each repeat counts), default 3000")
    p.add_argument("--init", choices=("best", "middle", "worst"),
                   help="start from the real series the target scores best / middle / worst (XDream Fig. 3c), "
                        "encoded by the decoder; default: random codes")
    p.add_argument("--init-data", help="real series for --init: a UCR folder, name or .tsv (default: the shipped "
                                       "FordA sample for the shipped model)")
    p.add_argument("--init-n", type=int, help="how many real series start the search (default: 20)")
    p.add_argument("--repeats", type=int, help="presentations of each series per generation, default 1")
    p.add_argument("--noise", help="none, poisson[:SCALE], gain:SIGMA (simulated noise on the target)")
    p.add_argument("--seed", type=int, help="seed of the optimizer and the simulated noise, default 0")
    p.add_argument("--out", help="run store folder (.zarr) to write; default runs/run-TIMESTAMP.zarr")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run store at --out")
    p.add_argument("--model", help="ONNX model to probe")
    p.add_argument("--layer", help="tensor name in the model (`xdream-ts inspect MODEL`); default: the logits (first floating-point output, before any softmax)")
    p.add_argument("--unit", type=int, help="channel (or feature) of the tensor, default 0")
    p.add_argument("--position", help="center (default), mean, max, or a time step")
    p.add_argument("--target", action="append", metavar="TENSOR:UNIT[@POS]",
                   help="a target unit; repeat for several (then --objective combines them; the store keeps each)")
    p.add_argument("--objective", choices=("sum", "contrast"),
                   help="several targets: their sum (default), or contrast = first minus the mean of the others")
    p.add_argument("--layout", help="input layout when the model's is ambiguous: NCL, NLC or NL")
    p.add_argument("--tensor-layout", help="layout of hidden tensors when it cannot be traced: NCL or NLC")
    p.add_argument("--providers", choices=("cpu", "cuda"), help="onnxruntime execution provider (default: CUDA when it really works)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads, default 1")
    p.add_argument("--length", type=int, help="series length when neither the model nor the decoder fixes it")
    p.add_argument("--reference", type=float, help="reference maximum activation of the unit (for relative activation)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.add_argument("--endpoint", help="score on an inference server (Open Inference Protocol v2) at this URL "
                                      "instead of a local model")
    p.add_argument("--remote-model", help="model name on the --endpoint server")
    p.add_argument("--output", help="output tensor of the remote model (default: its first); --unit picks the column")
    p.add_argument("--token-env", help="environment variable holding the endpoint's bearer token")
    p.add_argument("--timeout", type=float, help="seconds to wait for the endpoint's reply (default 30)")
    p.add_argument("--max-batch", type=int, help="series per request to the endpoint (default 64)")
    p.set_defaults(func=cmd_run)


def _load_toml(path: str) -> dict:
    from ..targets import load_toml
    data = load_toml(path, table="run")
    unknown = sorted(set(data) - set(RUN_DEFAULTS))
    if unknown:
        raise UserError(f"config file {path}: unknown keys {', '.join(unknown)}; valid keys: {', '.join(RUN_DEFAULTS)}")
    return data


def resolve_run_options(args) -> dict:
    opts = dict(RUN_DEFAULTS)
    if args.config:
        opts.update(_load_toml(args.config))
    opts.update({k: v for k, v in vars(args).items() if k in RUN_DEFAULTS and v is not None})
    for key in ("budget", "repeats"):
        if not isinstance(opts[key], int) or opts[key] < 1:
            raise UserError(f"--{key} must be a positive integer, got {opts[key]!r}")
    params = opts["optimizer_params"] or {}
    if isinstance(params, list):  # from --param flags
        params = dict(_parse_param(text) for text in params)
    if not isinstance(params, dict):
        raise UserError("optimizer_params must be a TOML table, e.g. optimizer_params = {population_size = 60}")
    opts["optimizer_params"] = params
    return opts


def _parse_param(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON when it parses (numbers, true/false, lists), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--param {text!r}: write KEY=VALUE, e.g. --param population_size=60")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def cmd_run(args) -> int:
    from ..loop import prepare, run
    from ..protocols import Reporting
    from ..targets import TargetSpec, build, is_shipped

    opts = resolve_run_options(args)
    spec = TargetSpec.from_options(opts)
    if opts["plausible"] is True:  # TOML `plausible = true`: the default quantile
        opts["plausible"] = 0.99
    if opts["plausible"] is not None:  # every refusal before a store exists
        from ..plausible import check_request
        check_request(spec, opts["plausible"], opts["optimizer"], plausibility_model=opts["plausibility_model"])
    out = Path(opts["out"] or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}.zarr")
    if out.exists() and not opts["resume"]:
        raise UserError(f"{out} already exists: add --resume to continue it, or choose another --out")
    if opts["resume"] and not out.exists():
        raise UserError(f"--resume: no run store at {out}; check --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create its folder ({exc.strerror}); choose a writable place") from None
    optimizer, params = opts["optimizer"], dict(opts["optimizer_params"])
    if optimizer == "dream":
        # a start where the unit is silent (ReLU) has no gradient to follow: draw it again. Off in the
        # library (the committed Sequence Dreaming results ran without it), on for someone at the shell.
        params.setdefault("redraw_dead", True)
    if opts["init"] and not opts["resume"]:  # a resumed run continues from its stored state instead
        from ..optimizers import takes_start_codes
        if not takes_start_codes(optimizer):
            raise UserError(f"optimizer {optimizer!r} cannot start from given codes: drop --init, or use default, "
                            "genetic, cmaes, fdgd, nes or ng:NAME")
    target = build(spec, differentiable=optimizer == "dream")
    scorer = target.scorer
    decoder, params, config = prepare(target, opts["decoder"] or "auto", optimizer, params,
                                      {"cli": {k: v for k, v in opts.items() if k != "progress"}}, store=out,
                                      resume=opts["resume"], seed=opts["seed"])
    if opts["init"] and not opts["resume"]:
        params["init"], config["init_info"] = start_codes(opts, target, decoder)
    if opts["plausible"] is not None:  # issue 16: the constrained scorer, its record in the config, its start
        from ..plausible import constrain
        scorer, params = constrain(target, decoder, optimizer, params, config, opts["plausible"],
                                   opts["plausibility_layer"], opts["plausibility_method"], opts["plausibility_model"],
                                   opts["seed"], start=not opts["resume"] and not opts["init"]
                                   and "init" not in opts["optimizer_params"])
        print(f"xdream-ts: {scorer.space}", file=sys.stderr)  # one line: which space the constraint is in
    result = run(decoder=decoder, scorer=scorer, optimizer=optimizer, optimizer_params=params, budget=opts["budget"],
                 repeats=opts["repeats"], seed=opts["seed"], store=out, resume=opts["resume"],
                 progress=opts["progress"], reference_max=target.reference_max, config=config)
    print(format_summary(result.summary()))
    if spec.data is None and not is_shipped(spec):  # said after the run, so that an error stays one line
        several = (getattr(decoder, "channels", None) or 1) > 1  # the shipped prior decodes one code per channel
        print("xdream-ts: stimuli were z-normalised per series" + (" and channel (the prior is channel-wise)" if several
              else "") + "; --data (the model's real series) sets the model's own units and starts the search from "
              "them", file=sys.stderr)
    if isinstance(scorer, Reporting):  # a remote endpoint: requests, retries, series lost and why
        print(scorer.report())
    return 0


def start_codes(opts: dict, target, decoder):
    """Codes of the real series the target scores best / middle / worst (--init), and a note for the store.

    The real series are shown to the target once each to rank them; those presentations are not part of
    the search's budget (XDream ranks its initial images the same way) and are recorded in the config.
    The series: --init-data, else the run's --data, else the shipped FordA sample for the shipped model.
    """
    import numpy as np

    from ..decoders.encode import initial_codes
    from ..objective import Objective
    from ..targets import is_shipped, start_from_data
    n = int(opts["init_n"] or 20)
    if not opts["init_data"] and target.data is not None:
        if not 1 <= n <= len(target.real_index):
            raise UserError(f"--init-n must be between 1 and the {len(target.real_index)} series of --data, got {n}")
        return start_from_data(target, decoder, n, opts["init"], seed=int(opts["seed"]))
    scorer = target.clean
    if opts["init_data"]:  # read, and resampled to the model's length, by the one loader
        from ..analysis import load_reference_data
        X = load_reference_data(opts["init_data"], length=getattr(scorer, "length", None))
        source = str(opts["init_data"])
    else:
        if not is_shipped(target.spec):
            raise UserError("--init needs real series of the target's data: pass --data (or --init-data)")
        from ..reference import sample_series
        X, source = sample_series()[0], "shipped FordA sample"
    if not 1 <= n <= len(X):
        raise UserError(f"--init-n must be between 1 and the {len(X)} series of {source}, got {n}")
    scores = np.asarray(scorer(X), dtype=np.float64)
    if scores.ndim == 2:
        scores = Objective(target.spec.objective)(scores)
    codes, idx = initial_codes(decoder, X, scores, n, opts["init"], seed=int(opts["seed"]), return_indices=True)
    return codes, {"which": opts["init"], "n": n, "source": source, "ranked": len(X),
                   "indices": [int(i) for i in idx]}
