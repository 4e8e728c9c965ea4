"""Publish incidents (and scores) from the lake to a Postgres database, for Grafana and alerting.

The target database is an Airflow connection (``ANOMALY_PUBLISH_CONN_ID``, default
``anomaly_postgres``) opened through the Postgres provider's ``PostgresHook``. Three tables are
created if missing::

    anomaly_incidents              one row per incident          (PK incident_id)
    anomaly_incident_explanations  one row per incident and rank (PK incident_id, rank)
    anomaly_scores                 one row per source, host, ts  (PK source, host, ts)

**What is published: a sync of time windows.** ``score_log`` says which intervals were scored
(a re-run adds a row); ``publish_log`` holds, per connection, the watermark up to which lake
changes are published. A call takes the ``score_log`` rows finished after the watermark, merges
their intervals per source into windows, and in ONE Postgres transaction makes each window of
Postgres equal to the lake:

* incidents: the lake's incidents overlapping the window widened by the incident gap on each side
  (``ANOMALY_INCIDENT_GAP_SECONDS``: a re-scored hour can join or cut an incident just outside it)
  are upserted; Postgres incidents overlapping that window that the lake no longer has (deleted,
  merged into another) are deleted with their explanations. Incidents updated or explained after
  the watermark elsewhere (``updated_at``/``explained_at``: explanations are computed after the
  scoring commit) are upserted too; an upserted incident's explanations are replaced;
* scores (``ANOMALY_PUBLISH_SCORES``): the window's scores of the source are replaced.

Only after the commit is the new watermark (the largest ``finished_at``/``updated_at``/
``explained_at`` handled) recorded in ``publish_log``, one row per ``what`` ('incidents',
'scores'). If Postgres is down, :class:`PublishError` says which connection and address failed and
nothing is recorded, so the next call publishes the missed windows as well; the lake keeps
everything. Re-publishing a window (a crash between the commit and the lake record) rewrites the
same rows: the sync is idempotent.

Every call connects, even with nothing new, so the tables exist from the first run and a broken
connection fails the task at once instead of at the first incident. Publishers to one database are
serialised by a Postgres advisory lock held from before the lake is read until the watermark is
recorded, so an older read can never overwrite a newer one.

The watermark relies on the lake's timestamps being ``now()`` of their write transaction, taken
under the lake's write lock (as ``anomaly.scoring`` does): they then grow in commit order, and no
change can commit with a timestamp at or below a watermark already read.

Example::

    >>> from anomaly.publish import publish
    >>> publish("anomaly_postgres", run_id="manual")          # doctest: +SKIP
    {'conn_id': 'anomaly_postgres', 'target': '127.0.0.1:5432/grafana', 'windows': [...], ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from anomaly import registry
from anomaly.connections import postgres_driver_errors, redact
from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    import duckdb

    from anomaly.store import Lake

log = logging.getLogger(__name__)

# Postgres table names (the sink's own namespace; the lake's names live in ``anomaly.registry``).
PG_INCIDENTS = "anomaly_incidents"
PG_INCIDENT_EXPLANATIONS = "anomaly_incident_explanations"
PG_SCORES = "anomaly_scores"
PG_TABLES = (PG_INCIDENTS, PG_INCIDENT_EXPLANATIONS, PG_SCORES)

PAGE_SIZE = 5000  # rows per INSERT statement (and per fetch from the lake)

# Serialises publishers to one database (session-level advisory lock; a stable 64-bit key).
_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"anomaly.publish", digest_size=8).digest(), "big", signed=True)

# Columns mirror the lake tables (sql/schema/011_scoring.sql); top_metrics is text[].
DDL = """
CREATE TABLE IF NOT EXISTS anomaly_incidents (
    incident_id   text             PRIMARY KEY,
    source        text             NOT NULL,
    host          text             NOT NULL,
    start_ts      timestamptz      NOT NULL,
    end_ts        timestamptz      NOT NULL,  -- last anomalous point (inclusive)
    peak_score    double precision NOT NULL,
    mean_score    double precision NOT NULL,
    points        bigint           NOT NULL,
    model_version integer          NOT NULL,
    top_metrics   text[]           NOT NULL,  -- metrics of the top contributing features, best first
    run_id        text,
    updated_at    timestamptz      NOT NULL,
    explained_at  timestamptz                 -- NULL until explained
);
CREATE INDEX IF NOT EXISTS anomaly_incidents_host_start_idx ON anomaly_incidents (host, start_ts);
CREATE INDEX IF NOT EXISTS anomaly_incidents_start_idx ON anomaly_incidents (start_ts);
CREATE INDEX IF NOT EXISTS anomaly_incidents_source_end_idx ON anomaly_incidents (source, end_ts);

CREATE TABLE IF NOT EXISTS anomaly_incident_explanations (
    incident_id   text             NOT NULL REFERENCES anomaly_incidents (incident_id) ON DELETE CASCADE,
    rank          integer          NOT NULL,  -- 1 = largest |contribution|
    feature       text             NOT NULL,
    metric        text,
    contribution  double precision NOT NULL,
    model_version integer          NOT NULL,
    PRIMARY KEY (incident_id, rank)
);

CREATE TABLE IF NOT EXISTS anomaly_scores (
    source        text             NOT NULL,
    host          text             NOT NULL,
    ts            timestamptz      NOT NULL,
    score         double precision NOT NULL,
    is_anomaly    boolean          NOT NULL,
    model_version integer          NOT NULL,
    run_id        text,
    scored_at     timestamptz      NOT NULL,
    PRIMARY KEY (source, host, ts)
);
-- is_alert: the point raises an incident (score >= the model's alert threshold); added after the
-- first release, hence the ALTER for tables created before it.
ALTER TABLE anomaly_scores ADD COLUMN IF NOT EXISTS is_alert boolean;
CREATE INDEX IF NOT EXISTS anomaly_scores_ts_idx ON anomaly_scores (ts);
CREATE INDEX IF NOT EXISTS anomaly_scores_host_ts_idx ON anomaly_scores (host, ts);
"""

# Bulk writes: one statement per page, each column bound as one array and unnested server-side.
# This works unchanged with both drivers the provider may hand out (psycopg 3, psycopg2), unlike
# psycopg2.extras.execute_values. top_metrics travels as a JSON array (arrays of arrays flatten).
_UPSERT_INCIDENTS = """
INSERT INTO anomaly_incidents (incident_id, source, host, start_ts, end_ts, peak_score, mean_score,
    points, model_version, top_metrics, run_id, updated_at, explained_at)
SELECT u.incident_id, u.source, u.host, u.start_ts, u.end_ts, u.peak_score, u.mean_score, u.points,
       u.model_version,
       ARRAY(SELECT e.m FROM jsonb_array_elements_text(u.top_metrics::jsonb) WITH ORDINALITY AS e(m, i)
             ORDER BY e.i),
       u.run_id, u.updated_at, u.explained_at
FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[],
            %s::float8[], %s::float8[], %s::int8[], %s::int4[], %s::text[], %s::text[],
            %s::timestamptz[], %s::timestamptz[])
     AS u(incident_id, source, host, start_ts, end_ts, peak_score, mean_score, points, model_version,
          top_metrics, run_id, updated_at, explained_at)
ON CONFLICT (incident_id) DO UPDATE SET
    source = EXCLUDED.source, host = EXCLUDED.host, start_ts = EXCLUDED.start_ts,
    end_ts = EXCLUDED.end_ts, peak_score = EXCLUDED.peak_score, mean_score = EXCLUDED.mean_score,
    points = EXCLUDED.points, model_version = EXCLUDED.model_version,
    top_metrics = EXCLUDED.top_metrics, run_id = EXCLUDED.run_id, updated_at = EXCLUDED.updated_at,
    explained_at = EXCLUDED.explained_at
"""

_UPSERT_EXPLANATIONS = """
INSERT INTO anomaly_incident_explanations (incident_id, rank, feature, metric, contribution, model_version)
SELECT * FROM unnest(%s::text[], %s::int4[], %s::text[], %s::text[], %s::float8[], %s::int4[])
ON CONFLICT (incident_id, rank) DO UPDATE SET
    feature = EXCLUDED.feature, metric = EXCLUDED.metric, contribution = EXCLUDED.contribution,
    model_version = EXCLUDED.model_version
"""

_UPSERT_SCORES = """
INSERT INTO anomaly_scores (source, host, ts, score, is_anomaly, model_version, run_id, scored_at, is_alert)
SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::bool[], %s::int4[],
                     %s::text[], %s::timestamptz[], %s::bool[])
ON CONFLICT (source, host, ts) DO UPDATE SET
    score = EXCLUDED.score, is_anomaly = EXCLUDED.is_anomaly, model_version = EXCLUDED.model_version,
    run_id = EXCLUDED.run_id, scored_at = EXCLUDED.scored_at, is_alert = EXCLUDED.is_alert
"""

# Incidents of a window that the lake no longer has; their explanations go by ON DELETE CASCADE.
_DELETE_STALE_INCIDENTS = """
DELETE FROM anomaly_incidents
WHERE source = %s AND end_ts >= %s AND start_ts < %s AND NOT (incident_id = ANY(%s::text[]))
"""
_DELETE_EXPLANATIONS = "DELETE FROM anomaly_incident_explanations WHERE incident_id = ANY(%s::text[])"
_DELETE_SCORES = "DELETE FROM anomaly_scores WHERE source = %s AND ts >= %s AND ts < %s"

_INCIDENT_COLUMNS = (
    "incident_id", "source", "host", "start_ts", "end_ts", "peak_score", "mean_score", "points",
    "model_version", "top_metrics", "run_id", "updated_at",
)  # fmt: skip


class PublishError(RuntimeError):
    """Publishing to Postgres failed; the message names the connection, its address and the cause.

    Nothing was recorded as published, so the next call publishes the missed windows too.
    """


@dataclass(frozen=True)
class Window:
    """``[start, end)`` of one source whose lake rows are published again."""

    source: str
    start: datetime
    end: datetime

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass
class _Plan:
    previous: datetime | None  # watermark already published (None: nothing yet)
    gap: timedelta  # incidents are synced over each window widened by this on both sides
    windows: list[Window] = field(default_factory=list)
    incidents: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # id -> row (_INCIDENT_COLUMNS+)
    explanations: list[tuple[Any, ...]] = field(default_factory=list)
    watermark: datetime | None = None  # new watermark (None: nothing new)


# ---------------------------------------------------------------------------------- public API
def publish(
    conn_id: str | None = None,
    *,
    run_id: str | None = None,
    scores: bool | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Publish every lake change since the last successful publish to ``conn_id``; see the module
    docstring. Returns a JSON-ready summary (fit for XCom).

    ``conn_id`` defaults to ``ANOMALY_PUBLISH_CONN_ID``, ``scores`` to ``ANOMALY_PUBLISH_SCORES``.
    Raises :class:`PublishError` when Postgres cannot be reached or refuses the writes.

    Example::

        >>> publish(run_id="scheduled__2026-04-01T01:00:00+00:00")      # doctest: +SKIP
        {'conn_id': 'anomaly_postgres', 'incidents': 3, 'explanations': 15, 'scores': 7200, ...}
    """
    from anomaly.store import Lake

    settings = settings or (lake.settings if lake is not None else get_settings())
    conn_id = conn_id or settings.publish_conn_id
    with_scores = settings.publish_scores if scores is None else scores
    own_lake = lake is None
    lake = lake or Lake(settings)
    t0 = time.perf_counter()
    try:
        target = _describe_target(conn_id)  # an undefined connection fails before the lake opens
        lake.init()
        pg = _connect(conn_id, target)
        try:
            summary = _publish_locked(pg, lake, conn_id, target, run_id, with_scores, settings)
        finally:
            try:
                pg.close()  # also releases the advisory lock
            except Exception:  # noqa: BLE001 - a failed close must not hide the result
                pass
    finally:
        if own_lake:
            lake.close()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    log.info(
        "published to %s (%s): %d window(s) %s, %d incident(s) (%d removed), %d explanation(s), "
        "%s score(s); watermark %s -> %s in %.1f s",
        conn_id,
        target,
        len(summary["windows"]),
        ", ".join(f"{w['source']} [{w['start']}, {w['end']})" for w in summary["windows"][:5]),
        summary["incidents"],
        summary["incidents_removed"],
        summary["explanations"],
        summary["scores"] if with_scores else "no",
        summary["previous_watermark"],
        summary["watermark"],
        summary["seconds"],
    )
    return summary


def last_watermark(conn_id: str, *, lake: Lake) -> datetime | None:
    """The watermark of the last successful incident publish to ``conn_id`` (None: never)."""
    lake.init()
    with lake.connection() as con:
        return con.execute(
            f"SELECT max(watermark) FROM {registry.PUBLISH_LOG} WHERE conn_id = ? AND what = 'incidents'",
            [conn_id],
        ).fetchone()[0]


# ---------------------------------------------------------------------------------- Postgres side
def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {redact(' '.join(str(exc).split()))}"


def _describe_target(conn_id: str) -> str:
    """``host:port/db`` of the connection, for messages (no credentials)."""
    from anomaly.connections import get_connection

    conn = get_connection(conn_id)
    if conn is None:
        raise PublishError(
            f"publish to Postgres: Airflow connection {conn_id!r} is not defined "
            f"(add it in Airflow or set AIRFLOW_CONN_{conn_id.upper()}); nothing was published"
        )
    return f"{conn.host or 'localhost'}:{conn.port or 5432}/{conn.schema or conn.login or 'postgres'}"


def _fail(conn_id: str, target: str, doing: str, exc: BaseException) -> PublishError:
    return PublishError(
        f"publish to Postgres connection {conn_id!r} ({target}) failed while {doing}: {_cause(exc)}; "
        "nothing was recorded as published: the lake keeps every score and incident, and the next "
        "publish sends the missed windows too"
    )


def _connect(conn_id: str, target: str) -> Any:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    try:
        return PostgresHook(postgres_conn_id=conn_id).get_conn()
    except (*postgres_driver_errors(), OSError) as exc:
        raise _fail(conn_id, target, "connecting", exc) from exc


def _publish_locked(
    pg: Any,
    lake: Lake,
    conn_id: str,
    target: str,
    run_id: str | None,
    with_scores: bool,
    settings: Settings,
) -> dict[str, Any]:
    errors = postgres_driver_errors()
    doing = "taking the publish lock"
    try:
        with pg.cursor() as cur:
            # Session lock: held through the lake read, the commit and the watermark record.
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            doing = "creating the tables"
            cur.execute(DDL)
            plan = _plan(lake, conn_id, timedelta(seconds=settings.incident_gap_seconds))
            doing = "writing incidents"
            counts = _write_incidents(cur, plan)
            n_scores = 0
            if with_scores:
                doing = "writing scores"
                n_scores = _write_scores(cur, lake, plan.windows)
        doing = "committing"
        pg.commit()
    except errors as exc:
        try:
            pg.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone
            pass
        raise _fail(conn_id, target, doing, exc) from exc

    if plan.watermark is not None:
        try:
            _record(
                lake, conn_id, run_id, plan.watermark, counts["incidents"], n_scores if with_scores else None
            )
        except Exception as exc:
            raise PublishError(
                f"published to Postgres connection {conn_id!r} ({target}) but could not record it in "
                f"the lake's {registry.PUBLISH_LOG}: {_cause(exc)}; the next publish sends the same "
                "windows again (harmless: publishing is idempotent)"
            ) from exc
    return {
        "conn_id": conn_id,
        "target": target,
        "windows": [w.as_dict() for w in plan.windows],
        "incidents": counts["incidents"],
        "incidents_removed": counts["removed"],
        "explanations": counts["explanations"],
        "scores": n_scores,
        "scores_published": with_scores,
        "previous_watermark": plan.previous.isoformat() if plan.previous else None,
        "watermark": plan.watermark.isoformat() if plan.watermark else None,
    }


def _pages(rows: Sequence[tuple[Any, ...]]) -> Iterator[list[list[Any]]]:
    """Rows in pages of ``PAGE_SIZE``, each page as one list per column."""
    for i in range(0, len(rows), PAGE_SIZE):
        yield [list(col) for col in zip(*rows[i : i + PAGE_SIZE], strict=True)]


def _write_incidents(cur: Any, plan: _Plan) -> dict[str, int]:
    keep = list(plan.incidents)
    removed = 0
    for w in plan.windows:
        cur.execute(_DELETE_STALE_INCIDENTS, (w.source, w.start - plan.gap, w.end + plan.gap, keep))
        removed += max(cur.rowcount, 0)
    if keep:
        cur.execute(_DELETE_EXPLANATIONS, (keep,))  # replaced below: an incident may have fewer ranks now
    rows = [(*r[:9], json.dumps(list(r[9])), *r[10:]) for r in plan.incidents.values()]
    for page in _pages(rows):
        cur.execute(_UPSERT_INCIDENTS, page)
    for page in _pages(plan.explanations):
        cur.execute(_UPSERT_EXPLANATIONS, page)
    return {"incidents": len(rows), "removed": removed, "explanations": len(plan.explanations)}


def _write_scores(cur: Any, lake: Lake, windows: list[Window]) -> int:
    total = 0
    for w in windows:
        cur.execute(_DELETE_SCORES, (w.source, w.start, w.end))
        with lake.connection() as con:
            con.execute(
                f"""
                SELECT source, host, ts, score, is_anomaly, model_version, run_id, scored_at,
                       coalesce(is_alert, is_anomaly) AS is_alert  -- what built the incidents
                FROM {registry.SCORES} WHERE source = ? AND ts >= ? AND ts < ?
                QUALIFY row_number() OVER (PARTITION BY host, ts ORDER BY scored_at DESC) = 1
                """,
                [w.source, w.start, w.end],
            )
            while rows := con.fetchmany(PAGE_SIZE):
                for page in _pages(rows):
                    cur.execute(_UPSERT_SCORES, page)
                total += len(rows)
    return total


# ---------------------------------------------------------------------------------- lake side
def _plan(lake: Lake, conn_id: str, gap: timedelta) -> _Plan:
    """What to publish: windows of score_log rows after the watermark, and the incidents to upsert."""
    previous = last_watermark(conn_id, lake=lake)
    plan = _Plan(previous, gap)
    with lake.connection() as con:
        since = "" if previous is None else " WHERE finished_at > ?"
        params = [] if previous is None else [previous]
        logged = con.execute(
            f"SELECT source, interval_start, interval_end, finished_at FROM {registry.SCORE_LOG}{since}",
            params,
        ).fetchall()
        plan.windows = _merge(logged)
        watermarks = [r[3] for r in logged]
        explained = _has_column(con, registry.INCIDENTS, "explained_at")
        columns = ", ".join((*_INCIDENT_COLUMNS, "explained_at" if explained else "NULL::TIMESTAMPTZ"))
        latest = "QUALIFY row_number() OVER (PARTITION BY incident_id ORDER BY updated_at DESC) = 1"
        for w in plan.windows:
            rows = con.execute(
                f"SELECT {columns} FROM {registry.INCIDENTS} "
                f"WHERE source = ? AND end_ts >= ? AND start_ts < ? {latest}",
                [w.source, w.start - plan.gap, w.end + plan.gap],
            ).fetchall()
            plan.incidents.update((r[0], r) for r in rows)
        # Changed since the watermark outside any window (explained later, recomputed elsewhere).
        changed = "updated_at > $w" + (" OR explained_at > $w" if explained else "")
        rows = con.execute(
            f"SELECT {columns} FROM {registry.INCIDENTS}"
            + ("" if previous is None else f" WHERE {changed}")
            + f" {latest}",
            {} if previous is None else {"w": previous},
        ).fetchall()
        plan.incidents.update((r[0], r) for r in rows)
        for r in rows:
            watermarks.extend(t for t in (r[11], r[12]) if t is not None)
        if plan.incidents:
            plan.explanations = con.execute(
                f"""
                SELECT incident_id, rank, feature, metric, contribution, model_version
                FROM {registry.INCIDENT_EXPLANATIONS} WHERE list_contains(?, incident_id)
                QUALIFY row_number() OVER (PARTITION BY incident_id, rank ORDER BY contribution) = 1
                ORDER BY incident_id, rank
                """,
                [list(plan.incidents)],
            ).fetchall()
    plan.watermark = max(watermarks) if watermarks else None
    if previous is not None and plan.watermark is not None and plan.watermark <= previous:
        plan.watermark = None  # nothing newer than what is recorded
    return plan


def _merge(logged: Sequence[tuple[Any, ...]]) -> list[Window]:
    """Scored intervals merged per source into disjoint windows (overlapping or touching ones join)."""
    by_source: dict[str, list[tuple[datetime, datetime]]] = {}
    for source, start, end, _ in logged:
        by_source.setdefault(source, []).append((start, end))
    windows: list[Window] = []
    for source in sorted(by_source):
        spans = sorted(by_source[source])
        lo, hi = spans[0]
        for start, end in spans[1:]:
            if start <= hi:
                hi = max(hi, end)
                continue
            windows.append(Window(source, lo, hi))
            lo, hi = start, end
        windows.append(Window(source, lo, hi))
    return windows


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_name = ? AND column_name = ?",
            [registry.LAKE_ALIAS, table, column],
        ).fetchone()[0]
    )


def _record(
    lake: Lake, conn_id: str, run_id: str | None, watermark: datetime, incidents: int, scores: int | None
) -> None:
    """One publish_log row per ``what``; a retried write finds its rows and adds none."""
    rows = [("incidents", incidents)] + ([("scores", scores)] if scores is not None else [])

    def work(con: duckdb.DuckDBPyConnection) -> None:
        for what, n in rows:
            con.execute(
                f"""
                INSERT INTO {registry.PUBLISH_LOG} (run_id, conn_id, what, watermark, rows, published_at)
                SELECT ?, ?, ?, ?, ?, now()
                WHERE NOT EXISTS (SELECT 1 FROM {registry.PUBLISH_LOG}
                                  WHERE conn_id = ? AND what = ? AND watermark = ?)
                """,
                [run_id, conn_id, what, watermark, n, conn_id, what, watermark],
            )

    lake.write(work, what=f"record publish to {conn_id}")
