"""Remote scorer: the score of a series comes from an inference server over HTTP.

Two protocols:

- ``mode='v2'``: the Open Inference Protocol (KServe v2; MLServer, Triton, Seldon, TorchServe's KServe
  mode). ``POST {url}/v2/models/{model}/infer`` with::

      {"inputs": [{"name": INPUT, "shape": [n, (channels,) length], "datatype": "FP32", "data": [...]}],
       "outputs": [{"name": OUTPUT}]}

  in the layout the model's metadata declares (``[-1, 427, 1]`` is channels-last: ``[n, 427, 1]``),
  read by the ONNX scorer's rules; ``layout=`` settles an ambiguous shape such as ``[-1, 8, 8]``.

  The named output (the first one when ``output`` is None) is reshaped by its ``shape`` to (n, k) and
  column ``unit`` is the score (a list of units gives (n, k) scores, summed into the objective).
- ``mode='json'``: any JSON endpoint. ``url`` is the full URL; ``request_template`` is a JSON value in
  which the string ``"$series"`` is replaced by the list of series (default ``{"series": "$series"}``);
  ``scores_path`` (e.g. ``'result.scores'``; integers index lists) points to the n scores (or n rows
  of k, indexed by ``unit``) in the reply.

Faults are part of the job, because every presentation of a real target costs time:

- series go in batches of at most ``max_batch`` over one keep-alive ``httpx.Client``;
- 408, 425, 429, 5xx and transport errors (refused, reset, dropped without a reply, timeouts) are
  retried ``retries`` times with exponential backoff and full jitter (``uniform(0, backoff * 2**i)``,
  capped), honouring ``Retry-After`` (seconds or an HTTP date, capped at ``max_retry_after``);
- any other 4xx is a mistake a retry cannot fix: ``UserError`` with the status and the server's
  message, one line;
- a series that never gets a score (retries exhausted, malformed JSON, a reply of the wrong shape,
  a non-finite value) becomes NaN, the loop records it as a missing response, and it is counted:
  ``missing``, ``retries``, ``failures`` (reason -> series), ``report()`` for the end of a run;
- an endpoint that gives no valid score at all for ``down_after`` batches in a row, whatever the
  cause (refused connections, a 500 to every request after its retries, replies that cannot be read),
  stops the run with one line naming the URL and the last error: missing responses are normal at a
  rig, a target that never answers is not, and a search against it would only record NaN. The run
  store keeps every completed generation and ``--resume`` continues once the endpoint is fixed.

A bearer token is read from the environment variable ``token_env`` and goes only into the client's
request headers: it is never printed, logged, stored, or part of ``describe()``/``repr``. TLS
certificates are verified by default (``verify=False`` or a CA bundle path to change that).

httpx is imported when a scorer is built, so that ``import xdream_ts`` stays light.
"""
from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from xdream_ts.adapters.onnx.layouts import LAYOUTS, fmt_dims, resolve_layout, to_layout
from xdream_ts.errors import UserError

__all__ = ["RemoteScorer", "parse_retry_after"]

RETRY_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))
_DATATYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}
_PLACEHOLDER = "$series"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # HTTP dates are GMT by definition
        when = when.replace(tzinfo=timezone.utc)
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return max(0.0, (when - now_dt).total_seconds())


_TLS = None


def _default_tls():
    # Loading the CA bundle takes 0.1-1 s; every scorer of this process shares one verifying context.
    global _TLS
    if _TLS is None:
        import httpx
        _TLS = httpx.create_ssl_context()
    return _TLS


class _BatchFailed(Exception):
    """A batch that got no usable scores; ``reason`` is what the report counts."""

    def __init__(self, reason: str, transport: bool = False, detail: str = ""):
        super().__init__(reason)
        self.reason = reason  # counted in ``failures``: the same for every batch that failed this way
        self.transport = transport
        self.detail = detail  # the server's own words, for the one line that stops a run


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(response) -> str:
    """The server's own words about a refused request (v2 servers: {"error"}, FastAPI: {"detail"})."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text or response.reason_phrase or "")
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                return _one_line(json.dumps(body[key]) if not isinstance(body[key], str) else body[key])
    return _one_line(json.dumps(body))


def _substitute(template: Any, series: list) -> tuple[Any, bool]:
    """Replace the string "$series" anywhere in a JSON value by the series list."""
    if isinstance(template, str):
        return (series, True) if template == _PLACEHOLDER else (template, False)
    if isinstance(template, dict):
        out, found = {}, False
        for k, v in template.items():
            out[k], f = _substitute(v, series)
            found |= f
        return out, found
    if isinstance(template, list):
        out, found = [], False
        for v in template:
            item, f = _substitute(v, series)
            out.append(item)
            found |= f
        return out, found
    return template, False


def _follow(reply: Any, path: str | None) -> Any:
    if not path:
        return reply
    node = reply
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise _BatchFailed(f"reply has no {path!r}")
    return node


class RemoteScorer:
    """Scores series on an inference server (Open Inference Protocol v2, or any JSON endpoint).

    url            base URL of the server (v2) or the full endpoint URL (json)
    model          v2 model name (required in v2 mode)
    output         v2 output tensor to read (default: the first output of the reply)
    unit           column of the output (int) or several (list: (n, k) scores, summed into the objective)
    timeout        seconds: one number, or (connect, read)
    retries        retries per batch after the first attempt (408/425/429/5xx, transport errors)
    backoff        base of the exponential backoff in seconds (full jitter)
    token_env      environment variable holding a bearer token (read once, never stored elsewhere)
    verify         TLS verification: True (default), False, or a CA bundle path
    length, channels   series shape the endpoint expects (for the decoder); in v2 mode read from the
                   input shape the model's metadata declares when not given, by the ONNX scorer's rules
                   (``xdream_ts.adapters.onnx.layouts.resolve_layout``: singleton axes, the smaller
                   known axis is channels, a dynamic one is the length)
    layout         the model input's layout, NCL, NLC or NL, when its declared shape is ambiguous (or
                   to override the rules); requests are sent in the layout the model declares
    input_name     v2 input tensor name (default: from the model's metadata, else "input")
    datatype       v2 datatype of the input data: FP32 (default), FP64 or FP16
    down_after     batches in a row with no valid score (any cause) that mean the endpoint is broken: stop
                   (raise it for a target whose normal missing responses can fill whole small batches)
    max_retry_after    cap on a server's Retry-After, seconds
    noisy          True when the remote target is stochastic (a neuron): noise-aware optimizers
    """

    name = "remote"

    def __init__(self, url: str, model: str | None = None, output: str | None = None,
                 unit: int | Sequence[int] = 0, mode: str = "v2", request_template: Any = None,
                 scores_path: str | None = None, max_batch: int = 64,
                 timeout: float | tuple[float, float] = (5.0, 30.0), retries: int = 5, backoff: float = 0.5,
                 token_env: str | None = None, verify: bool | str = True, length: int | None = None,
                 channels: int | None = None, input_name: str | None = None, datatype: str = "FP32",
                 down_after: int = 3, max_retry_after: float = 60.0, max_backoff: float = 30.0,
                 noisy: bool = False, layout: str | None = None):
        import httpx

        if mode not in ("v2", "json"):
            raise UserError(f"remote mode {mode!r} is unknown: use 'v2' (Open Inference Protocol) or 'json'")
        try:
            parsed = httpx.URL(str(url))
        except Exception as exc:
            raise UserError(f"remote endpoint {url!r} is not a valid URL ({exc}): use http(s)://HOST:PORT") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UserError(f"remote endpoint {url!r} is not an http(s) URL: use http(s)://HOST:PORT")
        if mode == "v2" and not model:
            raise UserError("remote v2 endpoint needs a model name (--remote-model NAME): the server's "
                            "/v2/models lists them")
        if datatype not in _DATATYPES:
            raise UserError(f"datatype {datatype!r} is not supported: use one of {', '.join(_DATATYPES)}")
        if layout is not None and str(layout).upper() not in LAYOUTS:
            raise UserError(f"unknown layout {layout!r}: use NCL (batch, channels, length), NLC or NL")
        units = [unit] if np.isscalar(unit) else list(unit)
        if not units or any(not isinstance(u, (int, np.integer)) or u < 0 for u in units):
            raise UserError(f"unit {unit!r} must be a non-negative integer or a list of them")
        if int(max_batch) < 1 or int(retries) < 0 or float(backoff) < 0 or int(down_after) < 1:
            raise UserError(f"max_batch ({max_batch}) and down_after ({down_after}) must be >= 1, "
                            f"retries ({retries}) and backoff ({backoff}) >= 0")
        if isinstance(request_template, str):
            try:
                request_template = json.loads(request_template)
            except ValueError as exc:
                raise UserError(f"request template is not valid JSON ({exc}): e.g. "
                                '{"instances": "$series"}') from None
        if mode == "json":
            request_template = {"series": _PLACEHOLDER} if request_template is None else request_template
            if not _substitute(request_template, [])[1]:
                raise UserError('request template has no "$series" placeholder: put the string "$series" '
                                "where the list of series goes")
        connect, read = (timeout, timeout) if np.isscalar(timeout) else tuple(timeout)
        if float(connect) <= 0 or float(read) <= 0:
            raise UserError(f"timeout {timeout!r} must be positive seconds: S or (connect, read)")

        self.url = str(url).rstrip("/")
        self.model, self.output, self.mode = model, output, mode
        self.units = [int(u) for u in units]
        self.unit = self.units[0] if np.isscalar(unit) else list(self.units)
        self.request_template, self.scores_path = request_template, scores_path
        self.max_batch, self.max_retries, self.backoff = int(max_batch), int(retries), float(backoff)
        self.timeout = (float(connect), float(read))
        self.token_env, self.verify = token_env, verify
        self._length, self._channels = length, channels
        self._layout = None if layout is None else str(layout).upper()
        self._spec: dict | None = None  # the declared input's layout, length, channels (resolve_layout)
        self.input_name, self.datatype = input_name, datatype
        self.down_after, self.max_retry_after, self.max_backoff = int(down_after), float(max_retry_after), float(max_backoff)
        self.noisy = bool(noisy)
        if len(self.units) > 1:
            self.target_names = [f"{output or model or 'score'}:{u}" for u in self.units]
            self.objective_name = "sum"
        self._metadata: dict | None = None
        self._input_shape: list | None = None

        headers = {"Accept": "application/json"}
        if token_env:
            token = os.environ.get(token_env)
            if not token:
                raise UserError(f"environment variable {token_env} is not set (or empty): export the "
                                "endpoint's bearer token in it")
            # The token lives only in the client's default headers: not an attribute of this object.
            headers["Authorization"] = f"Bearer {token}"
            del token
        if isinstance(verify, str):  # a CA bundle: httpx wants an SSL context (a path string is deprecated)
            import ssl
            if not os.path.isfile(verify):
                raise UserError(f"verify={verify!r}: no such CA bundle file; pass True, False or a .pem path")
            tls = ssl.create_default_context(cafile=verify)
        else:
            tls = _default_tls() if verify else False
        self._client = httpx.Client(headers=headers, verify=tls, http2=False,
                                    timeout=httpx.Timeout(connect=self.timeout[0], read=self.timeout[1],
                                                          write=self.timeout[1], pool=self.timeout[1]),
                                    limits=httpx.Limits(max_keepalive_connections=1, max_connections=1))
        self._jitter = random.Random()  # jitter only spreads retries: it never changes a score
        self.requests = 0
        self.retries = 0  # retries made (the limit per batch is max_retries)
        self.retry_reasons: Counter = Counter()
        self.missing = 0
        self.failures: Counter = Counter()
        self.scored = 0
        self._down_streak = 0

    def objective(self, scores: np.ndarray) -> np.ndarray:
        """(n, k) scores of several units -> (n,): their sum, the objective the optimizer is told."""
        return np.asarray(scores, dtype=np.float64).sum(axis=-1)

    # -- counters ------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters since this scorer was built, JSON-able."""
        return {"requests": self.requests, "retries": self.retries, "retry_reasons": dict(self.retry_reasons),
                "scored": self.scored, "missing": self.missing, "failures": dict(self.failures)}

    def report(self) -> str:
        """One line for the end of a run: what the endpoint cost and which series got no score, and why."""
        line = (f"remote {self._where()}: {self.scored + self.missing} series scored in {self.requests} requests"
                f", {self.retries} retries")
        if self.retry_reasons:
            line += " (" + ", ".join(f"{k}: {v}" for k, v in self.retry_reasons.most_common()) + ")"
        if self.missing:
            line += (f"; {self.missing} series got no score (NaN, recorded as missing responses: "
                     + ", ".join(f"{k}: {v}" for k, v in self.failures.most_common()) + ")")
        else:
            line += "; no series lost"
        return line

    def _where(self) -> str:
        return f"{self.url} model {self.model}" if self.mode == "v2" else self.url

    # -- description (never the token) ----------------------------------------------------------------
    def describe(self) -> dict:
        d = {"name": self.name, "mode": self.mode, "url": self.url, "unit": self.unit,
             "max_batch": self.max_batch, "timeout": list(self.timeout), "retries": self.max_retries,
             "backoff": self.backoff, "token_env": self.token_env, "verify": self.verify,
             "length": self._length, "channels": self._channels,
             "layout": self._spec["layout"] if self._spec else self._layout}
        if self.mode == "v2":
            d.update({"model": self.model, "output": self.output, "input_name": self.input_name,
                      "datatype": self.datatype})
        else:
            d.update({"request_template": self.request_template, "scores_path": self.scores_path})
        return d

    def __repr__(self) -> str:
        return (f"RemoteScorer({self.url!r}, mode={self.mode!r}, model={self.model!r}, unit={self.unit!r}, "
                f"token_env={self.token_env!r})")

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RemoteScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata (v2) --------------------------------------------------------------------------------
    def check(self) -> None:
        """Fail early, in one line, when the endpoint cannot be reached, does not serve the model, or
        declares an input shape that contradicts the length or layout given."""
        import httpx
        target = f"{self.url}/v2/models/{self.model}/ready" if self.mode == "v2" else self.url
        try:
            r = self._client.get(target)
        except httpx.TransportError as exc:
            self._raise_if_tls(exc)
            raise UserError(f"remote endpoint {self.url} is not reachable ({type(exc).__name__}: "
                            f"{_one_line(exc, 120)}): start it, or check the URL") from None
        if self.mode == "v2" and r.status_code != 200:
            raise UserError(f"remote endpoint {self.url} does not serve a ready model {self.model!r} "
                            f"(HTTP {r.status_code}: {_server_message(r)}): check --remote-model "
                            f"({self.url}/v2/models lists them on most servers)")
        if r.status_code in (401, 403):
            raise UserError(self._auth_message(r))
        self._declared()  # a declared shape that contradicts --length/--layout: now, not at the first batch

    def metadata(self) -> dict | None:
        """The v2 model metadata (inputs, outputs), asked once; None when the server does not answer it."""
        import httpx
        if self.mode != "v2":
            return None
        if self._metadata is None:
            try:
                r = self._client.get(f"{self.url}/v2/models/{self.model}")
                self._metadata = r.json() if r.status_code == 200 else {}
            except httpx.TransportError:
                return None  # the server is not up (yet): ask again next time
            except (httpx.HTTPError, ValueError):
                self._metadata = {}
            inputs = self._metadata.get("inputs") if isinstance(self._metadata, dict) else None
            if inputs and isinstance(inputs, list) and isinstance(inputs[0], dict):
                if self.input_name is None and inputs[0].get("name"):
                    self.input_name = str(inputs[0]["name"])
                shape = inputs[0].get("shape")
                if isinstance(shape, list) and all(isinstance(s, int) for s in shape):
                    self._input_shape = shape
        return self._metadata or None

    def _declared(self) -> dict | None:
        """Layout, length and channels of the v2 input the metadata declares, by the ONNX scorer's rules
        (``length``/``layout`` given here take part); None without a declared (batch, ...) rank-2/3 shape."""
        if self._spec is None and self.mode == "v2":
            self.metadata()
            if self._input_shape is not None and len(self._input_shape) in (2, 3):
                dims = [d if d > 0 else None for d in self._input_shape]  # -1: dynamic
                self._spec = resolve_layout(dims, self._layout, self._length, self.input_name or "input")
        return self._spec

    @property
    def length(self) -> int | None:
        if self._length is None and self.mode == "v2":
            spec = self._declared()
            if spec is not None:
                self._length = spec["length"]
            elif self._input_shape and len(self._input_shape) >= 2 and self._input_shape[-1] > 0:
                self._length = int(self._input_shape[-1])  # another rank: the last axis, as before
        return self._length

    @property
    def channels(self) -> int | None:
        if self._channels is None and self.mode == "v2":
            spec = self._declared()
            if spec is not None and spec["layout"] != "NL":  # (n, length) models take 2-D series
                self._channels = spec["channels"]
        return self._channels

    @property
    def layout(self) -> str | None:
        """The layout requests are sent in: the declared input's, else the one given (None: as given)."""
        spec = self._declared()
        return spec["layout"] if spec is not None else self._layout

    # -- scoring --------------------------------------------------------------------------------------
    def __call__(self, series: np.ndarray) -> np.ndarray:
        x = np.asarray(series)
        if x.ndim not in (2, 3):
            raise UserError(f"remote scorer takes series of shape (n, length) or (n, channels, length), got {x.shape}")
        n = len(x)
        out = np.full((n, len(self.units)), np.nan)
        for lo in range(0, n, self.max_batch):
            batch = x[lo:lo + self.max_batch]
            try:
                out[lo:lo + len(batch)] = self._score_batch(batch)
                bad = ~np.isfinite(out[lo:lo + len(batch)]).all(axis=1)
                if bad.any():  # the server answered NaN/inf: a missing response, not a crash
                    out[lo:lo + len(batch)][bad] = np.nan
                    self.failures["non-finite score"] += int(bad.sum())
                    self.missing += int(bad.sum())
                self.scored += int((~bad).sum())
                if bad.all():
                    self._no_valid_score(_BatchFailed("every score non-finite"))
                else:
                    self._down_streak = 0
            except _BatchFailed as exc:
                self.failures[exc.reason] += len(batch)
                self.missing += len(batch)
                self._no_valid_score(exc)
        return out[:, 0] if len(self.units) == 1 else out

    def _no_valid_score(self, exc: _BatchFailed) -> None:
        # Any batch with no valid score counts, whatever the status: an endpoint that answers 500 to
        # everything is as dead as one that refuses connections, only slower to notice.
        self._down_streak += 1
        if self._down_streak < self.down_after:
            return
        what = "is down" if exc.transport else "gives no valid score"
        last = exc.reason + (f": {_one_line(exc.detail, 150)}" if exc.detail else "")
        raise UserError(
            f"remote endpoint {self._where()} {what} ({self._down_streak} batches in a row, {self.max_retries} retries "
            f"each; last: {last}); the run store is intact up to the last complete generation: fix or restart the "
            "endpoint and rerun with --resume to continue") from None

    def _score_batch(self, batch: np.ndarray) -> np.ndarray:
        import httpx
        url, body = self._request(batch)
        last, detail = "no attempt", ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
                self.retry_reasons[last] += 1
            wait = None
            try:
                self.requests += 1
                r = self._client.post(url, content=body, headers={"Content-Type": "application/json"})
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
                raise UserError(f"cannot send to {self.url}: {_one_line(exc, 150)}") from None
            except httpx.TransportError as exc:
                self._raise_if_tls(exc)
                last = "timeout" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
                transport, detail = True, _one_line(exc, 120)
            else:
                if r.status_code == 200:
                    return self._parse(r, len(batch))
                if r.status_code not in RETRY_STATUS:
                    if r.status_code in (401, 403):
                        raise UserError(self._auth_message(r))
                    raise UserError(f"remote endpoint {url} refused the request: HTTP {r.status_code} "
                                    f"{r.reason_phrase}: {_server_message(r)}")
                last, transport, detail = f"HTTP {r.status_code}", False, _server_message(r)
                wait = parse_retry_after(r.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            if wait is not None:
                delay = min(wait, self.max_retry_after)
            else:  # exponential backoff with full jitter
                delay = self._jitter.uniform(0.0, min(self.max_backoff, self.backoff * 2 ** attempt))
            time.sleep(delay)
        raise _BatchFailed(f"{last} after {self.max_retries} retries", transport=transport, detail=detail)

    def _raise_if_tls(self, exc: Exception) -> None:
        # An untrusted certificate is a setting to fix, not a fault to retry.
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            raise UserError(f"the TLS certificate of {self.url} is not trusted ({_one_line(exc, 160)}): pass the "
                            "server's CA bundle (verify=PATH.pem); verify=False only on a network you trust") from None

    def _auth_message(self, r) -> str:
        hint = (f"check the token in ${self.token_env}" if self.token_env
                else "the endpoint needs a token: put it in an environment variable and pass --token-env VAR")
        return (f"remote endpoint {self.url} refused the credentials: HTTP {r.status_code} {r.reason_phrase}: "
                f"{_server_message(r)}; {hint}")

    def _request(self, batch: np.ndarray) -> tuple[str, bytes]:
        if self.mode == "json":
            x = batch if self._layout is None else to_layout(np.asarray(batch), self._layout)
            series = np.asarray(x, dtype=np.float64).tolist()
            payload, _ = _substitute(self.request_template, series)
            return self.url, json.dumps(payload, allow_nan=False).encode()
        spec = self._declared()  # the input's name and shape, when the server tells them
        if spec is not None:
            self._check_shape(batch, spec)
            batch = to_layout(np.asarray(batch), spec["layout"])  # sent as the model declares it
        elif self._layout is not None:
            batch = to_layout(np.asarray(batch), self._layout)
        shape = list(batch.shape)
        if spec is None and self._input_shape and len(self._input_shape) != len(shape):
            # The model declares e.g. (-1, 1, L) and we hold (n, L): only singleton axes may differ.
            declared = [len(batch)] + [d if d > 0 else None for d in self._input_shape[1:]]
            rest = [d for d in shape[1:] if d != 1]
            known = [d for d in declared[1:] if d != 1]
            if len(rest) == len(known) and all(k is None or k == r for k, r in zip(known, rest)):
                it = iter(rest)
                shape = [len(batch)] + [1 if d == 1 else next(it) for d in declared[1:]]
        data = np.asarray(batch, dtype=_DATATYPES[self.datatype]).reshape(-1).astype(np.float64).tolist()
        payload = {"inputs": [{"name": self.input_name or "input", "shape": shape, "datatype": self.datatype,
                               "data": data}]}
        if self.output:
            payload["outputs"] = [{"name": self.output}]
        return f"{self.url}/v2/models/{self.model}/infer", json.dumps(payload, allow_nan=False).encode()

    def _check_shape(self, batch: np.ndarray, spec: dict) -> None:
        # Every batch of a wrong shape would come back refused: say once what the model takes.
        c, L = (batch.shape[1] if batch.ndim == 3 else 1), batch.shape[-1]
        want = f"(declared input shape {fmt_dims(self._input_shape)}, layout {spec['layout']})"
        if spec["length"] is not None and L != spec["length"]:
            raise UserError(f"remote model {self.model} takes series of length {spec['length']} {want}, got length "
                            f"{L}: use --length {spec['length']}")
        if spec["channels"] is not None and c != spec["channels"]:
            raise UserError(f"remote model {self.model} takes {spec['channels']} channel(s) {want}, the series have "
                            f"{c}: give series of {spec['channels']} channel(s)")

    def _parse(self, r, n: int) -> np.ndarray:
        try:
            reply = r.json()
        except ValueError:
            raise _BatchFailed("malformed JSON") from None
        if self.mode == "v2":
            outputs = reply.get("outputs") if isinstance(reply, dict) else None
            if not isinstance(outputs, list) or not outputs:
                raise _BatchFailed("reply has no outputs")
            chosen = [o for o in outputs if isinstance(o, dict) and (self.output is None or o.get("name") == self.output)]
            if not chosen:
                names = [o.get("name") for o in outputs if isinstance(o, dict)]
                raise UserError(f"remote model {self.model} has no output {self.output!r}; it returned "
                                f"{', '.join(map(str, names))}: choose one with --output")
            out = chosen[0]
            try:
                values = np.asarray(out["data"], dtype=np.float64).reshape([int(s) for s in out["shape"]])
            except (KeyError, TypeError, ValueError):
                raise _BatchFailed("wrong shape") from None
        else:
            try:
                values = np.asarray(_follow(reply, self.scores_path), dtype=np.float64)
            except (TypeError, ValueError):
                raise _BatchFailed("wrong shape") from None
        if values.ndim == 0 or values.shape[0] != n:
            raise _BatchFailed("wrong shape")
        values = values.reshape(n, -1)
        k = values.shape[1]
        if k == 0:
            raise _BatchFailed("wrong shape")
        if max(self.units) >= k:
            raise UserError(f"remote endpoint returns {k} unit(s) per series; unit {max(self.units)} is out of "
                            f"range: choose 0..{k - 1}")
        return values[:, self.units]
