"""A labelling model that has learned something, for the audit and selection tests (the session fixture
`labelling_model` in conftest.py trains it once): the sample generator's easy setting (upright shapes, high
contrast, 64 px) trained by the `train` step for a few CPU seconds. Its batches come from the same generator with
other seeds, so the model knows their distribution; `noisy` makes images it is unsure of.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detops.config import load_params
from detops.config.sample import SampleParams
from detops.dataset.canonical import subset, write_dataset
from detops.dataset.images import probe_images
from detops.formats import read_source
from detops.formats.source import to_canonical
from detops.sample.generate import generate_sample
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle"]
TRAIN_IMAGES, VAL_IMAGES = 64, 8
# about 480 steps of a 0.4 M-parameter detector: val mAP 0.6-0.75 over train seeds 0-2. (At lr 0.01 and 40
# epochs it reached 0.22-0.4, depending on the CPU's arithmetic and the seed: too little to tell noisy from clean.)
TRAIN = ("train.backbone=test_resnet", "train.fpn_channels=32", "train.head_convs=1", "train.image_size=64",
         "train.batch_size=8", "train.epochs=60", "train.num_workers=0", "train.patience=0", "train.lr=0.005",
         "train.warmup_epochs=0.5", "evaluate.batch_size=8")


def easy_sample(out: Path, seed: int, num_images: int) -> Path:
    """`num_images` of the distribution the model learned: up to two upright shapes of 20-38 px, high contrast."""
    generate_sample(out, SampleParams(
        num_images=num_images, image_size=64, classes=CLASSES, class_weights=[1, 1, 1], typical_object_size=26,
        min_object_size=20, max_object_size=38, max_objects_per_image=2, max_rotation=0, blur_probability=0,
        texture=0, noise_std=2, min_contrast=0.4, lighting=0, seed=seed, workers=1))
    return out


def noisy(image: Image.Image, seed: int) -> Image.Image:
    """The image under strong pixel noise (std 25 grey levels): the shapes are still plain to see, but the model
    answers with many boxes it cannot decide on."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 25, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def train_labelling_model(root: Path) -> Path:
    """Train on the easy sample (seed 100) in a workspace of its own; the best checkpoint's path."""
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    raw = easy_sample(root / "data/raw/easy", seed=100, num_images=TRAIN_IMAGES + VAL_IMAGES)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        ws = Workspace.at(root, load_params(root / "params.yaml", TRAIN))
        source = read_source("coco", raw)
        dataset, _ = to_canonical(source, probe_images(source.image_paths()), ws.relative(raw))
        ids = [im["id"] for im in dataset["images"]]
        for name, part in (("train", ids[:TRAIN_IMAGES]), ("val", ids[TRAIN_IMAGES:]), ("test", ids[TRAIN_IMAGES:])):
            write_dataset(ws.split_json(name), subset(dataset, part))
        import torch

        from detops.steps import train

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 0.4 M-parameter model: on a busy machine, more threads only wait on each other
        try:
            train.run(ws)
        finally:
            torch.set_num_threads(threads)
    return ws.output("train", "best")
