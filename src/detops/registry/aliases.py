"""Registry state as MLflow aliases (never the deprecated stages): `champion` serves, `previous-champion` is the
one-step undo, `challenger` marks the latest candidate that lost. Every move is recorded as tags on the versions,
so the registry itself tells why a version serves.

Each function takes an MlflowClient and a registered model name, so it works unchanged on the local SQLite store
and on a tracking server; MLflow's exceptions come out as RegistryError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from detops.errors import RegistryError
from detops.registry.client import registry_call
from detops.registry.names import CHALLENGER, CHAMPION, check_alias, check_model_name, previous_alias

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from detops.registry.decision import Decision

PROMOTION_TAG = "detops.promotion"  # on the candidate: the decision about it
CHALLENGE_TAG = "detops.promotion.challenge"  # on the champion it was compared with
ROLLBACK_TAG = "detops.rollback"
DATA_HASH_TAG = "data.content_hash"


@dataclass(frozen=True)
class AliasChange:
    """Where the aliases point after a promotion or rollback (None: alias unset)."""

    champion: str | None
    previous: str | None
    challenger: str | None
    moved: bool  # False when the aliases were already where the decision puts them
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"champion": self.champion, "previous": self.previous, "challenger": self.challenger,
                "moved": self.moved, "notes": list(self.notes)}


@dataclass(frozen=True)
class VersionRow:
    """One line of `detops registry list`."""

    version: str
    aliases: tuple[str, ...]
    metric: float | None
    data_hash: str
    created: datetime
    run_id: str


@dataclass
class PruneResult:
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@registry_call
def current_champion(client: MlflowClient, name: str, alias: str = CHAMPION) -> ModelVersion | None:
    """The version `alias` points to, or None when the model or the alias does not exist yet."""
    aliases = _aliases(client, check_model_name(name), missing_ok=True)
    version = aliases.get(check_alias(alias))
    return None if version is None else client.get_model_version(name, version)


@registry_call
def apply_decision(
    client: MlflowClient, name: str, candidate_version: str | int, decision: Decision, *, alias: str = CHAMPION
) -> AliasChange:
    """Move the aliases as `decision` says and tag both versions with it.

    Promoted: `alias` -> candidate, `previous-<alias>` -> the former champion. Rejected: `challenger` ->
    candidate. The candidate must exist (no alias is ever set on a missing version). Call it inside
    `promotion_lock`, right after re-reading the champion the decision was made against.
    """
    check_model_name(name)
    previous = previous_alias(check_alias(alias))
    candidate = str(_version(client, name, candidate_version).version)
    aliases = _aliases(client, name)
    champion = aliases.get(alias)
    if champion == candidate:  # promote re-run for the serving version: its promotion record stays as it was
        note = f"version {candidate} is already the {alias}; aliases and tags unchanged"
        return AliasChange(champion, aliases.get(previous), aliases.get(CHALLENGER), False, (note,))
    if decision.promote:
        client.set_registered_model_alias(name, alias, candidate)
        if champion is not None:
            client.set_registered_model_alias(name, previous, champion)
        if aliases.get(CHALLENGER) == candidate:
            client.delete_registered_model_alias(name, CHALLENGER)
    else:
        client.set_registered_model_alias(name, CHALLENGER, candidate)

    record = _decision_tags(decision, _now())
    for key, value in {**record, "champion_version": champion or ""}.items():
        client.set_model_version_tag(name, candidate, f"{PROMOTION_TAG}.{key}", value)
    if champion is not None:
        outcome = "replaced" if decision.promote else "kept"
        for key, value in {**record, "decision": outcome, "candidate_version": candidate}.items():
            client.set_model_version_tag(name, champion, f"{CHALLENGE_TAG}.{key}", value)
    after = _aliases(client, name)
    return AliasChange(after.get(alias), after.get(previous), after.get(CHALLENGER), True)


@registry_call
def rollback(
    client: MlflowClient, name: str, *, reason: str, to_version: str | int | None = None, alias: str = CHAMPION
) -> AliasChange:
    """Point `alias` back at `previous-<alias>` (or `to_version`); the demoted version becomes `previous-<alias>`,
    so a second rollback undoes the first. Both versions are tagged with the reason and the time."""
    check_model_name(name)
    previous = previous_alias(check_alias(alias))
    if not reason.strip():
        raise RegistryError("rollback needs a reason (--reason TEXT); it is recorded as a tag on both versions.")
    aliases = _aliases(client, name)
    champion = aliases.get(alias)
    if champion is None:
        raise RegistryError(
            f"model {name!r} has no {alias!r} alias, so there is nothing to roll back; promote a version first"
            " (`detops registry list` shows the versions)."
        )
    if to_version is None:
        target = aliases.get(previous)
        if target is None:
            raise RegistryError(
                f"model {name!r} has no {previous!r} alias to roll back to; pass --to VERSION"
                f" (versions: {', '.join(_version_numbers(client, name))})."
            )
    else:
        target = str(_version(client, name, to_version).version)
    if target == champion:
        raise RegistryError(f"version {target} of {name!r} is already the {alias}; nothing to roll back.")

    client.set_registered_model_alias(name, alias, target)
    client.set_registered_model_alias(name, previous, champion)
    if aliases.get(CHALLENGER) == target:
        client.delete_registered_model_alias(name, CHALLENGER)
    now = _now()
    restored = {"role": "restored", "reason": reason.strip(), "from_version": champion, "at": now}
    demoted = {"role": "demoted", "reason": reason.strip(), "to_version": target, "at": now}
    for key, value in restored.items():
        client.set_model_version_tag(name, target, f"{ROLLBACK_TAG}.{key}", value)
    for key, value in demoted.items():
        client.set_model_version_tag(name, champion, f"{ROLLBACK_TAG}.{key}", value)
    after = _aliases(client, name)
    return AliasChange(after.get(alias), after.get(previous), after.get(CHALLENGER), True)


@registry_call
def list_versions(client: MlflowClient, name: str, *, metric: str) -> list[VersionRow]:
    """Every version, newest first, with its aliases, its `metric` (version tag, else the run's metric) and the
    data hash it was trained on (version tag, else the run's tag)."""
    check_model_name(name)
    by_version: dict[str, list[str]] = {}
    for alias_name, version in _aliases(client, name).items():
        by_version.setdefault(version, []).append(alias_name)
    runs: dict[str, Any] = {}
    rows = []
    for mv in _all_versions(client, name):
        run = _run(client, mv.run_id, runs)
        value = _float(mv.tags.get(metric))
        if value is None and run is not None:
            value = _float(run.data.metrics.get(metric))
        data_hash = mv.tags.get(DATA_HASH_TAG) or (run.data.tags.get(DATA_HASH_TAG, "") if run is not None else "")
        rows.append(VersionRow(
            version=str(mv.version),
            aliases=tuple(sorted(by_version.get(str(mv.version), []))),
            metric=value,
            data_hash=data_hash,
            created=datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=timezone.utc),
            run_id=mv.run_id or "",
        ))
    return rows


@registry_call
def prune(client: MlflowClient, name: str, *, keep: int, alias: str = CHAMPION) -> PruneResult:
    """Delete every version except the newest `keep`, the `alias` one and the `previous-<alias>` one, then each
    deleted version's artifacts where its store allows it (kept when a surviving version shares them)."""
    check_model_name(name)
    if keep < 0:
        raise RegistryError(f"--keep must be >= 0 (got {keep}); the champion and previous champion are always kept.")
    aliases = _aliases(client, name)
    protected = {aliases.get(check_alias(alias)), aliases.get(previous_alias(alias))} - {None}
    versions = sorted(_all_versions(client, name), key=lambda mv: int(mv.version), reverse=True)
    kept: list[ModelVersion] = []
    doomed: list[ModelVersion] = []
    for index, mv in enumerate(versions):
        (kept if index < keep or str(mv.version) in protected else doomed).append(mv)
    result = PruneResult(kept=[str(mv.version) for mv in kept])
    survivors = {_artifact_uri(client, name, mv) for mv in kept} - {None}
    for mv in doomed:
        uri = _artifact_uri(client, name, mv)  # resolved before the version (and its record) is gone
        client.delete_model_version(name, str(mv.version))
        result.deleted.append(str(mv.version))
        if uri is None:
            result.notes.append(f"v{mv.version}: artifacts at {mv.source} are not a separate folder; kept")
        elif uri in survivors:
            result.notes.append(f"v{mv.version}: artifacts shared with a kept version; kept")
        else:
            result.notes.extend(_delete_artifacts(client, mv, uri))
    return result


def _aliases(client: MlflowClient, name: str, *, missing_ok: bool = False) -> dict[str, str]:
    """alias -> version (as str). Read from the registered model: version searches leave aliases empty."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        if missing_ok:
            return {}
        raise RegistryError(
            f"no registered model named {name!r} in this MLflow store yet; `detops promote` registers one,"
            " or fix mlflow.registered_model / MLFLOW_TRACKING_URI."
        ) from None
    return {str(key): str(value) for key, value in (model.aliases or {}).items()}


def _version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    text = str(version).strip()
    if not text.isdigit():
        raise RegistryError(f"{version!r} is not a version number of {name!r} (versions are 1, 2, 3, ...).")
    try:
        return client.get_model_version(name, text)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RegistryError(
            f"model {name!r} has no version {text} (versions: {', '.join(_version_numbers(client, name)) or 'none'})."
        ) from None


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    quote = '"' if "'" in name else "'"
    out: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = {quote}{name}{quote}", page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _version_numbers(client: MlflowClient, name: str) -> list[str]:
    return [str(v) for v in sorted(int(mv.version) for mv in _all_versions(client, name))]


def _run(client: MlflowClient, run_id: str | None, cache: dict[str, Any]) -> Any:
    """The version's source run, or None when it has none or it was deleted (the row still lists)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    if run_id not in cache:
        try:
            cache[run_id] = client.get_run(run_id)
        except MlflowException:
            cache[run_id] = None
    return cache[run_id]


def _artifact_uri(client: MlflowClient, name: str, mv: ModelVersion) -> str | None:
    """Where the version's files are, as a deletable URI; None when they are not a folder of their own (the whole
    run's artifact root, or a registry URI MLflow cannot resolve)."""
    uri = client.get_model_version_download_uri(name, str(mv.version))
    if uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        _, path = RunsArtifactRepository.parse_runs_uri(uri)
        if not path or path.strip("/") == "":
            return None
        return str(RunsArtifactRepository.get_underlying_uri(uri, tracking_uri=client.tracking_uri))
    if uri.startswith("models:/"):
        return None
    return str(uri)


def _delete_artifacts(client: MlflowClient, mv: ModelVersion, uri: str) -> list[str]:
    """Delete the files, then the logged model record (MLflow 3 `models:/m-...` sources); report what failed."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    notes = []
    try:
        get_artifact_repository(uri).delete_artifacts()
    except (MlflowException, OSError, NotImplementedError) as exc:
        notes.append(f"v{mv.version}: artifacts at {uri} could not be deleted ({exc}); delete them by hand")
    source = mv.source or ""
    if source.startswith("models:/m-"):
        try:
            client.delete_logged_model(source.removeprefix("models:/").strip("/"))
        except MlflowException as exc:
            notes.append(f"v{mv.version}: logged model {source} kept ({exc})")
    return notes


def _decision_tags(decision: Decision, now: str) -> dict[str, str]:
    def num(value: float | None) -> str:
        return "" if value is None else repr(float(value))

    return {
        "decision": "promoted" if decision.promote else "rejected",
        "metric": decision.metric,
        "candidate_value": num(decision.candidate_value),
        "champion_value": num(decision.champion_value),
        "threshold": num(decision.threshold),
        "min_improvement": num(decision.min_improvement),
        "min_metric": num(decision.min_metric),
        "comparable": str(decision.comparable).lower(),
        "overlap": "" if decision.overlap is None else str(decision.overlap),
        "reason": decision.reason[:4000],
        "decided_at": now,
    }


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
