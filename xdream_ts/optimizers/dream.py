"""Sequence Dreaming (Schlegel, Keim & Sutter 2024): gradient ascent on the input, as an optimizer plugin.

DeepDream / activation maximisation for time series: start from a series (random, a real one, a class
centre) and follow the gradient of the target's activation, with regularisers that keep the result
looking like a time series rather than adversarial noise. Two uses from the paper:

- **border / maximum activation**: maximise the unit (the scorer's objective);
- **class centre**: reach the mean activation vector of a class (e.g. of ``gap``, the penultimate
  layer): give the scorer every unit of that layer as targets and ``ClassCentre(centre)`` as its
  objective (minus the Euclidean distance to the centre), and maximise that.

The loss of each population member (independent restarts, ``population_size``), minimised with Adam::

    -objective(scorer(decoder(code)))
      + l2     * mean(code^2)             the paper's L2 norm (the series itself in raw mode;
                                          a Gaussian prior on the latent code with a learned decoder)
      + tv     * mean|s[t+1] - s[t]|      total variation of the decoded series s
      + smooth * mean(s[t+1] - 2 s[t] + s[t-1])^2    smoothness: penalises curvature (high frequencies)

and, after every step, in raw mode (identity decoder: the code is the series), transforms applied to
the series: exponential smoothing ``y[t] = (1 - ema) x[t] + ema y[t-1]`` (run forwards then
backwards, so smoothing does not shift features in time and away from the target position),
an optional temporal Gaussian low-pass (``lowpass`` = its sigma in samples), and an optional range
box (``value_range=(lo, hi)``, also allowed on latent codes).

Ask/tell: ``ask()`` returns the current codes (one per restart), so the loop records and scores every
step in the run store like any optimizer; ``tell()`` takes one Adam step per restart, computing the
gradient itself through ``scorer.torch_forward`` and the decoder's torch module. The told scores only
track the best code per restart. ``n_forward`` and ``n_backward`` count the model passes this
optimizer made itself (one of each per code per step); ``xdream-ts compare`` converts them to model
evaluations at a measured backward/forward cost.

The loop calls ``bind(decoder, scorer)`` before the first ask, which refuses (one line) a scorer or a
decoder without gradients. State (codes, Adam moments, counters, RNG) is JSON-able for exact resume.

``autotune`` picks the regulariser weights by a small search scored by activation and plausibility
(Mahalanobis distance in a reference activation space, ``xdream_ts.analysis``) together: the paper
leaves that choice open.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import UserError, require_torch
from ._base import BaseOptimizer

_REFUSE = ("dream needs gradients: the scorer {what} has none (an ONNX model without onnx2torch, a remote "
           "endpoint, a real neuron, or a noise wrapper); use a gradient-free optimizer such as default")


class ClassCentre:
    """Objective 'reach the class centre': minus the Euclidean distance of the (n, k) activations to
    ``centre`` (k,). Works on numpy arrays and torch tensors alike, so the loop records the distance and
    Sequence Dreaming can differentiate it."""

    def __init__(self, centre):
        self.centre = np.asarray(centre, dtype=np.float64).reshape(-1)
        self.__name__ = "class_centre"

    def __call__(self, scores):
        if hasattr(scores, "detach"):  # torch tensor
            import torch
            c = torch.as_tensor(self.centre, dtype=scores.dtype, device=scores.device)
            return -torch.sqrt(((scores - c) ** 2).sum(dim=-1) + 1e-12)  # eps: finite gradient at the centre
        s = np.asarray(scores, dtype=np.float64)
        return -np.sqrt(((s - self.centre) ** 2).sum(axis=-1))


# ------------------------------------------------------------------------------------ transforms
def exponential_smoothing(x: np.ndarray, weight: float, zero_phase: bool = True) -> np.ndarray:
    """y[t] = (1 - weight) x[t] + weight y[t-1] along the last axis (weight 0: no change).

    ``zero_phase`` runs it forwards then backwards: a one-sided filter delays every feature by about
    weight / (1 - weight) samples, which would drift the stimulus away from the target's time position
    a little more at every step.
    """
    if weight <= 0:
        return x
    from scipy.signal import lfilter
    b, a = [1.0 - weight], [1.0, -weight]
    # start from the first value, so the series does not ramp up from zero
    y = lfilter(b, a, x, axis=-1, zi=weight * x[..., :1])[0]
    if zero_phase:
        y = lfilter(b, a, y[..., ::-1], axis=-1, zi=weight * y[..., -1:])[0][..., ::-1]
    return y


def gaussian_lowpass(x: np.ndarray, sigma: float) -> np.ndarray:
    """Temporal Gaussian smoothing with std ``sigma`` samples (edges reflected)."""
    if sigma <= 0:
        return x
    from scipy.ndimage import gaussian_filter1d
    return gaussian_filter1d(x, sigma, axis=-1, mode="reflect")


def total_variation(series: np.ndarray) -> np.ndarray:
    """Mean absolute first difference of each series (n, [c,] L) -> (n,)."""
    d = np.abs(np.diff(np.asarray(series, dtype=np.float64), axis=-1))
    return d.reshape(len(d), -1).mean(axis=1)


def high_frequency_energy(series: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Share of each series' spectral energy (mean removed) above ``fraction`` of the Nyquist frequency."""
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    p = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    cut = int(round(fraction * (p.shape[-1] - 1)))
    hi = p[..., cut:].reshape(len(p), -1).sum(axis=1)
    return hi / np.maximum(p.reshape(len(p), -1).sum(axis=1), 1e-300)


# -------------------------------------------------------------------------------------- optimizer
class Dream(BaseOptimizer):
    """Sequence Dreaming: Adam on the codes of ``population_size`` independent restarts.

    learning_rate   Adam step size, in code units (z-normalised series: ~0.01-0.1)
    l2, tv, smooth  penalty weights (see the module docstring); 0 turns one off
    ema             exponential smoothing weight in [0, 1), raw mode only
    lowpass         Gaussian low-pass sigma in samples, raw mode only (0: off)
    value_range     (lo, hi) box for the codes after each step (None: off)
    init            start codes (m, dim): restarts cycle through the rows (a real series, a class centre
                    in raw mode; encoded series in latent mode); None: random N(0, init_scale^2)
    init_noise      std of noise added to ``init`` rows, so restarts from one series differ
    steps_per_generation  Adam steps per tell (the loop records one generation per tell)
    redraw_dead     redraw a restart whose gradient is exactly zero (a ReLU unit silent for that input
                    gives no gradient, so that restart could never move) from N(0, init_scale^2), with
                    fresh Adam moments. Off by default: the committed results were measured without it
    """

    name = "dream"
    needs_gradients = True
    _state_keys = ("x", "m", "v", "t", "n_forward", "n_backward", "n_redrawn", "best_x", "best_score")

    def __init__(self, dim: int, seed: int | None = None, population_size: int = 4, learning_rate: float = 0.05,
                 l2: float = 0.0, tv: float = 0.0, smooth: float = 0.0, ema: float = 0.0, lowpass: float = 0.0,
                 value_range: tuple | None = None, init: np.ndarray | None = None, init_scale: float = 1.0,
                 init_noise: float = 0.0, steps_per_generation: int = 1, beta1: float = 0.9, beta2: float = 0.999,
                 redraw_dead: bool = False, noisy: bool = False):
        super().__init__(dim, seed)
        if int(population_size) < 1 or learning_rate <= 0 or int(steps_per_generation) < 1:
            raise UserError("dream: population_size and steps_per_generation must be >= 1, learning_rate > 0")
        if min(l2, tv, smooth, lowpass, init_scale, init_noise) < 0 or not 0 <= ema < 1:
            raise UserError("dream: l2, tv, smooth, lowpass, init_scale and init_noise must be >= 0, ema in [0, 1)")
        if value_range is not None:
            value_range = (float(value_range[0]), float(value_range[1]))
            if not value_range[0] < value_range[1]:
                raise UserError(f"dream: value_range {value_range} must be (low, high) with low < high")
        self.population_size = int(population_size)
        self.learning_rate, self.l2, self.tv, self.smooth = float(learning_rate), float(l2), float(tv), float(smooth)
        self.ema, self.lowpass, self.value_range = float(ema), float(lowpass), value_range
        self.steps_per_generation = int(steps_per_generation)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.noisy = bool(noisy)
        self.init_scale, self.redraw_dead = float(init_scale), bool(redraw_dead)
        self.n_redrawn = 0
        self.init_kind = "random" if init is None else "given"
        P = self.population_size
        if init is None:
            self.x = self.rng.normal(0.0, init_scale, size=(P, self.dim))
        else:
            rows = np.asarray(init, dtype=np.float64).reshape(-1, self.dim)
            self.x = rows[np.arange(P) % len(rows)].copy()
            if init_noise > 0:
                self.x += self.rng.normal(0.0, init_noise, size=self.x.shape)
        if self.value_range is not None:
            self.x = np.clip(self.x, *self.value_range)
        self.m = np.zeros_like(self.x)
        self.v = np.zeros_like(self.x)
        self.t = 0
        self.n_forward = 0
        self.n_backward = 0
        self.best_x = self.x.copy()
        self.best_score = np.full(P, -np.inf)
        self._decoder_module = None
        self._scorer = None
        self.space = None
        self.last_objective = None

    # ---- binding -----------------------------------------------------------------------------------
    def bind(self, decoder, scorer) -> "Dream":
        """Attach the differentiable decoder and scorer; refuse, in one line, when either has no gradients."""
        require_torch("Sequence Dreaming (--optimizer dream)")  # torch is an extra; bind comes before any gradient
        if not callable(getattr(scorer, "torch_forward", None)):
            what = getattr(scorer, "name", None) or type(scorer).__name__
            raise UserError(_REFUSE.format(what=repr(what)))
        # the decoders own their torch bridge; dream asks for it and never looks at decoder classes
        from ..decoders.torch_bridge import torch_module_of
        try:
            module, space = torch_module_of(decoder)
        except UserError as exc:
            raise UserError(f"dream needs gradients: {exc}") from None
        if getattr(decoder, "latent_dim", self.dim) != self.dim:
            raise UserError(f"dream: the decoder takes codes of dimension {decoder.latent_dim}, this optimizer was "
                            f"built for {self.dim}; build it with the decoder's latent_dim")
        if space != "raw" and (self.ema > 0 or self.lowpass > 0):
            raise UserError(f"dream: ema and lowpass smooth the series itself, which only the identity decoder "
                            f"exposes ({space} decoder here); set them to 0 or use --decoder identity")
        self._decoder_module, self._scorer, self.space = module.eval(), scorer, space
        self._decoder = decoder
        return self

    # ---- ask/tell ----------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        return self.x.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = self._check_tell(codes, scores, self.x)
        ok = np.isfinite(scores) & (scores > self.best_score)
        self.best_x[ok], self.best_score[ok] = self.x[ok], scores[ok]
        for _ in range(self.steps_per_generation):
            self.step()

    def _require_bound(self):
        if self._scorer is None:
            raise UserError("dream: call bind(decoder, scorer) first (xdream_ts.run does it for you)")

    def _penalties(self, code, series):
        import torch
        n = code.shape[0]
        pen = torch.zeros(n, dtype=series.dtype, device=series.device)
        if self.l2:
            pen = pen + self.l2 * (code ** 2).mean(dim=1)
        s = series.reshape(n, -1, series.shape[-1])
        if self.tv:
            pen = pen + self.tv * (s[..., 1:] - s[..., :-1]).abs().mean(dim=(1, 2))
        if self.smooth:
            pen = pen + self.smooth * ((s[..., 2:] - 2 * s[..., 1:-1] + s[..., :-2]) ** 2).mean(dim=(1, 2))
        return pen

    def loss_and_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(objective (n,), penalty (n,), gradient of the loss (n, dim)) at codes ``x``: one forward and
        one backward pass per code."""
        import torch

        self._require_bound()
        dev = getattr(self._scorer, "device", None) or "cpu"
        z = torch.tensor(x, dtype=torch.float32, device=dev, requires_grad=True)
        series = self._decoder_module.to(dev)(z)
        obj = self._scorer.torch_objective(self._scorer.torch_forward(series))
        pen = self._penalties(z, series)
        # members are independent: the gradient of the sum is each member's own gradient
        (grad,) = torch.autograd.grad((pen - obj).sum(), z)
        self.n_forward += len(x)
        self.n_backward += len(x)
        return (obj.detach().double().cpu().numpy(), pen.detach().double().cpu().numpy(),
                grad.double().cpu().numpy())

    def step(self) -> np.ndarray:
        """One Adam step on every restart; returns the objective at the codes before the step."""
        obj, _, g = self.loss_and_grad(self.x)
        g = np.where(np.isfinite(g), g, 0.0)
        if self.redraw_dead:
            dead = ~np.any(g != 0, axis=1)
            if dead.any():
                self.x = self.x.copy()
                self.x[dead] = self._transform(self.rng.normal(0.0, self.init_scale, size=(int(dead.sum()), self.dim)))
                self.m[dead], self.v[dead] = 0.0, 0.0
                self.n_redrawn += int(dead.sum())
                g = np.where(dead[:, None], 0.0, g)
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * g
        self.v = self.beta2 * self.v + (1 - self.beta2) * g * g
        mhat = self.m / (1 - self.beta1 ** self.t)
        vhat = self.v / (1 - self.beta2 ** self.t)
        x = self.x - self.learning_rate * mhat / (np.sqrt(vhat) + 1e-8)
        self.x = self._transform(x)
        self.last_objective = obj
        return obj

    def _transform(self, x: np.ndarray) -> np.ndarray:
        if self.space == "raw" and (self.ema > 0 or self.lowpass > 0):
            ch = getattr(self._decoder, "channels", None) or 1
            s = x.reshape(len(x), ch, -1)
            s = exponential_smoothing(s, self.ema)
            s = gaussian_lowpass(s, self.lowpass)
            x = s.reshape(len(x), -1)
        if self.value_range is not None:
            x = np.clip(x, *self.value_range)
        return np.ascontiguousarray(x, dtype=np.float64)

    def optimize(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Run ``steps`` Adam steps outside the loop (nothing recorded); returns the final codes and
        their objective (one more forward pass per code)."""
        self._require_bound()
        for _ in range(int(steps)):
            obj = self.step()
            better = obj > self.best_score
            self.best_score = np.where(better, obj, self.best_score)
        final = self.objective_at(self.x)
        return self.x.copy(), final

    def objective_at(self, x: np.ndarray) -> np.ndarray:
        """The scorer's objective at codes ``x`` (counted as forward passes)."""
        self._require_bound()
        series = self.decode(x)
        self.n_forward += len(x)
        return np.asarray(self._scorer.objective(np.asarray(self._scorer(series))), dtype=np.float64)

    def decode(self, x: np.ndarray) -> np.ndarray:
        self._require_bound()
        return np.asarray(self._decoder(np.asarray(x)))

    # ---- state --------------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {**super().describe(), "population_size": self.population_size, "learning_rate": self.learning_rate,
                "l2": self.l2, "tv": self.tv, "smooth": self.smooth, "ema": self.ema, "lowpass": self.lowpass,
                "value_range": list(self.value_range) if self.value_range else None, "init": self.init_kind,
                "steps_per_generation": self.steps_per_generation, "space": self.space,
                "redraw_dead": self.redraw_dead, "n_forward": int(self.n_forward), "n_backward": int(self.n_backward)}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["t"], state["n_forward"], state["n_backward"] = int(self.t), int(self.n_forward), int(self.n_backward)
        state["n_redrawn"] = int(self.n_redrawn)
        return state

    @staticmethod
    def autotune(*args, **kwargs) -> dict:
        """See :func:`autotune`."""
        return autotune(*args, **kwargs)


# ------------------------------------------------------------------------------------ autotune
DEFAULT_GRID = {"l2": (0.0, 0.01, 0.1), "tv": (0.0, 0.1, 0.5), "smooth": (0.0, 1.0), "ema": (0.0, 0.5)}


def autotune(decoder, scorer, space=None, grid: dict | None = None, trials: int = 8, steps: int = 100,
             population_size: int = 2, learning_rate: float = 0.05, plausibility_weight: float = 1.0,
             seed: int = 0, init: np.ndarray | None = None, **fixed) -> dict:
    """Pick Sequence Dreaming's regulariser weights by activation and plausibility together.

    Tries ``trials`` weight combinations drawn (without replacement, seeded) from ``grid`` (always
    including all-zero, the unregularised baseline), each for ``steps`` steps from the same start.
    Each trial is scored by its final codes::

        score = activation / max activation over trials + plausibility_weight * plausibility

    where plausibility = 1 - (percentile of the result's Mahalanobis distance among the real series of
    ``space``, an ``xdream_ts.analysis.ActivationSpace``) / 100, i.e. the share of real series that lie
    farther from the data than the result (1: as typical as the most typical real series; 0: farther than
    every one). Without ``space`` only activation counts. Returns {"best": weights, "trials": rows}.
    """
    grid = dict(DEFAULT_GRID if grid is None else grid)
    keys = sorted(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    rng = np.random.default_rng(seed)
    zero = tuple(0.0 for _ in keys)
    rest = [c for c in combos if c != zero]
    pick = [zero] + [rest[i] for i in rng.permutation(len(rest))[: max(0, int(trials) - 1)]]
    rows = []
    for combo in pick:
        params = dict(zip(keys, combo))
        opt = Dream(decoder.latent_dim, seed=seed, population_size=population_size, learning_rate=learning_rate,
                    init=init, **params, **fixed).bind(decoder, scorer)
        x, act = opt.optimize(steps)
        row = {**params, "activation": float(np.mean(act)), "n_forward": opt.n_forward, "n_backward": opt.n_backward}
        if space is not None:
            d = space.distance(opt.decode(x))
            row["mahalanobis"] = float(np.mean(d))
            row["percentile"] = float(np.mean(space.percentile(d)))
        row["series_tv"] = float(np.mean(total_variation(opt.decode(x))))
        rows.append(row)
    acts = np.array([r["activation"] for r in rows])
    top = acts.max()
    # normalise by the best activation; when every trial is <= 0 (e.g. minus a distance) use the range
    norm = acts / top if top > 0 else (acts - acts.min()) / max(acts.max() - acts.min(), 1e-12)
    for r, a in zip(rows, norm):
        plaus = 1.0 - r["percentile"] / 100.0 if "percentile" in r else 0.0
        r["score"] = float(a + (plausibility_weight * plaus if "percentile" in r else 0.0))
    best = max(rows, key=lambda r: r["score"])
    return {"best": {k: best[k] for k in keys}, "trials": rows, "plausibility_weight": plausibility_weight,
            "steps": int(steps), "population_size": int(population_size)}


def matched_presentations(evaluations: int, backward_cost: float, steps_per_generation: int = 1) -> int:
    """Presentations (loop budget) that give Sequence Dreaming ``evaluations`` model evaluations, when a
    step costs one forward plus ``backward_cost`` forward-equivalents per code and the loop's recording
    pass reuses the step's forward (it scores the same codes). With several steps per generation only
    one in ``steps_per_generation`` steps is recorded."""
    per_presentation = steps_per_generation * (1.0 + float(backward_cost))
    return max(1, int(math.floor(evaluations / per_presentation)))
