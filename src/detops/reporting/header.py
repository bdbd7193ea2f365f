"""What identifies the run at the top of the page (dataset hash, commit, time, MLflow run) and the links to each
tool's own report at the bottom."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detops.reporting.html import Raw, esc, facts, join, link, tag
from detops.reporting.sources import Sources
from detops.workspace import Workspace


def mlflow_run(src: Sources) -> Raw:
    """The run as a link to its MLflow page (the only absolute URL on the page), or why there is none."""
    from detops import tracking

    run_id = tracking.read_run_id(src.ws)
    if not run_id:
        return esc("no training run recorded yet (detops train)")
    where = tracking.run_url(src.ws, run_id)  # bounded requests: a server that is down cannot hold the page
    url, _, hint = where.partition(" ")
    if not url.startswith(("http://", "https://")):
        return esc(where)  # the store does not know the run: its id and store, no link
    return join([link(url, run_id), " ", hint])


def header(src: Sources, validation: dict[str, Any] | None, mlflow: Raw) -> Raw:
    from detops.tracking import git_state

    git = git_state(src.ws.root)
    commit = git["git.commit"] + (f" (uncommitted changes: {git.get('git.dirty_files', '')})"
                                  if git["git.dirty"] == "true" else "")
    dataset = (validation or {}).get("content_hash", {}).get("output") or "unknown (detops validate has not run)"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return tag("header", join([
        tag("h1", "detops run report"),
        facts([("dataset content hash", tag("code", dataset)), ("git commit", tag("code", commit)),
               ("generated", now), ("MLflow run", mlflow), ("workspace", src.ws.root)]),
    ]))


def step_logs(ws: Workspace) -> list[Path]:
    """The step logs (`detops.steplog`) there are, in the pipeline's order, then any other."""
    from detops.steplog import LOGS
    from detops.steps.graph import STEPS

    order = {verb: i for i, verb in enumerate(STEPS)}
    found = sorted((ws.reports / LOGS).glob("*.log"))
    return sorted(found, key=lambda path: order.get(path.stem, len(order)))


def tools(src: Sources, validation: dict[str, Any] | None, drift: dict[str, Any] | None, mlflow: Raw) -> Raw:
    """Each tool's own report: relative links, so they open from a copied or zipped reports folder."""
    items: list[object] = []
    docs = validation.get("data_docs") if validation else None
    if docs:
        items.append(join(["Great Expectations Data Docs: ", link(src.href(docs), docs)]))
    for check in (drift or {}).get("checks", []):
        html = check.get("reports", {}).get("html")
        if html:
            items.append(join([f"Evidently drift report of {check.get('batch') or check.get('source')}: ",
                               link(src.href(html), html)]))
    items.append(join(["MLflow run: ", mlflow]))
    logs = step_logs(src.ws)
    if logs:
        items.append(join(["What the libraries printed during each step (ONNX Runtime, Lightning, warnings): ",
                           join(join([" " if i else "", link(src.href(path), path.stem)])
                                for i, path in enumerate(logs))]))
    items.append(join(["DVC: ", tag("code", "dvc metrics show"), " and ", tag("code", "dvc plots show"),
                       " in the workspace compare these numbers and plots across commits and experiments"]))
    return tag("section", join([tag("h2", "Tool reports"), tag("ul", join(tag("li", item) for item in items))]),
               id="tools")
