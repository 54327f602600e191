"""A trained outcome as the registered model it becomes."""

from __future__ import annotations

import json

from factory.adapters.registry.pyfunc import manifest_of
from factory.core.saved import ProductModel
from factory.core.training import ProductOutcome


def model_of(outcome: ProductOutcome) -> ProductModel:
    """The registered model as it is loaded again from its manifest and bytes."""
    assert outcome.payload is not None
    return ProductModel(json.loads(json.dumps(manifest_of(outcome))), outcome.payload)
