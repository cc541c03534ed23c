"""Benchmarks and evaluations of autointerp (run as modules: `python -m eval.<name>`)."""
