"""Files shipped inside the package (reference model, decoder, sample series)."""
