"""Is the default's pick the bottleneck under noise? (issue 19, item 2)

For units of models the default never saw (experiments/bench_default_unseen.py), under gain noise 0.5 and
Poisson noise, one run each (seed 0, 3,000 presentations, ``auto`` without data): the clean activation of
the series the default reports, against the best clean activation of any series it presented (an oracle
pick). If the oracle were far ahead, a better selection (racing the snapshots at the end, more
re-evaluations) would pay; if not, the search itself has to find better regions under noise.

    .venv/bin/python experiments/noise_gap.py     # ~5 min on 2 shared cores; prints one line per run
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    import bench_default_unseen as DU
    import xdream_ts
    from xdream_ts.targets import TargetSpec

    for name in ("gunpoint_cnn", "fcn_forda", "jv_cnn"):
        for unit in DU.pick_units(name, 3)[:2]:
            for noise in ("gain:0.5", "poisson:1"):
                spec = TargetSpec(model=str(DU.model_path(name)), units=[unit], noise=noise, noise_seed=0)
                r = xdream_ts.run("auto", spec, "default", budget=3000, seed=0, progress=False, store=None)
                g, p = r.reported_index
                clean = np.asarray(r.clean_objective)
                print(f"| {name} | `{unit}` | {noise} | {clean[g, p]:.3g} | {np.nanmax(clean):.3g} | "
                      f"{np.nanmax(clean) / clean[g, p]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
