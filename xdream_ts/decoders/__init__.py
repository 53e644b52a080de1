"""Decoders: latent codes -> series. Each plugin in a file named after it."""
