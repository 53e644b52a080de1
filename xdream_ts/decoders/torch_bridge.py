"""The decoders' one bridge to torch: what a gradient path (dream, the gradient inverse-set sampler) asks
a decoder for. Each differentiable decoder offers ``torch_module()`` (a module codes -> series, the same
values as its numpy ``__call__``) and says which space its codes are in (``code_space``): 'raw' (the
code is the series), 'linear' (a fixed linear map), 'latent' (a learned network)."""
from __future__ import annotations

import numpy as np

from ..errors import UserError, require_torch


def znormalize_torch(x, eps: float = 1e-8):
    """As ``xdream_ts.series.znormalize``, in torch: per series (and channel) over time; a flat series has
    no shape and maps to zeros."""
    torch = require_torch("a gradient through the decoder")
    m = x.mean(dim=-1, keepdim=True)
    sd = x.std(dim=-1, unbiased=False, keepdim=True)
    return torch.where(sd > eps, (x - m) / sd.clamp_min(eps), torch.zeros_like(x))


def linear_module(W: np.ndarray, b: np.ndarray, shape: tuple, normalize: bool):
    """A torch module z -> (z @ W + b) reshaped to (n, *shape), z-normalised when ``normalize``."""
    torch = require_torch("a gradient through the decoder")

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("W", torch.as_tensor(np.asarray(W), dtype=torch.float32))
            self.register_buffer("b", torch.as_tensor(np.asarray(b), dtype=torch.float32))
            self.shape, self.normalize = tuple(shape), bool(normalize)

        def forward(self, z):
            x = (z @ self.W + self.b).reshape(len(z), *self.shape)
            return znormalize_torch(x) if self.normalize else x

    return Linear().eval()


def torch_module_of(decoder):
    """(module, code_space) of a decoder, or a one-line UserError saying why it has no gradients."""
    make = getattr(decoder, "torch_module", None)
    if not callable(make):
        name = getattr(decoder, "name", None) or type(decoder).__name__
        raise UserError(f"the decoder {name!r} has no gradients (no torch_module()): use identity, basis, pca/auto "
                        "or a decoder trained by 'xdream-ts train-decoder'")
    return make(), getattr(decoder, "code_space", "latent")
