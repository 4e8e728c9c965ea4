"""PostgresSource against the real PostgreSQL on 127.0.0.1:5432, in a throwaway database.

The Airflow connection comes from an ``AIRFLOW_CONN_<ID>`` environment variable; no Airflow
metadata database is needed for that. Both drivers the Postgres provider can hand out
(psycopg 3 when installed with SQLAlchemy 2, else psycopg2) are exercised.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import psycopg2
import pytest

from anomaly.settings import Settings
from anomaly.sources.base import CANONICAL_COLUMNS, SourceError
from anomaly.sources.postgres import PostgresSource

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
CONN_ID = "anomaly_test_pg"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
HOSTS = ("web-1", "web-2")
MINUTES = range(-1, 5)  # rows from T0-1min to T0+4min


def _value(minute: int, metric: str) -> float:
    return (0.25 if metric == "cpu_util" else 1.5) + minute / 8  # exact in binary


def _long_expected(start: datetime, end: datetime) -> pd.DataFrame:
    """What the long and the wide table both hold for [start, end), ordered by ts, host, metric."""
    rows = [
        (T0 + timedelta(minutes=m), h, metric, _value(m, metric))
        for m in MINUTES
        for h in HOSTS
        for metric in ("cpu_util", "load1")
        if start <= T0 + timedelta(minutes=m) < end
    ]
    frame = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    return frame.astype({"host": object, "metric": object, "value": np.float64})


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A uniquely named database with known tables; dropped (forcibly) at the end."""
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL must run at 127.0.0.1:5432 (trust auth, user postgres) for these tests: {exc}"
        )
    admin.autocommit = True
    name = f"anomaly_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")  # generated name, no user input
    try:
        conn = psycopg2.connect(dbname=name, **PG)
        conn.autocommit = True
        with conn.cursor() as cur:
            # Sessions of this database default to a non-UTC zone: results must not depend on it.
            cur.execute(f"ALTER DATABASE {name} SET timezone TO 'America/New_York'")
            cur.execute("CREATE TABLE metrics_long (ts timestamptz, host text, metric text, value float8)")
            cur.execute("CREATE SCHEMA src")
            cur.execute(
                "CREATE TABLE src.metrics_wide (ts timestamptz, host text, cpu_util float8, load1 numeric)"
            )
            cur.execute("CREATE TABLE metrics_naive (ts timestamp, host text, metric text, value float8)")
            cur.execute("CREATE TABLE metrics_text (ts timestamptz, host text, metric text, value text)")
            cur.execute("CREATE TABLE x (id int)")
            for m in MINUTES:
                ts = T0 + timedelta(minutes=m)
                # Insert in reverse host order: the source orders, not the insertion.
                for h in reversed(HOSTS):
                    for metric in ("load1", "cpu_util"):
                        cur.execute(
                            "INSERT INTO metrics_long VALUES (%s, %s, %s, %s)",
                            (ts, h, metric, _value(m, metric)),
                        )
                        cur.execute(
                            "INSERT INTO metrics_naive VALUES (%s, %s, %s, %s)",
                            (ts.replace(tzinfo=None), h, metric, _value(m, metric)),
                        )
                    cur.execute(
                        "INSERT INTO src.metrics_wide VALUES (%s, %s, %s, %s)",
                        (ts, h, _value(m, "cpu_util"), Decimal(str(_value(m, "load1")))),
                    )
            cur.executemany(
                "INSERT INTO metrics_text VALUES (%s, 'a', 'm', %s)",
                [(T0, "n/a"), (T0 + timedelta(minutes=1), "12,5"), (T0 + timedelta(minutes=2), None)],
            )
        conn.close()
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def conn_id(database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    conn = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "login": "postgres",
        "schema": database,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    return CONN_ID


@pytest.fixture(params=["psycopg3", "psycopg2"])
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force the provider's driver choice (it reads this module flag on every connect)."""
    import airflow.providers.postgres.hooks.postgres as hook_module

    if request.param == "psycopg3":
        pytest.importorskip("psycopg")
    monkeypatch.setattr(hook_module, "USE_PSYCOPG3", request.param == "psycopg3")
    return request.param


def test_long_round_trip_with_boundaries(conn_id: str, driver: str) -> None:
    start, end = T0, T0 + timedelta(minutes=3)
    got = PostgresSource(conn_id, "metrics_long").fetch(start, end)
    expected = _long_expected(start, end)
    # Start row included, end row excluded, nothing from before start.
    assert got["ts"].min() == start and got["ts"].max() == end - timedelta(minutes=1)
    pd.testing.assert_frame_equal(got, expected)


def test_wide_round_trip_with_schema_and_numeric(conn_id: str, driver: str) -> None:
    start, end = T0, T0 + timedelta(minutes=3)
    for layout in ("wide", "auto"):
        src = PostgresSource(conn_id, "src.metrics_wide", layout=layout)  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(src.fetch(start, end), _long_expected(start, end))
    only = PostgresSource(conn_id, "src.metrics_wide", metric_columns=["load1"]).fetch(start, end)
    assert set(only["metric"]) == {"load1"} and len(only) == 3 * len(HOSTS)


def test_incremental_intervals_concatenate(conn_id: str, driver: str) -> None:
    src = PostgresSource(conn_id, "metrics_long", chunk_rows=3)  # several fetchmany chunks per interval
    a, b, c = T0 - timedelta(minutes=1), T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)
    both = pd.concat([src.fetch(a, b), src.fetch(b, c)], ignore_index=True)
    whole = src.fetch(a, c)
    pd.testing.assert_frame_equal(both, whole)
    pd.testing.assert_frame_equal(whole, _long_expected(a, c))


def test_bounds_in_other_zones_mean_the_same_instants(conn_id: str) -> None:
    plus5 = T0.astimezone(pd.Timestamp("2025-01-01", tz="Asia/Karachi").tzinfo)
    src = PostgresSource(conn_id, "metrics_long")
    got = src.fetch(plus5, plus5 + timedelta(minutes=3))
    pd.testing.assert_frame_equal(got, _long_expected(T0, T0 + timedelta(minutes=3)))


def test_naive_timestamp_column_passes_through_naive(conn_id: str, driver: str) -> None:
    got = PostgresSource(conn_id, "metrics_naive").fetch(T0, T0 + timedelta(minutes=3))
    assert str(got["ts"].dtype) == "datetime64[us]"  # documented: never silently assumed UTC
    # Bounds are compared as UTC wall clock, regardless of the session's America/New_York zone.
    expected = _long_expected(T0, T0 + timedelta(minutes=3))
    expected["ts"] = expected["ts"].dt.tz_localize(None)
    pd.testing.assert_frame_equal(got, expected)


def test_text_values_pass_through(conn_id: str, driver: str) -> None:
    got = PostgresSource(conn_id, "metrics_text").fetch(T0, T0 + timedelta(minutes=5))
    assert got["value"].dtype == object
    assert got["value"].tolist() == ["n/a", "12,5", None]


def test_empty_interval(conn_id: str) -> None:
    got = PostgresSource(conn_id, "metrics_long").fetch(T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert got.empty and got.columns.tolist() == list(CANONICAL_COLUMNS)


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"table": "metrics; drop table x"}, "invalid table"),
        ({"table": 'metrics"; drop table x; --'}, "invalid table"),
        ({"table": "a.b.c"}, "invalid table"),
        ({"table": "metrics", "ts_column": "ts) or (1=1"}, "invalid ts column"),
        ({"table": "metrics", "value_column": "value; drop table x"}, "invalid value column"),
    ],
)
def test_injection_attempts_are_rejected_before_any_query(
    conn_id: str, database: str, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, str], what: str
) -> None:
    import airflow.providers.postgres.hooks.postgres as hook_module

    def no_hook(*args: object, **kw: object) -> None:
        raise AssertionError("a hook was created for an invalid identifier")

    monkeypatch.setattr(hook_module, "PostgresHook", no_hook)
    with pytest.raises(SourceError, match=what) as err:
        PostgresSource(conn_id, **kwargs).fetch(T0, T0 + timedelta(minutes=1))
    assert "refusing" in str(err.value)
    with psycopg2.connect(dbname=database, **PG) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.x') IS NOT NULL")
        assert cur.fetchone() == (True,)


def test_missing_table_is_named(conn_id: str, driver: str) -> None:
    with pytest.raises(SourceError) as err:
        PostgresSource(conn_id, "public.no_such_table").fetch(T0, T0 + timedelta(minutes=1))
    message = str(err.value)
    assert CONN_ID in message and "public.no_such_table" in message
    assert 'relation "public.no_such_table" does not exist' in message  # the driver's own words


def test_missing_column_is_named(conn_id: str) -> None:
    with pytest.raises(SourceError) as err:
        PostgresSource(conn_id, "metrics_long", ts_column="time").fetch(T0, T0 + timedelta(minutes=1))
    message = str(err.value)
    assert "missing column(s) time" in message and "metrics_long" in message
    assert "ts, host, metric, value" in message  # what the table does have


def test_wrong_ts_type_is_explained(conn_id: str) -> None:
    with pytest.raises(SourceError, match="ts column 'host' has type text"):
        PostgresSource(conn_id, "metrics_long", ts_column="host").fetch(T0, T0 + timedelta(minutes=1))


def test_unreachable_server_gives_clear_error(monkeypatch: pytest.MonkeyPatch, driver: str) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": port,
        "login": "postgres",
        "password": "s3cret-pw",
        "schema": "postgres",
        "extra": {"connect_timeout": 3},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_TEST_DOWN", json.dumps(conn))
    with pytest.raises(SourceError) as err:
        PostgresSource("anomaly_test_down", "metrics").fetch(T0, T0 + timedelta(minutes=1))
    message = str(err.value)
    assert "anomaly_test_down" in message and "'metrics'" in message and "cannot connect" in message
    assert str(port) in message  # the driver's message says where it tried
    assert "s3cret-pw" not in message


def test_undefined_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_ANOMALY_TEST_UNDEFINED", raising=False)
    with pytest.raises(SourceError, match="'anomaly_test_undefined' is not defined"):
        PostgresSource("anomaly_test_undefined", "metrics").fetch(T0, T0 + timedelta(minutes=1))


def test_from_settings() -> None:
    src = PostgresSource.from_settings(
        Settings(postgres_conn_id="c", postgres_table="s.t", postgres_ts_column="time")
    )
    assert (src.conn_id, src.table, src.ts_column, src.layout) == ("c", "s.t", "time", "auto")
    assert src.name == "postgres"


# ---------------------------------------------------------------------- nulls, NaN and bool
@pytest.fixture(scope="module")
def null_tables(database: str) -> str:
    """Tables with NULL timestamps, NULL values, NaN and a boolean column."""
    conn = psycopg2.connect(dbname=database, **PG)
    conn.autocommit = True
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(hours=1)  # in, out
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE nulls_long (ts timestamptz, host text, metric text, value numeric)")
        cur.executemany(
            "INSERT INTO nulls_long VALUES (%s, %s, 'm', %s)",
            [(T0, "a", 1.5), (T0, "b", None), (T0, "c", Decimal("NaN")), (None, "d", 2.5), (t2, "e", 3.5)],
        )
        cur.execute("CREATE TABLE nulls_naive (ts timestamp, host text, metric text, value float8)")
        cur.executemany(
            "INSERT INTO nulls_naive VALUES (%s, 'a', 'm', %s)",
            [(T0.replace(tzinfo=None), 1.0), (None, 2.0), (t2.replace(tzinfo=None), 3.0)],
        )
        cur.execute("CREATE TABLE nulls_wide (ts timestamptz, host text, cpu_util float8, load1 numeric)")
        cur.executemany(
            "INSERT INTO nulls_wide VALUES (%s, 'a', %s, %s)",
            [(T0, 0.5, None), (t1, None, float("nan")), (None, None, Decimal("2.5")), (t2, 9.0, 9.0)],
        )
        cur.execute("CREATE TABLE bools (ts timestamptz, host text, up boolean, load1 float8)")
        cur.executemany("INSERT INTO bools VALUES (%s, 'a', %s, 1.0)", [(T0, True), (t1, None)])
    conn.close()
    return database


def test_null_timestamp_rows_are_read_as_none(conn_id: str, null_tables: str, driver: str) -> None:
    got = PostgresSource(conn_id, "nulls_long").fetch(T0, T0 + timedelta(minutes=3))
    assert got["host"].tolist() == ["a", "b", "c", "d"]  # NULL ts sorts last; the row at +1h is out
    assert got["ts"].dtype == object and got["ts"].tolist() == [pd.Timestamp(T0)] * 3 + [None]
    naive = PostgresSource(conn_id, "nulls_naive").fetch(T0, T0 + timedelta(minutes=3))
    assert naive["ts"].tolist() == [pd.Timestamp("2025-01-01"), None] and naive["value"].tolist() == [
        1.0,
        2.0,
    ]


def test_long_null_value_stays_missing_and_nan_stays_nan(conn_id: str, null_tables: str, driver: str) -> None:
    from anomaly.checks import check_batch

    got = PostgresSource(conn_id, "nulls_long").fetch(T0, T0 + timedelta(minutes=3))
    values = got["value"].tolist()
    assert values[0] == 1.5 and values[1] is None and np.isnan(values[2]) and values[3] == 2.5
    reasons = check_batch(got, T0, T0 + timedelta(minutes=3), {"m"}).rejected.set_index("host")["reason"]
    assert reasons.to_dict() == {"b": "null_value", "c": "nan_value", "d": "bad_timestamp"}


def test_wide_null_cells_are_absent_samples(conn_id: str, null_tables: str, driver: str) -> None:
    got = PostgresSource(conn_id, "nulls_wide", chunk_rows=2).fetch(T0, T0 + timedelta(minutes=3))
    assert got["metric"].tolist() == ["cpu_util", "load1", "load1"]
    assert got["ts"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(minutes=1)), None]
    assert got["value"].dtype == np.float64
    values = got["value"].tolist()
    assert values[0] == 0.5 and np.isnan(values[1]) and values[2] == 2.5  # NaN is a value, NULL is not


def test_boolean_column_passes_through_as_bool(conn_id: str, null_tables: str, driver: str) -> None:
    src = PostgresSource(conn_id, "bools", metric_columns=["up"])
    got = src.fetch(T0, T0 + timedelta(minutes=3))
    assert got["value"].dtype == bool and got["value"].tolist() == [True]  # the NULL cell is absent
    mixed = PostgresSource(conn_id, "bools").fetch(T0, T0 + timedelta(minutes=3))
    assert mixed["metric"].tolist() == ["up", "load1", "load1"]
    assert mixed["value"].tolist() == [True, 1.0, 1.0] and mixed["value"].iloc[0] is True
