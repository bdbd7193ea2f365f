"""`detops status`: where the loop stands, read from the files the steps write; servers are asked only for what
only they know (Label Studio's task counts, Prefect's last runs, each replica's version), each with a short timeout,
and one that does not answer is said, never an error.

No mlflow import on the way (it alone takes seconds): the registry's aliases are read from the local SQLite store
with sqlite3, or from a tracking server's REST API. A batch's state is one word, from the most advanced record it
has: accepted > failed > audited > labelled > pushed > selected > checked > landed > arriving.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from detops.errors import LabelStudioError, LabelStudioUnreachable
from detops.workspace import Workspace

NONE = "—"
PREFECT_API_URL = "PREFECT_API_URL"


def collect(ws: Workspace, serve_urls: list[str], timeout_s: float) -> dict[str, Any]:
    """Everything `detops status` shows, as plain data (what `--json` prints)."""
    models, registry_note = registry_aliases(ws, timeout_s)
    batches = batch_states(ws)
    studio_note = label_studio_counts(ws, batches, timeout_s)
    deployments, prefect_note = last_runs(os.environ.get(PREFECT_API_URL, ""), timeout_s)
    return {"workspace": str(ws.root), "models": models, "registry": registry_note, "batches": batches,
            "label_studio": studio_note, "deployments": deployments, "prefect": prefect_note,
            "replicas": [replica_version(url, timeout_s) for url in serve_urls]}


# --- registry ---------------------------------------------------------------------------------------------

def registry_aliases(ws: Workspace, timeout_s: float) -> tuple[list[dict[str, Any]], str]:
    """(the champion, previous champion and challenger with their test and latest production mAP, a note on the
    store). A local SQLite store is read with sqlite3, a tracking server through its REST API."""
    from detops.registry.names import CHALLENGER, previous_alias
    from detops.tracking import tracking_uri

    alias = ws.params.promote.alias
    wanted = (alias, previous_alias(alias), CHALLENGER)
    uri = tracking_uri(ws)
    name = ws.params.mlflow.registered_model
    scheme = urlparse(uri).scheme
    try:
        if scheme == "sqlite":
            found = _sqlite_aliases(_sqlite_path(uri), name, wanted)
        elif scheme in ("http", "https"):
            found = _rest_aliases(uri, name, wanted, timeout_s)
        else:
            return [], f"the registry at {uri} is not read here (a SQLite store or a tracking server is)"
    except _Unreachable as exc:
        return [], str(exc)
    metric = ws.params.promote.metric
    production = production_scores(ws)
    models = []
    for one in wanted:
        version, tags = found.get(one, (None, {}))
        score = production.get(version or "", {})
        models.append({"alias": one, "version": version, "metric": metric, "test": _float(tags.get(metric)),
                       "production": score.get("map"), "production_batch": score.get("batch")})
    return models, f"{name} at {uri}"


class _Unreachable(Exception):
    """A store or server that cannot be read now: said in the status, not raised."""


def _sqlite_path(uri: str) -> Path:
    """The file of a `sqlite:///` URI (SQLAlchemy's form: three slashes and a relative path, four and an absolute)."""
    return Path(unquote(uri[len("sqlite:///"):]))


def _sqlite_aliases(db: Path, name: str, aliases: tuple[str, ...]) -> dict[str, tuple[str, dict[str, str]]]:
    """alias -> (version, its tags), read-only from MLflow's SQLite store; {} when nothing was registered yet."""
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=2) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "registered_model_aliases" not in tables:
                return {}
            marks = ",".join("?" * len(aliases))
            rows = con.execute(f"SELECT alias, version FROM registered_model_aliases WHERE name = ? AND alias IN "
                               f"({marks})", (name, *aliases)).fetchall()
            return {alias: (str(version), dict(con.execute(
                "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?", (name, version))))
                for alias, version in rows}
    except sqlite3.Error as exc:
        raise _Unreachable(f"the MLflow store {db} cannot be read ({exc})") from None


def _rest_aliases(uri: str, name: str, aliases: tuple[str, ...], timeout_s: float
                  ) -> dict[str, tuple[str, dict[str, str]]]:
    """alias -> (version, its tags) from a tracking server's REST API (MLflow's own client is seconds to import)."""
    import httpx

    found = {}
    try:
        with httpx.Client(base_url=uri.rstrip("/"), timeout=timeout_s) as http:
            answer = http.get("/api/2.0/mlflow/registered-models/get", params={"name": name})
            if answer.status_code == 404:  # nothing registered yet
                return {}
            answer.raise_for_status()
            for one in answer.json()["registered_model"].get("aliases", []):
                if one["alias"] not in aliases:
                    continue
                version = http.get("/api/2.0/mlflow/model-versions/get",
                                   params={"name": name, "version": one["version"]})
                version.raise_for_status()
                tags = version.json()["model_version"].get("tags", [])
                found[one["alias"]] = (str(one["version"]), {t["key"]: t["value"] for t in tags})
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise _Unreachable(f"the tracking server at {uri} does not answer ({type(exc).__name__}: {exc})") from None
    return found


def production_scores(ws: Workspace) -> dict[str, dict[str, Any]]:
    """version -> its latest production score {"map", "batch"}, from `reports/production/<batch>.json`
    (`detops.monitoring.production`; the last scored wins): every object in a file with a `version` and a numeric
    `map` is a score (the champion's at the top, each scored model's under `models`)."""
    folder = ws.reports / "production"
    reports = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written: the older scores stand
        reports.append((float(data.get("scored_at", 0)) if isinstance(data, dict) else 0.0, path.stem, data))
    latest: dict[str, dict[str, Any]] = {}
    for _, batch, data in sorted(reports, key=lambda r: r[0]):
        for one in _scored(data):
            latest[str(one["version"])] = {"map": float(one["map"]), "batch": batch}
    return latest


def _scored(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [s for item in data for s in _scored(item)]
    if not isinstance(data, dict):
        return []
    own = [data] if "version" in data and isinstance(data.get("map"), (int, float)) else []
    return own + [s for value in data.values() if isinstance(value, (dict, list)) for s in _scored(value)]


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


# --- batches ----------------------------------------------------------------------------------------------

def batch_states(ws: Workspace) -> list[dict[str, Any]]:
    """Each batch under monitor.landing (and each the ledger names) with its state and what it rests on."""
    from detops.labeling.audit import audit_files, review_file
    from detops.labeling.select import selection_folder
    from detops.labeling.state import load_state
    from detops.monitoring.accept import accepted_path
    from detops.monitoring.batches import batch_folders, complete_batches, ledger

    entries = ledger(ws).entries()
    folders, sealed = batch_folders(ws), {batch.name for batch in complete_batches(ws)}
    rows = []
    for name in sorted(folders | set(entries)):
        entry = entries.get(name, {})
        trip = load_state(ws, name)
        row: dict[str, Any] = {"batch": name, "images": entry.get("images"), "verdict": entry.get("verdict"),
                               "labelled": entry.get("labelled"), "project": trip.project if trip else None,
                               "tasks": len(trip.tasks) if trip else None}
        origin = entry.get("labelled_from") or entry.get("reviewed_from")
        if accepted_path(ws, name).exists():
            row["state"], row["detail"] = "accepted", ws.relative(accepted_path(ws, name))
        elif entry.get("failed"):
            row["state"], row["detail"] = "failed", str(entry["failed"])
        elif audit_files(ws, name)[0].is_file():
            row["state"], row["detail"] = "audited", ws.relative(audit_files(ws, name)[1])
        elif trip is not None and trip.pulled:
            row["state"], row["detail"] = "labelled", f"pulled as {trip.pulled}"
        elif origin:
            row["state"], row["detail"] = "labelled", f"from Label Studio ({origin})"
        elif trip is not None:
            row["state"], row["detail"] = "pushed", f"Label Studio project {trip.project}"
        elif (selection_folder(ws, name) / "selection.json").is_file():
            row["state"], row["detail"] = "selected", ws.relative(selection_folder(ws, name) / "selection.json")
        elif entry.get("verdict"):
            row["state"], row["detail"] = "checked", str(entry["verdict"])
        elif name in sealed:
            row["state"], row["detail"] = "landed", "not checked yet"
        elif name in folders:
            row["state"], row["detail"] = "arriving", f"no {ws.params.monitor.manifest} yet"
        else:
            row["state"], row["detail"] = "gone", "in the ledger, its folder removed"
        if review_file(ws, name).is_file():
            row["detail"] += f"; review list {ws.relative(review_file(ws, name))}"
        rows.append(row)
    return rows


def label_studio_counts(ws: Workspace, batches: list[dict[str, Any]], timeout_s: float) -> str:
    """Fill `done` / `pending` of each pushed batch from its Label Studio project; what was asked, or why not."""
    pushed = [b for b in batches if b["state"] == "pushed"]
    if not pushed:
        return "no batch waits in Label Studio"
    from detops.labeling.studio import LabelStudio

    url = ws.params.label_studio.url
    try:
        with LabelStudio.from_env(url, timeout_s) as studio:
            for row in pushed:
                try:
                    project = studio.project(int(row["project"]))
                except LabelStudioUnreachable:
                    raise
                except LabelStudioError as exc:  # this project only (deleted, say): the others are counted
                    row["detail"] += f"; not counted: {exc}"
                    continue
                row["done"] = int(project.get("finished_task_number") or 0)
                row["pending"] = int(project.get("task_number") or 0) - row["done"]
    except LabelStudioUnreachable as exc:
        return f"unreachable: {exc}"
    except LabelStudioError as exc:  # no token, or one refused
        return f"not asked: {exc}"
    return f"asked {url}"


# --- servers ----------------------------------------------------------------------------------------------

def last_runs(api_url: str, timeout_s: float) -> tuple[list[dict[str, Any]], str]:
    """The last run (not a scheduled one) of each deployment on the Prefect server, through its REST API."""
    if not api_url:
        return [], f"{PREFECT_API_URL} is not set (flows run without a server)"
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if (key := os.environ.get("PREFECT_API_KEY")) else {}
    try:
        with httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout_s, headers=headers) as http:
            deployments = _post(http, "/deployments/filter", {"limit": 200})
            flow_ids = sorted({d["flow_id"] for d in deployments})
            flows = {f["id"]: f["name"] for f in _post(http, "/flows/filter", {"flows": {"id": {"any_": flow_ids}}})}
            rows = []
            for d in sorted(deployments, key=lambda d: (flows.get(d["flow_id"], ""), d["name"])):
                runs = _post(http, "/flow_runs/filter", {
                    "deployments": {"id": {"any_": [d["id"]]}},
                    "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED"]}}},
                    "sort": "EXPECTED_START_TIME_DESC", "limit": 1})
                run = runs[0] if runs else {}
                rows.append({"deployment": f"{flows.get(d['flow_id'], '?')}/{d['name']}", "run": run.get("name"),
                             "state": (run.get("state") or {}).get("name"),
                             "start": run.get("start_time") or run.get("expected_start_time")})
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return [], f"unreachable: the Prefect API at {api_url} ({type(exc).__name__}: {exc})"
    return rows, f"asked {api_url}"


def _post(http: Any, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    answer = http.post(path, json=body)
    answer.raise_for_status()
    return list(answer.json())


def replica_version(url: str, timeout_s: float) -> dict[str, Any]:
    """What a `detops serve` replica's /health says it serves (ready or loading), or that it does not answer."""
    import httpx

    try:
        body = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s).json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": url, "status": "unreachable", "version": None, "alias": None,
                "detail": f"{type(exc).__name__}: {exc}"}
    model = body.get("model") or {}
    versions = body.get("versions")
    return {"url": url, "status": body.get("status"), "version": model.get("version"), "alias": model.get("alias"),
            "detail": f"mid-swap: versions {', '.join(versions)}" if versions else
            f"{body.get('workers_ready')}/{body.get('workers')} workers ready"}


# --- the screen -------------------------------------------------------------------------------------------

def render(status: dict[str, Any]) -> list[Any]:
    """The rich tables and lines of the screen, in order."""
    from rich.table import Table
    from rich.text import Text

    def table(title: str, *columns: str) -> Table:
        made = Table(title=Text(title), title_justify="left")
        for column in columns:
            made.add_column(column)
        return made

    def row(into: Table, *cells: object) -> None:  # plain text: names and messages may hold rich markup
        into.add_row(*(Text(str(c)) for c in cells))

    out: list[Any] = []
    models = table(f"Registry: {status['registry']}", "alias", "version", "test", "production (latest batch)")
    for m in status["models"]:
        prod = NONE if m["production"] is None else f"{m['production']:.4f} ({m['production_batch']})"
        row(models, m["alias"], m["version"] or NONE,
                       NONE if m["test"] is None else f"{m['metric']} {m['test']:.4f}", prod)
    out.append(models)
    batches = table(f"Batches (Label Studio: {status['label_studio']})", "batch", "state", "detail", "images",
                    "tasks done / pending")
    for b in status["batches"]:
        tasks = f"{b['done']} / {b['pending']}" if "done" in b else NONE
        row(batches, b["batch"], b["state"], b["detail"], NONE if b["images"] is None else str(b["images"]),
                        tasks)
    out.append(batches if status["batches"] else Text("No batch under monitor.landing."))
    runs = table(f"Deployments (Prefect: {status['prefect']})", "deployment", "last run", "state", "start")
    for r in status["deployments"]:
        row(runs, r["deployment"], r["run"] or NONE, r["state"] or NONE, r["start"] or NONE)
    out.append(runs if status["deployments"] else Text(f"Deployments: {status['prefect']}"))
    if status["replicas"]:
        replicas = table("Replicas", "url", "status", "version", "alias", "detail")
        for r in status["replicas"]:
            row(replicas, r["url"], r["status"], r["version"] or NONE, r["alias"] or NONE, r["detail"])
        out.append(replicas)
    return out
