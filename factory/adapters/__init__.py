"""The outside world: files over fsspec, state, events, Ray, MLflow, Prefect artifacts."""
