"""The learned decoder `train-decoder` makes (issue 15, item 5): the auto PCA + a learned residual branch,
in the data's stimulus space, exported to ONNX. Tiny models, a few seconds each."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xdream_ts.cli import main  # noqa: E402
from xdream_ts.data import Dataset  # noqa: E402
from xdream_ts.decoders import make_decoder  # noqa: E402
from xdream_ts.decoders.auto import fit_pca  # noqa: E402
from xdream_ts.decoders.onnx_decoder import OnnxDecoder  # noqa: E402
from xdream_ts.decoders.pca import PCADecoder  # noqa: E402
from xdream_ts.loop import load_run  # noqa: E402
from xdream_ts.space import StimulusSpace  # noqa: E402
from xdream_ts.train_decoder import train_hybrid_decoder  # noqa: E402

from test_data_space import LOC, SCALE, RawUnitsNet  # noqa: E402  (the same raw-units sensor model)

C, L = 3, 37  # a length no conv stage divides: the branch pads and crops
TINY = dict(latent_dim=4, epochs=2, pool=128, batch_size=32, widths=(8, 8), progress=False)


def raw_series(n=80, seed=1):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, L)
    waves = np.sin(2 * np.pi * (rng.uniform(1, 4, (n, C, 1)) * t + rng.uniform(0, 1, (n, C, 1))))
    return LOC[None, :, None] + SCALE[None, :, None] * (waves + 0.3 * rng.standard_normal((n, C, L)))


def assert_close(a, b, tol):
    """Within ``tol`` of each channel's scale (the channels' units differ by 10^4)."""
    err = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / SCALE[None, :, None]
    assert err.max() < tol, err.max()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid")
    X = raw_series()
    np.save(d / "data.npy", X.astype(np.float32))
    info = train_hybrid_decoder(str(d / "data.npy"), d / "dec", **TINY)
    return d, X, info


def test_the_onnx_decoder_and_encoder_match_torch(trained):
    d, X, info = trained
    dec = OnnxDecoder(d / "dec")
    assert dec.name == "hybrid" and dec.channels == C and dec.length == L and dec.latent_dim == info["latent_dim"]
    assert info["onnx_max_abs_diff"] < 1e-3 * SCALE.max()
    model = dec.torch_module()
    codes = np.random.default_rng(0).standard_normal((16, dec.latent_dim)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(codes)).numpy()
        ref_codes = model.encode(torch.from_numpy(X[:8].astype(np.float32))).numpy()
    assert_close(dec(codes), ref, 1e-4)
    np.testing.assert_allclose(dec.encode(X[:8]), ref_codes, atol=1e-3)


def test_its_search_space_contains_the_auto_pca(trained):
    d, X, _ = trained
    dec = OnnxDecoder(d / "dec")
    dataset = Dataset.from_arrays(X.astype(np.float32))
    pca = fit_pca(dataset, StimulusSpace.fit(dataset))  # what `auto` fits on the same data
    assert dec.latent_dim == pca.latent_dim + 4
    codes = np.random.default_rng(2).standard_normal((16, dec.latent_dim))
    codes[:, pca.latent_dim:] = 0  # learned part 0: the PCA's series, exactly
    assert_close(dec(codes), pca(codes[:, :pca.latent_dim]), 1e-4)
    saved = PCADecoder.load(d / "dec" / "pca.npz")  # the linear branch, usable on its own
    assert_close(saved(codes[:, :pca.latent_dim]), pca(codes[:, :pca.latent_dim]), 1e-5)
    # the learned part does move the series, and the encoder reconstructs the data at least as well as PCA
    full = codes.copy()
    full[:, pca.latent_dim:] = 1.5
    assert np.abs(dec(full) - dec(codes)).max() > 0
    err_h = (np.abs(dec(dec.encode(X[:20])) - X[:20]) / SCALE[None, :, None]).mean()
    err_p = (np.abs(pca(pca.encode(X[:20])) - X[:20]) / SCALE[None, :, None]).mean()
    assert err_h <= 1.05 * err_p + 1e-4, (err_h, err_p)


def test_raw_unit_multichannel_stimuli_stay_in_the_data_range(trained):
    d, X, info = trained
    assert info["space"]["kind"] == "data"
    dec = OnnxDecoder(d / "dec")
    wild = 5 * np.random.default_rng(3).standard_normal((200, dec.latent_dim))  # far outside the prior
    out = dec(wild)
    lo, hi = X.min(axis=(0, 2)), X.max(axis=(0, 2))
    margin = 0.1 * (hi - lo)
    assert (out.min(axis=(0, 2)) >= lo - margin - 1e-5 * np.abs(lo)).all()
    assert (out.max(axis=(0, 2)) <= hi + margin + 1e-5 * np.abs(hi)).all()
    typical = dec(np.random.default_rng(4).standard_normal((200, dec.latent_dim)))
    assert (np.abs(typical.mean(axis=(0, 2)) - LOC) < SCALE).all()  # the data's level per channel, not 0


def test_a_rerun_reuses_the_folder_and_data_do_not_wrap_it_twice(trained):
    d, X, info = trained
    again = train_hybrid_decoder(str(d / "data.npy"), d / "dec", **TINY)
    assert again["reused"] and again["key"] == info["key"]
    dec = make_decoder(str(d / "dec"), length=L, channels=C, data=str(d / "data.npy"))
    assert isinstance(dec, OnnxDecoder) and dec.space == StimulusSpace.fit(Dataset.from_arrays(X.astype(np.float32)))
    codes = np.random.default_rng(5).standard_normal((4, dec.latent_dim))
    np.testing.assert_allclose(dec(codes), OnnxDecoder(d / "dec")(codes))
    changed = train_hybrid_decoder(str(d / "data.npy"), d / "dec2", **{**TINY, "seed": 1})
    assert not changed["reused"] and changed["key"] != info["key"]


def test_a_znormalised_univariate_decoder_gives_znormalised_series(tmp_path):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 30)
    X = np.sin(2 * np.pi * (rng.uniform(1, 3, (50, 1)) * t + rng.uniform(0, 1, (50, 1))))
    X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    info = train_hybrid_decoder(X, tmp_path / "z", **TINY)
    assert info["space"]["kind"] == "znorm" and info["channels"] is None
    dec = OnnxDecoder(tmp_path / "z")
    out = dec(rng.standard_normal((8, dec.latent_dim)))
    assert out.shape == (8, 30)
    np.testing.assert_allclose(out.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(1), 1, atol=1e-3)


def test_the_cli_trains_it_and_a_search_beats_the_best_real_series_in_raw_units(tmp_path, capsys):
    X = raw_series(120)[..., :36]
    np.save(tmp_path / "data.npy", X.astype(np.float32))
    model = tmp_path / "raw.onnx"
    torch.onnx.export(RawUnitsNet().eval(), torch.randn(2, C, 36), str(model), input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    code = main(["train-decoder", "--data", str(tmp_path / "data.npy"), "--out", str(tmp_path / "dec"),
                 "--latent-dim", "4", "--epochs", "2", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("saved") and "data space" in out
    code = main(["run", "--no-progress", "--model", str(model), "--layer", "logits", "--unit", "0",
                 "--decoder", str(tmp_path / "dec"), "--data", str(tmp_path / "data.npy"), "--budget", "300",
                 "--out", str(tmp_path / "r.zarr")])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = load_run(tmp_path / "r.zarr")
    shown = r.series[np.isfinite(r.series).all(axis=(2, 3))]
    lo, hi = X.min(axis=(0, 2)), X.max(axis=(0, 2))
    assert (shown.min(axis=(0, 2)) >= lo - 0.1 * (hi - lo) - 1e-4 * np.abs(lo)).all()
    assert (shown.max(axis=(0, 2)) <= hi + 0.1 * (hi - lo) + 1e-4 * np.abs(hi)).all()
    assert r.config["init_info"]["n"] == 10  # started from the encoded best real series
    assert json.loads(json.dumps(r.summary()))["relative_activation"] > 1.0


@pytest.mark.parametrize("content", ["1\t0.5\t0.7\n2\tnot-a-number\t0.1\n", ""])
def test_malformed_data_is_one_line_and_exit_code_2(tmp_path, capsys, content):
    bad = tmp_path / "bad_TRAIN.tsv"
    bad.write_text(content)
    code = main(["train-decoder", "--data", str(bad), "--out", str(tmp_path / "dec"), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("xdream-ts: "), err
    assert not (tmp_path / "dec").exists()
