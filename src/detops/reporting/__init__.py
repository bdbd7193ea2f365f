"""The run page people look at: every step's report on one self-contained HTML page (`reports/index.html`)."""

from detops.reporting.page import build_run_page

__all__ = ["build_run_page"]
