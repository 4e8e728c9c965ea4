"""The one interface every metric source implements.

A source turns ``[start, end)`` into rows of the canonical long layout::

    ts (timezone-aware UTC), host (str), metric (str), value (float)

Sources translate, they do not judge: a value that will not parse as a number,
a naive timestamp or a duplicate is passed through as it came, so that the
ingest checks can quarantine it with a reason instead of it vanishing here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

CANONICAL_COLUMNS: tuple[str, ...] = ("ts", "host", "metric", "value")


class SourceError(RuntimeError):
    """A source could not deliver the interval; the message says what and where."""


@runtime_checkable
class Source(Protocol):
    """``fetch(start, end)`` returns the interval's rows in the canonical layout."""

    name: str

    def fetch(self, start: datetime, end: datetime) -> pd.DataFrame: ...


def empty_frame() -> pd.DataFrame:
    """An empty canonical frame with the right dtypes."""
    import pandas as pd

    return pd.DataFrame(
        {
            "ts": pd.Series([], dtype="datetime64[us, UTC]"),
            "host": pd.Series([], dtype="object"),
            "metric": pd.Series([], dtype="object"),
            "value": pd.Series([], dtype="float64"),
        }
    )


def require_aware(start: datetime, end: datetime) -> None:
    """Reject naive or inverted interval bounds with a clear message."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"interval bounds must be timezone-aware, got start={start!r} end={end!r}")
    if end <= start:
        raise ValueError(f"empty or inverted interval: start={start.isoformat()} end={end.isoformat()}")


def to_utc(ts: datetime) -> datetime:
    """A plain ``datetime`` in UTC (Airflow hands out pendulum objects, whose arithmetic differs)."""

    if ts.tzinfo is None:
        raise ValueError(f"timestamp must be timezone-aware, got {ts!r}")
    utc = ts.astimezone(UTC)
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC
    )


def plan_layout(
    columns: Sequence[str],
    *,
    layout: str,
    ts_column: str,
    host_column: str,
    metric_column: str,
    value_column: str,
    metric_columns: Sequence[str] | None,
    where: str,
    container: str,
    not_a_metric: Callable[[str], bool] = lambda c: False,
) -> tuple[str, list[str], list[str]]:
    """Long or wide layout of a file or table: ``(layout, columns to read, metric columns)``.

    ``auto`` means long when a metric or value column exists, else wide (every other column,
    or ``metric_columns``, is a metric). Missing columns raise :class:`SourceError` naming
    ``where`` and the columns the ``container`` (file, table) has.

    Example::

        >>> plan_layout(["ts", "host", "cpu"], layout="auto", ts_column="ts", host_column="host",
        ...             metric_column="metric", value_column="value", metric_columns=None,
        ...             where="x.csv", container="file")
        ('wide', ['ts', 'host', 'cpu'], ['cpu'])
    """
    present = set(columns)
    chosen = layout
    if chosen == "auto":
        chosen = "long" if metric_column in present or value_column in present else "wide"
    fixed = [ts_column, host_column]
    if chosen == "long":
        metrics: list[str] = []
        needed = [*fixed, metric_column, value_column]
    else:
        metrics = (
            list(metric_columns)
            if metric_columns
            else [c for c in columns if c not in fixed and c and not not_a_metric(c)]
        )
        needed = [*fixed, *metrics]
    missing = [c for c in needed if c not in present]
    how = "configured" if layout != "auto" else "detected"
    have = ", ".join(columns) or "(none)"
    if missing:
        raise SourceError(
            f"{where}: missing column(s) {', '.join(missing)} for the {chosen} layout ({how}); "
            f"the {container} has columns: {have}"
        )
    if chosen == "wide" and not metrics:
        raise SourceError(
            f"{where}: wide layout ({how}) needs at least one metric column besides {ts_column} and "
            f"{host_column}; the {container} has columns: {have}"
        )
    return chosen, needed, metrics
