"""Metrics from a PostgreSQL table, read incrementally by interval through an Airflow connection.

Two table layouts are understood::

    long:  ts, host, metric, value          (one row per sample)
    wide:  ts, host, <metric_a>, <metric_b>  (one row per host and time, one column per metric)

Each ``fetch(start, end)`` runs one query ``WHERE (ts >= start AND ts < end) OR ts IS NULL`` with
the bounds sent as bound parameters; table and column names are checked against a strict identifier
pattern and quoted by the driver's ``sql.Identifier``, so neither can smuggle SQL in.
Rows are streamed through a server-side cursor in chunks, so a long interval costs the
memory of the result, not of a driver buffer on top of it.

Rows whose ts is NULL are read with every interval (they belong to none): they come back with
ts ``None`` in an ``object`` ts column, so the ingest quarantines them as ``bad_timestamp``
instead of them vanishing. NULL values:

* long layout: a NULL value is a missing sample and comes back as ``None`` (``object`` value
  column) so the ingest reports ``null_value``; a ``'NaN'`` float or numeric stays NaN;
* wide layout: a NULL cell means the metric was not reported at that time; it is an absent
  sample and gives no row.

``numeric``/integer columns become float64; ``boolean`` stays bool (the ingest rejects it as
``non_numeric``); other types pass through as the driver returns them.

Timestamps: a ``timestamptz`` column is returned as UTC-aware ``datetime64``. A
``timestamp without time zone`` column is passed through *naive*: which zone those
wall-clock values were written in is unknown, and silently calling them UTC could shift
every sample by hours. The ingest step rejects naive timestamps with a clear message;
convert the column (``ALTER TABLE ... TYPE timestamptz USING ts AT TIME ZONE '<zone>'``) or
expose a view that does. For such a column the interval bounds are compared as UTC wall
clock (``start``/``end`` converted to UTC, then made naive), independent of the session's
``TimeZone`` setting.

Example::

    >>> src = PostgresSource("anomaly_metrics_source", "public.metrics")  # doctest: +SKIP
    >>> src.fetch(start, end).columns.tolist()                              # doctest: +SKIP
    ['ts', 'host', 'metric', 'value']
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from anomaly.connections import postgres_driver_errors, redact
from anomaly.sources.base import CANONICAL_COLUMNS, SourceError, empty_frame, plan_layout, require_aware
from anomaly.sources.files import long_value_series, melt_values, missing_ts_as_none

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from anomaly.settings import Settings

Layout = Literal["long", "wide", "auto"]

# Unquoted-style SQL names only: letters, digits, underscore, not starting with a digit, at most
# 63 bytes (PostgreSQL's NAMEDATALEN - 1). Anything else (spaces, quotes, semicolons) is rejected
# before a connection is even opened.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# PostgreSQL type OIDs (pg_type.oid) that matter here; they are stable across versions.
_TIMESTAMP = 1114  # timestamp without time zone
_TIMESTAMPTZ = 1184  # timestamp with time zone
_BOOL = 16  # boolean
_NUMERIC_OIDS = frozenset({20, 21, 23, 26, 700, 701, 1700})  # int8/2/4, oid, float4/8, numeric
# Names for error messages only.
_TYPE_NAMES = {16: "boolean", 20: "bigint", 23: "integer", 25: "text", 701: "double precision",
               1043: "varchar", 1082: "date", 1083: "time", 1700: "numeric"}  # fmt: skip

DEFAULT_CHUNK_ROWS = 50_000


def _check_identifier(value: str, what: str, *, dotted: bool = False) -> tuple[str, ...]:
    """Split and validate an SQL name; ``dotted`` allows ``schema.table``.

    Example::

        >>> _check_identifier("public.metrics", "table", dotted=True)
        ('public', 'metrics')
    """
    parts = (value.split(".") if dotted else [value]) if isinstance(value, str) else []
    if not parts or len(parts) > 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        shape = "name or schema.name" if dotted else "name"
        raise SourceError(
            f"postgres source: invalid {what} {value!r}: expected a plain SQL {shape} matching "
            f"{_IDENTIFIER.pattern} (letters, digits, underscore); refusing to build a query with it"
        )
    return tuple(parts)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {redact(str(exc).strip())}"


def _sql_module(conn: Any) -> ModuleType:
    """``psycopg2.sql`` or ``psycopg.sql``, matching the connection the hook returned.

    The Postgres provider hands out psycopg 3 connections whenever psycopg 3 and SQLAlchemy 2
    are installed, and psycopg2 connections otherwise; each driver only accepts its own
    composed-SQL objects, so the module is picked per connection.
    """
    if type(conn).__module__.split(".")[0] == "psycopg2":
        from psycopg2 import sql
    else:
        from psycopg import sql
    return sql


def _server_cursor(conn: Any, name: str) -> Any:
    """A named (server-side) cursor returning plain tuples.

    Tuples are forced because the Airflow connection's ``cursor`` extra may configure dict or
    namedtuple rows for the whole connection.
    """
    if type(conn).__module__.split(".")[0] == "psycopg2":
        import psycopg2.extensions

        return conn.cursor(name=name, cursor_factory=psycopg2.extensions.cursor)
    from psycopg.rows import tuple_row

    return conn.cursor(name=name, row_factory=tuple_row)


def _plain_utc(value: datetime) -> datetime:
    """An aware bound as a plain ``datetime`` in UTC (pendulum/pandas subclasses adapt unevenly)."""
    u = value.astimezone(UTC)
    return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=UTC)


class PostgresSource:
    """Read ``[start, end)`` from a PostgreSQL table in long or wide layout.

    ``layout="auto"`` picks long when the table has the metric or value column, wide otherwise.
    In wide layout every column except ts and host is a metric unless ``metric_columns`` names
    them (name them when the table has other columns, e.g. an ``id``: a text or id column read
    as a metric would be quarantined row by row). Rows come back ordered by ts, host (and
    metric), so repeated reads of an unchanged table are identical. ``chunk_rows`` rows are
    fetched per round trip from the server-side cursor.

    Example::

        >>> src = PostgresSource("my_pg", "public.node_metrics", layout="wide")  # doctest: +SKIP
        >>> src.fetch(datetime(2025, 1, 1, tzinfo=UTC),
        ...           datetime(2025, 1, 1, 1, tzinfo=UTC))             # doctest: +SKIP
    """

    name = "postgres"

    def __init__(
        self,
        conn_id: str,
        table: str,
        *,
        ts_column: str = "ts",
        layout: Layout = "auto",
        host_column: str = "host",
        metric_column: str = "metric",
        value_column: str = "value",
        metric_columns: Sequence[str] | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        if layout not in ("long", "wide", "auto"):
            raise SourceError(f"postgres source: layout must be 'long', 'wide' or 'auto', got {layout!r}")
        if chunk_rows <= 0:
            raise SourceError(f"postgres source: chunk_rows must be positive, got {chunk_rows}")
        self.conn_id = conn_id
        self.table = table
        self._table_parts = _check_identifier(table, "table", dotted=True)
        for what, column in (
            ("ts column", ts_column),
            ("host column", host_column),
            ("metric column", metric_column),
            ("value column", value_column),
        ):
            _check_identifier(column, what)
        for column in metric_columns or ():
            _check_identifier(column, "metric column")
        self.ts_column = ts_column
        self.layout: Layout = layout
        self.host_column = host_column
        self.metric_column = metric_column
        self.value_column = value_column
        self.metric_columns = tuple(metric_columns) if metric_columns is not None else None
        self.chunk_rows = chunk_rows

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresSource:
        """Build from ``ANOMALY_POSTGRES_*`` settings.

        Example::

            >>> from anomaly.settings import Settings
            >>> PostgresSource.from_settings(Settings()).table
            'metrics'
        """
        return cls(settings.postgres_conn_id, settings.postgres_table, ts_column=settings.postgres_ts_column)

    def __repr__(self) -> str:
        return f"PostgresSource(conn_id={self.conn_id!r}, table={self.table!r}, layout={self.layout!r})"

    # ------------------------------------------------------------------ fetch
    def fetch(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows with ``start <= ts < end`` (and rows whose ts is NULL) in the canonical long layout.

        Example::

            >>> PostgresSource("my_pg", "metrics").fetch(start, end)  # doctest: +SKIP
                                    ts   host    metric  value
            0 2025-01-01 00:00:00+00:00  web-1  cpu_util   0.42
        """
        require_aware(start, end)
        errors = postgres_driver_errors()
        conn = self._connect(errors)
        try:
            return self._fetch(conn, _plain_utc(start), _plain_utc(end), errors)
        finally:
            # Read-only work: closing discards the transaction (and the server-side cursor).
            with contextlib.suppress(Exception):  # a failed close must not hide the real result
                conn.close()

    def _where(self) -> str:
        return f"postgres source (connection {self.conn_id!r}, table {self.table!r})"

    def _connect(self, errors: tuple[type[BaseException], ...]) -> Any:
        from airflow.exceptions import AirflowNotFoundException
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        try:
            return PostgresHook(postgres_conn_id=self.conn_id).get_conn()
        except AirflowNotFoundException as exc:
            raise SourceError(
                f"{self._where()}: Airflow connection {self.conn_id!r} is not defined "
                f"(define it in Airflow or as AIRFLOW_CONN_{self.conn_id.upper()})"
            ) from exc
        except errors as exc:
            raise SourceError(f"{self._where()}: cannot connect: {_describe(exc)}") from exc
        except Exception as exc:  # hook/config failures get the same context
            raise SourceError(f"{self._where()}: cannot open the connection: {_describe(exc)}") from exc

    def _fetch(
        self, conn: Any, start: datetime, end: datetime, errors: tuple[type[BaseException], ...]
    ) -> pd.DataFrame:
        sql = _sql_module(conn)
        table = sql.Identifier(*self._table_parts)
        try:
            with conn.cursor() as cur:
                # Defence in depth: this source never writes. TimeZone UTC makes timestamptz values
                # arrive with one fixed offset, which pandas converts fastest.
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute("SET LOCAL TIME ZONE 'UTC'")
                cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(table))
                columns = {c.name: c.type_code for c in cur.description}
        except errors as exc:
            raise SourceError(f"{self._where()}: cannot read the table: {_describe(exc)}") from exc

        layout, metrics = self._resolve_layout(columns)
        ts_type = columns[self.ts_column]
        if ts_type not in (_TIMESTAMP, _TIMESTAMPTZ):
            raise SourceError(
                f"{self._where()}: ts column {self.ts_column!r} has type "
                f"{_TYPE_NAMES.get(ts_type, f'oid {ts_type}')}; expected timestamptz "
                "(or timestamp without time zone)"
            )
        if ts_type == _TIMESTAMP:
            # Compare naive column values as UTC wall clock; see the module docstring.
            start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)

        if layout == "long":
            selected = [self.ts_column, self.host_column, self.metric_column, self.value_column]
            order = selected[:3]
        else:
            selected = [self.ts_column, self.host_column, *metrics]
            order = selected[:2]
        # NULL ts rows too (sorted last): the ingest quarantines them as bad_timestamp.
        query = sql.SQL(
            "SELECT {cols} FROM {table} WHERE ({ts} >= %(start)s AND {ts} < %(end)s) OR {ts} IS NULL "
            "ORDER BY {order}"
        )
        query = query.format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in selected),
            table=table,
            ts=sql.Identifier(self.ts_column),
            order=sql.SQL(", ").join(sql.Identifier(c) for c in order),
        )
        value_types = [columns[c] for c in selected[2:]] if layout == "wide" else [columns[self.value_column]]

        frames: list[pd.DataFrame] = []
        try:
            # A named cursor is a server-side cursor in both drivers: rows stay on the server
            # until fetched, ``chunk_rows`` at a time.
            with _server_cursor(conn, f"anomaly_{uuid.uuid4().hex}") as cur:
                cur.execute(query, {"start": start, "end": end})
                while rows := cur.fetchmany(self.chunk_rows):
                    if layout == "long":
                        frames.append(_long_chunk(rows, ts_type, value_types[0]))
                    else:
                        frames.append(_wide_chunk(rows, ts_type, metrics, value_types))
        except errors as exc:
            raise SourceError(f"{self._where()}: query failed: {_describe(exc)}") from exc

        if not frames:
            return empty_frame()
        import pandas as pd

        frame = pd.concat(frames, ignore_index=True)
        frame["ts"] = missing_ts_as_none(frame["ts"])  # NULL ts -> None, for the ingest's bad_timestamp
        return frame

    def _resolve_layout(self, columns: dict[str, int]) -> tuple[Literal["long", "wide"], list[str]]:
        """Decide the layout from the table's columns and check the required ones exist."""
        layout, _, metrics = plan_layout(
            list(columns),
            layout=self.layout,
            ts_column=self.ts_column,
            host_column=self.host_column,
            metric_column=self.metric_column,
            value_column=self.value_column,
            metric_columns=self.metric_columns,
            where=self._where(),
            container="table",
        )
        return layout, metrics  # type: ignore[return-value]


# ---------------------------------------------------------------------- chunk -> frame
def _ts_array(values: Sequence[Any], ts_type: int) -> pd.Series:
    import pandas as pd

    # PostgreSQL stores microseconds: the "us" unit is exact, and pandas 2 would default to "ns".
    # NULL becomes NaT here and None after the concat in ``_fetch``.
    if ts_type == _TIMESTAMPTZ:
        return pd.Series(pd.to_datetime(list(values), utc=True)).dt.as_unit("us")
    # timestamp without time zone: naive datetimes, passed through naive (never assumed UTC).
    return pd.Series(pd.DatetimeIndex(list(values))).dt.as_unit("us")


def _value_array(values: Sequence[Any], type_code: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, missing)``: numbers as float64 (NULL as NaN, flagged missing), bool as bool, else objects."""
    import numpy as np

    missing = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    if type_code in _NUMERIC_OIDS:
        # Decimal/int -> float64 is a translation; NaN stays NaN, NULL is told apart by ``missing``.
        return np.asarray(values, dtype=np.float64), missing
    if type_code == _BOOL:
        return np.fromiter((bool(v) for v in values), dtype=bool, count=len(values)), missing
    # Text or other types pass through as they came so the ingest can quarantine them.
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out, missing


def _long_chunk(rows: list[tuple[Any, ...]], ts_type: int, value_type: int) -> pd.DataFrame:
    import pandas as pd

    ts, host, metric, value = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "ts": _ts_array(ts, ts_type),
            "host": pd.Series(host, dtype=object),
            "metric": pd.Series(metric, dtype=object),
            "value": long_value_series(*_value_array(value, value_type)),
        },
        columns=list(CANONICAL_COLUMNS),
    )


def _wide_chunk(
    rows: list[tuple[Any, ...]], ts_type: int, metrics: list[str], value_types: list[int]
) -> pd.DataFrame:
    """Melt a wide chunk; NULL cells are absent samples and give no row."""
    import numpy as np
    import pandas as pd

    columns = list(zip(*rows, strict=True))
    n, k = len(rows), len(metrics)
    values, keep = melt_values(
        [_value_array(col, t) for col, t in zip(columns[2:], value_types, strict=True)]
    )
    host = np.empty(n, dtype=object)
    host[:] = list(columns[1])
    ts = _ts_array(columns[0], ts_type)
    return pd.DataFrame(
        {
            "ts": ts.repeat(k)[keep].reset_index(drop=True),
            "host": pd.Series(np.repeat(host, k)[keep], dtype=object),
            "metric": pd.Series(np.tile(np.array(metrics, dtype=object), n)[keep], dtype=object),
            "value": pd.Series(values[keep], dtype=values.dtype),
        },
        columns=list(CANONICAL_COLUMNS),
    )
