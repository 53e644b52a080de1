"""The sweep in the calling process: tasks made from the config, finished ones skipped, the rest kept in
flight on an executor, each result recorded in the index as it comes back, dead workers' tasks retried."""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import traceback
from pathlib import Path

from ..errors import UserError
from .config import load_config, make_tasks, model_path, validate
from .executors import Backend
from .folder import CONFIG_FILE, RUNS_DIR, Index, SweepResult, atomic_write_json, now, store_attrs, store_status
from .tasks import run_task


def sweep(config, out_dir, executor=None, scheduler: str | None = None, workers: int | None = None,
          progress: bool = True, plausible: float | None = None) -> SweepResult:
    """Run every task of a sweep config (dict or TOML path, see :func:`~xdream_ts.sweep.load_config`)
    into ``out_dir``; resumable.

    executor   None (processes, or dask when ``scheduler`` is given), 'processes', 'dask', 'serial', or a
               ``concurrent.futures.Executor``
    scheduler  address of a Dask scheduler (tcp://HOST:8786); 'dask' without it starts a LocalCluster
    workers    processes (default: CPU count); for a remote scheduler, tasks kept in flight
    plausible  a quantile: every reference and onnx target that names none searches under plausibility
               (``sweep --plausible``; per target: ``plausible = 0.99`` in its table)
    Returns a :class:`SweepResult`; failed tasks are in it (and in index.json), never raised.

    The folder::

        OUT/sweep.json       the resolved configuration
        OUT/index.json       one entry per task (see :class:`~xdream_ts.sweep.folder.Index`), rewritten
                             atomically as tasks finish
        OUT/runs/ID.zarr     one run store per task, ID named from the task's parameters (+ a short hash)
        OUT/.locks/ID.lock   held by the worker running the task (two sweeps never write one store)

    Re-running a sweep on the same folder skips finished runs, resumes interrupted ones exactly
    (``xdream_ts.run(..., resume=True)``) and retries failed ones; a finished run on another version of
    its model file (same path) makes it refuse. A task that fails is recorded (traceback in the index, a
    summary line at the end); it never stops the others.
    """
    import multiprocessing as mp
    if getattr(mp.current_process(), "_inheriting", False):
        # a spawned worker is re-importing the calling script, which called sweep() at import time
        raise UserError("sweep() was called while a worker process imported your script: put the call under "
                        "`if __name__ == '__main__':` (worker processes re-import the main module)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers must be a positive integer, got {workers!r}")
    cfg = load_config(config, plausible=plausible)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: the sweep output must be a folder (--out)")
    validate(cfg)
    tasks = make_tasks(cfg, out)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, cfg)
    index = Index(out, cfg, tasks)

    from ..loop import model_digests
    todo, digests, stale = [], {}, []
    for t in tasks:
        e = index.data["tasks"][t["id"]]
        if e["status"] == "done" and store_status(out / e["store"], t["budget"]) == "done":
            if t["target"]["kind"] in ("onnx", "reference"):
                # a finished task on other weights under the same path is not this sweep's result
                path = model_path(t["target"])
                if path not in digests:
                    digests[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                was = model_digests((store_attrs(out / e["store"]) or {}).get("config", {}).get("scorer"))
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
        return SweepResult(out, index.data)
    backend = Backend(executor, scheduler, workers)
    try:
        drive(backend, todo, index, progress)
    finally:
        backend.close()
        index.write()
    return SweepResult(out, index.data)


def drive(backend: Backend, todo: list[dict], index: Index, progress: bool) -> None:
    """Keep ``backend.slots`` tasks in flight; record each result as it comes back.

    A worker process that dies (segfault, out of memory, os._exit) breaks a process pool, and every
    task in flight with it. Those tasks are retried one at a time in a fresh pool, where a second death
    is attributable: that task is marked failed, the others go on.
    """
    from ..progress import progress_bar
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
                             started_at=now())
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
                    res.update(error=None, traceback=None, budget_done=t["budget"], finished_at=now())
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
