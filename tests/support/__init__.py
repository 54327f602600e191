"""Helpers only tests and benchmarks use: databases, process trees, Ray clusters, fleets."""
