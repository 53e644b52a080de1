"""One task, in a worker: its decoder, target and optimizer built (targets through
:func:`xdream_ts.targets.build`, sessions and learned decoders kept per process), run or resumed or
skipped under a lock, and summarised for the index."""
from __future__ import annotations

import os
import socket
import time
import traceback
from collections import OrderedDict
from pathlib import Path

from .config import target_spec
from .folder import RUNS_DIR, repair_commit_marker, store_status

_DECODER_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 8  # learned decoders kept per worker: tasks are ordered target-major, so a handful is plenty


def _cached_decoder(spec: str, length, channels):
    from ..decoders import make_decoder
    key = (spec, length, channels)
    if key in _DECODER_CACHE:
        _DECODER_CACHE.move_to_end(key)
        return _DECODER_CACHE[key]
    decoder = _DECODER_CACHE[key] = make_decoder(spec, length, channels)
    while len(_DECODER_CACHE) > _CACHE_SIZE:
        _DECODER_CACHE.popitem(last=False)
    return decoder


def task_spec(task: dict):
    """The task's :class:`~xdream_ts.targets.TargetSpec`: its target with its noise, seed, threads, providers."""
    return target_spec(task["target"], task["noise"], task["seed"], task["threads"], task.get("providers"))


def build_task(task: dict):
    """(decoder, scorer, optimizer, reference_max, optimum, config) for one task; ONNX sessions are reused
    across the worker's tasks (``build(spec, reuse=True)``), learned decoders too. With data, what the data
    decide comes from the loop's ``prepare`` (the fit cached beside the data), recorded in ``config``."""
    from ..decoders import make_decoder
    from ..loop import prepare
    from ..optimizers import make_optimizer
    from ..protocols import is_noisy
    from ..targets import build

    t = task["target"]
    target = build(task_spec(task), reuse=True)
    optimum = None
    if t["kind"] == "simulated":
        optimum = target.clean.max_response
        ref = optimum if t["reference_max"] == "optimum" else t["reference_max"]
    else:
        ref = t["reference_max"]
    scorer = target.scorer
    opt = task["optimizer"]
    params, config = dict(opt["params"]), {}
    if target.data is not None:
        store = Path(task["out"]) / RUNS_DIR / f"{task['id']}.zarr"
        decoder, params, config = prepare(target, task["decoder"], opt["name"], params, None, store=store,
                                          seed=task["seed"])
        config.pop("target", None)  # the task records its spec itself
        ref = ref if ref is not None else target.reference_max
    else:
        length, channels = getattr(target.clean, "length", None), getattr(target.clean, "channels", None)
        channels = channels if (channels or 1) > 1 else None
        spec = task["decoder"]
        if spec.split(":")[0] in ("identity", "basis"):  # cheap and stateless: no need to cache
            decoder = make_decoder(spec, length=length, channels=channels)
        else:
            decoder = _cached_decoder(spec, length, channels)
    if t.get("plausible") is not None:  # the constrained scorer of `run --plausible`, started the same way
        from ..plausible import constrain
        scorer, params = constrain(target, decoder, opt["name"], params, config, t["plausible"],
                                   t.get("plausibility_layer"), seed=task["seed"], start="init" not in opt["params"])
    optimizer = make_optimizer(opt["name"], decoder.latent_dim, seed=task["seed"],
                               noisy=is_noisy(scorer),
                               evaluations=task["budget"] // task["repeats"], **params)
    return decoder, scorer, optimizer, ref, optimum, config


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
    from ..loop import load_run, run

    out = Path(task["out"])
    store = out / RUNS_DIR / f"{task['id']}.zarr"
    with TaskLock(out / ".locks" / f"{task['id']}.lock"):
        status = store_status(store, task["budget"])
        if status == "broken":  # killed while the store was being created: nothing in it was ever committed
            store.rename(store.with_name(f"{store.name}.broken-{int(time.time())}"))
        elif status == "done":
            r = load_run(store)
            return {**summarize(r, task, None), "skipped": True, "resumed": False, "worker": where,
                    "wall_seconds": round(time.perf_counter() - t0, 3)}
        elif status == "partial":
            repair_commit_marker(store)
        resume = status == "partial"
        decoder, scorer, optimizer, ref, optimum, data_config = build_task(task)
        watchdog = Watchdog(task.get("parent_pid"))
        r = run(decoder, scorer, optimizer, budget=task["budget"], repeats=task["repeats"], seed=task["seed"],
                store=store, resume=resume, progress=False, chunk_size=task["chunk_size"], reference_max=ref,
                config={"sweep": {"task": task["id"], "target": task["target_label"],
                                  "optimizer_label": task["optimizer_label"], "noise": task["noise"]},
                        "target": task_spec(task).to_dict(), **data_config},
                callback=watchdog)
    return {**summarize(r, task, optimum), "skipped": False, "resumed": resume, "worker": where,
            "wall_seconds": round(time.perf_counter() - t0, 3)}


class Watchdog:
    """Per-generation check that the sweep process is alive: an orphaned worker stops at once.

    A SIGKILLed sweep leaves its process-pool workers behind; without this they would finish their task
    while the restarted sweep waits for the task's lock.
    """

    def __init__(self, parent_pid: int | None):
        self.parent_pid = parent_pid

    def __call__(self, generation, presentations, best):
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            raise SystemExit("the sweep process is gone: stopping after a complete generation")


class TaskLock:
    """An exclusive lock file per task (fcntl; a no-op where fcntl does not exist): two sweeps on one
    folder never write one store."""

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
