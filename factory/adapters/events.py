"""Prefect events the factory emits: new data landed, a production model drifted.

Both name the affected products in the payload (`product_ids`) with the data fingerprint behind
them; the `retrain-products/on-data` deployment's triggers turn them into a retraining run for
exactly those products. The primary resource id hashes event, products and fingerprint, so the
trigger's `for_each` + `within` collapses re-deliveries of one event and nothing else.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

LANDED = "factory.data.landed"
TRAINED = "factory.fleet.trained"  # every train run, at its end: promote-fleet's trigger
DRIFTED = "factory.model.drifted"
RESOURCE_PREFIX = "factory.products."
MAX_PRODUCTS_PER_EVENT = 2000  # keeps an event well under Prefect's size limit


class EventsNotEmitted(RuntimeError):
    """Prefect is not emitting events here, so nothing would retrain; the data stays pending."""


class ProductsPayload(BaseModel):
    """What an event says: which products, on which data, and why."""

    product_ids: list[str]
    fingerprint: str
    fingerprints: dict[str, str] = {}
    reason: Literal["data-landed", "drift", "external"] = "external"
    detail: dict[str, str] = {}


def products_resource(event: str, payload: ProductsPayload) -> dict[str, str]:
    """The event's primary resource: `factory.products.<hash of event, products, fingerprint>`."""
    digest = hashlib.sha256(
        "\n".join([event, ",".join(sorted(payload.product_ids)), payload.fingerprint]).encode()
    ).hexdigest()[:20]
    return {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{digest}",
        "prefect.resource.name": f"{len(payload.product_ids)} products",
        "factory.product-count": str(len(payload.product_ids)),
    }


def chunk_payload(payload: ProductsPayload, size: int = MAX_PRODUCTS_PER_EVENT) -> list:
    """Split a large payload into events of at most `size` products each."""
    ids = sorted(payload.product_ids)
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
    if len(chunks) == 1:
        return [payload]
    out = []
    for part in chunks:
        fps = {p: payload.fingerprints[p] for p in part if p in payload.fingerprints}
        out.append(payload.model_copy(update={"product_ids": part, "fingerprints": fps}))
    return out


def emit_products_event(event: str, payload: ProductsPayload) -> list[str]:
    """Emit the event (in chunks for very large product sets); returns the event ids sent.

    An empty list means Prefect is not emitting events here (no API configured): the caller
    must not treat the products as handled.
    """
    from prefect.events import emit_event

    sent = []
    for part in chunk_payload(payload):
        emitted = emit_event(
            event,
            resource=products_resource(event, part),
            payload=part.model_dump(mode="json"),
        )
        if emitted is None:
            return []
        sent.append(str(emitted.id))
    return sent


def event_body(event: str, payload: ProductsPayload) -> list[dict[str, Any]]:
    """The JSON body an external system POSTs to `<PREFECT_API_URL>/events` for the same event."""
    return [
        {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": event,
            "resource": products_resource(event, payload),
            "payload": payload.model_dump(mode="json"),
        }
    ]


def emit_trained(flow_run_id: str | None, registered: list[str]) -> str | None:
    """Announce a finished train run (its new staging winners, at most the first 2000 named);
    None when Prefect is not emitting events here."""
    from prefect.events import emit_event

    run = flow_run_id or "local"
    emitted = emit_event(
        TRAINED,
        resource={"prefect.resource.id": f"factory.fleet.{run}", "prefect.resource.name": run},
        payload={
            "flow_run_id": flow_run_id,
            "registered": len(registered),
            "product_ids": sorted(registered)[:MAX_PRODUCTS_PER_EVENT],
        },
    )
    return None if emitted is None else str(emitted.id)
