"""Data layer: samples, sources, named mixes and the poisoning recipe. Knows nothing of models."""
