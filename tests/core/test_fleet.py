"""fleet.yaml parsing, error messages, product assignment and sharding."""

import hashlib
import re
import textwrap

import pytest

from factory.core.fleet import FamilySpec, FleetError, FleetSpec, Shard, load_fleet, make_shards
from tests.support.fleets import REPO

REPO_FLEET = REPO / "fleet.yaml"


def write(tmp_path, text, name="fleet.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path):
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    return str(info.value)


def family(name="f", **overrides):
    data = {
        "name": name,
        "horizon": 7,
        "season_length": 7,
        "features": {"lags": [1, 7, 14], "rolling_means": [7]},
        "models": [{"kind": "ridge"}],
        "backtest": {"windows": 2},
        "products": {"all": True},
    }
    data.update(overrides)
    return data


def fleet(*families):
    return FleetSpec.model_validate({"families": list(families)})


def test_repo_fleet_loads():
    loaded = load_fleet(REPO_FLEET)

    assert [f.name for f in loaded.spec.families] == ["fast-movers", "long-tail"]
    assert loaded.spec.gate.metric == "mase"
    assert loaded.spec.promotion.mode == "approve" and not loaded.spec.auto_promote
    assert loaded.spec.retirement.no_sales_periods == 90
    assert loaded.spec.family("fast-movers").features.exogenous == ("price", "promo")
    kinds = [m.kind for m in loaded.spec.family("long-tail").models]
    assert kinds == ["ridge", "lightgbm", "croston", "tsb", "ensemble"]
    assert loaded.path == REPO_FLEET
    assert loaded.sha256 == hashlib.sha256(REPO_FLEET.read_bytes()).hexdigest()


def test_defaults_come_from_the_spec(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - name: a
            models: [{kind: lightgbm}]
            products: {all: true}
        """,
    )
    spec = load_fleet(path).spec

    assert spec.gate.baseline_margin == 0.05
    assert spec.shard_size == 100
    (lgb,) = spec.families[0].models
    assert (lgb.num_leaves, lgb.n_estimators, lgb.objective) == (31, 100, "regression")


ERROR_CASES = [
    pytest.param(
        """\
        families:
          - name: a
            horizon: 7
            models:
              - kind: ridge
              - kind: lightgbm
                num_leafs: 7
            products:
              all: true
        """,
        7,
        "families[0].models[1].num_leafs",
        "Extra inputs are not permitted",
        id="typo-in-model",
    ),
    pytest.param(
        """\
        families:
          - name: a
            horizon: abc
            models: [{kind: ridge}]
            products: {all: true}
        """,
        3,
        "families[0].horizon",
        "valid integer",
        id="wrong-type",
    ),
    pytest.param(
        """\
        families:
          - name: a
            models: [{kind: ridge}]
            products: {all: true}
          - name: b
            features:
              lags: [1, 7]
              lagz: [14]
            models: [{kind: ridge}]
            products: {all: true}
        """,
        8,
        "families[1].features.lagz",
        "Extra inputs are not permitted",
        id="typo-in-second-family",
    ),
    pytest.param(
        """\
        families:
          - name: a
            features:
              lags: [1, -7]
            models: [{kind: ridge}]
            products: {all: true}
        """,
        4,
        "families[0].features.lags[1]",
        "greater than 0",
        id="bad-list-item",
    ),
    pytest.param(
        """\
        gate:
          metric: mape
        families:
          - name: a
            models: [{kind: ridge}]
            products: {all: true}
        """,
        2,
        "gate.metric",
        "'mase'",
        id="unknown-metric",
    ),
    pytest.param(
        """\
        families:
          - name: a
            models: [{kind: ridge}]
            products: {}
        """,
        4,
        "families[0].products",
        "give at least one of ids, match or all: true",
        id="empty-selector",
    ),
]


@pytest.mark.parametrize(("text", "line", "dotted", "message"), ERROR_CASES)
def test_config_error_names_file_line_and_path(tmp_path, text, line, dotted, message):
    path = write(tmp_path, text)

    error = load_error(path)

    assert error.startswith(f"{path}:{line}: {dotted}: ")
    assert message in error


def test_unknown_model_kind_names_field_and_expected_tags(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - name: a
            models:
              - kind: ridge
              - kind: prophet
            products: {all: true}
        """,
    )

    error = load_error(path)

    assert error.startswith(f"{path}:5: families[0].models[1]")
    assert "prophet" in error
    for tag in ("ridge", "elastic_net", "random_forest", "lightgbm"):
        assert f"'{tag}'" in error


def test_several_mistakes_give_one_line_each(tmp_path):
    path = write(
        tmp_path,
        """\
        shard_size: 0
        families:
          - name: a
            horizon: -1
            models: [{kind: ridge}]
            products: {all: true}
        """,
    )

    lines = load_error(path).splitlines()

    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:1: shard_size: ")
    assert lines[1].startswith(f"{path}:4: families[0].horizon: ")


def test_invalid_yaml_gives_the_line(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - name: a
           horizon: 7
        """,
    )

    error = load_error(path)

    assert error.startswith(f"{path}:3: not valid YAML")


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "plain text\n"])
def test_non_mapping_document_is_an_error(tmp_path, text):
    path = write(tmp_path, text)

    assert "expected a mapping with 'families'" in load_error(path)


def test_missing_file_is_a_clean_fleet_error(tmp_path):
    path = tmp_path / "nope.yaml"

    with pytest.raises(FleetError) as info:
        load_fleet(path)

    assert str(info.value) == f"{path}: cannot read fleet file (No such file or directory)"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_product_listed_in_two_families_is_an_error(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - name: a
            models: [{kind: ridge}]
            products: {ids: [p1, p2]}
          - name: b
            models: [{kind: ridge}]
            products: {ids: [p3, p2]}
        """,
    )

    error = load_error(path)

    assert "product 'p2' is listed in families 'a' and 'b'" in error
    assert str(path) in error


def test_same_id_twice_in_one_family_is_fine():
    spec = fleet(family("a", products={"ids": ["p1", "p1"]}))

    assert spec.assign(["p1"]) == {"a": ["p1"]}


def test_duplicate_family_names_are_an_error(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - name: a
            models: [{kind: ridge}]
            products: {all: true}
          - name: b
            models: [{kind: ridge}]
            products: {all: true}
          - name: a
            models: [{kind: ridge}]
            products: {match: ["x-*"]}
        """,
    )

    error = load_error(path)

    assert "family names must be unique; repeated: a" in error
    assert error.startswith(f"{path}:1: ")


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - name: a
            horizon: 7
            models: [{kind: ridge}]
            horizon: 14
            products: {all: true}
        """,
    )

    error = load_error(path)

    assert error == f"{path}:5: families[0].horizon: duplicated key (first at line 3)"


def test_duplicated_keys_at_every_depth_give_one_line_each(tmp_path):
    path = write(
        tmp_path,
        """\
        shard_size: 10
        families:
          - name: a
            models:
              - {kind: lightgbm, num_leaves: 8, num_leaves: 16}
            products: {all: true}
        shard_size: 20
        """,
    )

    assert load_error(path).splitlines() == [
        f"{path}:5: families[0].models[0].num_leaves: duplicated key (first at line 5)",
        f"{path}:7: shard_size: duplicated key (first at line 1)",
    ]


def test_merge_keys_and_aliases_are_not_duplicates(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - &base
            name: a
            horizon: 7
            models: [{kind: ridge}]
            products: {ids: [p1]}
          - <<: *base
            name: b
            horizon: 14
            products: {ids: [p2]}
          - <<: *base
            name: c
            products: {ids: [p3]}
        """,
    )

    spec = load_fleet(path).spec

    assert [(f.name, f.horizon) for f in spec.families] == [("a", 7), ("b", 14), ("c", 7)]


def test_a_duplicate_inside_an_anchor_is_reported_once_where_it_is_written(tmp_path):
    path = write(
        tmp_path,
        """\
        families:
          - &base
            name: a
            models: [{kind: ridge}]
            models: [{kind: lightgbm}]
            products: {ids: [p1]}
          - <<: *base
            name: b
            products: {ids: [p2]}
        """,
    )

    assert load_error(path) == f"{path}:5: families[0].models: duplicated key (first at line 4)"


IDS = ["grocery-1", "grocery-2", "grocery-90", "toys-1", "toys-2"]


def test_assign_explicit_ids_win_over_patterns_in_an_earlier_family():
    spec = fleet(
        family("patterns", products={"match": ["grocery-*"]}),
        family("explicit", products={"ids": ["grocery-1", "not-in-data"]}),
    )

    assert spec.assign(IDS) == {"patterns": ["grocery-2", "grocery-90"], "explicit": ["grocery-1"]}


def test_assign_match_all_and_exclude():
    spec = fleet(
        family("grocery", products={"match": ["grocery-*"], "exclude": ["grocery-9*"]}),
        family("rest", products={"all": True, "exclude": ["toys-2"]}),
    )

    # grocery-90 is excluded from the first family and falls through to `all`;
    # toys-2 is excluded everywhere and so belongs to no family
    assert spec.assign(IDS) == {
        "grocery": ["grocery-1", "grocery-2"],
        "rest": ["grocery-90", "toys-1"],
    }


def test_assign_family_order_decides():
    catch_all_first = fleet(
        family("rest", products={"all": True}),
        family("grocery", products={"match": ["grocery-*"]}),
    )
    grocery_first = fleet(
        family("grocery", products={"match": ["grocery-*"]}),
        family("rest", products={"all": True}),
    )

    assert catch_all_first.assign(IDS) == {"rest": IDS, "grocery": []}
    assert grocery_first.assign(IDS) == {
        "grocery": ["grocery-1", "grocery-2", "grocery-90"],
        "rest": ["toys-1", "toys-2"],
    }


def test_assign_sorts_dedupes_and_skips_uncovered_ids():
    spec = fleet(family("toys", products={"match": ["toys-?"]}))

    assert spec.assign(["toys-2", "grocery-1", "toys-1", "toys-2", "toys-10"]) == {
        "toys": ["toys-1", "toys-2"]
    }


def test_make_shards_splits_at_most_size_with_stable_keys():
    assignment = {"a": ["p0", "p1", "p2", "p3", "p4"], "b": ["q0"], "c": []}

    shards = make_shards(assignment, 2)

    assert shards == [
        Shard("a-0000", "a", ("p0", "p1")),
        Shard("a-0001", "a", ("p2", "p3")),
        Shard("a-0002", "a", ("p4",)),
        Shard("b-0000", "b", ("q0",)),
    ]
    assert make_shards(assignment, 2) == shards


@pytest.mark.parametrize("size", [1, 3, 7, 50])
def test_make_shards_covers_every_product_once(size):
    assignment = {"a": [f"p{i}" for i in range(17)], "b": [f"q{i}" for i in range(4)]}

    shards = make_shards(assignment, size)

    assert all(0 < len(s.product_ids) <= size for s in shards)
    for name, ids in assignment.items():
        mine = [s for s in shards if s.family == name]
        assert [p for s in mine for p in s.product_ids] == ids
        assert all(re.fullmatch(rf"{name}-\d{{4}}", s.key) for s in mine)
    assert len({s.key for s in shards}) == len(shards)


def min_history(**overrides):
    return FamilySpec.model_validate(family(**overrides)).min_history


def test_min_history_by_hand():
    # horizon 7 + step 7 * (2 windows - 1) + max(lookback 14, season 7) + 2 * season 7
    assert min_history() == 7 + 7 + 14 + 14


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # horizon 14 (step follows the horizon): 14 + 14 * 1 + 14 + 14
        ({"horizon": 14}, 56),
        # 3 windows: 7 + 7 * 2 + 14 + 14
        ({"backtest": {"windows": 3}}, 49),
        # explicit step 3: 7 + 3 * 1 + 14 + 14
        ({"backtest": {"windows": 2, "step": 3}}, 38),
        # a longer lag: 7 + 7 + 28 + 14
        ({"features": {"lags": [1, 28], "rolling_means": [7]}}, 56),
        # a declared minimum larger than the computed one wins
        ({"validation": {"min_history": 100}}, 100),
        # ... a smaller one does not
        ({"validation": {"min_history": 10}}, 42),
    ],
)
def test_min_history_follows_the_backtest_and_features(overrides, expected):
    assert min_history(**overrides) == expected


def test_min_history_grows_with_horizon_and_windows():
    by_horizon = [min_history(horizon=h) for h in (1, 7, 14, 28)]
    by_windows = [min_history(backtest={"windows": w}) for w in (2, 3, 5)]

    # each extra horizon period adds 2 (test span + backtest step); each window adds a step of 7
    assert by_horizon == [30, 42, 56, 84]  # 2h + 14 + 14
    assert by_windows == [42, 49, 63]  # 7 + 7(w - 1) + 14 + 14
