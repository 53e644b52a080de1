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
