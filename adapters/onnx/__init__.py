"""ONNX models as scorers: the activation of a unit of a model exported to ONNX is the score of a series.

    graph.py     loading, declared shapes, pruning, time axes of hidden tensors, softmax, default target
    layouts.py   input layouts (which axis is time, which channels), shared with the remote scorer
    sessions.py  onnxruntime sessions (CUDA when it starts, else CPU)
    inspect.py   what a model offers as targets (``xdream-ts inspect``)
    scorer.py    OnnxScorer

onnx and onnxruntime are imported inside functions, so that ``import xdream_ts`` stays fast.
"""
from xdream_ts.targets import Target, parse_position, parse_target

from .graph import load_model
from .inspect import format_inspection, inspect_model
from .layouts import model_shape, resolve_layout
from .scorer import OnnxScorer

__all__ = [
    "Target",
    "parse_target",
    "parse_position",
    "OnnxScorer",
    "inspect_model",
    "format_inspection",
    "load_model",
    "resolve_layout",
    "model_shape",
]
