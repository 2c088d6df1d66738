"""Spectrum features: formulas, mass decomposition, fragmentation trees, loss priors."""
