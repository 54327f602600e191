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
# On both registered models of a retired product: JSON {reason, at, by, version it served}.
RETIRED_TAG = "factory.retired"
# On a production version that was rolled back: JSON {reason, batch, at, by}.
ROLLED_BACK_TAG = "factory.rolled_back"
BATCH_TAG = "factory.promotion.batch"  # on a production version: the batch that promoted it
DIGEST_TAG = "factory.model_digest"  # on every version: sha256 of the model folder's files
SIGNATURE_TAG = "factory.model_signature"  # Ed25519 over product id + digest (base64)
SIGNING_KEY_TAG = "factory.signing_key_id"  # which key signed it: ed25519:<16 hex>


class NoModelError(UserError, LookupError):
    """A product has no model in the registry (never trained, quarantined or rejected)."""

    hint = "`factory status -p <product>` shows why; `factory train` registers winners"


def model_name(prefix: str, environment: str, product_id: str) -> str:
    """`<prefix>.<environment>.<product slug>`, e.g. `factory.production.grocery-00001`."""
    return f"{prefix}.{environment}.{product_slug(product_id)}"
