"""A small client of Label Studio's REST API (httpx): the handful of endpoints the label round trip needs.

Not `label-studio-sdk`: its pins would downgrade OpenCV in detops' environment. Tokens: a personal access token
(a JWT refresh token, exchanged at `/api/token/refresh` for a short-lived access token sent as `Bearer`) or a legacy
token (sent as `Token`); both are read from LABEL_STUDIO_API_KEY, never from params.yaml. An access token lives
minutes (a long pre-annotation outlives it): a call refused with 401 exchanges the personal access token again and
is sent once more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from detops.errors import LabelStudioError, LabelStudioUnreachable

TOKEN_ENV = "LABEL_STUDIO_API_KEY"


def is_personal_access_token(token: str) -> bool:
    """Personal access tokens are JWTs (three dot-separated base64 parts); legacy tokens are 40 hex digits."""
    return token.count(".") == 2 and token.startswith("eyJ")


@dataclass
class LabelStudio:
    """One server and one token; every call raises LabelStudioError with what to check, never an httpx error."""

    url: str
    token: str
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout_s)
        self._http.headers["Authorization"] = self._authorization()

    @classmethod
    def from_env(cls, url: str, timeout_s: float) -> LabelStudio:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise LabelStudioError(f"{TOKEN_ENV} is not set: copy a personal access token (or a legacy token) from "
                                   f"Label Studio's Account & Settings page at {url} and export it.")
        return cls(url, token, timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _authorization(self) -> str:
        if not is_personal_access_token(self.token):
            return f"Token {self.token}"
        self._http.headers.pop("Authorization", None)  # the exchange is made with the token alone
        answer = self._send("POST", "/api/token/refresh/", json={"refresh": self.token}, refresh=False)
        return f"Bearer {answer['access']}"

    def _send(self, method: str, path: str, refresh: bool = True, **kwargs: Any) -> Any:
        """One call; with `refresh`, a 401 to a personal access token's expired access token exchanges it again
        and sends the call once more."""
        try:
            response = self._http.request(method, path, **kwargs)
            if response.status_code == 401 and refresh and is_personal_access_token(self.token):
                self._http.headers["Authorization"] = self._authorization()
                response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LabelStudioUnreachable(f"Label Studio at {self.url} does not answer ({type(exc).__name__}: {exc}). "
                                         "Is the server running? label_studio.url in params.yaml names it.") from None
        if response.status_code in (401, 403):
            raise LabelStudioError(f"Label Studio at {self.url} refused the token in {TOKEN_ENV} ({method} {path}: "
                                   f"HTTP {response.status_code}). Copy a valid personal access token or legacy "
                                   "token from its Account & Settings page (legacy tokens must be enabled for the "
                                   "organisation).")
        if response.is_error:
            raise LabelStudioError(f"Label Studio at {self.url}: {method} {path} failed with HTTP "
                                   f"{response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    # Projects
    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project titled exactly `title` (the oldest if several), or None."""
        found = [p for p in self._pages("/api/projects/", {"title": title}) if p.get("title") == title]
        return min(found, key=lambda p: int(p["id"])) if found else None

    def create_project(self, title: str, label_config: str, description: str) -> dict[str, Any]:
        return dict(self._send("POST", "/api/projects/",
                               json={"title": title, "label_config": label_config, "description": description}))

    def project(self, project: int) -> dict[str, Any]:
        """The project with its counts (`task_number`, `finished_task_number`: tasks labelled)."""
        return dict(self._send("GET", f"/api/projects/{project}/"))

    def update_project(self, project: int, **fields: Any) -> dict[str, Any]:
        return dict(self._send("PATCH", f"/api/projects/{project}/", json=fields))

    # Local files
    def local_storages(self, project: int) -> list[dict[str, Any]]:
        return list(self._send("GET", "/api/storages/localfiles/", params={"project": project}))

    def add_local_storage(self, project: int, path: str, title: str) -> dict[str, Any]:
        """A Local Storage lets the project's tasks show images below `path` (never synced: tasks are imported)."""
        return dict(self._send("POST", "/api/storages/localfiles/", json={
            "project": project, "path": path, "title": title, "use_blob_urls": True, "regex_filter": ""}))

    # Tasks
    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import tasks (with their predictions) in order; their new ids, in the same order."""
        answer = self._send("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"},
                            json=tasks)
        ids = [int(i) for i in answer.get("task_ids") or []]
        if len(ids) != len(tasks):
            raise LabelStudioError(f"Label Studio at {self.url} imported {answer.get('task_count')} task(s) of "
                                   f"{len(tasks)} into project {project} without returning their ids; check the "
                                   "project's tasks before pushing again.")
        return ids

    def tasks_by_file(self, project: int) -> dict[str, int]:
        """Image file name -> task id, from the `file_name` each pushed task carries in its data."""
        tasks = self._pages("/api/tasks/", {"project": project, "fields": "all"}, key="tasks")
        return {str(t["data"]["file_name"]): int(t["id"]) for t in tasks if "file_name" in (t.get("data") or {})}

    def export(self, project: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations, in Label Studio's JSON export format."""
        return list(self._send("GET", f"/api/projects/{project}/export",
                               params={"exportType": "JSON", "download_all_tasks": "true"}))

    def _pages(self, path: str, params: dict[str, Any], key: str = "results") -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self._send("GET", path, params={**params, "page": page, "page_size": 100})
            if isinstance(answer, list):  # not paginated
                return items + answer
            chunk = answer.get(key) or []
            items += chunk
            if not chunk or len(items) >= int(answer.get("count", answer.get("total", 0))):
                return items
            page += 1
