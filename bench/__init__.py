"""Benchmarks: ``python -m bench.bench_features`` compares the SQL feature store with pandas and polars."""
