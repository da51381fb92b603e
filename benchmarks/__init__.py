"""Benchmarks: ``python -m benchmarks`` (the same as ``streamseg bench``)."""
