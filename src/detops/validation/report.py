"""What the gate tells people: `reports/validation.json`, a one-screen rich table, and the failure message."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from detops.validation.gate import ValidationOutcome

if TYPE_CHECKING:
    from rich.table import Table

FIRST_PROBLEMS = 10  # offending rows named in the failure message


def build_report(
    outcome: ValidationOutcome,
    *,
    dataset: str,
    output: str | None,
    data_docs: str | None,
    extra_timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The JSON report: per-expectation results, counts before/after, every problem and what was done with it."""
    action = "dropped" if outcome.policy == "drop" else "reported"
    dropped = {"images": 0, "boxes": 0, "classes": 0}
    if outcome.policy == "drop":
        before, after = outcome.counts["before"], outcome.counts["after"]
        dropped = {key: before[key] - after[key] for key in dropped}
    return {
        "success": outcome.success,
        "policy": outcome.policy,
        "dataset": dataset,
        "output": output,
        "content_hash": outcome.content_hash,
        "counts": {**outcome.counts, "dropped": dropped},
        "expectations": [asdict(rule) for rule in outcome.rules],
        "problems": [{**asdict(problem), "action": action} for problem in outcome.problems],
        "data_docs": data_docs,
        "timings_s": {**(extra_timings or {}), **outcome.timings},
    }


def summary_table(outcome: ValidationOutcome) -> Table:
    """Failed expectations first, then counts: fits one screen even with dozens of rules."""
    from rich.markup import escape
    from rich.table import Table

    verdict = "[green]passed[/]" if outcome.success else f"[red]{len(outcome.problems)} problem(s)[/]"
    table = Table(title=f"validation: {verdict} (on_error={outcome.policy})", title_justify="left")
    table.add_column("table")
    table.add_column("rule")
    table.add_column("expectation", style="dim")
    table.add_column("unexpected", justify="right")
    table.add_column("e.g. ids")
    failed = [r for r in outcome.rules if not r.success]
    for rule in failed:
        ids = ", ".join(str(i) for i in rule.sample_ids[:5]) if not rule.error else f"GX error: {rule.error}"
        ids = escape(ids)
        table.add_row(rule.table, f"[red]✗ {rule.rule}[/]", rule.expectation, str(rule.unexpected_count), ids)
    passed = len(outcome.rules) - len(failed)
    table.add_row("", f"[green]✓ {passed} other rule(s) passed[/]", "", "0", "")
    before, after = outcome.counts["before"], outcome.counts["after"]
    kept = "kept" if outcome.policy == "drop" else "would pass"
    for key in ("images", "boxes", "classes"):
        table.add_row("counts", key, f"{before[key]} before, {after[key]} {kept}", "", "", style="bold")
    return table


def failure_message(outcome: ValidationOutcome, report_path: str) -> str:
    """The error a `fail` run raises: the first offending rows by name, then where the full list is."""
    if outcome.errors:
        broken = "; ".join(f"{r.table}.{r.rule}: {r.error}" for r in outcome.errors)
        return f"Great Expectations could not evaluate {len(outcome.errors)} rule(s) ({broken}). See {report_path}."
    kinds = {"image": 0, "annotation": 0, "category": 0}
    for problem in outcome.problems:
        kinds[problem.kind] += 1
    lines = [
        f"validation failed: {kinds['annotation']} box(es), {kinds['image']} image(s) and "
        f"{kinds['category']} class(es) break the data rules:"
    ]
    lines += [f"  {problem.message()}" for problem in outcome.problems[:FIRST_PROBLEMS]]
    if len(outcome.problems) > FIRST_PROBLEMS:
        lines.append(f"  ... and {len(outcome.problems) - FIRST_PROBLEMS} more")
    lines.append(
        f"Every problem is listed in {report_path}. Fix the data, adjust the validate.* params, or set "
        "validate.on_error=drop to write a dataset without the offending rows."
    )
    return "\n".join(lines)
