"""Torch scorer: equals the ONNX scorer (tiny model exported here; the shipped model when built),
differentiable, stops at the target layer, one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from xdream_ts.adapters.onnx import OnnxScorer, Target  # noqa: E402
from xdream_ts.adapters.torch import TorchScorer, layer_names_from_onnx  # noqa: E402
from xdream_ts.errors import UserError  # noqa: E402

L = 64
ATOL = 1e-4
torch.set_num_threads(1)  # tiny batches: one thread is fastest and leaves the shared cores alone


class Tiny(nn.Module):
    """(batch, 1, L) -> conv -> relu -> conv (stride 2) -> relu -> mean -> 3 logits."""

    def __init__(self):
        super().__init__()
        self.c1, self.r1 = nn.Conv1d(1, 4, 5, padding=2), nn.ReLU()
        self.c2, self.r2 = nn.Conv1d(4, 6, 3, stride=2, padding=1), nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.r2(self.c2(self.r1(self.c1(x)))).mean(-1))


def tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny().eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(model, (torch.randn(2, 1, L),), str(path), dynamo=False, input_names=["series"],
                      output_names=["out"], dynamic_axes={"series": {0: "batch"}, "out": {0: "batch"}},
                      opset_version=17)
    return model, path


def _series(n=6, seed=1):
    return np.random.default_rng(seed).standard_normal((n, L)).astype(np.float32)


def test_matches_onnx_scorer_on_a_tiny_exported_model(exported):
    model, path = exported
    names = layer_names_from_onnx(path)
    relu1 = next(t for t, m in names.items() if m == "r1")
    relu2 = next(t for t, m in names.items() if m == "r2")
    assert names["out"] == "fc"
    targets = [Target(relu1, 2, "center"), Target(relu1, 1, 10), Target(relu2, 5, "mean"), Target(relu2, 0, "max"),
               Target("out", 2)]
    ts = TorchScorer(model, targets, layer_names=names)
    os_ = OnnxScorer(path, targets)
    x = _series()
    got, want = ts(x), os_(x)
    assert got.shape == want.shape == (6, 5)
    np.testing.assert_allclose(got, want, atol=ATOL)
    assert ts.target_names == os_.target_names
    # the objective and a single target's (n,) shape agree too
    np.testing.assert_allclose(ts.objective(got), os_.objective(want), atol=5 * ATOL)
    one = TorchScorer(model, Target(relu2, 5, "mean"), layer_names=names)
    assert one(x).shape == (6,)


def test_torch_forward_is_differentiable_and_equals_call():
    model = tiny()
    ts = TorchScorer(model, ["c2:3@center", "fc:0"], length=L, channels=1)
    x = torch.tensor(_series(3), requires_grad=True)
    out = ts.torch_forward(x)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out.detach().numpy(), ts(x.detach().numpy()), atol=1e-6)
    (g,) = torch.autograd.grad(ts.torch_objective(out).sum(), x)
    assert g.shape == x.shape and float(g.abs().sum()) > 0
    # the gradient is the true one: a finite difference along it agrees
    d = g / g.norm()
    eps = 1e-2
    with torch.no_grad():
        up = ts.torch_objective(ts.torch_forward(x + eps * d)).sum()
        down = ts.torch_objective(ts.torch_forward(x - eps * d)).sum()
    assert float((up - down) / (2 * eps)) == pytest.approx(float(g.norm()), rel=0.05)


def test_forward_stops_at_the_target_layer():
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("layers after the target must not run")

    net = nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), Boom())
    ts = TorchScorer(net, "1:2@mean")
    assert ts(_series(2)).shape == (2,)
    with pytest.raises(AssertionError):
        TorchScorer(net, "2:0")(_series(2))  # the Boom layer itself is a target: it runs


def test_contrast_and_callable_objectives_work_on_tensors():
    model = tiny()
    ts = TorchScorer(model, ["fc:0", "fc:1", "fc:2"], objective="contrast")
    s = ts(_series(4))
    np.testing.assert_allclose(ts.objective(s), s[:, 0] - s[:, 1:].mean(1))
    t = ts.torch_objective(torch.tensor(s))
    np.testing.assert_allclose(t.numpy(), ts.objective(s), atol=1e-6)
    fn = TorchScorer(model, ["fc:0", "fc:1"], objective=lambda a: a[:, 0] - 2 * a[:, 1])
    s2 = fn(_series(4))
    np.testing.assert_allclose(fn.torch_objective(torch.tensor(s2)).numpy(), s2[:, 0] - 2 * s2[:, 1], atol=1e-6)


def test_describe_and_batching():
    model = tiny()
    ts = TorchScorer(model, "r1:0@center", batch_size=2)
    x = _series(5)
    np.testing.assert_allclose(ts(x), TorchScorer(model, "r1:0@center")(x), atol=1e-6)
    d = ts.describe()
    assert d["kind"] == "torch" and d["targets"][0]["module"] == "r1" and d["length"] == L and d["channels"] == 1
    assert len(d["state_sha256"]) == 64 and ts.differentiable


@pytest.mark.parametrize("kwargs, fragment", [
    ({"targets": "r9:0"}, "did you mean"),
    ({"targets": "r1:40"}, "out of range"),
    ({"targets": "fc:0@mean"}, "no time axis"),
    ({"targets": "r1:0@99"}, "out of range"),
    ({"targets": "r1:0", "objective": "contrast"}, "at least two targets"),
    ({"targets": "r1:0", "batch_size": 0}, "batch_size"),
])
def test_errors_are_one_line(kwargs, fragment):
    with pytest.raises(UserError) as e:
        TorchScorer(tiny(), **kwargs)(_series(2))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_softmax_layer_and_wrong_length_are_refused():
    net = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Flatten(), nn.Softmax(dim=-1))
    with pytest.raises(UserError, match="logits, never softmax"):
        TorchScorer(net, "2:0")
    ts = TorchScorer(tiny(), "r1:0", length=L, channels=1)
    with pytest.raises(UserError, match="length 64"):
        ts(np.zeros((2, 50), np.float32))
    with pytest.raises(UserError, match="NaN"):
        ts(np.full((2, L), np.nan, np.float32))


def test_from_onnx_needs_onnx2torch_or_converts(exported):
    _, path = exported
    try:
        import onnx2torch  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="onnx2torch"):
            TorchScorer.from_onnx(path, "out:0")
        return
    ts = TorchScorer.from_onnx(path, "out:1", length=L)  # pragma: no cover - only where onnx2torch is installed
    np.testing.assert_allclose(ts(_series()), OnnxScorer(path, "out:1")(_series()), atol=ATOL)


def test_shipped_reference_model_matches_its_onnx():
    from xdream_ts import reference as ref

    try:
        onnx_path = ref.reference_model_path()
        ref.reference_state_dict_path()
    except UserError:
        pytest.skip("the shipped reference model is not built yet (experiments/train_reference.py writes it)")
    targets = [Target("block1/out", 3), Target("block2/out", 17, "mean"), Target("block3/relu2", 5, "max"),
               Target("gap", 7), Target("logits", 1)]
    X, _ = ref.sample_series()
    ts = TorchScorer.from_reference(targets, threads=1)
    np.testing.assert_allclose(ts(X[:8]), OnnxScorer(onnx_path, targets)(X[:8]), atol=ATOL)
    assert TorchScorer.from_reference(Target(None, 0)).target_names == ["logits:0@center"]
