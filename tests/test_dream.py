"""Sequence Dreaming: raises a unit, each regulariser moves the result the expected way, class-centre
mode, exact resume through the loop, counted passes, and the one-line refusal without gradients."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from xdream_ts import run  # noqa: E402
from xdream_ts.adapters.torch import TorchScorer  # noqa: E402
from xdream_ts.decoders.basis import BasisDecoder  # noqa: E402
from xdream_ts.decoders.identity import IdentityDecoder  # noqa: E402
from xdream_ts.errors import UserError  # noqa: E402
from xdream_ts.optimizers import make_optimizer  # noqa: E402
from xdream_ts.optimizers.dream import (  # noqa: E402
    ClassCentre, Dream, autotune, exponential_smoothing, high_frequency_energy, matched_presentations,
    total_variation,
)
from xdream_ts.serial import dumps, loads  # noqa: E402

L = 64
torch.set_num_threads(1)


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 4, 7, padding=3), nn.ReLU(), nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 2)).eval()


def scorer(target="2:3@center", **kw):
    return TorchScorer(net(), target, length=L, channels=1, **kw)


def dreamed(steps=60, normalize=False, seed=0, **params):
    """Final series after ``steps`` steps of dream on the tiny net's conv2 unit, raw series."""
    dec = IdentityDecoder(L, normalize=normalize)
    opt = Dream(L, seed=seed, population_size=3, learning_rate=0.05, **params).bind(dec, scorer())
    x, act = opt.optimize(steps)
    return dec(x), act, opt


def test_dream_raises_the_activation_through_the_loop():
    sc = scorer("3:1@center")  # after a ReLU: the unit the loop really records
    r = run(IdentityDecoder(L), sc, "dream", budget=160, seed=0, progress=False)
    curve = r.best_per_generation
    assert curve[-1] > curve[0] + 0.5, curve[[0, -1]]
    assert r.config["optimizer"]["name"] == "dream" and r.config["optimizer"]["space"] == "raw"
    state = loads(dumps(r.attrs["config"]))  # JSON-able config
    assert state["optimizer"]["population_size"] == 4


def test_counts_forward_and_backward_passes():
    opt = Dream(L, seed=0, population_size=3).bind(IdentityDecoder(L), scorer())
    opt.optimize(5)
    assert (opt.n_forward, opt.n_backward) == (3 * 5 + 3, 3 * 5)  # + one forward to score the final codes
    d = opt.describe()
    assert d["n_forward"] == 18 and d["n_backward"] == 15
    # matched budgets: a step costs (1 + backward cost) evaluations per code
    assert matched_presentations(3000, 2.0) == 1000
    assert matched_presentations(3000, 2.0, steps_per_generation=2) == 500


@pytest.mark.parametrize("params, measure", [
    ({"tv": 2.0}, total_variation),
    ({"l2": 1.0}, lambda s: np.linalg.norm(s, axis=-1)),
    ({"smooth": 5.0}, high_frequency_energy),
    ({"ema": 0.6}, high_frequency_energy),
    ({"lowpass": 2.0}, high_frequency_energy),
])
def test_each_regulariser_moves_the_result_the_expected_way(params, measure):
    base, act0, _ = dreamed()
    reg, act1, _ = dreamed(**params)
    before, after = measure(base).mean(), measure(reg).mean()
    assert after < 0.8 * before, (params, before, after)
    assert np.all(np.isfinite(act1))


def test_value_range_boxes_the_series():
    s, _, _ = dreamed(value_range=(-0.5, 0.5))
    assert s.min() >= -0.5 and s.max() <= 0.5


def test_exponential_smoothing_is_zero_phase():
    x = np.zeros((1, 101))
    x[0, 50] = 1.0
    y = exponential_smoothing(x, 0.7)
    assert int(np.argmax(y)) == 50 and y[0, 40] == pytest.approx(y[0, 60], rel=1e-6)
    assert exponential_smoothing(x, 0.0) is x


def test_gradients_flow_through_a_linear_decoder():
    dec = BasisDecoder(L, n_basis=12)
    opt = Dream(dec.latent_dim, seed=0, population_size=2).bind(dec, scorer())
    assert opt.space == "linear"
    with torch.no_grad():  # the torch decoder is the numpy decoder
        z = np.random.default_rng(0).standard_normal((2, 12))
        np.testing.assert_allclose(opt._decoder_module(torch.tensor(z, dtype=torch.float32)).numpy(), dec(z), atol=1e-5)
    start = opt.objective_at(opt.x).mean()
    _, act = opt.optimize(40)
    assert act.mean() > start + 0.3


def test_class_centre_mode_approaches_the_centre():
    sc = TorchScorer(net(), [f"5:{u}" for u in range(6)], length=L, channels=1)
    centre = sc(np.sin(np.linspace(0, 6 * np.pi, L))[None].astype(np.float32))[0] * 1.3
    sc_centre = TorchScorer(net(), [f"5:{u}" for u in range(6)], length=L, channels=1, objective=ClassCentre(centre))
    opt = Dream(L, seed=0, population_size=2, learning_rate=0.05).bind(IdentityDecoder(L), sc_centre)
    start = -opt.objective_at(opt.x)
    _, obj = opt.optimize(80)
    assert np.all(-obj < 0.5 * start), (start, -obj)
    # the recorded objective is minus the Euclidean distance
    s = sc(IdentityDecoder(L)(opt.x))
    np.testing.assert_allclose(-np.linalg.norm(s - centre, axis=1), sc_centre.objective(s))


def test_exact_resume_through_the_loop(tmp_path):
    sc = scorer("3:1@center")
    kw = dict(seed=3, progress=False)
    full = run(IdentityDecoder(L), sc, Dream(L, seed=3, tv=0.1, ema=0.3), budget=48, store=tmp_path / "a.zarr", **kw)
    run(IdentityDecoder(L), sc, Dream(L, seed=3, tv=0.1, ema=0.3), budget=20, store=tmp_path / "b.zarr", **kw)
    resumed = run(IdentityDecoder(L), sc, Dream(L, seed=3, tv=0.1, ema=0.3), budget=48, store=tmp_path / "b.zarr",
                  resume=True, **kw)
    np.testing.assert_array_equal(full.codes, resumed.codes)
    np.testing.assert_array_equal(full.objective, resumed.objective)
    # the state is plain JSON and round-trips exactly, Adam moments and counters included
    opt = Dream(L, seed=1).bind(IdentityDecoder(L), sc)
    opt.optimize(3)
    state = loads(dumps(opt.state_dict()))
    other = Dream(L, seed=99).bind(IdentityDecoder(L), sc)
    other.load_state_dict(state)
    for key in ("x", "m", "v", "best_x"):
        np.testing.assert_array_equal(getattr(other, key), getattr(opt, key))
    assert (other.t, other.n_forward, other.n_backward) == (opt.t, opt.n_forward, opt.n_backward)
    np.testing.assert_array_equal(other.step(), opt.step())


def test_registry_builds_dream():
    opt = make_optimizer("dream", L, seed=0, population_size=6, tv=0.2)
    assert isinstance(opt, Dream) and opt.needs_gradients and opt.ask().shape == (6, L)


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_refuses_a_scorer_without_gradients_through_run(tmp_path):
    from xdream_ts.adapters.simulated import SimulatedNeuron, with_noise

    neuron = SimulatedNeuron(length=L, seed=0)
    with pytest.raises(UserError) as e:
        run(IdentityDecoder(L), neuron, "dream", budget=8, progress=False, store=tmp_path / "x.zarr")
    msg = _one_line(e)
    assert msg.startswith("dream needs gradients: the scorer") and "gradient-free optimizer" in msg
    assert not (tmp_path / "x.zarr").exists()  # refused before anything was written
    with pytest.raises(UserError, match="dream needs gradients"):  # a noise wrapper hides the gradients
        run(IdentityDecoder(L), with_noise(scorer(), "poisson", seed=0), "dream", budget=8, progress=False)


def test_refuses_an_onnx_scorer(tmp_path):
    pytest.importorskip("onnxruntime")
    from xdream_ts.adapters.onnx import OnnxScorer

    path = tmp_path / "m.onnx"
    torch.onnx.export(net(), (torch.randn(1, 1, L),), str(path), dynamo=False, input_names=["series"],
                      output_names=["out"], opset_version=17)
    with pytest.raises(UserError) as e:
        run(IdentityDecoder(L), OnnxScorer(path, ":0"), "dream", budget=8, progress=False)
    assert "dream needs gradients" in _one_line(e)


def test_refuses_a_decoder_without_gradients():
    class Opaque:
        latent_dim, name = 8, "opaque"

        def __call__(self, codes):
            return np.repeat(codes, 8, axis=1).astype(np.float32)

    with pytest.raises(UserError) as e:
        run(Opaque(), scorer(), "dream", budget=8, progress=False)
    assert "decoder 'opaque' has no gradients" in _one_line(e)
    with pytest.raises(UserError, match="identity decoder"):  # smoothing the series needs the series
        Dream(12, ema=0.5).bind(BasisDecoder(L, n_basis=12), scorer())


def test_refusal_through_the_cli_exits_2(tmp_path, capsys):
    """The shipped model has a torch twin (dream runs on it from the CLI); a noisy target has no gradient."""
    from xdream_ts.cli import main

    rc = main(["run", "--optimizer", "dream", "--noise", "gain:0.5", "--budget", "8", "--no-progress",
               "--out", str(tmp_path / "r.zarr")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "dream needs gradients" in err, err
    assert not (tmp_path / "r.zarr").exists()


def test_autotune_scores_activation_and_plausibility():
    from xdream_ts.analysis import ActivationSpace

    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, L)
    real = np.sin(2 * np.pi * (rng.uniform(1, 4, (200, 1)) * t + rng.uniform(0, 1, (200, 1))))
    real = (real + 0.1 * rng.standard_normal(real.shape)).astype(np.float32)
    sc = scorer("3:1@center")
    space = ActivationSpace(sc, "3", real)
    res = autotune(IdentityDecoder(L), sc, space=space, trials=4, steps=15,
                   grid={"tv": (0.0, 0.5), "ema": (0.0, 0.5)}, seed=0)
    rows = res["trials"]
    assert len(rows) == 4 and rows[0]["tv"] == 0.0 and rows[0]["ema"] == 0.0  # the unregularised baseline
    assert all(0 <= r["percentile"] <= 100 and r["mahalanobis"] > 0 for r in rows)
    best = max(rows, key=lambda r: r["score"])
    assert res["best"] == {"ema": best["ema"], "tv": best["tv"]}
    assert Dream.autotune is not None


def test_redraw_dead_restarts():
    # ReLU(x[centre] - 1.5): silent, with zero gradient, for most z-normalised random starts
    gate = nn.Conv1d(1, 1, 1)
    with torch.no_grad():
        gate.weight.fill_(1.0)
        gate.bias.fill_(-1.5)
    sc = TorchScorer(nn.Sequential(gate, nn.ReLU()).eval(), "1:0@center", length=L, channels=1)
    dec = IdentityDecoder(L)
    seed = next(s for s in range(50)
                if np.all(Dream(L, seed=s, population_size=2).bind(dec, sc).objective_at(Dream(L, seed=s, population_size=2).x) == 0))
    stuck = Dream(L, seed=seed, population_size=2).bind(dec, sc)
    _, act = stuck.optimize(60)
    assert np.all(act == 0)  # no gradient, no move
    revived = Dream(L, seed=seed, population_size=2, redraw_dead=True).bind(dec, sc)
    _, act = revived.optimize(60)
    assert revived.n_redrawn > 0 and act.max() > 0.5
