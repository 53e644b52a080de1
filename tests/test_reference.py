"""The shipped reference model (ResNet on FordA): architecture, ONNX file, assets, consistency."""
import subprocess
import sys

import numpy as np
import pytest

from xdream_ts import reference as ref
from xdream_ts.errors import UserError

ASSETS = (ref.ONNX_FILE, ref.STATE_DICT_FILE, ref.ACTIVATIONS_FILE, ref.SAMPLE_FILE, ref.PROVENANCE_FILE)


def _missing_assets():
    missing = []
    for name in ASSETS:
        try:
            ref._asset(name)
        except UserError:
            missing.append(name)
    return missing


needs_assets = pytest.mark.skipif(
    bool(_missing_assets()),
    reason=f"reference assets {_missing_assets()} not built yet: run experiments/train_reference.py")


@pytest.fixture(scope="module")
def session():
    import onnxruntime as ort
    return ort.InferenceSession(str(ref.reference_model_path()), providers=["CPUExecutionProvider"])


def _session_with(names):
    import onnx
    import onnxruntime as ort
    m = onnx.load(str(ref.reference_model_path()))
    vi = {v.name: v for v in m.graph.value_info}
    m.graph.output.extend(vi[n] for n in names if n != ref.OUTPUT_NAME)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def test_import_is_light():
    code = ("import sys, xdream_ts.reference; "
            "bad = [m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_architecture():
    import torch
    model = ref.build_resnet().eval()
    names = dict(model.named_modules())
    for b, c in zip((1, 2, 3), ref.FILTERS):
        for part in ("conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3",
                     "shortcut_conv", "shortcut_bn", "relu_out"):
            assert f"block{b}.{part}" in names
        assert names[f"block{b}.conv1"].kernel_size == (8,) and names[f"block{b}.conv1"].out_channels == c
        assert names[f"block{b}.conv2"].kernel_size == (5,) and names[f"block{b}.conv3"].kernel_size == (3,)
    assert "gap" in names and names["fc"].out_features == 2
    assert set(ref.TORCH_MODULE_OF_TENSOR.values()) <= set(names)
    n_params = sum(p.numel() for p in model.parameters())
    assert 450_000 < n_params < 550_000
    with torch.no_grad():
        assert model(torch.zeros(3, 1, 500)).shape == (3, 2)
        assert model(torch.zeros(3, 500)).shape == (3, 2)  # (batch, length) accepted too


def test_missing_asset_is_a_user_error():
    with pytest.raises(UserError, match="train_reference.py"):
        ref._asset("no_such_asset.onnx")
    with pytest.raises(AttributeError):
        ref.NO_SUCH_NAME


@needs_assets
def test_onnx_io(session):
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "series" and out.name == "logits"
    assert inp.shape[1:] == [1, 500] and isinstance(inp.shape[0], str)  # dynamic batch
    assert out.shape[1:] == [2] and isinstance(out.shape[0], str)
    for n in (1, 5):
        assert session.run(None, {"series": np.zeros((n, 1, 500), np.float32)})[0].shape == (n, 2)


@needs_assets
def test_named_tensors_exist_with_documented_shapes():
    import onnx
    m = onnx.load(str(ref.reference_model_path()))
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    produced = {o for node in m.graph.node for o in node.output}
    for name, (shape, _) in ref.ONNX_TENSORS.items():
        assert name in shapes, name
        assert [d if isinstance(d, int) else "batch" for d in shapes[name]] == list(shape), name
        assert name == "series" or name in produced


@needs_assets
def test_sample_is_classified(session):
    X, y = ref.sample_series()
    assert X.shape == (300, 500) and X.dtype == np.float32 and set(np.unique(y)) == {0, 1}
    logits = session.run(None, {"series": X[:, None, :]})[0]
    assert (logits.argmax(1) == y).mean() >= 0.9


@needs_assets
def test_torch_matches_onnx(session):
    import torch
    model = ref.load_reference_torch()
    X, _ = ref.sample_series()
    X = X[:6]
    with torch.no_grad():
        want = model(torch.from_numpy(X).unsqueeze(1)).numpy()
    got = session.run(None, {"series": X[:, None, :]})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


@needs_assets
def test_reference_activations_and_units():
    acts = ref.reference_activations()
    for t in ref.TARGET_TENSORS:
        shape, _ = ref.ONNX_TENSORS[t]
        positions = ("center", "mean") if len(shape) == 3 else ("none",)
        for pos in positions:
            a = acts[f"{t}|{pos}"]
            assert a.shape == (shape[1],) and a.dtype == np.float32 and np.all(np.isfinite(a))
            assert acts[f"{t}|{pos}|argmax"].max() < 4921
    assert list(ref.REFERENCE_UNITS) == ref.select_reference_units(acts)  # stored == documented rule
    assert len(ref.REFERENCE_UNITS) == 32
    assert [f"{u.tensor}|{u.channel}|{u.position}" for u in ref.REFERENCE_UNITS] == \
        [str(s) for s in acts["reference_units"]]
    assert len({u.tensor for u in ref.REFERENCE_UNITS}) == 4
    assert all(ref.reference_max(u) > 0 for u in ref.REFERENCE_UNITS if u.tensor != "logits")


@needs_assets
def test_best_real_series_reach_the_reference_max():
    units = ref.REFERENCE_UNITS
    X = np.stack([ref.best_real_series(u) for u in units])
    sess = _session_with(sorted({u.tensor for u in units}))
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"series": X[:, None, :]})))
    for i, u in enumerate(units):
        a = outs[u.tensor][i, u.channel]
        value = a[ref.CENTER] if u.position == "center" else a
        assert value == pytest.approx(ref.reference_max(u), abs=1e-4), u
    with pytest.raises(UserError, match="REFERENCE_UNITS"):
        ref.best_real_series(("block1/relu1", 0, "center"))


@needs_assets
def test_provenance():
    prov = ref.reference_provenance()
    for key in ("dataset", "seed", "epochs", "val_accuracy", "test_accuracy", "date", "command", "versions"):
        assert key in prov
    assert prov["versions"]["torch"]
