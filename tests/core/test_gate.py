"""The evaluation gate, table-driven (lower scores are better)."""

import pytest

from factory.core.fleet import GateSpec
from factory.core.gate import ChampionScore, decide, fallback, minimal_decision

DEFAULT = GateSpec()  # mase, baseline_margin 0.05, champion_margin 0.0


def champ(score, same_config=False, same_data=False, version="3"):
    return ChampionScore(version, score, same_config=same_config, same_data=same_data)


CASES = [
    # id, challenger, baseline, champion, gate, verdict, reason fragment
    # 0.80 < 1.0 * (1 - 0.05) = 0.95
    ("first-model-beats-baseline", 0.80, 1.0, None, DEFAULT, "registered", "first model"),
    # 0.96 is better than 1.0 but not by 5%: 0.96 >= 0.95
    ("first-model-fails-margin", 0.96, 1.0, None, DEFAULT, "rejected", "does not beat"),
    # exactly on the margin is not enough: 1.5 == 2.0 * (1 - 0.25)
    (
        "first-model-on-margin",
        1.5,
        2.0,
        None,
        GateSpec(baseline_margin=0.25),
        "rejected",
        "does not beat",
    ),
    # 1.2 is worse than the baseline outright
    ("first-model-worse", 1.2, 1.0, None, DEFAULT, "rejected", "does not beat"),
    # a champion exists, the challenger fails the baseline: keep the champion
    ("champion-challenger-fails-baseline", 0.96, 1.0, champ(0.5), DEFAULT, "kept", "not beat"),
    # ... even when the champion itself re-scores worse than the challenger
    ("champion-worse-but-baseline-fails", 0.96, 1.0, champ(2.0), DEFAULT, "kept", "not beat"),
    # same configuration and same data: nothing to do
    (
        "same-config-same-data",
        0.8,
        1.0,
        champ(0.8, same_config=True, same_data=True),
        DEFAULT,
        "kept",
        "unchanged",
    ),
    # same configuration on new data: a refresh, registered although the scores tie
    (
        "same-config-new-data",
        0.8,
        1.0,
        champ(0.8, same_config=True, same_data=False),
        DEFAULT,
        "registered",
        "refresh",
    ),
    # a refresh still has to beat the baseline
    (
        "refresh-fails-baseline",
        0.99,
        1.0,
        champ(0.99, same_config=True, same_data=False),
        DEFAULT,
        "kept",
        "not beat",
    ),
    # strictly better than the champion (0.7 < 0.8 * (1 - 0))
    ("beats-champion", 0.7, 1.0, champ(0.8), DEFAULT, "registered", "beats champion"),
    # an exact tie with a different config goes to the champion
    ("tie-goes-to-champion", 0.8, 1.0, champ(0.8), DEFAULT, "kept", "holds"),
    ("champion-better", 0.85, 1.0, champ(0.8), DEFAULT, "kept", "holds"),
    # champion_margin 0.1: must be below 0.8 * 0.9 = 0.72; 0.75 is not, 0.70 is
    (
        "champion-margin-not-met",
        0.75,
        1.0,
        champ(0.8),
        GateSpec(champion_margin=0.1),
        "kept",
        "holds",
    ),
    (
        "champion-margin-met",
        0.70,
        1.0,
        champ(0.8),
        GateSpec(champion_margin=0.1),
        "registered",
        "beats champion",
    ),
    # without the margin 0.75 would have won (0.75 < 0.8)
    ("champion-no-margin", 0.75, 1.0, champ(0.8), DEFAULT, "registered", "beats champion"),
]


@pytest.mark.parametrize(
    ("challenger", "baseline", "champion", "gate", "verdict", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_decide(challenger, baseline, champion, gate, verdict, fragment):
    decision = decide(challenger, baseline, champion, gate)

    assert decision.verdict == verdict
    assert fragment in decision.reason
    evidence = decision.evidence()
    assert evidence["verdict"] == verdict
    assert evidence["reason"] == decision.reason
    assert evidence["metric"] == gate.metric
    assert evidence["challenger"] == challenger
    assert evidence["baseline"] == baseline
    assert evidence["baseline_margin"] == gate.baseline_margin
    assert evidence["champion_margin"] == gate.champion_margin
    if champion is None:
        assert evidence["champion"] is None
        assert evidence["champion_version"] is None
    else:
        assert evidence["champion"] == champion.score
        assert evidence["champion_version"] == champion.version


def test_reason_quotes_the_numbers_and_version():
    decision = decide(0.7, 1.0, champ(0.8, version="12"), DEFAULT)

    assert decision.reason == "challenger beats champion v12: mase 0.7 vs 0.8"


def test_evidence_rounds_to_six_places_and_names_the_metric():
    gate = GateSpec(metric="wape", baseline_margin=0.0)
    decision = decide(1 / 3, 2 / 3, champ(0.5, version="7"), gate)

    evidence = decision.evidence()
    assert decision.verdict == "registered"  # 1/3 < 0.5
    assert evidence["metric"] == "wape"
    assert evidence["challenger"] == 0.333333
    assert evidence["baseline"] == 0.666667
    assert evidence["champion"] == 0.5
    assert evidence["champion_version"] == "7"


FALLBACK_CASES = [
    # id, fallback candidate's score, champion, verdict, reason fragment (baseline 1.0, 5%)
    ("first-model", 0.97, None, "registered", "keeping theta"),
    ("same-config-new-data", 0.97, champ(0.97, same_config=True), "registered", "refresh of"),
    ("same-config-same-data", 0.97, champ(0.97, True, True), "kept", "unchanged"),
    ("beats-the-champion", 0.97, champ(0.99), "registered", "beats champion v3"),
    ("champion-holds", 0.97, champ(0.90), "kept", "champion v3 holds"),
    ("tie-keeps-the-champion", 0.97, champ(0.97), "kept", "champion v3 holds"),
]


@pytest.mark.parametrize(
    ("challenger", "champion", "verdict", "fragment"),
    [c[1:] for c in FALLBACK_CASES],
    ids=[c[0] for c in FALLBACK_CASES],
)
def test_fallback_keeps_a_model_without_passing_the_margin(challenger, champion, verdict, fragment):
    decision = fallback("theta", challenger, 1.0, champion, DEFAULT)
    assert decision.verdict == verdict
    assert decision.reason.startswith("fallback: no candidate beats seasonal naive 1 by 5%")
    assert fragment in decision.reason


@pytest.mark.parametrize(
    ("has_champion", "gate", "verdict"),
    [
        (False, DEFAULT, "registered"),
        (True, DEFAULT, "kept"),
        (False, GateSpec(fallback=False), "rejected"),
    ],
)
def test_minimal_history_is_registered_only_as_a_first_model(has_champion, gate, verdict):
    decision = minimal_decision("mean", 3, has_champion, gate)
    assert decision.verdict == verdict
    assert decision.challenger is None and decision.evidence()["challenger"] is None
