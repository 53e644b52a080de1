"""cmaes, ng:NAME and the default optimizer beyond the shared contract (tests/test_optimizers.py covers
shapes, determinism, NaN tolerance, exact JSON state round trip and improvement for all three)."""
import warnings

import numpy as np
import pytest

from xdream_ts import serial
from xdream_ts.adapters.simulated import GainNoise, SimulatedNeuron
from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.errors import UserError
from xdream_ts.optimizers import make_optimizer


def _quadratic(codes):
    return -0.1 * np.sum((codes - 0.5) ** 2, axis=1)


def _drive(opt, generations, score=_quadratic):
    trace = []
    for _ in range(generations):
        codes = opt.ask()
        opt.tell(codes, score(codes))
        trace.append(codes)
    return trace


# ---- cmaes ----------------------------------------------------------------------------------------
def test_cmaes_instances_do_not_interfere():
    """pycma's seed option reseeds numpy's global RNG; ours draw from their own Generator."""
    alone_a = _drive(make_optimizer("cmaes", 8, seed=5), 6)
    alone_b = _drive(make_optimizer("cmaes", 8, seed=6), 6)
    a, b = make_optimizer("cmaes", 8, seed=5), make_optimizer("cmaes", 8, seed=6)
    for g in range(6):
        np.random.seed(g)  # someone else using the global RNG in between changes nothing
        np.random.standard_normal(100)
        ca = a.ask()
        cb = b.ask()
        a.tell(ca, _quadratic(ca))
        b.tell(cb, _quadratic(cb))
        np.testing.assert_array_equal(ca, alone_a[g])
        np.testing.assert_array_equal(cb, alone_b[g])


def test_cmaes_missing_response_ranks_last_and_empty_generation_is_reasked():
    opt = make_optimizer("cmaes", 6, seed=0, population_size=8)
    codes = opt.ask()
    opt.tell(codes, np.full(8, np.nan))
    np.testing.assert_array_equal(opt.ask(), codes)  # nothing measured: shown again
    scores = _quadratic(codes)
    scores[np.argmax(scores)] = np.nan  # the best code's response went missing
    mean_before = opt.mean
    opt.tell(codes, scores)
    # the mean moved towards the measured good codes, not towards the unmeasured one
    worst_loss_code = codes[np.nanargmax(scores)]
    assert np.isfinite(opt.ask()).all()
    assert not np.allclose(opt.mean, mean_before) and np.isfinite(worst_loss_code).all()


def test_cmaes_replay_detects_a_foreign_state():
    a = make_optimizer("cmaes", 5, seed=2)
    _drive(a, 3)
    state = serial.loads(serial.dumps(a.state_dict()))
    state["told"][1, 0] += 1.0  # not what this optimizer was told: the replay lands elsewhere
    b = make_optimizer("cmaes", 5, seed=2)
    with pytest.warns(RuntimeWarning, match="did not reproduce"):
        b.load_state_dict(state)
    with pytest.raises(UserError, match="not written by the cmaes"):
        b.load_state_dict({"kind": "something else"})


def test_cmaes_bounds_and_bad_parameters():
    opt = make_optimizer("cmaes", 4, seed=0, bounds=(-0.5, 0.5), sigma0=2.0)
    for codes in _drive(opt, 3):
        assert codes.min() >= -0.5 and codes.max() <= 0.5
    with pytest.raises(UserError, match="sigma0"):
        make_optimizer("cmaes", 4, sigma0=0)
    with pytest.raises(UserError, match="bounds"):
        make_optimizer("cmaes", 4, bounds=(1.0, -1.0))


# ---- nevergrad ------------------------------------------------------------------------------------
def test_nevergrad_noisy_flag_reaches_the_parametrization():
    clean = make_optimizer("ng:NGOpt", 8, seed=0, noisy=False)
    noisy = make_optimizer("ng:NGOpt", 8, seed=0, noisy=True)
    assert clean.optimizer.parametrization.function.deterministic is True
    assert noisy.optimizer.parametrization.function.deterministic is False
    assert noisy.optimizer.has_noise and not clean.optimizer.has_noise
    # NGOpt picks a different (noise-robust) algorithm for the noisy target, and says which
    assert noisy.describe()["chosen"] != clean.describe()["chosen"]


def test_nevergrad_instances_do_not_interfere_through_the_global_rng():
    """Some nevergrad optimizers draw from numpy's global RNG; each instance brings its own."""
    alone = _drive(make_optimizer("ng:NGOpt", 6, seed=1, noisy=True), 4)
    a, b = make_optimizer("ng:NGOpt", 6, seed=1, noisy=True), make_optimizer("ng:NGOpt", 6, seed=2, noisy=True)
    for g in range(4):
        np.random.standard_normal(7)
        ca, cb = a.ask(), b.ask()
        a.tell(ca, _quadratic(ca))
        b.tell(cb, _quadratic(cb))
        np.testing.assert_array_equal(ca, alone[g])


def test_nevergrad_errors_are_one_line_user_errors():
    with pytest.raises(UserError, match="did you mean ng:NGOpt"):
        make_optimizer("ng:NGOtp", 4)
    with pytest.raises(UserError, match="cannot be used here"):
        make_optimizer("ng:BFGS", 4)  # sequential only: refuses num_workers > 1


def test_list_nevergrad_says_why_it_leaves_some_out():
    from xdream_ts.optimizers.nevergrad import list_nevergrad
    usable, refused = list_nevergrad()
    assert {"NGOpt", "TBPSA", "CMA", "DE"} <= set(usable)
    reasons = dict(refused)
    assert "BFGS" in reasons and "parallel" in reasons["BFGS"]
    assert not set(usable) & set(reasons)
    assert list_nevergrad() is list_nevergrad()  # cached


# ---- default ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 32, 500])
def test_default_searches_on_a_sphere_after_exploring(dim):
    opt = make_optimizer("default", dim, seed=0, budget=400)  # explores 15 % = 60 evaluations first
    assert opt.explore == 2
    trace = _drive(opt, 4)
    for codes in trace:
        np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 0.5 * np.sqrt(dim), rtol=1e-9)
    # exploring: directions all over the sphere; then a local search around the best one
    spread = [np.mean(np.abs(c / np.linalg.norm(c, axis=1, keepdims=True) @ opt.mean)) for c in trace]
    if dim > 2:
        assert spread[0] < 0.5 < spread[3]


def test_default_starts_around_a_given_code():
    init = np.zeros(16)
    init[0] = 3.0
    opt = make_optimizer("default", 16, seed=0, init=init, radius=3.0)
    assert opt.explore == 0  # a start code replaces exploration
    codes = opt.ask()
    assert np.all(codes[:, 0] / 3.0 > np.cos(1.5))  # within the first steps' angle of the start


def test_default_searches_a_sphere_twice_the_start_norm_and_shows_the_start_as_it_is():
    init = np.zeros((2, 16))
    init[0, 0], init[1, 1] = 3.0, 2.0
    opt = make_optimizer("default", 16, seed=0, init=init)
    assert opt.radius == pytest.approx(6.0)
    codes = opt.ask()
    np.testing.assert_array_equal(codes[-1], init[0])  # the start codes as given, the best last
    np.testing.assert_array_equal(codes[-2], init[1])
    np.testing.assert_allclose(np.linalg.norm(codes[:-2], axis=1), 6.0, rtol=1e-9)
    assert make_optimizer("default", 16, seed=0, init=init, start_radius_scale=1.0).radius == pytest.approx(3.0)
    with pytest.raises(UserError, match="start_radius_scale"):
        make_optimizer("default", 16, init=init, start_radius_scale=0)


def _best_clean(name, seed, budget=1500, noise_sigma=None):
    neuron = SimulatedNeuron(length=200, seed=seed)
    decoder = BasisDecoder(200, n_basis=32)
    scorer = neuron if noise_sigma is None else GainNoise(neuron, sigma=noise_sigma, seed=seed)
    opt = make_optimizer(name, decoder.latent_dim, seed=seed, noisy=noise_sigma is not None)
    best_obs, best_obs_clean, shown = -np.inf, None, 0
    while shown < budget:
        codes = opt.ask()
        series = decoder(codes)
        clean = neuron(series)
        observed = clean if noise_sigma is None else scorer.add_noise(clean)
        opt.tell(codes, observed)
        shown += len(codes)
        j = int(np.argmax(observed))
        if observed[j] > best_obs:
            best_obs, best_obs_clean = observed[j], clean[j]
    inc = opt.incumbent() if hasattr(opt, "incumbent") else None
    picked = float(neuron(decoder(inc[0][None]))[0]) if inc else float(best_obs_clean)
    return picked / neuron.max_response, float(best_obs_clean) / neuron.max_response, inc


def test_default_beats_random_search_clearly():
    default = np.mean([_best_clean("default", s)[0] for s in range(5)])
    random = np.mean([_best_clean("random", s)[0] for s in range(5)])
    assert default > 0.95, default  # close to the closed-form optimum
    assert default > random + 0.25, (default, random)


def test_default_reports_its_best_by_mean_response_under_gain_noise():
    """Gain noise sigma 0.5: the best single observation is a lucky draw; the incumbent is measured often.

    Fails for the naive best-observed rule (picked == naive then)."""
    picked, naive, counts = [], [], []
    for seed in range(6):
        p, n, inc = _best_clean("default", seed, budget=1200, noise_sigma=0.5)
        picked.append(p)
        naive.append(n)
        counts.append(inc[2])
    assert min(counts) >= 2  # every reported code was measured more than once
    assert np.mean(picked) > np.mean(naive) + 0.02, (picked, naive)
    assert sum(p > n for p, n in zip(picked, naive)) >= 4


def test_default_never_reports_a_lucky_new_code_under_noise():
    """A new code with one huge response (the best observed) is not reported: it was measured once."""
    opt = make_optimizer("default", 4, seed=0, population_size=6, noisy=True)
    for _ in range(3):
        codes = opt.ask()
        scores = np.ones(len(codes))
        scores[0] = 10.0  # a fresh code, lucky
        opt.tell(codes, scores)
        assert not np.array_equal(opt.incumbent()[0], codes[0])
        assert opt.incumbent()[1] <= 1.0


def test_default_incumbent_is_chosen_by_mean_response():
    """Worked example. Each generation shows a new snapshot of the search centre and the incumbent again.

    Snapshot A gets one huge response (10), then 0 whenever shown again; snapshot B gets 3 every time;
    everything else 1 (the generation median). The best-observed rule reports A forever. The mean
    response rule, shrunk towards the median as one more measurement, keeps A while
    (10 + 0 * k + 1) / (k + 2) > (3 + 1) / 2, i.e. for k < 4 re-measurements, then moves to B for good.
    """
    opt = make_optimizer("default", 4, seed=0, population_size=6, noisy=True, snapshot_every=1, explore=0)
    a = b = None
    history = []
    for g in range(8):
        codes = opt.ask()
        at = int(opt.layout[0])  # fresh samples first, then the snapshot, then the incumbent
        scores = np.ones(len(codes))
        if g == 0:
            a = codes[at].copy()
        elif g == 1:
            b = codes[at].copy()
        for i, c in enumerate(codes):
            if np.array_equal(c, a):
                scores[i] = 10.0 if g == 0 else 0.0
            elif np.array_equal(c, b):
                scores[i] = 3.0
        opt.tell(codes, scores)
        inc = opt.incumbent()
        history.append(("A" if np.array_equal(inc[0], a) else "B" if np.array_equal(inc[0], b) else "?",) + inc[1:])
    assert [h[0] for h in history] == ["A", "A", "A", "A", "B", "B", "B", "B"], history
    assert history[3][1:] == (2.5, 4)  # A: mean of 10, 0, 0, 0 over 4 measurements
    assert history[-1][1:] == (3.0, 4)  # B, measured at every generation since it led


def test_default_empty_generation_is_reasked_and_state_round_trip_keeps_the_archive():
    opt = make_optimizer("default", 8, seed=3, noisy=True)
    codes = opt.ask()
    opt.tell(codes, np.full(len(codes), np.nan))
    np.testing.assert_array_equal(opt.ask(), codes)
    _drive(opt, 4)
    clone = make_optimizer("default", 8, seed=0, noisy=True)
    clone.load_state_dict(serial.loads(serial.dumps(opt.state_dict())))
    a, b = opt.incumbent(), clone.incumbent()
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]
    np.testing.assert_array_equal(_drive(opt, 3)[-1], _drive(clone, 3)[-1])


def test_default_bad_parameters():
    with pytest.raises(UserError, match="sigma"):
        make_optimizer("default", 8, sigma0=0.01, sigma_end=0.1)
    with pytest.raises(UserError, match="dimension"):
        make_optimizer("default", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_optimizer("default", 8, population_size=4)
