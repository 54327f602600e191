"""The zombie automation's definition and the heartbeats of the runs the factory launches."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture

from factory.adapters.prefect_env import HEARTBEAT_SECONDS
from factory.adapters.zombies import zombie_automation, zombie_window
from tests.support.fleets import REPO


@pytest.mark.parametrize(
    ("heartbeat", "window"),
    [
        (30, 240),  # the factory's runs: 8 missed beats, and a default-rate run (180 s) survives
        (180, 540),  # Prefect's default: 3 missed beats, as in Prefect's docs
        (600, 1800),
    ],
)
def test_the_window_outlasts_three_heartbeats_and_prefects_default_rate(
    heartbeat: int, window: int
) -> None:
    assert zombie_window(heartbeat) == timedelta(seconds=window)


def test_a_run_silent_past_the_window_is_crashed_unless_it_ended() -> None:
    automation = zombie_automation(timedelta(seconds=45))
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture == Posture.Proactive and trigger.threshold == 1
    assert trigger.within == timedelta(seconds=45)
    assert trigger.match.get("prefect.resource.id") == ["prefect.flow-run.*"]
    assert trigger.for_each == {"prefect.resource.id"}  # one countdown per flow run
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    ended = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    assert trigger.expect == {"prefect.flow-run.heartbeat"} | ended
    (action,) = automation.actions
    assert isinstance(action, ChangeFlowRunState) and action.state == StateType.CRASHED


def test_every_deployment_beats_at_the_factorys_rate() -> None:
    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS), deployment
