"""xdream_ts: find the time series that drive a unit of a model, a sensor or a neuron hardest.

codes --decoder--> series --scorer--> scores --optimizer--> codes   (XDream, Xiao & Kreiman 2019)

Importing this package is cheap: torch, nevergrad and onnxruntime are imported where they are used.
"""
__version__ = "0.1.0"
