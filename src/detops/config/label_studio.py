from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class LabelStudioParams(Section):
    """The Label Studio server the label round trip talks to (`detops label push|pull`). The token is never a param:
    set LABEL_STUDIO_API_KEY (a personal access token or a legacy token)."""

    url: str = Field("http://127.0.0.1:8080", min_length=1, description="Label Studio server URL.")
    project_prefix: str = Field(
        "detops", min_length=1,
        description="Projects are titled `<project_prefix> <batch>`, so `push` finds the batch's project again.")
    document_root: str = Field(
        ".", min_length=1,
        description="The server's LOCAL_FILES_DOCUMENT_ROOT as this machine sees it (relative: to the workspace): "
                    "images are served to labellers from below it, through a Local Storage on the batch folder.")
    timeout_s: float = Field(
        30.0, gt=0, description="Seconds one HTTP request to the server may take before it counts as down.")
