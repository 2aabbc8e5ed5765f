"""segbench: benchmarking and hardware profiling for semantic-segmentation models."""

__version__ = "0.1.0"
