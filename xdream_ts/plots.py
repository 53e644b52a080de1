"""Figures shared by reports, the demo and the experiments: PNG files people would put in a paper.

- :func:`score_trajectories`: best-so-far activation against presentations, one panel per target, one
  line per optimizer (median over seeds, shaded range);
- :func:`gallery`: the best stimulus of a run at log-spaced generations (XDream, Xiao & Kreiman 2019,
  Fig. 1c);
- :func:`best_vs_real`: the best stimulus beside the best real series of the same unit;
- :func:`violins`: distributions (relative or normalized activation) per depth and optimizer, one panel
  per noise model (XDream Fig. 2 and Fig. 5);
- :func:`log_spaced_generations`.

matplotlib (Agg backend: no display needed) is imported inside functions; every figure is saved at
150 dpi with labelled axes and a title, then closed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 150
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)  # files only: never needs (or opens) a display
    import matplotlib.pyplot as plt
    return plt


def save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # the callers' tight_layout already fits the labels (a tight bbox would draw twice)
    _plt().close(fig)
    return path


def color_for(label: str, labels: list[str]) -> str:
    return COLORS[labels.index(label) % len(COLORS)] if label in labels else COLORS[0]


def log_spaced_generations(n_generations: int, k: int = 8) -> list[int]:
    """Up to ``k`` generation indices (0-based), log-spaced from the first to the last, as in XDream Fig. 1c."""
    if n_generations <= 0:
        return []
    if n_generations <= k:
        return list(range(n_generations))
    idx = np.unique(np.round(np.geomspace(1, n_generations, k)).astype(int)) - 1
    return [int(i) for i in idx]


def _series_2d(x: np.ndarray) -> np.ndarray:
    """(L,) or (C, L) -> (C, L)."""
    x = np.asarray(x, dtype=np.float64)
    return x[None] if x.ndim == 1 else x


def score_trajectories(curves: dict, path, ylabel: str, title: str, reference_line: float | None = None,
                       max_panels: int = 12) -> Path:
    """``curves``: {panel title: [(line label, presentations (n,), best-so-far values (seeds, n)), ...]}.

    Each line is the median over its rows (seeds), shaded between their min and max. Presentations are
    on the x axis (the papers' budget unit). ``reference_line``: a dashed horizontal line (1.0 for
    relative activation: above it, super stimuli).
    """
    plt = _plt()
    panels = list(curves)[:max_panels]
    n = len(panels)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False, sharex=False)
    labels = sorted({lab for p in panels for lab, _, _ in curves[p]})
    for ax, panel in zip(axes.flat, panels):
        for lab, x, ys in curves[panel]:
            ys = np.atleast_2d(np.asarray(ys, dtype=np.float64))
            c = color_for(lab, labels)
            ax.plot(x, np.nanmedian(ys, axis=0), color=c, lw=1.6, label=f"{lab} (n={len(ys)})" if len(ys) > 1 else lab)
            if len(ys) > 1:
                ax.fill_between(x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=c, alpha=0.18, lw=0)
        if reference_line is not None:
            ax.axhline(reference_line, color="k", ls="--", lw=0.8)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("presentations")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def gallery(series: list[np.ndarray], generations: list[int], scores: list[float], path, title: str,
            score_label: str = "activation") -> Path:
    """One panel per generation: the best series of that generation and its score (XDream Fig. 1c)."""
    plt = _plt()
    k = len(series)
    fig, axes = plt.subplots(1, k, figsize=(2.1 * k, 2.2), squeeze=False, sharey=True)
    for ax, x, g, s in zip(axes[0], series, generations, scores):
        for ch in _series_2d(x):
            ax.plot(np.arange(ch.size), ch, lw=0.8, color="#1f77b4")
        ax.set_title(f"gen {g + 1}\n{score_label} {s:.3g}", fontsize=8)
        ax.set_xlabel("time step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("value (z-score)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def best_vs_real(best: np.ndarray, real: np.ndarray | None, path, title: str, best_label: str,
                 real_label: str) -> Path:
    """The best stimulus (left) beside the best real series (right), on the same value axis."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 2.8), sharey=True)
    for ax, x, lab, c in ((axes[0], best, best_label, "#d62728"), (axes[1], real, real_label, "#1f77b4")):
        if x is None:
            ax.text(0.5, 0.5, "no real series for this target", ha="center", va="center", transform=ax.transAxes)
        else:
            for ch in _series_2d(x):
                ax.plot(np.arange(ch.size), ch, lw=0.9, color=c)
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("time step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("value (z-score)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def violins(data: dict, path, ylabel: str, title: str, reference_line: float | None = None) -> Path:
    """``data``: {(panel, group, hue): values}. One panel per distinct ``panel`` (e.g. noise model),
    groups on the x axis (e.g. depth), one violin per hue within a group (e.g. optimizer), each with its
    points (jittered) on top; a group with a single value shows the point alone."""
    plt = _plt()
    panels = list(dict.fromkeys(k[0] for k in data))
    groups = list(dict.fromkeys(k[1] for k in data))
    hues = list(dict.fromkeys(k[2] for k in data))
    width = 0.8 / max(1, len(hues))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 1.1 * len(groups) * max(1, len(hues)) * 0.8 + 1.5)
                                                      * len(panels), 3.6), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # fixed jitter: the same report twice gives the same picture
    for ax, panel in zip(axes[0], panels):
        for gi, group in enumerate(groups):
            for hi, hue in enumerate(hues):
                vals = np.asarray([v for v in data.get((panel, group, hue), []) if v is not None and np.isfinite(v)])
                if vals.size == 0:
                    continue
                pos = gi + (hi - (len(hues) - 1) / 2) * width
                c = color_for(hue, hues)
                if vals.size > 1 and np.ptp(vals) > 0:
                    parts = ax.violinplot([vals], positions=[pos], widths=width * 0.95, showmedians=True,
                                          showextrema=False)
                    for b in parts["bodies"]:
                        b.set_facecolor(c)
                        b.set_alpha(0.35)
                    parts["cmedians"].set_color(c)
                ax.scatter(pos + rng.uniform(-width * 0.15, width * 0.15, vals.size), vals, s=9, color=c, zorder=3,
                           label=hue if gi == 0 or not ax.get_legend_handles_labels()[1].count(hue) else None)
        if reference_line is not None:
            ax.axhline(reference_line, color="k", ls="--", lw=0.8)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=20, fontsize=8)
        ax.set_xlabel("depth (target tensor)")
        ax.set_title(str(panel), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(ylabel)
    handles, names = axes[0][0].get_legend_handles_labels()
    seen = {}
    for h, n in zip(handles, names):
        seen.setdefault(n, h)
    if seen:
        axes[0][-1].legend(list(seen.values()), list(seen), fontsize=7, title="optimizer", title_fontsize=7,
                           loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def distance_vs_activation(m: dict, path, title: str) -> Path:
    """Mahalanobis distance against activation (``xdream_ts.analysis.distance_activation``): the real
    series as a grey cloud, the run's stimuli coloured by generation, the plausibility threshold (a
    vertical line), the best real activation (a horizontal line), the feasible frontier (the best
    activation reached within each distance, a step line up to the threshold) and the reported series (a star)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(m["real_distance"], m["real_activation"], s=10, color="#7f7f7f", alpha=0.5, label="real series", zorder=2)
    pts = ax.scatter(m["distance"], m["activation"], s=6, c=m["generation"], cmap="viridis", alpha=0.6, zorder=3,
                     label="stimuli")
    fig.colorbar(pts, ax=ax, label="generation")
    d, a = np.asarray(m["distance"]), np.asarray(m["activation"])
    inside = np.isfinite(d) & np.isfinite(a) & (d <= m["threshold"])
    if inside.any():
        order = np.argsort(d[inside])
        ax.step(d[inside][order], np.maximum.accumulate(a[inside][order]), where="post", color="#d62728", lw=1.2,
                label="feasible frontier", zorder=4)
    ax.axvline(m["threshold"], color="k", ls="--", lw=0.8, label=f"threshold ({m['layer']})")
    ax.axhline(float(np.nanmax(m["real_activation"])), color="#1f77b4", ls=":", lw=0.9, label="best real series")
    if m.get("reported") is not None:
        r = m["reported"]
        ax.scatter([d[r]], [a[r]], marker="*", s=160, color="#d62728", edgecolor="k", zorder=5, label="reported")
    if np.nanmax(d) > 5 * m["threshold"]:  # early random stimuli far out would squash the real cloud
        from matplotlib.ticker import NullFormatter, ScalarFormatter
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"Mahalanobis distance in {m['layer']}")
    ax.set_ylabel("activation")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save(fig, path)
