"""The shipped reference model: a ResNet time-series classifier trained on FordA.

Architecture (Wang, Yan & Oates 2017, "Time series classification from scratch with deep neural
networks: a strong baseline"; the network of the Keras time-series tutorial)::

    series (batch, 1, 500), z-normalised per series as UCR data is
    block1: conv1 k8 -> bn1 -> relu1 -> conv2 k5 -> bn2 -> relu2 -> conv3 k3 -> bn3
            + shortcut (1x1 conv -> bn) -> add -> relu_out            64 filters
    block2: same, 128 filters
    block3: same, 128 filters
    gap:    mean over time                                             (batch, 128)
    fc:     linear 128 -> 2                                            LOGITS (no softmax)

All convolutions use 'same' padding (for the even kernel 8: 3 samples before, 4 after, as Keras does),
stride 1, so every block output keeps the 500 time steps. Class 0 is FordA label -1, class 1 label 1.
``experiments/train_reference.py`` trains it and writes every asset read here (its docstring and
``reference_provenance.json`` say how, with which data, and the accuracy reached).

Shipped files in ``xdream_ts/assets`` (read with importlib.resources, so they work from a wheel):

- ``reference_resnet.onnx``: the model in ONNX with readable tensor names (see ``ONNX_TENSORS``),
- ``reference_resnet.pt``: the float32 torch state_dict (``torch.load(weights_only=True)``, no pickle),
- ``reference_activations.npz``: per targetable tensor and unit, the maximum activation over all 4921
  FordA series (train + test, as stored) at the centre time step and of the mean over time
  (see ``reference_activations``),
- ``fordA_sample.npz``: 300 FordA test series, stratified by class, with labels,
- ``reference_provenance.json``: how the files were made.

Importing this module imports neither torch nor onnxruntime.
"""
from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

ASSET_PACKAGE = "xdream_ts.assets"
ONNX_FILE = "reference_resnet.onnx"
STATE_DICT_FILE = "reference_resnet.pt"
ACTIVATIONS_FILE = "reference_activations.npz"
SAMPLE_FILE = "fordA_sample.npz"
PROVENANCE_FILE = "reference_provenance.json"

SERIES_LENGTH = 500
CENTER = SERIES_LENGTH // 2  # time index 250: the "centre" position of a target
N_CLASSES = 2
FILTERS = (64, 128, 128)
KERNELS = (8, 5, 3)
CLASS_LABELS = (-1, 1)  # FordA label of logit 0 and logit 1

INPUT_NAME = "series"
OUTPUT_NAME = "logits"

#: Tensor names in ``reference_resnet.onnx`` -> (shape, meaning). ``batch`` is a dynamic axis.
#: ``series`` is the graph input and ``logits`` the only graph output; the others are intermediate
#: values, named as here and listed with their shapes in the graph's value_info (to read one with
#: onnxruntime, add it to the graph outputs, as the ONNX scorer adapter does).
ONNX_TENSORS: dict[str, tuple[tuple, str]] = {"series": (("batch", 1, SERIES_LENGTH), "input, z-normalised")}
for _b, _c in zip((1, 2, 3), FILTERS):
    ONNX_TENSORS[f"block{_b}/relu1"] = (("batch", _c, SERIES_LENGTH), f"block{_b} ReLU after conv1 (k8) + bn1")
    ONNX_TENSORS[f"block{_b}/relu2"] = (("batch", _c, SERIES_LENGTH), f"block{_b} ReLU after conv2 (k5) + bn2")
    ONNX_TENSORS[f"block{_b}/out"] = (("batch", _c, SERIES_LENGTH),
                                      f"block{_b} output: ReLU(bn3(conv3) + shortcut)")
ONNX_TENSORS["gap"] = (("batch", FILTERS[-1]), "global average pooling of block3/out over time")
ONNX_TENSORS["logits"] = (("batch", N_CLASSES), "class logits (0: FordA -1, 1: FordA 1), no softmax")
del _b, _c

#: Other readable names in the graph (not in the reference activations): ``blockB/convK`` and
#: ``blockB/shortcut_conv`` (conv outputs with batch norm folded in, before the ReLU), ``blockB/add``
#: (residual sum before ``blockB/out``), and the weights ``blockB/convK/weight``, ``.../bias``,
#: ``fc/weight``, ``fc/bias``.

#: The targetable tensors (every ReLU output, block outputs, gap, logits), in depth order.
TARGET_TENSORS: tuple[str, ...] = tuple(k for k in ONNX_TENSORS if k != INPUT_NAME)


class ReferenceUnit(NamedTuple):
    """One target unit: an ONNX tensor, a channel, and where in time (``center`` = index 250;
    ``none`` for the 2-D tensors gap and logits). ``key`` indexes ``reference_activations()``."""

    tensor: str
    channel: int
    position: str

    @property
    def key(self) -> str:
        return f"{self.tensor}|{self.position}"


def select_reference_units(activations: dict[str, np.ndarray] | None = None, per_tensor: int = 10,
                           seed: int = 0) -> list[ReferenceUnit]:
    """The fixed benchmark selection: 10 channels each of block1/out, block2/out, block3/out at the
    centre time step, and both logits: 32 units at 4 depths.

    Channels are drawn with ``numpy.random.default_rng(seed)`` (seed 0), in sorted order, among the
    channels whose reference maximum at the centre is above 1e-3 (a dead ReLU unit has no meaningful
    relative activation). ``REFERENCE_UNITS`` is this function's result on the shipped activations.
    """
    acts = reference_activations() if activations is None else activations
    rng = np.random.default_rng(seed)
    units: list[ReferenceUnit] = []
    for tensor in ("block1/out", "block2/out", "block3/out"):
        maxima = np.asarray(acts[f"{tensor}|center"])
        alive = np.flatnonzero(maxima > 1e-3)
        chosen = np.sort(rng.choice(alive, size=min(per_tensor, len(alive)), replace=False))
        units += [ReferenceUnit(tensor, int(c), "center") for c in chosen]
    units += [ReferenceUnit("logits", c, "none") for c in range(N_CLASSES)]
    return units


def reference_units() -> tuple[ReferenceUnit, ...]:
    """The 32 benchmark units of the shipped model: ``select_reference_units()`` on the shipped
    activations, as stored with them (``reference_activations.npz`` key ``reference_units``, and
    ``reference_provenance.json``); a test checks that the two agree. Also ``REFERENCE_UNITS``."""
    return _reference_units_cached()


@functools.lru_cache(maxsize=1)
def _reference_units_cached() -> tuple[ReferenceUnit, ...]:
    units = []
    for s in _activations_cached()["reference_units"]:
        tensor, channel, position = str(s).split("|")
        units.append(ReferenceUnit(tensor, int(channel), position))
    return tuple(units)


def __getattr__(name: str):
    # ``REFERENCE_UNITS`` is read from the shipped assets on first use (importing stays cheap, and a
    # checkout without assets still imports; using it there raises the missing-asset UserError).
    if name == "REFERENCE_UNITS":
        return reference_units()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------- files
def _asset(name: str) -> Path:
    path = resources.files(ASSET_PACKAGE).joinpath(name)
    if not path.is_file():
        from .errors import UserError
        raise UserError(f"shipped asset {name} is missing from {ASSET_PACKAGE}; reinstall xdream-ts, or "
                        "run experiments/train_reference.py to rebuild the reference model")
    return Path(str(path))


def reference_model_path() -> Path:
    """Path of the shipped ONNX reference model (``reference_resnet.onnx``)."""
    return _asset(ONNX_FILE)


def is_reference_model(path) -> bool:
    """Whether ``path`` is the shipped reference model (False when the package lacks it)."""
    try:
        return Path(path).resolve() == reference_model_path().resolve()
    except Exception:  # the assets may be absent: then it cannot be the shipped model
        return False


def reference_state_dict_path() -> Path:
    return _asset(STATE_DICT_FILE)


@functools.lru_cache(maxsize=1)
def _activations_cached() -> dict[str, np.ndarray]:
    with np.load(_asset(ACTIVATIONS_FILE), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def reference_activations() -> dict[str, np.ndarray]:
    """Maximum activation of every unit over all FordA series (train + test, 4921, as stored).

    Keys ``"{tensor}|center"`` (value at time index 250) and ``"{tensor}|mean"`` (mean over time) for
    the 3-D tensors, ``"{tensor}|none"`` for gap and logits; each a float32 array (channels,). The
    key ``"{key}|argmax"`` (int64) is the index of the series reaching that maximum, counting the
    TRAIN series first, then TEST. Use it as the denominator of relative activation. Also:
    ``"reference_units"`` (names ``tensor|channel|position`` of ``REFERENCE_UNITS``) and
    ``"reference_units_best_series"`` (float32 (32, 500), the series reaching each one's maximum).
    """
    return dict(_activations_cached())


def reference_max(unit: ReferenceUnit | tuple) -> float:
    """The reference maximum of one unit (the denominator of its relative activation)."""
    unit = ReferenceUnit(*unit)
    return float(_activations_cached()[unit.key][unit.channel])


def lookup_reference_max(tensor: str | None, unit: int, position, activations: dict | None = None) -> float | None:
    """The maximum of a unit of the shipped model over all of FordA, or None where none is stored (a time
    position other than center/mean, an unknown tensor or unit). ``tensor`` None is the logits;
    ``activations`` another copy of the table (a smoke build's), default the shipped one."""
    acts = _activations_cached() if activations is None else activations
    layer = tensor or OUTPUT_NAME
    two_d = len(ONNX_TENSORS.get(layer, ((),))[0]) == 2
    values = acts.get(f"{layer}|{'none' if two_d else position}")
    if values is None or not 0 <= int(unit) < len(values):
        return None
    return float(values[int(unit)])


def best_real_series(unit: ReferenceUnit | tuple) -> np.ndarray:
    """The FordA series (float32, (500,)) that reaches ``reference_max(unit)``, for a unit of
    ``REFERENCE_UNITS`` (only those are shipped; for others, ``reference_activations()`` gives the
    index of the series, ``"{key}|argmax"``, in FordA TRAIN followed by TEST)."""
    unit = ReferenceUnit(*unit)
    acts = _activations_cached()
    names = [str(s) for s in acts["reference_units"]]
    name = f"{unit.tensor}|{unit.channel}|{unit.position}"
    if name not in names:
        from .errors import UserError
        raise UserError(f"no shipped best series for {name}; only REFERENCE_UNITS have one (use "
                        f"reference_activations()['{unit.key}|argmax'] with your own copy of FordA)")
    return acts["reference_units_best_series"][names.index(name)].copy()


def sample_series() -> tuple[np.ndarray, np.ndarray]:
    """A stratified sample of 300 FordA TEST series: (X float32 (300, 500), y int64 in {0, 1}).

    y is the class index of the logits (0: FordA label -1, 1: FordA label 1).
    """
    with np.load(_asset(SAMPLE_FILE), allow_pickle=False) as z:
        return z["X"].astype(np.float32), z["y"].astype(np.int64)


def reference_provenance() -> dict:
    return json.loads(_asset(PROVENANCE_FILE).read_text())


# ----------------------------------------------------------------------------------------- torch
@functools.lru_cache(maxsize=1)
def _torch_classes():
    import torch
    from torch import nn

    class GlobalAveragePool(nn.Module):
        """Mean over the time axis: (batch, channels, length) -> (batch, channels)."""

        def forward(self, x):
            return x.mean(dim=-1)

    class ResidualBlock(nn.Module):
        def __init__(self, in_channels: int, channels: int, kernels=KERNELS):
            super().__init__()
            k1, k2, k3 = kernels
            self.conv1 = nn.Conv1d(in_channels, channels, k1, padding="same")
            self.bn1 = nn.BatchNorm1d(channels)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv1d(channels, channels, k2, padding="same")
            self.bn2 = nn.BatchNorm1d(channels)
            self.relu2 = nn.ReLU()
            self.conv3 = nn.Conv1d(channels, channels, k3, padding="same")
            self.bn3 = nn.BatchNorm1d(channels)
            self.shortcut_conv = nn.Conv1d(in_channels, channels, 1)
            self.shortcut_bn = nn.BatchNorm1d(channels)
            self.relu_out = nn.ReLU()

        def forward(self, x):
            h = self.relu1(self.bn1(self.conv1(x)))
            h = self.relu2(self.bn2(self.conv2(h)))
            h = self.bn3(self.conv3(h))
            return self.relu_out(h + self.shortcut_bn(self.shortcut_conv(x)))

    class ResNet(nn.Module):
        """Wang et al. 2017 ResNet for time series; input (batch, 1, length), output logits."""

        def __init__(self, n_classes: int = N_CLASSES, in_channels: int = 1, filters=FILTERS):
            super().__init__()
            f1, f2, f3 = filters
            self.block1 = ResidualBlock(in_channels, f1)
            self.block2 = ResidualBlock(f1, f2)
            self.block3 = ResidualBlock(f2, f3)
            self.gap = GlobalAveragePool()
            self.fc = nn.Linear(f3, n_classes)

        def forward(self, x):
            if x.dim() == 2:  # (batch, length) -> (batch, 1, length)
                x = x.unsqueeze(1)
            return self.fc(self.gap(self.block3(self.block2(self.block1(x)))))

    return torch, ResidualBlock, ResNet


#: torch module path (``named_modules`` name) that produces each ONNX tensor.
TORCH_MODULE_OF_TENSOR: dict[str, str] = {
    **{f"block{b}/{r}": f"block{b}.{r if r != 'out' else 'relu_out'}"
       for b in (1, 2, 3) for r in ("relu1", "relu2", "out")},
    "gap": "gap", "logits": "fc"}


def build_resnet(n_classes: int = N_CLASSES, in_channels: int = 1):
    """A fresh (untrained) reference ResNet as a ``torch.nn.Module``."""
    _, _, ResNet = _torch_classes()
    return ResNet(n_classes=n_classes, in_channels=in_channels)


def load_reference_torch():
    """The shipped reference ResNet in eval mode (float32, CPU), weights from ``reference_resnet.pt``."""
    import warnings
    torch, _, _ = _torch_classes()
    # torch warns at every forward that 'same' padding with the even kernel 8 copies the input: true,
    # harmless, and it is the architecture of Wang et al. 2017 (the ONNX export pads the same way)
    warnings.filterwarnings("ignore", message="Using padding='same' with even kernel", category=UserWarning)
    model = build_resnet()
    state = torch.load(reference_state_dict_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


__all__ = [
    "ONNX_TENSORS", "TARGET_TENSORS", "reference_units", "ReferenceUnit", "INPUT_NAME", "OUTPUT_NAME",
    "CENTER", "SERIES_LENGTH", "CLASS_LABELS", "reference_model_path", "is_reference_model", "reference_state_dict_path",
    "load_reference_torch", "build_resnet", "reference_activations", "reference_max", "sample_series",
    "best_real_series",
    "reference_provenance", "select_reference_units", "TORCH_MODULE_OF_TENSOR",
]
