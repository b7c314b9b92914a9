"""Dagster layer of ForValue: assets, asset checks, jobs and the Definitions.

Thin by design: every computation calls into ``forvalue`` (data, models, store, scoring,
catalog). Importing this package imports Dagster and numpy, never torch or transformers; those
are imported inside the asset functions that need them.
"""
