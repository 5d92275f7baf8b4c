"""Objectives (loss and gradient of a model on data) and dataset builders. Nothing here knows
about workers, clocks or processes."""
