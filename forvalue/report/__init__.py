"""Curation reports: one self-contained HTML page per subset, for a curator to look at.

The page shows the subset's lineage (dataset and valuation set versions, model, scoring method,
strategy, size rule, Dagster run), the score distribution with kept and dropped marked and the
cut-off, the composition of kept vs dropped by categorical input column, the kept and dropped
samples in tables that sort and filter in the page (rank, raw score, the value the strategy ranked
by, the check that dropped a sample, the response with its tokens coloured by contribution), and what
changed since the previous subset of the pair. Everything is inline: the page loads nothing.

- :func:`subset_report`: a subset recorded in the DuckDB catalog (the platform, ``forvalue report --subset``);
- :func:`scores_report`: the output files of ``forvalue score`` / ``curate`` / ``select``;
- :func:`selection_report`: a selection in memory (``forvalue curate --report``);
- :func:`serve`: a web server for report pages on 127.0.0.1.

This package never imports Dagster.
"""

from .from_catalog import subset_report
from .from_files import scores_report
from .from_selection import selection_report
from .server import serve

__all__ = ["subset_report", "scores_report", "selection_report", "serve"]
