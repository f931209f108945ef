"""Sampling presets (TOML data) and their loader."""
