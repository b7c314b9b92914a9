"""ForValue: forward-only data valuation (For-Value, arXiv 2508.10180) for LLMs and VLMs.

The library never imports Dagster; heavy imports (torch, transformers) happen inside functions.
"""

from ._version import __version__
