"""Plausibility: Mahalanobis known answers, the automatic estimator choice, real series closer than
noise, ONNX and torch activations agree, the PCA plot, and the summary of a run."""
from __future__ import annotations

import numpy as np
import pytest

from xdream_ts.analysis import (
    ActivationSpace, activations, fit_reference, format_plausibility, mahalanobis, percentile, plausibility_summary,
    plot_pca,
)
from xdream_ts.errors import UserError

L = 64


def whitened(n=500, d=4, seed=0):
    """A sample whose mean is exactly 0 and (biased) covariance exactly the identity."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    X -= X.mean(axis=0)
    C = np.cov(X, rowvar=False, bias=True)
    return X @ np.linalg.inv(np.linalg.cholesky(C)).T


def test_identity_covariance_gives_euclidean_distances():
    X = whitened()
    fit = fit_reference(X)
    assert fit.method == "empirical"  # 500 samples for 4 dimensions
    pts = np.array([[3.0, 0, 0, 0], [1.0, -2.0, 2.0, 0.5], [0, 0, 0, 0]])
    np.testing.assert_allclose(mahalanobis(fit, pts), np.linalg.norm(pts, axis=1), atol=1e-9)
    # not squared: scikit-learn's own method returns the square
    np.testing.assert_allclose(mahalanobis(fit, pts) ** 2, fit.estimator.mahalanobis(pts), atol=1e-9)


def test_a_known_covariance_scales_the_axes():
    X = whitened() * np.array([2.0, 1.0, 0.5, 1.0])
    fit = fit_reference(X, method="empirical")
    np.testing.assert_allclose(mahalanobis(fit, [[2.0, 0, 0, 0], [0, 0, 1.0, 0]]), [1.0, 2.0], atol=1e-9)


def test_automatic_choice_shrinks_when_samples_are_few_or_dimensions_dead():
    rng = np.random.default_rng(0)
    few = fit_reference(rng.standard_normal((30, 8)))
    assert few.method == "ledoitwolf" and "per dimension" in few.reason
    dead = rng.standard_normal((2000, 5))
    dead[:, 2] = 0.0  # a dead ReLU unit: no variance in real data
    fit = fit_reference(dead)
    assert fit.method == "ledoitwolf" and "singular" in fit.reason
    # activating the dead unit is far from the data (the plain pseudo-inverse would ignore it)
    probe = np.zeros((1, 5))
    probe[0, 2] = 1.0
    assert mahalanobis(fit, probe)[0] > 3 * np.median(fit.distances)


def test_percentile_among_the_reference_series():
    fit = fit_reference(whitened(400, 3))
    p = percentile(fit, [0.0, np.median(fit.distances), 1e6])
    assert p[0] == 0.0 and p[1] == pytest.approx(50.0, abs=0.5) and p[2] == 100.0
    assert percentile(fit, fit.distances).max() == 100.0  # leave-in: the farthest real series is the 100th


@pytest.mark.parametrize("bad, fragment", [(np.zeros((1, 3)), "too few"), (np.zeros(5), "(n, d)"),
                                            (np.full((5, 2), np.nan), "NaN")])
def test_bad_reference_is_one_line(bad, fragment):
    with pytest.raises(UserError) as e:
        fit_reference(bad)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="same layer"):
        mahalanobis(fit_reference(whitened()), np.zeros((1, 7)))


# ---------------------------------------------------------------------------- with a model
torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

torch.set_num_threads(1)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 7, padding=3), nn.ReLU(), nn.Conv1d(8, 6, 5, padding=2), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 2)).eval()


def real_like(n, seed=0):
    """Smooth series from one family (a few sines and a trend, mild noise), z-normalised like UCR data."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, L)
    x = (np.sin(2 * np.pi * (rng.uniform(1, 3, (n, 1)) * t + rng.uniform(0, 1, (n, 1))))
         + rng.uniform(-1, 1, (n, 1)) * t + 0.05 * rng.standard_normal((n, L)))
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    model = tiny_net()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(model, (torch.randn(2, 1, L),), str(path), dynamo=False, input_names=["series"],
                      output_names=["out"], dynamic_axes={"series": {0: "batch"}, "out": {0: "batch"}},
                      opset_version=17)
    return model, path


def test_real_series_are_closer_than_noise(exported):
    model, _ = exported
    space = ActivationSpace(model, "2", real_like(300))  # conv2 output, mean over time: 6 dimensions
    assert space.method == "empirical"
    real = space.distance(real_like(50, seed=1))  # new series of the same family
    rng = np.random.default_rng(2)
    noise = rng.standard_normal((50, L)).astype(np.float32)
    noise = (noise - noise.mean(1, keepdims=True)) / noise.std(1, keepdims=True)
    d_noise = space.distance(noise)
    assert np.median(d_noise) > 3 * np.median(real)
    assert np.median(space.percentile(real)) < 90 and np.all(space.percentile(d_noise) == 100)


def test_onnx_and_torch_activations_agree(exported, tmp_path):
    from xdream_ts.adapters.torch import TorchScorer, layer_names_from_onnx

    model, path = exported
    names = layer_names_from_onnx(path)
    relu2 = next(t for t, m in names.items() if m == "3")
    x = real_like(5)
    a_onnx = activations(path, relu2, x)
    a_torch = activations(TorchScorer(model, f"{relu2}:0", layer_names=names), relu2, x)
    a_module = activations(model, "3", x)
    assert a_onnx.shape == (5, 6)
    np.testing.assert_allclose(a_onnx, a_torch, atol=1e-5)
    np.testing.assert_allclose(a_module, a_torch, atol=1e-6)
    # the mean over time, by hand
    with torch.no_grad():
        h = model[:4](torch.tensor(x)[:, None]).mean(-1).numpy()
    np.testing.assert_allclose(a_module, h, atol=1e-5)
    with pytest.raises(UserError, match="no targetable tensor"):
        activations(path, "nope", x)


def test_pca_plot_is_a_png(tmp_path):
    X = whitened(100, 5)
    p = plot_pca(X, X[:3] * 4, tmp_path / "sub" / "pca.png", labels=["a", "a", "b"],
                 reference_labels=np.arange(100) % 2)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_plausibility_summary_of_a_run(exported, tmp_path):
    from xdream_ts import run
    from xdream_ts.adapters.onnx import OnnxScorer
    from xdream_ts.decoders.basis import BasisDecoder

    _, path = exported
    r = run(BasisDecoder(L, n_basis=8), OnnxScorer(path, "out:0"), "random", budget=40, progress=False,
            store=tmp_path / "r.zarr")
    with pytest.raises(UserError, match="real series"):
        plausibility_summary(r)  # not the shipped model: reference data must be given
    p = plausibility_summary(tmp_path / "r.zarr", reference_series=real_like(200), top=3)
    layer = p["layer"]  # the penultimate (batch, features) tensor: the flattened pooling
    assert layer != "out" and p["n_reference"] == 200 and len(p["top"]) == 3
    assert p["top"][0]["distance"] == pytest.approx(p["best_distance"])
    assert p["top"][0]["objective"] >= p["top"][1]["objective"]
    assert 0 <= p["best_percentile"] <= 100
    assert "Mahalanobis" in format_plausibility(p)
