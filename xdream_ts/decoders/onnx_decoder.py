"""A trained decoder run through ONNX Runtime: the search path needs neither torch nor the training code.

``OnnxDecoder(dir)`` loads a folder written by ``xdream_ts.train_decoder`` (decoder.onnx, encoder.onnx,
weights.pt, decoder.json); ``load_default_decoder()`` the one shipped with the package (a VAE trained
on five UCR and three UEA sets and synthetic series, FordA first; see experiments/train_default_decoder.py).

Any ONNX file that maps ``code (batch, d) -> series (batch, [C,] L)`` works too: pass its path; without
a decoder.json beside it, d and L are read from the graph (d must be static).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError, require_torch
from ..series import resample, znormalize
from .hybrid import FORMAT as HYBRID_FORMAT  # torch-free at import, as vae.py

DEFAULT_DECODER_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_decoder"


class OnnxDecoder:
    """Latent codes (n, d) -> float32 series (n, length) or (n, C, length), z-normalised per series.

    dir_or_path: a trained decoder folder (with decoder.json) or a decoder ``.onnx`` file.
    length: output length; None = the trained length. Another length resamples the decoder's output
        linearly (``xdream_ts.series.resample``) and z-normalises it again.
    threads: ONNX Runtime intra-op threads (1 keeps parallel runs from fighting over cores).
    providers: ONNX Runtime execution providers (default CPU; the decoder is small).
    """

    name = "vae"

    def __init__(self, dir_or_path, length: int | None = None, threads: int = 1, providers=None,
                 normalize: bool = True, _config: dict | None = None):
        path = Path(dir_or_path).expanduser()
        if path.is_dir():
            folder, onnx_path = path, path / "decoder.onnx"
        elif path.is_file() and path.suffix == ".onnx":
            folder, onnx_path = path.parent, path
        else:
            raise UserError(f"decoder {str(dir_or_path)!r} not found; pass a folder written by "
                            "'xdream-ts train-decoder' (with decoder.onnx) or a decoder .onnx file")
        if not onnx_path.is_file():
            raise UserError(f"{folder} has no decoder.onnx; pass a folder written by 'xdream-ts train-decoder'")
        self.folder = folder
        self.onnx_path = onnx_path
        self.threads = int(threads)
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.normalize = normalize
        cfg_path = folder / "decoder.json"
        if _config is not None:
            self.config = dict(_config)
        elif cfg_path.is_file() and onnx_path.name == "decoder.onnx":
            try:
                self.config = json.loads(cfg_path.read_text())
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {cfg_path}: {e}; re-export the decoder with "
                                "'xdream-ts train-decoder'") from None
        else:
            self.config = {}
        self._session = self._open(onnx_path)
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        if "latent_dim" not in self.config:
            d = inp.shape[-1] if len(inp.shape) == 2 else None
            if not isinstance(d, int):
                raise UserError(f"{onnx_path}: input {inp.name!r} has shape {inp.shape}; a decoder takes "
                                "codes (batch, d) with a fixed d")
            probe = self._run(np.zeros((1, d), np.float32))
            if probe.ndim not in (2, 3):
                raise UserError(f"{onnx_path}: output has shape {probe.shape[1:]} per code; a decoder "
                                "returns (length,) or (channels, length)")
            self.config.update(latent_dim=d, length=int(probe.shape[-1]),
                               channels=int(probe.shape[1]) if probe.ndim == 3 else None)
        self.latent_dim = int(self.config["latent_dim"])
        self.trained_length = int(self.config["length"])
        self.channels = None if self.config.get("channels") is None else int(self.config["channels"])
        self.length = int(length) if length else self.trained_length
        # a decoder trained in a 'data' stimulus space (the hybrid, decoders/hybrid.py) outputs the data's
        # units and its encoder takes them: no z-normalisation on either side
        self.space = None
        if isinstance(self.config.get("space"), dict) and self.config["space"].get("kind") == "data":
            from ..space import StimulusSpace

            self.space = StimulusSpace.from_description(self.config["space"])
            self.normalize = False
        self.name = str(self.config.get("name", self.name))
        if self.length < 2:
            raise UserError(f"decoder length={length} must be >= 2")
        self._encoder = None

    # -------------------------------------------------------------------------------------- runtime
    def _open(self, path: Path):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover
            raise UserError("onnxruntime is not installed; install xdream-ts with its dependencies "
                            "(pip install onnxruntime)") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), sess_options=so, providers=self.providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise UserError(f"cannot load {path} with ONNX Runtime: {str(e).splitlines()[0][:200]}; "
                            "check the file is an ONNX model") from None

    def _run(self, codes: np.ndarray, chunk: int = 4096) -> np.ndarray:
        outs = [self._session.run(None, {self._input_name: codes[i:i + chunk]})[0]
                for i in range(0, max(len(codes), 1), chunk)]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise UserError(f"decoder {self.name}: codes have shape {codes.shape}; expected (n, {self.latent_dim})")
        if not np.isfinite(codes).all():
            raise UserError("decoder got NaN/inf codes; check the optimizer's output")
        if len(codes) == 0:
            shape = (0, self.length) if self.channels is None else (0, self.channels, self.length)
            return np.zeros(shape, np.float32)
        out = self._run(np.ascontiguousarray(codes))
        if self.length != out.shape[-1]:
            out = resample(out, self.length)
            if self.normalize:
                out = znormalize(out)
        return out.astype(np.float32, copy=False)

    # ------------------------------------------------------------------------------------- encoder
    @property
    def has_encoder(self) -> bool:
        return (self.folder / "encoder.onnx").is_file() and self.onnx_path.name == "decoder.onnx"

    def encode(self, series: np.ndarray) -> np.ndarray:
        """Series (n, [C,] any length) -> codes (n, d): the encoder's posterior mean (XDream's "ivt").

        The series are resampled to the trained length and z-normalised first, as in training (kept in
        their units for a decoder in a ``data`` space, whose encoder standardises them itself).
        """
        if not self.has_encoder:
            raise UserError(f"{self.folder} has no encoder.onnx; use xdream_ts.decoders.encode.encode("
                            "decoder, series, method='opt') instead")
        x = np.asarray(series, dtype=np.float64)
        want = 2 if self.channels is None else 3
        if x.ndim == want - 1:
            x = x[None]
        if x.ndim != want or (self.channels is not None and x.shape[1] != self.channels):
            shape = "(n, length)" if self.channels is None else f"(n, {self.channels}, length)"
            raise UserError(f"encode: series have shape {x.shape}; this decoder expects {shape}")
        if not np.isfinite(x).all():
            raise UserError("encode: series hold NaN/inf values; remove or interpolate them first")
        x = resample(x, self.trained_length)
        x = (x if self.space is not None else znormalize(x)).astype(np.float32)
        if self._encoder is None:
            self._encoder = self._open(self.folder / "encoder.onnx")
        name = self._encoder.get_inputs()[0].name
        mu = np.concatenate([self._encoder.run(None, {name: x[i:i + 4096]})[0] for i in range(0, len(x), 4096)])
        return mu.astype(np.float64)

    # --------------------------------------------------------------------------------------- torch
    def torch_module(self, length: int | None = None):
        """The decoder as a torch module (eval mode, weights from weights.pt with weights_only=True).

        Output length ``length`` (default: this decoder's ``length``); when it differs from the trained
        length the module resamples and z-normalises in torch, so gradients flow end to end.
        """
        weights = self.folder / "weights.pt"
        arch = self.config.get("architecture")
        if not weights.is_file() or not arch:
            raise UserError(f"{self.folder} has no weights.pt/decoder.json architecture; a gradient-based "
                            "optimizer needs a decoder trained by 'xdream-ts train-decoder'")
        # a UserError, not an ImportError, without torch: encode() then falls back to CMA-ES
        torch = require_torch("a gradient through the decoder")
        length = int(length or self.length)
        if self.config.get("format") == HYBRID_FORMAT:
            from .hybrid import HybridConfig, build_hybrid

            if length != self.trained_length:
                raise UserError(f"the hybrid decoder in {self.folder} was trained at length {self.trained_length}, "
                                f"the target takes {length}; train it at the target's length for gradients")
            model = build_hybrid(HybridConfig.from_dict(arch))
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            for p in model.parameters():
                p.requires_grad_(False)
            return model.eval()

        from .vae import VAEConfig, build_vae, resampled_module

        cfg = VAEConfig.from_dict(arch)
        model = build_vae(cfg)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        dec = model.decoder.eval()
        for p in dec.parameters():
            p.requires_grad_(False)
        if length != cfg.length:
            return resampled_module(dec, length, cfg.znorm_eps).eval()
        return dec

    def describe(self) -> dict:
        t = self.config.get("training", {})
        return {"name": self.name, "path": str(self.folder), "length": self.length,
                "trained_length": self.trained_length, "channels": self.channels, "latent_dim": self.latent_dim,
                "data": [d.get("source") for d in t.get("data", [])], "val_mse": t.get("val_mse"),
                "seed": self.config.get("seed"),
                **({"space": self.space.describe()} if self.space is not None else {})}


def load_default_decoder(length: int | None = None, threads: int = 1) -> OnnxDecoder:
    """The VAE decoder shipped with the package (latent 64, trained at length 256), output at ``length``."""
    if not (DEFAULT_DECODER_DIR / "decoder.onnx").is_file():
        raise UserError(f"the default decoder is missing from {DEFAULT_DECODER_DIR}; reinstall xdream-ts or "
                        "train one with 'xdream-ts train-decoder' and pass its folder")
    dec = OnnxDecoder(DEFAULT_DECODER_DIR, length=length, threads=threads)
    dec.name = "default"
    return dec
