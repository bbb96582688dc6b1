"""Self-contained HTML reports of collapse diagnostics.

:func:`build_html` draws a page from diagnosed runs (xarray objects only);
:func:`write_report` goes from run directories to the page, computing or
reusing each run's ``diagnostics.nc``.
"""

from .advice import ChangeTable, predicted_kl, what_to_change
from .html import build_html
from .summary import LevelSummary, headline, level_summaries, metrics_table

__all__ = ["ChangeTable", "LevelSummary", "build_html", "headline", "level_summaries", "metrics_table",
           "predicted_kl", "what_to_change"]
