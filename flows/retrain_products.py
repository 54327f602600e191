"""retrain-products: retrain exactly the products an event names (new data landed, drift)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled
from pydantic import BaseModel

from flows.train_fleet import train_fleet
from tasks.reporting import FleetSummary


class Coalesced(BaseModel):
    """Waiting runs of this deployment whose products this run takes over."""

    run_ids: list[str] = []
    product_ids: list[str] = []
    reasons: list[str] = []


class RetrainReport(BaseModel):
    """What one retrain-products run trained and which waiting runs it absorbed."""

    requested: list[str]
    products: list[str]
    reason: str
    coalesced: Coalesced
    summary: FleetSummary | None


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 5])
def coalesce_waiting_runs() -> Coalesced:
    """Take over the products of this deployment's runs still waiting to start, cancelling them.

    The deployment's concurrency limit of 1 means none of them can start while this run holds
    the slot, so a burst of events becomes one more run, not one run per event.
    """
    deployment_id, me = deployment.id, flow_run.id
    if not deployment_id or not me:
        return Coalesced()
    with get_client(sync_client=True) as client:
        waiting = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=[me]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            ),
        )
        out = Coalesced()
        for run in waiting:
            result: Any = client.set_flow_run_state(
                run.id, Cancelled(message=f"coalesced into flow run {me}"), force=False
            )
            if result.state is None or result.state.type != StateType.CANCELLED:
                continue  # it moved on (started or finished) meanwhile: it keeps its products
            out.run_ids.append(str(run.id))
            out.product_ids += list(run.parameters.get("products") or [])
            out.reasons.append(str(run.parameters.get("reason", "")))
    out.product_ids = sorted(set(out.product_ids))
    return out


@flow(name="retrain-products")
def retrain_products(
    products: list[str], fleet_path: str = "fleet.yaml", reason: str = "manual"
) -> RetrainReport:
    """Retrain, gate and register only these products (plus those of runs waiting behind)."""
    log = get_run_logger()
    coalesced = coalesce_waiting_runs()
    chosen = sorted(set(products) | set(coalesced.product_ids))
    if coalesced.run_ids:
        log.info(
            "took over %d waiting run(s) with %d more products",
            len(coalesced.run_ids),
            len(set(coalesced.product_ids) - set(products)),
        )
    if not chosen:
        log.info("no products to retrain (%s)", reason)
        return RetrainReport(
            requested=products, products=[], reason=reason, coalesced=coalesced, summary=None
        )
    log.info("retraining %d products (%s): %s", len(chosen), reason, ", ".join(chosen[:50]))
    summary = train_fleet(fleet_path=fleet_path, products=chosen)
    return RetrainReport(
        requested=sorted(products),
        products=chosen,
        reason=reason,
        coalesced=coalesced,
        summary=summary,
    )
