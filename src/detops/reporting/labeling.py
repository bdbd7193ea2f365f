"""The labelling section: the label audit of a split (worst images, issue counts, its page) and, per batch, what
`detops label select` chose, with thumbnails of the top images."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from detops.reporting.html import Raw, badge, join, link, table, tag
from detops.reporting.section import Section
from detops.reporting.sources import Sources

SHOWN = 10  # worst audited images listed on the page; the audit's own page has them all


def labeling_section(src: Sources) -> Section:
    """The section, or why its files cannot be shown (a file from another detops version)."""
    from detops.reporting.section import unreadable
    from detops.reporting.sources import Unreadable, read_json

    path = src.ws.output("monitor", "label_audit")
    try:
        return labeling(src, read_json(path))
    except (Unreadable, OSError, KeyError, TypeError, ValueError) as exc:
        return unreadable("labeling", "Labelling", path, f"{type(exc).__name__}: {exc}")


def labeling(src: Sources, audit: dict[str, Any] | None) -> Section:
    """`audit`: reports/label_audit.json, or None when no split was audited yet."""
    parts: list[object] = [tag("h3", "Label audit")]
    if audit is None:
        status = join([badge("not audited", None), " no label audit yet"])
        parts.append(tag("p", join(["no label audit yet: run ", tag("code", "detops label audit --split val"),
                                    "."])))
    else:
        status = join([badge(f"{audit['flagged']} flagged", audit["flagged"] == 0),
                       f" of {audit['images']} image(s) in the {audit['source']}"])
        issues = ", ".join(f"{kind} {count}" for kind, count in audit["issues"].items())
        parts += [tag("p", join([status, f" ({issues}); model {audit['model']}. ",
                                 link(src.href(src.ws.output("monitor", "label_audit_page")), "Full audit")])),
                  table(["rank", "image", "quality", "issue"],
                        [[i["rank"], i["file_name"], i["quality"], i["issue"]] for i in audit["ranking"][:SHOWN]],
                        numeric=(0, 2))]
    parts.append(tag("h3", "What to label next"))
    selections = sorted(Path(src.ws.output("monitor", "selections")).glob("*/selection.json"))
    if not selections:
        parts.append(tag("p", join(["no batch ranked yet: ", tag("code", "detops label select BATCH"), "."])))
    for path in selections:
        parts.append(_selection(json.loads(path.read_text(encoding="utf-8"))))
    return Section("labeling", "Labelling", status, join(parts))


def _selection(selection: dict[str, Any]) -> Raw:
    ranking = selection["ranking"]
    chosen = sum(1 for e in ranking if e["selected"])
    figures = [tag("figure", join([Raw(f'<img src="{html.escape(e["thumbnail"])}" alt="rank {e["rank"]}">'),
                                   tag("figcaption", f"#{e['rank']} {e['file_name']} ({e['score']:.3f})")]),
                   style="display:inline-block;margin:4px;width:170px")
               for e in ranking if str(e.get("thumbnail", "")).startswith("data:image/jpeg;base64,")]
    return join([tag("p", f"batch {selection['batch']}: {chosen} of {selection['images']} image(s) selected "
                          f"({selection['method']}; model {selection['model']})"), join(figures)])
