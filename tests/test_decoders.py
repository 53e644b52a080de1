"""Decoders: identity, DCT basis, PCA, trained VAE through ONNX; training, encoding, the shipped decoder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.decoders.encode import encode, initial_codes
from xdream_ts.decoders.identity import IdentityDecoder
from xdream_ts.decoders.onnx_decoder import DEFAULT_DECODER_DIR, OnnxDecoder, load_default_decoder
from xdream_ts.decoders.pca import PCADecoder
from xdream_ts.errors import UserError
from xdream_ts.protocols import Decoder

GUNPOINT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucr" / "GunPoint"
TINY = dict(widths=(8, 16, 16, 16), batch_size=16, patience=50, progress=False)


def sines(n: int, length: int, channels: int | None = None, seed: int = 0) -> np.ndarray:
    """Noisy sines of random frequency and phase: a stand-in for real data."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    c = channels or 1
    f = rng.uniform(1, 4, (n, c, 1))
    ph = rng.uniform(0, 2 * np.pi, (n, c, 1))
    x = np.sin(2 * np.pi * f * t + ph) + 0.05 * rng.standard_normal((n, c, length))
    return (x[:, 0] if channels is None else x).astype(np.float32)


def training_series() -> np.ndarray:
    if GUNPOINT.is_dir():
        from xdream_ts.data import load_ucr

        return load_ucr(GUNPOINT).X_train
    return sines(60, 150)


def assert_znormalised(x: np.ndarray) -> None:
    np.testing.assert_allclose(x.mean(-1), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(-1), 1, atol=1e-3)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A small VAE trained on GunPoint (or sines) for a few epochs: enough to beat random codes."""
    from xdream_ts.train_decoder import train_decoder

    out = tmp_path_factory.mktemp("vae")
    info = train_decoder(training_series(), out, latent_dim=8, length=64, epochs=12, seed=0,
                         warmup_epochs=3, **TINY)
    return out, info


@pytest.fixture(scope="module")
def vae_mv_dir(tmp_path_factory):
    from xdream_ts.train_decoder import train_decoder

    out = tmp_path_factory.mktemp("vae_mv")
    train_decoder(sines(40, 32, channels=3), out, latent_dim=4, epochs=1, seed=1, **TINY)
    return out


def decoders(vae_dir, length):
    return {
        "identity": IdentityDecoder(length),
        "basis": BasisDecoder(length, 16),
        "pca": PCADecoder.fit(sines(80, 100), n_components=12, length=length),
        "vae": OnnxDecoder(vae_dir[0], length=length),
    }


# ------------------------------------------------------------------------------ decoder conventions

@pytest.mark.parametrize("length", [64, 37, 500])
def test_shapes_determinism_znorm_any_length(vae_dir, length):
    for name, dec in decoders(vae_dir, length).items():
        assert isinstance(dec, Decoder)
        codes = np.random.default_rng(0).standard_normal((5, dec.latent_dim))
        x = dec(codes)
        assert x.shape == (5, length) and x.dtype == np.float32, name
        np.testing.assert_array_equal(x, dec(codes))
        assert_znormalised(x)
        json.dumps(dec.describe())


def test_multivariate(vae_mv_dir):
    pca = PCADecoder.fit(sines(30, 40, channels=2), n_components=5, length=48)
    vae = OnnxDecoder(vae_mv_dir)
    vae_long = OnnxDecoder(vae_mv_dir, length=50)
    for dec, shape in [(IdentityDecoder(40, channels=2), (4, 2, 40)), (BasisDecoder(40, 8, channels=2), (4, 2, 40)),
                       (pca, (4, 2, 48)), (vae, (4, 3, 32)), (vae_long, (4, 3, 50))]:
        x = dec(np.random.default_rng(1).standard_normal((4, dec.latent_dim)))
        assert x.shape == shape
        assert_znormalised(x)
    assert vae.channels == 3 and vae.encode(sines(2, 70, channels=3)).shape == (2, 4)
    c = encode(pca, sines(3, 40, channels=2, seed=5))
    assert c.shape == (3, 5)


def test_bad_codes_are_user_errors(vae_dir):
    dec = OnnxDecoder(vae_dir[0])
    with pytest.raises(UserError, match="expected"):
        dec(np.zeros((2, 3)))
    with pytest.raises(UserError, match="NaN"):
        dec(np.full((1, dec.latent_dim), np.nan))
    with pytest.raises(UserError, match="not found"):
        OnnxDecoder(vae_dir[0] / "nope")


# -------------------------------------------------------------------------------------- training

def test_train_decoder_outputs_and_onnx_matches_torch(vae_dir):
    import torch

    out, info = vae_dir
    for f in ("decoder.onnx", "encoder.onnx", "weights.pt", "decoder.json"):
        assert (out / f).is_file()
    cfg = json.loads((out / "decoder.json").read_text())
    assert cfg["latent_dim"] == 8 and cfg["length"] == 64 and cfg["channels"] is None
    assert cfg["seed"] == 0 and "torch" in cfg["versions"] and cfg["training"]["data"][0]["n"] > 0
    state = torch.load(out / "weights.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())

    codes = np.random.default_rng(3).standard_normal((7, 8)).astype(np.float32)
    for length in (64, 150):
        dec = OnnxDecoder(out, length=length)
        module = dec.torch_module()
        with torch.no_grad():
            ref = module(torch.from_numpy(codes)).numpy()
        np.testing.assert_allclose(dec(codes), ref, atol=1e-4)
    # gradients flow through the decoder and its final z-normalisation
    z = torch.zeros(2, 8, requires_grad=True)
    OnnxDecoder(out).torch_module()(z)[:, 10].sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_training_is_deterministic(tmp_path):
    from xdream_ts.train_decoder import train_decoder

    X = sines(24, 32)
    a = train_decoder(X, tmp_path / "a", latent_dim=4, epochs=2, seed=5, **TINY)
    b = train_decoder(X, tmp_path / "b", latent_dim=4, epochs=2, seed=5, **TINY)
    assert a["training"]["val_loss"] == b["training"]["val_loss"]
    codes = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(OnnxDecoder(tmp_path / "a")(codes), OnnxDecoder(tmp_path / "b")(codes))


def test_train_decoder_bad_input(tmp_path):
    from xdream_ts.train_decoder import main, train_decoder

    with pytest.raises(UserError):
        train_decoder(np.zeros(10), tmp_path)
    with pytest.raises(UserError, match="multiple of 16"):
        train_decoder(sines(10, 40), tmp_path, length=40)
    with pytest.raises(UserError, match="not found"):
        train_decoder(str(tmp_path / "NoSuchDataset"), tmp_path)
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--quiet"]) == 2


# -------------------------------------------------------------------------------------- encoding

def _rel_err(dec, codes, x):
    return float(((dec(codes) - x) ** 2).mean())


def test_encode_beats_random_codes(vae_dir):
    X = training_series()[:6]
    L = X.shape[1]
    from xdream_ts.series import znormalize

    target = znormalize(X.astype(np.float64))
    vae = OnnxDecoder(vae_dir[0], length=L)
    pca = PCADecoder.fit(training_series(), n_components=10)
    basis = BasisDecoder(L, 16)
    rand = np.random.default_rng(0).standard_normal
    for dec, method in [(vae, "ivt"), (vae, "opt"), (pca, "auto"), (pca, "opt"), (basis, "opt"), (basis, "auto")]:
        codes = encode(dec, X, method=method, steps=40)
        assert codes.shape == (6, dec.latent_dim)
        err = _rel_err(dec, codes, target)
        err_rand = np.mean([_rel_err(dec, rand((6, dec.latent_dim)), target) for _ in range(5)])
        assert err < 0.5 * err_rand, (dec.name, method, err, err_rand)
    # opt refines ivt: never worse
    ivt = encode(vae, X, "ivt")
    assert _rel_err(vae, encode(vae, X, "opt", steps=40), target) <= _rel_err(vae, ivt, target) + 1e-6
    assert np.allclose(encode(IdentityDecoder(L), X), target)
    with pytest.raises(UserError, match="no encoder"):
        encode(basis, X, "ivt")


class _BlackBox:
    """A decoder the encoder knows nothing about: forces the CMA-ES path."""

    def __init__(self, dec):
        self.dec, self.latent_dim = dec, dec.latent_dim

    def __call__(self, codes):
        return self.dec(codes)


def test_encode_cma_black_box_seeded_and_leaves_global_rng(vae_dir):
    X = training_series()[:2]
    box = _BlackBox(OnnxDecoder(vae_dir[0], length=X.shape[1]))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = encode(box, X, "opt", steps=25, seed=1)
    assert np.array_equal(before, np.random.get_state()[1])
    b = encode(box, X, "opt", steps=25, seed=1)
    np.testing.assert_array_equal(a, b)
    from xdream_ts.series import znormalize

    target = znormalize(X.astype(np.float64))
    assert _rel_err(box, a, target) < _rel_err(box, np.zeros_like(a), target)


def test_initial_codes_best_middle_worst():
    X = sines(9, 50)
    scores = np.array([3.0, 9.0, np.nan, 1.0, 7.0, 5.0, 2.0, 8.0, 4.0])
    dec = BasisDecoder(50, 8)
    codes, idx = initial_codes(dec, X, scores, 2, "best", return_indices=True)
    assert list(idx) == [1, 7] and codes.shape == (2, 8)
    assert list(initial_codes(dec, X, scores, 2, "worst", return_indices=True)[1]) == [6, 3]
    assert list(initial_codes(dec, X, scores, 2, "middle", return_indices=True)[1]) == [5, 8]
    with pytest.raises(UserError):
        initial_codes(dec, X, scores, 9)


# ------------------------------------------------------------------------------------------- PCA

def test_pca_whitened_save_load_no_pickle(tmp_path):
    X = sines(200, 64)
    pca = PCADecoder.fit(X, n_components=8)
    codes = pca.encode(X)
    np.testing.assert_allclose(codes.mean(0), 0, atol=1e-8)
    np.testing.assert_allclose(codes.std(0), 1, atol=0.02)  # whitened: N(0, 1) codes are typical
    path = pca.save(tmp_path / "pca")
    with np.load(path, allow_pickle=False) as f:
        assert "components_" in f
    back = PCADecoder.load(path, length=90)
    np.testing.assert_array_equal(back.components_, pca.components_)
    assert back(codes[:2]).shape == (2, 90)
    assert PCADecoder.fit(X[:5], n_components=64).latent_dim == 5
    with pytest.raises(UserError):
        PCADecoder.load(tmp_path / "missing.npz")


def test_pca_spec_fits_on_a_ucr_folder(tmp_path):
    """pca:DATA[:K] fits on the TRAIN split of a UCR folder, at the target's length."""
    from xdream_ts.decoders import make_decoder
    folder = tmp_path / "Waves"
    folder.mkdir()
    X = sines(40, 64)
    lines = [f"{i % 2 + 1}\t" + "\t".join(f"{v:.6f}" for v in x) for i, x in enumerate(X)]
    (folder / "Waves_TRAIN.tsv").write_text("\n".join(lines) + "\n")
    dec = make_decoder(f"pca:{folder}:6", length=100)
    assert dec.latent_dim == 6 and dec(np.zeros((2, 6))).shape == (2, 100)
    same = make_decoder(f"pca:{folder}:6", length=100)
    np.testing.assert_array_equal(dec.components_, same.components_)  # deterministic
    assert make_decoder(f"pca:{folder}", length=64).latent_dim == 40  # default 64, capped by 40 series
    with pytest.raises(UserError, match="pca:FILE.npz"):
        make_decoder("pca", length=64)


# ------------------------------------------------------------------------------ shipped decoder

@pytest.mark.skipif(not (DEFAULT_DECODER_DIR / "decoder.onnx").is_file(), reason="default decoder not trained yet")
def test_default_decoder_loads_and_decodes():
    dec = load_default_decoder(length=500)
    assert dec.latent_dim == 64 and dec.trained_length == 256 and dec.length == 500
    x = dec(np.random.default_rng(0).standard_normal((4, 64)))
    assert x.shape == (4, 500)
    assert_znormalised(x)
    assert dec.encode(x).shape == (4, 64)
