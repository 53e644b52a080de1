"""How several target scores become the one value an optimizer maximises: single, sum, contrast, or a
user function. One implementation for numpy and for torch (the gradient path), replayable from the
name a run store records.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import UserError

KINDS = ("sum", "contrast")


class Objective:
    """``Objective('sum')``, ``Objective('contrast')`` (first target minus the mean of the others, the
    one-hot population control of Bashivan et al. 2019) or ``Objective(fn)`` with ``fn`` mapping (n, k)
    scores to (n,). Write a function with operations numpy and torch share (``s[:, 0] - s[:, 1]``,
    ``.sum(-1)``) and it serves the gradient path too. A single target is its own objective."""

    def __init__(self, kind: str | Callable[[Any], Any] | "Objective" = "sum", n_targets: int | None = None):
        if isinstance(kind, Objective):
            kind = kind.fn or kind.name
        if callable(kind):
            self.fn, self.name = kind, getattr(kind, "__name__", type(kind).__name__)
        elif kind in KINDS:
            self.fn, self.name = None, str(kind)
        else:
            raise UserError(f"unknown objective {kind!r}: use sum, contrast or a function (n, k) -> (n,)")
        if n_targets is not None and self.name == "contrast" and self.fn is None and n_targets < 2:
            raise UserError("objective 'contrast' needs at least two targets (the first minus the mean of the others)")

    @property
    def replayable(self) -> bool:
        """Whether a stored run can recompute it from its name (a user function cannot be)."""
        return self.fn is None

    def __call__(self, scores):
        """(n,) or (n, k) scores -> (n,); numpy arrays or torch tensors (same operations, same result)."""
        is_np = isinstance(scores, np.ndarray) or not hasattr(scores, "detach")
        s = np.asarray(scores, dtype=np.float64) if is_np else scores
        if s.ndim == 1:
            s = s[:, None]
        if self.fn is not None:
            out = self.fn(s)
            if is_np:
                out = np.asarray(out, dtype=np.float64)
            if tuple(out.shape) != (s.shape[0],):
                raise UserError(f"the objective function {self.name} returned shape {tuple(out.shape)}, expected "
                                f"({s.shape[0]},): it must map (n, k) scores to one value per series")
            return out
        if self.name == "contrast":
            return s[:, 0] - s[:, 1:].mean(axis=1) if is_np else s[:, 0] - s[:, 1:].mean(dim=1)
        return s.sum(axis=1) if is_np else s.sum(dim=1)


def replay(scores: np.ndarray, recorded: dict | None) -> np.ndarray:
    """(..., k) per-target scores of a stored run -> (...) values of the objective it recorded
    (``{"kind": name}``, or None for a single target). A user function cannot be replayed: its first
    target stands in."""
    kind = (recorded or {}).get("kind", "single")
    if kind == "single":
        return scores
    if kind == "sum":
        return scores.sum(axis=-1)
    if kind == "contrast":
        return scores[..., 0] - scores[..., 1:].mean(axis=-1)
    return scores[..., 0]
