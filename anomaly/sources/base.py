"""The one interface every metric source implements.

A source turns ``[start, end)`` into rows of the canonical long layout::

    ts (timezone-aware UTC), host (str), metric (str), value (float)

Sources translate, they do not judge: a value that will not parse as a number,
a naive timestamp or a duplicate is passed through as it came, so that the
ingest checks can quarantine it with a reason instead of it vanishing here.
"""

from __future__ import annotations

from datetime import datetime
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
    from datetime import timezone

    if ts.tzinfo is None:
        raise ValueError(f"timestamp must be timezone-aware, got {ts!r}")
    utc = ts.astimezone(timezone.utc)
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
                    tzinfo=timezone.utc)
