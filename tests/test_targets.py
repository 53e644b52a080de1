"""The one place targets are made: every kind build() makes satisfies the protocols and scores as the
same scorer made by hand; a stored run's config rebuilds its target; the rig and run() write the
same store."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

import xdream_ts
from xdream_ts import protocols
from xdream_ts.adapters.onnx import OnnxScorer
from xdream_ts.adapters.remote import RemoteScorer
from xdream_ts.adapters.simulated import GainNoise, PoissonNoise, SimulatedNeuron
from xdream_ts.cli import main
from xdream_ts.decoders import make_decoder
from xdream_ts.errors import UserError
from xdream_ts.objective import Objective, replay
from xdream_ts.reference import reference_max, reference_model_path
from xdream_ts.rig import RigConfig, RigSearch
from xdream_ts.targets import Target, TargetSpec, build

from stub_server import StubServer

L = 40


def _series(n, length=L, seed=0):
    return make_decoder("basis:6", length=length)(np.random.default_rng(seed).standard_normal((n, 6)))


def _protocols_hold(scorer):
    assert isinstance(scorer, protocols.Scorer)
    assert isinstance(scorer, protocols.Describable)
    assert isinstance(scorer, protocols.Shaped)


def test_simulated_and_noisy_targets_equal_hand_made_ones():
    spec = TargetSpec(kind="simulated", length=L, neuron_seed=4, noise="gain:0.3", noise_seed=9)
    built = build(spec)
    _protocols_hold(built.scorer)
    assert isinstance(built.scorer, protocols.Noisy) and isinstance(built.scorer, protocols.Stateful)
    hand = GainNoise(SimulatedNeuron(length=L, seed=4), sigma=0.3, seed=9)
    x = _series(16)
    np.testing.assert_array_equal(built.scorer(x), hand(x))  # same clean scores, same noise draws
    assert built.reference_max == pytest.approx(hand.scorer.max_response)
    poisson = build(spec.with_(noise="poisson:2")).scorer
    assert isinstance(poisson, PoissonNoise) and poisson.scale == 2.0


def test_onnx_target_equals_hand_made_and_knows_the_shipped_maximum():
    unit = Target("block2/out", 69, "center")
    built = build(TargetSpec(units=[unit]))
    _protocols_hold(built.scorer)
    hand = OnnxScorer(reference_model_path(), unit)
    x = _series(8, length=500)
    np.testing.assert_array_equal(built.scorer(x), hand(x))
    assert built.reference_max == reference_max(("block2/out", 69, "center"))
    two = build(TargetSpec(units=[unit, Target("logits", 1)], objective="contrast"))
    assert isinstance(two.scorer, protocols.MultiTarget) and two.reference_max is None  # no maximum for a combination
    s = two.scorer(x)
    np.testing.assert_allclose(two.scorer.objective(s), s[:, 0] - s[:, 1])


def test_torch_twin_scores_as_the_onnx_model():
    pytest.importorskip("torch")
    unit = Target("block3/out", 1, "center")
    built = build(TargetSpec(units=[unit]))
    twin = built.twin()
    assert isinstance(twin, protocols.Differentiable)
    x = _series(4, length=500)
    np.testing.assert_allclose(twin(x), built.scorer(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(build(TargetSpec(units=[unit]), differentiable=True).scorer(x), twin(x))
    with pytest.raises(UserError, match="gives no gradients"):
        build(TargetSpec(kind="simulated", length=L)).twin()


def test_remote_target_equals_hand_made_against_a_real_local_server():
    neuron = SimulatedNeuron(length=L, seed=3)
    server = StubServer(neuron)
    try:
        built = build(TargetSpec(kind="endpoint", endpoint=server.url, remote_model="neuron", noise="gain:0.5",
                                 noise_seed=1))
        _protocols_hold(built.scorer)
        assert isinstance(built.clean, protocols.Reporting)
        hand = GainNoise(RemoteScorer(server.url, model="neuron"), sigma=0.5, seed=1)
        x = _series(12)
        np.testing.assert_allclose(built.scorer(x), hand(x), rtol=1e-6)
        np.testing.assert_allclose(built.clean(x), neuron(x), rtol=1e-6)
    finally:
        server.stop()


def test_objective_is_one_implementation_for_numpy_torch_and_stored_runs():
    s = np.array([[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]])
    np.testing.assert_allclose(Objective("sum")(s), [7.0, 2.0])
    np.testing.assert_allclose(Objective("contrast")(s), [1 - 3.0, 0 - 1.0])
    np.testing.assert_allclose(replay(s, {"kind": "contrast"}), Objective("contrast")(s))
    np.testing.assert_allclose(replay(s, {"kind": "sum"}), Objective("sum")(s))
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(Objective("contrast")(torch.tensor(s)).numpy(), Objective("contrast")(s))
    with pytest.raises(UserError, match="at least two targets"):
        Objective("contrast", n_targets=1)


@pytest.mark.parametrize("options", [
    {"kind": "simulated", "length": L, "neuron_seed": 2, "noise": "poisson:3", "seed": 5},
    {"target": ["block1/out:3@mean", "logits:0"], "objective": "contrast", "threads": 1},
    {"layer": "block2/out", "unit": 7, "position": "120", "noise": "gain:0.2"},
])
def test_spec_store_spec_round_trip(tmp_path, options):
    spec = TargetSpec.from_options(options)
    store = tmp_path / "run.zarr"
    length = spec.length or 500
    xdream_ts.run("basis:4" if length == L else make_decoder("basis:4", length=length), spec, "random", budget=20,
                  store=store, progress=False)
    again = TargetSpec.from_config(xdream_ts.load_run(store).config)
    assert again == spec
    x = _series(6, length=length)
    np.testing.assert_array_equal(build(again).clean(x), build(spec).clean(x))


def test_legacy_store_without_a_spec_rebuilds_from_the_scorer_description(tmp_path):
    store = tmp_path / "old.zarr"
    scorer = GainNoise(SimulatedNeuron(length=L, seed=6), sigma=0.4, seed=2)
    xdream_ts.run("basis:4", scorer, "random", budget=20, store=store, progress=False)  # no spec recorded
    spec = TargetSpec.from_config(xdream_ts.load_run(store).config)
    assert (spec.kind, spec.neuron_seed, spec.noise, spec.noise_seed) == ("simulated", 6, "gain:0.4", 2)


def test_the_rig_and_run_write_identical_stores(tmp_path):
    neuron = SimulatedNeuron(length=L, seed=1)
    search = RigSearch(RigConfig(decoder="basis:6", length=L, optimizer="genetic", budget=150, repeats=2, seed=3,
                                 out=str(tmp_path / "rig.zarr"), timeout_s=5.0, block_size=1000,
                                 optimizer_params={"noisy": False}))
    while not search.done:  # a simulated rig that answers every stimulus at once
        block = search.next_block(1000)
        if block["stimuli"]:
            search.post_responses([(s["id"], float(neuron(np.asarray(s["series"], np.float32)[None])[0]))
                                   for s in block["stimuli"]])
    xdream_ts.run(make_decoder("basis:6", length=L), neuron, "genetic", budget=150, repeats=2, seed=3,
                  store=tmp_path / "loop.zarr", progress=False, write_behind=False)
    rig, loop = zarr.open_group(tmp_path / "rig.zarr", mode="r"), zarr.open_group(tmp_path / "loop.zarr", mode="r")
    assert sorted(rig.array_keys()) == sorted(loop.array_keys())
    for name in rig.array_keys():
        a, b = rig[name][...], loop[name][...]
        if name in ("scores", "objective"):
            # the rig's responses come from its own presentations (float32 series sent as JSON, one at a
            # time): equal up to the last bits of the neuron's dot product, not bit for bit
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
        else:  # codes, series, optimizer state, counts and commit markers: identical
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert rig.attrs["presentations"] == loop.attrs["presentations"] == 150


@pytest.mark.parametrize("argv, message", [
    (["--noise", "poisson:-2"], "poisson scale must be > 0"),
    (["--noise", "gain:-1"], "sigma must be >= 0"),
    (["--noise", "gain:x"], "is not a number"),
    (["--threads", "-1"], "--threads must be >= 0"),
    (["--length", "1", "--decoder", "basis"], "--length must be >= 2"),
    (["--timeout", "0"], "--timeout must be > 0"),
    (["--reference", "-3"], "--reference must be > 0"),
    (["--unit", "-1"], "--unit must be >= 0"),
])
def test_numbers_are_checked_once_where_they_are_parsed(tmp_path, capsys, argv, message):
    code = main(["run", "--budget", "20", "--out", str(tmp_path / "r.zarr"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r.zarr").exists()


def test_out_in_a_folder_that_cannot_be_created_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "--budget", "20", "--out", str(blocker / "sub" / "r.zarr"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot create its folder" in err and len(err.splitlines()) == 1
