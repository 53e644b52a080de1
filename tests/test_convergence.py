"""On a neuron whose best input is known in closed form, the search finds it."""
import numpy as np

import xdream_ts
from xdream_ts.adapters.simulated import PoissonNoise, SimulatedNeuron
from xdream_ts.decoders.basis import BasisDecoder


def test_genetic_finds_the_known_optimum():
    neuron = SimulatedNeuron(length=500, seed=1)
    r = xdream_ts.run(BasisDecoder(500), neuron, "genetic", budget=3000, seed=0, progress=False)
    assert np.corrcoef(r.best_series, neuron.optimum())[0, 1] > 0.9


def test_genetic_under_poisson_noise_still_gets_close():
    neuron = SimulatedNeuron(length=500, seed=3)
    r = xdream_ts.run(BasisDecoder(500), PoissonNoise(neuron, scale=1.0, seed=0), "genetic", budget=4000,
                      repeats=2, seed=0, progress=False)
    # Poisson noise at ~10 spikes: the best observed series is partly a lucky draw, still clearly tuned
    assert np.corrcoef(r.best_series, neuron.optimum())[0, 1] > 0.7
    assert r.best_clean_score > 0.7 * neuron.max_response
