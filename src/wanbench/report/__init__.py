"""Reports from a results store: Markdown, HTML with plots, CSV and JSON."""

from wanbench.report.write import write_report

__all__ = ["write_report"]
