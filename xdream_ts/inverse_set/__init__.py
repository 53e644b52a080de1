"""Inverse sets: many diverse series whose activation lies in a range (Hada & Carreira-Perpinan 2020).

The best stimulus says what drives a unit hardest; the *inverse set* of the range [z1, z2] says what
else the unit responds to at that level. We sample it with n series as diverse as possible, so that a
person looking at them sees what they share (what the unit encodes) and what they do not::

    inv = inverse_set(decoder, scorer, (0.4 * amax, 0.6 * amax), n=500, out="unit17.zarr")
    inv.series, inv.activations, inv.diversity, inv.p_in_range

    constraints.py  the ranges, their evaluation, statistics under noise
    features.py     where diversity is measured; diversity, novelty, a farthest-first subset
    evaluation.py   codes -> series -> feasibility; the archive of accepted samples
    gradient.py     the paper's gradient sampler;  free.py: the gradient-free one (noisy targets)
    sample.py       inverse_set(), the entry point
    store.py        InverseSet and its zarr store;  gallery.py: gallery.png
    baseline.py     the in-range series a plain optimizer run visited
    cli.py          ``xdream-ts inverse-set``

torch, scipy, matplotlib and zarr are imported inside functions: ``import xdream_ts`` stays light.
"""
from .baseline import baseline_from_run
from .cli import add_cli, cmd_inverse_set, format_summary
from .constraints import Constraint, ConstraintTargets, parse_constraints, range_stats
from .features import Features, diversity, select_diverse
from .free import FREE_TUNING
from .gallery import plot_gallery
from .sample import METHODS, inverse_set
from .store import FORMAT, InverseSet, load_inverse_set

__all__ = [
    "inverse_set", "InverseSet", "load_inverse_set", "baseline_from_run", "Constraint", "parse_constraints",
    "ConstraintTargets", "range_stats", "Features", "diversity", "select_diverse", "plot_gallery", "FREE_TUNING",
    "METHODS", "FORMAT", "add_cli", "cmd_inverse_set", "format_summary",
]
