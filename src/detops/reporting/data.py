"""The data sections: the validation gate (each failed rule and the rows that broke it) and the split."""

from __future__ import annotations

from typing import Any

from detops.reporting.html import Raw, badge, esc, facts, join, link, table, tag
from detops.reporting.section import Section
from detops.reporting.sources import Sources

ROWS_SHOWN = 50  # offending rows listed on the page; reports/validation.json has all of them
SPLITS = ("train", "val", "test")
GX_OFFLINE_NOTE = (
    "Great Expectations 1.x has no option to build its Data Docs without the stylesheets, scripts and icon font it "
    "fetches from CDNs. detops draws the index's results table when the docs are built, so offline the docs still "
    "list every result and open each page, unstyled. Everything the gate found is on this page."
)


def validation(src: Sources, report: dict[str, Any]) -> Section:
    rules = report["expectations"]
    failed = [r for r in rules if not r["success"]]
    problems = report["problems"]
    counts = report["counts"]
    if report["success"]:
        status = join([badge("passed", True), f" {len(rules)} rules held"])
    elif report["policy"] == "drop" and not any(r["error"] for r in rules):
        dropped = counts["dropped"]
        status = join([badge("failed", False), f" {len(problems)} problem(s); dropped {dropped['images']} image(s),"
                       f" {dropped['boxes']} box(es), {dropped['classes']} class(es)"])
    else:
        status = join([badge("failed", False), f" {len(problems)} problem(s): the gate stopped the run"
                       f" (on_error={report['policy']})"])
    parts = [
        tag("p", status),
        facts([("dataset", report["dataset"]), ("content hash (input)", report["content_hash"]["input"]),
               ("content hash (output)", report["content_hash"]["output"]), ("on_error", report["policy"])]),
        table(["", "before", "after (kept)" if report["policy"] == "drop" else "after (would pass)", "dropped"],
              [[key, counts["before"][key], counts["after"][key], counts["dropped"][key]]
               for key in ("images", "boxes", "classes")], numeric=(1, 2, 3)),
    ]
    if failed:
        parts += [tag("h3", f"Failed rules ({len(failed)} of {len(rules)})"), _failed_rules(failed)]
    if problems:
        parts += [tag("h3", f"Offending rows ({len(problems)})"), _problems(problems)]
    passed = [r for r in rules if r["success"]]
    parts.append(tag("details", join([tag("summary", f"{len(passed)} rule(s) passed"),
                                      table(["table", "rule", "expectation", "columns"],
                                            [[r["table"], r["rule"], r["expectation"], ", ".join(r["columns"])]
                                             for r in passed])])))
    parts.append(_docs_link(src, report.get("data_docs")))
    return Section("validation", "Data validation", status, join(parts))


def _failed_rules(failed: list[dict[str, Any]]) -> Raw:
    rows = [[r["table"], tag("strong", r["rule"]), r["expectation"], ", ".join(r["columns"]),
             r["unexpected_count"], r["error"] or ", ".join(str(i) for i in r["sample_ids"])] for r in failed]
    return table(["table", "rule", "expectation", "columns", "rows", "e.g. ids / GX error"], rows, numeric=(4,))


def _problems(problems: list[dict[str, Any]]) -> Raw:
    rows = [[p["kind"], p["id"], p["label"], "; ".join(p["reasons"]), p["action"]] for p in problems[:ROWS_SHOWN]]
    out = [table(["kind", "id", "row", "rules broken", "action"], rows, numeric=(1,))]
    if len(problems) > ROWS_SHOWN:
        out.append(tag("p", f"… and {len(problems) - ROWS_SHOWN} more, every one in validation.json",
                       class_="muted"))
    return join(out)


def _docs_link(src: Sources, docs: str | None) -> Raw:
    if not docs:
        return tag("p", "Great Expectations Data Docs: not built (validate.data_docs: false).", class_="muted")
    return join([tag("p", join(["Great Expectations Data Docs: ", link(src.href(docs), docs)])),
                 tag("p", GX_OFFLINE_NOTE, class_="muted")])


def split(report: dict[str, Any]) -> Section:
    images, boxes = report["images"], report["boxes"]
    rows: list[list[Any]] = [["images", *(images[s] for s in SPLITS), images["total"]],
                             ["boxes", *(boxes[s] for s in SPLITS), boxes["total"]]]
    for name, info in report["classes"].items():
        rows.append([join([tag("code", name), " boxes (images)"]),
                     *(f"{info['boxes'][s]} ({info['images'][s]})" for s in SPLITS), info["boxes"]["total"]])
    worst, groups, kept = report["max_share_deviation_at"], report["groups"], report["assignment"]
    ratios = " / ".join(f"{report['ratios'][s]:g}" for s in SPLITS)
    status = esc(f"{images['train']} / {images['val']} / {images['test']} images (train / val / test)")
    body = join([
        tag("p", status),
        table(["", *SPLITS, "total"], rows, numeric=(1, 2, 3, 4)),
        facts([
            ("ratios (train / val / test)", ratios),
            ("largest class-share deviation", f"{report['max_share_deviation_pp']:.2f} pp"
             + (f" ({worst['class']} in {worst['split']})" if worst["class"] else "")),
            ("groups (near-duplicates kept together)", f"{groups['count']} groups, {groups['multi_image']} of more "
             f"than one image, largest {groups['largest']}, {groups['spanning_splits']} across splits"),
            ("assignment", f"{kept['kept_from_previous']} kept from the previous split,"
             f" {kept['newly_stratified'] + kept['joined_pinned_group']} newly assigned,"
             f" {kept['removed_since_previous']} removed since"),
        ]),
    ])
    return Section("split", "Split", status, body)
