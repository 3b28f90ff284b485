"""Benchmark scripts (run from the project root: `python -m benchmarks.<name>`, or `make bench`)."""
