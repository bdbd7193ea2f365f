"""Great Expectations Data Docs whose index lists the results without a network.

GX 1.x draws the index's results table in the browser with bootstrap-table and jQuery fetched from CDNs, and has
no option to build the docs without them: offline, the index shows no result at all. Its custom-views folder only
adds templates (GX's own are looked up first), so detops plugs in its own index view class (the site index
builder's `view`, a documented setting) whose one replaced template draws that table at build time: GX's columns
and cells, the pass/fail word beside GX's icon (an icon font, also from a CDN), and a link to each result page.
Pages still name GX's CDN stylesheets and scripts: online they load, offline the pages show unstyled, with every
result. `reports/index.html` is the page that needs no network.
"""

from __future__ import annotations

from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView
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

INDEX_VIEW = {"module_name": __name__, "class_name": "OfflineIndexPageView"}


class OfflineIndexPageView(DefaultJinjaIndexPageView):
    """GX's index page with its results table drawn at build time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ours: list[BaseLoader] = [DictLoader({"bootstrap_table.j2": BOOTSTRAP_TABLE})]
        self.env.loader = ChoiceLoader(ours + ([self.env.loader] if self.env.loader else []))
