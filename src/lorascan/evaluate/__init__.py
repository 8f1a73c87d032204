"""Readout and metrics of a trained classifier."""
