"""The ONNX graph: loading a model, its declared shapes, pruning it to the tensors a scorer reads,
which tensors depend on the input, where the time axis of a hidden tensor is, softmax outputs, the
logits fused into a scikit-learn classifier node, and the default target (the logits) when none is named.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xdream_ts.errors import UserError

SOFTMAX_OPS = ("Softmax", "LogSoftmax")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

def load_model(path: str | os.PathLike) -> tuple[Any, str, Path]:
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


def serialize(model: Any) -> bytes:
    try:
        return model.SerializeToString()
    except ValueError:  # protobuf's 2 GiB limit
        raise UserError(
            "the model is larger than 2 GiB, which this scorer cannot hand to onnxruntime in memory; "
            "export a smaller model or score it through a remote endpoint"
        ) from None


# --------------------------------------------------------------------------------------------------
# Declared shapes and types
# --------------------------------------------------------------------------------------------------

def value_infos(model: Any) -> dict[str, Any]:
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


def dims(vi: Any) -> list[int | str | None] | None:
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


def np_dtype(elem_type: int) -> np.dtype:
    import onnx

    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        dt = np.dtype("O")
    return dt


def is_float_tensor(vi: Any) -> bool | None:
    """True/False for a tensor of known element type; None when unknown; False for sequences and maps
    (a ZipMap's output, say)."""
    if vi is None:
        return None
    if not vi.type.HasField("tensor_type"):
        return False if vi.type.WhichOneof("value") else None
    et = vi.type.tensor_type.elem_type
    return np_dtype(et).kind == "f" if et else None


def real_inputs(graph: Any) -> list[Any]:
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def input_info(model: Any) -> dict:
    """The model's one real input: name, declared dims, numpy dtype (a float), or a one-line refusal."""
    ins = real_inputs(model.graph)
    if len(ins) != 1:
        raise UserError(
            f"the model has {len(ins)} inputs ({', '.join(i.name for i in ins)}); xdream_ts scores single-input "
            "models: export a wrapper that takes the series only"
        )
    vi = ins[0]
    d = dims(vi)
    if d is None:
        raise UserError(f"model input {vi.name!r} has no declared shape; re-export the model with input shapes")
    dtype = np_dtype(vi.type.tensor_type.elem_type)
    if dtype.kind != "f":
        raise UserError(
            f"model input {vi.name!r} has type {dtype}; xdream_ts feeds real-valued series (float): "
            "re-export the model with a float input"
        )
    return {"name": vi.name, "dims": d, "dtype": dtype}


# --------------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------------

def subgraph_names(node: Any) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            for n in g.node:
                names.update(n.input)
                names.update(subgraph_names(n))
    return names


def producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output if o}


def reachable_from(graph: Any, source: str) -> set[str]:
    """Tensors that depend on ``source`` (nodes are topologically sorted in a valid ONNX graph)."""
    reach = {source}
    for n in graph.node:
        ins = set(n.input) | subgraph_names(n)
        if ins & reach:
            reach.update(o for o in n.output if o)
    return reach


def prune_to(model: Any, outputs: Sequence[str], vis: dict[str, Any]) -> None:
    """In place: make ``outputs`` the graph outputs and drop the nodes and weights they do not need."""
    import onnx

    g = model.graph
    needed = set(outputs)
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
            needed.update(subgraph_names(n))
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


# --------------------------------------------------------------------------------------------------
# Softmax outputs, logits, the default target
# --------------------------------------------------------------------------------------------------

# Ops a class score passes through unchanged in meaning: a softmax output stays one after them. skl2onnx
# puts an L1 Normalizer after a classifier's probabilities and a ZipMap (a list of {class: p}) last.
_PASS_OPS = ("Identity", "Cast", "Normalizer", "ZipMap")


# ai.onnx.ml classifiers fuse the last step into the node (``post_transform``): their score output is
# then a probability with no logits tensor before it. These two have an exact standalone op.
_POST_TRANSFORM_OPS = {b"SOFTMAX": "Softmax", b"LOGISTIC": "Sigmoid"}
LOGITS_SUFFIX = "_logits"


def expose_logits(model: Any) -> list[str]:
    """In place: split a classifier node's fused softmax/logistic ``post_transform`` (scikit-learn
    models exported by skl2onnx: LinearClassifier, SVMClassifier, TreeEnsembleClassifier of gradient
    boosting) into the node with ``post_transform=NONE``, whose score output becomes the tensor
    ``SCORES_logits``, and an explicit Softmax/Sigmoid that gives ``SCORES`` as before. The logits then
    are a tensor like any other, to list, target and store by name. Returns the new tensor names."""
    import onnx

    g = model.graph
    taken = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    nodes, made = [], []
    for n in g.node:
        nodes.append(n)
        if not _is_classifier(n) or len(n.output) < 2:
            continue
        attr = next((a for a in n.attribute if a.name == "post_transform"), None)
        op = _POST_TRANSFORM_OPS.get(attr.s) if attr is not None else None
        if op is None or not n.output[1]:
            continue
        scores = n.output[1]
        logits = scores + LOGITS_SUFFIX
        while logits in taken:
            logits += "_"
        taken.add(logits)
        attr.s = b"NONE"
        n.output[1] = logits
        kw = {"axis": 1} if op == "Softmax" else {}  # axis 1 of (batch, classes) in every opset's Softmax
        nodes.append(onnx.helper.make_node(op, [logits], [scores], name=f"{n.name or n.op_type}/{op}", **kw))
        made.append(logits)
    if made:
        del g.node[:]
        g.node.extend(nodes)
    return made


def softmax_source(name: str, producers: dict[str, Any]) -> tuple[Any, str] | None:
    """(Softmax node, its input) when ``name`` is a softmax output (through Identity, Cast, an L1
    Normalizer or a ZipMap), or the logistic of a classifier's scores; else None."""
    seen = 0
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_OPS and seen < 16:
        node = producers.get(node.input[0])
        seen += 1
    if node is not None and node.op_type in SOFTMAX_OPS:
        return node, node.input[0]
    if node is not None and node.op_type == "Sigmoid" and _is_classifier(producers.get(node.input[0])):
        return node, node.input[0]  # a classifier's logistic post-transform: probabilities, as a softmax's
    return None


def _is_classifier(node: Any) -> bool:
    return node is not None and node.domain == "ai.onnx.ml" and node.op_type.endswith("Classifier")


def _through(name: str, producers: dict[str, Any], ops: tuple[str, ...]) -> str:
    """Walk back from ``name`` through nodes of ``ops`` (first input), to the tensor before them."""
    for _ in range(16):
        node = producers.get(name)
        if node is None or node.op_type not in ops or not node.input:
            break
        name = node.input[0]
    return name


def default_target(graph: Any, vis: dict[str, Any], producers: dict[str, Any], reach: set[str]) -> tuple[str, str | None]:
    """The tensor a target without a tensor name drives: the model's logits, and why, in words.

    The first graph output that is a floating-point tensor of rank 2 or 3 (an integer ``label``, as
    scikit-learn exports put first, is skipped), read before a ZipMap (skl2onnx turns class scores into
    a list of dicts) and before a Softmax (logits, never softmax). The reason is None when that is simply
    the first output; else a few words on what was chosen instead, for the user to read once.
    """
    first = graph.output[0].name if graph.output else None
    for o in graph.output:
        name = o.name
        zipped = producers.get(name) is not None and producers[name].op_type == "ZipMap"
        name = _through(name, producers, _PASS_OPS)
        if name not in reach or name not in producers:
            continue
        if is_float_tensor(vis.get(name)) is False:
            continue
        d = dims(vis.get(name))
        if d is not None and len(d) not in (2, 3):
            continue
        sm = softmax_source(name, producers)
        if sm is not None:
            return sm[1], f"the logits before {sm[0].op_type} node {sm[0].name!r} (output {o.name!r})"
        if name == first:
            return name, None
        if zipped or _is_probabilities(name, producers):
            return name, f"the class probabilities (output {o.name!r}): this model has no logits"
        return name, f"the first floating-point output (output {o.name!r})"
    if first is None:
        raise UserError("the model has no outputs; re-export it with its outputs")
    return first, None  # nothing fits: the scorer says why the first output cannot be a target


def _is_probabilities(name: str, producers: dict[str, Any]) -> bool:
    # ai.onnx.ml classifiers (TreeEnsembleClassifier, SVMClassifier, ...) give (label, probabilities)
    node = producers.get(name)
    return node is not None and node.op_type.endswith("Classifier") and list(node.output).index(name) == 1


# --------------------------------------------------------------------------------------------------
# Time axes of hidden tensors
# --------------------------------------------------------------------------------------------------

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


def time_axes(graph: Any, input_name: str, input_axis: int, ranks: dict[str, int]) -> dict[str, int]:
    """Tensor name -> index of its time axis, propagated from the input's: Conv/Pool/BatchNorm outputs
    are channels-first (the ONNX convention), ``Transpose`` permutes the axis, ``Unsqueeze``/``Squeeze``
    shift it, element-wise ops and ``MatMul`` over features keep it (so a Keras model's ``Transpose``
    back to channels-last is followed)."""
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


def hidden_layout(name: str, shape: tuple, prop: dict[str, int], length: int | None,
                  override: str | dict | None) -> tuple[str, str]:
    """(layout 'NCL'|'NLC', how it was decided: 'override'|'graph'|'shape'|'default') of a 3-D tensor.

    In this order: 1. ``override`` (``'NCL'``/``'NLC'``, or a dict ``{tensor name: layout}``);
    2. ``prop``, the time axes traced through the graph by :func:`time_axes`; 3. the shape: when exactly
    one of the two non-batch dims equals the input ``length``, that one is time; 4. channels-first.
    """
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
