"""The run store: one zarr (v3) group per run, appended every generation, crash-safe.

Layout (G = generations, P = population size, R = repeats, k = targets, d = code dimension):

    run.zarr/                   group; attributes below
      codes         (G, P, d)        float64  codes the optimizer asked for
      series        (G, P, [C,] L)   float32  decoded series that were presented (NaN: not shown)
      scores        (G, P, R[, k])   float64  observed responses, every repeat, every target (NaN: missing)
      objective     (G, P)           float64  value the optimizer was told: mean over repeats, targets combined
      clean_scores  (G, P[, k])      float64  noiseless responses (only when the scorer is simulated)
      n_evaluated   (G,)             int32    rows of the generation that were presented (budget may cut the last)
      state         (G,)             string   JSON of optimizer + scorer state after the generation (exact resume)

    attributes: format, config (resolved), versions, seed, population_size, repeats, budget, target_names,
                generations_completed and presentations (written LAST: the commit marker), complete

Arrays are allocated for the whole budget up front (chunk = one generation), so a generation costs a
few chunk writes and one attribute write, no metadata rewrites. zarr's local store writes every file
atomically (temp file + rename), and ``generations_completed`` is written after a generation's
chunks: a run killed at any moment has a consistent prefix, and resume ignores anything after it.
Consolidated metadata is never written while a run is open. No pickle: the state is JSON
(``xdream_ts.serial``); everything is readable with plain zarr.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import serial
from .errors import UserError

FORMAT = "xdream_ts.run/1"


def _open_zarr():
    import zarr  # zarr is light but not needed by `import xdream_ts`
    return zarr


class RunStore:
    """Writer/reader over one run group. ``path=None`` keeps the run in memory (same code path)."""

    def __init__(self, group, path: Path | None):
        self.group = group
        self.path = path
        self._handles: dict = {}
        # What this writer appended, kept in memory, so that the finished run is returned without
        # reading it all back from disk (0.8 s CPU for a 10,000-presentation run). Only a store this
        # object created from empty has a complete mirror; an opened (resumed) one reads from disk.
        self._mirror: dict | None = None

    def _arr(self, name):
        # Looking an array up in the group re-reads its metadata (~1-2 ms): keep the handles.
        if name not in self._handles:
            self._handles[name] = self.group[name]
        return self._handles[name]

    # -- creation and opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, population_size: int, dim: int, series_shape: tuple, repeats: int, n_targets: int,
               budget: int, has_clean: bool, attrs: dict) -> "RunStore":
        zarr = _open_zarr()
        if path is None:
            group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
        else:
            path = Path(path)
            if path.exists():
                raise UserError(f"run store {path} already exists: pass resume=True (--resume) to continue it, "
                                f"or choose another path (--out)")
            group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        store = cls(group, path)
        store._mirror = {} if path is not None else None  # a memory store is its own mirror
        G = max(1, math.ceil(budget / (population_size * repeats)))
        P = population_size
        tk = () if n_targets == 1 else (n_targets,)
        store._array("codes", (G, P, dim), "f8")
        store._array("series", (G, P, *series_shape), "f4")
        store._array("scores", (G, P, repeats, *tk), "f8")
        store._array("objective", (G, P), "f8")
        if has_clean:
            store._array("clean_scores", (G, P, *tk), "f8")
        store._array("n_evaluated", (G,), "i4", fill=0)
        group.create_array("state", shape=(G,), chunks=(1,), dtype=str, fill_value="")
        group.update_attributes({"format": FORMAT, **attrs, "population_size": P, "repeats": repeats,
                            "generations_completed": 0, "presentations": 0, "complete": False})
        return store

    def _array(self, name, shape, dtype, fill=np.nan):
        self.group.create_array(name, shape=shape, chunks=(1, *shape[1:]), dtype=dtype, fill_value=fill)

    @classmethod
    def open(cls, path, mode: str = "r") -> "RunStore":
        zarr = _open_zarr()
        path = Path(path)
        if not path.exists():
            raise UserError(f"no run store at {path}: check the path (a run is a folder ending in .zarr)")
        try:
            group = zarr.open_group(str(path), mode=mode)
            fmt = group.attrs.get("format")
        except Exception as exc:  # corrupt or not zarr at all
            raise UserError(f"{path} is not a readable zarr run store ({type(exc).__name__}): "
                            f"point to the folder that `xdream-ts run --out` wrote") from None
        if fmt != FORMAT:
            raise UserError(f"{path} is not an xdream_ts run store (format {fmt!r}, expected {FORMAT!r})")
        return cls(group, path)

    # -- appending ------------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def generations_completed(self) -> int:
        return int(self.group.attrs["generations_completed"])

    def capacity(self) -> int:
        return self.group["codes"].shape[0]

    def ensure_capacity(self, generations: int) -> None:
        """Grow every per-generation array (resume with a larger budget)."""
        if generations <= self.capacity():
            return
        for name in ("codes", "series", "scores", "objective", "clean_scores", "n_evaluated", "state"):
            if name in self.group:
                arr = self._arr(name)
                arr.resize((generations, *arr.shape[1:]))

    def append(self, g: int, *, codes, series, scores, objective, clean, n_evaluated: int, state: dict | str,
               presentations: int) -> None:
        """Write generation g, then its commit marker. ``state`` may be pre-serialised JSON."""
        if g >= self.capacity():
            self.ensure_capacity(g + 1)
        n = n_evaluated
        rows = {"codes": np.asarray(codes, dtype=np.float64), "objective": np.asarray(objective, dtype=np.float64),
                "series": _padded(series, n, self._arr("series").shape[1:], np.float32),
                "scores": _padded(scores, n, self._arr("scores").shape[1:], np.float64),
                "n_evaluated": np.int32(n), "state": state if isinstance(state, str) else serial.dumps(state)}
        if clean is not None and "clean_scores" in self.group:
            rows["clean_scores"] = _padded(clean, n, self._arr("clean_scores").shape[1:], np.float64)
        _write_rows(g, [(self._arr(k), v) for k, v in rows.items()])
        if self._mirror is not None:
            if all(len(v) == g for v in self._mirror.values()):
                for k, v in rows.items():
                    if k != "state":
                        self._mirror.setdefault(k, []).append(v)
            else:  # a generation rewritten or skipped: the mirror no longer matches, stop keeping it
                self._mirror = None
        # The commit marker, written last and in ONE metadata write (zarr's attrs.update writes once per
        # key, and a kill between two keys would leave them disagreeing).
        self.group.update_attributes({"generations_completed": g + 1, "presentations": int(presentations)})

    def mark_complete(self, summary: dict) -> None:
        self.group.update_attributes({**summary, "complete": True})

    def state(self, g: int) -> dict:
        return serial.loads(str(self._arr("state")[g]))

    def read(self, name: str, generations: int | None = None):
        if name not in self.group:
            return None
        g = self.generations_completed if generations is None else generations
        rows = (self._mirror or {}).get(name)
        if rows is not None and g <= len(rows) and g > 0:
            return np.stack(rows[:g]).astype(self._arr(name).dtype, copy=False)
        return self._arr(name)[:g]


def _padded(values, n: int, row_shape: tuple, dtype) -> np.ndarray:
    """One generation's row, NaN where the budget left members unshown."""
    row = np.full(row_shape, np.nan, dtype=dtype)
    row[:n] = values
    return row


def _write_rows(g: int, rows: list) -> None:
    """Write one chunk per array concurrently on zarr's event loop (one round trip instead of seven)."""
    import asyncio

    from zarr.core.sync import sync

    async def write_all():
        await asyncio.gather(*(arr._async_array.setitem(g, value) for arr, value in rows))

    sync(write_all())
