"""The evaluation gate: does a challenger deserve to be registered?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from factory.core.fleet import GateSpec

Verdict = Literal["registered", "kept", "rejected"]


@dataclass(frozen=True)
class ChampionScore:
    """The current champion re-scored on today's windows."""

    version: str
    score: float
    same_config: bool
    same_data: bool


@dataclass(frozen=True)
class GateDecision:
    """The verdict and the evidence behind it."""

    verdict: Verdict
    reason: str
    metric: str
    challenger: float | None  # None: not scored (a history too short to backtest)
    baseline: float | None
    champion: float | None
    champion_version: str | None
    baseline_margin: float
    champion_margin: float

    def evidence(self) -> dict[str, object]:
        """The decision as a flat record (run summary, version tags)."""
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "metric": self.metric,
            "challenger": None if self.challenger is None else round(self.challenger, 6),
            "baseline": None if self.baseline is None else round(self.baseline, 6),
            "champion": None if self.champion is None else round(self.champion, 6),
            "champion_version": self.champion_version,
            "baseline_margin": self.baseline_margin,
            "champion_margin": self.champion_margin,
        }


def beats(score: float, reference: float, margin: float) -> bool:
    """Lower is better; a challenger must be strictly better than reference by the margin."""
    return score < reference * (1 - margin)


def decide(
    challenger: float, baseline: float, champion: ChampionScore | None, gate: GateSpec
) -> GateDecision:
    """Register only a challenger that beats seasonal naive and the re-scored champion.

    Ties go to the champion. The one exception is a refresh: the challenger has the champion's
    exact configuration (so scores tie by construction) but was trained on new data.
    """
    m = gate.metric
    if not beats(challenger, baseline, gate.baseline_margin):
        verdict: Verdict = "kept" if champion else "rejected"
        reason = (
            f"challenger {m} {challenger:.4g} does not beat seasonal naive {baseline:.4g} "
            f"by {gate.baseline_margin:.0%}"
        )
    elif champion is None:
        verdict, reason = "registered", f"first model: {m} {challenger:.4g} vs naive {baseline:.4g}"
    else:
        verdict, reason = _against_champion("challenger", challenger, champion, gate)
    return _made(verdict, reason, challenger, baseline, champion, gate)


def fallback(
    label: str, challenger: float, baseline: float, champion: ChampionScore | None, gate: GateSpec
) -> GateDecision:
    """No candidate beats seasonal naive by the margin, yet the product keeps a model: the
    best candidate not worse than seasonal naive (`label`), else seasonal naive itself. It is
    registered as a first model, as a refresh of the same configuration on new data, or when it
    beats the re-scored champion; otherwise the champion stays."""
    why = f"no candidate beats seasonal naive {baseline:.4g} by {gate.baseline_margin:.0%}"
    if champion is None:
        verdict: Verdict = "registered"
        reason = f"keeping {label} ({gate.metric} {challenger:.4g})"
    else:
        verdict, reason = _against_champion(label, challenger, champion, gate)
    return _made(verdict, f"fallback: {why}; {reason}", challenger, baseline, champion, gate)


def _against_champion(
    label: str, challenger: float, champion: ChampionScore, gate: GateSpec
) -> tuple[Verdict, str]:
    """A challenger against the champion re-scored on the same windows (ties keep it)."""
    m, v = gate.metric, champion.version
    if champion.same_config:
        if champion.same_data:
            return "kept", f"champion v{v} unchanged: same config and data"
        return "registered", f"refresh of champion v{v} on new data"
    if beats(challenger, champion.score, gate.champion_margin):
        return (
            "registered",
            f"{label} beats champion v{v}: {m} {challenger:.4g} vs {champion.score:.4g}",
        )
    return "kept", f"champion v{v} holds: {m} {champion.score:.4g} vs {label} {challenger:.4g}"


def _made(
    verdict: Verdict,
    reason: str,
    challenger: float | None,
    baseline: float | None,
    champion: ChampionScore | None,
    gate: GateSpec,
) -> GateDecision:
    return GateDecision(
        verdict,
        reason,
        gate.metric,
        challenger,
        baseline,
        None if champion is None else champion.score,
        None if champion is None else champion.version,
        gate.baseline_margin,
        gate.champion_margin,
    )


def minimal_decision(kind: str, n: int, has_champion: bool, gate: GateSpec) -> GateDecision:
    """A history too short to backtest: its `kind` forecast goes unscored, as a first model
    only (a champion stays) and only when the gate falls back."""
    if has_champion:
        verdict: Verdict = "kept"
        reason = f"{n} periods are too few to backtest a challenger; the champion stays"
    elif gate.fallback:
        verdict, reason = "registered", f"minimal history: {n} periods, forecast = {kind}"
    else:
        verdict, reason = "rejected", f"{n} periods are too few to backtest (fallback is off)"
    return _made(verdict, reason, None, None, None, gate)
