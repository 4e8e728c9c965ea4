"""Batch anomaly detection for infrastructure metrics."""
