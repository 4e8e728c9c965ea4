"""Names of the ensemble's members: import-light, so DAG files can offer them as params."""

from __future__ import annotations

SUPERVISED = ("xgboost", "lightgbm", "hist_gb")
UNSUPERVISED = ("isolation_forest", "robust_z", "tail", "lof")
MEMBERS = SUPERVISED + UNSUPERVISED
DEFAULT_MEMBERS = ("xgboost", "lightgbm", "hist_gb", "isolation_forest", "tail")
