"""Registered-model names: one per product and environment, safe and collision-free."""

import re

import pytest

from factory.adapters.registry.names import PRODUCTION, STAGING, model_name, product_slug

SAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.mark.parametrize("pid", ["grocery-00001", "A_b-9", "x", "0" * 80])
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
