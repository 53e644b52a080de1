"""The sweep's configuration: the TOML file (or dict) checked and expanded, its targets as TargetSpecs,
and the tasks, one per point of the product of targets x decoders x optimizers x noise x repeats x seeds."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from pathlib import Path

from ..errors import UserError

TOP_KEYS = ("name", "budget", "repeats", "seeds", "decoders", "optimizers", "noise", "threads", "providers",
            "chunk_size", "targets")
TARGET_KEYS = {
    "simulated": ("kind", "length", "channels", "seeds", "gain", "reference_max"),
    "reference": ("kind", "layer", "units", "position", "reference_max", "data", "plausible", "plausibility_layer"),
    "onnx": ("kind", "model", "layer", "units", "position", "layout", "reference_max", "data", "plausible",
             "plausibility_layer"),
}


def load_config(config, plausible: float | None = None) -> dict:
    """A sweep config from a dict or a TOML path, validated and with defaults filled in (JSON-able).

    The format (a TOML file, or the same structure as a dict)::

        name = "noise"                      # optional, for the reader
        budget = 3000                       # presentations per run (not part of a run's identity: raise it
                                            # later and a re-run continues every finished run to the new budget)
        repeats = 1                         # int or list
        seeds = 3                           # n -> 0..n-1, or a list; seeds the optimizer and the simulated noise
        decoders = ["basis:32"]             # decoder specs (`xdream-ts run --decoder`)
        optimizers = ["genetic", {name = "genetic", label = "ga-pop40", population_size = 40}]
        noise = ["none", "poisson:1", "gain:0.5"]
        threads = 1                         # onnxruntime intra-op threads per task
        providers = "cpu"                   # onnxruntime: "cpu", "cuda", or left out (CUDA when available)
        chunk_size = 0                      # series per scorer call (0: one call per generation)

        [[targets]]                         # the built-in simulated neuron (closed-form optimum)
        kind = "simulated"
        length = 200
        seeds = [0, 1]                      # one neuron per seed
        reference_max = "optimum"           # optional: a number, or "optimum" (relative activation = fraction of optimum)

        [[targets]]                         # the shipped reference model (FordA ResNet)
        kind = "reference"
        layer = "block2/out"                # or units = "benchmark": the 32 benchmark units at 4 depths
        units = [0, 5, 17]
        position = "center"

        [[targets]]                         # any ONNX model (the path must be readable by every worker)
        kind = "onnx"
        model = "my_model.onnx"             # relative paths: from the TOML file's folder
        layer = "/layers.2/Relu_output_0"
        units = [3, 4]
        position = 250
        reference_max = [1.7, 2.2]          # optional, one per unit: best activation over your data
        data = "my_series.npy"              # optional (reference and onnx targets): the model's real series,
                                            # as `run --data`: their units, the auto decoder (fitted once), the
                                            # start and, without reference_max, the reference maximum
        plausible = 0.99                    # optional (reference and onnx targets), as `run --plausible`: the
                                            # search stays within this quantile of the real series' Mahalanobis
                                            # distances in plausibility_layer (default: the penultimate layer);
                                            # needs data unless the target is the shipped model

    Singular spellings are accepted (``seed = 4``, ``unit = 2``); a ``[sweep]`` table may hold the top keys.
    ``plausible`` (``sweep --plausible``): the quantile of every reference and onnx target that names none.
    Each expanded target becomes a :class:`~xdream_ts.targets.TargetSpec` (:func:`target_spec`).
    """
    base = None
    if isinstance(config, (str, os.PathLike)):
        from ..targets import load_toml
        path = Path(config)
        try:
            config = load_toml(path)
        except UserError as exc:
            raise UserError(f"sweep {str(exc).splitlines()[0]}{' (a .toml file)' if not path.is_file() else ''}") \
                from None
        base = path.resolve().parent
    if not isinstance(config, dict):
        raise UserError(f"a sweep config is a dict or a TOML file, got {type(config).__name__}")
    cfg = dict(config.get("sweep", config))
    if "sweep" in config and "targets" in config and "targets" not in cfg:
        cfg["targets"] = config["targets"]
    unknown = sorted(set(cfg) - set(TOP_KEYS))
    if unknown:
        raise UserError(f"sweep config: unknown keys {', '.join(unknown)}; valid keys: {', '.join(TOP_KEYS)}")
    out = {
        "name": str(cfg.get("name", "sweep")),
        "budget": _positive_int(cfg.get("budget", 3000), "budget"),
        "repeats": [_positive_int(r, "repeats") for r in _as_list(cfg.get("repeats", 1))],
        "seeds": _seeds(cfg.get("seeds", 1)),
        "decoders": [str(d) for d in _as_list(cfg.get("decoders", _default_decoder()))],
        "optimizers": [_optimizer_spec(o) for o in _as_list(cfg.get("optimizers", "genetic"))],
        "noise": [str(n) for n in _as_list(cfg.get("noise", "none"))],
        "threads": _nonneg_int(cfg.get("threads", 1), "threads"),
        "chunk_size": _nonneg_int(cfg.get("chunk_size", 0), "chunk_size"),
        "providers": cfg.get("providers"),
    }
    if out["providers"] not in (None, "cpu", "cuda"):
        raise UserError(f"sweep config: providers = {out['providers']!r}: use \"cpu\", \"cuda\" or leave it out "
                        "(CUDA when onnxruntime has it)")
    targets = cfg.get("targets")
    if not targets:
        raise UserError("sweep config: no [[targets]]; add at least one (kind = simulated, reference or onnx)")
    if isinstance(targets, dict):
        targets = [targets]
    if plausible is not None:  # sweep --plausible: every model target that does not say otherwise
        targets = [{**t, "plausible": t.get("plausible", plausible)} if isinstance(t, dict) and
                   t.get("kind", "onnx" if "model" in t else None) in ("reference", "onnx") else t for t in targets]
    out["targets"] = [t for spec in targets for t in _expand_target(spec, base)]
    if any(t.get("plausible") for t in out["targets"]) and any(n != "none" for n in out["noise"]):
        raise UserError("sweep config: plausible targets with noise are not supported yet (the noise would fall on "
                        "the distance too): use noise = \"none\", or drop plausible")
    for axis in ("decoders", "optimizers", "noise", "seeds", "repeats"):
        if not out[axis]:
            raise UserError(f"sweep config: {axis} is empty; give at least one value")
    labels = [o["label"] for o in out["optimizers"]]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"sweep config: optimizers {', '.join(dup)} appear twice with different settings; "
                        "give each a distinct label = \"...\"")
    return out


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"sweep config: {what} must be a positive integer, got {v!r}")
    return int(v)


def _nonneg_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise UserError(f"sweep config: {what} must be a non-negative integer, got {v!r}")
    return int(v)


def _seeds(v) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise UserError(f"sweep config: seeds = {v}: give a count >= 1 or a list of seeds")
        return list(range(v))
    seeds = _as_list(v)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise UserError(f"sweep config: seeds must be a count or a list of non-negative integers, got {v!r}")
    return [int(s) for s in seeds]


def _default_decoder() -> str:
    """The CLI's default decoder (the shipped learned decoder when installed, else the DCT basis)."""
    from ..decoders import default_decoder_spec
    return default_decoder_spec()


def _optimizer_spec(o) -> dict:
    if isinstance(o, str):
        return {"name": o, "params": {}, "label": o}
    if not isinstance(o, dict) or "name" not in o:
        raise UserError(f"sweep config: an optimizer is a name or a table with name = ..., got {o!r}")
    params = {k: v for k, v in o.items() if k not in ("name", "label")}
    label = o.get("label") or (o["name"] + "".join(f"-{k}{v}" for k, v in sorted(params.items())))
    return {"name": str(o["name"]), "params": params, "label": str(label)}


def _expand_target(spec, base: Path | None) -> list[dict]:
    """One [[targets]] table -> one entry per unit (or per neuron seed): the task's target, as stored."""
    if not isinstance(spec, dict):
        raise UserError(f"sweep config: a target is a table (kind = ...), got {spec!r}")
    kind = spec.get("kind", "onnx" if "model" in spec else None)
    if kind not in TARGET_KEYS:
        raise UserError(f"sweep config: target kind {kind!r} unknown; use simulated, reference or onnx")
    # singular spellings are accepted: seed = 4 is seeds = [4], unit = 2 is units = [2]
    spec = {("seeds" if k == "seed" else "units" if k == "unit" else k): ([v] if k in ("seed", "unit") else v)
            for k, v in spec.items()}
    unknown = sorted(set(spec) - set(TARGET_KEYS[kind]))
    if unknown:
        raise UserError(f"sweep config: {kind} target: unknown keys {', '.join(unknown)}; valid keys: "
                        f"{', '.join(TARGET_KEYS[kind])}")
    if kind == "simulated":
        ref = spec.get("reference_max")
        if ref is not None and ref != "optimum" and not isinstance(ref, (int, float)):
            raise UserError(f"sweep config: simulated target reference_max must be a number or \"optimum\", got {ref!r}")
        return [{"kind": "simulated", "length": _positive_int(spec.get("length", 500), "target length"),
                 "channels": spec.get("channels"), "seed": s, "gain": float(spec.get("gain", 10.0)),
                 "reference_max": ref}
                for s in _seeds(spec.get("seeds", [0]))]
    if "layer" not in spec and spec.get("units") != "benchmark":
        raise UserError(f"sweep config: {kind} target needs layer = \"TENSOR\" (`xdream-ts inspect MODEL` lists them)")
    position = spec.get("position", "center")
    # the model's real series (any format `run --data` reads): they set the stimulus space, the auto decoder
    # (fitted once, cached beside the data), the start and the reference maximum of each task. Recorded
    # only when given, so the task ids of configs without data stay what they were.
    extra = {}
    if spec.get("data") is not None:
        data = Path(str(spec["data"])).expanduser()
        if not data.is_absolute() and base is not None:
            data = base / data
        if not data.exists():
            raise UserError(f"sweep config: {kind} target data {spec['data']!r} not found: check the path")
        extra = {"data": str(data.resolve())}
    # plausible super stimuli (xdream_ts.plausible), recorded only when asked for: task ids stay as they were
    if spec.get("plausible") not in (None, False):
        from ..plausible import check_quantile
        extra["plausible"] = 0.99 if spec["plausible"] is True else check_quantile(spec["plausible"])
        if spec.get("plausibility_layer") is not None:
            extra["plausibility_layer"] = str(spec["plausibility_layer"])
        if kind == "onnx" and "data" not in extra:
            raise UserError("sweep config: an onnx target with plausible needs data = \"...\" (the model's real "
                            "series the distance is measured against)")
    elif spec.get("plausibility_layer") is not None:
        raise UserError("sweep config: plausibility_layer without plausible: add plausible = 0.99")
    if kind == "reference":
        if spec.get("units") == "benchmark":
            return [{"kind": "reference", "layer": u[0], "unit": int(u[1]), "position": "center",
                     "reference_max": None, **extra} for u in benchmark_units()]
        units = _units(spec)
        refs = _per_unit(spec.get("reference_max"), len(units), kind)
        return [{"kind": "reference", "layer": str(spec["layer"]), "unit": u, "position": position,
                 "reference_max": r, **extra} for u, r in zip(units, refs)]
    if "model" not in spec:
        raise UserError("sweep config: onnx target needs model = \"PATH.onnx\"")
    model = Path(spec["model"]).expanduser()
    if not model.is_absolute() and base is not None:
        model = base / model
    units = _units(spec)
    refs = _per_unit(spec.get("reference_max"), len(units), kind)
    return [{"kind": "onnx", "model": str(model.resolve()), "layer": str(spec["layer"]), "unit": u,
             "position": position, "layout": spec.get("layout"), "reference_max": r, **extra}
            for u, r in zip(units, refs)]


def _units(spec) -> list[int]:
    units = _as_list(spec.get("units", 0))
    if not units or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in units):
        raise UserError(f"sweep config: units must be a channel index or a list of them, got {spec.get('units')!r}")
    return [int(u) for u in units]


def _per_unit(ref, n: int, kind: str) -> list:
    if ref is None or isinstance(ref, (int, float)) and not isinstance(ref, bool):
        return [ref] * n
    if isinstance(ref, list) and len(ref) == n and all(isinstance(r, (int, float)) for r in ref):
        return [float(r) for r in ref]
    raise UserError(f"sweep config: {kind} target reference_max must be a number or a list of {n} numbers "
                    f"(one per unit), got {ref!r}")


def benchmark_units() -> list[tuple[str, int]]:
    """(tensor, channel) of the shipped model's benchmark units (``units = "benchmark"``)."""
    from .. import reference
    units = list(reference.REFERENCE_UNITS) or reference.select_reference_units()
    return [(u.tensor, u.channel) for u in units]


def model_path(t: dict) -> str:
    """The model file of an ONNX or reference target (the shipped model's path for kind = reference)."""
    if t["kind"] == "reference":
        from ..reference import reference_model_path
        return str(reference_model_path())
    return t["model"]


def target_spec(t: dict, noise: str = "none", seed: int | None = 0, threads: int = 1,
                providers: str | None = None):
    """The :class:`~xdream_ts.targets.TargetSpec` of one expanded target with a task's noise and seed.

    simulated -> kind 'simulated' (length, channels, gain; its seed is the neuron's); reference -> kind
    'onnx' on the shipped model (model None); onnx -> kind 'onnx' on its model, with its layout. A numeric
    ``reference_max`` becomes the spec's ``reference`` ("optimum" is the simulated neuron's own maximum).
    """
    from ..targets import Target, TargetSpec
    ref = t.get("reference_max")
    number = isinstance(ref, (int, float)) and not isinstance(ref, bool) and math.isfinite(ref) and ref > 0
    reference = float(ref) if number else None
    if t["kind"] == "simulated":
        return TargetSpec(kind="simulated", length=t["length"], channels=t.get("channels"), neuron_seed=t["seed"],
                          gain=t["gain"], noise=noise, noise_seed=seed, reference=reference)
    return TargetSpec(kind="onnx", model=t["model"] if t["kind"] == "onnx" else None,
                      units=[Target(t["layer"], t["unit"], t["position"])], layout=t.get("layout"),
                      threads=threads, providers=providers, noise=noise, noise_seed=seed, reference=reference,
                      data=t.get("data"))


def target_label(t: dict) -> str:
    if t["kind"] == "simulated":
        return f"sim{t['seed']}-L{t['length']}"
    where = "" if t["layer"] in ("gap", "logits") and t["kind"] == "reference" else f"@{t['position']}"
    head = "ref" if t["kind"] == "reference" else Path(t["model"]).stem
    return f"{head}-{t['layer']}:{t['unit']}{where}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")


def make_tasks(cfg: dict, out_dir: Path | None = None) -> list[dict]:
    """Every task of the sweep (targets outermost, so one worker tends to reuse one ONNX session).

    A task's id is its parameters and a hash of what the run depends on: not the budget (raise it and
    re-run to extend every run), not reference_max (a normalisation, read again from the assets).
    """
    tasks = []
    for t, dec, opt, noise, reps, seed in itertools.product(cfg["targets"], cfg["decoders"], cfg["optimizers"],
                                                            cfg["noise"], cfg["repeats"], cfg["seeds"]):
        ident = {"target": t, "decoder": dec, "optimizer": {k: opt[k] for k in ("name", "params")},
                 "noise": noise, "repeats": reps, "seed": seed}
        key = {**ident, "target": {k: v for k, v in t.items() if k != "reference_max"}}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        name = "__".join([target_label(t), dec, opt["label"], noise, f"r{reps}", f"s{seed}"])
        tasks.append({"id": f"{_slug(name)[:110]}-{digest}", **ident, "optimizer_label": opt["label"],
                      "target_label": target_label(t), "budget": cfg["budget"], "threads": cfg["threads"],
                      "providers": cfg["providers"], "chunk_size": cfg["chunk_size"] or None,
                      "out": str(out_dir) if out_dir is not None else None})
    ids = [t["id"] for t in tasks]
    if len(set(ids)) != len(ids):
        raise UserError("sweep config: some tasks are identical (a value listed twice?); make every axis unique")
    return tasks


def validate(cfg: dict) -> None:
    """Fail fast, before any task starts, on what would make every task of a kind fail; fills in the
    reference maxima of the shipped model's units."""
    import inspect as _inspect

    from ..decoders import make_decoder
    from ..optimizers import optimizer_class
    from ..targets import check_noise, parse_position, reference_maximum

    for opt in cfg["optimizers"]:
        cls = optimizer_class(opt["name"])
        accepted = set(_inspect.signature(cls.__init__).parameters) - {"self", "dim", "seed"}
        bad = sorted(set(opt["params"]) - accepted)
        if bad:
            raise UserError(f"sweep config: optimizer {opt['name']!r} does not take {', '.join(bad)}; it takes "
                            f"{', '.join(sorted(accepted - {'noisy', 'name', 'init'}))}")
    for noise in cfg["noise"]:
        check_noise(noise)
    for t in cfg["targets"]:
        try:
            target_spec(t, cfg["noise"][0], threads=cfg["threads"], providers=cfg["providers"])
        except UserError as exc:
            raise UserError(f"sweep config: target {target_label(t)}: {exc}") from None
    lengths = set()
    models: dict[str, list] = {}
    for t in cfg["targets"]:
        if t["kind"] == "simulated":
            lengths.add((t["length"], t["channels"]))
            continue
        models.setdefault(model_path(t), []).append(t)
    for path, ts in models.items():
        from ..adapters.onnx import inspect_model
        info = inspect_model(path, layout=ts[0].get("layout"))
        tensors = {e["name"]: e for e in info["tensors"]}
        for t in ts:
            e = tensors.get(t["layer"])
            if e is None:
                raise UserError(f"sweep config: no targetable tensor {t['layer']!r} in {Path(path).name}; "
                                f"`xdream-ts inspect {path}` lists them")
            if t["unit"] >= e["units"]:
                raise UserError(f"sweep config: unit {t['unit']} out of range for {t['layer']!r} "
                                f"({e['units']} units, use 0..{e['units'] - 1})")
            pos = parse_position(t["position"])
            if isinstance(pos, int) and e["time"] is not None and pos >= e["time"]:
                raise UserError(f"sweep config: position {pos} out of range for {t['layer']!r} ({e['time']} steps)")
        lengths.add((info["input"]["length"], info["input"]["channels"] if (info["input"]["channels"] or 1) > 1
                     else None))
    for dec in cfg["decoders"]:
        for length, channels in lengths:
            make_decoder(dec, length=length, channels=channels)
    for t in cfg["targets"]:  # the shipped model's reference maxima, read once here
        if t["kind"] == "reference" and t["reference_max"] is None and not t.get("data"):  # data: their best
            try:
                t["reference_max"] = reference_maximum(target_spec(t))
            except (KeyError, IndexError, UserError):
                t["reference_max"] = None
