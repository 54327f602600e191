"""coalesce_waiting_runs: a retrain takes over the products of the runs waiting behind it."""

from __future__ import annotations

from typing import Any

from prefect import task
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

from factory.adapters.prefect_env import retry_unless_user_error
from factory.core.outcomes import Coalesced


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 5],
    retry_condition_fn=retry_unless_user_error,
)
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
