"""Decoders: latent codes -> series. Each plugin in a file named after it.

``make_decoder(spec, length, channels, data=None, cache_dir=None)`` builds one from a short spec:
  auto                with data: a whitened PCA fitted on them, in their stimulus space (decoders/auto.py,
                      cached next to the data or in cache_dir); without: the shipped prior (default;
                      channel-wise for several channels, decoders/channelwise.py)
  identity            raw samples (XDream's pixel baseline)
  basis[:N]           N smooth DCT components (default 32)
  pca:PATH            a PCA decoder saved by ``PCADecoder.save`` (.npz)
  default             the learned VAE shipped in the package (trained on UCR series, any length, any
                      channel count: one code per channel)
  DIR                 a decoder trained by ``xdream-ts train-decoder`` (decoder.onnx + decoder.json)

``data`` (a ``xdream_ts.data.Dataset``, or a path ``load_dataset`` reads) decides the stimulus space
(``xdream_ts.space``): for ``auto`` the fit; for every other spec, data that are not z-normalised wrap
the decoder's z-normalised output into the data's units (``StimulusSpace.wrap``).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def make_decoder(spec: str, length: int | None = None, channels: int | None = None, data=None, cache_dir=None):
    if str(spec) == "auto":
        from .auto import auto_decoder

        return auto_decoder(length=length, channels=channels, data=data, cache_dir=cache_dir)
    decoder = _make(spec, length, channels)
    if data is None or getattr(decoder, "space", None) is not None:
        return decoder  # one that carries its own data space (a hybrid trained in it) is in its units already
    from ..space import StimulusSpace
    from .auto import as_dataset, check_channels

    dataset = as_dataset(data, length)
    check_channels(dataset, channels)
    return StimulusSpace.fit(dataset).wrap(decoder)


def _make(spec: str, length: int | None, channels: int | None):
    name, _, arg = str(spec).partition(":")
    if name in ("identity", "basis", "default") and not length:
        raise UserError(f"decoder {spec!r} needs the series length: the target does not fix it, pass --length")
    if name == "identity":
        from .identity import IdentityDecoder
        return IdentityDecoder(length, channels=channels)
    if name == "basis":
        from .basis import BasisDecoder
        # 32 components by default, fewer for a series too short to hold them (a 32-feature model)
        return BasisDecoder(length, n_basis=int(arg) if arg else min(32, length - 1), channels=channels)
    if name == "pca":
        from .pca import PCADecoder
        if not arg:
            raise UserError("decoder 'pca' needs a fitted file or data: pca:FILE.npz, or pca:DATA[:K] with DATA a "
                            "UCR dataset folder or name (fitted on its TRAIN split, K components, default 64)")
        if arg.endswith(".npz"):
            return PCADecoder.load(arg, length=length)
        # pca:DATA[:K]: fit now (a second for UCR-sized data); deterministic for the same data
        data, _, k = arg.rpartition(":") if arg.rsplit(":", 1)[-1].isdigit() else (arg, "", "")
        return PCADecoder.fit(data, n_components=int(k) if k else 64, length=length)
    if name == "default":
        from .channelwise import default_prior
        return default_prior(length, channels)
    if Path(spec).is_dir():
        from .channelwise import per_channel
        from .onnx_decoder import OnnxDecoder
        # a univariate decoder (a VAE trained on one-channel series, another prior) on a model of several
        # channels: one code per channel, as the shipped prior does, instead of a channel-count error
        return per_channel(OnnxDecoder(spec, length=length), channels)
    raise UserError(f"unknown decoder {spec!r}: use auto, identity, basis[:N], pca:FILE.npz, pca:DATA[:K], default, "
                    "or a folder written by `xdream-ts train-decoder`")


def default_decoder_spec() -> str:
    """The shipped learned decoder when the package carries it, else the smooth basis."""
    from importlib import resources
    shipped = resources.files("xdream_ts.assets").joinpath("default_decoder", "decoder.onnx")
    return "default" if shipped.is_file() else "basis"
