"""The ONNX scorer: the activations of target units of a model exported to ONNX, as the scores of
series. Targets (``TENSOR:UNIT[@POSITION]``) are :mod:`xdream_ts.targets`'s; logits, never softmax: a
target that a ``Softmax`` produces is refused, naming the logits to use instead.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import sys
from typing import Any, Callable, Sequence

import numpy as np

from xdream_ts.errors import UserError
from xdream_ts.objective import Objective
from xdream_ts.targets import Target, as_targets

from .graph import (default_target, dims, expose_logits, hidden_layout, input_info, load_model, producers, prune_to,
                    reachable_from, serialize, softmax_source, time_axes, value_infos)
from .layouts import TIME_AXIS, fmt_dims, model_shape, resolve_layout, to_layout
from .sessions import dummy_input, make_session


class OnnxScorer:
    """Scores = activations of target units of an ONNX model (targets: :mod:`xdream_ts.targets`).

    ``__call__(series)``: series ``(n, length)`` or ``(n, channels, length)`` -> ``(n,)`` for one target,
    ``(n, k)`` for k targets. ``objective(scores)`` -> ``(n,)``: ``'sum'`` over targets, ``'contrast'``
    (first target minus the mean of the others, one-hot population control as in Bashivan et al. 2019),
    or a callable ``(n, k) -> (n,)``.

    ``providers``: None (CUDA when onnxruntime has it and it starts, else CPU), ``'cpu'`` or ``'cuda'``;
    when CUDA does not start, one warning and CPU. ``threads``: onnxruntime intra-op threads (0 = its
    default). ``batch_size``: chunk size for a model with a dynamic batch (default: one call).
    ``layout``: the model input's layout when its shape is ambiguous. ``length``: series length for a
    model that accepts any length (default: the length of the first series scored, then fixed).
    ``tensor_layout``: which axis is time in hidden 3-D tensors, when the automatic rule is wrong
    (:func:`~xdream_ts.adapters.onnx.graph.hidden_layout` gives the rule).

    Series are given as ``(n, length)`` or ``(n, channels, length)`` and transposed to the model's layout
    (:func:`~xdream_ts.adapters.onnx.layouts.resolve_layout`); a wrong length or channel count is an error,
    never a silent reshape. A model with a fixed batch size B gets chunks of B (the last one zero-padded,
    padded rows dropped); a dynamic batch gets one call, or chunks of ``batch_size``.
    """

    noisy = False

    def __init__(self, model_path: str | os.PathLike, targets: Target | str | Sequence[Target | str],
                 objective: str | Callable[[np.ndarray], np.ndarray] = "sum", providers: str | None = None,
                 threads: int = 1, batch_size: int | None = None, layout: str | None = None,
                 length: int | None = None, tensor_layout: str | dict | None = None) -> None:
        self.targets = as_targets(targets)
        self.objective_fn = Objective(objective, n_targets=len(self.targets))
        self.objective_name: str = self.objective_fn.name
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.threads = int(threads) if isinstance(threads, (int, np.integer)) else threads
        self._tensor_layout = tensor_layout
        self._requested_providers = providers

        model, self.sha256, self.model_path = load_model(model_path)
        expose_logits(model)  # before the shapes: the logits tensors it makes need theirs
        vis = value_infos(model)
        g = model.graph
        inp = input_info(model)
        self.input_name: str = inp["name"]
        self._dtype: np.dtype = inp["dtype"]
        self._input_dims = inp["dims"]
        spec = resolve_layout(inp["dims"], layout, length, inp["name"])
        self.layout: str = spec["layout"]
        self.length: int | None = spec["length"]
        self.channels: int | None = spec["channels"]
        self._fixed_batch: int | None = spec["batch"]
        self.batch_size = self._fixed_batch or (int(batch_size) if batch_size is not None else None)

        # resolve tensor names, refuse softmax, check they depend on the input
        prod = producers(g)
        reach = reachable_from(g, self.input_name)
        targetable = [o for n in g.node for o in n.output if o and o in reach]
        resolved = []
        for t in self.targets:
            name = t.layer
            if name is None:
                name, why = default_target(g, vis, prod, reach)
                if why is not None:
                    _say_once((self.sha256, name), f"default target {name!r}, {why}; name another with --layer")
            if name == self.input_name:
                raise UserError(
                    f"tensor {name!r} is the model input, not a unit of the model; "
                    "`xdream-ts inspect MODEL` lists the targetable tensors"
                )
            if name not in prod:
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
            sm = softmax_source(name, prod)
            if sm is not None:
                raise UserError(
                    f"tensor {name!r} comes out of {sm[0].op_type} node {sm[0].name!r}: softmax saturates and couples "
                    f"the units, target the logits instead, its input {sm[1]!r} (logits, never softmax)"
                )
            if prod[name].op_type == "ZipMap":
                raise UserError(
                    f"tensor {name!r} is a ZipMap output (a list of {{class: probability}} maps, not a tensor): "
                    f"target its input {prod[name].input[0]!r}"
                )
            resolved.append(name)
        self._resolved = resolved
        self._output_names: list[str] = list(dict.fromkeys(resolved))
        self.target_names: list[str] = [f"{n}:{t.unit}@{t.position}" for n, t in zip(resolved, self.targets)]

        # ranks for layout propagation (from shape inference; refined by the first forward)
        self._graph_ranks = {k: len(d) for k, v in vis.items() if (d := dims(v)) is not None}
        self._prop = time_axes(g, self.input_name, TIME_AXIS[self.layout], self._graph_ranks)

        prune_to(model, self._output_names, vis)
        self._session = make_session(serialize(model), providers, self.threads, str(self.model_path))
        del model
        self.providers: list[str] = list(self._session.get_providers())
        self._plan: list | None = None
        if self.length is not None and self.channels is not None:
            n = self._fixed_batch or 1
            x = dummy_input(model_shape(self.layout, n, self.channels, self.length), self._dtype)
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
                    f"tensor {nm!r} has shape {fmt_dims(shp)}, not (batch, channels, time) or (batch, features); "
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
                    f"tensor {nm!r} has shape {fmt_dims(shp)} (rank {len(shp)}); targets must be (batch, channels, time) "
                    "or (batch, features): pick another with `xdream-ts inspect MODEL`"
                )
            lay, _ = hidden_layout(nm, shp, self._prop, self.length, self._tensor_layout)
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
        return to_layout(x, self.layout)

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
        """(n,) or (n, k) scores -> (n,) value to maximise (see :class:`xdream_ts.objective.Objective`)."""
        return self.objective_fn(scores)

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


_SAID: set = set()


def _say_once(key: Any, line: str) -> None:
    # The CLI builds a target more than once (the scorer, its clean twin, a resume): one line is enough.
    if key not in _SAID:
        _SAID.add(key)
        print(f"xdream-ts: {line}", file=sys.stderr)


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
