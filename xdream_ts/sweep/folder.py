"""The sweep folder: its index (index.json, rewritten atomically), the status of each task's run store,
and :class:`SweepResult` / :func:`load_sweep` to read a finished or running sweep back."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

INDEX_FORMAT = "xdream_ts.sweep/1"
INDEX_FILE = "index.json"
CONFIG_FILE = "sweep.json"
RUNS_DIR = "runs"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def atomic_write_json(path: Path, obj) -> None:
    """Write JSON through a temp file and a rename: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def _clean_floats(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class Index:
    """index.json: one entry per task (params, status pending/running/done/failed/interrupted, attempts,
    best scores, relative activation, wall time, error and traceback of a failed task). Entries of
    tasks finished at this budget are carried over from the previous index."""

    def __init__(self, out: Path, cfg: dict, tasks: list[dict]):
        self.path = out / INDEX_FILE
        old = {}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text()).get("tasks", {})
            except json.JSONDecodeError:
                old = {}  # rebuilt from the run stores by the tasks themselves
        self.data = {"format": INDEX_FORMAT, "name": cfg["name"], "config": cfg, "started": now(), "updated": None,
                     "tasks": {}}
        for t in tasks:
            params = {k: t[k] for k in ("target", "target_label", "decoder", "optimizer", "optimizer_label",
                                        "noise", "repeats", "seed", "budget")}
            entry = {"params": params, "store": f"{RUNS_DIR}/{t['id']}.zarr", "status": "pending", "attempts": 0}
            prev = old.get(t["id"])
            if prev:
                entry["attempts"] = prev.get("attempts", 0)
                if prev.get("status") == "done" and prev.get("budget_done", 0) >= t["budget"]:
                    entry.update({k: v for k, v in prev.items() if k not in ("params", "store")})
            self.data["tasks"][t["id"]] = entry

    def update(self, task_id: str, **fields):
        self.data["tasks"][task_id].update(_clean_floats(fields))

    def write(self):
        self.data["updated"] = now()
        atomic_write_json(self.path, self.data)


def store_status(path: Path, budget: int) -> str:
    """'absent', 'broken' (created but never committed), 'done' (complete for ``budget``) or 'partial'.

    Read from the group's zarr.json alone (no zarr import, ~0.1 ms). 'done' needs the run to be marked
    complete AND its presentations to have reached ``budget`` (less than one series' repeats short): the
    attributes are not written in one piece by every zarr version, so ``complete`` alone could be stale.
    """
    if not Path(path).exists():
        return "absent"
    attrs = store_attrs(path)
    if attrs is None:
        return "broken"
    if "generations_completed" not in attrs or "presentations" not in attrs:
        return "broken"
    reps = int(attrs.get("repeats") or 1)
    if attrs.get("complete") and budget - int(attrs["presentations"]) < reps:
        return "done"
    return "partial"


def store_attrs(path: Path) -> dict | None:
    """A run store's attributes, from its zarr.json alone; None when unreadable."""
    try:
        return json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {})
    except (OSError, json.JSONDecodeError):
        return None


def repair_commit_marker(path: Path) -> None:
    """Make ``presentations`` agree with the committed generations before a resume.

    zarr's ``group.attrs.update({...})`` writes zarr.json once per key, so a run killed between the
    ``generations_completed`` and ``presentations`` writes of store.py's commit marker has a counter one
    generation behind, and its resume would run one generation too many. The generations' rows are
    on disk before either write, so the right value is sum(n_evaluated) x repeats.
    """
    import zarr
    g = zarr.open_group(str(path), mode="r+")
    attrs = g.attrs.asdict()
    done = int(attrs["generations_completed"])
    expected = int(g["n_evaluated"][:done].sum()) * int(attrs.get("repeats") or 1)
    if int(attrs["presentations"]) != expected:
        g.update_attributes({"presentations": expected})  # one write


@dataclass
class SweepResult:
    """A sweep folder and its index. ``entries``: task id -> index entry (params, status, scores)."""

    path: Path
    index: dict

    @property
    def entries(self) -> dict:
        return self.index["tasks"]

    @property
    def done(self) -> list[str]:
        return [k for k, e in self.entries.items() if e["status"] == "done"]

    @property
    def failed(self) -> list[str]:
        return [k for k, e in self.entries.items() if e["status"] == "failed"]

    def rows(self) -> list[dict]:
        """One flat dict per task, for tables."""
        out = []
        for k, e in self.entries.items():
            p = e["params"]
            out.append({"id": k, "target": p["target_label"], "kind": p["target"]["kind"],
                        "layer": p["target"].get("layer"), "decoder": p["decoder"], "optimizer": p["optimizer_label"],
                        "noise": p["noise"], "repeats": p["repeats"], "seed": p["seed"],
                        **{f: e.get(f) for f in ("status", "best_score", "best_clean_score", "relative_activation",
                                                 "reference_max", "optimum", "presentations",
                                                 "first_super_presentation", "wall_seconds", "error")}})
        return out

    def load_run(self, task_id: str):
        from ..loop import load_run
        return load_run(self.path / self.entries[task_id]["store"])

    def summary_line(self) -> str:
        n = len(self.entries)
        skipped = sum(1 for e in self.entries.values() if e.get("skipped"))
        line = (f"sweep {self.path}: {n} tasks, {len(self.done)} done"
                f"{f' ({skipped} already complete)' if skipped else ''}, {len(self.failed)} failed")
        if self.failed:
            first = self.entries[self.failed[0]]
            line += f" (first: {self.failed[0]}: {first.get('error')}; tracebacks in {self.path / INDEX_FILE})"
        return line


def load_sweep(path) -> SweepResult:
    """Read a sweep folder written by :func:`~xdream_ts.sweep.sweep`."""
    p = Path(path)
    f = p / INDEX_FILE
    if not f.is_file():
        raise UserError(f"no sweep index at {f}: point to the folder that `xdream-ts sweep --out` wrote")
    try:
        index = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{f} is not valid JSON ({exc.msg}): re-run the sweep to rewrite it") from None
    if index.get("format") != INDEX_FORMAT:
        raise UserError(f"{f} is not an xdream_ts sweep index (format {index.get('format')!r})")
    return SweepResult(p, index)
