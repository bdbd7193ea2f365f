"""The small typed result every step returns: what it wrote and what it measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepResult:
    """Outputs (name -> path) and metrics of one step, printed by the CLI and logged by Prefect tasks."""

    step: str
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "outputs": self.outputs, "metrics": self.metrics, "notes": self.notes}

    def to_markdown(self) -> str:
        """A markdown table, the body of the Prefect artifact a task publishes."""
        lines = [f"### detops {self.step}", "", "| item | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in self.metrics.items()]
        lines += [f"| {k} | `{v}` |" for k, v in self.outputs.items()]
        lines += [f"\n- {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
