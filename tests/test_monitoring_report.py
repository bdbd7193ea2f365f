"""The drift report as a person sees it: rendered by headless chromium with no network, the drifted columns in the
visible text (not only in the JSON the page embeds), and a screenshot kept beside it."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _monitoring_fixtures import batch_from, darker, sample, workspace, write_train_split
from PIL import Image
from typer.testing import CliRunner

from detops.cli import app
from detops.monitoring.browser import dump_dom

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.chromium  # skipped without chromium, failed where CI requires it


class _VisibleText(HTMLParser):
    """Text a reader can see: everything outside <script>, <style> and <template>."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hidden += tag in ("script", "style", "template")

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("script", "style", "template")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


class _Resources(HTMLParser):
    """URLs a browser fetches by itself: script, stylesheet, image, frame and media sources."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src", "video": "src"}
        url = dict(attrs).get(wanted.get(tag, ""))
        if url:
            self.urls.append(url)


def remote_resources(html: str) -> list[str]:
    parser = _Resources()
    parser.feed(html)
    return [u for u in parser.urls if re.match(r"^(https?:)?//", u, flags=re.IGNORECASE)]


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """A darkened batch checked through the CLI, screenshot on."""
    root = tmp_path_factory.mktemp("report")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    write_train_split(workspace(root), sample(root / "data/raw/sample", seed=0, num_images=60))
    batch_from(sample(root / "seed1", seed=1, num_images=60), root / "data/landing", "dark", darker)
    result = CliRunner().invoke(app, ["--workspace", str(root), "--set", "monitor.screenshot=true", "monitor",
                                      "--batch", "dark"])
    assert result.exit_code == 0, result.output
    assert "drift" in result.output
    check = json.loads((root / "reports/drift/verdict.json").read_text(encoding="utf-8"))["checks"][0]
    yield root, check


def test_the_rendered_report_names_each_drifted_column(checked: tuple[Path, dict]) -> None:
    root, check = checked
    html = root / check["reports"]["html"]
    assert "brightness" in check["drifted_columns"]
    static = visible_text(html.read_text(encoding="utf-8"))
    assert "Drift in column" not in static, "before its scripts run, the page shows nothing: the test needs chromium"

    text = visible_text(dump_dom(html))
    for column in check["comparison"]["columns"]:
        said = re.search(rf"Drift in column '{re.escape(column['column'])}' Data drift (not )?detected", text)
        assert said, f"{column['column']} not in the rendered page"
        assert (said.group(1) is None) == column["drifted"], said.group(0)
    assert "Count of Drifted Columns" in text


def test_the_report_renders_offline(checked: tuple[Path, dict]) -> None:
    """Evidently inlines its scripts and font: neither the file nor the page its scripts build loads anything from
    the network (which the browser here cannot reach anyway: the page above rendered without it)."""
    root, check = checked
    html = root / check["reports"]["html"]
    assert remote_resources(html.read_text(encoding="utf-8")) == []
    assert remote_resources(dump_dom(html)) == []


def test_a_screenshot_is_kept_beside_the_report(checked: tuple[Path, dict]) -> None:
    root, check = checked
    png = root / check["reports"]["screenshot"]
    assert png.parent == (root / check["reports"]["html"]).parent
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1280, 2400)
        low, high = image.convert("L").getextrema()
        assert isinstance(low, int) and isinstance(high, int) and high - low > 100, "a blank page"
