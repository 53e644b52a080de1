"""`xdream-ts inspect MODEL`: what an ONNX model lets you target (inputs, outputs, every hidden tensor)."""
from __future__ import annotations

import json


def add_cli(sub) -> None:
    p = sub.add_parser("inspect", help="list the targetable tensors of an ONNX model",
                       description="Inputs, outputs and every intermediate tensor you can target with "
                                   "`xdream-ts run --model MODEL --layer TENSOR --unit K`, with shapes as "
                                   "(batch, channels, time) or (batch, features).")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--length", type=int, help="series length for a model that accepts any length")
    p.add_argument("--layout", help="input layout when ambiguous: NCL, NLC or NL")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from .adapters.onnx import format_inspection, inspect_model
    info = inspect_model(args.model, length=args.length, layout=args.layout)
    print(json.dumps(info) if args.json else format_inspection(info))
    return 0
