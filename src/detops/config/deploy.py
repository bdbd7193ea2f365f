from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from detops.config.base import Section

# croniter's aliases (what Prefect's cron schedule accepts besides five fields); Prefect checks the fields fully.
_CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?#]+$")


class Toleration(Section):
    """A Kubernetes pod toleration, as in a pod spec: lets the runs' pods onto nodes with a matching taint."""

    key: str = Field("", description="Taint key, e.g. nvidia.com/gpu; empty with operator Exists: every taint.")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="Equal: the taint's value must match; Exists: "
                                                                     "any value.")
    value: str = Field("", description="Taint value, with operator Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "", description="Taint effect to tolerate; empty: all effects.")


class DeployParams(Section):
    """Prefect deployments (`detops deploy`): the work pool every run goes through (one run at a time; process, or
    Kubernetes with one Job per run), the schedules of `retrain-scheduled`, `drift-check` and `labels-sync`, the
    heartbeats by which a run whose worker died is found and started again, and the webhook told when a run fails
    or crashes or a promotion is rejected."""

    work_pool: str = Field(
        "detops-local", min_length=1, pattern=r"^[\w.-]+$",
        description="Prefect work pool (concurrency limit 1), created if missing.",
    )
    infrastructure: Literal["process", "kubernetes"] = Field(
        "process", description="Type of the work pool: process (the worker's machine runs the flows in the "
        "workspace) or kubernetes (one Job per run, needs the kubernetes extra, image, repository, promote.lock: "
        "prefect).",
    )
    image: str = Field("", description="kubernetes: the runs' container image (deployments/Dockerfile), e.g. "
                                       "registry.example.com/detops:0.1.0.")
    repository: str = Field("", description="kubernetes: git URL each run clones at the commit `detops deploy` ran "
                                            "at, then installs over the image's detops: the code a run executes is "
                                            "the commit it records.")
    gpus: int = Field(1, ge=0, le=64, description="kubernetes: nvidia.com/gpu limit of the runs that train "
                                                   "(retrain-*); 0 = none. drift-check and labels-sync get none.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="kubernetes: nodeSelector of the runs' pods, e.g. "
        "{cloud.google.com/gke-accelerator: nvidia-l4}.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="kubernetes: tolerations of the runs' pods, e.g. [{key: nvidia.com/gpu, "
        "operator: Exists, effect: NoSchedule}].",
    )
    env_secret: str = Field(
        "", pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", description="kubernetes: Secret whose keys become the "
        "runs' environment (envFrom): MLFLOW_TRACKING_URI, object-store credentials, LABEL_STUDIO_API_KEY; empty = "
        "none.",
    )
    service_account: str = Field(
        "", pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", description="kubernetes: service account of the runs' "
        "pods; a run with train.num_nodes > 1 submits a Job for its other nodes, so it needs one that may create "
        "Jobs (deployments/k8s-train/rbac.yaml makes detops-runs); empty = the namespace's default.",
    )
    git_push: str = Field(
        "", pattern=r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$", description="Branch prefix: each retraining run "
        "that keeps dvc.lock in step commits it to <git_push>/<flow run name>, made from the commit the run started "
        "at, and pushes that branch to the checkout's origin (never the branch it started from), so a run in a pod "
        "leaves its data versions in git; empty = off.",
    )
    cron: str = Field("0 3 * * 1", description="When retrain-scheduled runs (cron: minute hour day month weekday).")
    drift_cron: str = Field("0 * * * *", description="When drift-check looks for new data batches (cron); a drifted "
                                                     "batch starts retrain-on-drift.")
    labels_cron: str = Field("*/15 * * * *", description="When labels-sync pulls the finished annotations of pushed "
                                                         "batches from Label Studio (cron); a complete one starts "
                                                         "retrain-on-drift.")
    timezone: str = Field("UTC", description="IANA time zone of the crons, e.g. Europe/Paris.")
    heartbeat_seconds: int = Field(
        60, ge=30, le=3600, description="How often a deployed run tells the Prefect server it is alive (Prefect's "
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set in the deployments' job variables; Prefect's minimum is 30).",
    )
    dead_after_seconds: int = Field(
        180, ge=10, le=86_400, description="A run silent this long (its worker or machine died with it) is marked "
        "Crashed and scheduled again, freeing the pool's one slot; the next start resumes training. More than "
        "heartbeat_seconds (three heartbeats: a late one is not a death).",
    )
    webhook_url: str = Field(
        "", description="URL that gets a JSON {\"text\": ...} POST (Slack, Mattermost, ...) when a retrain or drift "
                        "check run fails or crashes and when a promotion is rejected; empty = no notifications.",
    )

    @model_validator(mode="after")
    def _silence_outlasts_a_heartbeat(self) -> DeployParams:
        if self.dead_after_seconds <= self.heartbeat_seconds:
            raise ValueError(f"dead_after_seconds ({self.dead_after_seconds}) must be longer than heartbeat_seconds "
                             f"({self.heartbeat_seconds}), or every live run would be restarted; three heartbeats "
                             "is Prefect's recipe")
        return self

    @model_validator(mode="after")
    def _kubernetes_needs_an_image_and_a_repository(self) -> DeployParams:
        if self.infrastructure == "kubernetes":
            missing = [name for name in ("image", "repository") if not getattr(self, name)]
            if missing:
                raise ValueError(f"deploy.infrastructure kubernetes needs deploy.{' and deploy.'.join(missing)}: the "
                                 "image the runs start in (deployments/Dockerfile) and the git URL they clone at the "
                                 "deployed commit")
        return self

    @field_validator("cron", "drift_cron", "labels_cron")
    @classmethod
    def _cron_shape(cls, value: str) -> str:
        """The shape only, so a typo fails when params load; Prefect validates the fields when deploying."""
        fields = value.split()
        if value.strip() in _CRON_ALIASES or (len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields)):
            return value
        raise ValueError(f"{value!r} is not a cron expression: five fields (minute hour day month weekday), "
                         "e.g. '0 3 * * 1', or an alias such as @daily")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. UTC or Europe/Paris") from None
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL; leave it empty for no notifications")
        return value
