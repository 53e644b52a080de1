"""scikit-learn classifiers exported by skl2onnx with its defaults (issue 18 item 3).

Such a model's outputs are an int64 ``label`` first and the class probabilities as a ZipMap (a list of
{class: p} maps); a linear model's softmax is fused into its LinearClassifier node. Without --layer the
target must be the logits (or, for a tree ensemble that has none, the probabilities), named once on
stderr, and ``inspect`` marks it. Every model here is trained and exported by the test itself.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from xdream_ts.adapters.onnx import OnnxScorer, Target, format_inspection, inspect_model  # noqa: E402
from xdream_ts.cli import main  # noqa: E402
from xdream_ts.errors import UserError  # noqa: E402
from xdream_ts.loop import load_run  # noqa: E402

L = 64  # features = series length


def _data(classes=3, n=150, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, L)).astype(np.float32)
    y = X[:, :classes].argmax(1) if classes > 2 else (X[:, 0] > 0).astype(int)
    return X, y


def _export(model, path, classes=3, seed=0):
    import onnx
    X, y = _data(classes, seed=seed)
    model.fit(X, y)
    onnx.save(skl2onnx.to_onnx(model, X[:1]), str(path))  # skl2onnx's defaults: label + ZipMap
    return model, X


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("skl")
    return {
        "lr": _export(LogisticRegression(max_iter=500), d / "lr.onnx") + (d / "lr.onnx",),
        "rf": _export(RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0), d / "rf.onnx")
        + (d / "rf.onnx",),
        "mlp": _export(MLPClassifier(hidden_layer_sizes=(8,), max_iter=400, random_state=0), d / "mlp.onnx")
        + (d / "mlp.onnx",),
        "blr": _export(LogisticRegression(), d / "blr.onnx", classes=2) + (d / "blr.onnx",),
        "gb": _export(GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0), d / "gb.onnx",
                      classes=2) + (d / "gb.onnx",),
    }


# (default tensor, what the one line says, how to get the same numbers from scikit-learn)
EXPECTED = {
    "lr": ("probability_tensor_logits", "the logits before Softmax", lambda m, X: m.decision_function(X)),
    "mlp": ("add_result1", "the logits before Softmax", None),
    "rf": ("probabilities", "the class probabilities", lambda m, X: m.predict_proba(X)),
    # binary: the classifier's logits are (-s, s), s = decision_function
    "blr": ("probabilities_logits", "the logits before Sigmoid",
            lambda m, X: np.stack([-m.decision_function(X), m.decision_function(X)], 1)),
    "gb": ("proba_output_logits", "the logits before Sigmoid",
           lambda m, X: np.stack([-m.decision_function(X), m.decision_function(X)], 1)),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_default_target_is_the_logits_and_said_once(exported, kind, capsys):
    model, X, path = exported[kind]
    tensor, words, reference = EXPECTED[kind]
    capsys.readouterr()
    s = OnnxScorer(path, [Target(None, 0), Target(None, 1)])
    OnnxScorer(path, Target(None, 1))  # a second build (the CLI's clean twin) says nothing more
    err = capsys.readouterr().err.strip().splitlines()
    assert s.target_names == [f"{tensor}:0@center", f"{tensor}:1@center"]
    assert len(err) == 1 and f"default target {tensor!r}, {words}" in err[0] and "--layer" in err[0], err
    if reference is not None:
        np.testing.assert_allclose(s(X[:8]), reference(model, X[:8])[:, :2], rtol=1e-4, atol=1e-4)
    info = inspect_model(path)
    json.dumps(info)
    assert info["default_target"]["name"] == tensor and words in info["default_target"]["why"]
    assert [t["name"] for t in info["tensors"] if t["default"]] == [tensor]
    text = format_inspection(info)
    assert f"{tensor}  [default]" in text and f"default {tensor}  (the target when none is named: {words}" in text


def test_explicit_probabilities_refused_with_the_logits_named(exported):
    _, _, path = exported["lr"]
    for name in ("probabilities", "probability_tensor", "output_probability"):
        with pytest.raises(UserError, match="target the logits instead, its input 'probability_tensor_logits'") as e:
            OnnxScorer(path, Target(name, 0))
        assert "\n" not in str(e.value)
    _, _, path = exported["rf"]
    with pytest.raises(UserError, match="ZipMap output .* target its input 'probabilities'"):
        OnnxScorer(path, Target("output_probability", 0))


def test_exposed_logits_keep_the_model_outputs(exported):
    # splitting the fused post-transform must not change what the model computes
    import onnx
    import onnxruntime as ort

    from xdream_ts.adapters.onnx.graph import expose_logits, load_model

    for kind in ("lr", "blr", "gb"):
        model, X, path = exported[kind]
        proto, _, _ = load_model(path)
        assert expose_logits(proto) == [EXPECTED[kind][0]]
        before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        after = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        (lab0, p0), (lab1, p1) = before.run(None, {"X": X[:6]}), after.run(None, {"X": X[:6]})
        np.testing.assert_array_equal(lab0, lab1)
        for a, b in zip(p0, p1):  # lists of {class: probability}
            assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a)
        onnx.checker.check_model(proto)


CLI_MODELS = {"lr": lambda: LogisticRegression(max_iter=500),
              "rf": lambda: RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0),
              "mlp": lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=400, random_state=0)}


@pytest.mark.parametrize("kind", list(CLI_MODELS))
def test_cli_run_without_layer(kind, tmp_path, capsys):
    path = tmp_path / f"{kind}.onnx"
    _export(CLI_MODELS[kind](), path, seed=1)  # weights of its own: the one line is said once per model
    out = tmp_path / f"{kind}.zarr"
    capsys.readouterr()
    code = main(["run", "--model", str(path), "--budget", "40", "--decoder", "basis", "--length", str(L),
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    tensor = EXPECTED[kind][0]
    assert sum("default target" in line for line in err.splitlines()) == 1, err
    cfg = load_run(out).config["scorer"]
    assert cfg["targets"][0]["tensor"] == tensor and cfg["target_names"] == [f"{tensor}:0@center"]
    code = main(["inspect", str(path), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0 and info["default_target"]["name"] == tensor
