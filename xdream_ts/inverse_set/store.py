"""An inverse set as a result: :class:`InverseSet`, written as a zarr v3 group (format
``xdream_ts.inverse_set/1``, no pickle) and read back by :func:`load_inverse_set`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .features import diversity

FORMAT = "xdream_ts.inverse_set/1"


@dataclass
class InverseSet:
    """n series whose activations lie in the constraints' ranges, with everything needed to judge them."""

    series: np.ndarray             # (n, [C,] L) float32: exactly what was scored
    codes: np.ndarray              # (n, d)
    activations: np.ndarray        # (n, m): mean over repeats, one column per constraint
    observed: np.ndarray           # (n, R, m): every presentation
    features: np.ndarray           # (n, f)
    p_in_range: np.ndarray         # (n,): P(true activation in range), NaN with one repeat
    in_range_fraction: np.ndarray  # (n,): fraction of repeats in range on every constraint
    ci_low: np.ndarray             # (n, m): 95 % t-interval of the mean (NaN with one repeat)
    ci_high: np.ndarray
    constraints: list
    method: str
    presentations: int
    n_requested: int
    clean_activations: np.ndarray | None = None
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return int(len(self.series))

    @property
    def diversity(self) -> float:
        return diversity(self.features)

    @property
    def truly_in_range(self) -> np.ndarray | None:
        """(n,) bool from the clean activations (simulated targets only)."""
        if self.clean_activations is None:
            return None
        lo = np.array([c["z1"] if isinstance(c, dict) else c.z1 for c in self.constraints])
        hi = np.array([c["z2"] if isinstance(c, dict) else c.z2 for c in self.constraints])
        return np.all((self.clean_activations >= lo) & (self.clean_activations <= hi), axis=1)

    def summary(self) -> dict:
        cons = [c if isinstance(c, dict) else {"name": c.name, "z1": c.z1, "z2": c.z2} for c in self.constraints]
        s = {"path": str(self.path) if self.path else None, "method": self.method, "n": len(self),
             "n_requested": self.n_requested, "presentations": int(self.presentations),
             "diversity": self.diversity if len(self) > 1 else None, "features": self.config.get("features"),
             "constraints": [{"name": c.get("name"), "z1": c["z1"], "z2": c["z2"]} for c in cons],
             "repeats": int(self.observed.shape[1]) if self.observed.ndim == 3 else None}
        if len(self):
            s["activation_min"] = self.activations.min(axis=0).tolist()
            s["activation_max"] = self.activations.max(axis=0).tolist()
            if np.isfinite(self.p_in_range).any():
                s["p_in_range_mean"] = float(np.nanmean(self.p_in_range))
                s["p_in_range_min"] = float(np.nanmin(self.p_in_range))
            s["in_range_fraction_mean"] = float(np.mean(self.in_range_fraction))
            truly = self.truly_in_range
            if truly is not None:
                s["truly_in_range"] = float(np.mean(truly))
        return s

    # -- storage --------------------------------------------------------------------------------------
    def save(self, path, gallery: bool = True) -> Path:
        """Write the zarr v3 group (and gallery.png inside it); refuses to overwrite.

        Arrays: series, codes, activations (n, m: one column per constraint, mean over repeats),
        observed (n, R, m), clean_activations (when known), features, p_in_range, in_range_fraction,
        ci_low, ci_high; attributes: format, method, constraints, presentations, n, n_requested,
        diversity, config, info, gallery.
        """
        import zarr

        from .gallery import plot_gallery
        path = Path(path)
        if path.exists():
            raise UserError(f"{path} already exists: choose another --out (an inverse set is never overwritten)")
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        arrays = {"series": self.series.astype(np.float32), "codes": self.codes.astype(np.float64),
                  "activations": self.activations, "observed": self.observed, "features": self.features.astype(np.float32),
                  "p_in_range": self.p_in_range, "in_range_fraction": self.in_range_fraction,
                  "ci_low": self.ci_low, "ci_high": self.ci_high}
        if self.clean_activations is not None:
            arrays["clean_activations"] = self.clean_activations
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            arr = group.create_array(name, shape=a.shape, dtype=a.dtype, chunks=tuple(max(1, d) for d in a.shape),
                                     fill_value=np.nan if a.dtype.kind == "f" else 0)
            if a.size:
                arr[...] = a
        cons = [c if isinstance(c, dict) else c.describe() for c in self.constraints]
        group.attrs.update(jsonable({"format": FORMAT, "method": self.method, "constraints": cons,
                                      "presentations": int(self.presentations), "n": len(self),
                                      "n_requested": int(self.n_requested),
                                      "diversity": self.diversity if len(self) > 1 else None,
                                      "config": self.config, "info": self.info,
                                      "gallery": "gallery.png" if gallery and len(self) else None}))
        self.path = path
        if gallery and len(self):
            plot_gallery(self, path / "gallery.png")
        return path


def jsonable(obj):
    """Attributes must be plain JSON: numpy scalars -> Python, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def load_inverse_set(path) -> InverseSet:
    """Read an inverse set written by :func:`inverse_set` (``out=``) or ``InverseSet.save``."""
    import zarr
    path = Path(path)
    if not path.exists():
        raise UserError(f"no inverse set at {path}: check the path (the folder `xdream-ts inverse-set --out` wrote)")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:
        raise UserError(f"{path} is not a readable zarr group ({type(exc).__name__}): point to an inverse-set folder") from None
    if attrs.get("format") != FORMAT:
        raise UserError(f"{path} is not an inverse set (format {attrs.get('format')!r}, expected {FORMAT!r})")

    def read(name):
        return np.asarray(group[name][...]) if name in group else None

    return InverseSet(series=read("series"), codes=read("codes"), activations=read("activations"),
                      observed=read("observed"), features=read("features").astype(np.float64),
                      p_in_range=read("p_in_range"), in_range_fraction=read("in_range_fraction"),
                      ci_low=read("ci_low"), ci_high=read("ci_high"), constraints=attrs["constraints"],
                      method=attrs["method"], presentations=int(attrs["presentations"]),
                      n_requested=int(attrs["n_requested"]), clean_activations=read("clean_activations"),
                      config=attrs.get("config", {}), info=attrs.get("info", {}), path=path)
