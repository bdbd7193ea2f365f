"""The production-accuracy section: the champion's (and challenger's) mAP on each labelled batch's share, with its
90 % interval, against the version's test mAP; the chart over batches and a row per batch
(`detops.monitoring.production` writes both)."""

from __future__ import annotations

from typing import Any

from detops.reporting.html import badge, join, png, table, tag
from detops.reporting.section import Section
from detops.reporting.sources import Sources


def production_section(src: Sources) -> Section:
    """The section from reports/production/ (nothing scored yet: says how a batch gets scored), or why a report
    there cannot be shown."""
    from detops.monitoring.production import production_folder, read_reports
    from detops.reporting.section import unreadable

    try:
        return production(src, read_reports(src.ws))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return unreadable("production", "Production accuracy", production_folder(src.ws),
                          f"{type(exc).__name__}: {exc}")


def production(src: Sources, reports: list[dict[str, Any]]) -> Section:
    """`reports`: every batch's production report, oldest first."""
    from detops.monitoring.production import chart_path

    if not reports:
        body = tag("p", "no labelled batch scored yet: a labelled batch is scored when retraining takes it "
                        "(its accuracy share, or the whole batch when it landed labelled).")
        return Section("production", "Production accuracy", badge("not measured", None), body)
    last = reports[-1]
    status = join([badge("accuracy dropped" if last["alarm"] else "ok", not last["alarm"]),
                   f" version {last['version']}: mAP {_num(last['map'])} on {last['batch']}"])
    rows = [[r["batch"], f"{m['alias']} {m['version']}", m["images"], _num(m["map"]), _num(m["map_50"]),
             _interval(m["interval"]), _num(m["test_map"]),
             "too small" if m["too_small"] else (badge("dropped", False) if m["alarm"] else "ok")]
            for r in reports for m in r["models"]]
    body = join([tag("p", status), png(chart_path(src.ws), "mAP on labelled production batches, test mAP dashed"),
                 table(["batch", "model", "images", "mAP", "mAP@0.5", "90 % interval", "test mAP", "alarm"], rows,
                       numeric=(2, 3, 4, 6))])
    return Section("production", "Production accuracy", status, body)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _interval(interval: list[float] | None) -> str:
    return "n/a" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
