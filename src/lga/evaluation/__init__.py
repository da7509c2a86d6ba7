"""Evaluation: group metrics, zero-shot scoring and ``lga eval``, the feature probe."""
