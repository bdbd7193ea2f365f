"""Step `export`: lands in a later release; until then it says so instead of failing obscurely."""

from __future__ import annotations

from detops.errors import NotBuiltYet
from detops.steps.result import StepResult
from detops.workspace import Workspace


def run(ws: Workspace) -> StepResult:
    raise NotBuiltYet("`detops export` is not built yet: it lands with its own issue (see DESIGN.md).")
