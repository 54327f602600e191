"""Batch and online forecasting."""

from factory.adapters.fanout import use_serve_env

use_serve_env()  # before anything here imports Ray Serve, which reads it once
