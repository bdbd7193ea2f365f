"""The drift section: the monitor's verdict per batch, the columns that drifted, where the prediction columns came
from (or why they were not tested), and each Evidently report."""

from __future__ import annotations

from typing import Any

from detops.reporting.html import badge, join, link, table, tag
from detops.reporting.section import Section
from detops.reporting.sources import Sources

GOOD = {"drift": False, "no drift": True}  # `insufficient data` is neither


def drift(src: Sources, verdict: dict[str, Any]) -> Section:
    checks = verdict["checks"]
    status = join([badge(verdict["verdict"], GOOD.get(verdict["verdict"])),
                   f" {len(checks)} batch(es) checked" if checks else " nothing to check"])
    rows = [[check["batch"] or check["source"], badge(check["verdict"], GOOD.get(check["verdict"])),
             check["images"], ", ".join(check["drifted_columns"]) or "none", check["reason"],
             _predictions(check.get("predictions")), len(check["skipped"]), _report_link(src, check["reports"])]
            for check in checks]
    parts = [tag("p", status)]
    if verdict.get("reference"):
        parts.append(tag("p", f"reference: {verdict['reference']}", class_="muted"))
    if rows:
        parts.append(table(["batch", "verdict", "images", "drifted columns", "why", "predictions", "unreadable",
                            "report"], rows, numeric=(2, 6)))
    else:
        parts.append(tag("p", verdict["message"]))
    return Section("drift", "Drift", status, join(parts))


def _predictions(predictions: dict[str, Any] | None) -> str:
    """The champion's answers tested (and against what), or why not; a check made before they existed: '-'."""
    if not predictions:
        return "-"
    if predictions.get("source"):
        return f"{predictions['source']} vs {predictions['reference']}"
    return str(predictions.get("note") or "-")


def _report_link(src: Sources, reports: dict[str, str]) -> object:
    html = reports.get("html")
    return link(src.href(html), "Evidently report") if html else "none (too little data)"
