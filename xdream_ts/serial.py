"""JSON encoding of optimizer/scorer state, exact and without pickle.

Run stores travel between people, so nothing in them may execute code when read. State dicts may hold
numpy arrays, numpy scalars, nested dicts/lists and numpy Generator states; arrays are stored as
base64 of their raw bytes (exact to the bit, any dtype), everything else as plain JSON.
"""
from __future__ import annotations

import base64
import json

import numpy as np

_ARRAY = "__ndarray__"


def _encode(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays cannot be stored safely; convert to a numeric dtype")
        a = np.ascontiguousarray(obj)
        return {_ARRAY: base64.b64encode(a.tobytes()).decode("ascii"), "dtype": a.dtype.str, "shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _decode(obj):
    if isinstance(obj, dict):
        if _ARRAY in obj:
            raw = base64.b64decode(obj[_ARRAY])
            return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        if "__float__" in obj and len(obj) == 1:
            return float(obj["__float__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def dumps(state: dict) -> str:
    return json.dumps(_encode(state), separators=(",", ":"), allow_nan=False)


def loads(text: str) -> dict:
    return _decode(json.loads(text))


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state
