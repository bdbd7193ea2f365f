"""Notifications: Prefect automations post to params.yaml's `deploy.webhook_url` when a `retrain` or `drift_check`
flow run fails or crashes, when the promote step rejects a candidate (the `detops.promotion.rejected` event of
flows.events), and when the champion's accuracy on a labelled production share dropped (`detops.accuracy.dropped`).

The server sends them (its automation service), so they arrive whichever worker or machine ran the flow. The
webhook is a Custom Webhook block posting `{"text": "<subject>\\n<body>"}`, what Slack and Mattermost incoming
webhooks read. The block and the automations are found by name, so deploying again updates them in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.automations import AutomationCore
    from prefect.client.orchestration import SyncPrefectClient

BLOCK_NAME = "detops-webhook"
FAILED = "detops: run failed"
REJECTED = "detops: promotion rejected"
DROPPED = "detops: accuracy dropped"

FLOWS = ["retrain", "drift_check"]
FAILED_SUBJECT = "detops {{ flow.name }} {{ flow_run.state.name }}: {{ flow_run.name }}"
FAILED_BODY = (
    "Flow run {{ flow_run.name }}{% if deployment %} of deployment {{ deployment.name }}{% endif %} ended"
    " {{ flow_run.state.name }}: {{ flow_run.state.message }}{% if flow_run|ui_url %}\n{{ flow_run|ui_url }}{% endif %}"
)
REJECTED_SUBJECT = "detops: {{ event.payload.model }} version {{ event.payload.version }} not promoted"
REJECTED_BODY = (
    "{{ event.payload.reason }}\nCandidate {{ event.payload.model_uri }} (MLflow run {{ event.payload.run_id }});"
    " champion: {% if event.payload.champion_version %}version {{ event.payload.champion_version }}{% else %}none"
    "{% endif %}.{% if flow_run %}\nFlow run {{ flow_run.name }}{% if flow_run|ui_url %}: {{ flow_run|ui_url }}"
    "{% endif %}{% endif %}"
)

DROPPED_SUBJECT = "detops: {{ event.payload.model }} version {{ event.payload.version }} accuracy dropped"
DROPPED_BODY = (
    "On labelled batch {{ event.payload.batch }} ({{ event.payload.images }} images): mAP {{ event.payload.map }},"
    " 90 % interval [{{ event.payload.interval_low }}, {{ event.payload.interval_high }}], test mAP"
    " {{ event.payload.test_map }}.\n{{ event.payload.reason }}{% if flow_run %}\nFlow run {{ flow_run.name }}"
    "{% if flow_run|ui_url %}: {{ flow_run|ui_url }}{% endif %}{% endif %}"
)


def configure_notifications(client: SyncPrefectClient, webhook_url: str) -> list[str]:
    """Create or update the webhook block and both automations; with no URL, remove the automations."""
    if not webhook_url:
        removed = [name for name in (FAILED, REJECTED, DROPPED) if _delete(client, name)]
        return ["notifications: off, deploy.webhook_url is empty", *(f"automation {n!r}: removed" for n in removed)]
    block_id = save_webhook(webhook_url)
    lines = []
    for automation in automations(block_id):
        save_automation(client, automation)
        lines.append(f"automation {automation.name!r}: notifies the webhook (block {BLOCK_NAME!r})")
    return lines


def save_automation(client: SyncPrefectClient, automation: AutomationCore) -> None:
    """Found by name: deploying again updates it in place."""
    existing = client.read_automations_by_name(automation.name)
    if existing:
        client.update_automation(existing[0].id, automation)
    else:
        client.create_automation(automation)


def save_webhook(url: str) -> UUID:
    """The URL goes in the block's secrets: a webhook URL is a credential, hidden in the UI."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="detops", url="{{webhook_url}}", secrets={"webhook_url": url},
        json_data={"text": "{{subject}}\n{{body}}"},
    )
    return cast("UUID", block.save(BLOCK_NAME, overwrite=True))  # sync code: async_dispatch runs the sync save


def automations(block_id: UUID) -> list[AutomationCore]:
    """A failed or crashed run of a detops flow (any deployment, or none), a rejected promotion, an accuracy
    drop."""
    from datetime import timedelta

    from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification

    from flows.deploy.spec import ACCURACY_EVENT

    def on(events: set[str], resource: str, **related: str | list[str]) -> EventTrigger:
        return EventTrigger(expect=events, match={"prefect.resource.id": resource},
                            match_related={f"prefect.resource.{k}": v for k, v in related.items()},
                            posture=Posture.Reactive, threshold=1, within=timedelta(0))

    return [
        AutomationCore(
            name=FAILED, description="detops deploy: tell the team when a retraining or drift check fails or crashes.",
            trigger=on({"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}, "prefect.flow-run.*",
                       role="flow", name=FLOWS),
            actions=[SendNotification(block_document_id=block_id, subject=FAILED_SUBJECT, body=FAILED_BODY)],
        ),
        AutomationCore(
            name=REJECTED, description="detops deploy: tell the team when a trained model is not promoted.",
            trigger=on({"detops.promotion.rejected"}, "detops.model.*"),
            actions=[SendNotification(block_document_id=block_id, subject=REJECTED_SUBJECT, body=REJECTED_BODY)],
        ),
        AutomationCore(
            name=DROPPED, description="detops deploy: tell the team when the champion's production accuracy drops.",
            trigger=on({ACCURACY_EVENT}, "detops.model.*"),
            actions=[SendNotification(block_document_id=block_id, subject=DROPPED_SUBJECT, body=DROPPED_BODY)],
        ),
    ]


def _delete(client: SyncPrefectClient, name: str) -> bool:
    found = client.read_automations_by_name(name)
    for automation in found:
        client.delete_automation(automation.id)
    return bool(found)
