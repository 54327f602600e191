"""promote-fleet: retire what left the fleet, then promote staging winners within the limits
fleet.yaml sets, or wait for an engineer's approval in the Prefect UI beyond them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.input.actions import create_flow_run_input, read_flow_run_input
from prefect.runtime import deployment, flow_run
from pydantic import Field

from factory.adapters.audit_log import current_actor, record_action
from factory.adapters.identity import PROMOTER, settings_as
from factory.adapters.registry.lifecycle import Move
from factory.core.audit import AuditEntry
from factory.core.canary import canary_note
from factory.core.promotion import describe, select
from tasks.lifecycle import retire_products
from tasks.promote import PLAN, PromotionPlan, plan_promotion, promote_batch

PLAN_KEY = "factory-promotion-plan"


class PromotionApproval(RunInput):
    """What the engineer answers in the Prefect UI (or `factory promote --approve/--reject`)."""

    approver: str = Field(description="Your name: recorded in the audit trail")
    decision: Literal["approve", "reject"] = Field("approve", description="approve or reject")
    products: list[str] = Field(
        default_factory=list, description="Approve only these product ids (empty: all)"
    )
    reason: str = Field("", description="Why (recorded; required to reject)")


@dataclass
class PromotionReport:
    """What a promote-fleet run did."""

    batch: str
    status: Literal["nothing to do", "promoted", "rejected", "awaiting approval", "planned"]
    promoted: dict[str, int] = field(default_factory=dict)  # product -> production version
    canaries: dict[str, int] = field(default_factory=dict)  # product -> its canary version
    retired: list[str] = field(default_factory=list)
    needs_approval: list[str] = field(default_factory=list)  # the limits the batch went past
    ignored: list[str] = field(default_factory=list)  # approved ids that were not in the batch
    description: str = ""


@flow(name="promote-fleet")
def promote_fleet(
    fleet_path: str = "fleet.yaml",
    products: list[str] | None = None,
    approval: PromotionApproval | None = None,
    dry_run: bool = False,
    wait_hours: float = 72.0,
    canary_share: float | None = None,
) -> PromotionReport:
    """Retire products that left the fleet, then promote the staging winners newer than
    production: at once within fleet.yaml's limits, else after an approval (the run suspends
    in a deployment; elsewhere it reports "awaiting approval" unless `approval` is given).
    `canary_share` (default: fleet.yaml's) starts products already in production as canaries."""
    log = get_run_logger()
    settings = settings_as(PROMOTER)
    stored = _stored_plan()
    plan = stored or plan_promotion(fleet_path, settings, products, canary_share)
    radius = plan.radius
    text = describe(radius, plan.batch) + canary_note(plan.canary_share)
    report = PromotionReport(plan.batch, "planned", needs_approval=radius.reasons, description=text)
    if dry_run:
        _publish(report)
        return report
    if stored is None and plan.retire:
        report.retired = retire_products(settings, plan.retire, current_actor())
    if not radius.changes:
        report.status = "nothing to do"
        _publish(report)
        return report
    if not radius.needs_approval and approval is None:
        actor = f"policy: within limits ({plan.limits}) / {current_actor()}"
        moves = promote_batch(
            settings, radius.changes, plan.batch, actor, "within limits", plan.canary_share
        )
        _promoted(report, moves)
        _publish(report)
        return report
    if approval is None:
        approval = _wait_for_approval(plan, text, wait_hours, store=stored is None)
    if approval is None:
        report.status = "awaiting approval"
        log.warning("batch %s needs approval: %s", plan.batch, "; ".join(radius.reasons))
        _publish(report)
        return report
    chosen, report.ignored = select(radius, approval.products)
    actor = current_actor(approval.approver)
    action = "reject" if approval.decision == "reject" else "approve"
    reason = approval.reason or ("(no reason given)" if action == "reject" else "")
    decided = chosen if action == "approve" else list(radius.changes)
    record_action(
        settings.resolved_audit_url,
        AuditEntry(
            action=action,
            actor=actor,
            products=[c.product_id for c in decided],
            versions={c.product_id: str(c.staging.version) for c in decided},
            reason=reason,
            batch=plan.batch,
            detail={"limits": radius.reasons, "ignored": report.ignored},
        ),
    )
    if report.ignored:
        log.warning("not in batch %s, ignored: %s", plan.batch, ", ".join(report.ignored))
    if action == "reject":
        report.status = "rejected"
        log.warning("batch %s rejected by %s: %s", plan.batch, approval.approver, reason)
        _publish(report)
        return report
    moves = promote_batch(
        settings, chosen, plan.batch, actor, reason or "approved", plan.canary_share
    )
    _promoted(report, moves)
    _publish(report)
    return report


def _promoted(report: PromotionReport, moves: list[Move]) -> None:
    """The batch's champions and canaries into the report."""
    report.promoted = {m.product_id: int(m.new or 0) for m in moves if not m.canary}
    report.canaries = {m.product_id: int(m.new or 0) for m in moves if m.canary}
    report.status = "promoted"


def _stored_plan() -> PromotionPlan | None:
    """The plan this run showed its approver before it was suspended (a resumed run starts
    over and must promote exactly what was approved, not a plan made afresh)."""
    if flow_run.id is None:
        return None
    try:
        stored = read_flow_run_input(PLAN_KEY)
    except Exception:
        return None
    return None if stored is None else PLAN.validate_json(str(stored))


def _wait_for_approval(
    plan: PromotionPlan, text: str, hours: float, store: bool = True
) -> PromotionApproval | None:
    """Suspend a deployment's run until an engineer answers in the Prefect UI (the worker is
    freed meanwhile). A run outside a deployment (the CLI) cannot be resumed by a worker: it
    reports "awaiting approval", and `factory promote --approve/--reject` answers."""
    if not deployment.id:
        return None
    form = PromotionApproval.with_initial_data(description=text, decision="approve")
    if store:  # a resumed run starts over with the plan it stored before it was suspended
        create_flow_run_input(PLAN_KEY, PLAN.dump_json(plan).decode())
    return suspend_flow_run(wait_for_input=form, timeout=int(hours * 3600), key="approval")


def _publish(report: PromotionReport) -> None:
    """The run's summary artifact: the status, then the table the approver saw."""
    head = f"**{report.status}**: batch `{report.batch}`, {len(report.promoted)} promoted"
    if report.canaries:
        head += f", {len(report.canaries)} started as canaries"
    if report.retired:
        head += f", {len(report.retired)} retired ({', '.join(report.retired[:20])})"
    create_markdown_artifact(
        markdown=f"{head}\n\n{report.description}",
        key="promotion",
        description=f"promote-fleet {report.status}",
    )
