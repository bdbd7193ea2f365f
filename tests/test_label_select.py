"""What to label next: the uncertainty measure, the uncertainty-weighted k-center ranking, and `detops label select`
with a trained labelling model on a real batch (noisy images, which the model is unsure of, ranked above clean ones;
selection file, budget, thumbnails, the landing batch untouched, `read_selection`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _labelling_model import easy_sample, noisy
from PIL import Image
from typer.testing import CliRunner

from detops.cli import app
from detops.errors import DataError
from detops.labeling.select import image_uncertainty, rank_for_labelling, read_selection

REPO = Path(__file__).resolve().parents[1]


def test_uncertainty_adds_up_the_undecided_boxes() -> None:
    assert image_uncertainty(np.array([])) == 0.0
    assert image_uncertainty(np.array([0.5])) == pytest.approx(1.0)
    assert image_uncertainty(np.array([0.5, 0.5, 0.999])) == pytest.approx(2.0, abs=0.02)
    assert image_uncertainty(np.array([0.99, 0.95])) < image_uncertainty(np.array([0.99, 0.7]))
    assert image_uncertainty(np.array([0.05, 0.95])) < image_uncertainty(np.array([0.5]))
    # from a floor up: a hundred background boxes the model has ruled out add nothing
    assert image_uncertainty(np.array([0.1] * 100 + [0.95]), 0.3) < image_uncertainty(np.array([0.5, 0.5]), 0.3)
    assert image_uncertainty(np.array([0.1] * 100 + [0.95])) > image_uncertainty(np.array([0.5, 0.5]))


def test_ranking_prefers_uncertain_images_but_not_near_duplicates() -> None:
    rng = np.random.default_rng(0)
    burst = rng.normal(0, 0.01, (5, 8)) + np.eye(8)[0]  # five near-identical frames, all uncertain
    others = np.eye(8)[1:6] + rng.normal(0, 0.01, (5, 8))  # five different scenes, less uncertain
    uncertainty = np.array([0.95, 0.96, 0.97, 0.98, 0.99, 0.5, 0.45, 0.4, 0.35, 0.3])
    order, gains, distances = rank_for_labelling(uncertainty, np.vstack([burst, others]))
    assert order[0] == 4  # the most uncertain first
    assert sum(int(i) < 5 for i in order[:4]) == 1  # one frame of the burst in the top 4, not four
    assert list(order[1:4]) == [5, 6, 7]  # then the other scenes by uncertainty
    assert sorted(order.tolist()) == list(range(10)) and np.all(np.diff(gains[:6]) <= 1e-12)
    assert distances[0] == 1.0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with an unlabelled batch of 24 images of the labelling model's distribution, every other one
    under strong noise (`noisy-*.png`, the others `clean-*.png`)."""
    root = tmp_path_factory.mktemp("select")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    source = easy_sample(root / "seed2", seed=2, num_images=24)
    batch = root / "data/landing/night"
    batch.mkdir(parents=True)
    for i, path in enumerate(sorted((source / "images").glob("*.png"))):
        with Image.open(path) as image:
            picture = image.convert("RGB")
        (noisy(picture, seed=i) if i % 2 else picture).save(batch / f"{'noisy' if i % 2 else 'clean'}-{i:02d}.png")
    (batch / "_READY").touch()
    yield root


def test_label_select_ranks_a_batch_within_the_budget(root: Path, labelling_model: Path) -> None:
    batch = root / "data/landing/night"
    before = {p.name: p.read_bytes() for p in batch.iterdir()}
    result = CliRunner().invoke(app, ["-w", str(root), "--set", "label.thumbnails=3", "label", "select", "night",
                                      "--budget", "5", "--model", str(labelling_model)])
    assert result.exit_code == 0, result.output
    assert "5 of 24 image(s) selected" in result.output
    selection = json.loads((root / "reports/labeling/selections/night/selection.json").read_text())
    ranking = selection["ranking"]
    assert [e["rank"] for e in ranking] == list(range(1, 25))
    assert sorted(e["file_name"] for e in ranking) == sorted(p for p in before if p.endswith(".png"))
    assert [e["selected"] for e in ranking] == [True] * 5 + [False] * 19
    assert [bool(e.get("thumbnail", "").startswith("data:image/jpeg;base64,")) for e in ranking[:4]] == [
        True, True, True, False]
    from detops.config import load_params
    from detops.workspace import Workspace

    ws = Workspace.at(root, load_params(root / "params.yaml"))
    chosen = read_selection(ws, "night")
    assert [(c.file_name, c.rank) for c in chosen] == [(e["file_name"], e["rank"]) for e in ranking[:5]]
    assert before == {p.name: p.read_bytes() for p in batch.iterdir()}  # raw data never modified

    # the images the model is unsure of come first: higher uncertainty, and ranked above the clean ones
    noisy_ones = [e for e in ranking if e["file_name"].startswith("noisy")]
    clean_ones = [e for e in ranking if e["file_name"].startswith("clean")]
    assert len(noisy_ones) == len(clean_ones) == 12
    assert np.median([e["uncertainty"] for e in noisy_ones]) > 2 * np.median([e["uncertainty"] for e in clean_ones])
    # the budget goes to them first; diversity spreads the picks (the noisy images look alike to the model)
    assert ranking[0]["file_name"].startswith("noisy"), ranking[:5]
    assert sum(e["file_name"].startswith("noisy") for e in ranking[:5]) >= 3, ranking[:5]


def test_a_missing_batch_or_selection_is_a_clear_error(root: Path, labelling_model: Path) -> None:
    result = CliRunner().invoke(app, ["-w", str(root), "label", "select", "nope", "--model", str(labelling_model)])
    assert result.exit_code != 0 and "batch 'nope'" in result.output
    from detops.config import load_params
    from detops.workspace import Workspace

    with pytest.raises(DataError, match="detops label select nope"):
        read_selection(Workspace.at(root, load_params(root / "params.yaml")), "nope")


def test_without_a_champion_selection_says_so(root: Path) -> None:
    result = CliRunner().invoke(app, ["-w", str(root), "label", "select", "night"])
    assert result.exit_code != 0 and "champion" in result.output and "label.model" in result.output
