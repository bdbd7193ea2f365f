"""The soak's outside world (benchmarks/soak.py): the images users send, the bounded client that sends them, and the
labeller who answers Label Studio's tasks.

- Two pools of held-out images with their ground truth, made by the sample generator with seeds the training data
  never used: `before` looks like the training data; `after` (the shift) has smaller objects and is darker, so the
  drift the monitor finds is real.
- `Traffic`: an open-loop client at a fixed rate (requests are sent on schedule, whatever the answers take, as users
  do), alternating between the replicas, each answer recorded (time, replica, status, latency, version). It sends a
  bounded number of requests (rate x seconds) to loopback, then stops.
- `Labeller`: polls Label Studio's API for tasks without annotations and answers each with the image's ground truth,
  found by the image's hash (a captured image is the body as sent): most at once, some late, a few with one box
  wrong on purpose (moved or relabelled), as people do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from detops.config.sample import SampleParams
from detops.sample.generate import ANNOTATIONS_FILE, PNG_COMPRESSION, generate_sample

Box = list[Any]  # x, y, w, h (pixels), class name


@dataclass
class Pool:
    images: list[bytes]
    truth: dict[str, list[Box]]  # sha1 of the image bytes -> its boxes
    size: tuple[int, int]


def make_pool(out: Path, base: SampleParams, seed: int, num_images: int, shifted: bool) -> Pool:
    """`num_images` images of the generator at `seed`; `shifted`: objects at most half the size, images darker."""
    changes: dict[str, Any] = {"seed": seed, "num_images": num_images, "workers": 1}
    if shifted:
        smaller = max(base.min_object_size + 4, base.max_object_size // 2)
        changes.update(max_object_size=smaller, typical_object_size=min(smaller, base.typical_object_size // 2))
    params = SampleParams.model_validate({**base.model_dump(), **changes})
    generate_sample(out, params)
    coco = json.loads((out / ANNOTATIONS_FILE).read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    boxes: dict[int, list[Box]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        boxes[ann["image_id"]].append([*ann["bbox"], names[ann["category_id"]]])
    images, truth = [], {}
    for im in coco["images"]:
        path = out / im["file_name"]
        if shifted:
            with Image.open(path) as img:
                dark = np.round(np.asarray(img.convert("RGB"), dtype=np.float32) * 0.55).astype(np.uint8)
            Image.fromarray(dark).save(path, format="PNG", compress_level=PNG_COMPRESSION)
        data = path.read_bytes()
        images.append(data)
        truth[hashlib.sha1(data).hexdigest()] = boxes[im["id"]]
    return Pool(images, truth, (params.image_size, params.image_size))


@dataclass
class Answer:
    at: float  # seconds since the soak's start, when the request was sent
    replica: int
    status: int  # 0: no HTTP answer (connection refused or reset)
    latency: float
    version: str | None


class Traffic:
    """Requests at `rate` per second to `urls` in turn, from `before`, then from `after` once `shift()` was called,
    until `stop()`; every answer is kept in `answers`."""

    def __init__(self, urls: list[str], before: Pool, after: Pool, rate: float, seed: int, t0: float) -> None:
        self.urls, self.before, self.after, self.rate, self.t0 = urls, before, after, rate, t0
        self.rng = random.Random(seed)
        self.shifted_at: float | None = None
        self.unshifted_at: float | None = None
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shift(self) -> None:
        self.shifted_at = time.monotonic() - self.t0

    def unshift(self) -> None:
        """The shift passes: images like the training data again."""
        self.unshifted_at = time.monotonic() - self.t0

    def phase(self, at: float) -> str:
        if self.shifted_at is None or at < self.shifted_at:
            return "before the shift"
        return "after the shift" if self.unshifted_at is None or at < self.unshifted_at else "the shift over (drain)"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            pending: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                due = started + sent / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                pool = self.after if self.shifted_at is not None and self.unshifted_at is None else self.before
                task = asyncio.create_task(self._one(session, sent % len(self.urls), self.rng.choice(pool.images)))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            if pending:
                await asyncio.wait(pending, timeout=40)

    async def _one(self, session: Any, replica: int, image: bytes) -> None:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("image", image, filename="image.png", content_type="image/png")
        sent = time.monotonic()
        status, version = 0, None
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
            async with session.post(f"{self.urls[replica]}/predict", data=form,
                                    headers={"X-Request-Id": uuid.uuid4().hex}) as response:
                await response.read()
                status, version = response.status, response.headers.get("X-Model-Version")
        self.answers.append(Answer(sent - self.t0, replica, status, time.monotonic() - sent, version))


class Labeller:
    """Answers Label Studio's open tasks with the ground truth of their images (found under `document_root`)."""

    def __init__(self, url: str, token: str, document_root: Path, truth: dict[str, list[Box]], size: tuple[int, int],
                 seed: int, late_share: float = 0.2, late_seconds: float = 90, wrong_share: float = 0.05) -> None:
        self.url, self.token, self.document_root, self.truth, self.size = url, token, document_root, truth, size
        self.rng = random.Random(seed)
        self.late_share, self.late_seconds, self.wrong_share = late_share, late_seconds, wrong_share
        self.due: dict[int, float] = {}  # task id -> when the labeller gets to it
        self.done: set[int] = set()
        self.wrong: set[int] = set()
        self.late: set[int] = set()
        self.unknown: set[int] = set()  # images whose ground truth was not found (never expected)
        self.errors = 0  # calls that failed (the server down): retried on the next round
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _api(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        response = client.request(method, self.url + path, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Token {self.token}"}, timeout=30) as client:
            while not self._stop.wait(3):
                try:
                    self._round(client)
                except (httpx.HTTPError, OSError, ValueError, KeyError):
                    self.errors += 1

    def _round(self, client: httpx.Client) -> None:
        projects = self._api(client, "GET", "/api/projects/", params={"page_size": 1000})
        for project in projects.get("results", projects) if isinstance(projects, dict) else projects:
            listing = self._api(client, "GET", "/api/tasks/", params={"project": project["id"], "page_size": 1000})
            tasks = listing.get("tasks", listing) if isinstance(listing, dict) else listing
            for task in tasks:
                task_id = int(task["id"])
                if task_id in self.done or task.get("total_annotations") or task.get("is_labeled"):
                    continue
                if task_id not in self.due:
                    late = self.rng.random() < self.late_share
                    self.due[task_id] = time.monotonic() + (self.rng.uniform(0.5, 1) * self.late_seconds if late
                                                            else 0)
                    if late:
                        self.late.add(task_id)
                if time.monotonic() >= self.due[task_id]:
                    self._label(client, task_id, task["data"])

    def _label(self, client: httpx.Client, task_id: int, data: dict[str, Any]) -> None:
        from urllib.parse import parse_qs, urlsplit

        relative = parse_qs(urlsplit(str(data["image"])).query)["d"][0]
        digest = hashlib.sha1((self.document_root / relative).read_bytes()).hexdigest()
        boxes = [list(b) for b in self.truth.get(digest, [])]
        if digest not in self.truth:
            self.unknown.add(task_id)
        if boxes and self.rng.random() < self.wrong_share:  # one box wrong on purpose: moved by half its width
            boxes[0][0] = min(self.size[0] - boxes[0][2], boxes[0][0] + boxes[0][2] / 2)
            self.wrong.add(task_id)
        width, height = self.size
        results = [{"id": uuid.uuid4().hex[:10], "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                    "origin": "manual", "original_width": width, "original_height": height, "image_rotation": 0,
                    "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                              "height": 100 * h / height, "rotation": 0, "rectanglelabels": [label]}}
                   for x, y, w, h, label in boxes]
        self._api(client, "POST", f"/api/tasks/{task_id}/annotations/",
                  json={"result": results, "was_cancelled": False, "lead_time": 4.0})
        self.done.add(task_id)
