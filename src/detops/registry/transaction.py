"""The promotion transaction, race-safe: inside the promotion lock, re-read the champion, score it, decide
(`detops.registry.decision`, the gate), move the aliases.

The candidate is scored before the lock (the slow part that needs no registry state); the champion is read and
scored inside it, because another promotion may have replaced it while the candidate was being scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from detops.registry.aliases import AliasChange, apply_decision, current_champion
from detops.registry.decision import Decision, decide_promotion, metric_text, metric_value
from detops.registry.lock import promotion_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from detops.workspace import Workspace


@dataclass(frozen=True)
class ChampionScore:
    """The champion re-scored on the current test split; why it could not be (`not_comparable`: trained on other
    classes, no metrics then); how many current test images were in its training split (None: unknown)."""

    metrics: Mapping[str, float | None]
    not_comparable: str | None = None
    train_overlap: int | None = None


@dataclass(frozen=True)
class Promotion:
    """Outcome of one gated promotion: the decision, the champion it was made against, the aliases after it."""

    version: str
    champion_version: str | None
    decision: Decision
    aliases: AliasChange

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "champion_version": self.champion_version,
                "decision": self.decision.to_dict(), "aliases": self.aliases.to_dict()}

    def to_markdown(self) -> str:
        """The summary a Prefect artifact or a PR comment shows: verdict, both numbers, threshold, reason."""
        d = self.decision
        verdict = "promoted" if d.promote else "not promoted"
        lines = [
            f"### promotion of version {self.version}: {verdict}", "",
            "| item | value |", "| --- | --- |",
            f"| metric | `{d.metric}` |",
            f"| candidate (v{self.version}) | {metric_text(d.candidate_value)} |",
            f"| champion ({'v' + self.champion_version if self.champion_version else 'none'}) | "
            f"{metric_text(d.champion_value)} |",
            f"| threshold | {metric_text(d.threshold)} |",
            f"| comparable champion | {'yes' if d.comparable else 'no'} |",
            f"| champion's training images in today's test split | {'-' if d.overlap is None else d.overlap} |",
            f"| champion after | v{self.aliases.champion} |" if self.aliases.champion else "| champion after | none |",
            "", f"{d.reason}",
        ]
        return "\n".join(lines)


def promote_version(
    client: MlflowClient,
    ws: Workspace,
    version: str | int,
    candidate_metrics: Mapping[str, float | None],
    *,
    score_champion: Callable[[ModelVersion], ChampionScore],
    lock: AbstractContextManager[Any] | None = None,
) -> Promotion:
    """Gate `version` of `mlflow.registered_model` against the champion under `promotion_lock(ws)`.

    `score_champion` re-scores the champion from its own files on the current test split; it must raise when the
    champion cannot be downloaded or loaded (fail closed: nothing is promoted). `lock` replaces the promotion lock
    (tests use it to show what happens without one); production code leaves it None.
    """
    params = ws.params.promote
    name = ws.params.mlflow.registered_model
    metric_value(candidate_metrics, params.metric, "candidate")  # an unknown metric fails before the lock
    with promotion_lock(ws) if lock is None else lock:
        champion = current_champion(client, name, params.alias)
        if champion is not None and str(champion.version) == str(version):
            value = metric_value(candidate_metrics, params.metric, "candidate")
            decision = Decision(
                promote=False, reason=f"version {version} is already the {params.alias}; nothing to decide",
                metric=params.metric, candidate_value=value, champion_value=value, threshold=value,
                min_improvement=params.min_improvement, min_metric=params.min_metric, has_champion=True,
                comparable=True, overlap=None,
            )
        else:
            score = score_champion(champion) if champion is not None else None
            decision = decide_promotion(
                candidate_metrics,
                None if score is None else score.metrics,
                metric=params.metric,
                min_improvement=params.min_improvement,
                min_metric=params.min_metric,
                champion_not_comparable=None if score is None else score.not_comparable,
                champion_train_overlap=None if score is None else score.train_overlap,
            )
        change = apply_decision(client, name, version, decision, alias=params.alias)
    return Promotion(str(version), None if champion is None else str(champion.version), decision, change)
