"""diffris: a reproducible benchmark suite for DiffRIS (arXiv 2506.18946)."""

__version__ = "0.1.0"
