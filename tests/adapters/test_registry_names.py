"""Registered-model names: one per product and environment, safe and collision-free."""

import hashlib
import re

import pytest

from factory.adapters.registry import names
from factory.adapters.registry.names import PRODUCTION, STAGING, model_name, product_slug
from factory.core import naming
from factory.core.naming import slug_collisions

SAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.mark.parametrize(
    "pid", ["grocery-00001", "A_b-9", "x", "0" * 80, "sku-1234567", "sku-abcdefgh", "a-0123456789"]
)
def test_slug_is_identity_for_safe_ids(pid):
    assert product_slug(pid) == pid


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("a/b", "a?b"),  # both would become a_b
        ("a/b", "a_b"),  # ... and must not take the name of the safe id a_b
        ("café", "cafà"),
        ("a b", "a.b"),
        ("p" * 80 + "1", "p" * 80 + "2"),  # safe but long: equal after truncation to 80
        ("a", " a"),  # whitespace around an id makes another product
    ],
)
def test_slugs_of_different_ids_differ_and_are_safe(a, b):
    sa, sb = product_slug(a), product_slug(b)

    assert sa != sb
    assert SAFE.fullmatch(sa)
    assert SAFE.fullmatch(sb)


def test_unsafe_id_gets_a_readable_slug_with_a_stable_hash_suffix():
    slug = product_slug("a/b")

    assert re.fullmatch(r"a_b-[0-9a-f]{8}", slug)
    assert product_slug("a/b") == slug


def test_model_name_keeps_staging_and_production_apart():
    staging = model_name("factory", STAGING, "grocery-00001")
    production = model_name("factory", PRODUCTION, "grocery-00001")

    assert staging == "factory.staging.grocery-00001"
    assert production == "factory.production.grocery-00001"
    assert staging != production


def test_model_name_uses_the_slug():
    assert model_name("factory", STAGING, "a/b") == f"factory.staging.{product_slug('a/b')}"
    assert model_name("factory", STAGING, "a/b") != model_name("factory", STAGING, "a?b")


def sha8(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def test_names_of_safe_ids_never_change_even_when_shaped_like_a_hashed_name():
    # registered models must keep matching their products: a safe id is its own name
    for pid in (f"a_b-{sha8('a/b')}", "sku-00000000", "store-20240101"):
        assert product_slug(pid) == pid


def test_an_id_written_as_another_ids_hashed_name_is_a_collision():
    lookalike = f"a_b-{sha8('a/b')}"

    assert slug_collisions(["a/b", lookalike, "c"]) == {"a/b": [lookalike], lookalike: ["a/b"]}


def test_no_product_id_can_take_the_name_of_a_blank_one():
    for blank in ("", " ", "\t"):
        with pytest.raises(ValueError, match="blank product id"):
            product_slug(blank)


def test_the_adapter_uses_the_core_slug_rule():
    assert names.product_slug is naming.product_slug


def test_ids_differing_only_by_case_collide():
    found = slug_collisions(["SKU-1", "sku-1", "Sku-1", "sku-2", "a/b", "A/b"])

    assert found == {
        "SKU-1": ["Sku-1", "sku-1"],
        "sku-1": ["SKU-1", "Sku-1"],
        "Sku-1": ["SKU-1", "sku-1"],
    }


def test_identical_names_are_found_whatever_makes_them(monkeypatch):
    monkeypatch.setattr(naming, "product_slug", lambda pid: pid.rstrip("!"))

    assert slug_collisions(["x", "x!", "y", "x"]) == {"x": ["x!"], "x!": ["x"]}


def test_ordinary_and_blank_ids_do_not_collide():
    assert slug_collisions(["grocery-00001", "grocery-00002", "a/b", "a?b", "", " "]) == {}
