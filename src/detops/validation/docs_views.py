"""Great Expectations Data Docs that list and lay out the results without a network.

GX 1.x draws the index's results table in the browser with bootstrap-table and jQuery fetched from CDNs, styles
every page with Bootstrap and an icon font from CDNs, and has no option to build the docs without them: offline,
the index shows no result at all and the pages are unstyled. Its custom-views folder only adds templates (GX's
own are looked up first), so detops plugs in its own view classes (the `view` of the site index builder and of
each site section builder, documented settings):
- the index's one replaced template draws that table at build time: GX's columns and cells, the pass/fail word
  beside GX's icon, and a link to each result page;
- every page gets `data_docs_offline.css` through GX's `data_docs_custom_styles.css` hook, which GX inlines
  into each page: the part of Bootstrap and Font Awesome the pages use.
GX's scripts (collapsing sections, the "failed only" filter) still come from CDNs: offline, every section shows.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BaseLoader, ChoiceLoader, DictLoader

# In place of GX's bootstrap_table.j2 (only the index uses it). GX renders each cell to HTML, as the script
# would have inserted it; rows in GX's order.
BOOTSTRAP_TABLE = """\
{% include 'content_block_header.j2' %}
{% set rows = content_block["table_data"] | render_bootstrap_table_data %}
<table class="table table-sm">
  <thead><tr>
    {% for column in content_block["table_columns"] %}<th>{{ column["title"] }}</th>{% endfor %}<th></th>
  </tr></thead>
  <tbody>
  {% for row in rows %}
    <tr>
      {% for column in content_block["table_columns"] %}
        <td>{{ row.get(column["field"], "") }}
          {%- if column["field"] == "validation_success" %} {{ row.get("_validation_success_text") }}{% endif %}</td>
      {% endfor %}
      <td>{% if row.get("_table_row_link_path") %}<a href="{{ row["_table_row_link_path"] }}">open</a>{% endif %}</td>
    </tr>
  {% endfor %}
  </tbody>
</table>
"""

STYLES = "data_docs_custom_styles.css"  # the template GX includes, inlined, in every page's <style>
INDEX_VIEW = {"module_name": __name__, "class_name": "OfflineIndexPageView"}
PAGE_VIEW = {"module_name": __name__, "class_name": "OfflinePageView"}


def offline_styles() -> str:
    return files("detops.validation").joinpath("data_docs_offline.css").read_text(encoding="utf-8")


def _put_first(view: DefaultJinjaPageView, templates: dict[str, str]) -> None:
    """`templates` win over GX's own and any custom views folder."""
    ours: list[BaseLoader] = [DictLoader(templates)]
    view.env.loader = ChoiceLoader(ours + ([view.env.loader] if view.env.loader else []))


class OfflinePageView(DefaultJinjaPageView):
    """GX's suite and result pages, laid out offline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _put_first(self, {STYLES: offline_styles()})


class OfflineIndexPageView(DefaultJinjaIndexPageView):
    """GX's index page, laid out offline, with its results table drawn at build time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _put_first(self, {"bootstrap_table.j2": BOOTSTRAP_TABLE, STYLES: offline_styles()})
