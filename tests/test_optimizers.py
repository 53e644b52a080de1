"""The ask/tell contract every optimizer keeps, and XDream's GA rule on a worked example."""
import numpy as np
import pytest

from xdream_ts import serial
from xdream_ts.errors import UserError
from xdream_ts.optimizers import BUILTIN, make_optimizer, optimizer_class

DIM = 12


def _available(name):
    try:
        optimizer_class(name)
        return True
    except UserError:
        return False


NAMES = ["default", "genetic", "cmaes", "fdgd", "nes", "random", "ng:NGOpt", "ng:TBPSA"]


def _score(codes):
    # gentle curvature: FDGD and NES (as XDream defines them) are not scale-invariant, lr = 1 by default
    return -0.1 * np.sum((codes - 0.5) ** 2, axis=1)


def _drive(opt, generations, nan_every=0):
    trace = []
    for g in range(generations):
        codes = opt.ask()
        scores = _score(codes)
        if nan_every:
            scores[::nan_every] = np.nan
        opt.tell(codes, scores)
        trace.append(codes)
    return trace


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_determinism(name):
    a, b = make_optimizer(name, DIM, seed=3), make_optimizer(name, DIM, seed=3)
    ta, tb = _drive(a, 5), _drive(b, 5)
    for x, y in zip(ta, tb):
        assert x.ndim == 2 and x.shape[1] == DIM and len(x) >= 2
        np.testing.assert_array_equal(x, y)
    c = make_optimizer(name, DIM, seed=4)
    assert not np.array_equal(_drive(c, 2)[1], ta[1])


@pytest.mark.parametrize("name", NAMES)
def test_nan_scores_tolerated(name):
    opt = make_optimizer(name, DIM, seed=0)
    trace = _drive(opt, 6, nan_every=3)
    assert all(np.isfinite(c).all() for c in trace)
    codes = opt.ask()
    opt.tell(codes, np.full(len(codes), np.nan))  # a generation with no response at all
    assert np.isfinite(opt.ask()).all()


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_is_exact(name):
    a = make_optimizer(name, DIM, seed=1)
    _drive(a, 3)
    state = serial.loads(serial.dumps(a.state_dict()))  # through JSON, as in the run store
    b = make_optimizer(name, DIM, seed=99)
    b.load_state_dict(state)
    np.testing.assert_array_equal(_drive(a, 4)[-1], _drive(b, 4)[-1])


@pytest.mark.parametrize("name", NAMES)
def test_improves_on_a_quadratic(name):
    opt = make_optimizer(name, DIM, seed=0)
    first = _score(opt.ask()).max()
    best = max(_score(c).max() for c in _drive(opt, 60))
    assert best > first


def test_unknown_optimizer_and_parameter():
    with pytest.raises(UserError, match="did you mean 'genetic'"):
        make_optimizer("genetc", 4)
    with pytest.raises(UserError, match="does not take"):
        make_optimizer("genetic", 4, mutation=0.1)


# ---- XDream's GA rule, worked by hand ------------------------------------------------------------
def test_genetic_selection_weights_worked_example():
    from xdream_ts.optimizers.genetic import selection_weights
    y = np.array([4.0, 3.0, 2.0, 1.0])  # sorted high to low
    clipped = np.clip(y, None, np.percentile(y, 95))  # 95th percentile = 3.85
    kT = np.std(y) / 2.0  # XDream: kT from the scores before the cap
    expected = np.exp((clipped - clipped.max()) / kT)
    np.testing.assert_allclose(selection_weights(y, 2.0), expected)
    assert np.isclose(np.percentile(y, 95), 3.85) and np.isclose(expected[0], 1.0)
    # higher selectivity concentrates the weight on the best
    assert selection_weights(y, 4.0)[-1] < selection_weights(y, 2.0)[-1]


def test_genetic_generation_follows_the_paper():
    from xdream_ts.optimizers.genetic import Genetic
    ga = Genetic(dim=6, seed=0, population_size=8, n_conserve=2, mutation_rate=0.5, mutation_size=0.5)
    codes = ga.ask()
    scores = np.arange(8, dtype=float)
    scores[3] = np.nan  # a missing response
    ga.tell(codes, scores)
    new = ga.ask()
    # elitism: the two best codes (scores 7 and 6) survive unchanged, in rank order
    np.testing.assert_array_equal(new[0], codes[7])
    np.testing.assert_array_equal(new[1], codes[6])
    # the code without a response is carried over unchanged, at the end
    np.testing.assert_array_equal(new[-1], codes[3])
    # children: every component comes from a parent, possibly plus an N(0, 0.5) mutation
    children = new[2:-1]
    assert len(children) == 5
    from_parent = np.isclose(children[:, None, :], codes[None, :, :]).any(axis=1)
    mutated_fraction = 1 - from_parent.mean()
    assert 0.2 < mutated_fraction < 0.8  # mutation rate 0.5


def test_genetic_parent_choice_frequencies_match_fitness():
    from xdream_ts.optimizers.genetic import Genetic, selection_weights
    ga = Genetic(dim=1, seed=0, population_size=4)
    parents = np.arange(4, dtype=float)[:, None]
    fitness = selection_weights(np.array([3.0, 2.0, 1.0, 0.0]), 2.0)
    ga.heritability = 1.0  # child = first parent exactly
    kids = ga._mate(parents, fitness, 20000)
    freq = np.bincount(kids[:, 0].astype(int), minlength=4) / 20000
    np.testing.assert_allclose(freq, fitness / fitness.sum(), atol=0.015)


def test_fdgd_gradient_matches_the_papers_formula():
    from xdream_ts.optimizers.fdgd import FDGD
    opt = FDGD(dim=3, seed=0, population_size=4, search_radius=0.5, learning_rate=0.1)
    steps, centre = opt.steps.copy(), opt.center.copy()
    codes = opt.ask()
    w = np.array([1.0, -2.0, 0.5])
    opt.tell(codes, codes @ w)
    diff = ((centre + steps) @ w - (centre - steps) @ w) / 2
    l1 = np.abs(steps).mean(axis=1)
    expected = centre + 0.1 * np.mean(diff[:, None] / l1[:, None] ** 2 * steps, axis=0)
    np.testing.assert_allclose(opt.center, expected)


def test_nes_centre_and_radius_update():
    from xdream_ts.optimizers.nes import NES
    opt = NES(dim=3, seed=0, population_size=4, search_radius=0.5, learning_rate=0.1, search_radius_learning_rate=0.01)
    e, c, r = opt.directions.copy(), opt.center.copy(), opt.radius
    codes = opt.ask()
    y = codes @ np.array([1.0, -2.0, 0.5])
    opt.tell(codes, y)
    np.testing.assert_allclose(opt.center, c + 0.1 * np.mean(y[:, None] * e, axis=0) / r)
    assert np.isclose(opt.radius, max(0.01, r + 0.01 * np.mean(y[:, None] * (e ** 2 - 1)) / r))
