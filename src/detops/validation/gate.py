"""The data quality gate on an in-memory dataset: build the tables, run the GX suites, decide what passes.

`validate_dataset` reads no image (the integrity table comes in precomputed), so the step, the
tests and the benchmark run exactly the same code on the same tables.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from detops.config.validate import ValidateParams
from detops.dataset.canonical import Dataset, annotation_hash
from detops.validation.table import annotation_table, category_table, image_table

if TYPE_CHECKING:
    from detops.validation.suite import Rule

Kind = Literal["image", "annotation", "category"]
SAMPLE_IDS = 10  # offending ids listed per expectation in the report


@dataclass
class RuleOutcome:
    """GX's verdict on one expectation, with a few offending ids."""

    rule: str
    table: str
    expectation: str
    columns: list[str]
    success: bool
    unexpected_count: int
    sample_ids: list[Any]
    error: str = ""


@dataclass
class Problem:
    """One offending image, box or class and every rule it breaks."""

    kind: Kind
    id: Any
    label: str  # e.g. "annotation 1234 (BloodImage_00338.jpg, RBC)"
    reasons: list[str]
    boxes: int = 0  # boxes that go with it when an image or class is dropped

    def message(self) -> str:
        return f"{self.label}: {'; '.join(self.reasons)}"


@dataclass
class ValidationOutcome:
    """What the gate found and the dataset that passes it (the cleaned one in `drop` mode)."""

    policy: Literal["fail", "drop"]
    success: bool  # the input met every expectation
    dataset: Dataset  # input unchanged in `fail` mode; without the offending rows in `drop` mode
    rules: list[RuleOutcome]
    problems: list[Problem]
    counts: dict[str, dict[str, int]]  # before / after: images, boxes, classes
    content_hash: dict[str, str]  # input / output
    docs_index: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> list[RuleOutcome]:
        """Expectations GX could not evaluate: the gate cannot vouch for the data, whatever the policy."""
        return [r for r in self.rules if r.error]


def validate_dataset(
    dataset: Dataset, integrity: pd.DataFrame, params: ValidateParams, docs_dir: Path | None = None
) -> ValidationOutcome:
    """Run every rule through GX; `integrity` is `check_images`' table (one row per image, in order)."""
    from detops.validation.suite import GxSession, annotation_rules, category_rules, image_rules

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    images, annotations, categories = dataset["images"], dataset["annotations"], dataset["categories"]
    boxes = annotation_table(dataset, params.bbox_tolerance_px)
    pictures = image_table(dataset, integrity)
    lap("tables_s")
    session = GxSession()
    lap("gx_setup_s")
    image_checks = image_rules(params)
    box_checks = annotation_rules(params, {c.get("id") for c in categories})
    image_results = session.validate("images", pictures, image_checks)
    box_results = session.validate("annotations", boxes, box_checks)
    lap("gx_validate_s")

    rules: list[RuleOutcome] = []
    bad_images = _offending("images", "image_id", pictures, image_checks, image_results, rules)
    bad_boxes = _offending("annotations", "ann_id", boxes, box_checks, box_results, rules)
    kept_image_ids = {im.get("id") for pos, im in enumerate(images) if pos not in bad_images}
    kept_boxes = [
        a for pos, a in enumerate(annotations) if pos not in bad_boxes and a.get("image_id") in kept_image_ids
    ]
    lap("reasons_s")

    classes = category_table(dataset, kept_boxes)
    lap("tables_s")
    class_checks = category_rules(params)
    class_results = session.validate("categories", classes, class_checks)
    lap("gx_validate_s")
    bad_classes = _offending("categories", "category_id", classes, class_checks, class_results, rules)
    dropped_class_ids = {classes.at[pos, "category_id"] for pos in bad_classes}
    cleaned = {
        **dataset,
        "images": [im for pos, im in enumerate(images) if pos not in bad_images],
        "annotations": [a for a in kept_boxes if a.get("category_id") not in dropped_class_ids],
        "categories": [c for pos, c in enumerate(categories) if pos not in bad_classes],
    }
    problems = (
        _problems("image", bad_images, pictures, _image_label, "n_boxes")
        + _problems("annotation", bad_boxes, boxes, _box_label, None)
        + _problems("category", bad_classes, classes, _class_label, "n_boxes")
    )
    success = not problems and not any(r.error for r in rules)
    lap("reasons_s")
    hashes = {"input": content_hash(dataset)}
    if params.on_error == "drop" and problems:
        hashes["output"] = content_hash(cleaned)
        info = cleaned.get("info")
        if isinstance(info, dict) and "content_hash" in info:
            cleaned["info"] = {**info, "content_hash": hashes["output"]}
        output = cleaned
    else:
        hashes["output"] = hashes["input"]
        output = dataset
    lap("hash_s")

    docs_index = session.build_docs(docs_dir) if docs_dir is not None else None
    lap("gx_docs_s")
    return ValidationOutcome(
        policy=params.on_error,
        success=success,
        dataset=output,
        rules=rules,
        problems=problems,
        counts={"before": _counts(dataset), "after": _counts(cleaned)},
        content_hash=hashes,
        docs_index=docs_index,
        timings={k: round(v, 4) for k, v in timings.items()},
    )


def _offending(
    table: str,
    id_column: str,
    frame: pd.DataFrame,
    rules: list[Rule],
    results: dict[str, Any],
    out: list[RuleOutcome],
) -> dict[int, list[str]]:
    """Row position -> reasons, from GX's unexpected index lists; appends one RuleOutcome per rule to `out`."""
    reasons: dict[int, list[str]] = {}
    for rule in rules:
        res = results[rule.name]
        config = res.expectation_config
        columns = [c for c in (config.kwargs.get(k) for k in ("column", "column_A", "column_B")) if c]
        error = ""
        if res.exception_info and res.exception_info.get("raised_exception"):
            error = str(res.exception_info.get("exception_message") or "GX raised an exception")
        positions = sorted(res.result.get("unexpected_index_list") or []) if not res.success else []
        out.append(
            RuleOutcome(
                rule=rule.name,
                table=table,
                expectation=config.type,
                columns=columns,
                success=bool(res.success),
                unexpected_count=len(positions),
                sample_ids=_jsonable(frame[id_column].iloc[positions[:SAMPLE_IDS]].tolist()),
                error=error,
            )
        )
        if positions:
            for pos, row in zip(positions, frame.iloc[positions].itertuples(index=False), strict=True):
                reasons.setdefault(int(pos), []).append(rule.reason(row))
    return reasons


def _problems(
    kind: Kind, bad: dict[int, list[str]], frame: pd.DataFrame, label: Any, boxes_column: str | None
) -> list[Problem]:
    rows = frame.iloc[sorted(bad)]
    return [
        Problem(
            kind=kind,
            id=_jsonable(getattr(row, _ID_COLUMN[kind])),
            label=label(row),
            reasons=bad[int(pos)],
            boxes=int(getattr(row, boxes_column)) if boxes_column else 0,
        )
        for pos, row in zip(sorted(bad), rows.itertuples(index=False), strict=True)
    ]


_ID_COLUMN = {"image": "image_id", "annotation": "ann_id", "category": "category_id"}


def _image_label(row: Any) -> str:
    return f"image {row.image_id} ({row.file_name})"


def _box_label(row: Any) -> str:
    image = row.file_name if row.image_found and isinstance(row.file_name, str) else f"image {row.image_id}"
    category = row.category if isinstance(row.category, str) else f"category {row.category_id}"
    return f"annotation {row.ann_id} ({image}, {category})"


def _class_label(row: Any) -> str:
    return f"class {row.name} (id {row.category_id})"


def _counts(dataset: Dataset) -> dict[str, int]:
    return {
        "images": len(dataset["images"]),
        "boxes": len(dataset["annotations"]),
        "classes": len(dataset["categories"]),
    }


def content_hash(dataset: Dataset) -> str:
    """The dataset's version id (`annotation_hash`); a hash of the raw json when malformed boxes defeat it."""
    try:
        return annotation_hash(dataset)
    except (KeyError, TypeError, ValueError):
        blob = json.dumps(dataset, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """Plain JSON values for the report: numpy scalars unwrapped, NaN as null."""
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
