"""The gradient sampler of an inverse set (Hada & Carreira-Perpinan 2020): an augmented Lagrangian for
K diverse seeds, then single feasible gradient steps; needs a differentiable decoder and scorer."""
from __future__ import annotations

import math

import numpy as np

from ..errors import UserError
from .evaluation import Evaluator
from .free import sphere_step


def torch_decoder(decoder):
    """(codes tensor -> series tensor, None) or (None, why it is not differentiable): the decoder's own
    torch bridge (``xdream_ts.decoders.torch_bridge``); this sampler never looks at decoder classes."""
    from ..decoders.torch_bridge import torch_module_of
    try:
        module, _ = torch_module_of(decoder)
    except UserError as exc:
        return None, f"{exc}; or use method='free'"
    return module, None


def sample_gradient(ev: Evaluator, tdec, n: int, budget: int, rng: np.random.Generator, n_seeds: int, beta: float,
                    k_nearest: int, report, lr: float = 0.05, inner: int = 20, max_outer: int = 40,
                    mu0: float = 10.0, mu_growth: float = 2.0, mu_max: float = 1e4, margin: float = 0.05,
                    batch: int = 32) -> dict:
    """The paper's sampler: K seeds by an augmented Lagrangian, then single feasible gradient steps.

    Needs ``scorer.torch_forward(x) -> (n, k)`` and a differentiable decoder (:func:`torch_decoder`).
    (1) K seed codes: maximise their mean pairwise distance in feature space subject to
    z1 <= a(x_k) <= z2, each inequality pair handled by a slack variable s in [z1, z2] with a(x) = s
    (s eliminated in closed form), multipliers lambda and penalty mu updated after every inner
    minimisation (Adam steps on the codes), stopping as soon as all K are feasible. A seed that cannot
    get there (the unit silent for it, no progress, or still far once half the seeds are in range) is
    re-drawn near a feasible one. (2) The fast sampler: single gradient steps of the same objective
    (novelty against the accepted set + the constraint terms with the final multipliers) from randomly
    chosen accepted samples; every step that lands in range is kept, until n samples. A step is the
    normalised gradient plus an equal-sized random part (without it, two steps from one start would
    coincide), with a length adapted to keep 20-60 % of steps feasible.
    """
    import torch

    T = ev.targets
    dim = int(ev.decoder.latent_dim)
    dev = getattr(T.scorers[0], "device", None) or "cpu"
    if hasattr(tdec, "to"):
        tdec = tdec.to(dev)
    w = torch.as_tensor(T.width, dtype=torch.float32, device=dev)
    # the Lagrangian aims at a range shrunk by `margin` widths, so that the seeds are not on its edge
    lo = torch.as_tensor(T.lo / T.width + margin, dtype=torch.float32, device=dev)
    hi = torch.as_tensor(T.hi / T.width - margin, dtype=torch.float32, device=dev)
    K = max(2, min(n_seeds, n))

    def forward(z):
        x = tdec(z)
        a = T.torch_activations(x) / w  # activations in range widths
        f = ev.features.torch(x, z)
        return x, a, f

    def al_terms(a, lam, mu):
        # min over slack s in [lo, hi] of -lam (a - s) + mu/2 (a - s)^2: s* = clip(a - lam/mu); by the
        # envelope theorem s* may be held fixed (detached) when differentiating.
        s = torch.minimum(torch.maximum(a.detach() - lam / mu, lo), hi)
        c = a - s
        return (-lam * c + 0.5 * mu * c * c).sum(dim=1), c.detach(), s

    def shell(z):
        # keep codes on the prior's typical shell |z| ~ sqrt(d): a learned decoder is only trained there
        return (z.norm(dim=1) / math.sqrt(dim) - 1.0) ** 2

    # ---- 1. seeds: augmented Lagrangian over K codes ---------------------------------------------
    z = torch.tensor(rng.standard_normal((K, dim)), dtype=torch.float32, device=dev, requires_grad=True)
    with torch.no_grad():
        _, _, f0 = forward(z)
        scale = float(torch.pdist(f0).mean()) if K > 1 else 1.0
        scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    lam = torch.zeros((K, len(T.constraints)), device=dev)
    mu = mu0
    # Adam by hand: torch.optim imports torch._dynamo, seconds of start-up for a few lines of arithmetic
    m1, m2, b1, b2 = torch.zeros_like(z), torch.zeros_like(z), 0.9, 0.999
    t_adam = torch.zeros((K, 1), device=dev)  # per-row step count: restarted rows restart their bias correction
    outer_done, steps, seeds_ok, restarts = 0, 0, False, 0
    best_viol, idle = np.full(K, np.inf), np.zeros(K, dtype=int)
    e = None
    for outer in range(max_outer):
        for _ in range(inner):
            if T.presentations + K > budget:
                break
            x, a, f = forward(z)
            # sum over seeds of each one's mean distance to the others (pdist: no zero self-distances,
            # whose gradient is undefined)
            spread = 2.0 * torch.pdist(f).sum() / (K - 1) / scale
            pen, c, _ = al_terms(a, lam, mu)
            loss = -beta * spread + (pen + shell(z)).sum()
            (g,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                t_adam += 1
                m1.mul_(b1).add_((1 - b1) * g)
                m2.mul_(b2).add_((1 - b2) * g * g)
                z -= lr * (m1 / (1 - b1 ** t_adam)) / ((m2 / (1 - b2 ** t_adam)).sqrt() + 1e-8)
            steps += 1
        outer_done = outer + 1
        if T.presentations + K * (1 + ev.repeats) > budget:
            break
        with torch.no_grad():
            _, a, _ = forward(z)
            _, c, _ = al_terms(a, lam, mu)
            lam = lam - mu * c  # first-order multiplier update, then a stiffer penalty
            mu = min(mu * mu_growth, mu_max)
        e = ev(z.detach().cpu().numpy().astype(np.float64))  # what counts: the numpy scorer's verdict
        if e["feasible"].all():
            seeds_ok = True
            break
        # A seed is stuck when its violation has not shrunk for 3 outer iterations, or at once when the
        # unit is silent for it (exactly 0 below the range: a ReLU at 0 has no gradient to follow), or
        # when, from the third outer iteration on, half the seeds are in range and it is still more than
        # a range width away (it started on the far side of the unit's landscape; e.g. a logit of the
        # other class). Stuck seeds are re-drawn near a feasible seed (else near the least violating
        # one) with fresh multipliers and Adam moments; the diversity term then pushes them away.
        viol = np.nan_to_num(e["violation"], nan=np.inf)
        better = viol < 0.99 * best_viol
        best_viol = np.where(better, viol, best_viol)
        idle = np.where(better, 0, idle + 1)
        silent = np.any((e["mean"] == 0.0) & (T.lo[None, :] > 0.0), axis=1)
        far = (outer >= 2) & (np.mean(e["feasible"]) >= 0.5) & (viol > 1.0)
        stuck = ~e["feasible"] & ((idle >= 3) | silent | far)
        if stuck.any():
            rows = np.flatnonzero(stuck)
            ok = np.flatnonzero(e["feasible"])
            if not len(ok):
                ok = np.flatnonzero(~stuck)
            if len(ok):
                fresh = sphere_step(e["codes"][rng.choice(ok, size=len(rows))], 1.0, rng)
            else:
                fresh = rng.standard_normal((len(rows), dim))
            with torch.no_grad():
                z[rows] = torch.as_tensor(fresh, dtype=torch.float32, device=dev)
                lam[rows] = 0.0
                m1[rows], m2[rows], t_adam[rows] = 0.0, 0.0, 0.0
            best_viol[rows], idle[rows] = np.inf, 0
            restarts += len(rows)
    if e is not None:
        ev.accept(e, n)
        report()
    lam_new = lam.mean(dim=0, keepdim=True)  # multipliers for new samples: the seeds' average

    # ---- 2. fast sampler: single gradient steps from accepted samples, kept when feasible --------
    a_store = ev.archive
    eta, accepted_steps, tried_steps = 0.05, 0, 0
    while a_store.size < n and a_store.size > 0 and T.presentations + batch * (1 + ev.repeats) <= budget:
        codes = a_store.get("codes")
        feats = torch.as_tensor(a_store.get("features") if ev.features.differentiable else
                                a_store.get("series").reshape(a_store.size, -1), dtype=torch.float32, device=dev)
        B = min(batch, max(1, n - a_store.size) * 2)
        idx = rng.choice(len(codes), size=B, replace=B > len(codes))
        z0 = torch.tensor(codes[idx], dtype=torch.float32, device=dev, requires_grad=True)
        x, a, f = forward(z0)
        own = torch.zeros((B, len(codes)), dtype=torch.bool, device=dev)
        own[torch.arange(B), torch.as_tensor(idx, device=dev)] = True
        dist = torch.where(own, torch.full_like(f[:, :1], float("inf")), torch.cdist(f, feats))  # not its own neighbour
        kk = max(1, min(k_nearest, len(codes) - 1))
        nov = torch.topk(dist, kk, dim=1, largest=False).values
        nov = torch.where(torch.isfinite(nov), nov, torch.zeros_like(nov)).mean(dim=1) / scale
        pen, _, _ = al_terms(a, lam_new, mu)
        loss = (-beta * nov + pen + shell(z0)).sum()
        (g,) = torch.autograd.grad(loss, z0)
        with torch.no_grad():
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            zn = z0.norm(dim=1, keepdim=True)
            gdir = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            xi = torch.tensor(rng.standard_normal((B, dim)), dtype=torch.float32, device=dev)
            xi = xi / xi.norm(dim=1, keepdim=True).clamp_min(1e-12)
            size = eta * zn * torch.tensor(np.exp(rng.uniform(-1, 1, (B, 1))), dtype=torch.float32, device=dev)
            z1 = z0 - size * gdir + size * xi
        e = ev(z1.cpu().numpy().astype(np.float64))
        rate = float(np.mean(e["feasible"]))
        tried_steps += B
        accepted_steps += ev.accept(e, n - a_store.size)
        eta = float(np.clip(eta * (1.3 if rate > 0.6 else (1 / 1.3 if rate < 0.2 else 1.0)), 1e-4, 2.0))
        report()
    return {"seeds": K, "seed_outer_iterations": outer_done, "seed_steps": steps, "seeds_all_feasible": seeds_ok,
            "seed_restarts": restarts,
            "mu_final": mu, "feature_scale": scale, "fast_steps_tried": tried_steps,
            "fast_steps_accepted": accepted_steps, "eta_final": eta}
