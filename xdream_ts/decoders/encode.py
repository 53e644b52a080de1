"""Start a search from real series: find the latent codes that decode to given series.

XDream starts from generated or real images alike; to start from real series (or to ask how well a
decoder can represent the data at all), we need the inverse of the decoder:

- ``method='ivt'``: the decoder's own encoder (a VAE's posterior mean, PCA's projection); fast.
- ``method='opt'``: optimise the code to reconstruct the series; works for ANY decoder:
  least squares for linear decoders (identity, DCT basis, PCA), gradient descent (Adam, torch) when
  the decoder exposes ``torch_module()``, CMA-ES (pycma, own seeded RNG) for everything else.
- ``method='auto'``: 'ivt' when the decoder has an encoder, else 'opt'.

``initial_codes`` picks the series a target scores best / middle / worst and encodes them (XDream
Fig. 3c: starting from the best real images speeds up the search, from the worst ones does not hurt it).
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..series import resample, znormalize

METHODS = ("auto", "ivt", "opt")


def _out_shape(decoder) -> tuple[int, int | None]:
    """(length, channels) of the decoder's output, probing it with one zero code when not declared."""
    length = getattr(decoder, "length", None)
    if length is not None and hasattr(decoder, "channels"):
        return int(length), decoder.channels
    y = np.asarray(decoder(np.zeros((1, decoder.latent_dim))))
    return int(y.shape[-1]), (int(y.shape[1]) if y.ndim == 3 else None)


def _targets(decoder, series) -> np.ndarray:
    """Series as the decoder would output them: (n, [C,] decoder length), z-normalised if it normalises."""
    length, channels = _out_shape(decoder)
    x = np.asarray(series, dtype=np.float64)
    want = 2 if channels is None else 3
    if x.ndim == want - 1:
        x = x[None]
    if x.ndim != want or (channels is not None and x.shape[1] != channels):
        shape = "(n, length)" if channels is None else f"(n, {channels}, length)"
        raise UserError(f"encode: series have shape {np.shape(series)}; this decoder outputs {shape}")
    if not np.isfinite(x).all():
        raise UserError("encode: series hold NaN/inf values; remove or interpolate them first")
    x = resample(x, length)
    return znormalize(x) if getattr(decoder, "normalize", True) else x


def has_encoder(decoder) -> bool:
    return callable(getattr(decoder, "encode", None)) and getattr(decoder, "has_encoder", True)


def encode(decoder, series, method: str = "auto", steps: int | None = None, seed: int = 0,
           init=None) -> np.ndarray:
    """Codes (n, latent_dim) float64 whose decoding reconstructs ``series`` (n, [C,] any length).

    method: 'auto' | 'ivt' | 'opt' (see the module docstring).
    steps: 'opt' iterations: Adam steps (default 300) or CMA-ES generations (default 150).
    seed: seeds the CMA-ES sampling (numpy's global RNG is left as it was).
    init: starting codes for gradient descent / CMA-ES: None = the decoder's encoder output when it
        has one, else zeros (the prior mean); or an array (n, latent_dim).
    """
    if method not in METHODS:
        raise UserError(f"encode: method={method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        method = "ivt" if has_encoder(decoder) else "opt"
    if method == "ivt":
        if not has_encoder(decoder):
            raise UserError(f"decoder {getattr(decoder, 'name', type(decoder).__name__)} has no encoder; "
                            "use method='opt'")
        return np.asarray(decoder.encode(series), dtype=np.float64)

    target = _targets(decoder, series)
    d = int(decoder.latent_dim)
    from .identity import IdentityDecoder

    if isinstance(decoder, IdentityDecoder):
        return target.reshape(len(target), -1).astype(np.float64)
    linear = _linear_map(decoder)
    if linear is not None:
        return _least_squares(decoder, linear, target)
    if init is None:
        init = decoder.encode(series) if has_encoder(decoder) else np.zeros((len(target), d))
    init = np.asarray(init, dtype=np.float64)
    if init.shape != (len(target), d):
        raise UserError(f"encode: init has shape {init.shape}; expected ({len(target)}, {d})")
    if callable(getattr(decoder, "torch_module", None)):
        try:
            module = decoder.torch_module(length=target.shape[-1])
        except UserError:
            module = None
        if module is not None:
            return _gradient(module, target, init, steps or 300)
    return _cma(decoder, target, init, steps or 150, seed)


def _linear_map(decoder):
    """(W, b) with pre-normalisation output = codes @ W + b, for the linear decoders we know."""
    from .basis import BasisDecoder

    if callable(getattr(decoder, "linear_map", None)):
        W, b = decoder.linear_map()
        fit_length = getattr(decoder, "fit_length", getattr(decoder, "length", None))
        return np.asarray(W, np.float64), np.asarray(b, np.float64), fit_length
    if isinstance(decoder, BasisDecoder):
        c = decoder.channels or 1
        B = decoder._basis  # (k, L)
        W = np.kron(np.eye(c), B)  # block diagonal: codes laid out (c, k), series (c, L)
        return W, np.zeros(W.shape[1]), decoder.length
    return None


def _least_squares(decoder, linear, target) -> np.ndarray:
    """Codes minimising ||codes @ W + b - target|| (at the decoder's internal length)."""
    W, b, fit_length = linear
    if target.shape[-1] != fit_length:
        t = resample(target, fit_length)
        # a decoder in data units (normalize False) reconstructs the series as they are, not z-normalised
        t = znormalize(t) if getattr(decoder, "normalize", True) else t
    else:
        t = target
    t = t.reshape(len(t), -1)
    sol, *_ = np.linalg.lstsq(W.T, (t - b).T, rcond=None)
    return sol.T


def _gradient(module, target, init, steps: int, lr: float = 0.05) -> np.ndarray:
    """Adam on the codes of all series at once (each series' loss only depends on its own code).

    Runs on one CPU thread: the decoder is small, and torch's thread pool spinning against other
    processes on a shared machine is 10-50x slower than a single thread.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _adam(module, target, init, steps, lr)
    finally:
        torch.set_num_threads(threads)


def _adam(module, target, init, steps: int, lr: float) -> np.ndarray:
    import torch

    x = torch.from_numpy(target.astype(np.float32))
    z = torch.nn.Parameter(torch.from_numpy(init.astype(np.float32)).clone())
    opt = torch.optim.Adam([z], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    best = init.astype(np.float32).copy()
    with torch.no_grad():
        best_err = ((module(z) - x) ** 2).flatten(1).mean(1).numpy()
    for _ in range(steps):
        err = ((module(z) - x) ** 2).flatten(1).mean(1)
        opt.zero_grad(set_to_none=True)
        err.sum().backward()
        e = err.detach().numpy()
        better = e < best_err
        best[better] = z.detach().numpy()[better]
        best_err = np.minimum(best_err, e)
        opt.step()
        sched.step()
    with torch.no_grad():
        e = ((module(z) - x) ** 2).flatten(1).mean(1).numpy()
    final = z.detach().numpy()
    best[e < best_err] = final[e < best_err]
    return best.astype(np.float64)


def _cma(decoder, target, init, generations: int, seed: int, sigma0: float = 0.5) -> np.ndarray:
    """CMA-ES per series, run in lock-step so each generation is ONE batched decoder call."""
    import cma

    n, d = init.shape
    state = np.random.get_state()
    try:
        np.random.seed(seed % (2 ** 32))  # pycma may touch numpy's global RNG; restored below
        rngs = [np.random.default_rng([seed, i]) for i in range(n)]
        ess = [cma.CMAEvolutionStrategy(init[i], sigma0, {
            "seed": np.nan, "randn": (lambda r: (lambda *shape: r.standard_normal(shape)))(rngs[i]),
            "verbose": -9, "verb_log": 0, "verb_disp": 0, "maxiter": generations, "tolfun": 1e-12,
            "tolx": 1e-12}) for i in range(n)]
        flat_t = target.reshape(n, -1)
        best = init.copy()
        best_err = ((np.asarray(decoder(init), np.float64).reshape(n, -1) - flat_t) ** 2).mean(1)
        for _ in range(generations):
            active = [i for i, es in enumerate(ess) if not es.stop()]
            if not active:
                break
            asked = [np.asarray(ess[i].ask()) for i in active]
            sizes = [len(a) for a in asked]
            out = np.asarray(decoder(np.concatenate(asked)), np.float64).reshape(sum(sizes), -1)
            pos = 0
            for i, a, k in zip(active, asked, sizes):
                err = ((out[pos:pos + k] - flat_t[i]) ** 2).mean(1)
                pos += k
                ess[i].tell(list(a), err.tolist())
                j = int(np.argmin(err))
                if err[j] < best_err[i]:
                    best_err[i], best[i] = err[j], a[j]
        return best
    finally:
        np.random.set_state(state)


def initial_codes(decoder, series, scores, n: int, which: str = "best", method: str = "auto",
                  seed: int = 0, return_indices: bool = False):
    """Encode the ``n`` series a target scores best / middle / worst (XDream Fig. 3c).

    scores: (N,) one score per series (NaN = missing: never picked). 'middle' takes the n series
    around the median rank. Returns codes (n, d) (and the picked indices, best first, when asked).
    """
    s = np.asarray(scores, dtype=np.float64)
    x = np.asarray(series)
    if s.ndim != 1 or len(s) != len(x):
        raise UserError(f"initial_codes: scores have shape {s.shape} for {len(x)} series; pass one score per series")
    valid = np.flatnonzero(np.isfinite(s))
    if n < 1 or n > len(valid):
        raise UserError(f"initial_codes: n={n} but {len(valid)} series have a score; pick 1 <= n <= {len(valid)}")
    order = valid[np.argsort(-s[valid], kind="stable")]  # best first
    if which == "best":
        idx = order[:n]
    elif which == "worst":
        idx = order[-n:]
    elif which == "middle":
        start = max(0, min(len(order) - n, (len(order) - n) // 2))
        idx = order[start:start + n]
    else:
        raise UserError(f"initial_codes: which={which!r}; use 'best', 'middle' or 'worst'")
    codes = encode(decoder, x[idx], method=method, seed=seed)
    return (codes, idx) if return_indices else codes
