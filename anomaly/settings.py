"""One typed settings object, read from ``ANOMALY_*`` environment variables.

Every field below maps to an environment variable named ``ANOMALY_<FIELD>``
(for example ``ANOMALY_HOME=/data/anomaly``). Secrets never live here: the
Prometheus credentials, the Postgres source and the Postgres catalog come
from Airflow connections named by the ``*_conn_id`` fields.

Example::

    >>> from anomaly.settings import Settings
    >>> Settings(home="/tmp/anomaly").lake_dir
    PosixPath('/tmp/anomaly/lake')
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SourceName = Literal["simulation", "prometheus", "postgres", "files"]


class Settings(BaseSettings):
    """Runtime configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="ANOMALY_", extra="ignore", frozen=True)

    # --- store -------------------------------------------------------------
    home: Path = Field(Path("./var"), description="Root of all local state: lake, staging, reports.")
    catalog: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="DuckLake catalog backend: an SQLite file under home, or Postgres."
    )
    catalog_conn_id: str = Field(
        "anomaly_catalog", description="Airflow connection of the Postgres catalog (catalog=postgres)."
    )
    data_path: str | None = Field(
        None, description="Where DuckLake writes Parquet files; default <home>/lake/data/."
    )
    commit_retries: int = Field(8, ge=1, description="Attempts for a lake write on a commit conflict.")

    # --- ingest ------------------------------------------------------------
    source: SourceName = Field("simulation", description="Default source of the ingest DAG.")
    ingest_schedule: str = Field("0 * * * *", description="Cron of the ingest DAG's data intervals (UTC).")
    ingest_catchup: bool = Field(False, description="Whether the scheduler fills missed intervals.")
    task_retries: int = Field(2, ge=0, description="Retries of each DAG task before it fails.")
    retry_delay_seconds: float = Field(30.0, ge=0, description="First retry delay of DAG tasks (doubles).")
    step_seconds: int = Field(60, gt=0, description="Sample spacing requested from sources, seconds.")
    max_reject_share: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Share of rejected rows above which a batch fails instead of loading the rest.",
    )

    # --- prometheus --------------------------------------------------------
    prometheus_conn_id: str = Field(
        "anomaly_prometheus", description="Airflow connection (http) with URL and basic or bearer auth."
    )
    prometheus_url: str = Field(
        "http://127.0.0.1:9090", description="Used when the Prometheus connection is not defined."
    )
    prometheus_metrics_file: Path | None = Field(
        None, description="JSON file {metric: PromQL} replacing the default node_exporter map."
    )
    prometheus_max_points: int = Field(
        10_000, gt=0, le=11_000, description="Points per series per query_range call (server max 11,000)."
    )
    prometheus_timeout: float = Field(30.0, gt=0, description="HTTP timeout per request, seconds.")
    prometheus_retries: int = Field(4, ge=0, description="Retries on 5xx and timeouts, with backoff.")

    # --- postgres source ---------------------------------------------------
    postgres_conn_id: str = Field(
        "anomaly_metrics_source", description="Airflow connection of the Postgres metrics source."
    )
    postgres_table: str = Field(
        "metrics", description="Source table (schema.table allowed) in long or wide layout."
    )
    postgres_ts_column: str = Field("ts", description="Timestamp column of the source table.")

    # --- files source ------------------------------------------------------
    files_glob: str = Field(
        "./metrics/*.parquet", description="CSV or Parquet files, long or wide layout (glob)."
    )

    # --- simulation source -------------------------------------------------
    sim_hosts: int = Field(20, gt=0, description="Hosts in the simulated fleet.")
    sim_seed: int = Field(7, description="Seed of the simulated fleet.")
    sim_faults_file: Path | None = Field(
        None, description="JSON file of faults the simulation source injects (anomaly simulate writes one)."
    )

    # --- features ----------------------------------------------------------
    feature_pairs: str = Field(
        "cpu_util:load1,net_in_bytes:net_out_bytes,mem_util:swap_util,disk_read_bytes:disk_write_bytes",
        description="Metric pairs (a:b, comma-separated) with rolling correlation features.",
    )
    feature_ratios: str = Field(
        "net_in_bytes/net_in_packets,net_out_bytes/net_out_packets,tcp_retransmits/net_out_packets",
        description="Ratio features (numerator/denominator, comma-separated), e.g. bytes per packet or retransmits per packet sent.",
    )

    # --- validation ----------------------------------------------------------
    validation_completeness: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Share of the expected samples (interval / step per metric) each host must deliver.",
    )
    validation_null_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Largest share of nulls a feature may have once its window or lag has warmed up.",
    )
    validation_severity: str = Field(
        "",
        description="Severity overrides, e.g. 'raw.completeness=critical,raw.known_hosts=warning'.",
    )

    # --- models ----------------------------------------------------------------
    model_primary_metric: str = Field(
        "event_f1", description="Metric a challenger must match or beat on the champion's test span."
    )
    model_min_event_f1: float = Field(0.90, ge=0, le=1, description="Minimum event F1 to become champion.")
    model_min_precision: float = Field(
        0.80, ge=0, le=1, description="Minimum point precision to become champion."
    )
    model_min_recall: float = Field(0.90, ge=0, le=1, description="Minimum point recall to become champion.")
    train_schedule: str = Field(
        "0 3 * * 1",
        description="Cron (UTC) of the weekly train_model run; it also runs on drift and by hand.",
    )
    train_source: str = Field(
        "simulation:sim", description="Source (and label dataset) the train_model DAG trains on by default."
    )
    train_days: float = Field(14.0, gt=0, description="Days of history before the run a training set covers.")
    model_target_recall: float = Field(
        0.90,
        gt=0,
        le=1,
        description="Point recall the point threshold (is_anomaly) is tuned to reach on validation data.",
    )
    model_recall_confidence: float = Field(
        0.90,
        ge=0,
        lt=1,
        description="Confidence that the point threshold reaches the target recall: the recall's lower "
        "bound over resamples of the validation events must reach it (0: the validation recall itself).",
    )
    alert_min_events: int = Field(
        10,
        ge=1,
        description="Labelled events the validation span needs to tune the alert threshold; with fewer, "
        "the point threshold also raises incidents.",
    )

    # --- scoring ---------------------------------------------------------------
    score_schedule: str = Field(
        "0 * * * *", description="Cron of the score_metrics DAG's data intervals (UTC)."
    )
    score_source: str = Field("simulation", description="Source the score_metrics DAG scores by default.")
    incident_gap_seconds: float = Field(
        300.0, ge=0, description="Alert points of a host closer than this form one incident."
    )
    alert_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Score at or above which a scored point raises an incident (is_alert); unset: the "
        "model's own alert threshold, tuned on validation data for the best event F1. Never below the "
        "model's point threshold: a lower value pages on the point threshold.",
    )
    explain_top: int = Field(5, ge=1, le=50, description="Contributing features stored per incident.")
    publish_conn_id: str = Field(
        "anomaly_postgres",
        description="Airflow connection id of the Postgres database results are published to.",
    )
    publish_scores: bool = Field(
        True, description="Also publish every score (not only incidents) to Postgres."
    )
    drift_psi_threshold: float = Field(
        0.25, gt=0, description="Population stability index above which a feature has drifted."
    )
    drift_score_psi_threshold: float = Field(
        0.25, gt=0, description="PSI of the score distribution above which scores have drifted."
    )
    drift_alert_rate_factor: float = Field(
        3.0, gt=1, description="Alert rate above this multiple of the model's test-span rate counts as drift."
    )
    drift_window_hours: float = Field(
        24.0,
        gt=0,
        description="Scored history each drift check compares with the training data (a daily cycle).",
    )
    drift_min_features: int = Field(
        3, ge=1, description="Drifted features needed before the drift Asset triggers retraining."
    )

    @field_validator("validation_severity", mode="after")
    @classmethod
    def _known_severities(cls, value: str) -> str:
        from anomaly.validation.suites import with_overrides

        with_overrides([], value)  # raises naming the unknown expectation or severity
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def lake_data_path(self) -> str:
        if self.data_path:
            return self.data_path.rstrip("/") + "/"
        return str(self.lake_dir / "data") + "/"

    @property
    def sqlite_catalog_path(self) -> Path:
        return self.lake_dir / "catalog.sqlite"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def validation_reports_dir(self) -> Path:
        return self.home / "reports" / "validation"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def model_reports_dir(self) -> Path:
        return self.home / "reports" / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (cached; call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
