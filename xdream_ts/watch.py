"""`xdream-ts watch RUN_OR_SWEEP`: a live view of a search in the browser, read from its store alone.

    xdream-ts watch runs/ford.zarr              # http://127.0.0.1:8760/, updates itself every second
    xdream-ts watch runs/next.zarr --wait       # a run about to start: its store need not exist yet
    xdream-ts watch sweeps/units --port 9000    # a sweep: a table of tasks, each one click from its run page

The page shows, for a run: best and median score per generation against presentations (clean beside
observed when the target is simulated), the current best stimulus (the run's reported one once it is
complete) beside the best real series of the target when it is known (``report.real_series_for``), the
best stimulus at log-spaced generations, presentations against the budget, missing responses, and
plausibility when the run measured it. For a sweep: every task with its state, progress and a small
trajectory. ``GET /api/state`` (``?run=TASK`` for a task of a sweep) returns what the page draws, as JSON;
``generation`` there is the number of committed generations (the last one shown is ``generation - 1``).

It only reads: the store is opened read-only, each poll reads only the generations committed since the
previous one, and nothing couples it to the process writing the store (which may be dead, resumed later,
or on another machine that copied the store here). A generation counts once the writer's commit marker
(``generations_completed``, store.py) says so, so a half-written generation is never shown; a resumed run
simply continues, and a store replaced by another run at the same path is read again from the start.

The rig service (``xdream-ts rig``) mounts the same page under ``/watch`` (``create_app``).

Security: it binds 127.0.0.1 unless told otherwise. ``--token-env NAME`` protects ``/api/*`` with the bearer
token in that variable; the page itself holds no data and reads the token from the URL fragment
(``http://HOST:PORT/#token=...``, which browsers never send to the server) into the tab's session storage.

fastapi, uvicorn and zarr are imported when the view starts: ``xdream-ts --help`` stays fast.
"""
# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at runtime
import errno
import hmac
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from html import escape as html_escape
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import UserError

DEFAULT_PORT = 8760
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SPARK_POINTS = 60          # points of a task's trajectory in a sweep table
ASSETS = {                 # what /assets/ may serve: the page and the vendored charting library (uPlot, MIT)
    "uPlot.iife.min.js": ("uplot/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("uplot/uPlot.min.css", "text/css"),
    "uPlot.LICENSE": ("uplot/LICENSE", "text/plain"),
}
PAGE = "watch/index.html"


# ---------------------------------------------------------------------------------------------------
# Reading a run store, incrementally
# ---------------------------------------------------------------------------------------------------
def _floats(values) -> list:
    """A numpy vector as JSON numbers, None where it is NaN or infinite (JSON has no NaN)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).ravel().tolist()]


def _channels(row) -> list[list]:
    """One presented series, (L,) or (C, L), as a list of channels for the charts."""
    x = np.asarray(row, dtype=np.float64)
    return [_floats(c) for c in (x[None] if x.ndim == 1 else x.reshape(-1, x.shape[-1]))]


def _stamp(path: Path):
    """What changes whenever the writer commits: zarr.json is rewritten (atomically) by every commit marker."""
    try:
        s = (path / "zarr.json").stat()
    except OSError:
        return None
    return (s.st_mtime_ns, s.st_size, s.st_ino)


def _being_created(path: Path) -> bool:
    """A group whose attributes are still empty: RunStore.create writes them right after the arrays."""
    try:
        return not json.loads((path / "zarr.json").read_text()).get("attributes")
    except (OSError, ValueError):
        return True


def _nan_reduce(fn, rows: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a generation whose responses are all missing is NaN, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(rows, axis=1)


class RunReader:
    """A read-only, incremental view of one run store (not thread-safe: the app calls it under a lock).

    ``poll()`` re-opens the store only when its commit marker changed, and reads only the generations
    committed since the last poll; ``state()`` is what ``/api/state`` returns. ``wait=True``: a store that
    does not exist yet (a rig before its first generation) reads as empty instead of an error.
    """

    def __init__(self, path, reference_data=None, wait: bool = False):
        self.path = Path(path)
        self.reference_data = reference_data
        self.wait = wait
        self._reset()

    def _reset(self) -> None:
        self._identity = None
        self._stamp = None
        self._attrs: dict = {}
        self.g = 0
        self._arr: dict[str, np.ndarray | None] = {}
        self._rows: dict[tuple[int, int], list] = {}   # committed series rows never change: read each once
        self._real = None
        self._state = None
        self._updated = None

    # -- reading -------------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Catch up with the store; True when something new was committed."""
        from .store import RunStore

        stamp = _stamp(self.path)
        if stamp is not None and stamp == self._stamp:
            return False
        if stamp is None and self.wait:
            return False  # not created yet (or its folder made, zarr.json not yet written)
        try:
            store = RunStore.open(self.path)  # read-only; one line (UserError) when it is not a run store
        except UserError:
            if self.wait and _being_created(self.path):
                return False
            raise
        attrs = store.attrs
        if "generations_completed" not in attrs:  # created this instant, not committed yet
            return False
        cfg = attrs.get("config") or {}
        # A resume may raise the budget; anything else changing means another run now lives at this path.
        identity = json.dumps([{k: v for k, v in cfg.items() if k != "budget"}, attrs.get("seed"),
                               attrs.get("population_size"), attrs.get("repeats")], sort_keys=True, default=str)
        g = store.generations_completed
        if identity != self._identity or g < self.g:
            self._reset()
            self._identity = identity
        if g > self.g:
            self._append(store, self.g, g)
        self.g, self._attrs, self._stamp = g, attrs, stamp
        self._updated = stamp[0] / 1e9 if stamp else None
        # the run's own combination of several targets into one clean objective (loop.Run knows how)
        self._arr["clean_objective"] = self._run().clean_objective if self.g else None
        self._state = None
        return True

    def _append(self, store, g0: int, g: int) -> None:
        """Read generations g0..g-1 (committed: their chunks were written before the marker)."""
        group = store.group
        new = {name: (np.asarray(group[name][g0:g]) if name in group else None)
               for name in ("objective", "scores", "clean_scores", "n_evaluated")}
        for name, rows in new.items():
            old = self._arr.get(name)
            self._arr[name] = rows if old is None or rows is None else np.concatenate([old, rows])

    def _row(self, g: int, p: int) -> list:
        if (g, p) not in self._rows:
            import zarr
            grp = zarr.open_group(str(self.path), mode="r")
            self._rows[(g, p)] = _channels(grp["series"][g, p])
        return self._rows[(g, p)]

    def _run(self):
        """The committed prefix as a ``loop.Run`` without its codes and series (not needed for the summary)."""
        from .loop import Run
        a = self._arr
        return Run(config=self._attrs.get("config") or {}, codes=None, series=None, scores=a["scores"],
                   objective=a["objective"], clean_scores=a.get("clean_scores"), n_evaluated=a["n_evaluated"],
                   presentations=self.presentations, complete=bool(self._attrs.get("complete")), path=self.path,
                   attrs=self._attrs)

    @property
    def repeats(self) -> int:
        return int(self._attrs.get("repeats") or (self._attrs.get("config") or {}).get("repeats") or 1)

    @property
    def presentations(self) -> int:
        # counted from the committed generations themselves, as a resume does (loop.run)
        if not self.g:
            return 0
        return int(self._arr["n_evaluated"].sum()) * self.repeats

    @property
    def budget(self) -> int | None:
        b = self._attrs.get("budget", (self._attrs.get("config") or {}).get("budget"))
        return int(b) if b is not None else None

    # -- what the page draws -------------------------------------------------------------------------
    def trajectory(self) -> dict:
        """Per committed generation: presentations so far, best and median score (observed and clean)."""
        if not self.g:
            return {"presentations": [], "best": [], "median": [], "best_so_far": [], "missing": []}
        a = self._arr
        obj, n_eval = a["objective"], a["n_evaluated"]
        shown = np.arange(obj.shape[1])[None, :] < n_eval[:, None]   # the budget may cut the last generation
        observed = np.where(shown, obj, np.nan)
        best = _nan_reduce(np.nanmax, observed)
        running = np.fmax.accumulate(best)
        scores = a["scores"][..., 0] if a["scores"].ndim == 4 else a["scores"]  # (G, P, R): first target
        missing = (np.isnan(scores) & shown[:, :, None]).sum(axis=(1, 2))
        out = {"presentations": (np.cumsum(n_eval) * self.repeats).tolist(), "best": _floats(best),
               "median": _floats(_nan_reduce(np.nanmedian, observed)), "best_so_far": _floats(running),
               "missing": [int(m) for m in missing]}
        clean = a.get("clean_objective")
        if clean is not None:
            clean = np.where(shown, clean, np.nan)
            # What the experimenter really has: the clean response of the series picked so far by its
            # observed score (under noise the best observed one is partly a lucky draw), as report.py draws.
            flat = np.where(np.isfinite(observed), observed, -np.inf)
            member = np.argmax(flat, axis=1)
            gen_best = flat[np.arange(len(flat)), member]
            before = np.concatenate([[-np.inf], np.maximum.accumulate(gen_best)[:-1]])
            picked = np.maximum.accumulate(np.where(gen_best > before, np.arange(len(flat)), 0))
            value = np.where(np.isfinite(running), clean[picked, member[picked]], np.nan)
            out["clean_best_so_far"] = _floats(value)
            out["clean_median"] = _floats(_nan_reduce(np.nanmedian, clean))
        return out

    def real(self) -> dict:
        """The best real series of the run's target (computed once per run: it may score a data set)."""
        if self._real is None:
            from .report import read_run, real_series_for
            try:
                x, score, label = real_series_for(read_run(self.path), self.reference_data)
            except UserError as exc:
                x, score, label = None, None, str(exc)
            self._real = {"series": _channels(x) if x is not None else None,
                          "score": float(score) if score is not None else None, "label": label}
        return self._real

    def state(self) -> dict:
        self.poll()
        if self._state is not None:
            return self._state
        cfg = self._attrs.get("config") or {}
        base = {"kind": "run", "path": str(self.path), "generation": self.g, "generations_completed": self.g,
                "presentations": self.presentations, "budget": self.budget, "repeats": self.repeats,
                "population": self._attrs.get("population_size"), "complete": bool(self._attrs.get("complete")),
                "updated": self._updated, "optimizer": (cfg.get("optimizer") or {}).get("name"),
                "decoder": (cfg.get("decoder") or {}).get("name"), "scorer": _scorer_label(cfg.get("scorer") or {}),
                "trajectory": self.trajectory()}
        if not self.g or not np.isfinite(self._arr["objective"]).any():
            self._state = {**base, "best_score": None, "best_clean_score": None, "relative_activation": None,
                           "reference_max": cfg.get("reference_max"), "missing_responses": 0, "stimulus": None,
                           "real": None, "gallery": [], "plausibility": None,
                           "waiting": "no generation committed yet" if not self.g else "no valid score yet"}
            return self._state
        run = self._run()
        summary = run.summary()
        g, p = run.reported_index  # the optimizer's incumbent once the run is complete, else the best observed
        obj = self._arr["objective"]
        clean = self._arr.get("clean_objective")
        stimulus = {"generation": g, "member": p, "score": float(obj[g, p]) if math.isfinite(obj[g, p]) else None,
                    "clean_score": float(clean[g, p]) if clean is not None and math.isfinite(clean[g, p]) else None,
                    "which": "reported" if self._attrs.get("incumbent") else "best observed",
                    "series": self._row(g, p)}
        from .plots import log_spaced_generations
        gallery = []
        for gg in log_spaced_generations(self.g):
            row = np.where(np.isfinite(obj[gg]), obj[gg], -np.inf)
            if not np.isfinite(row).any():
                continue
            pp = int(np.argmax(row))
            gallery.append({"generation": gg, "member": pp, "score": float(obj[gg, pp]), "series": self._row(gg, pp)})
        shown = int(self._arr["n_evaluated"].sum()) * self.repeats
        self._state = {
            **base, "best_score": summary["best_score"], "best_clean_score": summary["best_clean_score"],
            "relative_activation": summary["relative_activation"], "reference_max": summary["reference_max"],
            "missing_responses": summary["missing_responses"],
            "missing_share": summary["missing_responses"] / shown if shown else 0.0,
            "incumbent": summary["incumbent"], "stimulus": stimulus, "real": self.real(), "gallery": gallery,
            # measured by the run itself when it was constrained to be plausible (issue 16); else not shown
            "plausibility": summary.get("plausibility") or self._attrs.get("plausibility"),
            "rig_counters": self._attrs.get("rig_counters"),
        }
        return self._state

    def row(self) -> dict:
        """A sweep table's row: progress, best score and a short best-so-far trajectory (no series read)."""
        self.poll()
        t = self.trajectory()
        x, y = t["presentations"], t["best_so_far"]
        if len(x) > SPARK_POINTS:
            keep = np.unique(np.linspace(0, len(x) - 1, SPARK_POINTS).round().astype(int))
            x, y = [x[i] for i in keep], [y[i] for i in keep]
        best = next((v for v in reversed(t["best_so_far"]) if v is not None), None)
        ref = (self._attrs.get("config") or {}).get("reference_max")
        return {"generation": self.g, "presentations": self.presentations, "budget": self.budget,
                "complete": bool(self._attrs.get("complete")), "best_score": best,
                "relative_best": best / ref if best is not None and ref else None,
                "missing_responses": int(sum(t["missing"])), "spark": {"x": x, "y": y}, "updated": self._updated}


def _scorer_label(scorer: dict) -> str | None:
    if scorer.get("noise"):
        inner = scorer.get("inner") or {}
        params = ", ".join(f"{k} {v}" for k, v in scorer.items() if k in ("scale", "sigma"))
        return f"{inner.get('name') or inner.get('class')} + {scorer['noise']} noise{f' ({params})' if params else ''}"
    return scorer.get("name") or scorer.get("class")


# ---------------------------------------------------------------------------------------------------
# A sweep
# ---------------------------------------------------------------------------------------------------
class SweepReader:
    """A sweep folder: its index (rewritten atomically by the sweep) and a RunReader per task store."""

    def __init__(self, path, reference_data=None):
        from .sweep import load_sweep
        self.path = Path(path)
        self.reference_data = reference_data
        self.readers: dict[str, RunReader] = {}
        load_sweep(self.path)  # one line now when the index is not a sweep's

    def reader(self, task_id: str) -> RunReader | None:
        from .sweep import load_sweep
        entry = load_sweep(self.path).entries.get(task_id)
        if entry is None:
            return None
        if task_id not in self.readers:
            self.readers[task_id] = RunReader(self.path / entry["store"], self.reference_data, wait=True)
        return self.readers[task_id]

    def state(self) -> dict:
        from .sweep import load_sweep
        sw = load_sweep(self.path)
        tasks, counts = [], {}
        for key, e in sw.entries.items():
            p = e["params"]
            row = {"id": key, "target": p.get("target_label"), "optimizer": p.get("optimizer_label"),
                   "decoder": p.get("decoder"), "noise": p.get("noise"), "repeats": p.get("repeats"),
                   "seed": p.get("seed"), "status": e.get("status"), "error": e.get("error"),
                   "relative_activation": e.get("relative_activation")}
            reader = self.readers.setdefault(key, RunReader(self.path / e["store"], self.reference_data, wait=True))
            try:
                row.update(reader.row())
            except UserError as exc:  # a store being created right now, or broken: say so in its row
                row.update({"generation": 0, "presentations": 0, "budget": p.get("budget"), "store_error": str(exc)})
            row["budget"] = row.get("budget") or p.get("budget")
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            tasks.append(row)
        return {"kind": "sweep", "path": str(self.path), "name": sw.index.get("name"), "updated": _index_time(sw),
                "counts": counts, "tasks": tasks, "presentations": sum(t["presentations"] for t in tasks),
                "budget": sum(t["budget"] or 0 for t in tasks)}


def _index_time(sw) -> float | None:
    from .sweep import INDEX_FILE
    try:
        return (sw.path / INDEX_FILE).stat().st_mtime
    except OSError:
        return None


def open_source(source, reference_data=None, wait: bool = False):
    """A RunReader or SweepReader for a path; one line (UserError) when it is neither."""
    from .sweep import INDEX_FILE
    p = Path(source)
    if (p / INDEX_FILE).is_file():
        return SweepReader(p, reference_data)
    if not p.exists():
        if wait:
            return RunReader(p, reference_data, wait=True)
        raise UserError(f"{p} does not exist: give a run store (the .zarr folder `xdream-ts run --out` writes) "
                        "or a sweep folder (with index.json)")
    if not (p / "zarr.json").is_file():
        raise UserError(f"{p} is neither a run store (.zarr) nor a sweep folder (index.json): check the path")
    reader = RunReader(p, reference_data, wait=wait)
    reader.poll()  # not an xdream_ts store: one line now, not in the browser
    return reader


def run_state(source, reference_data=None) -> dict:
    """What ``/api/state`` returns for a run store or a sweep folder, read once."""
    return open_source(source, reference_data).state()


# ---------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------
def _asset_text(name: str) -> str:
    return resources.files("xdream_ts.assets").joinpath(name).read_text(encoding="utf-8")


def create_app(source, token: str | None = None, reference_data=None, wait: bool = False, interval_s: float = 1.0):
    """The FastAPI app of the live view of one run store or sweep folder.

    token: bearer token required on /api/* (None: open). wait: the store may not exist yet (the rig mounts
    the view before its first generation). Mount it anywhere (``app.mount("/watch", create_app(...))``):
    the page finds its API relative to where it is served.
    """
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    reader = open_source(source, reference_data, wait=wait)
    lock = threading.Lock()
    page = _asset_text(PAGE)
    app = FastAPI(title="xdream-ts watch", version="1", docs_url=None, redoc_url=None,
                  description="A live, read-only view of a run store or a sweep.")

    def check(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token: open the page as "
                                "http://HOST:PORT/#token=TOKEN", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")  # "/watch" when the rig mounts it
        html = (page.replace("{{ROOT_ATTR}}", html_escape(root)).replace("{{ROOT}}", json.dumps(root))
                .replace("{{INTERVAL_MS}}", str(int(interval_s * 1000)))
                .replace("{{TITLE}}", html_escape(Path(str(source)).name)))
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/assets/{name}")
    def asset(name: str):
        if name not in ASSETS:
            raise HTTPException(status_code=404, detail=f"no asset {name}")
        path, media = ASSETS[name]
        return Response(_asset_text(path), media_type=media, headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/state")
    def state(request: Request, run: str | None = None):
        check(request)
        with lock:
            try:
                if run is None:
                    body = reader.state()
                elif isinstance(reader, SweepReader):
                    r = reader.reader(run)
                    if r is None:
                        raise HTTPException(status_code=404, detail=f"no task {run} in this sweep")
                    body = {**r.state(), "task": run, "sweep": str(reader.path)}
                else:
                    raise HTTPException(status_code=404, detail="?run= names a task of a sweep; this is one run")
            except UserError as exc:  # e.g. the store was deleted while we watch: say so on the page
                return JSONResponse(status_code=503, content={"detail": str(exc)})
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    app.state.reader = reader
    return app


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one line (uvicorn would log and exit)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: cannot resolve it ({exc.strerror}); use an address such as "
                        "127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop (TIME_WAIT)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use: pass another --port (or --port 0 for any free "
                            "one)") from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --host or --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Server:
    """A running live view (``serve(..., block=False)``): ``url``, and ``stop()``."""

    def __init__(self, server, thread, url: str):
        self._server, self._thread, self.url = server, thread, url

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


def serve(source, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None, reference_data=None,
          interval_s: float = 1.0, block: bool = True, wait: bool = False, log_level: str = "warning",
          announce=None):
    """Serve the live view. ``block=False``: in a background thread (a notebook, a test); returns a Server.

    The store is checked first, then the port is taken (each failure one line, a UserError); ``announce``
    is called with the page's URL once both are fine, before serving.
    """
    import uvicorn

    app = create_app(source, token=token, reference_data=reference_data, wait=wait, interval_s=interval_s)
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    if announce is not None:
        announce(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
    if not block:
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="xdream-watch", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        return Server(server, thread, url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return url


def cmd_watch(args) -> int:
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise UserError(f"--token-env {args.token_env}: that environment variable is not set: export the token "
                            "in it, or drop --token-env")
    if not args.interval > 0:
        raise UserError(f"--interval must be a positive number of seconds, got {args.interval}")
    if not 0 <= args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port (0 to 65535; 0: any free port)")
    if args.host not in LOOPBACK:
        print(f"xdream-ts watch: warning: listening on {args.host}: anyone who reaches it can read the run"
              f"{'' if token else '; set --token-env to require a token'}", file=sys.stderr)

    def announce(url):
        # the token itself is never printed: the user has it in the variable
        suffix = f"#token=<the token in ${args.token_env}>" if token else ""
        print(f"watch: {args.source} at {url}{suffix} (Ctrl-C to stop)", flush=True)

    try:
        serve(args.source, host=args.host, port=args.port, token=token, reference_data=args.reference_data,
              interval_s=args.interval, wait=args.wait, announce=announce)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: stopping a view is a normal exit
        pass
    print("watch: stopped (the store was only read)", flush=True)
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("watch", help="watch a run or a sweep in the browser while it runs",
                              description="Serve a page that follows a run store (or a sweep folder) as it grows: "
                                          "score per generation, the best stimulus beside the best real series, "
                                          "stimuli at log-spaced generations, presentations, missing responses. "
                                          "GET /api/state returns the same as JSON. Read-only.")
    p.add_argument("source", metavar="RUN_OR_SWEEP", help="a run store (.zarr) or a sweep folder")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; another one "
                                                       "shows the run to the network: use --token-env)")
    p.add_argument("--token-env", help="environment variable holding a bearer token that /api/* requires; open "
                                       "the page as http://HOST:PORT/#token=TOKEN")
    p.add_argument("--reference-data", help="UCR file or folder of real series, for the best real series of a "
                                            "target other than the shipped model or a simulated neuron")
    p.add_argument("--wait", action="store_true", help="the run store may not exist yet (a run just started, or "
                                                        "about to): show it once its first generation is committed")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between page updates (default 1)")
    p.set_defaults(func=cmd_watch)


__all__ = ["RunReader", "SweepReader", "open_source", "run_state", "create_app", "serve", "Server", "add_cli"]
