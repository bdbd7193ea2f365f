"""The Great Expectations suites of the gate, and the one ephemeral GX context that runs them.

Each rule pairs a GX expectation with a sentence that says why one offending row breaks it, so a
failed run names the box or file and the param involved. GX is imported here, and this module is
only imported when the gate runs (GX takes seconds to import).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from detops.atomic import atomic_dir
from detops.config.validate import ValidateParams

Row = Any  # a namedtuple from DataFrame.itertuples(): one offending row, its columns as attributes
DOCS_SITE = "detops"
# COMPLETE: GX returns the index (= position in the dataset's list) of every offending row.
RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 20, "include_unexpected_rows": False}


@dataclass(frozen=True)
class Rule:
    """One expectation, keyed by `name`, and how to explain a row that breaks it."""

    name: str
    expectation: gxe.Expectation
    reason: Callable[[Row], str]


def num(value: Any) -> str:
    """A number for messages, never hiding a fraction: 0.0, 1.0, 12.25, NaN."""
    if isinstance(value, float):
        if value != value:
            return "NaN"
        text = f"{value:.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    return str(value)


def _rule(name: str, expectation: type[gxe.Expectation], reason: Callable[[Row], str], why: str, **kw: Any) -> Rule:
    """`meta.rule` ties GX's result back to the rule; `notes` explains the rule in the Data Docs."""
    return Rule(name, expectation(meta={"rule": name}, notes=why, **kw), reason)


def _says(text: str) -> Callable[[Row], str]:
    return lambda _row: text


def _value_says(column: str, template: str) -> Callable[[Row], str]:
    return lambda row: template.format(num(getattr(row, column)))


def _values_say(first: str, second: str, template: str) -> Callable[[Row], str]:
    return lambda row: template.format(num(getattr(row, first)), num(getattr(row, second)))


def annotation_rules(p: ValidateParams, category_ids: Collection[Any]) -> list[Rule]:
    """Rules over the box table (one row per annotation, joined with its image's json size)."""
    tol = p.bbox_tolerance_px
    rules = [
        _rule(
            "annotation_id_unique",
            gxe.ExpectColumnValuesToBeUnique,
            lambda r: f"annotation id {r.ann_id} is used by more than one box",
            "Annotation ids are unique.",
            column="ann_id",
        ),
        _rule(
            "image_exists",
            gxe.ExpectColumnValuesToBeInSet,
            lambda r: f"image_id {r.image_id!r} is not in images",
            "Every box's image_id is one of the images.",
            column="image_found",
            value_set=[True],
        ),
        _rule(
            "category_known",
            gxe.ExpectColumnValuesToBeInSet,
            lambda r: f"category_id {r.category_id!r} is not in categories",
            "Every box's category_id is one of the categories.",
            column="category_id",
            value_set=list(category_ids),
        ),
    ]
    rules += [
        _rule(
            f"bbox_{col}_not_null",
            gxe.ExpectColumnValuesToNotBeNull,
            _says(f"bbox {col} is missing or NaN"),
            f"Every box has a number for {col}.",
            column=col,
        )
        for col in ("x", "y", "w", "h")
    ]
    rules += [
        _rule(
            "box_width_positive",
            gxe.ExpectColumnValuesToBeBetween,
            lambda r: f"width {num(r.w)} is not positive",
            "Box width is positive.",
            column="w",
            min_value=0,
            strict_min=True,
        ),
        _rule(
            "box_height_positive",
            gxe.ExpectColumnValuesToBeBetween,
            lambda r: f"height {num(r.h)} is not positive",
            "Box height is positive.",
            column="h",
            min_value=0,
            strict_min=True,
        ),
        _rule(
            "box_area_min",
            gxe.ExpectColumnValuesToBeBetween,
            lambda r: f"area {num(r.area)} below min_box_area {num(p.min_box_area)}",
            "Box area (w*h) is at least validate.min_box_area.",
            column="area",
            min_value=p.min_box_area,
        ),
        _rule(
            "box_inside_left",
            gxe.ExpectColumnValuesToBeBetween,
            lambda r: f"x {num(r.x)} is left of the image (tolerance {num(tol)} px)",
            "Box starts inside the image, give or take validate.bbox_tolerance_px.",
            column="x",
            min_value=-tol,
        ),
        _rule(
            "box_inside_top",
            gxe.ExpectColumnValuesToBeBetween,
            lambda r: f"y {num(r.y)} is above the image (tolerance {num(tol)} px)",
            "Box starts inside the image, give or take validate.bbox_tolerance_px.",
            column="y",
            min_value=-tol,
        ),
        _rule(
            "box_inside_right",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB,
            lambda r: (
                f"right edge x+w {num(r.x2)} is past the image width {num(r.image_width)} (tolerance {num(tol)} px)"
            ),
            "x + w is at most the image width + validate.bbox_tolerance_px (width_limit).",
            column_A="width_limit",
            column_B="x2",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
        ),
        _rule(
            "box_inside_bottom",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB,
            lambda r: (
                f"bottom edge y+h {num(r.y2)} is past the image height {num(r.image_height)} (tolerance {num(tol)} px)"
            ),
            "y + h is at most the image height + validate.bbox_tolerance_px (height_limit).",
            column_A="height_limit",
            column_B="y2",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
        ),
    ]
    return rules


def image_rules(p: ValidateParams) -> list[Rule]:
    """Rules over the image table (one row per image, with the integrity check of its file)."""
    rules = [
        _rule(
            "image_id_unique",
            gxe.ExpectColumnValuesToBeUnique,
            lambda r: f"image id {r.image_id} is used by more than one image",
            "Image ids are unique.",
            column="image_id",
        ),
        _rule(
            "file_readable",
            gxe.ExpectColumnValuesToBeInSet,
            lambda r: str(r.problem),
            "The file exists and decodes completely (checked before GX runs, in parallel).",
            column="readable",
            value_set=[True],
        ),
        _rule(
            "format_matches_extension",
            gxe.ExpectColumnPairValuesToBeEqual,
            lambda r: f"the file holds {r.file_format} data but its extension promises {r.ext_format}",
            "The decoded format is the one the file extension names (e.g. no PNG renamed .jpg).",
            column_A="file_format",
            column_B="ext_format",
            ignore_row_if="either_value_is_missing",
        ),
        _rule(
            "boxes_per_image_max",
            gxe.ExpectColumnValuesToBeBetween,
            lambda r: f"{r.n_boxes} boxes, above max_boxes_per_image {p.max_boxes_per_image}",
            "An image holds at most validate.max_boxes_per_image boxes.",
            column="n_boxes",
            max_value=p.max_boxes_per_image,
        ),
    ]
    for side, file_side in (("width", "file_width"), ("height", "file_height")):
        rules += [
            _rule(
                f"image_{side}_not_null",
                gxe.ExpectColumnValuesToNotBeNull,
                _says(f"json {side} is missing"),
                f"Every image has a {side}.",
                column=side,
            ),
            _rule(
                f"image_{side}_positive",
                gxe.ExpectColumnValuesToBeBetween,
                _value_says(side, f"json {side} {{}} is not positive"),
                f"Image {side} is at least 1 pixel.",
                column=side,
                min_value=1,
            ),
            _rule(
                f"image_{side}_matches_file",
                gxe.ExpectColumnPairValuesToBeEqual,
                _values_say(side, file_side, f"json {side} {{}} but the file's {side} is {{}}"),
                f"The json {side} is the file's real {side}.",
                column_A=side,
                column_B=file_side,
                ignore_row_if="either_value_is_missing",
            ),
        ]
    return rules


def category_rules(p: ValidateParams) -> list[Rule]:
    """Rules over the class table (one row per category, counting the boxes that passed the other rules)."""
    return [
        _rule(
            "category_id_unique",
            gxe.ExpectColumnValuesToBeUnique,
            lambda r: f"category id {r.category_id} is listed more than once",
            "Category ids are unique.",
            column="category_id",
        ),
        _rule(
            "instances_per_class_min",
            gxe.ExpectColumnValuesToBeBetween,
            lambda r: f"{r.n_boxes} boxes, below min_instances_per_class {p.min_instances_per_class}",
            "Every class keeps at least validate.min_instances_per_class boxes.",
            column="n_boxes",
            min_value=p.min_instances_per_class,
        ),
    ]


def _rule_name(result: Any) -> str:
    config = result.expectation_config
    assert config is not None and config.meta, "every expectation of a detops suite carries meta.rule"
    return str(config.meta["rule"])


class GxSession:
    """One in-memory GX context per gate run: nothing lands on disk except the Data Docs asked for."""

    def __init__(self) -> None:
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(project_config=config, mode="ephemeral")
        self.source = self.context.data_sources.add_pandas("detops")

    def validate(self, table: str, frame: pd.DataFrame, rules: list[Rule]) -> dict[str, Any]:
        """Run the suite of `rules` on `frame`; GX's result per rule name."""
        batch = self.source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = self.context.suites.add(gx.ExpectationSuite(name=table, expectations=[r.expectation for r in rules]))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=table, data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT)
        return {_rule_name(res): res for res in result.results}

    def build_docs(self, target: Path) -> Path:
        """Render the suites and their results as HTML into `target` (replaced as a whole); its index page.

        The index's results table is drawn at build time and every page carries its own layout (`docs_views`), so
        the docs read offline too."""
        from detops.validation.docs_views import INDEX_VIEW, PAGE_VIEW

        with atomic_dir(target) as tmp:
            site = {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(tmp)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": INDEX_VIEW},
                "site_section_builders": {section: {"view": PAGE_VIEW} for section in ("expectations", "validations")},
                "show_how_to_buttons": False,  # GX's tutorial links: noise in a pipeline's report
            }
            self.context.add_data_docs_site(DOCS_SITE, site)  # type: ignore[arg-type]
            self.context.build_data_docs(site_names=[DOCS_SITE])
        return target / "index.html"
