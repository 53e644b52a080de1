"""The lab rig service: ``xdream-ts rig --config FILE`` runs a search as an HTTP service on 127.0.0.1.

A real experiment inverts the loop: the rig (the program that shows stimuli to a neuron or a sensor
and measures it) decides when to present. So the search waits for it:

    POST /blocks      {"max": N}  -> {"generation", "stimuli": [{"id", "series"}], "done", "wait_s"}
    POST /responses   {"responses": [{"id", "value"}]}  (partial, late, duplicated, or never)
    GET  /status      progress and counters          GET /health   liveness (no token)
    GET  /openapi.json, /docs                         the API, machine- and human-readable

Each generation's presentations (population x repeats) are handed out in blocks, the repeats
interleaved in a random order seeded by (seed, generation). A response is matched by id
(``g{generation}-p{member}-r{repeat}``); the first response to an id wins, later ones are counted as
duplicates; a response to a generation already closed is counted as late and ignored; ``"value":
null`` records a presentation that gave no response. A presentation unanswered ``timeout_s`` after it
was handed out becomes NaN (a missing response), and once every presentation is answered or timed out
the generation is complete: the optimizer is told the mean over repeats and the generation goes into
the run store, exactly as ``xdream_ts.loop.run`` writes it (same arrays, optimizer state, commit
marker).

Either side can crash. Responses to the open generation are also written, atomically, to
``OUT.pending.json`` as they arrive. A restarted service reopens the store, restores the optimizer from
the last complete generation, asks it again (the same codes: its RNG is restored too), reloads the
responses already received for that generation and hands out the rest again. A restarted rig just asks
for blocks again; what it had been handed and never answered times out.

Config (TOML; a ``[rig]`` table or top-level keys)::

    decoder = "basis:16"      # as `xdream-ts run --decoder` ("auto" with `data`: fitted on them)
    data = "rig_series.npy"   # optional: real series of the rig (their units set the stimulus space)
    length = 200              # series length (and channels = C for multichannel series)
    optimizer = "genetic"
    budget = 2000             # presentations, every repeat counts
    repeats = 2
    seed = 0
    out = "runs/rig.zarr"     # run store; an existing one is resumed
    timeout_s = 30            # seconds a presentation may stay unanswered
    block_size = 20           # default (and max 10000) stimuli per block
    host = "127.0.0.1"
    port = 8750
    token_env = "RIG_TOKEN"   # optional: clients send "Authorization: Bearer $RIG_TOKEN"

fastapi and uvicorn are imported when the service starts: ``import xdream_ts`` stays light.
"""

import hmac
import json
import logging
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

log = logging.getLogger("xdream_ts.rig")

ID_PATTERN = r"^g(\d{1,9})-p(\d{1,6})-r(\d{1,6})$"
_ID = re.compile(ID_PATTERN)
MAX_BLOCK = 10_000
MAX_RESPONSES = 100_000


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------
@dataclass
class RigConfig:
    decoder: str = "basis"
    length: int | None = None
    channels: int | None = None
    optimizer: str = "genetic"
    budget: int = 1000
    repeats: int = 1
    seed: int = 0
    out: str = ""
    timeout_s: float = 30.0
    block_size: int = 20
    host: str = "127.0.0.1"
    port: int = 8750
    token_env: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    optimizer_params: dict = field(default_factory=dict)
    data: str | None = None        # the real series the rig measures: they set the stimulus space and decoder

    def validate(self) -> "RigConfig":
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"rig config: {name} must be a positive integer, got {v!r}")
        for name in ("budget", "repeats", "block_size", "max_body_bytes"):
            positive_int(name)
        if self.block_size > MAX_BLOCK:
            raise UserError(f"rig config: block_size {self.block_size} is above {MAX_BLOCK}")
        if not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0:
            raise UserError(f"rig config: timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if not self.out:
            raise UserError("rig config: `out` (the run store, e.g. \"runs/rig.zarr\") is required: "
                            "it is what a restarted service resumes from")
        if not isinstance(self.port, int) or not 0 <= self.port < 65536:
            raise UserError(f"rig config: port {self.port!r} is not a TCP port")
        return self


def load_config(path, **overrides) -> RigConfig:
    """Read a rig config TOML (a [rig] table or top-level keys); ``overrides`` (not None) win."""
    from .targets import load_toml
    data = load_toml(path, table="rig")
    known = set(RigConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"rig config {path}: unknown keys {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return RigConfig(**data).validate()


# ---------------------------------------------------------------------------------------------------
# The search, steppable: one open generation at a time
# ---------------------------------------------------------------------------------------------------
class RigError(Exception):
    """A request the service refuses (HTTP 400): the message says why."""


@dataclass
class _Generation:
    asked: Any                   # the session's Generation: index, codes (P, d), series (n, [C,] L), n
    order: np.ndarray            # (n * R,) flat index r * n + p, seeded random order
    values: np.ndarray           # (n, R) observed; NaN until answered
    answered: np.ndarray         # (n, R) bool
    deadline: np.ndarray         # (n, R) monotonic time a presentation times out (inf: not handed out)
    cursor: int = 0              # next position in `order` to hand out

    @property
    def g(self) -> int:
        return self.asked.index

    @property
    def n(self) -> int:
        return self.asked.n

    @property
    def codes(self) -> np.ndarray:
        return self.asked.codes

    @property
    def series(self) -> np.ndarray:
        return self.asked.series


class RigSearch:
    """The loop of ``xdream_ts.loop.run``, driven from outside: hand out stimuli, take responses.

    Not thread-safe by itself: the service calls it under one lock.
    """

    def __init__(self, config: RigConfig, clock=time.monotonic):
        from .decoders import make_decoder
        from .loop import Session
        from .optimizers import make_optimizer

        self.config, self.clock = config.validate(), clock
        # with data, the decoder ('auto': fitted on them, cached beside the store) and the stimulus units are
        # theirs; the rig cannot rank them up front (it measures only what it is handed), so no data start
        decoder = make_decoder(config.decoder, length=config.length, channels=config.channels, data=config.data,
                               cache_dir=Path(config.out).parent if config.data else None)
        params = dict(config.optimizer_params)
        noisy = bool(params.pop("noisy", True))  # a measured neuron or sensor: never trust one lucky response
        optimizer = make_optimizer(config.optimizer, decoder.latent_dim, seed=config.seed, noisy=noisy,
                                   evaluations=int(config.budget) // int(config.repeats), **params)
        self.path = Path(config.out)
        self.pending_path = self.path.with_name(self.path.name + ".pending.json")
        if not self.path.exists():
            # A new run: responses saved for a store that is gone must not leak into it.
            self.pending_path.unlink(missing_ok=True)
        # The loop's own session: the same store, resume and commit as `xdream_ts.loop.run`; the rig
        # presents the stimuli itself, so it calls ask and tell and never present. Every generation is on
        # disk before the next is handed out (nothing to gain from write-behind at a rig's pace).
        self.session = Session(decoder, None, optimizer, int(config.budget), repeats=int(config.repeats),
                               seed=config.seed, store=self.path, resume=True, write_behind=False,
                               config={"scorer": {"name": "rig", "timeout_s": config.timeout_s,
                                                  "token_env": config.token_env},
                                       "objective": None, "reference_max": None})
        if self.session.store is not None and self.session.cfg.get("seed") != config.seed:
            raise UserError(f"cannot resume {self.path}: it was run with seed {self.session.cfg.get('seed')}; "
                            "use the same config, or a new `out`")
        self.repeats, self.budget = self.session.repeats, self.session.budget
        self.counters = {"accepted": 0, "duplicates": 0, "late": 0, "missing": 0, "issued": 0}
        if self.session.store is not None:
            self.counters.update(self.session.store.attrs.get("rig_counters") or {})
        self.done = self.session.done and bool(self.session.store is not None and self.session.store.attrs.get("complete"))
        self.current: _Generation | None = None
        if not self.done:
            self._ask()

    @property
    def g(self) -> int:
        return self.session.g

    @property
    def presentations(self) -> int:
        return self.session.presentations

    def _ask(self) -> None:
        """Open the next generation (or finish the run)."""
        asked = self.session.ask()
        if asked is None:
            return self._finish()
        n, R = asked.n, self.repeats
        order = np.random.default_rng([int(self.config.seed), asked.index, 0x51A]).permutation(n * R)
        gen = _Generation(asked, order, np.full((n, R), np.nan), np.zeros((n, R), bool), np.full((n, R), np.inf))
        self.current = gen
        self._load_pending(gen)

    def _finish(self) -> None:
        self.current, self.done = None, True
        if self.session.store is not None:
            self.session.finish({"rig_counters": dict(self.counters)})
        self.pending_path.unlink(missing_ok=True)

    # -- the pending file: responses to the open generation survive a service crash --------------------
    def _save_pending(self) -> None:
        gen = self.current
        if gen is None:
            return
        p, r = np.nonzero(gen.answered)
        answers = {f"g{gen.g}-p{pi}-r{ri}": (None if np.isnan(gen.values[pi, ri]) else float(gen.values[pi, ri]))
                   for pi, ri in zip(p.tolist(), r.tolist())}
        text = json.dumps({"generation": gen.g, "codes_sha": _digest(gen.codes), "responses": answers,
                           "counters": self.counters})
        tmp = self.pending_path.with_name(self.pending_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.pending_path)  # atomic: a crash leaves the old file or the new one

    def _load_pending(self, gen: _Generation) -> None:
        if not self.pending_path.exists():
            return
        try:
            saved = json.loads(self.pending_path.read_text())
        except ValueError:
            log.warning("rig: %s is unreadable; the open generation starts without its earlier responses",
                        self.pending_path)
            return
        if saved.get("generation") != gen.g or saved.get("codes_sha") != _digest(gen.codes):
            return  # left over from another generation: the store is the truth
        for key, value in (saved.get("responses") or {}).items():
            m = _ID.match(key)
            if m and int(m[2]) < gen.n and int(m[3]) < self.repeats:
                p, r = int(m[2]), int(m[3])
                gen.answered[p, r] = True
                gen.values[p, r] = np.nan if value is None else float(value)
        self.counters.update(saved.get("counters") or {})
        log.info("rig: resumed generation %d with %d responses already in", gen.g, int(gen.answered.sum()))

    # -- the API -------------------------------------------------------------------------------------
    def next_block(self, max_n: int | None = None) -> dict:
        """Hand out up to ``max_n`` presentations of the open generation, in its seeded random order."""
        self.tick()
        max_n = self.config.block_size if max_n is None else int(max_n)
        if not 1 <= max_n <= MAX_BLOCK:
            raise RigError(f"max must be between 1 and {MAX_BLOCK}, got {max_n}")
        if self.done or self.current is None:
            return {"generation": None, "stimuli": [], "done": True, "wait_s": 0.0}
        gen, now = self.current, self.clock()
        stimuli = []
        while gen.cursor < len(gen.order) and len(stimuli) < max_n:
            flat = int(gen.order[gen.cursor])
            gen.cursor += 1
            r, p = divmod(flat, gen.n)
            if gen.answered[p, r]:
                continue  # answered before a service restart: not shown again
            gen.deadline[p, r] = now + self.config.timeout_s
            stimuli.append({"id": f"g{gen.g}-p{p}-r{r}", "series": gen.series[p].tolist()})
        self.counters["issued"] += len(stimuli)
        wait = 0.0
        if not stimuli:  # everything is out: come back when a response or a timeout can close it
            waiting = gen.deadline[~gen.answered]
            wait = float(min(1.0, max(0.05, waiting.min() - now))) if waiting.size else 0.05
        return {"generation": gen.g, "stimuli": stimuli, "done": False, "wait_s": round(wait, 3)}

    def post_responses(self, items: list[tuple[str, float | None]]) -> dict:
        """Record responses by id. Unknown ids refuse the whole request (nothing recorded)."""
        parsed, late, unknown = [], 0, []
        gen = self.current
        for key, value in items:
            m = _ID.match(key)
            if not m:
                unknown.append(key)
                continue
            g, p, r = int(m[1]), int(m[2]), int(m[3])
            if g < self.g:
                late += 1
            elif gen is None or g > gen.g or p >= gen.n or r >= self.repeats:
                unknown.append(key)
            else:
                if value is not None and not math.isfinite(value):
                    raise RigError(f"response {key}: value {value} is not finite; send null for no response")
                parsed.append((p, r, value))
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            what = f"generation {gen.g} has {gen.n} members x {self.repeats} repeats" if gen else "the run is complete"
            raise RigError(f"unknown stimulus ids: {shown} ({what}); nothing was recorded")
        accepted = duplicates = 0
        for p, r, value in parsed:
            if gen.answered[p, r]:
                duplicates += 1  # the first response wins
                continue
            gen.answered[p, r] = True
            gen.values[p, r] = np.nan if value is None else float(value)
            accepted += 1
        self.counters["accepted"] += accepted
        self.counters["duplicates"] += duplicates
        self.counters["late"] += late
        if accepted:
            self._save_pending()
        g_before = self.g
        self.tick()
        return {"accepted": accepted, "duplicates": duplicates, "late": late, "generation": g_before,
                "generation_complete": self.g > g_before}

    def tick(self) -> bool:
        """Close the open generation when every presentation is answered or timed out; True if closed."""
        gen = self.current
        if gen is None:
            return False
        if not gen.answered.all():
            if gen.cursor < len(gen.order):
                return False  # not everything has been handed out yet
            if (gen.deadline[~gen.answered] > self.clock()).any():
                return False
        self._tell(gen)
        self._ask()
        return True

    def _tell(self, gen: _Generation) -> None:
        """The loop's bookkeeping for one generation: the session tells the optimizer and commits it."""
        missing = int((~gen.answered).sum())
        self.counters["missing"] += missing
        best = self.session.tell(gen.asked, gen.values.copy(), attrs={"rig_counters": dict(self.counters)})
        log.info("rig: generation %d complete: %d presentations, %d unanswered (NaN), generation best %.4g; %d of %d "
                 "presentations done", gen.g, gen.n * self.repeats, missing, best, self.presentations, self.budget)
        self.current = None

    def status(self) -> dict:
        self.tick()
        gen = self.current
        return {"generation": gen.g if gen else None, "generations_completed": self.g,
                "presentations": self.presentations, "budget": self.budget, "repeats": self.repeats,
                "population": int(len(gen.codes)) if gen else None,
                "handed_out": int(np.isfinite(gen.deadline).sum()) if gen else 0,
                "answered": int(gen.answered.sum()) if gen else 0,
                "to_hand_out": int(len(gen.order) - gen.cursor) if gen else 0,
                "done": self.done, "store": str(self.path), "counters": dict(self.counters)}


def _digest(codes: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(codes, dtype=np.float64).tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------
def create_app(config: RigConfig, tick_s: float = 0.1):
    """The FastAPI app around one RigSearch (built here: the store is opened or resumed now)."""
    from contextlib import asynccontextmanager
    from typing import Annotated, Optional

    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, Field

    token = None
    if config.token_env:
        token = os.environ.get(config.token_env)
        if not token:
            raise UserError(f"rig config: token_env = {config.token_env!r} but that environment variable is not set: "
                            "export the token in it (clients send `Authorization: Bearer TOKEN`)")
    search = RigSearch(config)
    lock = threading.Lock()
    stop = threading.Event()

    def ticker():  # closes generations whose last presentations timed out, even when nobody asks
        while not stop.wait(tick_s):
            with lock:
                try:
                    search.tick()
                except Exception:  # a bug must not silently stop the ticker: log it, keep serving
                    log.exception("rig: closing a generation failed")

    @asynccontextmanager
    async def lifespan(app):
        thread = threading.Thread(target=ticker, name="rig-ticker", daemon=True)
        thread.start()
        yield
        stop.set()
        thread.join(timeout=5)

    bearer = HTTPBearer(auto_error=False)

    def authorised(cred: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer)]) -> None:
        if token is None:
            return
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    class BlockRequest(BaseModel):
        max: int = Field(default=config.block_size, ge=1, le=MAX_BLOCK, description="most stimuli to hand out")

    class Stimulus(BaseModel):
        id: str = Field(description="g{generation}-p{member}-r{repeat}: post the response under this id")
        series: list = Field(description="the series to present: [length] or [channels][length]")

    class Block(BaseModel):
        generation: Optional[int] = None
        stimuli: list[Stimulus]
        done: bool = Field(description="true once the budget is spent: stop asking")
        wait_s: float = Field(description="when no stimuli are handed out: seconds to wait before asking again")

    class Response(BaseModel):
        id: str = Field(pattern=ID_PATTERN, description="the stimulus id")
        value: Optional[float] = Field(allow_inf_nan=False, description="the response; null: presented, no response")

    class Responses(BaseModel):
        responses: list[Response] = Field(min_length=1, max_length=MAX_RESPONSES)

    class Recorded(BaseModel):
        accepted: int
        duplicates: int = Field(description="ids already answered: the first response won")
        late: int = Field(description="responses to generations already closed: ignored")
        generation: int
        generation_complete: bool

    app = FastAPI(title="xdream-ts rig", version="1", lifespan=lifespan,
                  description="Hand out stimuli to a lab rig and take its responses; see xdream_ts/rig.py.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # FastAPI's default echoes the offending input, which fails for NaN (not JSON): location + message only.
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()[:20]]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return JSONResponse(status_code=422, content={
            "detail": errors, "message": f"{'.'.join(first['loc'])}: {first['msg']}"})

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > config.max_body_bytes):
            return JSONResponse(status_code=413, content={
                "detail": f"request body of {size} bytes is above the limit of {config.max_body_bytes}: "
                          "post responses in smaller batches"})
        return await call_next(request)

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/status", dependencies=[Depends(authorised)])
    def status() -> dict:
        with lock:
            return search.status()

    @app.post("/blocks", response_model=Block, dependencies=[Depends(authorised)])
    def blocks(req: Optional[BlockRequest] = None) -> dict:
        with lock:
            try:
                return search.next_block(req.max if req else None)
            except RigError as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from None

    @app.post("/responses", response_model=Recorded, dependencies=[Depends(authorised)])
    def responses(req: Responses) -> dict:
        with lock:
            try:
                return search.post_responses([(r.id, r.value) for r in req.responses])
            except RigError as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from None

    # The live view (xdream_ts/watch.py) of this run store, under /watch: the page of `xdream-ts watch OUT`,
    # reading the store from disk like any other watcher (no lock shared with the search), same token.
    from .watch import create_app as create_watch_app
    app.mount("/watch", create_watch_app(search.path, token=token, wait=True))

    app.state.search = search
    app.state.lock = lock
    return app


def serve(config: RigConfig) -> None:
    import uvicorn
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    app = create_app(config)
    search = app.state.search
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.token_env:
        log.warning("rig: listening on %s without a token: anyone who reaches it can post responses; "
                    "set token_env", config.host)
    log.info("rig: %s, %s; generation %d, %d of %d presentations done; http://%s:%d/docs",
             config.out, "complete" if search.done else "running", search.g, search.presentations,
             search.budget, config.host, config.port)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")


def cmd_rig(args) -> int:
    config = load_config(args.config, host=args.host, port=args.port)
    serve(config)
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("rig", help="run a search as an HTTP service that a lab rig drives",
                              description="Serve a search to a lab rig: POST /blocks hands out stimuli, POST "
                                          "/responses takes the measured responses; every finished generation "
                                          "goes into the run store, and a restarted service resumes it. "
                                          "The API: http://HOST:PORT/docs. Config keys: see xdream_ts/rig.py.")
    p.add_argument("--config", required=True, help="rig TOML file (decoder, length, optimizer, budget, repeats, "
                                                   "seed, out, timeout_s, block_size, host, port, token_env)")
    p.add_argument("--host", help="address to listen on (default from the config, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default from the config, 8750)")
    p.set_defaults(func=cmd_rig)


__all__ = ["RigConfig", "RigSearch", "RigError", "load_config", "create_app", "serve", "add_cli"]
