"""The scripts that rebuild the bundled model (models/tiankong-mini) from nothing, offline.

A package so the scripts import each other by name (`from . import corpus`); run them as modules from
the repository root: `python -m models.build.build` (see build.py), `python -m models.build.corpus ...`.
"""
