"""Benchmarks run as modules (`python -m segbench.bench.<name>`) on a quiet machine; never timed tests."""
