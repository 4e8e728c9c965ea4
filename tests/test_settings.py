"""Settings: typed, from ANOMALY_* variables, documented defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from anomaly.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("ANOMALY_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.home == tmp_path / "var"
    assert s.catalog == "sqlite" and s.sqlite_catalog_path == tmp_path / "var" / "lake" / "catalog.sqlite"
    assert s.lake_data_path == f"{tmp_path}/var/lake/data/"
    assert s.source == "simulation" and s.ingest_schedule == "0 * * * *" and s.ingest_catchup is False
    assert s.prometheus_max_points <= 11_000


def test_environment_overrides_and_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANOMALY_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("ANOMALY_STEP_SECONDS", "15")
    monkeypatch.setenv("ANOMALY_INGEST_CATCHUP", "true")
    monkeypatch.setenv("ANOMALY_DATA_PATH", "s3://bucket/lake")
    s = Settings()
    assert s.home == tmp_path / "h" and s.step_seconds == 15 and s.ingest_catchup is True
    assert s.lake_data_path == "s3://bucket/lake/"


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("ANOMALY_STEP_SECONDS", "fast", "step_seconds"),
        ("ANOMALY_SOURCE", "graphite", "source"),
        ("ANOMALY_PROMETHEUS_MAX_POINTS", "20000", "prometheus_max_points"),
        ("ANOMALY_MAX_REJECT_SHARE", "2", "max_reject_share"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [
        f"ANOMALY_{name.upper()}" for name in Settings.model_fields if f"ANOMALY_{name.upper()}" not in readme
    ]
    assert not missing, f"README configuration table lacks {missing}"
