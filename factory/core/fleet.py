"""fleet.yaml: the typed declaration of model families and the products they cover."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from factory.core.candidates import (
    BaseModelSpec,
    EnsembleSpec,
    MeanSpec,
    ModelSpec,
    NaiveSpec,
    StrictSpec,
    ThetaSpec,
    candidate_labels,
)
from factory.core.errors import UserError


class FleetError(UserError, ValueError):
    """A user mistake in fleet.yaml, with the file, line and field path in its message."""

    hint = "fix fleet.yaml at the line shown; keys and types are in the README"


CalendarFeature = Literal["dayofweek", "dayofmonth", "dayofyear", "weekofyear", "month"]


class FeatureSpec(StrictSpec):
    """Features built from each product's own history (and named exogenous columns)."""

    lags: tuple[PositiveInt, ...] = (1, 7, 14, 28)
    rolling_means: tuple[PositiveInt, ...] = (7, 28)
    calendar: tuple[CalendarFeature, ...] = ("dayofweek", "month")
    exogenous: tuple[str, ...] = ()

    @property
    def lookback(self) -> int:
        """Periods of history one feature row needs."""
        return max((*self.lags, *self.rolling_means, 1))


class BacktestSpec(StrictSpec):
    """Rolling-origin backtest: `windows` forecasts of the horizon, `step` periods apart.

    A product too short for them gets fewer windows (down to `min_windows`), then shorter ones,
    always leaving `min_train` periods (default: one season) before the first origin; a product
    shorter still gets no backtest and the short-history `minimal` forecast."""

    windows: int = Field(3, ge=2)
    min_windows: PositiveInt = 1
    min_train: PositiveInt | None = None
    step: PositiveInt | None = None

    @model_validator(mode="after")
    def _bounds(self) -> BacktestSpec:
        if self.min_windows > self.windows:
            raise ValueError(f"min_windows ({self.min_windows}) exceeds windows ({self.windows})")
        return self


def _short_models() -> tuple[BaseModelSpec, ...]:
    return (ThetaSpec(kind="theta"), NaiveSpec(kind="naive"), MeanSpec(kind="mean"))


class ShortHistorySpec(StrictSpec):
    """Candidates added for products too short for the family's full backtest (the family's
    own candidates still run where their history allows), and the forecast of a product too
    short to backtest at all."""

    models: tuple[BaseModelSpec, ...] = Field(default_factory=_short_models)
    minimal: Literal["mean", "naive"] = "mean"


class ValidationSpec(StrictSpec):
    """Per-product data checks beyond the panel schema."""

    min_history: PositiveInt | None = None
    max_stale_periods: PositiveInt = 28
    allow_gaps: bool = False
    allow_all_zero: bool = False  # true: a history of zeros is real (no sales), not wrong data


class ProductSelector(StrictSpec):
    """Which products a family covers: explicit ids, glob patterns, or all products in the data."""

    ids: tuple[str, ...] = ()
    match: tuple[str, ...] = ()
    all: bool = False
    exclude: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _selects_something(self) -> ProductSelector:
        if not (self.ids or self.match or self.all):
            raise ValueError("give at least one of ids, match or all: true")
        return self

    def matches(self, product_id: str) -> bool:
        """True when a pattern or `all` covers the product (explicit ids are claimed first)."""
        if any(fnmatch.fnmatchcase(product_id, p) for p in self.exclude):
            return False
        return self.all or any(fnmatch.fnmatchcase(product_id, p) for p in self.match)


class FamilySpec(StrictSpec):
    """A pipeline for one category of use case and the products it covers."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    frequency: Literal["D", "W", "MS", "QS"] = "D"
    horizon: PositiveInt = 28
    season_length: PositiveInt = 7
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    models: tuple[ModelSpec, ...] = Field(min_length=1)
    backtest: BacktestSpec = Field(default_factory=BacktestSpec)
    short_history: ShortHistorySpec = Field(default_factory=ShortHistorySpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    products: ProductSelector

    @model_validator(mode="after")
    def _one_ensemble(self) -> FamilySpec:
        kinds = [m.kind for m in self.models]
        if kinds.count("ensemble") > 1:
            raise ValueError("models: at most one ensemble per family")
        if "ensemble" in kinds and len(kinds) < 3:
            raise ValueError("models: an ensemble needs at least two other candidates")
        for spec in self.models:
            if isinstance(spec, EnsembleSpec) and spec.members:
                labels = candidate_labels([m.kind for m in self.models if m.kind != "ensemble"])
                unknown = [m for m in spec.members if m not in labels]
                if unknown:
                    raise ValueError(
                        f"ensemble members {', '.join(unknown)} are not candidates of this"
                        f" family (its candidates: {', '.join(labels)})"
                    )
        return self

    @property
    def backtest_step(self) -> int:
        """Periods between backtest origins."""
        return self.backtest.step or self.horizon

    @property
    def min_train(self) -> int:
        """Periods a short product's backtest leaves before its first origin."""
        return self.backtest.min_train or self.season_length

    @property
    def min_history(self) -> int:
        """Shortest history for the family's full backtest (shorter products take the
        short-history path; only `validation.min_history` quarantines them)."""
        needed = (
            self.horizon
            + self.backtest_step * (self.backtest.windows - 1)
            + max(self.features.lookback, self.season_length)
            + 2 * self.season_length
        )
        return max(self.validation.min_history or 0, needed)


class GateSpec(StrictSpec):
    """What a challenger must beat to be registered."""

    metric: Literal["mase", "wape", "smape", "mae", "rmse"] = "mase"
    baseline_margin: float = Field(0.05, ge=0, lt=1)
    champion_margin: float = Field(0.0, ge=0, lt=1)
    # a product without a champion whose best candidate misses the margin still gets a
    # model: that candidate if it is not worse than seasonal naive, else seasonal naive itself
    fallback: bool = True
    # how much worse than seasonal naive (a fraction of its backtest score) the fallback still
    # counts as "not worse": a few windows rank close methods by chance, and falling back to
    # the naive forecast on such noise costs more than it saves (0: not worse at all)
    fallback_tolerance: float = Field(0.0, ge=0, lt=1)


class PromotionSpec(StrictSpec):
    """How staging winners reach production.

    `auto`: every gate winner is copied at training time (the demo). `approve`: the
    promote-fleet flow promotes at once within the limits below and asks an engineer beyond
    them. `manual`: every promotion waits for an approval.
    """

    mode: Literal["auto", "approve", "manual"] = "manual"
    auto_max_share: float = Field(0.05, ge=0, le=1)  # of fleet volume a batch may replace
    max_regression: float = Field(0.0, ge=0)  # worst relative metric rise vs production
    approve_new: bool = False  # first production models of new products need approval too
    volume_periods: PositiveInt = 28  # recent periods whose sales weigh a product's share
    # > 0: a product already in production starts its new version as a canary on this share
    canary_share: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _canary_needs_a_governed_path(self) -> PromotionSpec:
        if self.canary_share and self.mode == "auto":
            raise ValueError(
                "canary_share needs mode approve or manual (auto copies every winner into"
                " production at training time, with no canary)"
            )
        return self


class RetirementSpec(StrictSpec):
    """When a product's models leave production (they are kept, never deleted)."""

    removed_from_fleet: bool = True  # no family covers the product any more
    no_sales_periods: PositiveInt | None = None  # no sales for this many periods


class FleetSpec(StrictSpec):
    """The whole fleet: families, gate, promotion, retirement, sharding and failure budget."""

    version: Literal[1] = 1
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    retirement: RetirementSpec = Field(default_factory=RetirementSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    failure_budget: float = Field(0.1, ge=0, le=1)
    shard_size: PositiveInt = 100
    families: tuple[FamilySpec, ...] = Field(min_length=1)

    @field_validator("promotion", mode="before")
    @classmethod
    def _mode_alone(cls, value: Any) -> Any:
        """`promotion: auto` is short for `promotion: {mode: auto}`."""
        return {"mode": value} if isinstance(value, str) else value

    @property
    def auto_promote(self) -> bool:
        """Gate winners are copied to production at training time."""
        return self.promotion.mode == "auto"

    @model_validator(mode="after")
    def _consistent(self) -> FleetSpec:
        names = [f.name for f in self.families]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"family names must be unique; repeated: {', '.join(dupes)}")
        owner: dict[str, str] = {}
        for family in self.families:
            for pid in family.products.ids:
                if pid in owner and owner[pid] != family.name:
                    raise ValueError(
                        f"product {pid!r} is listed in families {owner[pid]!r} and {family.name!r}"
                    )
                owner[pid] = family.name
        return self

    def family(self, name: str) -> FamilySpec:
        """The family with this name."""
        for family in self.families:
            if family.name == name:
                return family
        raise KeyError(name)

    def assign(self, product_ids: Iterable[str]) -> dict[str, list[str]]:
        """Map each family to the products it covers; explicit ids win, then families in order."""
        available = sorted(set(product_ids))
        claimed = {pid: f.name for f in self.families for pid in f.products.ids}
        out: dict[str, list[str]] = {f.name: [] for f in self.families}
        for pid in available:
            name = claimed.get(pid) or next(
                (f.name for f in self.families if f.products.matches(pid)), None
            )
            if name is not None:
                out[name].append(pid)
        return out


@dataclass(frozen=True)
class Shard:
    """A slice of one family's products, trained as one unit of work."""

    key: str
    family: str
    product_ids: tuple[str, ...]


def make_shards(assignment: dict[str, list[str]], size: int) -> list[Shard]:
    """Split each family's products into shards of at most `size`."""
    shards = []
    for family, ids in assignment.items():
        for start in range(0, len(ids), size):
            chunk = tuple(ids[start : start + size])
            shards.append(Shard(f"{family}-{start // size:04d}", family, chunk))
    return shards


@dataclass(frozen=True)
class LoadedFleet:
    """A parsed fleet.yaml with the hash of its exact bytes."""

    spec: FleetSpec
    path: Path
    sha256: str


def load_fleet(path: Path | str) -> LoadedFleet:
    """Parse and validate fleet.yaml; raise FleetError naming file, line and field on mistakes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FleetError(f"{path}: cannot read fleet file ({exc.strerror})") from None
    if b"\x00" in raw:
        raise FleetError(f"{path}: not a text file (binary content); expected a fleet.yaml")
    text = raw.decode("utf-8", errors="replace")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
        raise FleetError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise FleetError(f"{path}: expected a mapping with 'families' at the top level")
    if dupes := _duplicated_keys(node):
        raise FleetError("\n".join(f"{path}:{line}: {msg}" for line, msg in dupes))
    try:
        spec = FleetSpec.model_validate(data)
    except ValidationError as exc:
        raise FleetError(_describe(exc, node, path)) from None
    return LoadedFleet(spec, path, hashlib.sha256(raw).hexdigest())


MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *base`: its keys may be overridden, not duplicated


def _duplicated_keys(
    node: yaml.Node | None, dotted: str = "", seen: set[int] | None = None
) -> list[tuple[int, str]]:
    """(line, `families[0].horizon: duplicated key (first at line 9)`) for every key given twice
    in one mapping, at any depth (YAML keeps the last silently)."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:
        return []  # an alias repeats a node already checked where its anchor was defined
    seen.add(id(node))
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
                found += _duplicated_keys(value, dotted, seen)
                continue
            here, line = f"{dotted}.{key.value}".lstrip("."), key.start_mark.line + 1
            if (key.tag, key.value) in first:
                found.append(
                    (line, f"{here}: duplicated key (first at line {first[key.tag, key.value]})")
                )
            first.setdefault((key.tag, key.value), line)
            found += _duplicated_keys(value, here, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicated_keys(item, f"{dotted}[{i}]", seen)
    return found


def _describe(exc: ValidationError, root: yaml.Node | None, path: Path) -> str:
    """One line per problem: `fleet.yaml:12: families[1].models[0].num_leaves: <message>`."""
    errors = exc.errors()
    locs = [tuple(e["loc"]) for e in errors]
    lines = []
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
            continue  # pydantic repeats an item's failure as "too short" on its container
        dotted, line = _locate(root, err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {dotted or '(top level)'}: {msg}")
    return "\n".join(lines)


def _locate(root: yaml.Node | None, loc: Sequence[Any]) -> tuple[str, int | None]:
    """Follow a pydantic error location through the YAML node tree; return path and line."""
    node, dotted = root, ""
    line = root.start_mark.line + 1 if root is not None else None
    for i, part in enumerate(loc):
        found = _child(node, part)
        if found is None:
            if isinstance(part, str) and i < len(loc) - 1:
                continue  # a discriminator tag pydantic adds to the location
            dotted += f"[{part}]" if isinstance(part, int) else f".{part}"
            break
        marker, node = found
        dotted += f"[{part}]" if isinstance(part, int) else f".{part}"
        line = marker.start_mark.line + 1
    return dotted.lstrip("."), line


def _child(node: yaml.Node | None, part: Any) -> tuple[yaml.Node, yaml.Node] | None:
    """(node that marks the line, node to descend into) for a key or index, if present."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part], node.value[part]
    return None
