"""Torch scorer: the activation of a unit of a ``torch.nn.Module``, differentiable end to end.

The gradient-free optimizers only ever call ``scorer(series)`` (numpy in, numpy out, under
``torch.no_grad``). Gradient-based methods (Sequence Dreaming, inverse sets) call
``scorer.torch_forward(x)`` on a tensor and backpropagate to the input.

A target uses the ONNX scorer's syntax (``Target(layer, unit, position)``, or the string
``'LAYER:UNIT[@POSITION]'``): LAYER is a submodule name from ``dict(module.named_modules())``
(e.g. ``'block2.relu_out'``), or a friendly alias from ``layer_names`` (``from_reference`` maps the
ONNX tensor names of the shipped model, ``'block2/out'``, to its submodules); ``None`` (or an empty
name) is the module's output. The activation is read with a forward hook on that submodule. Hidden
3-D outputs are ``(batch, channels, time)`` (torch's convention; ``tensor_layout='NLC'`` for a module
that keeps time second). POSITION is ``center`` (``T // 2``), an integer time index, ``mean`` or
``max`` over time; 2-D outputs ``(batch, features)`` take no position.

Logits, never softmax: a target on an ``nn.Softmax``/``nn.LogSoftmax`` submodule is refused.

The forward pass stops as soon as every target tensor has been computed (an exception raised from the
last hook), so a unit of an early block costs only the layers up to it, as the ONNX scorer's graph
pruning does; the two scorers therefore count the same work per evaluation.

ONNX -> torch: ``TorchScorer.from_onnx`` converts with onnx2torch when it is installed. onnx2torch
imports torchvision, so it is an optional extra, never a dependency of xdream-ts.

torch is imported inside functions, so that ``import xdream_ts`` stays light.
"""
from __future__ import annotations

import difflib
import hashlib
from typing import Any, Sequence

import numpy as np

from xdream_ts.errors import UserError, require_torch

from xdream_ts.objective import Objective
# one Target type for both scorers, so a target written for ONNX works here unchanged
from xdream_ts.targets import Target, as_targets, parse_position, parse_target

__all__ = ["TorchScorer", "Target", "parse_target", "parse_position", "layer_names_from_onnx"]

_LAYOUTS = ("NCL", "NLC", "NL")


class _Stop(Exception):
    """Raised from the last needed hook to end the forward pass early (never escapes this module)."""


class TorchScorer:
    """Score series by the activation of units of a torch module (``module`` is put in eval mode).

    module       a ``torch.nn.Module`` taking (batch, [channels,] length)
    targets      a Target, a 'LAYER:UNIT@POSITION' string, or a list of them
    objective    'sum' (default), 'contrast' (first minus mean of others) or a function (n, k) -> (n,);
                 a function is also called on torch tensors by ``torch_objective`` (gradient methods),
                 so write it with operations numpy and torch share (``s[:, 0] - s[:, 1]``, ``.sum(-1)``)
    device       'cpu' (default), 'cuda', ...; the module is moved there
    batch_size   series per forward pass in ``__call__`` (None: all at once)
    length, channels   the input size, when known (set from the first call otherwise)
    layout       how the module takes its input: 'NCL' (default; (n, L) series become (n, 1, L)),
                 'NL' ((n, L)) or 'NLC' ((n, L, C))
    tensor_layout  time axis of hidden 3-D outputs: 'NCL' (default) or 'NLC', or {layer: layout}
    layer_names  {friendly name: submodule name}, e.g. ONNX tensor names -> torch modules
    threads      torch intra-op threads (``torch.set_num_threads``, process-wide); None leaves torch's
                 setting. 1 is often fastest for small batches on a shared machine, and lets parallel
                 runs share the cores, as the ONNX scorer's threads=1 default does
    """

    differentiable = True

    def __init__(self, module, targets, objective: Any = "sum", device: str | None = None,
                 batch_size: int | None = None, *, length: int | None = None, channels: int | None = None,
                 layout: str = "NCL", tensor_layout: str | dict = "NCL", layer_names: dict | None = None,
                 threads: int | None = None, name: str = "torch", _describe_extra: dict | None = None):
        torch = require_torch("the torch scorer")

        if threads is not None:
            if not isinstance(threads, (int, np.integer)) or threads < 1:
                raise UserError(f"threads must be a positive integer, got {threads!r}")
            torch.set_num_threads(int(threads))

        if not isinstance(module, torch.nn.Module):
            raise UserError(f"TorchScorer needs a torch.nn.Module, got {type(module).__name__}; "
                            "for an ONNX file use OnnxScorer (or TorchScorer.from_onnx with onnx2torch)")
        self.targets = as_targets(targets)
        self.objective_fn = Objective(objective, n_targets=len(self.targets))
        self.objective_name = self.objective_fn.name
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        layout = str(layout).upper()
        if layout not in _LAYOUTS:
            raise UserError(f"unknown layout {layout!r}: use NCL (batch, channels, length), NLC or NL")
        self.layout = layout
        self._tensor_layout = tensor_layout
        self.batch_size = None if batch_size is None else int(batch_size)
        self.length = None if length is None else int(length)
        self.channels = None if channels is None else int(channels)
        self.name = name
        self._extra = dict(_describe_extra or {})
        self.device = torch.device(device or "cpu")
        self.module = module.to(self.device).eval()  # BatchNorm/Dropout must not train while we probe
        self._modules = dict(self.module.named_modules())
        self._layer_names = dict(layer_names or {})

        resolved = []
        for t in self.targets:
            path = self._resolve(t.layer)
            sub = self._modules[path]
            if isinstance(sub, (torch.nn.Softmax, torch.nn.LogSoftmax)):
                raise UserError(f"layer {t.layer or path!r} is a {type(sub).__name__}: softmax saturates and couples "
                                "the units, target the layer before it (logits, never softmax)")
            resolved.append(path)
        self._paths = resolved
        self._needed = list(dict.fromkeys(resolved))
        self.target_names = [f"{t.layer if t.layer is not None else 'output'}:{t.unit}@{t.position}"
                             for t in self.targets]
        self._plan: list | None = None
        self._k = len(self.targets)

    # ---- construction helpers ------------------------------------------------------------------
    @classmethod
    def from_reference(cls, targets, objective: Any = "sum", device: str | None = None,
                       batch_size: int | None = None, threads: int | None = None) -> "TorchScorer":
        """The shipped FordA ResNet (``xdream_ts.reference``), targets named as in its ONNX file
        (``'block2/out'``, ``'gap'``, ``'logits'``, ...), so a target means the same unit in both scorers.
        A target without a layer is the logits."""
        # asked before the torch weights load, so that the one line names what needed torch
        require_torch("the torch twin of the shipped model (--optimizer dream, gradient inverse sets)")
        from xdream_ts import reference as ref

        model = ref.load_reference_torch()
        targets = [Target("logits", t.unit, t.position) if t.layer is None else t for t in as_targets(targets)]
        return cls(model, targets, objective=objective, device=device, batch_size=batch_size,
                   length=ref.SERIES_LENGTH, channels=1, layout="NCL",
                   layer_names=dict(ref.TORCH_MODULE_OF_TENSOR), name="reference", threads=threads,
                   _describe_extra={"model_path": str(ref.reference_model_path()), "reference": True})

    @classmethod
    def from_onnx(cls, model_path, targets, objective: Any = "sum", device: str | None = None,
                  batch_size: int | None = None, length: int | None = None,
                  threads: int | None = None) -> "TorchScorer":
        """Convert an ONNX model to torch with onnx2torch (optional; it pulls in torchvision) and target
        it by its ONNX tensor names. Layout is taken as NCL; for another, build the module yourself."""
        # else onnx2torch's own import error would say to install onnx2torch
        require_torch("converting an ONNX model to torch (--optimizer dream)")
        try:
            from onnx2torch import convert
        except ImportError:
            raise UserError("converting ONNX to torch needs the optional package onnx2torch (pip install onnx2torch; "
                            "it needs a torchvision matching your torch); or use a gradient-free optimizer") from None
        import onnx

        from xdream_ts.adapters.onnx import load_model as _load

        model, sha, path = _load(model_path)
        graph_module = convert(model)
        # onnx2torch names each submodule after the ONNX node (sanitised); map tensor -> producing node
        mods = dict(graph_module.named_modules())
        names = {}
        for node in model.graph.node:
            for out in node.output:
                for cand in (node.name, node.name.replace("/", "_").replace(".", "_").lstrip("_")):
                    if cand in mods:
                        names[out] = cand
                        break
        del onnx
        return cls(graph_module, targets, objective=objective, device=device, batch_size=batch_size,
                   length=length, layer_names=names, name="onnx2torch", threads=threads,
                   _describe_extra={"model_path": str(path), "sha256": sha})

    def _resolve(self, layer: str | None) -> str:
        if layer is None:
            return ""  # the root module: its output
        if layer in self._layer_names:
            path = self._layer_names[layer]
        else:
            path = layer
        if path not in self._modules:
            known = list(self._layer_names) + [k for k in self._modules if k]
            close = difflib.get_close_matches(layer, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise UserError(f"no layer named {layer!r} in {type(self.module).__name__}; {hint}"
                            "layers are the names of dict(module.named_modules())")
        return path

    # ---- forward ----------------------------------------------------------------------------------
    def _prepare(self, x):
        """(n, L) or (n, c, L) tensor -> the module's layout; checks length and channels."""
        if x.dim() == 2:
            n, c, L = x.shape[0], 1, x.shape[1]
            x3 = x.unsqueeze(1)
        elif x.dim() == 3:
            n, c, L = x.shape
            x3 = x
        else:
            raise UserError(f"series must be shaped (n, length) or (n, channels, length), got shape {tuple(x.shape)}; "
                            "wrap a single series as series[None]")
        if self.channels is None:
            self.channels = c
        if self.length is None:
            self.length = L
        if c != self.channels:
            raise UserError(f"the module takes {self.channels} channel(s), the series have {c} (shape {tuple(x.shape)}); "
                            f"give series shaped (n, {self.channels}, length)")
        if L != self.length:
            raise UserError(f"the module takes series of length {self.length}, got length {L}; resample them "
                            f"(xdream_ts.series.resample) or choose a decoder with length {self.length}")
        if self.layout == "NL":
            if c != 1:
                raise UserError(f"layout NL takes one channel, the series have {c}; use layout NCL or NLC")
            return x3[:, 0]
        if self.layout == "NLC":
            return x3.transpose(1, 2)
        return x3

    def _activations(self, x) -> dict:
        """Run the module, returning {submodule path: output tensor} for the needed targets."""
        import torch

        captured: dict = {}
        needed = set(self._needed)
        handles = []

        def hook_for(path):
            def hook(_mod, _inp, out):
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if not torch.is_tensor(out):
                    raise UserError(f"layer {path or 'output'!r} returns {type(out).__name__}, not a tensor; "
                                    "target a layer that returns one")
                captured[path] = out
                if path and needed.issubset(captured):
                    raise _Stop  # everything we need is computed: skip the rest of the network
            return hook

        for path in self._needed:
            handles.append(self._modules[path].register_forward_hook(hook_for(path)))
        try:
            self.module(x)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = needed - set(captured)
        if missing:
            raise UserError(f"layer(s) {sorted(missing)} never ran in the forward pass; pick layers the module "
                            "uses (dict(module.named_modules()) lists them)")
        return captured

    def _layout_of(self, path: str, layer: str | None) -> str:
        tl = self._tensor_layout
        if isinstance(tl, dict):
            tl = tl.get(layer, tl.get(path, "NCL"))
        tl = str(tl).upper()
        if tl not in ("NCL", "NLC"):
            raise UserError(f"unknown tensor_layout {tl!r}: use NCL (batch, channels, time) or NLC")
        return tl

    def _build_plan(self, acts: dict) -> None:
        plan = []
        self.target_shapes = {}
        for t, path in zip(self.targets, self._paths):
            shp = tuple(acts[path].shape)
            label = t.layer or "output"
            self.target_shapes[label] = shp
            if len(shp) == 2:
                if t.unit >= shp[1]:
                    raise UserError(f"unit {t.unit} out of range for {label!r}: it has {shp[1]} features, use 0..{shp[1] - 1}")
                if t.position != "center":
                    raise UserError(f"layer {label!r} is (batch, features) and has no time axis: drop the position (@{t.position})")
                plan.append((path, "f", t.unit, None))
                continue
            if len(shp) != 3:
                raise UserError(f"layer {label!r} has output shape {shp}; targets must be (batch, channels, time) "
                                "or (batch, features)")
            lay = self._layout_of(path, t.layer)
            units, T = (shp[1], shp[2]) if lay == "NCL" else (shp[2], shp[1])
            if t.unit >= units:
                raise UserError(f"unit {t.unit} out of range for {label!r}: it has {units} channels, use 0..{units - 1}")
            if isinstance(t.position, int) and t.position >= T:
                raise UserError(f"time position {t.position} out of range for {label!r}: it has {T} time steps, "
                                f"use 0..{T - 1} (or center, mean, max)")
            pos = T // 2 if t.position == "center" else t.position
            plan.append((path, lay, t.unit, pos))
        self._plan = plan

    def torch_forward(self, x):
        """Differentiable scores: tensor (n, [c,] L) -> tensor (n, k), on this scorer's device."""
        import torch

        if not torch.is_tensor(x):
            raise UserError("torch_forward takes a torch tensor; call the scorer itself with numpy arrays")
        x = self._prepare(x.to(self.device, torch.float32))
        acts = self._activations(x)
        if self._plan is None:
            self._build_plan(acts)
        cols = []
        for path, lay, unit, pos in self._plan:
            a = acts[path]
            if lay == "f":
                cols.append(a[:, unit])
                continue
            series = a[:, unit, :] if lay == "NCL" else a[:, :, unit]
            if pos == "mean":
                cols.append(series.mean(dim=1))
            elif pos == "max":
                cols.append(series.max(dim=1).values)
            else:
                cols.append(series[:, pos])
        return torch.stack(cols, dim=1)

    def __call__(self, series: np.ndarray) -> np.ndarray:
        import torch

        x = np.asarray(series)
        if x.ndim not in (2, 3):
            raise UserError(f"series must be shaped (n, length) or (n, channels, length), got shape {x.shape}; "
                            "wrap a single series as series[None]")
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
            raise UserError(f"input rows {bad[:8].tolist()} (of {len(x)}) contain NaN or inf; fix the decoder or the "
                            "data that made them")
        n = len(x)
        step = self.batch_size or max(n, 1)
        out = np.empty((n, self._k), dtype=np.float64)
        with torch.no_grad():
            for lo in range(0, n, step):
                chunk = torch.from_numpy(np.ascontiguousarray(x[lo:lo + step], dtype=np.float32))
                out[lo:lo + step] = self.torch_forward(chunk).double().cpu().numpy()
        if not np.isfinite(out).all():
            rows = np.flatnonzero(~np.isfinite(out).all(axis=1))
            raise UserError(f"the module gave NaN or inf on input rows {rows[:8].tolist()} (of {n}); check the input "
                            "scale (series are z-normalised by default; the model may expect another scaling)")
        return out[:, 0] if self._k == 1 else out

    # ---- objective and description ---------------------------------------------------------------
    def objective(self, scores: np.ndarray) -> np.ndarray:
        """(n,) or (n, k) scores -> (n,) value to maximise (numpy)."""
        return self.objective_fn(scores)

    def torch_objective(self, scores):
        """(n, k) tensor -> (n,) tensor, differentiable: the same objective as ``objective``."""
        out = self.objective_fn(scores)
        if not hasattr(out, "backward"):
            raise UserError(f"the objective function {self.objective_name} must also work on torch tensors "
                            f"and return (n,) for gradient methods; write it with operations numpy and torch share")
        return out

    def describe(self) -> dict:
        """JSON-able configuration, for the run store."""
        import torch

        h = hashlib.sha256()
        with torch.no_grad():
            for k, v in self.module.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return {
            "kind": "torch", "name": self.name, "module": type(self.module).__name__, "state_sha256": h.hexdigest(),
            "length": self.length, "channels": self.channels, "layout": self.layout,
            "targets": [{"layer": t.layer, "module": p, "unit": t.unit, "position": t.position}
                        for t, p in zip(self.targets, self._paths)],
            "target_names": list(self.target_names), "objective": self.objective_name,
            "device": str(self.device), "batch_size": self.batch_size, **self._extra,
        }

    def __repr__(self) -> str:
        return f"TorchScorer({type(self.module).__name__}, targets={self.target_names}, objective={self.objective_name!r})"


def layer_names_from_onnx(model_path) -> dict:
    """{ONNX tensor name: submodule name} for a model exported from torch with ``torch.onnx.export``
    (the TorchScript exporter names nodes after their module scope, ``/block2/conv1/Conv``): the output
    of the last node of each scope is that submodule's output. Lets a TorchScorer of the source module
    take the same targets as the OnnxScorer of its export."""
    from xdream_ts.adapters.onnx import load_model as _load

    model, _, _ = _load(model_path)
    last: dict[str, str] = {}
    for node in model.graph.node:
        scope = node.name.rsplit("/", 1)[0].strip("/") if "/" in node.name else ""
        if scope and node.output and node.output[0]:
            last[scope] = node.output[0]
    return {tensor: scope.replace("/", ".") for scope, tensor in last.items()}


def reference_target_names() -> Sequence[str]:
    """The ONNX tensor names of the shipped model that ``TorchScorer.from_reference`` accepts."""
    from xdream_ts.reference import TORCH_MODULE_OF_TENSOR
    return tuple(TORCH_MODULE_OF_TENSOR)
