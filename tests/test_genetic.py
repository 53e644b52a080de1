"""XDream's GA held to the published algorithm (willwx/XDream, Optimizers.Genetic), worked by hand."""
import numpy as np
import pytest

import xdream_ts
from xdream_ts import serial
from xdream_ts.adapters.simulated import GainNoise, SimulatedNeuron
from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.optimizers import make_optimizer
from xdream_ts.optimizers.genetic import (Genetic, selection_probabilities, selection_temperature,
                                          selection_weights)

# A skewed score vector (one high responder), in population order.
#   mean = (1 + 7 - 1 + 1) / 4 = 2;  deviations 5, -1, -1, -3  ->  variance 36 / 4 = 9,  std = 3
#   kT = std / selectivity = 3 / 2 = 1.5                      (uncapped scores)
#   sorted -1, 1, 1, 7: the 95th percentile sits at 0.95 * 3 = 2.85  ->  1 + 0.85 * (7 - 1) = 6.1
#   capped 1, 6.1, -1, 1;  exponents (y_c - 6.1) / 1.5 = -3.4, 0, -71/15, -3.4
#   fitness e^-3.4 = 0.03337326996, 1, e^-4.7333 = 0.00879709845, e^-3.4;  sum 1.07554363837
SKEWED = np.array([1.0, 7.0, -1.0, 1.0])
HAND_FITNESS = np.array([0.03337326996032608, 1.0, 0.008797098451105509, 0.03337326996032608])
HAND_P = np.array([0.03102921050311743, 0.9297623679071528, 0.0081792110866122, 0.03102921050311743])


def _spy_mate(ga):
    seen = []
    mate = ga._mate

    def spy(parents, fitness, n):
        seen.append((parents.copy(), np.array(fitness, dtype=float)))
        return mate(parents, fitness, n)

    ga._mate = spy
    return seen


def test_selection_probabilities_equal_the_published_formula_on_skewed_scores():
    np.testing.assert_allclose(selection_weights(SKEWED, 2.0), HAND_FITNESS, rtol=1e-12)
    np.testing.assert_allclose(selection_probabilities(SKEWED, 2.0), HAND_P, rtol=1e-12)
    # and the same probabilities drive a generation: the GA ranks high to low before mating
    ga = Genetic(dim=3, seed=0, population_size=4)
    seen = _spy_mate(ga)
    codes = ga.ask()
    ga.tell(codes, SKEWED)
    parents, fitness = seen[0]
    np.testing.assert_array_equal(parents, codes[[1, 3, 0, 2]])  # 7, then the tied 1s (later first), then -1
    np.testing.assert_allclose(fitness / fitness.sum(), HAND_P[[1, 3, 0, 2]], rtol=1e-12)
    # parents are drawn independently, with replacement, with exactly these probabilities
    ga = Genetic(dim=1, seed=1, population_size=4, heritability=1.0)
    kids = ga._mate(np.arange(4.0)[:, None], selection_weights(SKEWED, 2.0), 40000)
    freq = np.bincount(kids[:, 0].astype(int), minlength=4) / 40000
    np.testing.assert_allclose(freq, HAND_P, atol=0.006)


def test_one_outlier_worked_by_hand():
    # y = 5, 0, 0, 0, 0: mean 1, variance (16 + 4) / 5 = 4, std 2, kT = 1; the 95th percentile is
    # 0.8 * 5 = 4, so fitness = 1, e^-4 x 4 and the best is drawn with probability 1 / (1 + 4 e^-4)
    y = np.array([0.0, 0.0, 5.0, 0.0, 0.0])
    p = selection_probabilities(y, 2.0)
    assert p[2] == pytest.approx(0.9317384593585716, rel=1e-12)
    np.testing.assert_allclose(np.delete(p, 2), 0.01831563888873418 * 0.9317384593585716, rtol=1e-12)


def test_kT_uses_the_std_of_the_uncapped_scores():
    assert selection_temperature(SKEWED, 2.0) == 1.5  # std 3 of the scores as they came
    capped = np.minimum(SKEWED, np.percentile(SKEWED, 95))
    assert np.std(capped) / 2.0 == pytest.approx(1.3135709916102745)  # what a capped std would give
    # the worst code's fitness is e^(-7.1 / 1.5), not e^(-7.1 / 1.3136) = 0.00449
    assert selection_weights(SKEWED, 2.0)[2] == pytest.approx(np.exp(-7.1 / 1.5), rel=1e-12)
    assert selection_weights(SKEWED, 2.0)[2] > 1.9 * np.exp(-7.1 / 1.3135709916102745)
    # inside a generation, with NaNs: kT comes from the valid scores only, still uncapped
    ga = Genetic(dim=2, seed=0, population_size=6)
    seen = _spy_mate(ga)
    codes = ga.ask()
    ga.tell(codes, np.array([1.0, np.nan, 7.0, -1.0, np.nan, 1.0]))
    _, fitness = seen[0]
    np.testing.assert_allclose(np.log(fitness), [0.0, -3.4, -3.4, -7.1 / 1.5], rtol=1e-12)
    # all scores tied: kT floors at 1e-8 and selection is uniform
    assert selection_temperature(np.full(5, 3.0), 2.0) == 1e-8
    np.testing.assert_allclose(selection_probabilities(np.full(5, 3.0), 2.0), 0.2)


def test_underflowed_fitness_takes_the_smallest_positive_one():
    # selectivity 375: kT = 0.008; exponents -5.1 / 0.008 = -637.5 (e^-637.5 > 0) and -7.1 / 0.008 = -887.5
    # (underflows to 0 in float64)
    w = selection_weights(SKEWED, 375.0)
    assert w[2] == 0.0 and w[0] > 0.0
    p = selection_probabilities(SKEWED, 375.0)
    assert p[2] == p[0] > 0.0  # raised to e^-637.5, as XDream's mating does


def test_conserved_elite_is_neither_mutated_nor_recombined():
    ga = Genetic(dim=5, seed=3, population_size=6, n_conserve=1, mutation_rate=1.0)
    codes = ga.ask()
    ga.tell(codes, SKEWED.tolist() + [0.0, np.nan])
    new = ga.ask()
    np.testing.assert_array_equal(new[0], codes[1])  # the best, untouched
    np.testing.assert_array_equal(new[-1], codes[5])  # no response: carried over at the end
    assert not np.isclose(new[1:-1, None, :], codes[None]).any()  # mutation_rate 1: every child gene moved


def test_default_n_conserve_is_the_published_cnn_setting():
    assert Genetic(dim=2).n_conserve == 0
    assert make_optimizer("genetic", 2).describe()["n_conserve"] == 0


@pytest.mark.parametrize("n_conserve", [0, 1])
def test_resume_is_bit_identical(n_conserve):
    def drive(opt, gens, rng):
        out = []
        for _ in range(gens):
            codes = opt.ask()
            y = np.maximum(codes[:, 0], 0) ** 2 + rng.exponential(size=len(codes))  # skewed, rectified
            y[rng.random(len(y)) < 0.1] = np.nan
            opt.tell(codes, y)
            out.append(codes)
        return out

    a = make_optimizer("genetic", 6, seed=5, n_conserve=n_conserve)
    drive(a, 4, np.random.default_rng(0))
    state = serial.loads(serial.dumps(a.state_dict()))  # through JSON, as in the run store
    b = make_optimizer("genetic", 6, seed=77, n_conserve=n_conserve)
    b.load_state_dict(state)
    ta, tb = drive(a, 6, np.random.default_rng(1)), drive(b, 6, np.random.default_rng(1))
    for x, y in zip(ta, tb):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.ask(), b.ask())


def test_resume_through_the_run_store_is_bit_identical(tmp_path):
    def setup():
        neuron = SimulatedNeuron(length=64, seed=2)
        return BasisDecoder(64, n_basis=8), GainNoise(neuron, sigma=0.5, seed=7)

    dec, scorer = setup()
    full = xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=3, n_conserve=1), budget=200,
                         store=tmp_path / "a.zarr", progress=False)

    def stop_after_4(g, *_):
        if g == 4:
            raise KeyboardInterrupt

    dec, scorer = setup()
    with pytest.raises(KeyboardInterrupt):
        xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=3, n_conserve=1), budget=200,
                      store=tmp_path / "b.zarr", progress=False, callback=stop_after_4)
    dec, scorer = setup()
    resumed = xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=3, n_conserve=1), budget=200,
                            store=tmp_path / "b.zarr", resume=True, progress=False)
    assert resumed.generations == full.generations == 10
    np.testing.assert_array_equal(resumed.codes, full.codes)
    np.testing.assert_array_equal(resumed.scores, full.scores)
