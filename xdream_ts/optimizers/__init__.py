"""Optimizers: ask/tell plugins, each in a file named after it."""
