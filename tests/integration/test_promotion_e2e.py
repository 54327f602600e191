"""promote-fleet end to end on real parts: a train run's factory.fleet.trained event starts
promote-fleet/on-trained; a batch beyond fleet.yaml's limits suspends with the table the approver
reads, and the answer given through the Prefect API promotes exactly what was approved or nothing.

One server, worker and factory home for the module (see tests/support/deployed.py): two nightly
runs leave a batch waiting for approval; each test answers its own suspended promote-fleet run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import SetStateStatus
from prefect.events.schemas.events import ReceivedEvent
from prefect.input.run_input import keyset_from_paused_state

from factory.adapters.audit_log import audit_log
from factory.adapters.data import write_panel
from factory.adapters.registry.names import BATCH_TAG, PRODUCTION, STAGING, TRAIN_KEY_TAG
from factory.core.audit import AuditRecord
from factory.core.synthetic import PanelSpec, generate_panel
from tests.support.deployed import (
    PROMOTE,
    Stack,
    champions,
    is_suspended,
    served,
    train_nightly,
    versions,
    worker_stack,
)

pytestmark = pytest.mark.integration

FIRST_END = "2026-10-31"
SECOND_END = "2026-11-07"  # a week more sales for every product: new data, new winners


@dataclass(frozen=True)
class Pending:
    """A trained fleet whose second nightly run left a promotion batch waiting."""

    stack: Stack
    run: FlowRun  # the promote-fleet run the second nightly's event started
    first: dict[str, int]  # product -> production version after the first promotion
    changed: list[str]  # products whose staging winner differs from production since


def differing(home: Path) -> list[str]:
    """Products whose staging winner is not what production serves (promote-fleet's batch)."""
    production = {p: v.tags[TRAIN_KEY_TAG] for p, v in served(home, PRODUCTION).items()}
    staging = {p: v.tags[TRAIN_KEY_TAG] for p, v in served(home, STAGING).items()}
    return sorted(p for p, key in staging.items() if production.get(p) != key)


def description(stack: Stack, run: FlowRun) -> str:
    """The markdown a suspended run shows its approver (stored as the run's input)."""
    assert run.state is not None
    keyset = keyset_from_paused_state(run.state)
    return json.loads(stack.client.read_flow_run_input(run.id, keyset["description"]))


def batch_in(text: str) -> str:
    """The batch id the approver's table names."""
    found = re.search(r"Promotion batch `([^`]+)`", text)
    assert found, text
    return found.group(1)


def audit(stack: Stack, action: str, batch: str) -> list[AuditRecord]:
    return audit_log(f"sqlite:///{stack.home / 'audit.db'}").records(action=action, batch=batch)


def announced(stack: Stack, action: str, batch: str) -> ReceivedEvent:
    """The one `factory.model.<action>` event of this batch (events arrive asynchronously)."""

    def mine() -> list[ReceivedEvent]:
        events = stack.events(f"factory.model.{action}")
        return [e for e in events if e.payload.get("batch") == batch]

    (event,) = stack.wait(f"factory.model.{action} of batch {batch}", mine, 30)
    return event


def answer(stack: Stack, run: FlowRun, **run_input: Any) -> FlowRun:
    """Resume a suspended run with the approver's answer; wait for it to complete."""
    result = stack.client.resume_flow_run(run.id, run_input=run_input)
    assert result.status == SetStateStatus.ACCEPT, result.details
    return stack.finished(run.id, timeout=120)


@pytest.fixture(scope="module")
def pending(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pending]:
    """Nightly on data to FIRST_END (every product new: promoted without approval), then
    nightly again on a week more: most winners change, a batch beyond auto_max_share."""
    with worker_stack(tmp_path_factory.mktemp("promotion")) as stack:
        data = str(stack.home / "data")
        full = generate_panel(PanelSpec(n_products=12, seed=5, end=SECOND_END)).frame
        write_panel(full[full["ds"] <= FIRST_END], data)
        train_nightly(stack)
        first = champions(stack.home)
        assert first and set(first) == set(served(stack.home, STAGING))
        assert differing(stack.home) == []

        write_panel(full, data)
        trained = stack.finished(stack.run("train-fleet/nightly"), timeout=180)
        (run,) = stack.promotions_since(trained)
        yield Pending(stack, run, first, differing(stack.home))


def test_over_limit_promotion_suspends_and_approval_promotes_exactly_the_subset(
    pending: Pending,
) -> None:
    stack, run = pending.stack, pending.run
    assert is_suspended(run), f"{run.state}\n{stack.log_tail()}"
    assert champions(stack.home) == pending.first  # nothing moves before the answer
    assert len(pending.changed) > len(pending.first) / 2, pending.changed
    text = description(stack, run)
    assert "Needs approval because" in text and "auto_max_share" in text
    assert {p for p in pending.first if f"`{p}`" in text} == set(pending.changed)
    batch = batch_in(text)

    chosen = pending.changed[:2]
    answer(stack, run, approver="alice", decision="approve", products=chosen, reason="checked")

    now = champions(stack.home)
    assert set(now) == set(pending.first)
    assert {p for p, v in now.items() if v != pending.first[p]} == set(chosen)
    production, staging = served(stack.home, PRODUCTION), served(stack.home, STAGING)
    for pid in chosen:  # the approved staging winner, promoted under the batch shown
        assert production[pid].tags[TRAIN_KEY_TAG] == staging[pid].tags[TRAIN_KEY_TAG]
        assert production[pid].tags[BATCH_TAG] == batch

    (approval,) = audit(stack, "approve", batch)
    assert "alice" in approval.actor and approval.reason == "checked"
    assert sorted(approval.products) == sorted(chosen)
    (promotion,) = audit(stack, "promote", batch)
    assert sorted(promotion.products) == sorted(chosen)
    assert promotion.versions == {p: str(now[p]) for p in chosen}
    assert announced(stack, "approve", batch).payload["products"] == approval.products
    assert sorted(announced(stack, "promote", batch).payload["products"]) == sorted(chosen)


def test_rejection_promotes_nothing_and_records_the_reason(pending: Pending) -> None:
    stack = pending.stack
    waiting = differing(stack.home)  # what production still lacks (all but approved ones)
    assert set(waiting) <= set(pending.changed) and len(waiting) >= len(pending.changed) - 2
    before, registered = champions(stack.home), versions(stack.home)

    run = stack.settled(stack.run(PROMOTE), timeout=120)
    assert is_suspended(run), f"{run.state}\n{stack.log_tail()}"
    text = description(stack, run)
    assert {p for p in before if f"`{p}`" in text} == set(waiting)
    batch = batch_in(text)

    reason = "holiday freeze: no model changes this week"
    answer(stack, run, approver="bob", decision="reject", reason=reason)

    assert champions(stack.home) == before
    assert versions(stack.home) == registered
    (rejection,) = audit(stack, "reject", batch)
    assert "bob" in rejection.actor and rejection.reason == reason
    assert sorted(rejection.products) == waiting
    assert audit(stack, "promote", batch) == []
    assert announced(stack, "reject", batch).payload["reason"] == reason
