"""The shipped prior for any channel count (issue 15, item 6): `auto` without data, and `default`, decode
one code of the shipped VAE per channel (xdream_ts/decoders/channelwise.py)."""
from __future__ import annotations

import numpy as np
import pytest

from xdream_ts.decoders import make_decoder
from xdream_ts.decoders.channelwise import ChannelwiseDecoder
from xdream_ts.decoders.onnx_decoder import load_default_decoder


def test_auto_without_data_decodes_each_channel_with_the_shipped_vae():
    dec = make_decoder("auto", length=100, channels=3)
    assert isinstance(dec, ChannelwiseDecoder) and dec.latent_dim == 3 * 64
    z = np.random.default_rng(0).standard_normal((5, dec.latent_dim))
    x = dec(z)
    assert x.shape == (5, 3, 100)
    np.testing.assert_allclose(x.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(-1), 1, atol=1e-4)
    base = load_default_decoder(length=100)
    for c in range(3):  # channel c is the base decoder of the c-th slice of the code, nothing mixed in
        np.testing.assert_allclose(x[:, c], base(z[:, 64 * c:64 * (c + 1)]), atol=1e-5)  # float32, batch sizes differ
    assert make_decoder("default", length=100, channels=3).latent_dim == 192
    assert make_decoder("auto", length=100, channels=1).latent_dim == 64  # one channel: the VAE itself


def test_encode_is_per_channel_and_decodes_back_close_to_the_series():
    dec = make_decoder("auto", length=256, channels=2)
    z = np.random.default_rng(1).standard_normal((4, dec.latent_dim))
    x = dec(z)
    codes = dec.encode(x)
    assert codes.shape == (4, 128)
    base = load_default_decoder(length=256)
    np.testing.assert_allclose(codes[:, 64:], base.encode(x[:, 1]), atol=1e-5)
    # the encoder's posterior mean re-decodes to series correlated with the originals in every channel
    back = dec(codes)
    r = [np.corrcoef(back[i, c], x[i, c])[0, 1] for i in range(4) for c in range(2)]
    assert np.median(r) > 0.8


def test_the_torch_module_matches_the_numpy_decoder():
    torch = pytest.importorskip("torch")
    dec = make_decoder("auto", length=120, channels=3)
    z = np.random.default_rng(2).standard_normal((3, dec.latent_dim)).astype(np.float32)
    out = dec.torch_module()(torch.as_tensor(z)).detach().numpy()
    np.testing.assert_allclose(out, dec(z), atol=1e-4)


def _three_channel_model(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv1d(3, 4, 5, padding=2)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean(dim=2)

    path = tmp_path / "m.onnx"
    torch.onnx.export(Net().eval(), torch.randn(2, 3, 64), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return path


def test_a_three_channel_model_runs_end_to_end_through_the_prior(tmp_path):
    import xdream_ts
    from xdream_ts.loop import load_run
    from xdream_ts.targets import TargetSpec

    path = _three_channel_model(tmp_path)
    run = xdream_ts.run("auto", TargetSpec(model=str(path), units=["y:1"]), "default", budget=120,
                        store=tmp_path / "r.zarr", progress=False)
    r = load_run(tmp_path / "r.zarr")
    assert r.series.shape[2:] == (3, 64)
    first = float(np.max(r.scores[0]))
    assert run.best_score >= first  # the search keeps its best
    assert r.config["decoder"]["channelwise"] is True


def test_the_cli_says_the_prior_is_channel_wise_and_what_data_would_do(tmp_path, capsys):
    from xdream_ts.cli import main
    rc = main(["run", "--model", str(_three_channel_model(tmp_path)), "--layer", "y", "--unit", "1", "--budget", "40",
               "--out", str(tmp_path / "r.zarr"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "z-normalised per series and channel (the prior is channel-wise)" in err
    assert "--data (the model's real series) sets the model's own units" in err


def test_the_synthetic_generator_is_seeded_and_draws_every_family():
    from xdream_ts.synthetic import FAMILIES, generate

    X, fam = generate(240, length=128, seed=3, return_families=True)
    assert X.shape == (240, 128) and np.isfinite(X).all()
    assert set(fam) == set(FAMILIES)
    np.testing.assert_array_equal(X, generate(240, length=128, seed=3))
    assert not np.array_equal(X, generate(240, length=128, seed=4))


def test_a_univariate_decoder_folder_is_channel_wise_on_a_model_of_several_channels(tmp_path):
    # --decoder FOLDER with a VAE trained on one-channel series (here the shipped one, given by its path) on a
    # 3-channel model: one code per channel like the shipped prior, not "the model takes 3 channel(s)"
    import xdream_ts
    from xdream_ts.decoders.onnx_decoder import DEFAULT_DECODER_DIR
    from xdream_ts.targets import TargetSpec

    dec = make_decoder(str(DEFAULT_DECODER_DIR), length=64, channels=3)
    assert isinstance(dec, ChannelwiseDecoder) and dec.latent_dim == 3 * 64
    z = np.random.default_rng(3).standard_normal((2, dec.latent_dim))
    np.testing.assert_allclose(dec(z), make_decoder("default", length=64, channels=3)(z), atol=1e-6)
    assert make_decoder(str(DEFAULT_DECODER_DIR), length=64, channels=1).latent_dim == 64
    run = xdream_ts.run(str(DEFAULT_DECODER_DIR), TargetSpec(model=str(_three_channel_model(tmp_path)), units=["y:0"]),
                        "default", budget=80, progress=False, store=None)
    assert run.series.shape[-2:] == (3, 64)
