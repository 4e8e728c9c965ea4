"""The one registry of table names, SQL files and Asset URIs.

Identifiers that end up in SQL come only from here (values are always bound
parameters). Import-light: DAG files import it at parse time.
"""

from __future__ import annotations

from pathlib import Path

LAKE_ALIAS = "lake"

RAW_METRICS = "raw_metrics"
HOSTS = "hosts"
METRIC_CATALOG = "metric_catalog"
LABELS = "labels"
QUARANTINE = "quarantine"
INGEST_LOG = "ingest_log"
SCHEMA_MIGRATIONS = "schema_migrations"
FEATURES = "features"  # created by the first feature build: its columns follow the catalog
FEATURE_CATALOG = "feature_catalog"
FEATURE_LOG = "feature_log"
RAW_STAGING = "raw_staging"
VALIDATION_RESULTS = "validation_results"
QUARANTINE_BATCHES = "quarantine_batches"
MODELS = "models"
SCORES = "scores"
SCORE_LOG = "score_log"
INCIDENTS = "incidents"
INCIDENT_EXPLANATIONS = "incident_explanations"
DRIFT = "drift"
PUBLISH_LOG = "publish_log"

TABLES: tuple[str, ...] = (
    RAW_METRICS,
    HOSTS,
    METRIC_CATALOG,
    LABELS,
    QUARANTINE,
    INGEST_LOG,
    FEATURE_CATALOG,
    FEATURE_LOG,
    RAW_STAGING,
    VALIDATION_RESULTS,
    QUARANTINE_BATCHES,
    MODELS,
    SCORES,
    SCORE_LOG,
    INCIDENTS,
    INCIDENT_EXPLANATIONS,
    DRIFT,
    PUBLISH_LOG,
)

# Asset URIs use an ``x-`` scheme: they name our tables, not a storage protocol Airflow knows.
ASSET_RAW_METRICS = "x-anomaly://lake/raw_metrics"
ASSET_FEATURES = "x-anomaly://lake/features"
ASSET_DRIFT = "x-anomaly://lake/drift"  # emitted by scoring when drift crosses its threshold
ASSET_MODELS = "x-anomaly://lake/models"  # emitted when a training run registers a model


def sql_dir() -> Path:
    """The ``sql/`` folder: inside an installed wheel, else beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "sql"
    return packaged if packaged.is_dir() else here.parent / "sql"
