"""The three protocols of the loop: codes --decoder--> series --scorer--> scores --optimizer--> codes.

They are deliberately tiny (numpy in, numpy out) so that anything can plug in: a learned decoder in
ONNX, a remote inference server, a lab rig, a nevergrad optimizer.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Decoder(Protocol):
    """Latent codes (n, d) -> series (n, length) or (n, channels, length)."""

    latent_dim: int

    def __call__(self, codes: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Scorer(Protocol):
    """Series (n, [c,] length) -> scores (n,) or (n, k). NaN marks a missing response.

    Optional extras the loop looks for (duck typing, never required):
      - ``clean(series)``: the noiseless score, for simulated noisy targets (recorded, never optimised);
      - ``state_dict()/load_state_dict()``: RNG or other state, for exact resume;
      - ``objective(scores)``: combine (n, k) target scores into the (n,) value optimised;
      - ``noisy = True``: tells optimizers that pick noise-robust strategies (nevergrad, default).
    """

    def __call__(self, series: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Optimizer(Protocol):
    """Ask/tell, maximising. ``tell`` receives the codes it asked for and one score per code (NaN allowed)."""

    def ask(self) -> np.ndarray: ...

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# ---------------------------------------------------------------------------------------------------
# Optional capabilities. The loop checks these (isinstance), never attribute names of its own.
# ---------------------------------------------------------------------------------------------------
@runtime_checkable
class Stateful(Protocol):
    """A component with state (an RNG, a fitted model) that exact resume must restore."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class HasClean(Protocol):
    """A scorer that also knows the noiseless score (a simulated target): recorded, never optimised."""

    def clean(self, series: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Noisy(HasClean, Protocol):
    """A noise model over a clean scorer: the loop scores each series once, cleanly, and draws the
    noise of every repeat from that, so repeats cost no extra model evaluations."""

    noisy: bool

    def add_noise(self, clean: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class MultiTarget(Protocol):
    """A scorer of several units at once ((n, k) scores) and the objective that combines them."""

    target_names: list

    def objective(self, scores: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Shaped(Protocol):
    """A scorer (or decoder) that fixes the series shape; None where it accepts any."""

    length: int | None
    channels: int | None


@runtime_checkable
class Differentiable(Protocol):
    """A scorer with a torch path, for gradient optimizers (Sequence Dreaming)."""

    differentiable: bool

    def torch_objective(self, scores): ...


@runtime_checkable
class Describable(Protocol):
    """A component that records its resolved configuration (JSON) in the run store."""

    def describe(self) -> dict: ...


@runtime_checkable
class Reporting(Protocol):
    """A scorer with a line to say after a run (a remote endpoint: requests, retries, losses)."""

    def report(self) -> str: ...


@runtime_checkable
class GradientOptimizer(Protocol):
    """An optimizer that needs gradients: the loop binds it to the decoder and the scorer first."""

    needs_gradients: bool

    def bind(self, decoder, scorer) -> None: ...


@runtime_checkable
class KeepsIncumbent(Protocol):
    """An optimizer that keeps its own pick of the best (a mean over several measurements)."""

    def incumbent(self): ...


def is_noisy(scorer) -> bool:
    """Whether a scorer's responses are noisy (tells optimizers to pick noise-robust strategies)."""
    return bool(getattr(scorer, "noisy", False))


def shape_of(component) -> tuple[int | None, int | None]:
    """(length, channels) a scorer or decoder fixes; (None, None) when it fixes neither."""
    return getattr(component, "length", None), getattr(component, "channels", None)
