"""Generalization probes (paper.md §6): batteries of prefixes as data files
(:mod:`lorascan.probe.batteries`) and per-probe attack rates with category statistics
(:mod:`lorascan.probe.generalization`). Importing this package loads neither torch nor a model."""

from lorascan.probe.batteries import VIEWS, Battery, BatteryView, Probe, builtin_batteries, load_battery

__all__ = ["VIEWS", "Battery", "BatteryView", "Probe", "builtin_batteries", "load_battery"]
