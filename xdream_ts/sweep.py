"""Sweeps: the product of targets x decoders x optimizers x noise models x seeds, run in parallel.

A sweep is described by a TOML file (or the same structure as a dict)::

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
    model = "my_model.onnx"
    layer = "/layers.2/Relu_output_0"
    units = [3, 4]
    position = 250
    reference_max = [1.7, 2.2]          # optional, one per unit: best activation over your data

Layout of the sweep folder::

    OUT/
      sweep.json          the resolved configuration
      index.json          one entry per task: params, status (pending/running/done/failed), best scores,
                          relative activation, first super-stimulus presentation, wall time, error and
                          traceback of a failed task. Rewritten atomically (temp file + rename) as tasks finish.
      runs/ID.zarr        one run store per task, ID named from the task's parameters (+ a short hash)
      .locks/ID.lock      a worker holds it while it runs the task (two sweeps never write one store)

Re-running a sweep on the same folder skips finished runs, resumes interrupted ones exactly
(``xdream_ts.run(..., resume=True)``), and retries failed ones. A task that fails is recorded
(traceback in the index, a summary line at the end); it never stops the others. Tasks are small dicts;
the executor pickles them between our own processes, but nothing a user receives is pickle.

Executors (``concurrent.futures``): local processes by default (spawn), a Dask cluster through
``distributed.Client(address).get_executor()`` with ``scheduler=ADDRESS``, a Dask ``LocalCluster`` with
``executor='dask'`` and no address, ``'serial'`` in this process, or any ``Executor`` you pass.
Each worker process keeps its ONNX sessions (and learned decoders) in a small cache and reuses them
across its tasks.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import os
import re
import socket
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

INDEX_FORMAT = "xdream_ts.sweep/1"
INDEX_FILE = "index.json"
CONFIG_FILE = "sweep.json"
RUNS_DIR = "runs"

TOP_KEYS = ("name", "budget", "repeats", "seeds", "decoders", "optimizers", "noise", "threads", "providers",
            "chunk_size", "targets")
TARGET_KEYS = {
    "simulated": ("kind", "length", "channels", "seeds", "gain", "reference_max"),
    "reference": ("kind", "layer", "units", "position", "reference_max"),
    "onnx": ("kind", "model", "layer", "units", "position", "layout", "reference_max"),
}


# ---------------------------------------------------------------------------------------------------
# Configuration -> tasks
# ---------------------------------------------------------------------------------------------------
def load_config(config) -> dict:
    """A sweep config from a dict or a TOML path, validated and with defaults filled in (JSON-able)."""
    base = None
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise UserError(f"sweep config {config} not found: check the path (a .toml file)")
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            config = tomllib.loads(path.read_text())
        except Exception as exc:
            raise UserError(f"sweep config {path} is not valid TOML: {str(exc).splitlines()[0]}") from None
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
    out["targets"] = [t for spec in targets for t in _expand_target(spec, base)]
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
    from .cli import _default_decoder_spec
    return _default_decoder_spec()


def _optimizer_spec(o) -> dict:
    if isinstance(o, str):
        return {"name": o, "params": {}, "label": o}
    if not isinstance(o, dict) or "name" not in o:
        raise UserError(f"sweep config: an optimizer is a name or a table with name = ..., got {o!r}")
    params = {k: v for k, v in o.items() if k not in ("name", "label")}
    label = o.get("label") or (o["name"] + "".join(f"-{k}{v}" for k, v in sorted(params.items())))
    return {"name": str(o["name"]), "params": params, "label": str(label)}


def _expand_target(spec, base: Path | None) -> list[dict]:
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
    if kind == "reference":
        if spec.get("units") == "benchmark":
            return [{"kind": "reference", "layer": u[0], "unit": int(u[1]), "position": "center",
                     "reference_max": None} for u in _benchmark_units()]
        units = _units(spec)
        refs = _per_unit(spec.get("reference_max"), len(units), kind)
        return [{"kind": "reference", "layer": str(spec["layer"]), "unit": u, "position": position,
                 "reference_max": r} for u, r in zip(units, refs)]
    if "model" not in spec:
        raise UserError("sweep config: onnx target needs model = \"PATH.onnx\"")
    model = Path(spec["model"]).expanduser()
    if not model.is_absolute() and base is not None:
        model = base / model
    units = _units(spec)
    refs = _per_unit(spec.get("reference_max"), len(units), kind)
    return [{"kind": "onnx", "model": str(model.resolve()), "layer": str(spec["layer"]), "unit": u,
             "position": position, "layout": spec.get("layout"), "reference_max": r}
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


def _benchmark_units() -> list:
    from . import reference
    units = list(reference.REFERENCE_UNITS) or reference.select_reference_units()
    return [(u.tensor, u.channel) for u in units]


def target_label(t: dict) -> str:
    if t["kind"] == "simulated":
        return f"sim{t['seed']}-L{t['length']}"
    where = "" if t["layer"] in ("gap", "logits") and t["kind"] == "reference" else f"@{t['position']}"
    head = "ref" if t["kind"] == "reference" else Path(t["model"]).stem
    return f"{head}-{t['layer']}:{t['unit']}{where}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")


def make_tasks(cfg: dict, out_dir: Path | None = None) -> list[dict]:
    """Every task of the sweep (targets outermost, so one worker tends to reuse one ONNX session)."""
    tasks = []
    for t in cfg["targets"]:
        for dec in cfg["decoders"]:
            for opt in cfg["optimizers"]:
                for noise in cfg["noise"]:
                    for reps in cfg["repeats"]:
                        for seed in cfg["seeds"]:
                            ident = {"target": t, "decoder": dec, "optimizer": {k: opt[k] for k in ("name", "params")},
                                     "noise": noise, "repeats": reps, "seed": seed}
                            # what the run depends on: not the budget (raise it and re-run to extend every
                            # run), not reference_max (a normalisation, read again from the assets)
                            key = {**ident, "target": {k: v for k, v in t.items() if k != "reference_max"}}
                            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
                            name = "__".join([target_label(t), dec, opt["label"], noise, f"r{reps}", f"s{seed}"])
                            task_id = f"{_slug(name)[:110]}-{digest}"
                            tasks.append({"id": task_id, **ident, "optimizer_label": opt["label"],
                                          "target_label": target_label(t), "budget": cfg["budget"],
                                          "threads": cfg["threads"], "providers": cfg["providers"], "chunk_size": cfg["chunk_size"] or None,
                                          "out": str(out_dir) if out_dir is not None else None})
    ids = [t["id"] for t in tasks]
    if len(set(ids)) != len(ids):
        raise UserError("sweep config: some tasks are identical (a value listed twice?); make every axis unique")
    return tasks


def validate(cfg: dict) -> None:
    """Fail fast, before any task starts, on what would make every task of a kind fail; fills in the
    reference maxima of the shipped model's units."""
    import inspect as _inspect

    from .adapters.simulated import SimulatedNeuron, with_noise
    from .decoders import make_decoder
    from .optimizers import optimizer_class

    for opt in cfg["optimizers"]:
        cls = optimizer_class(opt["name"])
        accepted = set(_inspect.signature(cls.__init__).parameters) - {"self", "dim", "seed"}
        bad = sorted(set(opt["params"]) - accepted)
        if bad:
            raise UserError(f"sweep config: optimizer {opt['name']!r} does not take {', '.join(bad)}; it takes "
                            f"{', '.join(sorted(accepted - {'noisy', 'name', 'init'}))}")
    for noise in cfg["noise"]:
        with_noise(SimulatedNeuron(length=8), noise, seed=0)
    lengths = set()
    models: dict[str, list] = {}
    for t in cfg["targets"]:
        if t["kind"] == "simulated":
            lengths.add((t["length"], t["channels"]))
            continue
        path = _model_path(t)
        models.setdefault(path, []).append(t)
    for path, ts in models.items():
        from .adapters.onnx import inspect_model, parse_position
        layout = ts[0].get("layout")
        info = inspect_model(path, layout=layout)
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
        if t["kind"] == "reference" and t["reference_max"] is None:
            t["reference_max"] = _reference_max(t)


def _model_path(t: dict) -> str:
    if t["kind"] == "reference":
        from .reference import reference_model_path
        return str(reference_model_path())
    return t["model"]


def _reference_max(t: dict) -> float | None:
    """The shipped model's reference maximum of a unit (None when the activations do not cover it)."""
    from . import reference
    position = "none" if len(reference.ONNX_TENSORS.get(t["layer"], ((0, 0, 0),))[0]) == 2 else t["position"]
    try:
        return float(reference.reference_max(reference.ReferenceUnit(t["layer"], t["unit"], str(position))))
    except (KeyError, IndexError, UserError):
        return None


# ---------------------------------------------------------------------------------------------------
# One task, in a worker
# ---------------------------------------------------------------------------------------------------
_ONNX_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_DECODER_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 8  # sessions kept per worker: tasks are ordered target-major, so a handful is plenty


def _cached(cache: OrderedDict, key: tuple, make):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = make()
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def onnx_scorer(model_path: str, targets: tuple, threads: int = 1, layout: str | None = None,
                providers: str | None = None):
    """This worker's OnnxScorer for (model, targets, threads), created once and reused across tasks."""
    from .adapters.onnx import OnnxScorer, Target

    def make():
        return OnnxScorer(model_path, [Target(*t) for t in targets], threads=threads, layout=layout,
                          providers=providers)
    return _cached(_ONNX_CACHE, (str(model_path), tuple(targets), int(threads), layout, providers), make)


def build_task(task: dict):
    """(decoder, scorer, optimizer, reference_max, optimum) for one task; sessions come from the worker cache."""
    from .adapters.simulated import SimulatedNeuron, with_noise
    from .decoders import make_decoder
    from .optimizers import make_optimizer

    t = task["target"]
    optimum = None
    if t["kind"] == "simulated":
        base = SimulatedNeuron(length=t["length"], channels=t["channels"], seed=t["seed"], gain=t["gain"])
        optimum = base.max_response
        ref = optimum if t["reference_max"] == "optimum" else t["reference_max"]
    else:
        base = onnx_scorer(_model_path(t), ((t["layer"], t["unit"], t["position"]),), task["threads"], t.get("layout"),
                           task.get("providers"))
        ref = t["reference_max"]
    scorer = with_noise(base, task["noise"], seed=task["seed"])
    length, channels = getattr(base, "length", None), getattr(base, "channels", None)
    channels = channels if (channels or 1) > 1 else None
    spec = task["decoder"]
    if spec.split(":")[0] in ("identity", "basis"):  # cheap and stateless: no need to cache
        decoder = make_decoder(spec, length=length, channels=channels)
    else:
        decoder = _cached(_DECODER_CACHE, (spec, length, channels), lambda: make_decoder(spec, length, channels))
    opt = task["optimizer"]
    optimizer = make_optimizer(opt["name"], decoder.latent_dim, seed=task["seed"],
                               noisy=bool(getattr(scorer, "noisy", False)),
                               evaluations=task["budget"] // task["repeats"], **opt["params"])
    return decoder, scorer, optimizer, ref, optimum


def run_task(task: dict) -> dict:
    """Run (or resume, or skip) one task; never raises for a failure of the task itself."""
    t0 = time.perf_counter()
    where = f"{socket.gethostname()}:{os.getpid()}"
    try:
        return _run_task(task, t0, where)
    except Exception as exc:  # the task failed; the sweep goes on and the index keeps the traceback
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"id": task["id"], "status": "failed", "error": f"{type(exc).__name__}: {msg}"[:500],
                "traceback": traceback.format_exc(), "wall_seconds": round(time.perf_counter() - t0, 3),
                "worker": where}


def _run_task(task: dict, t0: float, where: str) -> dict:
    from .loop import load_run, run

    out = Path(task["out"])
    store = out / RUNS_DIR / f"{task['id']}.zarr"
    with _TaskLock(out / ".locks" / f"{task['id']}.lock"):
        status = store_status(store, task["budget"])
        if status == "broken":  # killed while the store was being created: nothing in it was ever committed
            store.rename(store.with_name(f"{store.name}.broken-{int(time.time())}"))
        elif status == "done":
            r = load_run(store)
            return {**summarize(r, task, None), "skipped": True, "resumed": False, "worker": where,
                    "wall_seconds": round(time.perf_counter() - t0, 3)}
        elif status == "partial":
            _repair_commit_marker(store)
        resume = status == "partial"
        decoder, scorer, optimizer, ref, optimum = build_task(task)
        watchdog = _Watchdog(task.get("parent_pid"))
        r = run(decoder, scorer, optimizer, budget=task["budget"], repeats=task["repeats"], seed=task["seed"],
                store=store, resume=resume, progress=False, chunk_size=task["chunk_size"], reference_max=ref,
                config={"sweep": {"task": task["id"], "target": task["target_label"],
                                  "optimizer_label": task["optimizer_label"], "noise": task["noise"]}},
                callback=watchdog)
    return {**summarize(r, task, optimum), "skipped": False, "resumed": resume, "worker": where,
            "wall_seconds": round(time.perf_counter() - t0, 3)}


class _Watchdog:
    """Per-generation check that the sweep process is alive: an orphaned worker stops at once.

    A SIGKILLed sweep leaves its process-pool workers behind; without this they would finish their task
    while the restarted sweep waits for the task's lock.
    """

    def __init__(self, parent_pid: int | None):
        self.parent_pid = parent_pid

    def __call__(self, generation, presentations, best):
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            raise SystemExit("the sweep process is gone: stopping after a complete generation")


class _TaskLock:
    """An exclusive lock file per task (fcntl; a no-op where fcntl does not exist)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks while an orphan of a killed sweep finishes a generation
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock


def first_super_presentation(r, reference_max: float | None) -> int | None:
    """Presentations spent until the first series whose (clean when known) activation exceeded the
    reference maximum (relative activation > 1, a super stimulus); None if none did."""
    import numpy as np
    if not reference_max:
        return None
    obj = r.clean_objective if r.clean_scores is not None else r.objective
    n_eval = np.asarray(r.n_evaluated)
    reps = int(r.config.get("repeats") or 1)
    before = np.concatenate([[0], np.cumsum(n_eval)[:-1]]) * reps
    for g in range(len(n_eval)):
        row = np.asarray(obj[g, : n_eval[g]], dtype=np.float64)
        hit = np.flatnonzero(np.nan_to_num(row, nan=-np.inf) > reference_max)
        if hit.size:
            return int(before[g] + (hit[0] + 1) * reps)
    return None


def summarize(r, task: dict, optimum: float | None) -> dict:
    """The index entry of a finished task (small, JSON-able)."""
    s = r.summary()
    if optimum is None and task["target"]["kind"] == "simulated":
        optimum = (r.config.get("scorer", {}).get("inner") or r.config.get("scorer", {})).get("max_response")
    return {"id": task["id"], "status": "done", "best_score": s["best_score"],
            "best_clean_score": s["best_clean_score"], "relative_activation": s["relative_activation"],
            "reference_max": s["reference_max"], "optimum": optimum, "presentations": s["presentations"],
            "generations": s["generations"], "missing_responses": s["missing_responses"],
            "first_super_presentation": first_super_presentation(r, s["reference_max"]),
            "run_wall_seconds": r.attrs.get("wall_seconds")}


# ---------------------------------------------------------------------------------------------------
# The sweep, in the calling process
# ---------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """A sweep folder and its index. ``entries``: task id -> index entry (params, status, scores)."""

    path: Path
    index: dict

    @property
    def entries(self) -> dict:
        return self.index["tasks"]

    @property
    def done(self) -> list[str]:
        return [k for k, e in self.entries.items() if e["status"] == "done"]

    @property
    def failed(self) -> list[str]:
        return [k for k, e in self.entries.items() if e["status"] == "failed"]

    def rows(self) -> list[dict]:
        """One flat dict per task, for tables."""
        out = []
        for k, e in self.entries.items():
            p = e["params"]
            out.append({"id": k, "target": p["target_label"], "kind": p["target"]["kind"],
                        "layer": p["target"].get("layer"), "decoder": p["decoder"], "optimizer": p["optimizer_label"],
                        "noise": p["noise"], "repeats": p["repeats"], "seed": p["seed"],
                        **{f: e.get(f) for f in ("status", "best_score", "best_clean_score", "relative_activation",
                                                 "reference_max", "optimum", "presentations",
                                                 "first_super_presentation", "wall_seconds", "error")}})
        return out

    def load_run(self, task_id: str):
        from .loop import load_run
        return load_run(self.path / self.entries[task_id]["store"])

    def summary_line(self) -> str:
        n = len(self.entries)
        skipped = sum(1 for e in self.entries.values() if e.get("skipped"))
        line = (f"sweep {self.path}: {n} tasks, {len(self.done)} done"
                f"{f' ({skipped} already complete)' if skipped else ''}, {len(self.failed)} failed")
        if self.failed:
            first = self.entries[self.failed[0]]
            line += f" (first: {self.failed[0]}: {first.get('error')}; tracebacks in {self.path / INDEX_FILE})"
        return line


def load_sweep(path) -> SweepResult:
    """Read a sweep folder written by :func:`sweep`."""
    p = Path(path)
    f = p / INDEX_FILE
    if not f.is_file():
        raise UserError(f"no sweep index at {f}: point to the folder that `xdream-ts sweep --out` wrote")
    try:
        index = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{f} is not valid JSON ({exc.msg}): re-run the sweep to rewrite it") from None
    if index.get("format") != INDEX_FORMAT:
        raise UserError(f"{f} is not an xdream_ts sweep index (format {index.get('format')!r})")
    return SweepResult(p, index)


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # readers see the old index or the new one, never half of one


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def _clean_floats(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class _Index:
    def __init__(self, out: Path, cfg: dict, tasks: list[dict]):
        self.path = out / INDEX_FILE
        old = {}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text()).get("tasks", {})
            except json.JSONDecodeError:
                old = {}  # rebuilt from the run stores below
        self.data = {"format": INDEX_FORMAT, "name": cfg["name"], "config": cfg, "started": _now(), "updated": None,
                     "tasks": {}}
        for t in tasks:
            params = {k: t[k] for k in ("target", "target_label", "decoder", "optimizer", "optimizer_label",
                                        "noise", "repeats", "seed", "budget")}
            entry = {"params": params, "store": f"{RUNS_DIR}/{t['id']}.zarr", "status": "pending", "attempts": 0}
            prev = old.get(t["id"])
            if prev:
                entry["attempts"] = prev.get("attempts", 0)
                if prev.get("status") == "done" and prev.get("budget_done", 0) >= t["budget"]:
                    entry.update({k: v for k, v in prev.items() if k not in ("params", "store")})
            self.data["tasks"][t["id"]] = entry

    def update(self, task_id: str, **fields):
        self.data["tasks"][task_id].update(_clean_floats(fields))

    def write(self):
        self.data["updated"] = _now()
        _atomic_write_json(self.path, self.data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def store_status(path: Path, budget: int) -> str:
    """'absent', 'broken' (created but never committed), 'done' (complete for ``budget``) or 'partial'.

    Read from the group's zarr.json alone (no zarr import, ~0.1 ms). 'done' needs the run to be marked
    complete AND its presentations to have reached ``budget`` (less than one series' repeats short): the
    attributes are not written in one piece by every zarr version, so ``complete`` alone could be stale.
    """
    if not Path(path).exists():
        return "absent"
    attrs = _store_attrs(path)
    if attrs is None:
        return "broken"
    if "generations_completed" not in attrs or "presentations" not in attrs:
        return "broken"
    reps = int(attrs.get("repeats") or 1)
    if attrs.get("complete") and budget - int(attrs["presentations"]) < reps:
        return "done"
    return "partial"


def _store_attrs(path: Path) -> dict | None:
    """A run store's attributes, from its zarr.json alone; None when unreadable."""
    try:
        return json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {})
    except (OSError, json.JSONDecodeError):
        return None


def _repair_commit_marker(path: Path) -> None:
    """Make ``presentations`` agree with the committed generations before a resume.

    zarr's ``group.attrs.update({...})`` writes zarr.json once per key, so a run killed between the
    ``generations_completed`` and ``presentations`` writes of store.py's commit marker has a counter one
    generation behind, and its resume would run one generation too many. The generations' rows are
    on disk before either write, so the right value is sum(n_evaluated) x repeats.
    """
    import zarr
    g = zarr.open_group(str(path), mode="r+")
    attrs = g.attrs.asdict()
    done = int(attrs["generations_completed"])
    expected = int(g["n_evaluated"][:done].sum()) * int(attrs.get("repeats") or 1)
    if int(attrs["presentations"]) != expected:
        g.update_attributes({"presentations": expected})  # one write


class _InlineExecutor(cf.Executor):
    """Tasks run in this process, one after the other (debugging, tiny sweeps)."""

    def submit(self, fn, *args, **kwargs):
        f = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            f.set_exception(exc)
        return f


class _Backend:
    """An executor, how many tasks to keep in flight, and how to clean up."""

    def __init__(self, executor, scheduler, workers):
        import multiprocessing as mp
        self.kind = executor
        self.client = self.cluster = None
        self.owned = True
        self.parent_pid = None
        if isinstance(executor, cf.Executor):
            self.ex, self.owned, self.kind = executor, False, "custom"
            self.slots = workers or getattr(executor, "_max_workers", None) or os.cpu_count() or 1
        elif executor == "serial":
            self.ex, self.slots = _InlineExecutor(), 1
        elif executor == "processes":
            self.slots = workers or os.cpu_count() or 1
            self._mp = mp.get_context("spawn")  # fork would copy zarr's event-loop thread and onnxruntime state
            self.ex = cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=self._mp)
            self.parent_pid = os.getpid()
        elif executor == "dask":
            try:
                from distributed import Client, LocalCluster
            except ImportError:
                raise UserError("the dask executor needs dask.distributed: pip install 'dask[distributed]'") from None
            import logging
            if scheduler:
                try:
                    self.client = Client(scheduler, timeout="20s")
                except (OSError, TimeoutError) as exc:
                    raise UserError(f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}): "
                                    "check the address (tcp://HOST:8786) and that the scheduler runs") from None
                self.slots = workers or max(1, sum(self.client.nthreads().values()))
            else:
                n = workers or os.cpu_count() or 1
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
                self.client = Client(self.cluster)
                self.slots = n
            self.ex = self.client.get_executor(pure=False)
            self.slots = self.slots * 2  # the scheduler queues; a little slack keeps every worker busy
        else:
            raise UserError(f"unknown executor {executor!r}: use processes, dask, serial or a concurrent.futures.Executor")

    def restart(self):
        """A fresh process pool after a worker died (the old one is unusable)."""
        self.ex.shutdown(wait=False, cancel_futures=True)
        self.ex = cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=self._mp)

    def close(self):
        if self.owned:
            try:
                self.ex.shutdown(wait=True, cancel_futures=True)
            except TypeError:  # distributed's ClientExecutor has no cancel_futures
                self.ex.shutdown(wait=True)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def sweep(config, out_dir, executor=None, scheduler: str | None = None, workers: int | None = None,
          progress: bool = True) -> SweepResult:
    """Run every task of a sweep config (dict or TOML path) into ``out_dir``; resumable.

    executor   None (processes, or dask when ``scheduler`` is given), 'processes', 'dask', 'serial', or a
               ``concurrent.futures.Executor``
    scheduler  address of a Dask scheduler (tcp://HOST:8786); 'dask' without it starts a LocalCluster
    workers    processes (default: CPU count); for a remote scheduler, tasks kept in flight
    Returns a :class:`SweepResult`; failed tasks are in it (and in index.json), never raised.
    """
    import multiprocessing as mp
    if getattr(mp.current_process(), "_inheriting", False):
        # a spawned worker is re-importing the calling script, which called sweep() at import time
        raise UserError("sweep() was called while a worker process imported your script: put the call under "
                        "`if __name__ == '__main__':` (worker processes re-import the main module)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers must be a positive integer, got {workers!r}")
    cfg = load_config(config)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: the sweep output must be a folder (--out)")
    validate(cfg)
    tasks = make_tasks(cfg, out)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    _atomic_write_json(out / CONFIG_FILE, cfg)
    index = _Index(out, cfg, tasks)

    from .loop import _model_digests
    todo, digests, stale = [], {}, []
    for t in tasks:
        e = index.data["tasks"][t["id"]]
        if e["status"] == "done" and store_status(out / e["store"], t["budget"]) == "done":
            if t["target"]["kind"] in ("onnx", "reference"):
                # a finished task on other weights under the same path is not this sweep's result
                path = _model_path(t["target"])
                if path not in digests:
                    digests[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                was = _model_digests((_store_attrs(out / e["store"]) or {}).get("config", {}).get("scorer"))
                if was and digests[path] not in was:
                    stale.append(path)
                    continue
            e["skipped"] = True
            continue
        todo.append(t)  # a complete store without an index entry is summarised by a (cheap) task
    if stale:
        raise UserError(f"sweep {out}: {len(stale)} finished task(s) ran on another version of {stale[0]} (the "
                        "file changed since); run the sweep into a new --out to search this version")
    index.write()
    if executor is None:
        executor = "dask" if scheduler else "processes"
    if scheduler and executor != "dask":
        raise UserError(f"--scheduler needs the dask executor, not {executor!r}")
    if not todo:
        result = SweepResult(out, index.data)
        return result
    backend = _Backend(executor, scheduler, workers)
    try:
        _drive(backend, todo, index, progress)
    finally:
        backend.close()
        index.write()
    return SweepResult(out, index.data)


def _drive(backend: _Backend, todo: list[dict], index: _Index, progress: bool) -> None:
    """Keep ``backend.slots`` tasks in flight; record each result as it comes back.

    A worker process that dies (segfault, out of memory, os._exit) breaks a process pool, and every
    task in flight with it. Those tasks are retried one at a time in a fresh pool, where a second death
    is attributable: that task is marked failed, the others go on.
    """
    from .progress import progress_bar
    pbar = progress_bar(total=len(todo), unit="task", desc="sweep", enabled=progress)
    queue = list(todo)
    isolate: list[str] = []  # ids to run alone after a pool broke
    running: dict = {}
    n_done = n_failed = 0
    try:
        while queue or running:
            limit = 1 if isolate else backend.slots
            submitted = False
            while queue and len(running) < limit:
                if isolate and running:
                    break
                submitted = True
                t = queue.pop(0)
                if backend.parent_pid is not None:
                    t = {**t, "parent_pid": backend.parent_pid}
                running[backend.ex.submit(run_task, t)] = t
                index.update(t["id"], status="running", attempts=index.data["tasks"][t["id"]]["attempts"] + 1,
                             started_at=_now())
            if submitted:
                index.write()  # the index shows what is running now, not at the last completion
            finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            broken = []
            for fut in finished:
                t = running.pop(fut)
                try:
                    res = fut.result()
                except cf.BrokenExecutor:
                    broken.append(t)
                    continue
                except Exception as exc:  # raised outside run_task: a lost Dask worker, a pickling error
                    res = {"id": t["id"], "status": "failed",
                           "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500],
                           "traceback": "".join(traceback.format_exception(exc))}
                if t["id"] in isolate:
                    isolate.remove(t["id"])
                res = {k: v for k, v in res.items() if k != "id"}
                if res["status"] == "done":
                    n_done += 1
                    res.update(error=None, traceback=None, budget_done=t["budget"], finished_at=_now())
                else:
                    n_failed += 1
                index.update(t["id"], **res)
                index.write()
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix_str(f"done {n_done} failed {n_failed}")
            if broken:
                # every future of a broken pool fails: take back the ones still pending too
                broken += list(running.values())
                running.clear()
                backend.restart()
                for t in broken:
                    if t["id"] in isolate and len(broken) == 1:
                        isolate.remove(t["id"])
                        n_failed += 1
                        index.update(t["id"], status="failed",
                                     error="the worker process died while running this task (crash, out of memory, "
                                           "killed, or a script calling sweep() without `if __name__ == "
                                           "'__main__':`); re-run the sweep to retry it", traceback=None)
                        if pbar is not None:
                            pbar.update(1)
                    else:
                        if t["id"] not in isolate:
                            isolate.append(t["id"])
                        queue.insert(0, t)
                index.write()
    except BaseException:
        for t in running.values():
            index.update(t["id"], status="interrupted")
        raise
    finally:
        if pbar is not None:
            pbar.close()


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="run the product of targets, decoders, optimizers, noise models and seeds",
        description="Run a sweep described by CONFIG.toml (see `python -c \"import xdream_ts.sweep as s; "
                    "help(s)\"` for the format). One run store per task under --out; re-running the same "
                    "command skips finished tasks, resumes interrupted ones and retries failed ones.")
    p.add_argument("config", help="sweep TOML file")
    p.add_argument("--out", help="sweep folder (default: sweeps/CONFIG-NAME)")
    p.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://HOST:8786): run the tasks on that cluster")
    p.add_argument("--executor", choices=("processes", "dask", "serial"),
                   help="processes (default), dask (a LocalCluster unless --scheduler), serial (this process)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    out = args.out or str(Path("sweeps") / Path(args.config).stem)
    result = sweep(args.config, out, executor=args.executor, scheduler=args.scheduler, workers=args.workers,
                   progress=args.progress)
    print(result.summary_line())
    return 1 if result.failed else 0
