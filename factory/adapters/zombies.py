"""Zombie flow runs: a run whose process died stays Running until this automation marks it Crashed.

Every flow run beats (event `prefect.flow-run.heartbeat`, PREFECT_FLOWS_HEARTBEAT_FREQUENCY
seconds apart) while it runs. The automation is the one from Prefect's docs ("Detect zombie
flows"): after a run's heartbeat, expect another heartbeat or a final state within the window,
else set the run to Crashed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings
from prefect.settings.models.flows import FlowsSettings

from factory.adapters.prefect_env import HEARTBEAT_SECONDS

ZOMBIE_AUTOMATION = "factory: crash zombie flow runs"
FINAL_EVENTS = ("Completed", "Failed", "Cancelled", "Crashed")


def zombie_window(heartbeat_seconds: int | None = None) -> timedelta:
    """Silence that makes a run a zombie: three missed heartbeats (Prefect's docs), and never
    less than one missed heartbeat at Prefect's default frequency plus a minute, so that a run
    started elsewhere with the default (180 s) is not crashed while it is alive."""
    beat = heartbeat_seconds or get_current_settings().flows.heartbeat_frequency or 0
    default = FlowsSettings.model_fields["heartbeat_frequency"].default or HEARTBEAT_SECONDS
    return timedelta(seconds=max(3 * beat, default + 60))


def zombie_automation(within: timedelta) -> AutomationCore:
    """Crash a flow run that neither beat nor ended within `within` of its last heartbeat."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            f"A flow run that sent no heartbeat for {within.total_seconds():.0f} s (its process "
            "or machine died) is marked Crashed. Created by `factory up`."
        ),
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL_EVENTS)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {within.total_seconds():.0f} s: the run's process died.",
            )
        ],
    )


def ensure_zombie_automation(api_url: str | None = None, within: timedelta | None = None) -> UUID:
    """Create the zombie automation on the Prefect API at `api_url` (default: PREFECT_API_URL),
    or bring the one of that name up to date; left as it is when it already matches, since
    replacing it would forget the heartbeats it is waiting on."""
    wanted = zombie_automation(within or zombie_window())
    with SyncPrefectClient(api_url) if api_url else get_client(sync_client=True) as client:
        found = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        if not found:
            return client.create_automation(wanted)
        current = found[0]
        if _definition(current) != _definition(wanted):
            paused_or_not = wanted.model_copy(update={"enabled": current.enabled})
            client.update_automation(current.id, paused_or_not)
        return current.id


def _definition(automation: AutomationCore) -> dict[str, Any]:
    """What the automation does, without the ids the server assigns (sets stay sets)."""
    return automation.model_dump(
        include={"name", "description", "trigger", "actions"}, exclude={"trigger": {"id"}}
    )
