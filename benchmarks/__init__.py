"""Performance benchmarks for the workbook: run them with ``python -m benchmarks``.

Each section measures one question from the course's performance issue and
returns a plain, JSON-able dict (rows, targets met or missed, notes):

==================  =========================================================
section             question
==================  =========================================================
``rebuild``         how build time and peak memory grow with the data, next
                    to the seed's dense full-rank design (fresh process each)
``responsiveness``  p50/p99/max latency and throughput of a real server
                    while idle and while a rebuild runs, per executor
``serving``         ``GET /recommendations`` throughput against ``GET /health``
``quality``         precision/recall/nDCG/MAP@10 and RMSE on MovieLens
``workbook``        wall time of every notebook and of each cell
==================  =========================================================

Variants are always measured side by side in the same run and compared as
ratios, because absolute times drift on a shared two-core machine. Tests
never assert timings; these benchmarks do the measuring.

All times are in seconds unless a name says otherwise (``_ms``, ``_us``);
memory is in MiB.
"""

from __future__ import annotations

__all__ = ["SECTIONS"]

SECTIONS = ("rebuild", "responsiveness", "serving", "quality", "workbook")
"""Section names, in the order ``python -m benchmarks`` runs them."""
