"""`cfx report`: the evidence for a curated set in one self-contained folder (index.html + report.json).

Public surface: ``report`` (gather + write), ``ReportOptions``; the parts: ``facts`` (composition, provenance),
``evidence`` (audit, duplicates, splits, cross-set), ``thumbs`` (sample + thumbnails), ``charts`` (SVG),
``page`` (Jinja2).
"""

from __future__ import annotations

from cfx.report.build import DEFAULT_SAMPLE, ReportOptions, gather, report, write_report

__all__ = ["DEFAULT_SAMPLE", "ReportOptions", "gather", "report", "write_report"]
