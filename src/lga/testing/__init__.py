"""Builders of tiny random checkpoints for tests, benchmarks and the demo (no weights needed)."""
