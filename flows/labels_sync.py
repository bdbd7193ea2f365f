"""The labels-sync flow: on a schedule (`deploy.labels_cron`), send the images the label audit flagged back to Label
Studio (`detops label review` for each batch with a review list not pushed yet), with `label.push_drifted` select and
push each batch retrain-on-drift found unlabelled (`detops label select` + `push`, pre-annotated by the champion), then
pull the finished annotations
of every batch pushed and not pulled yet (`detops label pull` for each), then announce with `detops.batch.labelled`
every pulled batch that retraining has not accepted yet, which starts `retrain-on-drift` with it. A batch still being
labelled is left for the next tick.

Announcing is the last step of every tick, not of the pull, and is repeated until the batch is accepted: an event
lost (a server restart, a worker down) or a pull stopped before it announced costs a tick, never the batch, and
`retrain-on-drift` accepts a batch once however often it hears of it (`detops.monitoring.accept`).

A server that is down or refuses the token fails the run (nothing was pulled, what was pulled before is announced
all the same); a batch whose labels cannot be
accepted (a class the dataset lacks, a rotated box, a box outside its image) is reported by name and fails the run
once the other batches were pulled and announced, so one bad batch does not hold the others back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prefect import flow, get_run_logger

from detops.errors import DataError, LabelStudioError
from detops.locking import workspace_lock
from detops.monitoring.loopstate import loop_state
from detops.workspace import Workspace
from flows.events import emit_labelled_event

T = TypeVar("T")


@flow(name="labels_sync")
def labels_sync(workspace: str = ".") -> dict[str, Any]:
    """Pull every pushed batch and announce every pulled one not accepted yet; returns each batch's progress (tasks
    finished, results dropped), the labelled batch written, and whether it was announced."""
    from detops.labeling.pull import unaccepted
    from flows.retrain import workspace_for

    ws = workspace_for(workspace, None, [])
    logger = get_run_logger()
    outcome: dict[str, Any] = {}
    failed: dict[str, str] = {}
    try:
        with loop_state(ws):  # fetched before anything reads it: a fresh pod knows what was pushed
            _sync(ws, outcome, failed, logger)
        unreachable = None
    except LabelStudioError as exc:  # what was pulled before needs no Label Studio to be announced
        unreachable = exc
    for result in unaccepted(ws):  # read-only: no lock, so a long retraining holding it delays no announcement
        assert result.labelled is not None
        emit_labelled_event(ws, result)
        outcome.setdefault(result.batch, {"labelled": result.labelled})["announced"] = True
        logger.info("batch %s: %d image(s), %d box(es) in %s, not accepted yet: detops.batch.labelled emitted",
                    result.batch, result.images, result.boxes, result.labelled)
    if unreachable is not None:
        raise unreachable
    if not outcome and not failed:
        logger.info("no batch waits for labels in Label Studio or for retraining to accept it")
    if failed:
        raise DataError("labels-sync: " + "; ".join(f"{batch}: {why}" for batch, why in failed.items()))
    return outcome


def _sync(ws: Workspace, outcome: dict[str, Any], failed: dict[str, str], logger: Any) -> None:
    """Send the pending reviews, then pull every pushed batch: each one's progress in `outcome`, its DataError in
    `failed`; LabelStudioError when the server is down or refuses the token."""
    from detops.labeling.pull import pull
    from detops.labeling.push import batches_to_push
    from detops.labeling.review import pending_reviews, push_review
    from detops.labeling.state import pushed_batches
    from detops.labeling.studio import LabelStudio

    reviews = pending_reviews(ws)
    drifted = batches_to_push(ws) if ws.params.label.push_drifted else []
    if not reviews and not drifted and not pushed_batches(ws):
        return
    settings = ws.params.label_studio
    with LabelStudio.from_env(settings.url, settings.timeout_s) as studio, workspace_lock(ws.root):
        for batch, sent in _each(reviews, lambda b: push_review(ws, b, studio), failed, logger):
            logger.info("batch %s: %d flagged image(s) sent for review -> %s", batch, sent.imported, sent.url)
        if drifted:
            studio.find_project("")  # a server down fails before the model is loaded
            select_and_push = _select_and_push(ws, studio)
            for batch, sent in _each(drifted, select_and_push, failed, logger):
                logger.info("batch %s: %d image(s) selected and pushed to label -> %s", batch, sent.imported,
                            sent.url)
        for batch, result in _each(pushed_batches(ws), lambda b: pull(ws, b, studio), failed, logger):
            outcome[batch] = {"finished": result.finished, "skipped": result.skipped, "tasks": result.tasks,
                              "labelled": result.labelled, "dropped": list(result.dropped)}
            for dropped in result.dropped:
                logger.warning("batch %s: left out %s", batch, dropped)
            if not result.labelled:
                logger.info("batch %s: %d of %d task(s) finished, %d skipped", batch, result.finished,
                            result.tasks, result.skipped)


def _select_and_push(ws: Workspace, studio: Any) -> Callable[[str], Any]:
    """`detops label select` then `detops label push` of one batch, with the labelling model loaded once."""
    from detops.labeling.push import preannotator, push
    from detops.labeling.select import select_batch

    pre = preannotator(ws)

    def one(batch: str) -> Any:
        select_batch(ws, batch)
        return push(ws, batch, studio, pre)

    return one


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
