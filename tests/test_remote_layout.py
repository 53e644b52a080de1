"""The remote scorer reads length and channels from the input shape a server declares, by the ONNX
scorer's layout rules, and sends requests in that layout (issue 18 item 1).

The server is a real Open Inference Protocol server on 127.0.0.1 (http.server in a thread) that runs a
real ONNX model with onnxruntime and declares the model's own input shape in its metadata, ``-1`` for
a dynamic axis, as MLServer and Triton do; a request of another shape is refused by onnxruntime, HTTP 400.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xdream_ts.adapters.onnx import OnnxScorer, Target  # noqa: E402
from xdream_ts.adapters.remote import RemoteScorer  # noqa: E402
from xdream_ts.errors import UserError  # noqa: E402

FAST = {"retries": 0, "timeout": 10.0}


def _model(path, in_dims, channels, transpose):
    """[Transpose ->] Conv (4 filters) -> ReLU -> mean over time -> Gemm: 3 logits."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w1", rng.standard_normal((4, channels, 5)) * 0.5), ("b1", rng.standard_normal(4) * 0.1),
        ("w2", rng.standard_normal((4, 3))), ("b2", rng.standard_normal(3) * 0.1)]]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1])] if transpose else []
    nodes += [
        helper.make_node("Conv", ["xt" if transpose else "x", "w1", "b1"], ["conv"], pads=[2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("ReduceMean", ["relu"], ["gap"], axes=[2], keepdims=0),
        helper.make_node("Gemm", ["gap", "w2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], init)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


class _OipServer:
    """Serves ONNX models (name -> path) over the Open Inference Protocol v2 (REST, JSON)."""

    def __init__(self, models: dict):
        self.sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in models.items()}
        self.shapes: list = []  # the shape of every inference request, as sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body):
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                parts = self.path.strip("/").split("/")  # v2 models NAME [ready]
                sess = server.sessions.get(parts[2]) if len(parts) >= 3 and parts[:2] == ["v2", "models"] else None
                if sess is None:
                    return self._send(404, {"error": f"no route {self.path}"})
                if parts[3:] == ["ready"]:
                    return self._send(200, {"name": parts[2], "ready": True})
                i, o = sess.get_inputs()[0], sess.get_outputs()[0]
                dims = [d if isinstance(d, int) else -1 for d in i.shape]
                self._send(200, {"name": parts[2], "platform": "onnxruntime",
                                 "inputs": [{"name": i.name, "datatype": "FP32", "shape": dims}],
                                 "outputs": [{"name": o.name, "datatype": "FP32", "shape": [-1, 3]}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                sess = server.sessions[self.path.strip("/").split("/")[2]]
                inp = body["inputs"][0]
                server.shapes.append(list(inp["shape"]))
                try:
                    x = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
                    y = sess.run(None, {inp["name"]: x})[0]
                except Exception as e:  # a wrong shape: onnxruntime's own refusal
                    return self._send(400, {"error": str(e).splitlines()[0][:200]})
                self._send(200, {"model_name": "m", "outputs": [
                    {"name": "logits", "datatype": "FP32", "shape": list(y.shape), "data": y.reshape(-1).tolist()}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("oip")
    paths = {"keras": _model(d / "keras.onnx", ["N", 427, 1], 1, transpose=True),   # channels-last
             "square": _model(d / "square.onnx", ["N", 8, 8], 8, transpose=False)}  # 8 channels x 8 steps
    srv = _OipServer(paths)
    srv.paths = paths
    yield srv
    srv.stop()


def _series(n, c, length, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, length)).astype(np.float32)


def test_channels_last_input_declared_as_minus1_427_1(server):
    s = RemoteScorer(server.url, model="keras", unit=2, **FAST)
    assert (s.length, s.channels, s.layout) == (427, 1, "NLC")  # was length 1: the last axis
    local = OnnxScorer(server.paths["keras"], Target("logits", 2))
    x = _series(5, 1, 427)
    server.shapes.clear()
    np.testing.assert_allclose(s(x), local(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s(x[:, 0]), local(x), rtol=1e-5, atol=1e-6)  # (n, length) series too
    assert server.shapes == [[5, 427, 1], [5, 427, 1]]  # sent in the declared layout
    assert s.describe()["layout"] == "NLC" and s.missing == 0
    with pytest.raises(UserError, match="takes series of length 427 .*use --length 427") as e:
        s(_series(2, 1, 64))
    assert "\n" not in str(e.value)
    # a length given that contradicts the declared one: one line, at check(), before any request
    with pytest.raises(UserError, match="fixed length of 427"):
        RemoteScorer(server.url, model="keras", length=500, **FAST).check()


def test_layout_override_on_an_ambiguous_declared_shape(server):
    with pytest.raises(UserError, match="cannot tell channels from time .* --layout NCL") as e:
        RemoteScorer(server.url, model="square", **FAST).length
    assert "\n" not in str(e.value)
    x = _series(4, 8, 8)
    path = server.paths["square"]
    scores = {}
    for lay in ("NCL", "NLC"):
        s = RemoteScorer(server.url, model="square", unit=1, layout=lay.lower(), **FAST)
        assert (s.length, s.channels, s.layout) == (8, 8, lay)
        server.shapes.clear()
        scores[lay] = s(x)
        assert server.shapes == [[4, 8, 8]] and s.missing == 0
        # the same rules and the same transposition as the ONNX scorer given that layout
        np.testing.assert_allclose(scores[lay], OnnxScorer(path, Target("logits", 1), layout=lay)(x),
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(scores["NCL"], scores["NLC"])  # NLC sends each series transposed
    with pytest.raises(UserError, match="layout NL does not fit"):
        RemoteScorer(server.url, model="square", layout="NL", **FAST).length
    with pytest.raises(UserError, match="unknown layout 'TNC'"):
        RemoteScorer(server.url, model="square", layout="TNC", **FAST)


def test_cli_run_on_the_channels_last_endpoint(server, tmp_path, capsys):
    # the command: it stopped with "decoder length=1 must be >= 2"
    from xdream_ts.cli import main
    from xdream_ts.loop import load_run
    out = tmp_path / "r.zarr"
    code = main(["run", "--endpoint", server.url, "--remote-model", "keras", "--unit", "2", "--budget", "40",
                 "--decoder", "basis", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    r = load_run(out)
    assert r.config["scorer"]["length"] == 427 and r.config["scorer"]["layout"] == "NLC"
    assert np.isfinite(r.scores).all()
