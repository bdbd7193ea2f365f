"""The few HTML pieces the run page is made of. Every value is escaped here, once: a file name or a class name
in a report can hold `<`, `&` or quotes, and the page must show it, not run it. Trusted fragments built by these
helpers travel as `Raw` so they are not escaped twice."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path


class Raw(str):
    """HTML built by these helpers (already escaped)."""


def esc(value: object) -> Raw:
    """`value` as HTML text: Raw passes through, numbers are formatted, None is a dash."""
    if isinstance(value, Raw):
        return value
    return Raw(html.escape(fmt(value), quote=True))


def fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def tag(name: str, body: object = "", **attrs: object) -> Raw:
    """`<name attrs>body</name>`; attribute names ending in `_` lose it (`class_` -> `class`)."""
    text = "".join(f' {key.rstrip("_")}="{html.escape(str(value), quote=True)}"'
                   for key, value in attrs.items() if value is not None)
    return Raw(f"<{name}{text}>{esc(body)}</{name}>")


def join(parts: Iterable[object]) -> Raw:
    return Raw("".join(esc(part) for part in parts))


def table(header: Sequence[object], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> Raw:
    """A plain table; columns whose index is in `numeric` are right-aligned."""
    def row(cells: Sequence[object], cell: str) -> Raw:
        return tag("tr", join(tag(cell, value, class_="num" if i in numeric else None)
                              for i, value in enumerate(cells)))

    body = join(row(cells, "td") for cells in rows)
    return tag("table", join([tag("thead", row(header, "th")), tag("tbody", body)]))


def facts(items: Iterable[tuple[object, object]]) -> Raw:
    """Key-value pairs as a two-column table."""
    return tag("table", tag("tbody", join(tag("tr", join([tag("th", key), tag("td", value)]))
                                          for key, value in items)), class_="facts")


def link(href: str, text: object) -> Raw:
    return tag("a", text, href=href)


def png(path: Path, alt: str) -> Raw:
    """The PNG inlined as a data URI, so the page needs no file beside it; a note where the plot is missing."""
    if not path.is_file():
        return tag("p", f"{alt}: no plot ({path.name} is missing)", class_="muted")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return tag("figure", join([Raw(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'),
                               tag("figcaption", alt)]))


def badge(text: str, good: bool | None) -> Raw:
    """A verdict in colour: green when good, red when not, grey when neither applies."""
    return tag("span", text, class_={True: "badge good", False: "badge bad", None: "badge"}[good])
