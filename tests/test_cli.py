"""The ``anomaly`` command: SQL in three formats, readable errors, manual ingest."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from anomaly.cli import main
from anomaly.ingest import ingest_interval
from tests.conftest import FrameSource, grid_frame

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _load(lake) -> None:
    ingest_interval(
        "files", T0, T0 + timedelta(hours=1), "r", source=FrameSource(grid_frame(T0, T0 + timedelta(hours=1)))
    )


def test_sql_formats(lake) -> None:
    _load(lake)
    runner = CliRunner()
    query = "select host, count(*) as n from raw_metrics group by host order by host"
    table = runner.invoke(main, ["sql", query])
    assert table.exit_code == 0, table.output
    assert "h1" in table.output and "120" in table.output and "2 row(s)" in table.output
    csv = runner.invoke(main, ["sql", "--format", "csv", query])
    assert csv.output.splitlines() == ["host,n", "h1,120", "h2,120"]
    js = runner.invoke(main, ["sql", "--format", "json", "select min(ts) as t from raw_metrics"])
    assert json.loads(js.output) == [{"t": "2026-05-01T00:00:00.000000Z"}]


def test_sql_error_is_one_readable_line_and_exit_1(lake) -> None:
    result = CliRunner().invoke(main, ["sql", "select * from no_such_table"])
    assert result.exit_code == 1
    assert "error: query failed" in result.output and "no_such_table" in result.output
    assert "Traceback" not in result.output


def test_console_script_is_installed(lake) -> None:
    exe = Path(sys.executable).parent / "anomaly"
    out = subprocess.run(
        [str(exe), "sql", "--format", "csv", "select count(*) as n from metric_catalog"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.splitlines() == ["n", "15"]


def test_ingest_command_runs_the_same_path(lake) -> None:
    result = CliRunner().invoke(
        main,
        ["ingest", "--source", "simulation", "--start", "2026-05-01T00:00Z", "--end", "2026-05-01T00:10Z"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows_loaded"] == report["rows_fetched"] > 0


def test_ingest_command_rejects_naive_bounds(lake) -> None:
    result = CliRunner().invoke(main, ["ingest", "--start", "2026-05-01T00:00", "--end", "2026-05-01T01:00Z"])
    assert result.exit_code == 1 and "has no time zone" in result.output


def test_sql_is_read_only(lake) -> None:
    _load(lake)
    result = CliRunner().invoke(main, ["sql", "delete from raw_metrics"])
    assert result.exit_code == 1 and "read-only" in result.output.lower()
    assert lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == 240


def test_reports_says_where_the_data_docs_are_and_what_failed(lake, anomaly_home) -> None:
    runner = CliRunner()
    _load(lake)
    bad = grid_frame(T0 + timedelta(hours=1), T0 + timedelta(hours=2)).assign(value=float("nan"))
    from anomaly.validation import ValidationFailed

    try:
        ingest_interval(
            "files", T0 + timedelta(hours=1), T0 + timedelta(hours=2), "bad", source=FrameSource(bad)
        )
    except ValidationFailed:
        pass
    else:
        raise AssertionError("an all-NaN batch passed validation")
    out = runner.invoke(main, ["reports"])
    assert out.exit_code == 0, out.output
    index = anomaly_home / "reports" / "validation" / "index.html"
    assert f"validation reports (Great Expectations Data Docs): {index}" in out.output
    assert index.exists()
    # the first batch warns (raw.known_hosts: its hosts were new), the all-NaN batch fails
    assert "4 validations: 2 passed, 1 with warnings, 1 failed" in out.output
    assert "quarantined batches: 1 held, 0 released" in out.output
    assert "latest held: raw_metrics of files at 2026-05-01 01:00:00+00:00: raw.value_not_nan" in out.output


def test_models_commands_on_an_empty_registry_are_readable(lake) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["models", "list"])
    assert listed.exit_code == 0 and "0 row(s)" in listed.output
    for args, says in (
        (["models", "show", "7"], "no model version 7; versions: none yet"),
        (["models", "promote", "7"], "no model version 7"),
        (["models", "rollback"], "no champion to roll back from"),
    ):
        out = runner.invoke(main, args)
        assert out.exit_code == 1 and says in out.output and "Traceback" not in out.output
