"""Shared base for every params section: strict, so a typo is an error rather than a silent default."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A `params.yaml` section: unknown keys and wrong types fail with their dotted path."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
