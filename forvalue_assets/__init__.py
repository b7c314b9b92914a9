"""Dagster layer of ForValue, grouped by domain: ``ingest``, ``features``, ``curation`` and
``finetuning`` (each exposes ``ASSETS``, ``CHECKS``, ``JOBS``); shared pieces at the top level
(``common``, ``partitions``, ``settings``, ``metadata``, ``ranking``, ``testing``, ``serve``);
``definitions`` merges the domains into the code location.

Thin by design: every computation calls into ``forvalue`` (data, models, store, scoring,
catalog). Importing this package imports Dagster and numpy, never torch or transformers (those
are imported inside the asset functions that need them), and reads no environment variable.
"""
