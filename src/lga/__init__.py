"""lga: language-guided abstractions against spurious correlations in CLIP."""

__version__ = "0.1.0"
