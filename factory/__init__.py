"""The model factory library: importable and testable without a Prefect server."""
