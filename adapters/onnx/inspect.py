"""What a user can target in an ONNX model: its input, outputs and every (batch, channels, time) or
(batch, features) tensor, with shapes from one dummy forward pass; as a dict and as a table.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from xdream_ts.errors import UserError

from .graph import (default_target, expose_logits, hidden_layout, input_info, load_model, np_dtype, producers, prune_to, reachable_from,
                    serialize, softmax_source, time_axes, value_infos, dims as declared_dims)
from .layouts import TIME_AXIS, fmt_dims, model_shape, rank_message, resolve_layout
from .sessions import dummy_input, make_session

DUMMY_LENGTH = 256  # the length inspect_model runs a model that accepts any length at, when none is given


def inspect_model(path: str | os.PathLike, length: int | None = None, layout: str | None = None,
                  tensor_layout: str | dict | None = None) -> dict:
    """Inputs, outputs and every targetable tensor of an ONNX model, as a JSON-able dict.

    Shapes come from one forward pass on a dummy input (of the model's length; of ``length``, or 256
    samples, when the model accepts any length), falling back to shape inference when it cannot run.
    Each tensor entry: name, op (the node type that produced it), node, shape (batch dim as 'batch'),
    output (a graph output), default (the default target), kind ('channels-time' or 'features'),
    layout ('NCL'/'NLC'/None), layout_source, units, time. ``default_target``: the tensor a target
    without a tensor name drives (the logits) and why, when it is not simply the first output.
    """
    import onnx

    model, sha, p = load_model(path)
    expose_logits(model)
    vis = value_infos(model)
    g = model.graph
    inp = input_info(model)
    prod = producers(g)
    if len(inp["dims"]) not in (2, 3):
        raise UserError(rank_message(inp["name"], inp["dims"]))
    try:
        spec = resolve_layout(inp["dims"], layout, length, inp["name"])
        layout_error = None
    except UserError as e:  # ambiguous layout: still list what shape inference knows
        if layout is not None or length is not None:
            raise
        spec, layout_error = None, str(e)

    reach = reachable_from(g, inp["name"])
    default, default_why = default_target(g, vis, prod, reach)
    out_names = [o.name for o in g.output]
    cand = []
    for n in g.node:
        for o in n.output:
            if not o or o not in reach or o == inp["name"]:
                continue
            vi = vis.get(o)
            if vi is not None and vi.type.HasField("tensor_type"):
                et = vi.type.tensor_type.elem_type
                if et and np_dtype(et).kind != "f":
                    continue
            cand.append(o)

    shapes: dict[str, tuple] = {}
    note = None
    batch = None
    if spec is not None:
        batch = spec["batch"] or 2
        run_len = spec["length"] or DUMMY_LENGTH
        chans = spec["channels"] or 1
        if spec["length"] is None:
            note = f"the model accepts any length: shapes shown for a dummy length of {run_len}"
        try:
            m2 = onnx.ModelProto()
            m2.CopyFrom(model)
            prune_to(m2, cand, vis)
            sess = make_session(serialize(m2), "cpu", 1, str(p))
            x = dummy_input(model_shape(spec["layout"], batch, chans, run_len), inp["dtype"])
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
            d = declared_dims(vis.get(o))
            if d is not None:
                shapes[o] = tuple(d)
    ranks = {k: len(v) for k, v in shapes.items()}
    ranks[inp["name"]] = len(inp["dims"])
    for k, v in vis.items():
        d = declared_dims(v)
        if d is not None:
            ranks.setdefault(k, len(d))
    prop = time_axes(g, inp["name"], TIME_AXIS[spec["layout"]], ranks) if spec else {}
    run_len = (spec["length"] or DUMMY_LENGTH) if spec else None

    tensors = []
    for o in cand:
        shp = shapes.get(o)
        if shp is None or len(shp) not in (2, 3):
            continue
        if batch is not None and shp[0] != batch:
            continue
        if softmax_source(o, prod) is not None:
            continue
        node = prod[o]
        entry: dict[str, Any] = {"name": o, "op": node.op_type, "node": node.name,
                                 "shape": ["batch"] + list(shp[1:]), "output": o in out_names, "default": o == default}
        if len(shp) == 2:
            entry.update(kind="features", layout=None, layout_source=None, units=shp[1], time=None)
        else:
            lay, src = hidden_layout(o, shp, prop, run_len, tensor_layout)
            units, time = (shp[1], shp[2]) if lay == "NCL" else (shp[2], shp[1])
            entry.update(kind="channels-time", layout=lay, layout_source=src, units=units, time=time)
        tensors.append(entry)

    outputs = []
    for o in g.output:
        sm = softmax_source(o.name, prod)
        outputs.append({
            "name": o.name,
            "shape": (["batch"] + list(shapes[o.name][1:])) if o.name in shapes else _jsonable_dims(declared_dims(o) or []),
            "op": prod[o.name].op_type if o.name in prod else None,
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
        "default_target": {"name": default, "why": default_why},
        "note": note,
    }


def _jsonable_dims(dims: Sequence) -> list:
    return [d if d is not None else "?" for d in dims]


def format_inspection(info: dict) -> str:
    """A readable, aligned table of ``inspect_model``'s result."""
    inp = info["input"]
    lines = [f"model   {info['path']}  (sha256 {info['sha256'][:12]})"]
    desc = f"input   {inp['name']}  shape {fmt_dims(inp['shape'])}  {inp['dtype']}"
    if inp["layout"]:
        desc += (f"  layout {inp['layout']}, length {inp['length'] or 'any'}, channels {inp['channels'] or '?'}, "
                 f"batch {inp['batch'] or 'dynamic'}")
    else:
        desc += "  layout ambiguous: give --layout NCL or NLC"
    lines.append(desc)
    for o in info["outputs"]:
        s = f"output  {o['name']}  shape {fmt_dims(o['shape'] or [])}  ({o['op']})"
        if o["softmax"]:
            s += f"  softmax: not a target, use its input {o['logits']!r} (logits)"
        lines.append(s)
    dflt = info.get("default_target") or {}
    if dflt.get("name"):
        lines.append(f"default {dflt['name']}  (the target when none is named: {dflt.get('why') or 'the first output'})")
    if info.get("note"):
        lines.append(f"note    {info['note']}")
    lines.append("")
    header = ("tensor", "op", "shape", "layout", "units", "time")
    rows = [header]
    for t in info["tensors"]:
        lay = t["layout"] or "-"
        if t["layout_source"] in ("shape", "default"):
            lay += "?"  # guessed: override with tensor_layout if wrong
        mark = ("  [output]" if t["output"] else "") + ("  [default]" if t.get("default") else "")
        rows.append((t["name"] + mark, t["op"], fmt_dims(t["shape"]), lay,
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
