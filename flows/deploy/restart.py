"""A run whose worker died with it does not block the pool: Prefect's zombie-run recipe, then a restart.

When a worker (or its machine) dies, nothing reports the end of its run: Prefect leaves it Running, and the pool's
one slot (concurrency limit 1) holds every later run behind it, schedules included. `detops deploy` therefore has
every run beat (`prefect.flow-run.heartbeat`, deploy.heartbeat_seconds, set in the deployments' job variables) and
creates two automations. The first is Prefect's documented recipe for zombie runs: after a heartbeat of a detops
run (tag `detops`), some event of that run is expected within deploy.dead_after_seconds (another heartbeat, or its
end); when none comes the run is marked Crashed with a message of its own, which frees the slot and tells the
webhook (notify.py). The second sees that Crashed state (by its message) and puts the run back to Scheduled
(`AwaitingRetry`), the same run with the same parameters, which the next free worker starts again: the flow resumes
training from its checkpoint. Forced, as a person resuming it from the UI would: Prefect refuses to leave a final
state otherwise. Two automations, not two actions of one: Prefect runs an automation's actions concurrently, so a
reschedule could land before the Crashed state and leave the run Crashed for good.

Only silence restarts a run. A run whose process crashes while its worker lives is reported Crashed by the worker,
with another message, so a run that crashes every time is not started again and again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.deploy.spec import TAGS

if TYPE_CHECKING:
    from prefect.automations import AutomationCore
    from prefect.client.orchestration import SyncPrefectClient

    from detops.config.deploy import DeployParams

RESTART = "detops: restart dead runs"  # marks a silent run Crashed (its name predates the split in two)
RESTART_AGAIN = "detops: schedule dead runs again"
HEARTBEAT = "prefect.flow-run.heartbeat"
CRASHED_MESSAGE = "no heartbeat for {seconds} s: the worker or its machine died with the run (detops deploy)"
RESCHEDULED_MESSAGE = "scheduled again by detops deploy's automation after its worker died: it resumes where it stopped"


def ensure_restart(client: SyncPrefectClient, deploy: DeployParams) -> str:
    """Create or update the two automations (by name)."""
    from flows.deploy.notify import save_automation

    for automation in restart_automations(deploy):
        save_automation(client, automation)
    return (f"automations {RESTART!r}, {RESTART_AGAIN!r}: a run silent for {deploy.dead_after_seconds} s is marked "
            f"Crashed and started again (heartbeats every {deploy.heartbeat_seconds} s)")


def restart_automations(deploy: DeployParams) -> list[AutomationCore]:
    from datetime import timedelta

    from prefect.automations import AutomationCore, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    crashed = CRASHED_MESSAGE.format(seconds=deploy.dead_after_seconds)
    tagged = {"prefect.resource.role": "tag", "prefect.resource.id": [f"prefect.tag.{t}" for t in TAGS]}
    return [
        AutomationCore(
            name=RESTART,
            description="detops deploy: a run whose heartbeats stopped (its worker died) is marked Crashed, so it "
                        "does not hold the pool's one slot.",
            trigger=EventTrigger(
                after={HEARTBEAT}, expect={"prefect.flow-run.*"}, match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related=tagged, for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                within=timedelta(seconds=deploy.dead_after_seconds),
            ),
            actions=[ChangeFlowRunState(state=StateType.CRASHED, message=crashed)],
        ),
        AutomationCore(
            name=RESTART_AGAIN,
            description="detops deploy: a run marked Crashed for its silence is scheduled again; it resumes.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"},
                match={"prefect.resource.id": "prefect.flow-run.*", "prefect.state-message": crashed},
                match_related=tagged, for_each={"prefect.resource.id"}, posture=Posture.Reactive, threshold=1,
            ),
            actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="AwaitingRetry", message=RESCHEDULED_MESSAGE,
                                        force=True)],
        ),
    ]
