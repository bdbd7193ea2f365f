"""What `detops registry list|rollback|prune` do, kept out of cli.py so the CLI module stays light and thin.

Rollback and prune hold the promotion lock: both move or delete what a concurrent promotion reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detops.registry.aliases import AliasChange, PruneResult, list_versions, prune, rollback
from detops.registry.client import connect
from detops.registry.lock import promotion_lock
from detops.registry.names import previous_alias

if TYPE_CHECKING:
    from rich.table import Table

    from detops.workspace import Workspace


def list_table(ws: Workspace) -> Table:
    """The registered model's versions, newest first, as a rich table."""
    from rich.table import Table

    name = ws.params.mlflow.registered_model
    metric = ws.params.promote.metric
    rows = list_versions(connect(ws), name, metric=metric)
    table = Table(title=f"{name}: {len(rows)} version(s)", title_justify="left")
    table.add_column("version", justify="right")
    table.add_column("aliases", no_wrap=True)
    table.add_column(metric, justify="right")
    table.add_column("data hash", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    for row in rows:
        style = "bold green" if ws.params.promote.alias in row.aliases else None
        table.add_row(
            row.version,
            ", ".join(row.aliases) or "-",
            "-" if row.metric is None else f"{row.metric:.4f}",
            row.data_hash[:12] or "-",
            row.created.strftime("%Y-%m-%d %H:%M"),
            style=style,
        )
    return table


def rollback_registry(ws: Workspace, *, reason: str, to_version: str | None = None) -> AliasChange:
    client = connect(ws)
    with promotion_lock(ws):
        name = ws.params.mlflow.registered_model
        return rollback(client, name, reason=reason, to_version=to_version, alias=ws.params.promote.alias)


def rollback_message(ws: Workspace, change: AliasChange) -> str:
    alias = ws.params.promote.alias
    return (
        f"{ws.params.mlflow.registered_model}: {alias} -> version {change.champion};"
        f" {previous_alias(alias)} -> version {change.previous}"
    )


def prune_registry(ws: Workspace, *, keep: int) -> PruneResult:
    client = connect(ws)
    with promotion_lock(ws):
        return prune(client, ws.params.mlflow.registered_model, keep=keep, alias=ws.params.promote.alias)
