from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class LabelStudioParams(Section):
    """The Label Studio server the label round trip talks to (`detops label push|pull`). The token is never a param:
    set LABEL_STUDIO_API_KEY (a personal access token or a legacy token)."""

    url: str = Field("http://127.0.0.1:8080", min_length=1, description="Label Studio server URL.")
