"""Plausible super stimuli by gradient (issue 16 item 2): dream --plausible ascends the distance as a
differentiable penalty through the target's torch twin, and reports a series that a separate ONNX Runtime
session with an independently refitted covariance finds within the quantile; --plausibility-model measures
the distance in a reference model's layer for targets without layers; their refusals are one line."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xdream_ts.cli import main  # noqa: E402

from test_plausible import L, _real_series, _rescored, _tiny_onnx  # noqa: E402


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


class _Tiny(torch.nn.Module):
    """The tiny ONNX model of test_plausible in torch, same weights (same draws): its twin, as onnx2torch
    (not installed here) would make it."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(1)
        w = (rng.standard_normal((6, 1, 5)) / 5 ** 0.5).astype(np.float32)
        b = (0.1 * rng.standard_normal(6)).astype(np.float32)
        wl = rng.standard_normal((2, 6)).astype(np.float32)
        self.conv = torch.nn.Conv1d(1, 6, 5, padding=2)
        self.relu = torch.nn.ReLU()
        self.flatten = torch.nn.Flatten()
        self.head = torch.nn.Linear(6, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(w))
            self.conv.bias.copy_(torch.from_numpy(b))
            self.head.weight.copy_(torch.from_numpy(wl))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.flatten(self.relu(self.conv(x)).mean(dim=-1, keepdim=True)))


@pytest.fixture
def tiny_twin(monkeypatch):
    """targets.differentiable_twin of the tiny model: a TorchScorer of _Tiny, tensors named as in ONNX."""
    from xdream_ts import targets
    from xdream_ts.adapters.torch import TorchScorer

    def twin(spec):
        return TorchScorer(_Tiny(), spec.units, objective=spec.objective, length=L, channels=1,
                           layer_names={"feat": "flatten", "logits": "head", "block/out": "relu"}, threads=1)

    monkeypatch.setattr(targets, "differentiable_twin", twin)


def test_dream_plausible_on_a_tiny_model_rescored_independently(tmp_path, capsys, tiny_twin):
    from xdream_ts.loop import load_run
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    out_dir = str(tmp_path / "d.zarr")
    code, out, err = _run(["run", "--model", str(model), "--target", "logits:0", "--data", str(data),
                           "--optimizer", "dream", "--plausible", "0.95", "--budget", "240", "--out", out_dir,
                           "--no-progress"], capsys)
    assert code == 0, err
    assert "torch twin" in err  # the one line saying where plausibility is measured
    r = load_run(out_dir)
    s = r.summary()
    p = s["plausibility"]
    assert p["layer"] == "feat" and p["feasible"] and r.config["optimizer"]["name"] == "dream"
    g, m = s["reported"]["generation"], s["reported"]["member"]
    series = r.series[g, m][None].astype(np.float32)

    # a separate ONNX Runtime session, features exposed; the covariance refitted with numpy
    logit, real_logits, d, threshold = _rescored(tmp_path, data, series)
    assert d[0] <= threshold + 1e-5
    assert d[0] == pytest.approx(p["best_distance"], rel=1e-3)  # twin (float32 torch) vs ONNX
    assert logit[0, 0] == pytest.approx(p["reported"]["activation"], rel=1e-3)
    assert logit[0, 0] > real_logits[:, 0].max()  # beats every real series, and stays plausible


def test_the_torch_distance_is_the_recorded_distance(tmp_path, tiny_twin):
    """The penalty's distance (torch, the fit's precision) equals the numpy distance the store records,
    and its gradient is zero inside the quantile (penalty method): the activation alone steers there."""
    from xdream_ts.plausible import plausible_scorer
    from xdream_ts.targets import TargetSpec, build
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    built = build(TargetSpec(model=str(model), units=["logits:0"], data=str(data)), differentiable=True)
    sc = plausible_scorer(built, 0.95)
    X = np.random.default_rng(2).standard_normal((8, 1, L)).astype(np.float32) * 2
    x = torch.tensor(X, requires_grad=True)
    joint = sc.torch_forward(x)
    d = sc.torch_distance(joint[:, 1:]).detach().double().numpy()
    np.testing.assert_allclose(d, sc(X)[:, 1], rtol=1e-4)
    value = sc.torch_objective(joint)
    a = joint[:, 0]
    inside = d <= sc.threshold
    np.testing.assert_allclose(value.detach().numpy()[inside], a.detach().numpy()[inside], rtol=1e-6)
    assert (value.detach().numpy()[~inside] < a.detach().numpy()[~inside]).all()


def test_a_simulated_neuron_measured_in_the_shipped_model(tmp_path):
    """--plausibility-model: a real simulated neuron, its plausibility in the shipped model's gap layer on
    the same series, fitted on the shipped sample (no data needed); an independent refit agrees."""
    from xdream_ts.analysis import ActivationSpace
    from xdream_ts.loop import run
    from xdream_ts.reference import reference_model_path, sample_series
    from xdream_ts.targets import TargetSpec
    ref = str(reference_model_path())
    r = run("default", TargetSpec(kind="simulated", length=500), "cmaes", budget=120, progress=False,
            plausible=0.99, plausibility_model=ref, store=tmp_path / "s.zarr")
    assert r.config["scorer"].get("plausibility_model") == ref
    p = r.summary()["plausibility"]
    assert p["layer"] == "gap" and "reference model reference_resnet.onnx" in p["space"]
    g, m = r.reported_index
    space = ActivationSpace(ref, "gap", sample_series()[0])  # refitted on its own
    assert space.distance(r.series[g, m][None])[0] == pytest.approx(p["best_distance"], rel=1e-4)
    assert p["n_feasible"] > 0 and p["feasible"] and p["best_distance"] <= p["threshold"]


@pytest.mark.parametrize("kw, fragment", [
    ({"plausibility_model": "no/such.onnx"}, "no such file"),
    ({"plausibility_model": "SHIPPED", "plausibility_layer": "no/such"}, "no targetable tensor"),
    ({"plausibility_model": "SHIPPED", "length": 64}, "length"),
])
def test_reference_model_refusals_in_the_api(tmp_path, kw, fragment):
    from xdream_ts.errors import UserError
    from xdream_ts.loop import run
    from xdream_ts.reference import reference_model_path
    from xdream_ts.targets import TargetSpec
    kw = {k: (str(reference_model_path()) if v == "SHIPPED" else v) for k, v in kw.items()}
    length = kw.pop("length", 500)
    with pytest.raises(UserError, match=fragment) as info:
        run("basis:8", TargetSpec(kind="simulated", length=length), "random", budget=20, progress=False,
            plausible=0.99, **kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("extra, fragment", [
    (["--plausibility-model", "no/such.onnx"], "no such file"),
    (["--plausibility-model", "SHIPPED", "--plausibility-layer", "no/such"], "no targetable tensor"),
    (["--plausibility-model", "SHIPPED", "--optimizer", "dream"], "not supported"),
])
def test_reference_model_refusals_exit_2_in_one_line(tmp_path, capsys, extra, fragment):
    from xdream_ts.reference import reference_model_path
    extra = [str(reference_model_path()) if e == "SHIPPED" else e for e in extra]
    code, _, err = _run(["run", "--decoder", "basis:8", "--plausible", "--budget", "20",
                         "--out", str(tmp_path / "r.zarr"), "--no-progress", *extra], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def test_refuse_without_layers_names_the_reference_model():
    from xdream_ts.errors import UserError
    from xdream_ts.plausible import check_request
    from xdream_ts.targets import TargetSpec
    with pytest.raises(UserError, match="--plausibility-model PATH"):
        check_request(TargetSpec(kind="simulated", length=L), 0.99)
    assert check_request(TargetSpec(kind="simulated", length=L), 0.99, plausibility_model="x.onnx") == 0.99
