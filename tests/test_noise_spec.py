"""A noise spec is checked once, where it is given: a bad one is one line and exit code 2, before any store exists."""
import pytest

from xdream_ts.adapters.simulated import GainNoise, PoissonNoise, SimulatedNeuron, parse_noise, with_noise
from xdream_ts.cli import main
from xdream_ts.errors import UserError

BAD = {  # spec -> words the one line must hold
    "poisson:-2": "poisson scale must be > 0",  # was a numpy traceback after the store was made
    "poisson:0": "poisson scale must be > 0",
    "poisson:inf": "poisson scale must be > 0",
    "gain:-1": "gain noise sigma must be >= 0",  # was accepted silently
    "gain:nan": "gain noise sigma must be >= 0",
    "gain:half": "is not a number",
    "gauss:1": "unknown noise",
}


@pytest.mark.parametrize("spec", list(BAD))
def test_bad_noise_on_the_command_line_is_one_line_and_exit_2(spec, tmp_path, capsys):
    out = tmp_path / "r.zarr"
    code = main(["run", "--noise", spec, "--decoder", "basis:6", "--budget", "40", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert BAD[spec] in err and not out.exists()


@pytest.mark.parametrize("spec", list(BAD))
def test_every_way_in_checks_the_same(spec, tmp_path):
    neuron = SimulatedNeuron(length=16)
    with pytest.raises(UserError, match=BAD[spec].split(" must")[0]):
        with_noise(neuron, spec)
    from xdream_ts.sweep import sweep  # a sweep checks its noise list before any task starts
    cfg = {"name": "n", "budget": 40, "seeds": [0], "decoders": ["basis:6"], "optimizers": ["genetic"],
           "noise": ["none", spec], "targets": [{"kind": "simulated", "length": 16, "seeds": [1]}]}
    with pytest.raises(UserError, match=BAD[spec].split(" must")[0]):
        sweep(cfg, tmp_path / "s", executor="serial", progress=False)


def test_good_specs_and_the_wrappers():
    assert parse_noise("none") is None and parse_noise(None) is None
    assert parse_noise("poisson") == ("poisson", 1.0) and parse_noise("gain") == ("gain", 0.5)
    assert parse_noise("gain:0") == ("gain", 0.0) and parse_noise("poisson:2.5") == ("poisson", 2.5)
    neuron = SimulatedNeuron(length=16)
    assert with_noise(neuron, "poisson:3").scale == 3.0 and with_noise(neuron, "gain:0.2").sigma == 0.2
    with pytest.raises(UserError, match="poisson scale must be > 0"):
        PoissonNoise(neuron, scale=-2)
    with pytest.raises(UserError, match="gain noise sigma must be >= 0"):
        GainNoise(neuron, sigma=-1)
