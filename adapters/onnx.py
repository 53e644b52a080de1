"""ONNX scorer: the activation of a unit of a model exported to ONNX, as the score of a series.

A *target* is a tensor of the graph, a unit (channel or feature) of it and a time position::

    TENSOR:UNIT[@POSITION]        e.g.  /layers.2/Relu_output_0:17@center    relu_3:5@mean    logits:1

- TENSOR is any tensor that ``xdream-ts inspect MODEL`` lists (a hidden activation or an output). An
  empty TENSOR (``:1``) means the model's first output. Names may themselves contain ``:`` (the last
  ``:`` separates the unit) or ``@``.
- UNIT indexes the channels of a (batch, channels, time) tensor or the features of a (batch, features)
  tensor (logits).
- POSITION (3-D tensors only): ``center`` (default; ``T // 2`` as XDream uses the centre spatial
  position), an integer time index ``0 .. T-1``, or ``mean`` / ``max`` over time.

**Logits, never softmax.** A softmax output saturates and couples the units (pushing one class up by
pushing the others down), so a target produced by a ``Softmax`` or ``LogSoftmax`` node is refused with
a message naming the node's input, the logits to target instead.

Input layout (from the model's declared input shape; ``layout=`` overrides):

- ``(batch, length)`` -> ``NL``;
- ``(batch, 1, length)`` -> ``NCL``; ``(batch, length, 1)`` -> ``NLC`` (Keras-style channels-last);
- ``(batch, a, b)`` with both known and different: the smaller is channels (``(batch, 3, 500)`` is NCL,
  ``(batch, 500, 3)`` is NLC); with exactly one symbolic, the symbolic one is the length;
  otherwise (``(batch, 3, 3)``, both symbolic) it is ambiguous and ``layout`` must be given.

Series are always given to the scorer as ``(n, length)`` or ``(n, channels, length)`` (the project's
convention); the scorer transposes to the model's layout. A wrong length or channel count is an error,
never a silent reshape.

Layout of hidden 3-D tensors (which axis is time), in this order:

1. ``tensor_layout=`` override (``'NCL'``/``'NLC'``, or a dict ``{tensor name: layout}``);
2. propagation through the graph from the input: Conv/Pool/BatchNorm outputs are channels-first (the
   ONNX convention), ``Transpose`` permutes the time axis, ``Unsqueeze``/``Squeeze`` shift it,
   element-wise ops and ``MatMul`` over features keep it (a Keras model's ``Transpose`` back to
   channels-last is followed);
3. shape: if exactly one of the two non-batch dims equals the input length, that one is time;
4. otherwise channels-first.

Inputs to the scorer are chunked: a model with a fixed batch size B gets chunks of B (the last one
zero-padded, padded rows dropped); a dynamic batch gets one call, or chunks of ``batch_size``.

onnx and onnxruntime are imported inside functions, so that ``import xdream_ts`` stays fast.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from xdream_ts.errors import UserError

__all__ = [
    "Target",
    "parse_target",
    "parse_position",
    "OnnxScorer",
    "inspect_model",
    "format_inspection",
]

_POSITIONS = ("center", "mean", "max")
_LAYOUTS = ("NCL", "NLC", "NL")
_SOFTMAX_OPS = ("Softmax", "LogSoftmax")
_DUMMY_LENGTH = 256  # used by inspect_model when the model accepts any length and none is given


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------

def parse_position(text: str | int) -> str | int:
    """``'center'`` (alias ``'centre'``; None = the default, center), ``'mean'``, ``'max'`` or a
    non-negative integer time index."""
    if text is None:
        return "center"
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        if text < 0:
            raise UserError(f"time position {int(text)} is negative: use an index 0..T-1, center, mean or max")
        return int(text)
    s = str(text).strip().lower()
    if s == "centre":
        s = "center"
    if s in _POSITIONS:
        return s
    if re.fullmatch(r"\d+", s):
        return int(s)
    raise UserError(f"unknown time position {text!r}: use center, mean, max or a time index 0..T-1")


@dataclass(frozen=True)
class Target:
    """One unit to drive: ``layer`` (tensor name; None = the model's first output), ``unit``
    (channel/feature index), ``position`` (``'center'``, ``'mean'``, ``'max'`` or a time index)."""

    layer: str | None
    unit: int
    position: str | int = "center"

    def __post_init__(self) -> None:
        if isinstance(self.unit, bool) or not isinstance(self.unit, (int, np.integer)):
            raise UserError(f"unit must be an integer channel/feature index, got {self.unit!r}")
        if self.unit < 0:
            raise UserError(f"unit {int(self.unit)} is negative: units are numbered from 0")
        object.__setattr__(self, "unit", int(self.unit))
        object.__setattr__(self, "position", parse_position(self.position))
        if self.layer is not None and not isinstance(self.layer, str):
            raise UserError(f"layer must be a tensor name (str) or None, got {self.layer!r}")
        if self.layer == "":
            object.__setattr__(self, "layer", None)

    def __str__(self) -> str:
        return f"{self.layer or ''}:{self.unit}@{self.position}"


def parse_target(text: str) -> Target:
    """Parse ``'TENSOR:UNIT[@POSITION]'`` (see the module docstring), e.g. ``'block2/out:17@center'``."""
    s = str(text).strip()
    body, at, pos = s.rpartition("@")
    if not at or ":" in pos:  # no '@', or the '@' belongs to the tensor name
        body, pos = s, None
    name, colon, unit = body.rpartition(":")
    if not colon or not re.fullmatch(r"\d+", unit.strip()):
        raise UserError(
            f"cannot parse target {text!r}: write TENSOR:UNIT[@center|mean|max|INDEX], "
            "e.g. 'block2/out:17@center' (`xdream-ts inspect MODEL` lists the tensors)"
        )
    return Target(name or None, int(unit), parse_position(pos) if pos is not None else "center")


def _as_targets(targets: Any) -> list[Target]:
    if isinstance(targets, (Target, str)):
        targets = [targets]
    out = []
    for t in targets:
        out.append(parse_target(t) if isinstance(t, str) else t)
        if not isinstance(out[-1], Target):
            raise UserError(f"targets must be Target objects or 'TENSOR:UNIT@POSITION' strings, got {t!r}")
    if not out:
        raise UserError("no target given: name at least one tensor and unit (TENSOR:UNIT@POSITION)")
    return out


# --------------------------------------------------------------------------------------------------
# Loading and graph helpers
# --------------------------------------------------------------------------------------------------

def _load(path: str | os.PathLike) -> tuple[Any, str, Path]:
    """onnx.ModelProto (external data loaded), sha256 of the file, resolved path."""
    import onnx

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"model file not found: {str(path)!r}; check the path (an .onnx file)")
    data = p.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise UserError(
            f"{p} is not a readable ONNX model ({type(e).__name__}); export it with torch.onnx.export or tf2onnx"
        ) from None
    if not model.HasField("graph") or len(model.graph.node) == 0 or len(model.graph.input) == 0:
        raise UserError(
            f"{p} is not a readable ONNX model (no graph in it); export it with torch.onnx.export or tf2onnx"
        )
    try:
        from onnx.external_data_helper import load_external_data_for_model, uses_external_data

        if any(uses_external_data(t) for t in model.graph.initializer):
            load_external_data_for_model(model, str(p.parent))
    except Exception as e:
        raise UserError(f"cannot load the external weights of {p} ({e}); keep them beside the model file") from None
    return model, sha, p.resolve()


def _value_infos(model: Any) -> dict[str, Any]:
    """Tensor name -> ValueInfoProto, after shape inference (best effort)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        g = inferred.graph
    except Exception:
        g = model.graph
    vis: dict[str, Any] = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        vis[v.name] = v
    return vis


def _dims(vi: Any) -> list[int | str | None] | None:
    """Declared dims: int when known, the symbol name when symbolic, None when anonymous."""
    if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _real_inputs(graph: Any) -> list[Any]:
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _subgraph_names(node: Any) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            for n in g.node:
                names.update(n.input)
                names.update(_subgraph_names(n))
    return names


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output if o}


def _reachable_from(graph: Any, source: str) -> set[str]:
    """Tensors that depend on ``source`` (nodes are topologically sorted in a valid ONNX graph)."""
    reach = {source}
    for n in graph.node:
        ins = set(n.input) | _subgraph_names(n)
        if ins & reach:
            reach.update(o for o in n.output if o)
    return reach


def _prune_to(model: Any, outputs: Sequence[str], vis: dict[str, Any]) -> None:
    """In place: make ``outputs`` the graph outputs and drop the nodes and weights they do not need."""
    import onnx

    g = model.graph
    needed = set(outputs)
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
            needed.update(_subgraph_names(n))
    keep.reverse()
    old_out = {o.name: o for o in g.output}
    new_out = []
    for name in outputs:
        if name in old_out:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(old_out[name])
        elif name in vis and vis[name].type.HasField("tensor_type"):
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(vis[name])
        else:
            vi = onnx.helper.make_empty_tensor_value_info(name)
        new_out.append(vi)
    inits = [t for t in g.initializer if t.name in needed]
    del g.output[:]
    g.output.extend(new_out)
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(inits)
    sparse = [t for t in g.sparse_initializer if t.values.name in needed]
    del g.sparse_initializer[:]
    g.sparse_initializer.extend(sparse)


def _serialize(model: Any) -> bytes:
    try:
        return model.SerializeToString()
    except ValueError:  # protobuf's 2 GiB limit
        raise UserError(
            "the model is larger than 2 GiB, which this scorer cannot hand to onnxruntime in memory; "
            "export a smaller model or score it through a remote endpoint"
        ) from None


def _softmax_source(graph: Any, name: str, producers: dict[str, Any]) -> tuple[Any, str] | None:
    """(Softmax node, its input) when ``name`` is a softmax output (through Identity/Cast), else None."""
    seen = 0
    node = producers.get(name)
    while node is not None and node.op_type in ("Identity", "Cast") and seen < 16:
        node = producers.get(node.input[0])
        seen += 1
    if node is not None and node.op_type in _SOFTMAX_OPS:
        return node, node.input[0]
    return None


# --------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------

def _input_layout(dims: list, override: str | None, name: str) -> str:
    rank = len(dims)
    if override is not None:
        lay = str(override).upper()
        if lay not in _LAYOUTS:
            raise UserError(f"unknown layout {override!r}: use NCL (batch, channels, length), NLC or NL")
        if (lay == "NL") != (rank == 2):
            raise UserError(
                f"layout {lay} does not fit the model input {name!r} of rank {rank} (shape {_fmt_dims(dims)}); "
                f"use {'NL' if rank == 2 else 'NCL or NLC'}"
            )
        if rank not in (2, 3):
            raise UserError(_rank_msg(name, dims))
        return lay
    if rank == 2:
        return "NL"
    if rank != 3:
        raise UserError(_rank_msg(name, dims))
    a, b = dims[1], dims[2]
    ka, kb = isinstance(a, int) and a > 0, isinstance(b, int) and b > 0
    if ka and kb and a != b:
        return "NCL" if a < b else "NLC"
    if ka and not kb:
        return "NCL"  # (batch, C, L?) : the symbolic dim is the length
    if kb and not ka:
        return "NLC"
    raise UserError(
        f"cannot tell channels from time in the model input {name!r} of shape {_fmt_dims(dims)}; "
        "give --layout NCL (batch, channels, length) or NLC (batch, length, channels)"
    )


def _rank_msg(name: str, dims: list) -> str:
    return (
        f"model input {name!r} has shape {_fmt_dims(dims)} (rank {len(dims)}); xdream_ts feeds series shaped "
        "(batch, length), (batch, channels, length) or (batch, length, channels): re-export the model with one of these"
    )


def _fmt_dims(dims: Sequence) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


_CF_OPS = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
    "BatchNormalization", "InstanceNormalization", "LRN", "GroupNormalization",
}
_KEEP_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Swish", "Erf", "Exp", "Log", "Abs", "Neg",
    "Sqrt", "Reciprocal", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Add", "Sub", "Mul", "Div",
    "Pow", "Max", "Min", "Sum", "Mean", "Where", "Clip", "Dropout", "Identity", "Cast", "Pad", "Slice",
    "Concat", "LayerNormalization", "Softmax", "LogSoftmax", "Dequantize", "DequantizeLinear",
    "QuantizeLinear", "Resize", "Upsample",
}


def _const_ints(graph: Any) -> dict[str, list[int]]:
    """Small integer constants (axes, perms) from initializers and Constant nodes."""
    from onnx import numpy_helper

    out: dict[str, list[int]] = {}
    for t in graph.initializer:
        if t.data_type in (6, 7) and np.prod(t.dims, dtype=np.int64) <= 16:
            out[t.name] = [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type in (6, 7) and np.prod(a.t.dims, dtype=np.int64) <= 16:
                    out[n.output[0]] = [int(v) for v in numpy_helper.to_array(a.t).reshape(-1)]
                elif a.name == "value_ints":
                    out[n.output[0]] = list(a.ints)
    return out


def _attr_ints(node: Any, name: str) -> list[int] | None:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return None


def _time_axes(graph: Any, input_name: str, input_axis: int, ranks: dict[str, int]) -> dict[str, int]:
    """Propagate the index of the time axis from the input through the graph (see module docstring)."""
    consts = _const_ints(graph)
    ax: dict[str, int] = {input_name: input_axis}
    for n in graph.node:
        op = n.op_type
        a_in = ax.get(n.input[0]) if n.input else None
        out: int | None = None
        if op in _CF_OPS:
            r = ranks.get(n.output[0])
            if a_in is not None and a_in >= 2:
                out = a_in
            elif r == 3:
                out = 2
        elif op == "Transpose":
            perm = _attr_ints(n, "perm")
            r = ranks.get(n.input[0])
            if perm is None and r is not None:
                perm = list(range(r))[::-1]
            if a_in is not None and perm is not None and a_in in perm:
                out = perm.index(a_in)
        elif op in ("Unsqueeze", "Squeeze"):
            axes = _attr_ints(n, "axes")
            if axes is None and len(n.input) > 1:
                axes = consts.get(n.input[1])
            r_in = ranks.get(n.input[0])
            if a_in is not None and axes is not None and r_in is not None:
                if op == "Unsqueeze":
                    r_out = r_in + len(axes)
                    ins = sorted(x % r_out for x in axes)
                    kept = [i for i in range(r_out) if i not in ins]
                    out = kept[a_in] if a_in < len(kept) else None
                else:
                    sq = sorted(x % r_in for x in axes)
                    out = None if a_in in sq else a_in - sum(1 for x in sq if x < a_in)
        elif op == "MatMul":
            r = ranks.get(n.input[0])
            if a_in is not None and r is not None and a_in < r - 1:
                out = a_in
        elif op in _KEEP_OPS:
            r_out = ranks.get(n.output[0])
            for i in n.input:
                if i in ax and (r_out is None or ranks.get(i) in (None, r_out)):
                    out = ax[i]
                    break
        if out is not None and out >= 1:
            for o in n.output:
                if o:
                    ax[o] = out
    return ax


def _hidden_layout(name: str, shape: tuple, prop: dict[str, int], length: int | None,
                   override: str | dict | None) -> tuple[str, str]:
    """(layout 'NCL'|'NLC', how it was decided) for a 3-D tensor."""
    ov = override.get(name) if isinstance(override, dict) else override
    if ov is not None:
        lay = str(ov).upper()
        if lay not in ("NCL", "NLC"):
            raise UserError(f"unknown tensor layout {ov!r} for {name!r}: use NCL (channels, time) or NLC (time, channels)")
        return lay, "override"
    a = prop.get(name)
    if a in (1, 2):
        return ("NLC" if a == 1 else "NCL"), "graph"
    if length is not None and len(shape) == 3:
        if shape[2] == length and shape[1] != length:
            return "NCL", "shape"
        if shape[1] == length and shape[2] != length:
            return "NLC", "shape"
    return "NCL", "default"


def _np_dtype(elem_type: int) -> np.dtype:
    import onnx

    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        dt = np.dtype("O")
    return dt


# --------------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------------

_CUDA_FAILED = False  # remembered per process: do not retry (and re-warn) once CUDA failed to start


def _gpu_visible() -> bool:
    """An NVIDIA device node exists (the driver is loaded): a GPU this process could use."""
    return os.path.exists("/dev/nvidiactl") or any(os.path.exists(f"/dev/nvidia{i}") for i in range(8))


def _session(model_bytes: bytes, providers: str | None, threads: int, where: str) -> Any:
    import onnxruntime as ort

    global _CUDA_FAILED
    req = None if providers is None else str(providers).lower()
    if req not in (None, "auto", "cpu", "cuda"):
        raise UserError(f"unknown providers {providers!r}: use cpu, cuda, or leave it out (CUDA when available)")
    if not isinstance(threads, (int, np.integer)) or threads < 0:
        raise UserError(f"threads must be a non-negative integer (0 = onnxruntime's default), got {threads!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # keep onnxruntime's own provider-loading noise off the console
    available = ort.get_available_providers()
    want_cuda = req == "cuda" or (req in (None, "auto") and "CUDAExecutionProvider" in available and not _CUDA_FAILED)

    def make(provs: list[str]) -> Any:
        try:
            return ort.InferenceSession(model_bytes, sess_options=so, providers=provs)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"onnxruntime cannot load {where}: {first[:300]}; check that the file is a valid ONNX model") from None

    if want_cuda and "CUDAExecutionProvider" in available:
        # onnxruntime logs its failure to load the CUDA libraries through the process-wide logger, which
        # has no getter: silence it for this one call and put back the default (warning) level.
        ort.set_default_logger_severity(4)
        try:
            sess = make(["CUDAExecutionProvider", "CPUExecutionProvider"])
        finally:
            ort.set_default_logger_severity(2)
        if "CUDAExecutionProvider" in sess.get_providers():
            return sess
        _CUDA_FAILED = True
        # Asked for CUDA, or a GPU is visible but CUDA did not start: worth a warning. On a machine
        # with no GPU at all (onnxruntime-gpu lists CUDA anyway), CPU is simply the right choice.
        if req == "cuda" or _gpu_visible():
            warnings.warn(
                "onnxruntime could not start CUDAExecutionProvider (CUDA/cuDNN libraries missing?); "
                "running the model on CPU",
                RuntimeWarning,
                stacklevel=3,
            )
        return sess
    if want_cuda and req == "cuda":
        warnings.warn(
            "CUDA was requested but this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); "
            "running the model on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    return make(["CPUExecutionProvider"])


def _dummy_input(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(tuple(shape)).astype(dtype)


# --------------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------------

def _input_info(model: Any, vis: dict[str, Any]) -> dict:
    g = model.graph
    ins = _real_inputs(g)
    if len(ins) != 1:
        raise UserError(
            f"the model has {len(ins)} inputs ({', '.join(i.name for i in ins)}); xdream_ts scores single-input "
            "models: export a wrapper that takes the series only"
        )
    vi = ins[0]
    dims = _dims(vi)
    if dims is None:
        raise UserError(f"model input {vi.name!r} has no declared shape; re-export the model with input shapes")
    dtype = _np_dtype(vi.type.tensor_type.elem_type)
    if dtype.kind != "f":
        raise UserError(
            f"model input {vi.name!r} has type {dtype}; xdream_ts feeds real-valued series (float): "
            "re-export the model with a float input"
        )
    return {"name": vi.name, "dims": dims, "dtype": dtype}


def _resolve_layout(dims: list, layout: str | None, length: int | None, name: str) -> dict:
    lay = _input_layout(dims, layout, name)
    if lay == "NL":
        l_dim, c_dim = dims[1], 1
    elif lay == "NCL":
        c_dim, l_dim = dims[1], dims[2]
    else:
        l_dim, c_dim = dims[1], dims[2]
    fixed_len = l_dim if isinstance(l_dim, int) and l_dim > 0 else None
    if length is not None:
        if not isinstance(length, (int, np.integer)) or length <= 0:
            raise UserError(f"length must be a positive integer, got {length!r}")
        if fixed_len is not None and fixed_len != length:
            raise UserError(
                f"length {length} given, but the model input {name!r} has a fixed length of {fixed_len}; "
                f"drop --length or use {fixed_len}"
            )
        fixed_len = int(length)
    channels = c_dim if isinstance(c_dim, int) and c_dim > 0 else None
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    return {"layout": lay, "length": fixed_len, "length_dynamic": not (isinstance(l_dim, int) and l_dim > 0),
            "channels": channels, "batch": batch}


def _model_shape(lay: str, n: int, channels: int, length: int) -> tuple[int, ...]:
    if lay == "NL":
        return (n, length)
    if lay == "NCL":
        return (n, channels, length)
    return (n, length, channels)


def inspect_model(path: str | os.PathLike, length: int | None = None, layout: str | None = None,
                  tensor_layout: str | dict | None = None) -> dict:
    """Inputs, outputs and every targetable tensor of an ONNX model, as a JSON-able dict.

    Shapes come from one forward pass on a dummy input (of the model's length; of ``length``, or 256
    samples, when the model accepts any length), falling back to shape inference when it cannot run.
    Each tensor entry: name, op (the node type that produced it), node, shape (batch dim as 'batch'),
    kind ('channels-time' or 'features'), layout ('NCL'/'NLC'/None), layout_source, units, time.
    """
    import onnx

    model, sha, p = _load(path)
    vis = _value_infos(model)
    g = model.graph
    inp = _input_info(model, vis)
    producers = _producers(g)
    if len(inp["dims"]) not in (2, 3):
        raise UserError(_rank_msg(inp["name"], inp["dims"]))
    try:
        spec = _resolve_layout(inp["dims"], layout, length, inp["name"])
        layout_error = None
    except UserError as e:  # ambiguous layout: still list what shape inference knows
        if layout is not None or length is not None:
            raise
        spec, layout_error = None, str(e)

    reach = _reachable_from(g, inp["name"])
    out_names = [o.name for o in g.output]
    cand = []
    for n in g.node:
        for o in n.output:
            if not o or o not in reach or o == inp["name"]:
                continue
            vi = vis.get(o)
            if vi is not None and vi.type.HasField("tensor_type"):
                et = vi.type.tensor_type.elem_type
                if et and _np_dtype(et).kind != "f":
                    continue
            cand.append(o)

    shapes: dict[str, tuple] = {}
    note = None
    batch = None
    if spec is not None:
        batch = spec["batch"] or 2
        run_len = spec["length"] or _DUMMY_LENGTH
        chans = spec["channels"] or 1
        if spec["length"] is None:
            note = f"the model accepts any length: shapes shown for a dummy length of {run_len}"
        try:
            m2 = onnx.ModelProto()
            m2.CopyFrom(model)
            _prune_to(m2, cand, vis)
            sess = _session(_serialize(m2), "cpu", 1, str(p))
            x = _dummy_input(_model_shape(spec["layout"], batch, chans, run_len), inp["dtype"])
            names = [o.name for o in sess.get_outputs()]
            vals = sess.run(names, {inp["name"]: x})
            for nm, v in zip(names, vals):
                v = np.asarray(v)
                if v.dtype.kind == "f":
                    shapes[nm] = tuple(int(s) for s in v.shape)
        except UserError:
            raise
        except Exception as e:
            note = f"a dummy forward failed ({type(e).__name__}); shapes from shape inference"
            shapes = {}
    if not shapes:
        for o in cand:
            d = _dims(vis.get(o))
            if d is not None:
                shapes[o] = tuple(d)
    ranks = {k: len(v) for k, v in shapes.items()}
    ranks[inp["name"]] = len(inp["dims"])
    for k, v in vis.items():
        d = _dims(v)
        if d is not None:
            ranks.setdefault(k, len(d))
    in_axis = {"NCL": 2, "NLC": 1, "NL": 1}[spec["layout"]] if spec else None
    prop = _time_axes(g, inp["name"], in_axis, ranks) if in_axis is not None else {}
    run_len = (spec["length"] or _DUMMY_LENGTH) if spec else None

    tensors = []
    for o in cand:
        shp = shapes.get(o)
        if shp is None or len(shp) not in (2, 3):
            continue
        if batch is not None and shp[0] != batch:
            continue
        if _softmax_source(g, o, producers) is not None:
            continue
        node = producers[o]
        entry: dict[str, Any] = {"name": o, "op": node.op_type, "node": node.name,
                                 "shape": ["batch"] + list(shp[1:]), "output": o in out_names}
        if len(shp) == 2:
            entry.update(kind="features", layout=None, layout_source=None, units=shp[1], time=None)
        else:
            lay, src = _hidden_layout(o, shp, prop, run_len, tensor_layout)
            units, time = (shp[1], shp[2]) if lay == "NCL" else (shp[2], shp[1])
            entry.update(kind="channels-time", layout=lay, layout_source=src, units=units, time=time)
        tensors.append(entry)

    outputs = []
    for o in g.output:
        sm = _softmax_source(g, o.name, producers)
        outputs.append({
            "name": o.name,
            "shape": (["batch"] + list(shapes[o.name][1:])) if o.name in shapes else _jsonable_dims(_dims(o) or []),
            "op": producers[o.name].op_type if o.name in producers else None,
            "softmax": sm is not None,
            "logits": sm[1] if sm is not None else None,
        })
    return {
        "path": str(p),
        "sha256": sha,
        "input": {"name": inp["name"], "shape": _jsonable_dims(inp["dims"]), "dtype": str(inp["dtype"]),
                  "layout": spec["layout"] if spec else None,
                  "length": spec["length"] if spec else None,
                  "channels": spec["channels"] if spec else None,
                  "batch": spec["batch"] if spec else None,
                  "layout_error": layout_error},
        "outputs": outputs,
        "tensors": tensors,
        "note": note,
    }


def _jsonable_dims(dims: Sequence) -> list:
    return [d if d is not None else "?" for d in dims]


def format_inspection(info: dict) -> str:
    """A readable, aligned table of ``inspect_model``'s result."""
    inp = info["input"]
    lines = [f"model   {info['path']}  (sha256 {info['sha256'][:12]})"]
    desc = f"input   {inp['name']}  shape {_fmt_dims(inp['shape'])}  {inp['dtype']}"
    if inp["layout"]:
        desc += (f"  layout {inp['layout']}, length {inp['length'] or 'any'}, channels {inp['channels'] or '?'}, "
                 f"batch {inp['batch'] or 'dynamic'}")
    else:
        desc += "  layout ambiguous: give --layout NCL or NLC"
    lines.append(desc)
    for o in info["outputs"]:
        s = f"output  {o['name']}  shape {_fmt_dims(o['shape'] or [])}  ({o['op']})"
        if o["softmax"]:
            s += f"  softmax: not a target, use its input {o['logits']!r} (logits)"
        lines.append(s)
    if info.get("note"):
        lines.append(f"note    {info['note']}")
    lines.append("")
    header = ("tensor", "op", "shape", "layout", "units", "time")
    rows = [header]
    for t in info["tensors"]:
        lay = t["layout"] or "-"
        if t["layout_source"] in ("shape", "default"):
            lay += "?"  # guessed: override with tensor_layout if wrong
        rows.append((t["name"] + ("  [output]" if t["output"] else ""), t["op"], _fmt_dims(t["shape"]), lay,
                     str(t["units"]), "-" if t["time"] is None else str(t["time"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not info["tensors"]:
        lines.append("(no (batch, channels, time) or (batch, features) tensor found)")
    lines.append("")
    lines.append("target: TENSOR:UNIT[@center|mean|max|INDEX]  (unit < units, index < time; logits, never softmax;"
                 " '?' after a layout = guessed)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The scorer
# --------------------------------------------------------------------------------------------------

class OnnxScorer:
    """Scores = activations of target units of an ONNX model (see the module docstring for targets).

    ``__call__(series)``: series ``(n, length)`` or ``(n, channels, length)`` -> ``(n,)`` for one target,
    ``(n, k)`` for k targets. ``objective(scores)`` -> ``(n,)``: ``'sum'`` over targets, ``'contrast'``
    (first target minus the mean of the others, one-hot population control as in Bashivan et al. 2019),
    or a callable ``(n, k) -> (n,)``.

    ``providers``: None (CUDA when onnxruntime has it and it starts, else CPU), ``'cpu'`` or ``'cuda'``;
    when CUDA does not start, one warning and CPU. ``threads``: onnxruntime intra-op threads (0 = its
    default). ``batch_size``: chunk size for a model with a dynamic batch (default: one call).
    ``layout``: the model input's layout when its shape is ambiguous. ``length``: series length for a
    model that accepts any length (default: the length of the first series scored, then fixed).
    ``tensor_layout``: which axis is time in hidden 3-D tensors, when the automatic rule is wrong.
    """

    noisy = False

    def __init__(self, model_path: str | os.PathLike, targets: Target | str | Sequence[Target | str],
                 objective: str | Callable[[np.ndarray], np.ndarray] = "sum", providers: str | None = None,
                 threads: int = 1, batch_size: int | None = None, layout: str | None = None,
                 length: int | None = None, tensor_layout: str | dict | None = None) -> None:
        self.targets = _as_targets(targets)
        if callable(objective):
            self._objective_fn, self.objective_name = objective, getattr(objective, "__name__", "callable")
        elif objective in ("sum", "contrast"):
            self._objective_fn, self.objective_name = None, str(objective)
            if objective == "contrast" and len(self.targets) < 2:
                raise UserError("objective 'contrast' needs at least two targets (the first minus the mean of the others)")
        else:
            raise UserError(f"unknown objective {objective!r}: use sum, contrast or a function (n, k) -> (n,)")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.threads = int(threads) if isinstance(threads, (int, np.integer)) else threads
        self._tensor_layout = tensor_layout
        self._requested_providers = providers

        model, self.sha256, self.model_path = _load(model_path)
        vis = _value_infos(model)
        g = model.graph
        inp = _input_info(model, vis)
        self.input_name: str = inp["name"]
        self._dtype: np.dtype = inp["dtype"]
        self._input_dims = inp["dims"]
        spec = _resolve_layout(inp["dims"], layout, length, inp["name"])
        self.layout: str = spec["layout"]
        self.length: int | None = spec["length"]
        self.channels: int | None = spec["channels"]
        self._fixed_batch: int | None = spec["batch"]
        self.batch_size = self._fixed_batch or (int(batch_size) if batch_size is not None else None)

        # resolve tensor names, refuse softmax, check they depend on the input
        producers = _producers(g)
        reach = _reachable_from(g, self.input_name)
        first_out = g.output[0].name
        targetable = [o for n in g.node for o in n.output if o and o in reach]
        resolved = []
        for t in self.targets:
            name = t.layer if t.layer is not None else first_out
            if name == self.input_name:
                raise UserError(
                    f"tensor {name!r} is the model input, not a unit of the model; "
                    "`xdream-ts inspect MODEL` lists the targetable tensors"
                )
            if name not in producers:
                close = _close_names(name, targetable)
                hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
                raise UserError(
                    f"no tensor named {name!r} in {self.model_path.name}; {hint}`xdream-ts inspect MODEL` lists the targetable tensors"
                )
            if name not in reach:
                raise UserError(
                    f"tensor {name!r} does not depend on the model input (it is a constant or the input itself); "
                    "`xdream-ts inspect MODEL` lists the targetable tensors"
                )
            sm = _softmax_source(g, name, producers)
            if sm is not None:
                raise UserError(
                    f"tensor {name!r} is the output of {sm[0].op_type} node {sm[0].name!r}: softmax saturates and couples "
                    f"the units, target the logits instead, its input {sm[1]!r} (logits, never softmax)"
                )
            resolved.append(name)
        self._resolved = resolved
        self._output_names: list[str] = list(dict.fromkeys(resolved))
        self.target_names: list[str] = [f"{n}:{t.unit}@{t.position}" for n, t in zip(resolved, self.targets)]

        # ranks for layout propagation (from shape inference; refined by the first forward)
        self._graph_ranks = {k: len(d) for k, v in vis.items() if (d := _dims(v)) is not None}
        in_axis = {"NCL": 2, "NLC": 1, "NL": 1}[self.layout]
        self._prop = _time_axes(g, self.input_name, in_axis, self._graph_ranks)

        _prune_to(model, self._output_names, vis)
        self._session = _session(_serialize(model), providers, self.threads, str(self.model_path))
        del model
        self.providers: list[str] = list(self._session.get_providers())
        self._plan: list | None = None
        if self.length is not None and self.channels is not None:
            n = self._fixed_batch or 1
            x = _dummy_input(_model_shape(self.layout, n, self.channels, self.length), self._dtype)
            outs = self._session.run(self._output_names, {self.input_name: x})
            self._build_plan(outs, n)

    # ---- plan: how to read each target from the outputs, precomputed once ----------------------

    def _build_plan(self, outs: list[np.ndarray], n: int) -> None:
        shapes = {nm: np.shape(o) for nm, o in zip(self._output_names, outs)}
        out_idx = {nm: i for i, nm in enumerate(self._output_names)}
        groups: dict[tuple, list] = {}
        reduced = []
        self.target_shapes = {}
        for j, (t, nm) in enumerate(zip(self.targets, self._resolved)):
            shp = shapes[nm]
            self.target_shapes[nm] = shp
            if len(shp) < 2 or shp[0] != n:
                raise UserError(
                    f"tensor {nm!r} has shape {_fmt_dims(shp)}, not (batch, channels, time) or (batch, features); "
                    "pick another with `xdream-ts inspect MODEL`"
                )
            if len(shp) == 2:
                if t.unit >= shp[1]:
                    raise UserError(f"unit {t.unit} out of range for {nm!r}: it has {shp[1]} features, use 0..{shp[1] - 1}")
                if t.position != "center":
                    raise UserError(
                        f"tensor {nm!r} is (batch, features) and has no time axis: drop the position (@{t.position})"
                    )
                groups.setdefault((out_idx[nm], "f"), []).append((j, t.unit, None))
                continue
            if len(shp) != 3:
                raise UserError(
                    f"tensor {nm!r} has shape {_fmt_dims(shp)} (rank {len(shp)}); targets must be (batch, channels, time) "
                    "or (batch, features): pick another with `xdream-ts inspect MODEL`"
                )
            lay, _ = _hidden_layout(nm, shp, self._prop, self.length, self._tensor_layout)
            units, T = (shp[1], shp[2]) if lay == "NCL" else (shp[2], shp[1])
            if t.unit >= units:
                raise UserError(f"unit {t.unit} out of range for {nm!r}: it has {units} channels, use 0..{units - 1}")
            if isinstance(t.position, int) and t.position >= T:
                raise UserError(
                    f"time position {t.position} out of range for {nm!r}: it has {T} time steps, use 0..{T - 1} "
                    "(or center, mean, max)"
                )
            if t.position in ("mean", "max"):
                idx = (slice(None), t.unit, slice(None)) if lay == "NCL" else (slice(None), slice(None), t.unit)
                reduced.append((out_idx[nm], j, idx, np.mean if t.position == "mean" else np.max))
            else:
                pos = T // 2 if t.position == "center" else t.position
                groups.setdefault((out_idx[nm], lay), []).append((j, t.unit, pos))
        plan = []
        for (oi, lay), items in groups.items():
            if len(items) == 1:  # basic indexing: a view, no fancy-index copy
                j, u, p = items[0]
                cols: Any = j
                idx: tuple = ((slice(None), u) if lay == "f" else
                              (slice(None), u, p) if lay == "NCL" else (slice(None), p, u))
            else:
                cols = np.array([it[0] for it in items], dtype=np.intp)
                units = np.array([it[1] for it in items], dtype=np.intp)
                if lay == "f":
                    idx = (slice(None), units)
                else:
                    pos = np.array([it[2] for it in items], dtype=np.intp)
                    idx = (slice(None), units, pos) if lay == "NCL" else (slice(None), pos, units)
            plan.append((oi, cols, idx, None))
        for oi, j, idx, red in reduced:
            plan.append((oi, j, idx, red))
        self._plan = plan
        self._k = len(self.targets)
        # the common case, one target read from one output: no score matrix to fill
        self._single = (plan[0][2], plan[0][3]) if len(plan) == 1 and self._k == 1 else None

    # ---- calling -----------------------------------------------------------------------------------

    def _prepare(self, series: Any) -> np.ndarray:
        x = np.asarray(series)
        if x.ndim == 2:
            n, c, L = x.shape[0], 1, x.shape[1]
        elif x.ndim == 3:
            n, c, L = x.shape
        else:
            raise UserError(
                f"series must be shaped (n, length) or (n, channels, length), got shape {x.shape}; "
                "wrap a single series as series[None]"
            )
        if self.channels is None:
            self.channels = c
        if c != self.channels:
            raise UserError(
                f"the model {self.model_path.name} takes {self.channels} channel(s), the series have {c} "
                f"(shape {x.shape}); give series shaped (n, {self.channels}, length)"
            )
        if self.length is None:
            self.length = L
        if L != self.length:
            raise UserError(
                f"the model {self.model_path.name} takes series of length {self.length}, got length {L}; "
                f"resample them (xdream_ts.series.resample) or choose a decoder with length {self.length}"
            )
        if x.dtype != self._dtype:
            x = x.astype(self._dtype)
        if self.layout == "NL":
            x = x.reshape(n, L)
        elif self.layout == "NCL":
            x = x.reshape(n, c, L)
        elif c == 1:
            x = x.reshape(n, L, 1)
        else:
            x = x.reshape(n, c, L).transpose(0, 2, 1)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x

    def _extract(self, outs: list[np.ndarray], scores: np.ndarray, lo: int, m: int) -> None:
        for oi, cols, idx, red in self._plan:
            a = outs[oi]
            if red is None:
                scores[lo:lo + m, cols] = a[idx][:m]
            else:
                scores[lo:lo + m, cols] = red(a[idx][:m], axis=1)

    def __call__(self, series: np.ndarray) -> np.ndarray:
        x = self._prepare(series)
        n = x.shape[0]
        run, names, feed = self._session.run, self._output_names, self.input_name
        if self._plan is None:
            b0 = self._fixed_batch or min(n, self.batch_size or n) or 1
            first = x[:b0] if x.shape[0] >= b0 else self._pad(x, b0)
            self._build_plan(run(names, {feed: first}), b0)
        step = self.batch_size or n
        if self._single is not None and step >= n > 0 and not self._fixed_batch:  # fast path
            idx, red = self._single
            a = run(names, {feed: x})[0][idx]
            out = (a if red is None else red(a, axis=1)).astype(np.float64)
            if not math.isfinite(np.dot(out, out)) and not np.isfinite(out).all():  # dot: the cheapest NaN/inf probe
                self._raise_nonfinite(x, out[:, None])
            return out
        scores = np.empty((n, self._k), dtype=np.float64)
        if n == 0:
            return scores[:, 0] if self._k == 1 else scores
        if step >= n and not self._fixed_batch:
            self._extract(run(names, {feed: x}), scores, 0, n)
        else:
            for lo in range(0, n, step):
                chunk = x[lo:lo + step]
                m = chunk.shape[0]
                if self._fixed_batch and m < step:
                    chunk = self._pad(chunk, step)
                self._extract(run(names, {feed: chunk}), scores, lo, m)
        flat = scores.reshape(-1)
        if not math.isfinite(np.dot(flat, flat)) and not np.isfinite(scores).all():
            self._raise_nonfinite(x, scores)
        return scores[:, 0] if self._k == 1 else scores

    @staticmethod
    def _pad(x: np.ndarray, b: int) -> np.ndarray:
        out = np.zeros((b,) + x.shape[1:], dtype=x.dtype)
        out[: x.shape[0]] = x
        return out

    def _raise_nonfinite(self, x: np.ndarray, scores: np.ndarray) -> None:
        flat = x.reshape(x.shape[0], -1)
        bad_in = np.flatnonzero(~np.isfinite(flat).all(axis=1))
        if bad_in.size:
            raise UserError(
                f"input rows {_rows(bad_in)} (of {x.shape[0]}) contain NaN or inf; fix the decoder or the data that made them"
            )
        bad = ~np.isfinite(scores)
        rows = np.flatnonzero(bad.any(axis=1))
        tnames = [self.target_names[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise UserError(
            f"the model gave NaN or inf for target {', '.join(tnames)} on input rows {_rows(rows)} (of {x.shape[0]}); "
            "check the input scale (series are z-normalised by default; the model may expect another scaling)"
        )

    # ---- objective and description ---------------------------------------------------------------

    def objective(self, scores: np.ndarray) -> np.ndarray:
        """(n,) or (n, k) scores -> (n,) value to maximise."""
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim == 1:
            s = s[:, None]
        if self._objective_fn is not None:
            out = np.asarray(self._objective_fn(s), dtype=np.float64)
            if out.shape != (s.shape[0],):
                raise UserError(
                    f"the objective function {self.objective_name} returned shape {out.shape}, expected ({s.shape[0]},): "
                    "it must map (n, k) scores to one value per series"
                )
            return out
        if self.objective_name == "contrast":
            return s[:, 0] - s[:, 1:].mean(axis=1)
        return s.sum(axis=1)

    def describe(self) -> dict:
        """JSON-able configuration, for the run store."""
        return {
            "kind": "onnx",
            "model_path": str(self.model_path),
            "sha256": self.sha256,
            "input_name": self.input_name,
            "layout": self.layout,
            "length": self.length,
            "channels": self.channels,
            "fixed_batch": self._fixed_batch,
            "batch_size": self.batch_size,
            "targets": [
                {"layer": t.layer, "tensor": nm, "unit": t.unit, "position": t.position}
                for t, nm in zip(self.targets, self._resolved)
            ],
            "target_names": list(self.target_names),
            "objective": self.objective_name,
            "providers": list(self.providers),
            "requested_providers": self._requested_providers,
            "threads": self.threads,
            "tensor_layout": self._tensor_layout,
        }

    def __repr__(self) -> str:
        return (f"OnnxScorer({self.model_path.name!r}, targets={self.target_names}, objective={self.objective_name!r}, "
                f"providers={self.providers})")


def _close_names(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """The names closest to ``name``: difflib on lower case, then names containing it."""
    low = {x.lower(): x for x in names}
    close = [low[c] for c in difflib.get_close_matches(name.lower(), list(low), n=n, cutoff=0.5)]
    key = name.lower().strip("/")
    close += [x for x in names if key and key in x.lower() and x not in close]
    if not close:
        # exports prefix names (/block2/Relu_output_0): compare with the name's parts too
        parts = {}
        for x in names:
            for piece in re.split(r"[/.:_]+", x.lower()):
                if piece:
                    parts.setdefault(piece, x)
        close = [parts[c] for c in difflib.get_close_matches(key, list(parts), n=n, cutoff=0.6)]
    return list(dict.fromkeys(close))[:n]


def _rows(idx: np.ndarray, limit: int = 8) -> str:
    s = ", ".join(str(int(i)) for i in idx[:limit])
    return f"[{s}{', ...' if idx.size > limit else ''}]"
