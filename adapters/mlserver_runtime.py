"""An MLServer custom runtime that serves an xdream_ts target over the Open Inference Protocol (v2).

It serves either any ONNX model through onnxruntime, scoring a unit of any tensor of it (an output or a
hidden activation such as ``block2/out``), or a simulated neuron (the same closed-form linear-nonlinear
neuron as ``xdream_ts.adapters.simulated.SimulatedNeuron``). ``RemoteScorer`` then searches it from
anywhere::

    xdream-ts run --endpoint http://HOST:8080 --remote-model fordA-block2 --unit 17 --length 500

This file imports only mlserver, numpy and onnxruntime (and ``onnx``, only to expose a hidden tensor),
never xdream_ts: MLServer pins heavy dependencies and lives in its own environment.

Setting it up (one folder per model; MLServer puts the model's folder on ``sys.path``)::

    python -m venv .venv-mlserver
    .venv-mlserver/bin/pip install mlserver==1.7.1 onnxruntime onnx numpy
    mkdir -p models/fordA-block2
    cp adapters/mlserver_runtime.py models/fordA-block2/
    cp my_model.onnx models/fordA-block2/model.onnx
    # models/fordA-block2/model-settings.json, see below
    .venv-mlserver/bin/mlserver start models          # HTTP on :8080, gRPC on :8081

``model-settings.json`` (``write_model_settings`` below writes one)::

    {
      "name": "fordA-block2",
      "implementation": "mlserver_runtime.XdreamRuntime",
      "parameters": {
        "uri": "./model.onnx",
        "extra": {
          "kind": "onnx",            # or "simulated"
          "tensor": "block2/out",    # any tensor of the graph; default: the first output
          "position": "center",      # 3-D tensors: center | mean | max | a time index
          "layout": null,            # input layout when ambiguous: NCL | NLC | NL
          "tensor_layout": "NCL",    # layout of a 3-D target tensor (ONNX conv outputs are NCL)
          "threads": 1               # onnxruntime intra-op threads
        }
      }
    }

For ``"kind": "simulated"`` the extra parameters are ``length`` (500), ``channels`` (null), ``seed`` (0)
and ``gain`` (10.0), and ``uri`` is not needed.

The model takes one input, the series, as (n, length) or (n, channels, length) (any name; FP32 or
FP64), and returns one output ``scores`` of shape (n, k): the k units of the target tensor at the
chosen position (k = 1 for the simulated neuron). The client picks its unit(s) (``--unit``). The
model's metadata (``GET /v2/models/NAME``) declares the input shape, so clients learn the length.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

try:
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.errors import InferenceError, MLServerError
    from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
    from mlserver.utils import get_model_uri
except ImportError:  # the numpy cores below work (and are tested) without MLServer
    MLModel = object

    class MLServerError(Exception):  # type: ignore[no-redef]
        def __init__(self, msg: str, status_code: int = 400):
            super().__init__(msg)
            self.status_code = status_code

    InferenceError = MLServerError  # type: ignore[misc, assignment]

OUTPUT_NAME = "scores"


# ---------------------------------------------------------------------------------------------------
# Targets, numpy in / numpy out: (n, [c,] length) -> (n, k)
# ---------------------------------------------------------------------------------------------------
def _gabor_filter(length: int, rng: np.random.Generator, channels: int | None = None) -> np.ndarray:
    # The same draws, in the same order, as xdream_ts.adapters.simulated.gabor_filter (a test checks it).
    t = np.arange(length) / length
    rows = []
    for _ in range(channels or 1):
        centre, width = rng.uniform(0.3, 0.7), rng.uniform(0.06, 0.2)
        freq, phase = rng.uniform(2.0, 8.0), rng.uniform(0, 2 * np.pi)
        rows.append(np.exp(-0.5 * ((t - centre) / width) ** 2) * np.cos(2 * np.pi * freq * t + phase))
    w = np.array(rows)
    w -= w.mean(axis=-1, keepdims=True)
    w /= np.linalg.norm(w)
    return w if channels else w[0]


class SimulatedTarget:
    """r(x) = gain * max(0, <w, x> / sqrt(L * C)): xdream_ts's SimulatedNeuron, without xdream_ts."""

    def __init__(self, length: int = 500, channels: int | None = None, seed: int = 0, gain: float = 10.0):
        self.length, self.channels, self.gain = int(length), channels, float(gain)
        w = _gabor_filter(self.length, np.random.default_rng(seed), channels)
        w = w - w.mean(axis=-1, keepdims=True)
        self.weights = w / np.linalg.norm(w)
        self.input_shape = [-1, self.length] if channels is None else [-1, int(channels), self.length]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.weights.size:
            raise InferenceError(f"the simulated neuron takes series of shape {list(self.weights.shape)}, "
                                 f"got {x.shape[1]} values per series")
        drive = x @ self.weights.reshape(-1) / np.sqrt(self.weights.size)
        return (self.gain * np.maximum(0.0, drive))[:, None]


class OnnxTarget:
    """The units of one tensor of an ONNX model (output or hidden), at one time position, per series."""

    def __init__(self, path: str, tensor: str | None = None, position: str | int = "center",
                 layout: str | None = None, tensor_layout: str = "NCL", threads: int = 1):
        import onnxruntime as ort

        model_bytes = Path(path).read_bytes()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        self.tensor = tensor or outputs[0]
        if self.tensor not in outputs:
            # A hidden tensor: make it a graph output (needs the onnx package, only here).
            session = ort.InferenceSession(_expose(model_bytes, self.tensor), opts,
                                           providers=["CPUExecutionProvider"])
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float64 if "double" in inp.type else np.float32
        dims = [d if isinstance(d, int) and d > 0 else -1 for d in inp.shape]
        if layout is None:
            if len(dims) == 2:
                layout = "NL"
            elif dims[2] == 1 and dims[1] != 1:
                layout = "NLC"
            elif dims[1] > 0 and dims[2] > 0 and dims[1] > dims[2]:
                layout = "NLC"
            else:
                layout = "NCL"
        if layout not in ("NCL", "NLC", "NL"):
            raise MLServerError(f"layout {layout!r} is not one of NCL, NLC, NL")
        self.layout = layout
        length = dims[1] if layout in ("NL", "NLC") else dims[2]
        channels = None if layout == "NL" else (dims[1] if layout == "NCL" else dims[2])
        self.input_shape = [-1, length] if channels in (None, 1) else [-1, channels, length]
        if tensor_layout not in ("NCL", "NLC"):
            raise MLServerError(f"tensor_layout {tensor_layout!r} is not NCL or NLC")
        self.tensor_layout = tensor_layout
        self.position = position if position in ("center", "mean", "max") else int(position)

    def _model_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.input_dtype)
        if x.ndim == 2 and self.layout == "NCL":
            x = x[:, None, :]
        elif x.ndim == 2 and self.layout == "NLC":
            x = x[:, :, None]
        elif x.ndim == 3 and self.layout == "NLC":
            x = np.swapaxes(x, 1, 2)
        elif x.ndim == 3 and self.layout == "NL":
            if x.shape[1] != 1:
                raise InferenceError(f"this model takes one channel, got {x.shape[1]}")
            x = x[:, 0]
        elif x.ndim not in (2, 3):
            raise InferenceError(f"series must be (n, length) or (n, channels, length), got shape {list(x.shape)}")
        return np.ascontiguousarray(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            (y,) = self.session.run([self.tensor], {self.input_name: self._model_input(x)})
        except MLServerError:
            raise
        except Exception as exc:  # onnxruntime's own message names the wrong dimension
            raise InferenceError(" ".join(f"the model refused the input: {exc}".split())[:400]) from None
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            return y[:, None]
        if y.ndim == 2:
            return y
        if y.ndim != 3:
            raise InferenceError(f"tensor {self.tensor} has rank {y.ndim}: targets are (n, k) or (n, c, t) tensors")
        if self.tensor_layout == "NLC":
            y = np.swapaxes(y, 1, 2)
        if self.position == "center":
            return y[:, :, y.shape[2] // 2]
        if self.position == "mean":
            return y.mean(axis=2)
        if self.position == "max":
            return y.max(axis=2)
        if not -y.shape[2] <= self.position < y.shape[2]:
            raise InferenceError(f"position {self.position} is outside tensor {self.tensor}'s {y.shape[2]} time steps")
        return y[:, :, self.position]


def _expose(model_bytes: bytes, tensor: str) -> bytes:
    """The model with ``tensor`` added to its outputs (onnxruntime only returns graph outputs)."""
    try:
        import onnx
    except ImportError:
        raise MLServerError(f"tensor {tensor!r} is not an output of the model: serving a hidden tensor needs "
                            "the onnx package in MLServer's environment (pip install onnx)") from None
    model = onnx.load_from_string(model_bytes)
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {o for node in model.graph.node for o in node.output}
    if tensor not in produced:
        raise MLServerError(f"the model has no tensor {tensor!r}; some of its tensors: "
                            f"{', '.join(sorted(produced)[:12])}")
    vi = known.get(tensor) or onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)
    model.graph.output.append(vi)
    return model.SerializeToString()


def make_target(extra: dict, model_path: str | None = None):
    """A target from a model-settings ``parameters.extra`` dict."""
    extra = dict(extra or {})
    kind = extra.pop("kind", "onnx")
    if kind == "simulated":
        allowed = {"length", "channels", "seed", "gain"}
        unknown = sorted(set(extra) - allowed)
        if unknown:
            raise MLServerError(f"simulated target: unknown parameters {unknown}; allowed: {sorted(allowed)}")
        return SimulatedTarget(**extra)
    if kind == "onnx":
        allowed = {"tensor", "position", "layout", "tensor_layout", "threads"}
        unknown = sorted(set(extra) - allowed)
        if unknown:
            raise MLServerError(f"onnx target: unknown parameters {unknown}; allowed: {sorted(allowed)}")
        if not model_path:
            raise MLServerError("onnx target: parameters.uri must name the .onnx file")
        return OnnxTarget(model_path, **extra)
    raise MLServerError(f"unknown target kind {kind!r}: use 'onnx' or 'simulated'")


def write_model_settings(folder: str | os.PathLike, name: str, extra: dict, uri: str | None = None) -> Path:
    """Write ``folder/model-settings.json`` for this runtime (copy this file into ``folder`` too)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params: dict = {"extra": dict(extra)}
    if uri:
        params["uri"] = uri
    settings = {"name": name, "implementation": "mlserver_runtime.XdreamRuntime", "parameters": params}
    path = folder / "model-settings.json"
    path.write_text(json.dumps(settings, indent=2))
    return path


# ---------------------------------------------------------------------------------------------------
# The MLServer runtime
# ---------------------------------------------------------------------------------------------------
class XdreamRuntime(MLModel):
    """MLServer runtime: one input (the series), one output ``scores`` (n, k)."""

    async def load(self) -> bool:
        params = self.settings.parameters
        extra = dict((params.extra if params else None) or {})
        model_path = None
        if extra.get("kind", "onnx") == "onnx":
            model_path = await get_model_uri(self.settings, wellknown_filenames=["model.onnx"])
        self.target = make_target(extra, model_path)
        self.inputs = [MetadataTensor(name="series", datatype="FP32", shape=list(self.target.input_shape))]
        self.outputs = [MetadataTensor(name=OUTPUT_NAME, datatype="FP64", shape=[-1, -1])]
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise InferenceError(f"send one input (the series), got {len(payload.inputs)}")
        wanted = [o.name for o in (payload.outputs or [])]
        if any(name != OUTPUT_NAME for name in wanted):
            raise InferenceError(f"this model has one output, {OUTPUT_NAME!r}; asked for {wanted}")
        try:
            x = NumpyCodec.decode_input(payload.inputs[0])
        except Exception as exc:
            raise InferenceError(f"cannot read the input: {exc}") from None
        if not np.isfinite(x).all():
            raise InferenceError("the series contain NaN or inf")
        scores = self.target(x)
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(OUTPUT_NAME, scores)])
