"""The data decide the stimulus space (StimulusSpace) and the `auto` decoder (a PCA fitted on them, cached)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xdream_ts.data import Dataset, load_dataset
from xdream_ts.decoders import make_decoder
from xdream_ts.decoders.auto import fit_data_decoder
from xdream_ts.decoders.encode import encode
from xdream_ts.decoders.pca import PCADecoder
from xdream_ts.errors import UserError
from xdream_ts.space import MARGIN, SpaceDecoder, StimulusSpace

SHARED_UEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uea"


def raw_units(n: int = 120, channels: int = 3, length: int = 40, seed: int = 0) -> np.ndarray:
    """Sensor-like series: each channel its own offset and scale, smooth shapes with varying amplitude."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    f = rng.uniform(1, 3, (n, channels, 1))
    amp = rng.uniform(0.5, 1.5, (n, channels, 1))
    x = amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 6, (n, channels, 1))) + 0.05 * rng.standard_normal(
        (n, channels, length))
    offset = np.array([100.0, -3.0, 0.5])[:channels, None]
    scale = np.array([20.0, 0.1, 2.0])[:channels, None]
    return (offset + scale * x).astype(np.float32)


def in_range(x, space, tol=1e-4):
    lo, hi = space.low[None, :, None], space.high[None, :, None]
    span = (space.high - space.low)[None, :, None]
    return bool(np.all(x >= lo - tol * span) and np.all(x <= hi + tol * span))


# ------------------------------------------------------------------------------------- the space

def test_space_fit_round_trip_and_clip():
    d = Dataset.from_arrays(raw_units())
    assert not d.znormalized
    space = StimulusSpace.fit(d)
    assert space.kind == "data" and space.channels == 3 and not space.normalize
    X = d.X.astype(np.float64)
    np.testing.assert_allclose(space.loc, X.mean((0, 2)), rtol=1e-6)
    np.testing.assert_allclose(space.scale, X.std((0, 2)), rtol=1e-6)
    rng = X.max((0, 2)) - X.min((0, 2))
    np.testing.assert_allclose(space.low, X.min((0, 2)) - MARGIN * rng)
    np.testing.assert_allclose(space.high, X.max((0, 2)) + MARGIN * rng)
    # standard units and back: the identity inside the range
    z = space.to_standard(X)
    np.testing.assert_allclose(z.mean((0, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(space.from_standard(z), X, rtol=1e-5, atol=1e-5)
    # outside the range: clipped per channel to min/max -/+ margin * range
    far = space.from_standard(np.full((2, 3, 40), 1e3))
    np.testing.assert_allclose(far[:, :, 0], np.broadcast_to(space.high, (2, 3)))
    np.testing.assert_allclose(space.clip(np.full((1, 3, 5), -1e9))[0, :, 0], space.low)
    # JSON out, same space back
    text = json.dumps(space.describe())
    back = StimulusSpace.from_description(text)
    assert back == space and StimulusSpace.from_description(json.loads(text)) == space
    assert json.loads(text)["kind"] == "data" and json.loads(text)["margin"] == MARGIN
    with pytest.raises(UserError, match="3 channel"):
        space.to_standard(np.zeros((2, 2, 40)))
    with pytest.raises(UserError, match="kind"):
        StimulusSpace.from_description({"kind": "pixels"})


def test_space_znorm_and_univariate():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20, 30))
    X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    space = StimulusSpace.fit(Dataset.from_arrays(X))
    assert space.kind == "znorm" and space.normalize and space == StimulusSpace.znormalised()
    out = space.from_standard(5 + 3 * rng.standard_normal((4, 30)))
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-9)
    np.testing.assert_allclose(out.std(-1), 1, atol=1e-9)
    assert StimulusSpace.from_description(space.describe()) == space
    # one channel in data units: (n, length) series work as well as (n, 1, length)
    raw = StimulusSpace.fit(Dataset.from_arrays(10 + 2 * X))
    assert raw.kind == "data" and raw.channels == 1
    np.testing.assert_allclose(raw.from_standard(raw.to_standard(10 + 2 * X)), 10 + 2 * X, rtol=1e-6)


# ----------------------------------------------------------------------------------- auto decoder

def test_pca_multichannel_raw_units_exact_encoder_and_range(tmp_path):
    X = raw_units()
    np.save(tmp_path / "x.npy", X)
    d = load_dataset(tmp_path / "x.npy")
    dec = fit_data_decoder(d, max_components=64, variance=0.99, residual=0)  # the data's PCA alone
    assert dec.channels == 3 and 1 <= dec.latent_dim <= 64 and dec.space is not None and not dec.normalize
    assert dec.describe()["explained_variance_ratio"] >= 0.99 or dec.latent_dim == 64
    info = json.loads(json.dumps(dec.describe()))
    assert info["space"]["kind"] == "data" and info["spec"] == "auto"
    # real series encode to codes that decode back to them (up to the 1 % of variance left out)
    x = X[:30].astype(np.float64)
    back = dec(dec.encode(x))
    rel = np.sqrt(((back - x) ** 2).mean(-1)) / x.std(-1)  # per series and channel
    assert np.median(rel) < 0.1 and rel.max() < 0.3
    # with every component kept, exactly (the encoder is the decoder's linear inverse)
    full = fit_data_decoder(d, max_components=500, variance=1.0, residual=0)
    np.testing.assert_allclose(full(full.encode(x)), x, rtol=1e-4, atol=1e-3 * np.abs(x).max())
    np.testing.assert_allclose(full(encode(full, x, method="opt")), x, rtol=1e-4, atol=1e-3 * np.abs(x).max())
    # random codes: in the data's per-channel range (plus the margin), with the data's level and spread
    z = dec(np.random.default_rng(0).standard_normal((400, dec.latent_dim)))
    assert z.shape == (400, 3, 40) and in_range(z, dec.space)
    inside = (z >= X.min((0, 2))[None, :, None]) & (z <= X.max((0, 2))[None, :, None])
    assert inside.mean() > 0.95  # Gaussian samples of bounded sines: the margin and clip take the tails
    np.testing.assert_allclose(z.mean((0, 2)), X.mean((0, 2)), atol=0.1 * X.std((0, 2)).max())
    np.testing.assert_allclose(z.std((0, 2)), X.std((0, 2)), rtol=0.15)
    # the linear map is in data units: what dream and inverse sets differentiate through
    W, b = dec.linear_map()
    c = np.random.default_rng(1).standard_normal((3, dec.latent_dim)) * 0.3
    np.testing.assert_allclose((c @ W + b).reshape(3, 3, 40), dec(c), rtol=1e-4, atol=1e-4 * np.abs(X).max())


def test_znormalised_data_give_znormalised_stimuli(tmp_path):
    rng = np.random.default_rng(2)
    X = np.cumsum(rng.standard_normal((60, 50)), axis=1)
    X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    np.save(tmp_path / "z.npy", X)
    dec = make_decoder("auto", length=50, data=load_dataset(tmp_path / "z.npy"))
    assert dec.space is None and dec.normalize and dec.describe()["space"]["kind"] == "znorm"
    out = dec(rng.standard_normal((5, dec.latent_dim)))
    assert out.shape == (5, 50)
    np.testing.assert_allclose(out.std(-1), 1, atol=1e-3)
    back = dec(dec.encode(X[:10]))
    assert np.median(np.sqrt(((back - X[:10]) ** 2).mean(-1))) < 0.15


def test_cache_used_the_second_time(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "x.npy", raw_units(80, 2, 32))
    d = load_dataset(folder / "x.npy")
    first = fit_data_decoder(d)
    path = Path(first.meta["cache"])
    assert not first.meta["cached"] and path.parent == folder / ".xdream_ts" and path.is_file()
    with np.load(path, allow_pickle=False) as f:  # no pickle in the cache
        assert "components_" in f
    again = fit_data_decoder(load_dataset(folder / "x.npy"))
    assert again.meta["cached"] and again.meta["cache"] == str(path)
    np.testing.assert_array_equal(again.components_, first.components_)
    assert again.space == first.space
    codes = np.random.default_rng(0).standard_normal((4, first.latent_dim))
    np.testing.assert_array_equal(again(codes), first(codes))
    # other fit parameters or other data: another file
    other = fit_data_decoder(d, max_components=5)
    assert other.meta["n_components"] == 5 and other.meta["cache"] != str(path) and not other.meta["cached"]
    # data folder not writable (here: .xdream_ts is a file) -> cache_dir; arrays -> cache_dir
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    np.save(blocked / "x.npy", raw_units(80, 2, 32, seed=3))
    (blocked / ".xdream_ts").write_text("not a folder")
    dec = fit_data_decoder(load_dataset(blocked / "x.npy"), cache_dir=tmp_path / "run")
    assert Path(dec.meta["cache"]).parent == tmp_path / "run"
    assert fit_data_decoder(load_dataset(blocked / "x.npy"), cache_dir=tmp_path / "run").meta["cached"]
    arr = fit_data_decoder(Dataset.from_arrays(raw_units(50, 1, 20)))
    assert arr.meta["cache"] is None  # nowhere to cache: fitted, not stored


def test_make_decoder_auto_and_data_space(tmp_path):
    X = raw_units(60, 2, 30)
    np.save(tmp_path / "x.npy", X)
    dec = make_decoder("auto", length=30, channels=2, data=tmp_path / "x.npy")
    assert isinstance(dec, PCADecoder) and dec(np.zeros((1, dec.latent_dim))).shape == (1, 2, 30)
    # the model's length differs: fitted at the model's length
    long = make_decoder("auto", length=45, channels=2, data=load_dataset(tmp_path / "x.npy"))
    assert long.fit_length == 45 and long(np.zeros((2, long.latent_dim))).shape == (2, 2, 45)
    with pytest.raises(UserError, match="2 channel.*model takes 3"):
        make_decoder("auto", length=30, channels=3, data=tmp_path / "x.npy")
    # other decoders with data in raw units: their z-normalised output mapped into the data's range
    basis = make_decoder("basis:8", length=30, channels=2, data=tmp_path / "x.npy")
    assert isinstance(basis, SpaceDecoder) and not basis.normalize
    out = basis(np.random.default_rng(0).standard_normal((50, basis.latent_dim)) * 3)
    assert in_range(out, basis.space) and basis.describe()["space"]["kind"] == "data"
    # without data: the shipped prior, one VAE code per channel (decoders/channelwise.py)
    assert make_decoder("auto", length=30, channels=2).describe()["name"] == "default-channelwise"
    from xdream_ts.decoders.onnx_decoder import DEFAULT_DECODER_DIR
    if (DEFAULT_DECODER_DIR / "decoder.onnx").is_file():
        assert make_decoder("auto", length=64).name == "default"
    with pytest.raises(UserError, match="length"):
        make_decoder("auto")


def test_save_load_keeps_the_space(tmp_path):
    d = Dataset.from_arrays(raw_units(50, 3, 24))
    dec = fit_data_decoder(d)
    back = PCADecoder.load(dec.save(tmp_path / "p.npz"))
    assert back.space == dec.space and not back.normalize
    codes = np.random.default_rng(0).standard_normal((3, dec.latent_dim))
    np.testing.assert_allclose(back(codes), dec(codes), rtol=1e-6)


@pytest.mark.skipif(not (SHARED_UEA / "JapaneseVowels").is_dir(), reason=f"UEA files not available at {SHARED_UEA}")
def test_real_japanese_vowels_auto_decoder(tmp_path):
    # a copy: the cache goes next to the data, and ../shared is not ours to write into
    shutil.copytree(SHARED_UEA / "JapaneseVowels", tmp_path / "JapaneseVowels")
    d = load_dataset(tmp_path / "JapaneseVowels")
    dec = make_decoder("auto", length=29, channels=12, data=d)
    k = dec.meta["n_components"]
    assert dec.space.kind == "data" and dec.channels == 12 and k <= 64 and dec.latent_dim == k + dec.meta["n_residual"]
    x = d.X[:100].astype(np.float64)
    rel = np.sqrt(((dec(dec.encode(x)) - x) ** 2).mean((1, 2))) / x.std((1, 2))
    assert np.median(rel) < 0.1
    # codes in the data's own components: samples of the data's distribution, inside its range
    z = np.random.default_rng(0).standard_normal((300, dec.latent_dim))
    z[:, k:] = 0
    z = dec(z)
    assert in_range(z, dec.space)
    inside = (z >= d.X.min((0, 2))[None, :, None]) & (z <= d.X.max((0, 2))[None, :, None])
    assert inside.mean() > 0.97
    assert make_decoder("auto", length=29, channels=12, data=load_dataset(tmp_path / "JapaneseVowels")).meta["cached"]


def test_the_auto_decoder_adds_directions_outside_the_datas_span(tmp_path):
    # PCADecoder.with_residual: the data's components first and unchanged, then low-frequency directions
    # orthogonal to them, so that a search can leave the shapes the real series share
    X = raw_units()
    np.save(tmp_path / "x.npy", X)
    d = load_dataset(tmp_path / "x.npy")
    pca = fit_data_decoder(d, residual=0)
    dec = fit_data_decoder(d)
    k = pca.latent_dim
    assert dec.meta["n_components"] == k and dec.latent_dim == k + dec.meta["n_residual"] and dec.meta["n_residual"] > 0
    np.testing.assert_allclose(dec.components_[:k], pca.components_)
    C = dec.components_
    np.testing.assert_allclose(C @ C.T, np.eye(len(C)), atol=1e-8)  # orthonormal: the encoder stays a projection
    # a real series keeps its leading coordinates; the residual ones are what PCA left out
    x = X[:20].astype(np.float64)
    np.testing.assert_allclose(dec.encode(x)[:, :k], pca.encode(x), rtol=1e-6, atol=1e-6)
    codes = np.random.default_rng(0).standard_normal((4, dec.latent_dim))
    codes[:, k:] = 0
    np.testing.assert_allclose(dec(codes), pca(codes[:, :k]), rtol=1e-5, atol=1e-5)
    # each residual direction carries residual_scale times the mean variance of the data's components
    np.testing.assert_allclose(dec.explained_variance_[k:], dec.meta["residual_scale"] * pca.explained_variance_.mean())
    # cached with its residual: a second fit loads the same decoder
    again = fit_data_decoder(load_dataset(tmp_path / "x.npy"))
    assert again.meta["cached"] and again.meta["n_residual"] == dec.meta["n_residual"]
    np.testing.assert_array_equal(again.components_, dec.components_)
