"""Events: resource ids that collapse re-deliveries only, chunking, the external body."""

from __future__ import annotations

from factory.adapters.events import (
    LANDED,
    ProductsPayload,
    chunk_payload,
    event_body,
    products_resource,
)


def test_event_resource_changes_with_products_and_data_only() -> None:
    base = ProductsPayload(product_ids=["b", "a"], fingerprint="f1", reason="data-landed")
    same = ProductsPayload(product_ids=["a", "b"], fingerprint="f1", reason="external")
    other = ProductsPayload(product_ids=["a", "b"], fingerprint="f2")
    rid = products_resource(LANDED, base)["prefect.resource.id"]
    assert rid.startswith("factory.products.")
    assert products_resource(LANDED, same)["prefect.resource.id"] == rid
    assert products_resource(LANDED, other)["prefect.resource.id"] != rid
    assert products_resource("factory.model.drifted", base)["prefect.resource.id"] != rid


def test_large_payloads_are_split_into_chunks() -> None:
    ids = [f"p{i:05d}" for i in range(4500)]
    payload = ProductsPayload(product_ids=ids, fingerprint="f", fingerprints={p: p for p in ids})
    parts = chunk_payload(payload, size=2000)
    assert [len(p.product_ids) for p in parts] == [2000, 2000, 500]
    assert sorted(p for part in parts for p in part.product_ids) == ids
    assert all(set(p.fingerprints) == set(p.product_ids) for p in parts)


def test_external_event_body_is_what_the_prefect_api_accepts() -> None:
    from prefect.server.events.schemas.events import Event

    payload = ProductsPayload(product_ids=["grocery-00001"], fingerprint="abc")
    (body,) = event_body(LANDED, payload)
    event = Event.model_validate(body)
    assert event.event == LANDED and event.payload["product_ids"] == ["grocery-00001"]
