"""A real HTTP inference server on 127.0.0.1, in a thread, that misbehaves on cue.

It speaks the Open Inference Protocol v2 (``/v2/models/NAME``, ``/v2/models/NAME/infer``,
``/v2/health/ready``) and a generic JSON endpoint (``POST /predict`` with ``{"series": [...]}``, reply
``{"result": {"scores": [...]}}``), scoring with a simulated neuron. ``script`` lists what to do with
the first inference requests, one action each, then every request is served normally:

    "ok"                        serve
    ("status", code[, headers[, body]])   reply with that status (e.g. 500, 503 + Retry-After, 400)
    ("sleep", seconds)          wait, then serve (the client's read timeout fires first)
    "malformed"                 200 with a body that is not JSON
    "wrong_shape"               200 with one score too few
    "nan"                       200 with NaN for the first series
    "drop"                      close the connection without a reply

``die_after=N`` shuts the server down (listening socket closed: connections refused) after N inference
requests; a new ``StubServer(port=old.port)`` brings the endpoint back.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def log_message(self, fmt, *args):  # keep the log for the tests, off stderr
        self.server.stub.log.append(fmt % args)

    # -- helpers ----------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes | str | dict, headers: dict | None = None):
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        stub = self.server.stub
        stub.auth_headers.append(self.headers.get("Authorization"))
        if stub.token is None or self.headers.get("Authorization") == f"Bearer {stub.token}":
            return True
        self._send(401, {"error": "missing or wrong bearer token"})
        return False

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self):
        stub = self.server.stub
        if not self._authorised():
            return
        if self.path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{stub.model}/ready"):
            return self._send(200, {"ready": True})
        if self.path == f"/v2/models/{stub.model}":
            shape = [-1, stub.neuron.length] if stub.neuron.channels is None else [-1, stub.neuron.channels, stub.neuron.length]
            return self._send(200, {"name": stub.model, "platform": "stub",
                                    "inputs": [{"name": "series", "datatype": "FP32", "shape": shape}],
                                    "outputs": [{"name": "scores", "datatype": "FP64", "shape": [-1, 2]}]})
        self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self):
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self._authorised():
            return
        with stub.lock:
            index = stub.n_infer
            stub.n_infer += 1
            action = stub.script[index] if index < len(stub.script) else "ok"
            dying = stub.die_after is not None and stub.n_infer >= stub.die_after
        if dying:
            self.close_connection = True
            threading.Thread(target=stub.stop, daemon=True).start()
        if stub.die_after is not None and index >= stub.die_after:
            return self._drop()  # a request that slipped in while the server was going down
        kind = action if isinstance(action, str) else action[0]
        if kind == "drop":
            return self._drop()
        if kind == "status":
            code = action[1]
            headers = action[2] if len(action) > 2 else {}
            body = action[3] if len(action) > 3 else {"error": f"stub says {code}"}
            return self._send(code, body, headers)
        if kind == "sleep":
            time.sleep(action[1])
        if kind == "malformed":
            return self._send(200, b'{"outputs": [{"name": "scores", "data": [1.0, 2.')
        json_mode = self.path == "/predict"
        if not json_mode and self.path != f"/v2/models/{stub.model}/infer":
            return self._send(404, {"error": f"model not found: {self.path}"})
        try:
            req = json.loads(raw)
            if json_mode:
                x = np.asarray(req["series"], dtype=np.float64)
            else:
                inp = req["inputs"][0]
                x = np.asarray(inp["data"], dtype=np.float64).reshape(inp["shape"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return self._send(400, {"error": f"bad request: {exc}"})
        stub.batches.append(len(x))
        # Two units per series: the neuron and its negative rectified copy, so `unit` has a meaning.
        r = stub.neuron(x.reshape(len(x), *np.shape(x)[1:]))
        scores = np.stack([r, stub.neuron.gain * np.maximum(0.0, -(x.reshape(len(x), -1) @ stub.neuron.weights.reshape(-1))
                                                            / np.sqrt(stub.neuron.weights.size))], axis=1)
        if kind == "wrong_shape":
            scores = scores[:-1]
        data = scores.reshape(-1).tolist()
        if kind == "nan":
            data[0] = float("nan")
        if json_mode:
            body = json.dumps({"result": {"scores": scores.tolist()}})
        else:
            body = json.dumps({"model_name": stub.model, "outputs": [
                {"name": "scores", "datatype": "FP64", "shape": list(scores.shape), "data": data}]})
        self._send(200, body)

    def _drop(self):
        """Close the socket without a reply: the client sees the server disconnect."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class StubServer:
    def __init__(self, neuron, script=(), port: int = 0, token: str | None = None, die_after: int | None = None,
                 model: str = "neuron", tls: tuple | None = None):
        self.neuron, self.script, self.token, self.die_after, self.model = neuron, list(script), token, die_after, model
        self.lock = threading.Lock()
        self.n_infer = 0
        self.batches: list[int] = []
        self.log: list[str] = []
        self.auth_headers: list = []
        self.dead = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.stub = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls:  # (certificate file, key file): HTTPS
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self):
        if self.dead.is_set():
            return
        self.dead.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
