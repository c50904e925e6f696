"""Benchmarks: measured numbers, never gates. `make bench` runs every `bench/bench_*.py`."""
