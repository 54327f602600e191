"""The production manifest: a stable, reviewable file that reads back exactly, one-line errors
naming file, line and field, and the changes and digest checks that applying it needs."""

from __future__ import annotations

import textwrap

import pytest

from factory.core.errors import UserError
from factory.core.manifest import (
    Manifest,
    ManifestChange,
    ManifestEntry,
    ManifestError,
    diff_manifest,
    digest_mismatches,
    dump_manifest,
    load_manifest,
)

DIGEST = "0123456789abcdef" * 4
HOSTILE_IDS = [
    "sku-1",
    "123",
    "00123",
    "0x1F",
    "1_000",
    "1e3",
    "1.5",
    ".inf",
    "NaN",
    "true",
    "no",
    "off",
    "y",
    "null",
    "~",
    "",
    "2024-01-01",
    "12:30",
    "a:b",
    "a: b",
    "#x",
    "a #b",
    "it's",
    'say "hi"',
    "a\\b",
    "a,b",
    "[x]",
    "{x}",
    "- x",
    "? q",
    "!tag",
    "&anchor",
    "*alias",
    "<<",
    "|",
    ">",
    "%p",
    "@x",
    "`x",
    " lead",
    "trail ",
    "tab\tx",
    "line\nbreak",
    "\u2028",
    "\ufeff",
    "café",
    "日本-01",
    "😀",
    "x" * 300,
    "y" * 1500,
]


def manifest(**versions: int) -> Manifest:
    return Manifest(production={p: ManifestEntry(version=v) for p, v in versions.items()})


def load_error(text: str, source: str = "prod.yaml") -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(textwrap.dedent(text), source)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, UserError)
    return message


def test_hostile_product_ids_and_digests_read_back_exactly() -> None:
    production = {
        pid: ManifestEntry(version=i + 1, digest=pid if i % 2 else DIGEST)
        for i, pid in enumerate(HOSTILE_IDS)
    }
    original = Manifest(production=production)
    text = dump_manifest(original)
    assert load_manifest(text, "prod.yaml") == original
    body = text.split("production:\n", 1)[1].splitlines()
    assert len(body) == len(HOSTILE_IDS) + 1  # one line each; only the 1500-char id takes two


def test_the_file_is_sorted_one_line_per_product_under_a_header() -> None:
    m = Manifest(
        production={
            "b-2": ManifestEntry(version=3, digest=DIGEST),
            "10": ManifestEntry(version=1),
            "a-1": ManifestEntry(version=12),
        }
    )
    text = dump_manifest(m)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header and text.startswith(header[0]) and "production" in header[0].lower()
    assert text.split("\n", len(header))[-1] == (
        "version: 1\n"
        "production:\n"
        '  "10": {version: 1}\n'
        "  a-1: {version: 12}\n"
        f"  b-2: {{version: 3, digest: {DIGEST}}}\n"
    )
    assert dump_manifest(Manifest()).endswith("version: 1\nproduction: {}\n")
    assert load_manifest(dump_manifest(Manifest()), "empty.yaml") == Manifest()


def test_changing_one_product_changes_one_line() -> None:
    before = dump_manifest(manifest(**{f"sku-{i}": 1 for i in range(50)})).splitlines()
    after = dump_manifest(manifest(**{f"sku-{i}": 2 if i == 17 else 1 for i in range(50)}))
    changed = [(a, b) for a, b in zip(before, after.splitlines(), strict=True) if a != b]
    assert changed == [("  sku-17: {version: 1}", "  sku-17: {version: 2}")]


def test_a_hand_written_manifest_loads() -> None:
    text = """\
        version: 1
        production:
          sku-1: {version: 3, digest: abc}
          "00042":
            version: 1
    """
    assert load_manifest(textwrap.dedent(text), "prod.yaml") == Manifest(
        production={
            "sku-1": ManifestEntry(version=3, digest="abc"),
            "00042": ManifestEntry(version=1),
        }
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "production:\n  sku-1: {version: 0}\n",
            "prod.yaml: production.sku-1.version: Input should be greater than or equal to 1",
        ),
        (
            "production:\n  sku-1: {version: '2'}\n",
            "prod.yaml: production.sku-1.version: Input should be a valid integer",
        ),
        (
            "production:\n  sku-1: {version: 2, digets: abc}\n",
            "prod.yaml: production.sku-1.digets: Extra inputs are not permitted",
        ),
        ("version: 2\nproduction: {}\n", "prod.yaml: version: Input should be 1"),
        (
            "production:\n  a: {}\n  b: {version: 0}\n",
            "prod.yaml: production.a.version: Field required (and 1 more)",
        ),
        (
            "production:\n  sku-1: {version: 1}\n  sku-2: {version: 2}\n  sku-1: {version: 3}\n",
            "prod.yaml:4: production.sku-1: duplicated key (first at line 2)",
        ),
        (
            "production:\n  00123: {version: 1}\n",
            "prod.yaml:2: production.00123: a product id is text; quote it ('00123')",
        ),
        (
            "production:\n  sku-1: {version: 1\n  sku-2: {version: 2}\n",
            "prod.yaml:3: not valid YAML",
        ),
        ("production:\n\tsku-1: 1\n", "prod.yaml:2: not valid YAML"),
        ("", "prod.yaml: empty manifest"),
        ("# only a comment\n", "prod.yaml: empty manifest"),
        ("- sku-1\n- sku-2\n", "prod.yaml: expected a mapping with `production:`, not a list"),
        ("just text\n", "prod.yaml: expected a mapping with `production:`, not a str"),
    ],
)
def test_mistakes_are_one_line_naming_file_line_and_field(text: str, expected: str) -> None:
    assert load_error(text).startswith(expected)


def test_the_error_names_the_file_it_was_given() -> None:
    assert load_error("[", "deploy/production.yaml").startswith("deploy/production.yaml:")


@pytest.mark.parametrize(
    ("current", "desired", "prune", "expected"),
    [
        ({"a": 2}, {"a": 2}, True, []),
        ({"a": 2}, {"a": 5}, False, [ManifestChange("a", 2, 5, "promote")]),
        ({"a": 5}, {"a": 2}, False, [ManifestChange("a", 5, 2, "rollback")]),
        ({}, {"a": 1}, False, [ManifestChange("a", None, 1, "restore")]),
        ({"a": 1}, {}, False, []),
        ({"a": 1}, {}, True, [ManifestChange("a", 1, None, "retire")]),
        (
            {"c": 1, "a": 3, "d": 4, "e": 1},
            {"e": 1, "b": 2, "a": 4, "c": 1},
            True,
            [
                ManifestChange("a", 3, 4, "promote"),
                ManifestChange("b", None, 2, "restore"),
                ManifestChange("d", 4, None, "retire"),
            ],
        ),
    ],
)
def test_diff_lists_what_applying_the_desired_manifest_changes(
    current: dict[str, int], desired: dict[str, int], prune: bool, expected: list[ManifestChange]
) -> None:
    assert diff_manifest(manifest(**current), manifest(**desired), prune) == expected


def test_a_change_carries_the_desired_digest_and_a_digest_alone_is_no_change() -> None:
    current = Manifest(production={"a": ManifestEntry(version=1, digest="old")})
    moved = Manifest(production={"a": ManifestEntry(version=2, digest="new")})
    assert diff_manifest(current, moved) == [ManifestChange("a", 1, 2, "promote", "new")]
    same = Manifest(production={"a": ManifestEntry(version=1, digest="other")})
    assert diff_manifest(current, same) == []


def test_digest_mismatches_name_missing_versions_and_changed_models() -> None:
    desired = Manifest(
        production={
            "ok": ManifestEntry(version=1, digest="d1"),
            "unchecked": ManifestEntry(version=2),
            "unknown-digest": ManifestEntry(version=1, digest="d1"),
            "changed": ManifestEntry(version=3, digest="mine"),
            "no-version": ManifestEntry(version=9),
            "no-product": ManifestEntry(version=1),
        }
    )
    known: dict[str, dict[int, str | None]] = {
        "ok": {1: "d1", 2: "d2"},
        "unchecked": {2: "d2"},
        "unknown-digest": {1: None},
        "changed": {3: "theirs"},
        "no-version": {1: "x", 4: "y"},
    }
    assert digest_mismatches(desired, known) == [
        "changed: v3 digest differs: manifest mine, registry theirs",
        "no-product: v1 is not in the registry (it has no versions)",
        "no-version: v9 is not in the registry (its newest is v4)",
    ]
