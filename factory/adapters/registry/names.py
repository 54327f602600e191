"""Registry naming: one registered model per product and environment, and their aliases."""

from __future__ import annotations

from factory.core.errors import UserError
from factory.core.naming import product_slug  # the pure rule lives in core; used here too

STAGING, PRODUCTION = "staging", "production"
CHAMPION_ALIAS, CANDIDATE_ALIAS = "champion", "candidate"
CURRENT_TAG = "factory.current"  # JSON {version, config, data_fingerprint} on the registered model
PRODUCT_TAG = "factory.product_id"
FAMILY_TAG, ENVIRONMENT_TAG = "factory.family", "factory.environment"  # on each model
TRAIN_KEY_TAG = "factory.train_key"  # on every version: the training key it was made from


class NoModelError(UserError, LookupError):
    """A product has no model in the registry (never trained, quarantined or rejected)."""

    hint = "`factory status -p <product>` shows why; `factory train` registers winners"


def model_name(prefix: str, environment: str, product_id: str) -> str:
    """`<prefix>.<environment>.<product slug>`, e.g. `factory.production.grocery-00001`."""
    return f"{prefix}.{environment}.{product_slug(product_id)}"
