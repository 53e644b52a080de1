"""Targets: what the loop drives, and the ONE place a target becomes a scorer.

A :class:`Target` is a unit of a tensor at a time position (``TENSOR:UNIT[@POSITION]``). A
:class:`TargetSpec` is the whole target of a run: its source (an ONNX model, an inference endpoint, a
simulated neuron; gradients through a torch twin when asked), its units, how several units combine
(the objective), the noise, and the reference data. It is parsed from CLI flags or a TOML table
(:meth:`TargetSpec.from_options`, the same keys), and from a stored run (:meth:`TargetSpec.from_config`).
:func:`build` turns it into what the loop needs: the scorer (noise applied), the clean scorer, the unit's
reference maximum, and a differentiable twin on request. run, show, sweep, compare, inverse-set, the
rig, the demo and report all build their targets here.

Targets as text::

    TENSOR:UNIT[@POSITION]        e.g.  /layers.2/Relu_output_0:17@center    relu_3:5@mean    logits:1

TENSOR is any tensor ``xdream-ts inspect MODEL`` lists (empty: the model's default target); names may
contain ``:`` (the last one separates the unit) or ``@``. POSITION (3-D tensors only): ``center``
(default, ``T // 2``, as XDream uses the centre spatial position), a time index, ``mean`` or ``max``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

POSITIONS = ("center", "mean", "max")
KINDS = ("onnx", "endpoint", "simulated")


# --------------------------------------------------------------------------------------------------
# One unit
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
    if s in POSITIONS:
        return s
    if re.fullmatch(r"\d+", s):
        return int(s)
    raise UserError(f"unknown time position {text!r}: use center, mean, max or a time index 0..T-1")


@dataclass(frozen=True)
class Target:
    """One unit to drive: ``layer`` (tensor name; None = the model's default target, its logits), ``unit``
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


def as_targets(targets: Any) -> list[Target]:
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




def format_target(t: Target) -> str:
    """The text form :func:`parse_target` reads back (``':1@center'`` for the default tensor)."""
    return f"{t.layer or ''}:{t.unit}@{t.position}"


# --------------------------------------------------------------------------------------------------
# The whole target of a run
# --------------------------------------------------------------------------------------------------

def _number(value, what: str, kind=float, minimum=None, strict: bool = False, allow_none: bool = True):
    """One check for every number a user gives, where it is parsed: a one-line error naming the flag."""
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if kind is int and float(value) != number:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"--{what} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if not np.isfinite(number):
        raise UserError(f"--{what} must be finite, got {value!r}")
    if minimum is not None and (number <= minimum if strict else number < minimum):
        raise UserError(f"--{what} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return number


@dataclass
class TargetSpec:
    """Everything that makes a run's target, JSON-able (``to_dict`` / ``from_dict``).

    kind      'onnx' (``model``; the shipped reference model when None), 'endpoint' (an Open Inference
              Protocol server), or 'simulated' (a linear-nonlinear neuron with a known optimum)
    units     the target units (several: combined by ``objective``, 'sum' or 'contrast')
    noise     'none', 'poisson[:SCALE]' or 'gain:SIGMA', drawn with ``noise_seed``
    reference the unit's reference maximum when the user knows it (else looked up: see ``reference_maximum``)
    data      the model's own real series (a path), when given
    """

    kind: str = "onnx"
    model: str | None = None
    units: list[Target] = field(default_factory=lambda: [Target(None, 0)])
    objective: str = "sum"
    noise: str = "none"
    noise_seed: int | None = 0
    length: int | None = None
    channels: int | None = None
    layout: str | None = None
    tensor_layout: Any = None
    threads: int = 1
    providers: str | None = None
    batch_size: int | None = None
    endpoint: str | None = None
    remote_model: str | None = None
    output: str | None = None
    token_env: str | None = None
    timeout: float = 30.0
    max_batch: int = 64
    neuron_seed: int = 0
    gain: float = 10.0
    reference: float | None = None
    data: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown target kind {self.kind!r}: use one of {', '.join(KINDS)}")
        self.units = as_targets(self.units)
        self.objective = str(self.objective)
        from .objective import Objective
        Objective(self.objective, n_targets=len(self.units))  # an unknown objective fails here, once
        check_noise(self.noise)  # a bad noise spec fails here, once, before any store exists
        self.length = _number(self.length, "length", int, minimum=2)
        self.channels = _number(self.channels, "channels", int, minimum=1)
        self.threads = _number(self.threads, "threads", int, minimum=0, allow_none=False)
        self.batch_size = _number(self.batch_size, "batch-size", int, minimum=1)
        self.timeout = _number(self.timeout, "timeout", float, minimum=0, strict=True, allow_none=False)
        self.max_batch = _number(self.max_batch, "max-batch", int, minimum=1, allow_none=False)
        self.neuron_seed = _number(self.neuron_seed, "neuron-seed", int, allow_none=False)
        self.noise_seed = _number(self.noise_seed, "seed", int)
        self.gain = _number(self.gain, "gain", float, minimum=0, strict=True, allow_none=False)
        self.reference = _number(self.reference, "reference", float, minimum=0, strict=True)
        if self.kind == "endpoint" and not self.endpoint:
            raise UserError("an endpoint target needs its URL: pass --endpoint URL")
        if self.layout is not None and str(self.layout).upper() not in ("NCL", "NLC", "NL"):
            raise UserError(f"unknown --layout {self.layout!r}: use NCL, NLC or NL")

    # ---- parsing --------------------------------------------------------------------------------
    @classmethod
    def from_options(cls, opts: dict) -> "TargetSpec":
        """From CLI flags or a TOML table (same keys as the long flags, underscores): model, layer, unit,
        position, target (a list of TENSOR:UNIT@POS), objective, noise, seed, endpoint, ..."""
        g = opts.get
        if g("endpoint") and g("model"):
            raise UserError("--endpoint and --model both name a target: keep one")
        kind = "endpoint" if g("endpoint") else ("onnx" if (g("model") or shipped_model()) else "simulated")
        if g("kind"):
            kind = g("kind")
        if g("target"):
            texts = [g("target")] if isinstance(g("target"), str) else list(g("target"))
            units = [parse_target(t) for t in texts]
        else:
            unit = _number(g("unit", 0) if g("unit") is not None else 0, "unit", int, minimum=0)
            units = [Target(g("layer"), unit, parse_position(g("position") or "center"))]
        keys = {f.name for f in fields(cls)} - {"kind", "units", "noise_seed", "model"}
        kw = {k: opts[k] for k in keys if opts.get(k) is not None}
        return cls(kind=kind, model=g("model"), units=units, noise_seed=g("seed", 0), **kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["units"] = [format_target(t) for t in self.units]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TargetSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"target: unknown keys {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        return cls(**{**d, "units": [parse_target(t) if isinstance(t, str) else t for t in d.get("units", [])]})

    @classmethod
    def from_config(cls, config: dict) -> "TargetSpec":
        """The target of a stored run: its recorded spec; for stores written before specs were recorded,
        rebuilt from the CLI options or the scorer's description it kept."""
        if config.get("target"):
            return cls.from_dict(config["target"])
        if config.get("cli"):
            return cls.from_options(config["cli"])
        return spec_from_description(config.get("scorer") or {})

    @property
    def single(self) -> bool:
        return len(self.units) == 1

    def with_(self, **changes) -> "TargetSpec":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def spec_from_description(desc: dict) -> TargetSpec:
    noise = "none"
    seed = 0
    if desc.get("noise") and "inner" in desc:
        arg = desc.get("scale", desc.get("sigma"))
        noise = f"{desc['noise']}:{arg}" if arg is not None else desc["noise"]
        seed, desc = desc.get("seed"), desc["inner"]
    if desc.get("name") == "simulated_neuron":
        return TargetSpec(kind="simulated", length=desc.get("length"), channels=desc.get("channels"),
                          neuron_seed=desc.get("seed") or 0, gain=desc.get("gain", 10.0), noise=noise, noise_seed=seed)
    if desc.get("kind") == "onnx":
        units = [Target(t.get("tensor") or t.get("layer"), int(t["unit"]), t.get("position", "center"))
                 for t in desc.get("targets", [])]
        return TargetSpec(kind="onnx", model=desc.get("model_path"), units=units, noise=noise, noise_seed=seed,
                          objective=desc.get("objective") if desc.get("objective") in ("sum", "contrast") else "sum",
                          layout=desc.get("layout"), tensor_layout=desc.get("tensor_layout"))
    raise UserError("this run store does not record how its target was built (a scorer given in Python): "
                    "rebuild the target yourself")


def check_noise(noise) -> None:
    """A noise spec, checked where it is given (none, poisson[:SCALE > 0], gain[:SIGMA >= 0])."""
    from .adapters.simulated import parse_noise
    parse_noise(noise)


def shipped_model() -> str | None:
    """The shipped reference model's path, or None in a source checkout before it was trained."""
    try:
        from .reference import reference_model_path
        return str(reference_model_path())
    except UserError:
        return None


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------

@dataclass
class BuiltTarget:
    """What the loop needs from a target: ``scorer`` (noise applied), ``clean`` (without noise),
    ``reference_max`` (the unit's best activation over reference data; None when unknown), the spec."""

    spec: TargetSpec
    scorer: Any
    clean: Any
    reference_max: float | None
    data: Any = None                 # the model's real series (xdream_ts.data.Dataset), when given
    real_scores: Any = None          # the clean objective of data.X[real_index], scored in one batch
    real_index: Any = None           # which series were scored (all of them, or a sample of large data)

    def twin(self):
        """A differentiable (torch) scorer of the same units: the shipped model's torch copy, any ONNX
        model through onnx2torch, or a one-line refusal for targets without gradients."""
        return differentiable_twin(self.spec)


_SESSIONS: dict = {}
_SESSIONS_KEPT = 8  # per process: a sweep's tasks are ordered target-major, so a handful is plenty


def build(spec: TargetSpec, *, differentiable: bool = False, reuse: bool = False) -> BuiltTarget:
    """The one place a target is made. ``differentiable``: score through the torch twin (gradient
    optimizers). ``reuse``: keep ONNX sessions per process and hand out the same one for the same model
    and units (a sweep's worker runs many tasks on one target)."""
    from .adapters.simulated import SimulatedNeuron, with_noise

    if differentiable:
        clean = differentiable_twin(spec)
    elif spec.kind == "endpoint":
        from .adapters.remote import RemoteScorer
        clean = RemoteScorer(spec.endpoint, model=spec.remote_model, output=spec.output, unit=spec.units[0].unit,
                             token_env=spec.token_env, max_batch=spec.max_batch,
                             timeout=(min(spec.timeout, 10.0), spec.timeout), length=spec.length,
                             layout=spec.layout)
        clean.check()  # unreachable, or no such model: one line now, not after the first generation
    elif spec.kind == "simulated":
        clean = SimulatedNeuron(length=spec.length or 500, channels=spec.channels, seed=spec.neuron_seed,
                                gain=spec.gain)
    else:
        clean = _onnx_scorer(spec, reuse)
    built = BuiltTarget(spec=spec, scorer=with_noise(clean, spec.noise, seed=spec.noise_seed), clean=clean,
                        reference_max=reference_maximum(spec, clean))
    if spec.data is not None:
        _score_data(built)
    return built


DATA_SCORED = 2000  # real series scored up front at most (a seeded sample of larger data sets)


def _score_data(built: BuiltTarget) -> None:
    """Load the model's data at the model's length, score them in one batch (cleanly), and let the best
    real response be the reference maximum unless the user gave one."""
    from .data import load_dataset
    from .decoders.auto import check_channels
    from .objective import Objective
    from .protocols import shape_of
    import sys

    length, channels = shape_of(built.clean)
    data = load_dataset(built.spec.data, length=length)
    for note in data.notes:
        print(f"xdream-ts: {note}", file=sys.stderr)
    check_channels(data, channels)
    idx = np.arange(data.n)
    if data.n > DATA_SCORED:
        idx = np.sort(np.random.default_rng(0).choice(data.n, DATA_SCORED, replace=False))
    scores = np.asarray(built.clean(data.squeeze()[idx]), dtype=np.float64)
    if scores.ndim == 2:
        scores = Objective(built.spec.objective)(scores)
    built.data, built.real_scores, built.real_index = data, scores, idx
    if built.spec.reference is None and np.isfinite(scores).any() and np.nanmax(scores) > 0:
        # relative activation against the user's own data: the best real response, from this same batch
        built.reference_max = float(np.nanmax(scores))


def _onnx_scorer(spec: TargetSpec, reuse: bool):
    from .adapters.onnx import OnnxScorer
    model = spec.model or shipped_model()
    if model is None:
        raise UserError("no model given and no shipped reference model in this installation: pass --model")
    key = (str(model), tuple(spec.units), spec.objective, spec.threads, spec.layout, spec.length, spec.providers,
           repr(spec.tensor_layout), spec.batch_size)
    if reuse and key in _SESSIONS:
        return _SESSIONS[key]
    scorer = OnnxScorer(model, spec.units, objective=spec.objective, threads=spec.threads, layout=spec.layout,
                        length=spec.length, providers=spec.providers, tensor_layout=spec.tensor_layout,
                        batch_size=spec.batch_size)
    if reuse:
        _SESSIONS[key] = scorer
        while len(_SESSIONS) > _SESSIONS_KEPT:
            _SESSIONS.pop(next(iter(_SESSIONS)))
    return scorer


def differentiable_twin(spec: TargetSpec):
    """The torch scorer of ``spec``'s units (see :meth:`BuiltTarget.twin`)."""
    if spec.kind != "onnx":
        raise UserError(f"a {spec.kind} target gives no gradients: use a gradient-free optimizer "
                        "(default, cmaes, genetic, ...) or a model file (--model)")
    from .adapters.torch import TorchScorer
    from .reference import is_reference_model
    model = spec.model or shipped_model()
    threads = spec.threads or None
    if is_reference_model(model):
        return TorchScorer.from_reference(spec.units, objective=spec.objective, threads=threads)
    return TorchScorer.from_onnx(model, spec.units, objective=spec.objective, length=spec.length, threads=threads)


def reference_maximum(spec: TargetSpec, clean=None) -> float | None:
    """The ONE reference maximum of a target (the denominator of relative activation): the user's value;
    else, for one unit of the shipped model, its maximum over all of FordA; for a simulated neuron its
    closed-form optimum; else None (unknown)."""
    if spec.reference is not None:
        return float(spec.reference)
    if spec.kind == "simulated":
        return float(clean.max_response) if clean is not None else float(spec.gain)
    if spec.kind != "onnx" or not spec.single:
        return None
    from .reference import is_reference_model, lookup_reference_max
    model = spec.model or shipped_model()
    if model is None or not is_reference_model(model):
        return None
    t = spec.units[0]
    return lookup_reference_max(t.layer, t.unit, t.position)


def start_from_data(built: BuiltTarget, decoder, n: int, which: str = "best", seed: int = 0):
    """(codes (n, d), note for the store): the ``n`` real series the target scores best (or middle /
    worst), encoded by ``decoder``, best first. Uses the scores ``build`` took of the data."""
    from .decoders.encode import initial_codes
    if built.data is None:
        raise UserError("no data to start from: give the model's real series (--data)")
    # in the decoder's own convention: (n, c, L) when it declares channels (one included), else (n, L)
    X = (built.data.X if getattr(decoder, "channels", None) else built.data.squeeze())[built.real_index]
    n = max(1, min(int(n), int(np.isfinite(built.real_scores).sum())))
    codes, idx = initial_codes(decoder, X, built.real_scores, n, which, seed=int(seed), return_indices=True)
    return codes, {"which": which, "n": n, "source": built.data.source, "ranked": int(len(X)),
                   "indices": [int(built.real_index[i]) for i in idx]}


def is_shipped(spec: TargetSpec) -> bool:
    """Whether the target is a unit of the shipped reference model (its FordA sample is then known data)."""
    if spec.kind != "onnx":
        return False
    from .reference import is_reference_model
    model = spec.model or shipped_model()
    return model is not None and is_reference_model(model)


def load_toml(path: str | Path, table: str | None = None) -> dict:
    """The one TOML loader: a one-line error for a missing or invalid file; ``table`` picks a top-level
    table when present (``[run]``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} not found: check the path")
    try:
        data = tomllib.loads(p.read_text())
    except Exception as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    return data.get(table, data) if table else data
