"""The MLServer runtime: its numpy cores here, then a real MLServer (own venv) searched through RemoteScorer.

The integration test builds .venv-mlserver on first use (tests/mlserver_env.py; minutes) and skips only
when the package index cannot be reached.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import xdream_ts
from xdream_ts.adapters import mlserver_runtime as rt
from xdream_ts.adapters.onnx import OnnxScorer, Target
from xdream_ts.adapters.remote import RemoteScorer
from xdream_ts.adapters.simulated import SimulatedNeuron
from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.errors import UserError

import mlserver_env

L = 64


def tiny_model(path, length=L):
    """Conv -> ReLU -> Conv (block2/conv) -> ReLU (block2/out) -> mean over time -> Gemm (logits)."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in [
        ("w1", rng.standard_normal((4, 1, 5)) * 0.5), ("b1", rng.standard_normal(4) * 0.1),
        ("w2", rng.standard_normal((3, 4, 3)) * 0.5), ("b2", rng.standard_normal(3) * 0.1),
        ("w3", rng.standard_normal((3, 2))), ("b3", rng.standard_normal(2) * 0.1)]]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["block1/conv"], pads=[2, 2]),
        helper.make_node("Relu", ["block1/conv"], ["block1/out"]),
        helper.make_node("Conv", ["block1/out", "w2", "b2"], ["block2/conv"], pads=[1, 1]),
        helper.make_node("Relu", ["block2/conv"], ["block2/out"]),
        helper.make_node("ReduceMean", ["block2/out"], ["gap3"], axes=[2], keepdims=0),
        helper.make_node("Gemm", ["gap3", "w3", "b3"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, length])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _series(n, seed=0):
    return BasisDecoder(L, n_basis=8)(np.random.default_rng(seed).standard_normal((n, 8)))


# ---------------------------------------------------------------------------------------------------
# The runtime's cores, without MLServer
# ---------------------------------------------------------------------------------------------------
def test_simulated_target_is_xdream_ts_simulated_neuron():
    for channels in (None, 2):
        ours = SimulatedNeuron(length=L, channels=channels, seed=5, gain=3.0)
        theirs = rt.SimulatedTarget(length=L, channels=channels, seed=5, gain=3.0)
        x = np.random.default_rng(1).standard_normal((6, *ours.weights.shape)).astype(np.float32)
        np.testing.assert_array_equal(theirs(x)[:, 0], ours(x))


@pytest.mark.parametrize("tensor,position", [("block2/conv", "center"), ("block1/out", "mean"),
                                             ("block2/conv", "max"), ("block2/conv", 5), ("logits", "center")])
def test_onnx_target_matches_onnx_scorer_on_hidden_tensors(tmp_path, tensor, position):
    path = tiny_model(tmp_path / "tiny.onnx")
    x = _series(9)
    target = rt.make_target({"kind": "onnx", "tensor": tensor, "position": position}, str(path))
    assert target.input_shape == [-1, L]
    out = target(x)
    for unit in range(out.shape[1]):
        local = OnnxScorer(path, Target(tensor, unit, position), providers="cpu")(x)
        np.testing.assert_allclose(out[:, unit], local, rtol=1e-6, atol=1e-6)


def test_runtime_configuration_errors_are_clear(tmp_path):
    path = tiny_model(tmp_path / "tiny.onnx")
    with pytest.raises(rt.MLServerError, match="no tensor 'block9/out'"):
        rt.make_target({"tensor": "block9/out"}, str(path))
    with pytest.raises(rt.MLServerError, match="unknown parameters"):
        rt.make_target({"kind": "simulated", "lenght": 10})
    with pytest.raises(rt.MLServerError, match="kind"):
        rt.make_target({"kind": "torch"})


# ---------------------------------------------------------------------------------------------------
# A real MLServer
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        venv = mlserver_env.ensure_mlserver()
    except mlserver_env.IndexUnreachable as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("models")
    model = tiny_model(tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    mlserver_env.add_model(root, "tiny", {"kind": "onnx", "tensor": "block2/conv", "position": "center"}, model)
    mlserver_env.add_model(root, "neuron", {"kind": "simulated", "length": L, "seed": 4, "gain": 5.0})
    with mlserver_env.mlserver(venv, root, ["tiny", "neuron"]) as url:
        yield url, model


def test_search_through_mlserver_matches_the_local_search(server, tmp_path):
    url, model = server
    kwargs = dict(budget=60, seed=0, progress=False)
    local = xdream_ts.run(BasisDecoder(L, n_basis=8), OnnxScorer(model, Target("block2/conv", 1, "center"), providers="cpu"),
                          "genetic", **kwargs)
    remote = RemoteScorer(url, model="tiny", unit=1, max_batch=16)
    assert remote.length == L  # from the model's metadata, as the runtime declared it
    r = xdream_ts.run(BasisDecoder(L, n_basis=8), remote, "genetic", store=tmp_path / "r.zarr", **kwargs)
    assert r.generations == 3 and remote.missing == 0 and remote.retries == 0
    np.testing.assert_allclose(r.objective, local.objective, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.codes, local.codes, rtol=1e-5, atol=1e-5)  # the same search, step by step
    assert "remote" == xdream_ts.load_run(tmp_path / "r.zarr").config["scorer"]["name"]


def test_simulated_neuron_served_by_mlserver(server):
    url, _ = server
    x = _series(10)
    with RemoteScorer(url, model="neuron", max_batch=4) as sc:
        np.testing.assert_allclose(sc(x), SimulatedNeuron(length=L, seed=4, gain=5.0)(x), rtol=1e-12, atol=1e-12)
        assert sc.requests == 3


def test_mlserver_refusals_are_one_line_user_errors(server):
    url, _ = server
    # the declared input shape is read first, so a wrong length is refused before any request is sent
    with RemoteScorer(url, model="tiny", **{"length": 50}) as sc:
        with pytest.raises(UserError, match="fixed length of 64") as info:
            sc(np.zeros((2, 50), dtype=np.float32))  # the model takes 64 steps
    assert "\n" not in str(info.value) and sc.retries == 0 and sc.requests == 0
    with pytest.raises(UserError, match="does not serve a ready model 'nope'"):
        RemoteScorer(url, model="nope").check()


def test_an_unreachable_index_is_reported_as_such(tmp_path, monkeypatch):
    # The one condition under which the integration test may skip: check it is recognised, quickly.
    dead = "http://127.0.0.1:9/simple"
    for var, value in {"PIP_INDEX_URL": dead, "PIP_EXTRA_INDEX_URL": dead, "PIP_FIND_LINKS": str(tmp_path),
                       "PIP_RETRIES": "0", "PIP_TIMEOUT": "5"}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(mlserver_env.IndexUnreachable, match="package index unreachable"):
        mlserver_env.ensure_mlserver(tmp_path / "venv", log=lambda *_: None)
    assert not (tmp_path / "venv").exists()  # nothing half-built left behind
