"""retrain-products: retrain exactly the products an event names (new data landed, drift)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from factory.core.outcomes import RetrainReport
from flows.train_fleet import train_fleet
from tasks.retrain import coalesce_waiting_runs


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
