"""Input layouts: which axis of a model's declared input shape is time and which is channels, and
the transposition from the project's series convention, ``(n, length)`` or ``(n, channels, length)``,
to the model's layout. Shared by the ONNX scorer and the remote scorer (the same rules for a model
file and for the shape an inference server declares).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from xdream_ts.errors import UserError

LAYOUTS = ("NCL", "NLC", "NL")
TIME_AXIS = {"NCL": 2, "NLC": 1, "NL": 1}


def input_layout(dims: Sequence, override: str | None, name: str) -> str:
    """The layout of a declared input shape (the rules are :func:`resolve_layout`'s)."""
    rank = len(dims)
    if override is not None:
        lay = str(override).upper()
        if lay not in LAYOUTS:
            raise UserError(f"unknown layout {override!r}: use NCL (batch, channels, length), NLC or NL")
        if (lay == "NL") != (rank == 2):
            raise UserError(
                f"layout {lay} does not fit the model input {name!r} of rank {rank} (shape {fmt_dims(dims)}); "
                f"use {'NL' if rank == 2 else 'NCL or NLC'}"
            )
        if rank not in (2, 3):
            raise UserError(rank_message(name, dims))
        return lay
    if rank == 2:
        return "NL"
    if rank != 3:
        raise UserError(rank_message(name, dims))
    a, b = dims[1], dims[2]
    ka, kb = _known(a), _known(b)
    if ka and kb and a != b:
        return "NCL" if a < b else "NLC"
    if ka and not kb:
        return "NCL"  # (batch, C, L?) : the symbolic dim is the length
    if kb and not ka:
        return "NLC"
    raise UserError(
        f"cannot tell channels from time in the model input {name!r} of shape {fmt_dims(dims)}; "
        "give --layout NCL (batch, channels, length) or NLC (batch, length, channels)"
    )


def resolve_layout(dims: Sequence, layout: str | None = None, length: int | None = None,
                   name: str = "input") -> dict:
    """Layout, length, channels and fixed batch of a model input of declared shape ``dims``.

    ``dims``: ints when known; a symbol name, None, or a non-positive int (an inference server's -1)
    when dynamic. ``layout`` (``'NCL'``, ``'NLC'``, ``'NL'``) overrides the rules; ``length`` fixes
    the length of an input that accepts any (it must agree with a fixed one). The rules:

    - ``(batch, length)`` -> ``NL``;
    - ``(batch, 1, length)`` -> ``NCL``; ``(batch, length, 1)`` -> ``NLC`` (Keras-style channels-last);
    - ``(batch, a, b)`` with both known and different: the smaller is channels (``(batch, 3, 500)`` is
      NCL, ``(batch, 500, 3)`` is NLC); with exactly one dynamic, the dynamic one is the length;
      otherwise (``(batch, 3, 3)``, both dynamic) it is ambiguous and ``layout`` must be given.

    Returns ``{"layout", "length" (None: any), "length_dynamic", "channels" (None: unknown),
    "batch" (None: dynamic)}``; a shape that fits none of these is a one-line ``UserError``.
    """
    dims = list(dims)
    lay = input_layout(dims, layout, name)
    if lay == "NL":
        l_dim, c_dim = dims[1], 1
    elif lay == "NCL":
        c_dim, l_dim = dims[1], dims[2]
    else:
        l_dim, c_dim = dims[1], dims[2]
    fixed_len = l_dim if _known(l_dim) else None
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
            raise UserError(f"length must be a positive integer, got {length!r}")
        if fixed_len is not None and fixed_len != length:
            raise UserError(
                f"length {length} given, but the model input {name!r} has a fixed length of {fixed_len}; "
                f"drop --length or use {fixed_len}"
            )
        fixed_len = int(length)
    return {"layout": lay, "length": fixed_len, "length_dynamic": not _known(l_dim),
            "channels": c_dim if _known(c_dim) else None,
            "batch": dims[0] if _known(dims[0]) else None}


def model_shape(layout: str, n: int, channels: int, length: int) -> tuple[int, ...]:
    """The shape of ``n`` series in the model's layout."""
    if layout == "NL":
        return (n, length)
    if layout == "NCL":
        return (n, channels, length)
    return (n, length, channels)


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """``(n, length)`` or ``(n, channels, length)`` series -> the model's layout (C-contiguous)."""
    n, L = x.shape[0], x.shape[-1]
    c = x.shape[1] if x.ndim == 3 else 1
    if layout == "NL":
        if c != 1:
            raise UserError(f"the model takes one channel (layout NL), the series have {c}")
        x = x.reshape(n, L)
    elif layout == "NCL":
        x = x.reshape(n, c, L)
    elif c == 1:
        x = x.reshape(n, L, 1)
    else:
        x = x.reshape(n, c, L).transpose(0, 2, 1)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def rank_message(name: str, dims: Sequence) -> str:
    return (
        f"model input {name!r} has shape {fmt_dims(dims)} (rank {len(dims)}); xdream_ts feeds series shaped "
        "(batch, length), (batch, channels, length) or (batch, length, channels): re-export the model with one of these"
    )


def fmt_dims(dims: Sequence) -> str:
    return "(" + ", ".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in dims) + ")"


def _known(d) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
