"""The gallery of an inverse set: a PNG of a diverse subset of its series, the activation histograms
with their ranges, and a 2-D map of the features."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .features import select_diverse


def plot_gallery(inv, path, k: int = 12, seed: int = 0) -> Path:
    """A PNG: k samples chosen farthest-first in feature space (so the page shows the set's range), the
    activation histogram of every constraint with its range, and a 2-D PCA map of the features."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(inv)
    idx = select_diverse(inv.features, min(k, n), seed=seed)
    cols = 4
    rows = max(1, math.ceil(len(idx) / cols))
    fig = plt.figure(figsize=(3.2 * cols, 1.9 * rows + 2.8))
    gs = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.5])
    for j, i in enumerate(idx):
        ax = fig.add_subplot(gs[j // cols, j % cols])
        s = inv.series[i]
        for ch in (s if s.ndim == 2 else s[None]):
            ax.plot(ch, lw=0.8)
        ax.set_title(" ".join(f"{a:.3g}" for a in inv.activations[i]), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    cons = [c if isinstance(c, dict) else {"name": c.name, "z1": c.z1, "z2": c.z2} for c in inv.constraints]
    ax = fig.add_subplot(gs[rows, : cols // 2])
    for j, c in enumerate(cons):
        color = f"C{j}"
        ax.hist(inv.activations[:, j], bins=30, alpha=0.6, color=color, label=c.get("name") or f"constraint {j}")
        ax.axvline(c["z1"], color=color, ls="--", lw=1)
        ax.axvline(c["z2"], color=color, ls="--", lw=1)
    ax.set_xlabel("activation (mean over repeats); dashed: range")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(gs[rows, cols // 2:])
    f = inv.features - inv.features.mean(axis=0)
    if n >= 3:
        _, _, vt = np.linalg.svd(f, full_matrices=False)
        xy = f @ vt[:2].T
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=inv.activations[:, 0], s=8, cmap="viridis")
        ax.scatter(xy[idx, 0], xy[idx, 1], facecolors="none", edgecolors="r", s=40, lw=0.8)
        fig.colorbar(sc, ax=ax, label=cons[0].get("name") or "activation")
    ax.set_title(f"features ({inv.config.get('features', '?')}), PCA; red: shown above", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    div = inv.diversity if n > 1 else float("nan")
    fig.suptitle(f"inverse set: {n} series ({inv.method}), {inv.presentations} presentations, "
                 f"diversity {div:.3g}; titles: activations", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
