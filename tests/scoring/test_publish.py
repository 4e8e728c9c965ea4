"""Publishing incidents and scores to the real PostgreSQL (127.0.0.1:5432) from a real lake.

Scoring runs are imitated by writing what ``anomaly.scoring`` writes in one lake transaction:
the interval's scores, its incidents, explanations and a ``score_log`` row stamped ``now()``.
The target database is throwaway (one per module); the Airflow connection comes from
``AIRFLOW_CONN_<ID>``. The failure path uses a connection to a port nothing listens on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from anomaly.publish import PG_INCIDENT_EXPLANATIONS, PG_INCIDENTS, PG_SCORES, PublishError, publish
from anomaly.settings import Settings

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
CONN_ID = "anomaly_test_publish"
DOWN_ID = "anomaly_test_publish_down"
T0 = datetime(2026, 4, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)

# incident_id, source, host, start, end, top_metrics, explanations [(feature, metric, contribution)]
Incident = tuple[str, str, str, datetime, datetime, list[str], list[tuple[str, str, float]]]
A1: Incident = ("a1", "sim", "h1", T0 + 10 * M, T0 + 20 * M, ["cpu_util", "load1"],
                [("cpu_util_z", "cpu_util", 2.5), ("load1_mean", "load1", -1.25)])  # fmt: skip
A2: Incident = ("a2", "sim", "h2", T0 + 40 * M, T0 + 45 * M, [], [])  # not explained yet
B1: Incident = ("b1", "sim", "h1", T0 + H + 50 * M, T0 + H + 55 * M, ["mem_util"],
                [("mem_util_trend", "mem_util", 1.5)])  # fmt: skip
C1: Incident = (
    "c1",
    "sim",
    "h1",
    T0 + 2 * H + 2 * M,
    T0 + 2 * H + 10 * M,
    [],
    [],
)  # within the gap of hour 2
P1: Incident = ("p1", "prom", "h9", T0 + 5 * M, T0 + 15 * M, ["net_in_bytes"],
                [("net_in_rate", "net_in_bytes", 3.0)])  # fmt: skip
# A later run of hour 2 merges b1 and c1 into one longer incident starting earlier (new id).
M1: Incident = ("m1", "sim", "h1", T0 + H + 45 * M, T0 + 2 * H + 10 * M, ["disk_util", "mem_util"],
                [("disk_util_z", "disk_util", 4.0), ("mem_util_trend", "mem_util", 2.0),
                 ("load1_mean", "load1", 0.5)])  # fmt: skip


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A uniquely named database, dropped (forcibly) at the end."""
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL must run at 127.0.0.1:5432 (trust auth, user postgres): {exc}")
    admin.autocommit = True
    name = f"anomaly_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")  # generated name, no user input
        # Sessions default to a non-UTC zone: what is published must not depend on it.
        cur.execute(f"ALTER DATABASE {name} SET timezone TO 'America/New_York'")
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _conn_json(database: str, port: int = 5432) -> str:
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "login": "postgres",
            "schema": database,
            "extra": {"connect_timeout": 3},
        }
    )


@pytest.fixture
def pg(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The connection defined by env, and the database emptied of published tables."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _conn_json(database))
    with psycopg2.connect(dbname=database, **PG) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {PG_INCIDENT_EXPLANATIONS}, {PG_INCIDENTS}, {PG_SCORES}")
    conn.close()
    yield database


def use_driver(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Force the provider's driver choice (it reads this module flag on every connect)."""
    import airflow.providers.postgres.hooks.postgres as hook_module

    if name == "psycopg3":
        pytest.importorskip("psycopg")
    monkeypatch.setattr(hook_module, "USE_PSYCOPG3", name == "psycopg3")


# ---------------------------------------------------------------------------------- lake helpers
def _scores(source: str, start: datetime, end: datetime, incidents: Sequence[Incident], salt: float) -> list:
    """Every 5 minutes per host; anomalous inside an incident of the host, alerting there on
    every other host only (so is_alert differs from is_anomaly)."""
    rows, ts = [], start
    hosts = sorted({"h1", "h2", *(i[2] for i in incidents)})
    while ts < end:
        for n, host in enumerate(hosts):
            hit = any(i[2] == host and i[3] <= ts <= i[4] for i in incidents)
            rows.append((source, host, ts, (0.9 if hit else 0.1) + n / 64 + salt, hit, hit and n % 2 == 0))
        ts += 5 * M
    return rows


Run = tuple[str, datetime, datetime, Sequence[Incident]]  # source, start, end, incidents


def score_runs(
    lake, runs: Sequence[Run], *, drop: Sequence[str] = (), run_id: str = "run", salt: float = 0.0
) -> None:
    """What scoring ``runs`` leaves in the lake (scores, incidents, explanations, score_log rows
    stamped ``now()``), in one transaction to keep the tests fast."""

    def work(con) -> None:
        if drop:
            con.execute("DELETE FROM incident_explanations WHERE list_contains(?, incident_id)", [drop])
            con.execute("DELETE FROM incidents WHERE list_contains(?, incident_id)", [drop])
        for source, start, end, incidents in runs:
            scores = _scores(source, start, end, incidents, salt)
            con.execute("DELETE FROM scores WHERE source = ? AND ts >= ? AND ts < ?", [source, start, end])
            con.executemany(
                "INSERT INTO scores (source, host, ts, score, is_anomaly, model_version, run_id, scored_at, "
                "is_alert) VALUES (?, ?, ?, ?, ?, 1, ?, now(), ?)",
                [(*r[:5], run_id, r[5]) for r in scores],
            )
            for iid, src, host, t1, t2, top, expl in incidents:
                con.execute(
                    "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, 0.95, 0.9, ?, 1, ?, ?, now(), "
                    "CASE WHEN ? THEN now() END)",
                    [iid, src, host, t1, t2, (t2 - t1) // (5 * M) + 1, top, run_id, bool(expl)],
                )
                for rank, (feature, metric, value) in enumerate(expl, start=1):
                    con.execute(
                        "INSERT INTO incident_explanations VALUES (?, ?, ?, ?, ?, 1)",
                        [iid, rank, feature, metric, value],
                    )
            con.execute(
                "INSERT INTO score_log VALUES (?, ?, ?, ?, 1, ?, ?, 2, ?, '{}', 0.1, now())",
                [run_id, source, start, end, len(scores), sum(r[4] for r in scores), len(scores)],
            )

    lake.write(work, what="test scoring run")


def score_run(
    lake,
    source: str,
    start: datetime,
    end: datetime,
    incidents: Sequence[Incident] = (),
    **kwargs: Any,
) -> None:
    """One scoring run of ``[start, end)`` of ``source``."""
    score_runs(lake, [(source, start, end, incidents)], **kwargs)


def explain_later(lake, incident: Incident, top: list[str], expl: list[tuple[str, str, float]]) -> None:
    """What the explain step does after the scoring commit: no new score_log row."""

    def work(con) -> None:
        con.execute("DELETE FROM incident_explanations WHERE incident_id = ?", [incident[0]])
        con.execute(
            "UPDATE incidents SET top_metrics = ?, explained_at = now() WHERE incident_id = ?",
            [top, incident[0]],
        )
        for rank, (feature, metric, value) in enumerate(expl, start=1):
            con.execute(
                "INSERT INTO incident_explanations VALUES (?, ?, ?, ?, ?, 1)",
                [incident[0], rank, feature, metric, value],
            )

    lake.write(work, what="test explain")


def seed(lake) -> None:
    """Three hours of 'sim' (one scoring run each) and one of 'prom'."""
    score_runs(
        lake,
        [
            ("sim", T0, T0 + H, [A1, A2]),
            ("sim", T0 + H, T0 + 2 * H, [B1]),
            ("sim", T0 + 2 * H, T0 + 3 * H, [C1]),
            ("prom", T0, T0 + H, [P1]),
        ],
    )


_LAKE_SQL = {
    PG_INCIDENTS: "SELECT incident_id, source, host, start_ts, end_ts, peak_score, mean_score, points, "
    "model_version, top_metrics, run_id, updated_at, explained_at FROM incidents ORDER BY incident_id",
    PG_INCIDENT_EXPLANATIONS: "SELECT incident_id, rank, feature, metric, contribution, model_version "
    "FROM incident_explanations ORDER BY incident_id, rank",
    PG_SCORES: "SELECT source, host, ts, score, is_anomaly, is_alert, model_version, run_id, scored_at "
    "FROM scores ORDER BY source, host, ts",
}
_PG_SQL = {
    table: sql.replace(" FROM incidents ", f" FROM {PG_INCIDENTS} ")
    .replace(" FROM incident_explanations ", f" FROM {PG_INCIDENT_EXPLANATIONS} ")
    .replace(" FROM scores ", f" FROM {PG_SCORES} ")
    for table, sql in _LAKE_SQL.items()
}


def lake_rows(lake, table: str) -> list[tuple[Any, ...]]:
    with lake.connection() as con:
        return [tuple(r) for r in con.execute(_LAKE_SQL[table]).fetchall()]


def pg_rows(database: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg2.connect(dbname=database, **PG) as conn, conn.cursor() as cur:
        cur.execute(_PG_SQL[table])
        rows = [tuple(r) for r in cur.fetchall()]
    conn.close()
    return rows


def pg_snapshot(database: str) -> dict[str, list[tuple[Any, ...]]]:
    return {table: pg_rows(database, table) for table in _PG_SQL}


def publish_log(lake) -> list[tuple[Any, ...]]:
    with lake.connection() as con:
        return con.execute(
            "SELECT conn_id, what, watermark, rows, run_id FROM publish_log ORDER BY conn_id, what, watermark"
        ).fetchall()


def max_finished(lake) -> datetime:
    with lake.connection() as con:
        return con.execute("SELECT max(finished_at) FROM score_log").fetchone()[0]


def _window(source: str, start: datetime, end: datetime) -> dict[str, str]:
    return {"source": source, "start": start.isoformat(), "end": end.isoformat()}


# ---------------------------------------------------------------------------------- tests
def test_first_publish_creates_tables_and_mirrors_the_lake(
    lake, pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_driver(monkeypatch, "psycopg3")
    seed(lake)
    got = publish(CONN_ID, run_id="p1", lake=lake)

    assert got["windows"] == [_window("prom", T0, T0 + H), _window("sim", T0, T0 + 3 * H)]
    assert (got["incidents"], got["explanations"], got["incidents_removed"]) == (5, 4, 0)
    assert got["scores"] == len(lake_rows(lake, PG_SCORES)) == 36 + 3 * 24
    assert got["target"] == f"127.0.0.1:5432/{pg}" and got["previous_watermark"] is None
    assert got["watermark"] == max_finished(lake).isoformat()
    for table in _PG_SQL:
        assert pg_rows(pg, table) == lake_rows(lake, table), table
    assert pg_rows(pg, PG_INCIDENTS)[0][9] == ["cpu_util", "load1"]  # text[], order kept
    flags = {(r[4], r[5]) for r in pg_rows(pg, PG_SCORES)}  # (is_anomaly, is_alert)
    assert flags == {(False, False), (True, False), (True, True)}

    with psycopg2.connect(dbname=pg, **PG) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT tc.table_name, string_agg(k.column_name, ',' ORDER BY k.ordinal_position) "
            "FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k "
            "USING (constraint_schema, constraint_name) WHERE tc.constraint_type = 'PRIMARY KEY' "
            "AND tc.table_name = ANY(%s) GROUP BY 1 ORDER BY 1",
            ([PG_INCIDENTS, PG_INCIDENT_EXPLANATIONS, PG_SCORES],),
        )
        keys = dict(cur.fetchall())
        cur.execute(
            "SELECT DISTINCT data_type FROM information_schema.columns "
            "WHERE table_name = ANY(%s) AND column_name = ANY(%s)",
            ([PG_INCIDENTS, PG_SCORES], ["ts", "start_ts", "end_ts", "updated_at", "scored_at"]),
        )
        ts_types = cur.fetchall()
    conn.close()
    assert keys == {
        PG_INCIDENT_EXPLANATIONS: "incident_id,rank",
        PG_INCIDENTS: "incident_id",
        PG_SCORES: "source,host,ts",
    }
    assert ts_types == [("timestamp with time zone",)]
    watermark = max_finished(lake)
    assert publish_log(lake) == [
        (CONN_ID, "incidents", watermark, 5, "p1"),
        (CONN_ID, "scores", watermark, got["scores"], "p1"),
    ]


def test_a_scores_table_from_before_is_alert_gets_the_column(lake, pg: str) -> None:
    with psycopg2.connect(dbname=pg, **PG) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {PG_SCORES} (source text NOT NULL, host text NOT NULL, ts timestamptz NOT NULL, "
            "score double precision NOT NULL, is_anomaly boolean NOT NULL, model_version integer NOT NULL, "
            "run_id text, scored_at timestamptz NOT NULL, PRIMARY KEY (source, host, ts))"
        )
    conn.close()
    seed(lake)
    publish(CONN_ID, run_id="p1", lake=lake)
    assert pg_rows(pg, PG_SCORES) == lake_rows(lake, PG_SCORES)


def test_publishing_again_changes_nothing(lake, pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_driver(monkeypatch, "psycopg3")
    seed(lake)
    first = publish(CONN_ID, lake=lake)
    before, log_before = pg_snapshot(pg), publish_log(lake)

    again = publish(CONN_ID, lake=lake)
    assert again["windows"] == [] and again["watermark"] is None
    assert (again["incidents"], again["explanations"], again["scores"]) == (0, 0, 0)
    assert again["previous_watermark"] == first["watermark"]
    assert pg_snapshot(pg) == before and publish_log(lake) == log_before

    # A crash after the Postgres commit, before the lake record: the same windows go out again,
    # here through the other driver the provider may hand out; the rows are the same.
    lake.write(lambda con: con.execute("DELETE FROM publish_log"))
    use_driver(monkeypatch, "psycopg2")
    redo = publish(CONN_ID, lake=lake)
    assert {k: redo[k] for k in ("windows", "incidents", "explanations", "scores", "watermark")} == {
        k: first[k] for k in ("windows", "incidents", "explanations", "scores", "watermark")
    }
    assert redo["incidents_removed"] == 0
    assert pg_snapshot(pg) == before


def test_replaced_incidents_leave_no_stale_rows(lake, pg: str) -> None:
    seed(lake)
    publish(CONN_ID, lake=lake)
    assert [r[0] for r in pg_rows(pg, PG_INCIDENTS)] == ["a1", "a2", "b1", "c1", "p1"]

    # Hour 2 is scored again: b1 (inside it) and c1 (starting 2 minutes after it, within the
    # incident gap) become one longer incident m1 with a new id; the hour's scores change.
    score_run(lake, "sim", T0 + H, T0 + 2 * H, [M1], drop=["b1", "c1"], run_id="rerun", salt=0.001)
    got = publish(CONN_ID, lake=lake)

    assert got["windows"] == [_window("sim", T0 + H, T0 + 2 * H)]
    assert (got["incidents"], got["incidents_removed"], got["explanations"]) == (1, 2, 3)
    assert got["scores"] == 24
    assert [r[0] for r in pg_rows(pg, PG_INCIDENTS)] == ["a1", "a2", "m1", "p1"]
    for table in _PG_SQL:
        assert pg_rows(pg, table) == lake_rows(lake, table), table
    rerun = [r for r in pg_rows(pg, PG_SCORES) if r[7] == "rerun"]
    assert len(rerun) == 24 and {r[2] for r in rerun} == {T0 + H + 5 * i * M for i in range(12)}

    # a2 is explained after its scoring commit (no new score_log row): still published.
    explain_later(
        lake, A2, ["swap_util"], [("swap_util_z", "swap_util", 1.0), ("mem_util_z", "mem_util", 0.5)]
    )
    got = publish(CONN_ID, lake=lake)
    assert got["windows"] == [] and (got["incidents"], got["explanations"], got["scores"]) == (1, 2, 0)
    a2 = next(r for r in pg_rows(pg, PG_INCIDENTS) if r[0] == "a2")
    assert a2[9] == ["swap_util"] and a2[12] is not None
    for table in _PG_SQL:
        assert pg_rows(pg, table) == lake_rows(lake, table), table

    # An explanation that shrinks replaces the old ranks instead of keeping rank 2.
    explain_later(lake, A2, ["swap_util"], [("swap_util_z", "swap_util", 1.5)])
    publish(CONN_ID, lake=lake)
    assert [r for r in pg_rows(pg, PG_INCIDENT_EXPLANATIONS) if r[0] == "a2"] == [
        ("a2", 1, "swap_util_z", "swap_util", 1.5, 1)
    ]


def test_scores_can_be_left_out(lake, pg: str, anomaly_home) -> None:
    seed(lake)
    got = publish(CONN_ID, lake=lake, settings=Settings(home=anomaly_home, publish_scores=False))
    assert got["scores"] == 0 and got["scores_published"] is False and got["incidents"] == 5
    assert pg_rows(pg, PG_SCORES) == []  # the table exists, empty
    assert pg_rows(pg, PG_INCIDENTS) == lake_rows(lake, PG_INCIDENTS)
    assert [r[1] for r in publish_log(lake)] == ["incidents"]

    # The argument wins over the setting; the conn id comes from the settings when not given.
    score_run(lake, "sim", T0 + 3 * H, T0 + 4 * H)
    settings = Settings(home=anomaly_home, publish_conn_id=CONN_ID, publish_scores=False)
    got = publish(lake=lake, settings=settings, scores=True)
    assert got["conn_id"] == CONN_ID and got["scores"] == 24
    assert {r[2] for r in pg_rows(pg, PG_SCORES)} == {T0 + 3 * H + 5 * i * M for i in range(12)}


def test_unreachable_postgres_records_nothing_and_the_next_publish_catches_up(
    lake, pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{DOWN_ID.upper()}", _conn_json(pg, port=1))
    score_run(lake, "sim", T0, T0 + H, [A1, A2])
    with pytest.raises(PublishError) as err:
        publish(DOWN_ID, lake=lake)
    message = str(err.value)
    assert repr(DOWN_ID) in message and f"127.0.0.1:1/{pg}" in message and "connecting" in message
    assert "OperationalError" in message and "next publish" in message
    assert publish_log(lake) == []
    monkeypatch.delenv("AIRFLOW_CONN_ANOMALY_TEST_NOWHERE", raising=False)
    with pytest.raises(
        PublishError, match=r"'anomaly_test_nowhere' is not defined.*AIRFLOW_CONN_ANOMALY_TEST_NOWHERE"
    ):
        publish("anomaly_test_nowhere", lake=lake)
    assert publish_log(lake) == []

    score_run(lake, "sim", T0 + H, T0 + 2 * H, [B1])  # the next interval, scored meanwhile
    got = publish(CONN_ID, lake=lake)
    assert got["windows"] == [_window("sim", T0, T0 + 2 * H)]  # both hours
    assert (got["incidents"], got["scores"]) == (3, 48)
    for table in _PG_SQL:
        assert pg_rows(pg, table) == lake_rows(lake, table), table
    assert [(r[0], r[1], r[2]) for r in publish_log(lake)] == [
        (CONN_ID, "incidents", max_finished(lake)),
        (CONN_ID, "scores", max_finished(lake)),
    ]
