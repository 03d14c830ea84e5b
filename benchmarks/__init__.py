"""Measurements outside the test suite, from the repository root: `python -m benchmarks.<name> --help`."""
