"""`xdream-ts report RUN_OR_SWEEP --out DIR`: figures and a markdown summary of a run or a sweep.

Writes into DIR:

- ``trajectories.png``: best-so-far activation against presentations (relative activation when the
  unit's reference maximum is known), one panel per target, one line per optimizer (median over seeds);
- ``gallery_*.png``: the best stimulus at log-spaced generations (XDream Fig. 1c), for the best run of
  each target;
- ``best_vs_real_*.png``: the best stimulus beside the best real series of the same unit: for the
  shipped model, the FordA series that reaches the unit's reference maximum (or the best of the shipped
  FordA sample, scored by the same target); for a simulated neuron, its closed-form optimum; for your
  own model, the best of ``--reference-data`` scored by the same target;
- ``violin_relative.png`` and ``violin_normalized.png`` (several runs): relative activation (best clean
  activation / best over real data) and normalized activation (best clean activation / best any run
  reached on that unit, Wang & Ponce 2022) per depth and optimizer, one panel per noise model
  (XDream Fig. 2 and 5);
- ``report.md``: the tables (per group: median relative and normalized activation, share of super
  stimuli, presentations until the first super stimulus, median over units; per run) and the figures.

"Clean" is the noiseless activation, recorded for simulated noise; for other targets the observed one.
Run stores are read without loading every presented series: a sweep of thousands of runs fits in memory.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

MAX_FIGURES = 16  # galleries and best-vs-real figures (one per target) beyond this go to the table only


@dataclass
class RunInfo:
    """What the report needs from one run store (no presented series)."""

    path: Path
    target: str
    depth: str
    optimizer: str
    noise: str
    seed: int | None
    decoder: str | None
    repeats: int
    reference_max: float | None
    x: np.ndarray                 # presentations after each generation
    trajectory: np.ndarray        # clean (when known) activation of the best-observed series so far, per generation
    best_index: tuple[int, int]
    best_score: float             # observed objective of the best series
    best_clean: float | None
    presentations: int
    first_super: int | None
    scorer: dict = field(default_factory=dict)
    normalized: float | None = None
    target_spec: dict | None = None   # the recorded TargetSpec (config["target"])
    data_source: str | None = None    # the run's --data, when it had one

    @property
    def best_value(self) -> float:
        return self.best_clean if self.best_clean is not None else self.best_score

    @property
    def relative(self) -> float | None:
        return self.best_value / self.reference_max if self.reference_max else None


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
def _is_run(p: Path) -> bool:
    return (p / "zarr.json").is_file()


def collect(source) -> tuple[str, list[RunInfo], list[dict]]:
    """(kind, runs, failures) for a run store, a sweep folder, or a list of run stores."""
    from .sweep import INDEX_FILE, load_sweep
    if isinstance(source, (list, tuple)):
        return "runs", [read_run(Path(p)) for p in source], []
    p = Path(source)
    if not p.exists():
        raise UserError(f"{p} does not exist: give a run store (.zarr) or a sweep folder (with index.json)")
    if (p / INDEX_FILE).is_file():
        sw = load_sweep(p)
        runs, failures = [], []
        for key, e in sw.entries.items():
            store = p / e["store"]
            if e["status"] == "done" and _is_run(store):
                prm = e["params"]
                runs.append(read_run(store, target=prm["target_label"], optimizer=prm["optimizer_label"],
                                     noise=prm["noise"], depth=_depth(prm["target"])))
            elif e["status"] != "done":
                failures.append({"id": key, "status": e["status"], "error": e.get("error")})
        if not runs:
            raise UserError(f"sweep {p} has no finished run yet: run (or resume) it with `xdream-ts sweep`")
        return "sweep", runs, failures
    if _is_run(p):
        return "run", [read_run(p)], []
    raise UserError(f"{p} is neither a run store (.zarr) nor a sweep folder (index.json): check the path")


def _depth(target: dict) -> str:
    return "simulated" if target.get("kind") == "simulated" else str(target.get("layer"))


def read_run(path: Path, target: str | None = None, optimizer: str | None = None, noise: str | None = None,
             depth: str | None = None) -> RunInfo:
    """A run store's trajectory, best series position and labels (labels from the run's config when not given)."""
    from .objective import replay as combine_targets
    from .store import RunStore
    from .sweep import first_super_presentation

    st = RunStore.open(path)
    attrs = st.attrs
    cfg = attrs.get("config", {})
    obj = st.read("objective")
    if obj is None or len(obj) == 0 or not np.isfinite(obj).any():
        raise UserError(f"run {path} has no valid score yet: nothing to report (resume it first)")
    n_eval = st.read("n_evaluated")

    class _R:  # the fields first_super_presentation and the plausible readers use, without the series
        pass
    r = _R()
    r.config, r.n_evaluated = cfg, n_eval
    if cfg.get("plausible"):
        # a plausible run tells its optimizer a penalised value: the report reads the activation of its
        # feasible stimuli instead (all of them when none is feasible), so that its best is the series
        # the run reports (plausible.reported_index) and its trajectory the best feasible so far
        from .plausible import activation_and_distance, feasible_activation
        r.scores = st.read("scores")
        feasible = feasible_activation(r)
        obj = feasible if np.isfinite(feasible).any() else activation_and_distance(r)[0]
    clean = st.read("clean_scores")
    clean_obj = combine_targets(clean, cfg.get("objective")) if clean is not None else None
    reps = int(attrs.get("repeats") or cfg.get("repeats") or 1)
    x = np.cumsum(n_eval) * reps
    masked = np.where(np.isfinite(obj), obj, -np.inf)
    per_gen_best = np.argmax(masked, axis=1)
    per_gen_val = masked[np.arange(len(obj)), per_gen_best]
    traj = np.empty(len(obj))
    best_g, best_val = 0, -np.inf
    for g in range(len(obj)):  # the series the experimenter would pick so far, and what it really does
        if per_gen_val[g] > best_val:
            best_g, best_val = g, per_gen_val[g]
        p = per_gen_best[best_g]
        traj[g] = clean_obj[best_g, p] if clean_obj is not None else obj[best_g, p]
    bg = best_g
    bp = int(per_gen_best[bg])
    inc = attrs.get("incumbent")
    # the optimizer's own pick (noisy default): the series the run reports, not a lucky draw (a plausible
    # run reports its best feasible stimulus instead)
    if inc and not cfg.get("plausible"):
        bg, bp = int(inc["generation"]), int(inc["member"])
    scorer = cfg.get("scorer", {}) or {}
    ref = cfg.get("reference_max")

    r.clean_scores, r.clean_objective, r.objective = clean, clean_obj, obj
    sweep_cfg = cfg.get("sweep", {}) or {}
    return RunInfo(
        path=Path(path), target=target or sweep_cfg.get("target") or _target_label(cfg),
        depth=depth or _depth_from_config(cfg), optimizer=optimizer or sweep_cfg.get("optimizer_label")
        or (cfg.get("optimizer") or {}).get("name", "?"), noise=noise or sweep_cfg.get("noise") or
        scorer.get("noise") and _noise_label(scorer) or "none", seed=cfg.get("seed"),
        decoder=(cfg.get("decoder") or {}).get("name"), repeats=reps, reference_max=ref, x=x, trajectory=traj,
        best_index=(bg, bp), best_score=float(obj[bg, bp]),
        best_clean=float(clean_obj[bg, bp]) if clean_obj is not None else None,
        presentations=int(attrs.get("presentations", int(x[-1]))),
        first_super=first_super_presentation(r, ref), scorer=scorer, target_spec=cfg.get("target"),
        data_source=(cfg.get("data") or {}).get("source"))


def _inner(scorer: dict) -> dict:
    if scorer.get("kind") == "plausible" and scorer.get("targets"):  # labelled by the model and unit it constrains
        return {**scorer, "kind": "onnx"}
    return scorer.get("inner", scorer) if scorer.get("noise") else scorer


def _noise_label(scorer: dict) -> str:
    kind = scorer.get("noise")
    if kind == "poisson":
        return f"poisson:{scorer.get('scale'):g}"
    if kind == "gain":
        return f"gain:{scorer.get('sigma'):g}"
    return str(kind)


def _target_label(cfg: dict) -> str:
    inner = _inner(cfg.get("scorer", {}) or {})
    if inner.get("kind") == "onnx" and inner.get("targets"):
        t = inner["targets"][0]
        head = "ref" if _is_shipped(inner.get("model_path"), inner.get("sha256")) else Path(inner["model_path"]).stem
        return f"{head}-{t.get('tensor') or t.get('layer')}:{t.get('unit')}@{t.get('position')}"
    if inner.get("name") == "simulated_neuron":
        return f"sim{inner.get('seed')}-L{inner.get('length')}"
    return str(inner.get("name") or inner.get("class") or "target")


def _depth_from_config(cfg: dict) -> str:
    inner = _inner(cfg.get("scorer", {}) or {})
    if inner.get("kind") == "onnx" and inner.get("targets"):
        t = inner["targets"][0]
        return str(t.get("tensor") or t.get("layer"))
    if inner.get("name") == "simulated_neuron":
        return "simulated"
    return str(inner.get("name") or "target")


def _is_shipped(model_path, sha256) -> bool:
    from .reference import is_reference_model, reference_model_path
    if model_path and is_reference_model(model_path):
        return True
    try:
        shipped = reference_model_path()
    except Exception:  # no shipped model in this installation
        return False
    if sha256:
        import hashlib
        return hashlib.sha256(shipped.read_bytes()).hexdigest() == sha256
    return False


# ---------------------------------------------------------------------------------------------------
# Best real series of a target
# ---------------------------------------------------------------------------------------------------
def real_series_for(info: RunInfo, reference_data=None) -> tuple[np.ndarray | None, float | None, str]:
    """(series, its activation, label) of the best real series for the run's target, or (None, None, why)."""
    from .targets import TargetSpec, build, spec_from_description
    inner = _inner(info.scorer)
    try:
        spec = (TargetSpec.from_dict(info.target_spec) if info.target_spec else spec_from_description(info.scorer))
    except UserError:
        return None, None, "no real data known for this target"
    if spec.kind == "simulated":
        n = build(spec.with_(noise="none")).clean
        x = n.optimum()
        return x, float(n(x[None])[0]), "closed-form optimum of the simulated neuron"
    if spec.kind != "onnx" or not spec.units:
        return None, None, "no real data known for this target"
    t = inner["targets"][0]
    model = spec.model or inner.get("model_path")  # a recorded spec of the shipped model names none
    if not model or not Path(model).is_file():
        return None, None, f"model {model} not found"
    scorer = build(spec.with_(units=spec.units[:1], noise="none", providers="cpu", objective="sum")).clean
    shipped = _is_shipped(model, inner.get("sha256"))
    if reference_data is None and shipped:
        from . import reference
        tensor = t.get("tensor") or t.get("layer")
        two_d = len(reference.ONNX_TENSORS.get(tensor, ((0, 0, 0),))[0]) == 2
        unit = reference.ReferenceUnit(tensor, int(t["unit"]), "none" if two_d else str(t.get("position")))
        try:
            x = reference.best_real_series(unit)
            return x, float(scorer(x[None])[0]), "best of all 4921 FordA series (reference maximum)"
        except (UserError, KeyError, FileNotFoundError):
            X, _ = reference.sample_series()
            label = f"best of {len(X)} FordA test series (shipped sample)"
    elif reference_data is not None:
        X = _load_reference(reference_data)
        label = f"best of {len(X)} series of {Path(str(reference_data)).name}" if not isinstance(
            reference_data, np.ndarray) else f"best of {len(X)} reference series"
    elif info.data_source and Path(info.data_source).exists():  # the run's own --data, read as the run read it
        from .analysis import load_reference_data
        X = load_reference_data(info.data_source, length=scorer.length)
        label = f"best of {len(X)} series of {Path(info.data_source).name} (the run's --data)"
    else:
        return None, None, "no real data given (--reference-data)"
    if scorer.length is not None and X.shape[-1] != scorer.length:
        return None, None, f"reference series have length {X.shape[-1]}, the model takes {scorer.length}"
    scores = scorer(X)
    i = int(np.nanargmax(scores))
    return X[i], float(scores[i]), label


def _load_reference(reference_data) -> np.ndarray:
    if isinstance(reference_data, np.ndarray):
        return reference_data.astype(np.float32)
    from .data import load_ucr
    from .series import znormalize
    d = load_ucr(reference_data)
    X = np.concatenate([d.X_train, d.X_test]) if hasattr(d, "X_train") else d[0]
    X = X[np.isfinite(X).all(axis=tuple(range(1, X.ndim)))]  # variable-length UCR rows are NaN-padded
    return znormalize(X.astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def normalize_runs(runs: list[RunInfo]) -> None:
    """Normalized activation (Wang & Ponce 2022): best clean activation / best any run reached on that target."""
    best: dict[str, float] = {}
    for r in runs:
        best[r.target] = max(best.get(r.target, -np.inf), r.best_value)
    for r in runs:
        top = best[r.target]
        r.normalized = r.best_value / top if top > 0 else None


def _depth_order(runs: list[RunInfo]) -> list[str]:
    depths = list(dict.fromkeys(r.depth for r in runs))
    try:
        from .reference import TARGET_TENSORS
        order = {t: i for i, t in enumerate(TARGET_TENSORS)}
    except ImportError:
        order = {}
    return sorted(depths, key=lambda d: (order.get(d, len(order)), depths.index(d)))


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{digits}g}"


def _median_iqr(vals) -> str:
    v = np.asarray([x for x in vals if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "n/a"
    q1, q2, q3 = np.percentile(v, [25, 50, 75])
    return f"{q2:.3g} [{q1:.3g}, {q3:.3g}]" if v.size > 1 else f"{q2:.3g}"


def first_super_table(runs: list[RunInfo]) -> list[dict]:
    """Per (noise, optimizer): presentations until the first super stimulus, median over units.

    Per unit the median over its seeds (a seed that never found one counts as infinitely many); then the
    median over units. "not reached" when more than half of the units never had a super stimulus.
    """
    rows = []
    groups: dict[tuple, dict[str, list]] = {}
    for r in runs:
        if not r.reference_max:
            continue
        groups.setdefault((r.noise, r.optimizer), {}).setdefault(r.target, []).append(
            r.first_super if r.first_super is not None else math.inf)
    for (noise, opt), per_unit in groups.items():
        unit_medians = [float(np.median(v)) for v in per_unit.values()]
        med = float(np.median(unit_medians))
        reached = sum(1 for v in per_unit.values() if any(math.isfinite(x) for x in v))
        budget = max((r.presentations for r in runs if r.optimizer == opt and r.noise == noise), default=0)
        rows.append({"noise": noise, "optimizer": opt, "units": len(per_unit), "units_with_super": reached,
                     "median_presentations": med if math.isfinite(med) else None, "budget": budget})
    return rows


def summary_table(runs: list[RunInfo]) -> list[dict]:
    """Per (noise, depth, optimizer): runs, relative and normalized activation (median [IQR]), super-stimulus share."""
    out = []
    keys = list(dict.fromkeys((r.noise, r.depth, r.optimizer) for r in runs))
    depth_rank = {d: i for i, d in enumerate(_depth_order(runs))}
    keys.sort(key=lambda k: (k[0], depth_rank[k[1]]))
    for noise, depth, opt in keys:
        rs = [r for r in runs if (r.noise, r.depth, r.optimizer) == (noise, depth, opt)]
        rel = [r.relative for r in rs if r.relative is not None]
        out.append({"noise": noise, "depth": depth, "optimizer": opt, "runs": len(rs),
                    "units": len({r.target for r in rs}),
                    "relative": _median_iqr(rel) if rel else "n/a",
                    "super_share": f"{sum(v > 1 for v in rel)}/{len(rel)}" if rel else "n/a",
                    "normalized": _median_iqr([r.normalized for r in rs])})
    return out


def md_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c[0])) if not isinstance(r.get(c[0]), str) else r.get(c[0])
                              for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")[:80]


def report(source, out_dir, reference_data=None) -> dict:
    """Write figures and report.md for a run store, a sweep folder, or a list of run stores.

    ``reference_data``: real series (an array, or a UCR file/folder) for the best-real-series figure of
    targets that are not the shipped model. Returns {"report": path, "figures": [paths], "runs": n}.
    """
    from . import plots

    kind, runs, failures = collect(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    normalize_runs(runs)
    figures: list[Path] = []

    # trajectories: one panel per target, one line per (optimizer, noise)
    relative = all(r.reference_max for r in runs)
    curves: dict[str, list] = {}
    by_panel: dict[str, dict[str, list[RunInfo]]] = {}
    for r in runs:
        line = r.optimizer if len({x.noise for x in runs}) == 1 else f"{r.optimizer}, {r.noise}"
        by_panel.setdefault(r.target, {}).setdefault(line, []).append(r)
    for panel, lines in by_panel.items():
        curves[panel] = []
        for line, rs in lines.items():
            x = max((r.x for r in rs), key=len)
            ys = [np.interp(x, r.x, r.trajectory / (r.reference_max if relative else 1.0)) for r in rs]
            curves[panel].append((line, x, np.array(ys)))
    ylabel = "relative activation (best / best real)" if relative else "activation (a.u.)"
    clean_note = " (clean activation of the best-observed series)" if any(r.best_clean is not None for r in runs) else ""
    figures.append(plots.score_trajectories(curves, out / "trajectories.png", ylabel,
                                            f"Best stimulus so far{clean_note}", reference_line=1.0 if relative else None))

    # galleries and best-vs-real: the best run of each target
    best_of_target: dict[str, RunInfo] = {}
    for r in runs:
        if r.target not in best_of_target or r.best_value > best_of_target[r.target].best_value:
            best_of_target[r.target] = r
    real_rows = []
    for target, r in list(best_of_target.items())[:MAX_FIGURES]:
        tag = _slug(target) if kind != "run" else "run"
        figures.append(_gallery(r, out / f"gallery_{tag}.png"))
        real, real_score, real_label = real_series_for(r, reference_data)
        best = _best_series(r)
        score_name = "clean activation" if r.best_clean is not None else "activation"
        figures.append(plots.best_vs_real(
            best, real, out / f"best_vs_real_{tag}.png",
            title=f"{target}: best stimulus ({r.optimizer}) vs. "
                  + ("the closed-form optimum" if real_label.startswith("closed-form") else "the best real series"),
            best_label=f"best stimulus, {score_name} {r.best_value:.3g}"
                       + (f" (relative {r.relative:.2f})" if r.relative is not None else ""),
            real_label=f"{real_label}, activation {real_score:.3g}" if real is not None else real_label))
        real_rows.append({"target": target, "optimizer": r.optimizer, "best": r.best_value, "real": real_score,
                          "ratio": (r.best_value / real_score) if real_score else None, "real_source": real_label})

    # plausibility (issue 16): distance against activation, and the reported series' distance, for every
    # best run whose reference data are known (its --data, the shipped sample, a plausible run's own)
    plaus_rows = []
    for target, r in list(best_of_target.items())[:MAX_FIGURES]:
        m = plausibility_map(r)
        if m is None:
            continue
        tag = _slug(target) if kind != "run" else "run"
        figures.append(plots.distance_vs_activation(
            m, out / f"plausibility_{tag}.png",
            f"{target} ({r.optimizer}{', plausible run' if m['plausible'] else ''}):\n"
            "distance from the real series against activation"))
        at = m["reported"]
        plaus_rows.append({"target": target, "optimizer": r.optimizer, "layer": m["layer"],
                           "activation": float(m["activation"][at]), "distance": float(m["distance"][at]),
                           "percentile": m["reported_percentile"], "threshold": m["threshold"],
                           "feasible": "yes" if m["distance"][at] <= m["threshold"] else "no",
                           "reference": m["reference_source"]})

    # violins (several runs): relative and normalized activation per depth and optimizer, panels by noise
    if len(runs) > 1:
        depth_order = _depth_order(runs)
        for what, attr, ylabel_v, line in (("relative", "relative", "relative activation (best / best real)", 1.0),
                                           ("normalized", "normalized", "normalized activation (best / best any run)",
                                            None)):
            data: dict = {}
            for d in depth_order:
                for r in runs:
                    if r.depth == d and getattr(r, attr) is not None:
                        data.setdefault((f"noise: {r.noise}", d, r.optimizer), []).append(getattr(r, attr))
            if data:
                figures.append(plots.violins(data, out / f"violin_{what}.png", ylabel_v,
                                             f"{what.capitalize()} activation per depth and optimizer "
                                             f"({len(runs)} runs)", reference_line=line))

    md = _markdown(kind, source, runs, failures, figures, real_rows, out, plaus_rows)
    (out / "report.md").write_text(md)
    return {"report": out / "report.md", "figures": figures, "runs": len(runs), "failures": len(failures),
            "plausibility": plaus_rows}


def _best_series(r: RunInfo) -> np.ndarray:
    import zarr
    g = zarr.open_group(str(r.path), mode="r")
    return np.asarray(g["series"][r.best_index])


def _gallery(r: RunInfo, path: Path) -> Path:
    import zarr

    from . import plots
    grp = zarr.open_group(str(r.path), mode="r")
    obj = grp["objective"][: len(r.x)]
    gens = plots.log_spaced_generations(len(r.x))
    series, scores = [], []
    for g in gens:
        row = np.where(np.isfinite(obj[g]), obj[g], -np.inf)
        p = int(np.argmax(row))
        series.append(np.asarray(grp["series"][g, p]))
        scores.append(float(obj[g, p]))
    return plots.gallery(series, gens, scores, path,
                         title=f"{r.target}, {r.optimizer} (seed {r.seed}): best stimulus of each generation, "
                               f"log-spaced", score_label="score")


def plausibility_map(r: RunInfo) -> dict | None:
    """``analysis.distance_activation`` of a run, or None when its reference data are not known or its
    model is gone: a report never fails for want of them."""
    from .analysis import distance_activation
    from .loop import load_run
    try:
        return distance_activation(load_run(r.path))
    except (UserError, FileNotFoundError):
        return None


def _markdown(kind, source, runs, failures, figures, real_rows, out: Path, plaus_rows=()) -> str:
    src = ", ".join(str(p) for p in source) if isinstance(source, (list, tuple)) else str(source)
    lines = [f"# xdream_ts report: {Path(src).name if kind != 'runs' else f'{len(runs)} runs'}", "",
             f"Source: `{src}` ({kind}, {len(runs)} finished runs"
             f"{f', {len(failures)} not finished' if failures else ''}). Written {time.strftime('%Y-%m-%d %H:%M')}.",
             "", "Relative activation = best clean activation / best activation over real data for that unit "
             "(> 1: a super stimulus). Normalized activation = best clean activation / best any run reached on "
             "that unit. Clean = noiseless activation where the noise was simulated, else observed.", ""]
    lines += ["## Summary", "", md_table(summary_table(runs), [
        ("noise", "noise"), ("depth", "depth"), ("optimizer", "optimizer"), ("runs", "runs"), ("units", "units"),
        ("relative", "relative activation, median [IQR]"), ("super_share", "super stimuli"),
        ("normalized", "normalized activation, median [IQR]")]), ""]
    fs = first_super_table(runs)
    if fs:
        lines += ["## Presentations until the first super stimulus", "",
                  "Median over units (per unit: median over seeds); a unit counts as reached when any seed found one.",
                  "", md_table([{**r, "median_presentations": _fmt(r["median_presentations"]) if
                                  r["median_presentations"] is not None else f"not reached (> {r['budget']})",
                                  "units_with_super": f"{r['units_with_super']}/{r['units']}"} for r in fs],
                                [("noise", "noise"), ("optimizer", "optimizer"),
                                 ("units_with_super", "units with a super stimulus"),
                                 ("median_presentations", "presentations, median over units")]), ""]
    if real_rows:
        lines += ["## Best stimulus vs. best real series", "", md_table(real_rows, [
            ("target", "target"), ("optimizer", "best run's optimizer"), ("best", "best stimulus"),
            ("real", "best real series"), ("ratio", "ratio"), ("real_source", "real series")]), ""]
    if plaus_rows:
        lines += ["## Plausibility of the reported series", "",
                  "Mahalanobis distance of each target's best run's reported series from the real series in the "
                  "layer's activation space, its percentile among the real series' own distances, and whether it "
                  "lies within the threshold (a plausible run's quantile; else the real 99th percentile).", "",
                  md_table(plaus_rows, [("target", "target"), ("optimizer", "optimizer"), ("layer", "layer"),
                                        ("activation", "activation"), ("distance", "distance"),
                                        ("percentile", "percentile"), ("threshold", "threshold"),
                                        ("feasible", "within"), ("reference", "real series")]), ""]
    lines += ["## Figures", ""]
    for f in figures:
        lines += [f"![{f.stem}]({f.relative_to(out)})", ""]
    rows = sorted(runs, key=lambda r: (r.target, r.optimizer, r.noise, r.seed if r.seed is not None else -1))
    lines += ["## Runs", "", md_table([{
        "target": r.target, "optimizer": r.optimizer, "noise": r.noise, "seed": r.seed, "best": r.best_score,
        "clean": r.best_clean, "relative": r.relative, "normalized": r.normalized,
        "presentations": r.presentations, "first_super": r.first_super,
        "store": f"`{r.path.name}`"} for r in rows[:500]], [
        ("target", "target"), ("optimizer", "optimizer"), ("noise", "noise"), ("seed", "seed"),
        ("best", "best observed"), ("clean", "best clean"), ("relative", "relative"), ("normalized", "normalized"),
        ("presentations", "presentations"), ("first_super", "first super stimulus at"), ("store", "run store")])]
    if len(rows) > 500:
        lines += ["", f"({len(rows) - 500} more runs not listed)"]
    if failures:
        lines += ["", "## Tasks not finished", "", md_table(failures, [("id", "task"), ("status", "status"),
                                                                        ("error", "error")])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def add_cli(subparsers) -> None:
    p = subparsers.add_parser("report", help="figures and a markdown summary of a run or a sweep",
                              description="Write PNG figures (trajectories, galleries at log-spaced generations, "
                                          "best stimulus vs. best real series, violins per depth and optimizer) "
                                          "and report.md for a run store or a sweep folder.")
    p.add_argument("source", metavar="RUN_OR_SWEEP", help="a run store (.zarr) or a sweep folder")
    p.add_argument("--out", required=True, help="folder for the figures and report.md")
    p.add_argument("--reference-data", help="UCR file or folder of real series, for targets other than the "
                                            "shipped model (best real series figure)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    res = report(args.source, args.out, reference_data=args.reference_data)
    note = f", {res['failures']} tasks not finished" if res["failures"] else ""
    print(f"report: {res['report']} ({res['runs']} runs, {len(res['figures'])} figures{note})")
    for row in res["plausibility"]:  # issue 16: every report says how plausible its results are
        where = "within" if row["feasible"] == "yes" else "beyond"
        print(f"plausibility: {row['target']} ({row['optimizer']}): distance {row['distance']:.3g} in {row['layer']}, "
              f"percentile {row['percentile']:.0f} of the real series, {where} the threshold {row['threshold']:.3g}")
    return 0
