"""`reports/index.html`: one self-contained page per run that opens without a network.

Plain HTML tables, one inline stylesheet and the PNG plots as data URIs: no script, font or stylesheet is
fetched, so the page reads the same on an air-gapped machine, in a CI artifact or attached to an e-mail. The
only absolute URL is the MLflow run's link. Each step's report is read if it is there; a step that has not run
shows "not run yet", one whose report cannot be read says why, and neither stops the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from detops.atomic import write_text
from detops.reporting.html import Raw, join, link, table, tag
from detops.reporting.section import Section, not_run, unreadable
from detops.reporting.sources import Sources, Unreadable, read_json, written
from detops.reporting.style import CSS
from detops.workspace import Workspace

PAGE = "index.html"


def build_run_page(ws: Workspace) -> Path:
    """Write `reports/index.html` from whatever reports the steps have left; returns its path."""
    from detops.reporting import data, drift, model, shipping
    from detops.reporting.header import header, mlflow_run, tools
    from detops.reporting.labeling import labeling_section
    from detops.reporting.production import production_section

    target = ws.reports / PAGE
    src = Sources(ws, target.parent)
    validate, split_ = src.outputs("validate"), src.outputs("split")
    train, evaluate = src.outputs("train"), src.outputs("evaluate")
    export, promote = src.outputs("export"), src.outputs("promote")
    verdict_file = ws.output("monitor", "verdict")
    sections = [
        _read("validation", "Data validation", validate["report"], "detops validate",
              lambda r: data.validation(src, r)),
        _read("split", "Split", split_["report"], "detops split", data.split),
        _read("training", "Training", train["metrics"], "detops train",
              lambda r: model.training(r, train["curves"])),
        _read("metrics", "Evaluation", evaluate["metrics"], "detops evaluate",
              lambda r: model.metrics(r, _optional(evaluate["report"]), evaluate)),
        _read("export", "Export", export["report"], "detops export",
              lambda r: shipping.export(src, r, export["plot"], export["markdown"])),
        _read("promotion", "Promotion", promote["decision"], "detops promote",
              lambda r: shipping.promotion(src, r, promote["summary"])),
        _read("drift", "Drift", verdict_file, "detops monitor", lambda r: drift.drift(src, r)),
        labeling_section(src),
        production_section(src),
    ]
    validation, verdict = _optional(validate["report"]), _optional(verdict_file)
    mlflow = mlflow_run(src)
    body = join([header(src, validation, mlflow), tag("main", join([_overview(sections), *map(_render, sections)])),
                 tools(src, validation, verdict, mlflow)])
    page = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>detops run report</title><style>{CSS}</style></head><body>{body}</body></html>\n")
    return write_text(target, page)


def _read(key: str, title: str, path: Path, command: str, build: Callable[[Any], Section]) -> Section:
    """The step's section, "not run yet" without its report, or why its report cannot be shown."""
    try:
        report = read_json(path)
    except Unreadable as exc:
        return unreadable(key, title, path, str(exc))
    if report is None:
        return not_run(key, title, path, command)
    try:
        section = build(report)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a report from another detops version
        return unreadable(key, title, path, f"not the layout this detops writes ({type(exc).__name__}: {exc})")
    return replace(section, source=path)


def _optional(path: Path) -> Any | None:
    """A report that only adds to a section: absent or unreadable, the section does without it."""
    try:
        return read_json(path)
    except Unreadable:
        return None


def _overview(sections: list[Section]) -> Raw:
    rows = [[link(f"#{s.key}", s.title), s.status, written(s.source) if s.source else "–"] for s in sections]
    return tag("section", join([tag("h2", "At a glance"), table(["step", "status", "report written"], rows)]),
               id="overview")


def _render(section: Section) -> Raw:
    age = tag("span", f"written {written(section.source)}", class_="written") if section.source else ""
    return tag("section", join([tag("h2", join([section.title, age])), section.body]), id=section.key)
