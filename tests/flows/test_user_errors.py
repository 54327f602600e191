"""A user mistake in a flow run: one line in Prefect's logs and state messages, never retried."""

from __future__ import annotations

import logging
from pathlib import Path
from uuid import UUID

import pytest
from prefect import Task, flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker
from prefect.states import State

import tasks  # installs the factory's log filter, as every flow does
from factory.adapters.data import write_panel
from factory.adapters.prefect_env import retry_unless_user_error
from factory.core.contract import DataError
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.settings import get_settings
from tests.support.fleets import write_fleet

pytestmark = pytest.mark.usefixtures("prefect_harness")

IDS = product_ids(30)
attempts: list[str] = []


@task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_user_error)
def flaky(exc: Exception) -> None:
    attempts.append(type(exc).__name__)
    raise exc


@flow
def raises_in_a_task(exc: Exception) -> None:
    flaky(exc)


def run_logs(state: State) -> list[str]:
    """The log lines the Prefect API holds for the flow run of `state` (its tasks' included)."""
    APILogWorker.drain_all(timeout=10)  # what APILogHandler.flush does
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        only = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        return [log.message for log in client.read_logs(log_filter=only)]


def task_run_messages(run_id: UUID | None) -> list[str]:
    """The state messages of the flow run's failed task runs."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return [r.state.message or "" for r in runs if r.state and r.state.is_failed()]


def assert_one_line(message: str, state: State, caplog: pytest.LogCaptureFixture) -> None:
    """The message, and no traceback, in the console log, the API log and the state message."""
    assert state.is_failed()
    assert message in (state.message or "") and "\n" not in (state.message or "")
    assert "Traceback" not in caplog.text
    assert message in caplog.messages  # the log line is the message itself
    logs = run_logs(state)
    assert message in logs
    assert not [line for line in logs if "Traceback" in line]


def bad_panel(kind: str) -> None:
    """A sales panel with one user mistake in it."""
    frame = generate_panel(PanelSpec(n_products=6, seed=3)).frame
    if kind == "wrong column":
        frame = frame.rename(columns={"y": "sales"})
    else:
        frame = frame.assign(y=frame["y"].map("{:.1f} units".format))
    write_panel(frame, get_settings().resolved_data_url)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("wrong column", "missing column(s) y"), ("text in y", "column y")],
)
def test_a_data_mistake_is_one_line_in_the_logs_and_the_run_states(
    factory_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, expected: str
) -> None:
    from flows.train_fleet import train_fleet

    bad_panel(kind)
    fleet = write_fleet(tmp_path / "fleet.yaml")
    caplog.set_level(logging.INFO)

    state = train_fleet(str(fleet), return_state=True)

    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataError) and expected in str(error)
    assert_one_line(str(error), state, caplog)
    tasks_failed = task_run_messages(state.state_details.flow_run_id)
    assert len(tasks_failed) == 1 and str(error) in tasks_failed[0]


@pytest.mark.usefixtures("local_ray")
def test_a_budget_stop_is_one_line(
    factory_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from factory.core.outcomes import BudgetExceeded
    from flows.train_fleet import train_fleet

    defects = {IDS[3]: "negative", IDS[6]: "duplicate_dates", IDS[9]: "too_short"}
    write_panel(
        generate_panel(PanelSpec(n_products=30, seed=11, defects=defects)).frame,
        get_settings().resolved_data_url,
    )
    strict = write_fleet(tmp_path / "strict.yaml", failure_budget=0.05)
    caplog.set_level(logging.INFO)

    state = train_fleet(str(strict), return_state=True)

    error = state.result(raise_on_failure=False)
    assert isinstance(error, BudgetExceeded)
    assert_one_line(str(error), state, caplog)


def test_a_user_error_is_not_retried_and_an_infrastructure_error_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts.clear()
    state = raises_in_a_task(DataError("sales.parquet: column y holds text"), return_state=True)
    assert attempts == ["DataError"]
    assert_one_line("sales.parquet: column y holds text", state, caplog)

    attempts.clear()
    raises_in_a_task(ConnectionError("raylet lost"), return_state=True)
    assert attempts == ["ConnectionError"] * 3


def test_a_bug_keeps_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    state = raises_in_a_task(KeyError("family"), return_state=True)

    assert state.is_failed()
    assert "Traceback" in caplog.text and "KeyError: 'family'" in caplog.text
    assert any("Traceback" in line and "KeyError" in line for line in run_logs(state))


def factory_tasks_with_retries() -> list[Task]:
    import importlib
    import pkgutil

    found = []
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        found += [v for v in vars(module).values() if isinstance(v, Task) and v.retries]
    return found


@pytest.mark.parametrize("retrying", factory_tasks_with_retries(), ids=lambda t: t.name)
def test_every_factory_task_with_retries_refuses_user_errors(retrying: Task) -> None:
    assert retrying.retry_condition_fn is retry_unless_user_error
