"""The shipping sections: the export comparison (same rows as `reports/export.md`) and the promotion decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detops.reporting.html import badge, facts, join, link, png, table, tag
from detops.reporting.section import Section
from detops.reporting.sources import Sources


def export(src: Sources, report: dict[str, Any], plot: Path, markdown: Path) -> Section:
    from detops.export.gate import Variant
    from detops.export.report import HEADER, rows

    variants = [Variant(**v) for v in report["variants"].values()]
    rejected = [v.name for v in variants if v.accepted is False]
    deploy = report["deployable"]
    status = join([badge(f"{len(rejected)} rejected", False) if rejected else badge("all accepted", True),
                   f" deploy: CPU {deploy.get('cpu') or 'none'}, GPU {deploy.get('gpu') or 'none'}"])
    numeric = tuple(range(HEADER.index("MB"), HEADER.index("timed on")))
    parts = [
        tag("p", status),
        tag("p", f"{report['machine']}, {report['threads']} threads; gate: {report['metric']} drop ≤ "
                 f"{report['max_map_drop']:g} against the checkpoint scored through the same predictor."),
        table(HEADER, rows(variants, report["metric"]), numeric=numeric),
        tag("ul", join(tag("li", f"{v.name}: {v.reason}") for v in variants if v.reason and v.reason != "baseline")),
        png(plot, "end-to-end latency against mAP, one point per variant"),
    ]
    if markdown.is_file():
        parts.append(tag("p", join(["as markdown: ", link(src.href(markdown), markdown.name)])))
    return Section("export", "Export", status, join(parts))


def promotion(src: Sources, report: dict[str, Any], markdown: Path) -> Section:
    from detops.monitoring.production import shares_text

    d, aliases = report["decision"], report["aliases"]
    version, champion = report["version"], report.get("champion_version")
    verdict = badge("promoted", True) if d["promote"] else badge("not promoted", False)
    status = join([verdict, f" version {version}: {d['metric']} {d['candidate_value']:.4f}"
                   f" against threshold {d['threshold']:.4f}"])
    champion_label = "none" if champion is None else f"v{champion}"
    parts = [
        tag("p", status),
        facts([
            ("metric", tag("code", d["metric"])),
            (f"candidate (v{version})", d["candidate_value"]),
            (f"champion ({champion_label}, re-scored on today's test split)", d["champion_value"]),
            ("threshold the candidate had to reach", d["threshold"]),
            ("min_improvement / min_metric", f"{d['min_improvement']:g} / {d['min_metric']:g}"),
            ("comparable champion (same classes)", d["comparable"]),
            ("champion's training images in today's test split", d["overlap"]),
            ("candidate on production shares it did not train on", shares_text(report.get("production_shares"))),
            ("aliases after", ", ".join(f"{k}: v{v}" for k, v in aliases.items()
                                        if k in ("champion", "previous", "challenger") and v) or "none"),
            ("model", f"{report['model_uri']} (serves {report['serve']})"),
            ("training run", report["run_id"]),
            ("registered", "new version" if report["registered"] else "already registered"),
        ]),
        tag("p", join([tag("strong", "reason: "), d["reason"]])),
    ]
    parts += [tag("p", note, class_="muted") for note in aliases.get("notes", [])]
    if markdown.is_file():
        parts.append(tag("p", join(["as markdown: ", link(src.href(markdown), markdown.name)])))
    return Section("promotion", "Promotion", status, join(parts))
