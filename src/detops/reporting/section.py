"""One part of the run page: what a step left, with a one-line status for the overview at the top."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detops.reporting.html import Raw, badge, join, tag


@dataclass(frozen=True)
class Section:
    key: str  # the anchor the overview links to
    title: str
    status: Raw  # one line: a verdict badge and the number that matters
    body: Raw
    source: Path | None = None  # the report it was read from (its age is shown)


def not_run(key: str, title: str, source: Path, command: str) -> Section:
    """The section of a step whose report is not there yet."""
    body = join([tag("p", join([f"not run yet: no {source.name}. Run ", tag("code", command), "."]))])
    return Section(key, title, badge("not run yet", None), body)


def unreadable(key: str, title: str, source: Path, why: str) -> Section:
    """A report that exists but cannot be shown: say so instead of failing the whole page."""
    return Section(key, title, badge("unreadable", False), tag("p", f"could not read {source.name}: {why}"), source)
