"""Benchmarks of segbench itself (run on a quiet machine; never timed tests)."""
