"""The labels-sync flow: on a schedule (`deploy.labels_cron`), send the images the label audit flagged back to Label
Studio (`detops label review` for each batch with a review list not pushed yet), then pull the finished annotations
of every batch pushed and not pulled yet (`detops label pull` for each). A batch labelled in full becomes a
labelled batch in the landing folder and is announced with `detops.batch.labelled`, which starts `retrain-on-drift`
with it; a batch still being labelled is left for the next tick.

A server that is down or refuses the token fails the run (nothing was pulled); a batch whose labels cannot be
accepted (a class the dataset lacks, a box outside its image) is reported by name and fails the run once the other
batches were pulled, so one bad batch does not hold the others back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prefect import flow, get_run_logger

from detops.errors import DataError
from detops.locking import workspace_lock
from flows.events import emit_labelled_event

T = TypeVar("T")


@flow(name="labels_sync")
def labels_sync(workspace: str = ".") -> dict[str, Any]:
    """Pull every pushed batch; returns each one's progress (tasks finished) or the labelled batch written."""
    from detops.labeling.pull import pull
    from detops.labeling.review import pending_reviews, push_review
    from detops.labeling.state import pushed_batches
    from detops.labeling.studio import LabelStudio
    from flows.retrain import workspace_for

    ws = workspace_for(workspace, None, [])
    logger = get_run_logger()
    outcome: dict[str, Any] = {}
    failed: dict[str, str] = {}
    reviews = pending_reviews(ws)
    if not reviews and not pushed_batches(ws):
        logger.info("no batch waits for labels in Label Studio, none to send for review")
        return outcome
    settings = ws.params.label_studio
    with LabelStudio.from_env(settings.url, settings.timeout_s) as studio, workspace_lock(ws.root):
        for batch, sent in _each(reviews, lambda b: push_review(ws, b, studio), failed, logger):
            logger.info("batch %s: %d flagged image(s) sent for review -> %s", batch, sent.imported, sent.url)
        for batch, result in _each(pushed_batches(ws), lambda b: pull(ws, b, studio), failed, logger):
            outcome[batch] = {"finished": result.finished, "skipped": result.skipped, "tasks": result.tasks,
                              "labelled": result.labelled}
            if result.labelled:
                emit_labelled_event(ws, result)
                logger.info("batch %s: %d image(s), %d box(es) -> %s (event emitted)", batch, result.images,
                            result.boxes, result.labelled)
            else:
                logger.info("batch %s: %d of %d task(s) finished, %d skipped", batch, result.finished,
                            result.tasks, result.skipped)
    if failed:
        raise DataError("labels-sync: " + "; ".join(f"{batch}: {why}" for batch, why in failed.items()))
    return outcome


def _each(batches: list[str], action: Callable[[str], T], failed: dict[str, str], logger: Any
          ) -> Iterator[tuple[str, T]]:
    """(batch, what `action` returned) for each batch; a DataError is that batch's failure, logged and kept in
    `failed`, and the others go on."""
    for batch in batches:
        try:
            result = action(batch)
        except DataError as exc:
            failed[batch] = str(exc)
            logger.error("batch %s: %s", batch, exc)
            continue
        yield batch, result


if __name__ == "__main__":
    labels_sync()
