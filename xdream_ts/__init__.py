"""xdream_ts: find the time series that drive a unit of a model, a sensor or a neuron hardest.

codes --decoder--> series --scorer--> scores --optimizer--> codes   (XDream, Xiao & Kreiman 2019)

Importing this package is cheap: torch, nevergrad and onnxruntime are imported where they are used.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # The public API, imported on first use so `import xdream_ts` stays light.
    if name in ("run", "load_run", "Run"):
        from . import loop
        return getattr(loop, name)
    raise AttributeError(f"module 'xdream_ts' has no attribute {name!r}")


__all__ = ["run", "load_run", "Run", "__version__"]
