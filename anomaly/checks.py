"""Row checks: each marks rows with a reason code and splits a batch into accepted rows and
rejected rows (kept for ``quarantine`` with their raw text).

Two tiers. :func:`parse_batch` runs at load: rows whose timestamp, key or value cannot be typed
are rejected there (they cannot be staged). The staged batch then meets the ``raw_metrics``
Great Expectations suite (:mod:`anomaly.validation`), which decides for the batch as a whole;
when it passes, :func:`screen_rows` holds back the few rows that are individually wrong (NaN,
infinity, outside the interval, out of range, conflicting duplicates) and the rest load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# reason code -> sentence template for people
REASONS: dict[str, str] = {
    "missing_column": "the batch lacks required column(s)",
    "naive_timestamp": "timestamp has no time zone; give an offset (e.g. 'Z') or convert to UTC",
    "bad_timestamp": "timestamp does not parse",
    "missing_key": "host or metric is empty",
    "bad_key": "host or metric is not text",
    "outside_interval": "timestamp is outside the data interval",
    "null_value": "value is missing",
    "non_numeric": "value is not a number",
    "nan_value": "value is NaN",
    "infinite_value": "value is infinite",
    "unknown_metric": "metric is not in metric_catalog (add it there to accept it)",
    "duplicate": "(host, metric, ts) appears more than once in the batch with different values",
    "out_of_range": "value outside the range of its metric kind",
    "duplicate_copy": "identical copy of another row of the batch (first copy loaded)",
    "source_conflict": "(host, metric, ts) is already loaded from another source",
    "batch_rejected": "row passed its checks, but the batch was rejected as a whole",
    "validation_failed": "the batch failed a critical expectation of its suite; see quarantine_batches",
    "staging_abandoned": "staged over a day ago and never validated (its run stopped before validate_raw)",
}

REQUIRED = ("ts", "host", "metric", "value")

# reasons of the parse tier (decided at load, before staging); the others are decided at release
PARSE_REASONS = (
    "missing_column",
    "naive_timestamp",
    "bad_timestamp",
    "missing_key",
    "bad_key",
    "null_value",
    "non_numeric",
    "duplicate_copy",
)


@dataclass
class CheckResult:
    """Accepted rows (canonical dtypes) and rejected rows (with reason, detail and raw text)."""

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    total: int
    counts: dict[str, int] = field(default_factory=dict)

    def copy(self) -> CheckResult:
        """An independent copy (a retried transaction must start from the same result)."""
        return CheckResult(self.accepted.copy(), self.rejected.copy(), self.total, dict(self.counts))

    @property
    def reject_share(self) -> float:
        """Share of the batch that is lost: identical copies of a loaded row do not count."""
        lost = len(self.rejected) - self.counts.get("duplicate_copy", 0)
        return lost / self.total if self.total else 0.0

    def summary(self, examples: int = 1) -> str:
        """'nan_value: 3 (e.g. host=a metric=cpu_util ts=... value=nan); ...'"""
        parts = []
        for reason, n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            sample = self.rejected[self.rejected["reason"] == reason].head(examples)
            eg = "; ".join(
                f"host={r.host} metric={r.metric} ts={r.ts_raw} value={r.value_raw!r}"
                for r in sample.itertuples()
            )
            parts.append(f"{reason}: {n} ({REASONS.get(reason, reason)}; e.g. {eg})")
        return "; ".join(parts)


def _as_text(series: pd.Series) -> pd.Series:
    import pandas as pd

    out = series.astype("object").map(lambda v: None if v is None or v is pd.NaT else str(v))
    return out.astype("object")


def _parse_ts(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """UTC timestamps and a reason per row ('' when fine) for a column of any dtype."""
    import numpy as np
    import pandas as pd

    n = len(raw)
    reason = pd.Series(np.full(n, "", dtype=object), index=raw.index)
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        reason[raw.isna().to_numpy()] = "bad_timestamp"
        return raw.dt.tz_convert("UTC").astype("datetime64[us, UTC]"), reason
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        reason[:] = "naive_timestamp"
        reason[raw.isna().to_numpy()] = "bad_timestamp"
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]"), reason
    # object column: datetimes, Timestamps or strings, possibly mixed; judge each element
    parsed: list[object] = []
    for i, value in enumerate(raw.tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
            parsed.append(pd.NaT)
            reason.iat[i] = "bad_timestamp"
            continue
        try:
            ts = pd.Timestamp(value)
            if ts is not pd.NaT:
                ts = ts.as_unit("us")
        except (ValueError, TypeError, OverflowError):  # OutOfBoundsDatetime is a ValueError
            parsed.append(pd.NaT)
            reason.iat[i] = "bad_timestamp"
            continue
        if ts is pd.NaT:
            parsed.append(pd.NaT)
            reason.iat[i] = "bad_timestamp"
        elif ts.tzinfo is None:
            parsed.append(pd.NaT)
            reason.iat[i] = "naive_timestamp"
        else:
            parsed.append(ts.tz_convert("UTC"))
    # microseconds, not pandas' default nanoseconds: year 3026 is a timestamp (outside any interval
    # we load), not an overflow
    micros = np.array(
        [np.iinfo(np.int64).min if ts is pd.NaT else int(ts.as_unit("us").asm8.view("i8")) for ts in parsed],
        dtype=np.int64,
    )
    out = pd.Series(micros.view("datetime64[us]"), index=raw.index).dt.tz_localize("UTC")
    return out, reason


def _parse_value(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    import numpy as np
    import pandas as pd

    reason = pd.Series(np.full(len(raw), "", dtype=object), index=raw.index)
    if pd.api.types.is_bool_dtype(raw.dtype):
        reason[:] = "non_numeric"
        return pd.Series(np.nan, index=raw.index, dtype="float64"), reason
    if pd.api.types.is_numeric_dtype(raw.dtype):
        # numpy floats cannot tell a null from NaN (both NaN); pandas' nullable dtypes can (pd.NA)
        nullable = isinstance(raw.dtype, pd.api.extensions.ExtensionDtype)
        if nullable or not pd.api.types.is_float_dtype(raw.dtype):
            missing = raw.isna().to_numpy()
        else:
            missing = np.zeros(len(raw), bool)
        if nullable:
            values = pd.Series(
                raw.astype("Float64").to_numpy(dtype="float64", na_value=np.nan),
                index=raw.index,
                dtype="float64",
            )
        else:
            values = raw.astype("float64")
    else:
        # bool and complex are not metric values even where Python would cast them to float
        odd = raw.map(lambda v: isinstance(v, (bool, complex, np.bool_, np.complexfloating))).astype(bool)
        values = pd.to_numeric(raw.where(~odd, None), errors="coerce").astype("float64")
        # In an object column a float NaN is a value ('NaN'), only None/NA/NaT mean "no value".
        is_missing = raw.map(lambda v: v is None or v is pd.NA or v is pd.NaT).astype(bool)
        text = raw.astype("object").map(lambda v: str(v).strip().lower() if v is not None else "")
        # 'nan' / 'inf' spelled out are numbers that fail later checks, not garbage
        numeric_words = text.isin(["nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "-infinity"])
        bad_text = (values.isna() & ~is_missing & ~numeric_words) | odd
        reason[bad_text.to_numpy()] = "non_numeric"
        missing = is_missing.to_numpy()
    arr = values.to_numpy()
    ok = reason.to_numpy() == ""
    reason[ok & missing] = "null_value"
    reason[ok & ~missing & np.isnan(arr)] = "nan_value"
    reason[ok & np.isinf(arr)] = "infinite_value"
    return values, reason


def check_batch(
    batch: pd.DataFrame, start: datetime, end: datetime, kinds: dict[str, str] | set[str] | None
) -> CheckResult:
    """:func:`parse_batch` then :func:`screen_rows`: every row check at once (sources' own tests).

    Example::

        >>> res = check_batch(frame, start, end, {"cpu_util": "ratio"})   # doctest: +SKIP
        >>> res.counts                                                     # doctest: +SKIP
        {'nan_value': 2}
    """
    import pandas as pd

    parsed = parse_batch(batch)
    screened = screen_rows(parsed.accepted, start, end, kinds if isinstance(kinds, dict) else None)
    counts = dict(parsed.counts)
    for reason, n in screened.counts.items():
        counts[reason] = counts.get(reason, 0) + n
    if known := (set(kinds) if kinds is not None else None):
        # unknown metrics are loaded (the suite warns); sources' tests still ask about them here
        unknown = ~screened.accepted["metric"].isin(sorted(known))
        if unknown.any():
            moved = screened.accepted.loc[unknown]
            extra = as_rejected(moved, "unknown_metric")
            screened.accepted = screened.accepted.loc[~unknown].reset_index(drop=True)
            screened.rejected = pd.concat([screened.rejected, extra], ignore_index=True)
            counts["unknown_metric"] = int(unknown.sum())
    rejected = pd.concat([parsed.rejected, screened.rejected], ignore_index=True)
    return CheckResult(screened.accepted, rejected, parsed.total, counts)


def parse_batch(batch: pd.DataFrame) -> CheckResult:
    """Type a source batch: rows that cannot become (ts UTC, host, metric, float value) are rejected.

    The parse tier runs at load time: a row whose timestamp, key or value does not parse cannot be
    staged at all. Identical copies of a row are loaded once (``duplicate_copy``). Everything a
    parsed row can still be wrong about (NaN, infinity, outside the interval, conflicting
    duplicates, out of range) is judged on the staged batch by the ``raw_metrics`` suite and, row
    by row, by :func:`screen_rows` when the batch is released.
    """
    import numpy as np
    import pandas as pd

    total = len(batch)
    missing_cols = [c for c in REQUIRED if c not in batch.columns]
    if missing_cols:
        rejected = pd.DataFrame(
            {
                "ts": pd.Series(pd.NaT, index=batch.index, dtype="datetime64[us, UTC]"),
                "ts_raw": _as_text(batch["ts"]) if "ts" in batch else None,
                "host": batch["host"].astype("object") if "host" in batch else None,
                "metric": batch["metric"].astype("object") if "metric" in batch else None,
                "value": np.nan,
                "value_raw": _as_text(batch["value"]) if "value" in batch else None,
                "reason": "missing_column",
                "detail": f"missing column(s) {', '.join(missing_cols)}; have {', '.join(map(str, batch.columns))}",
            }
        )
        return CheckResult(_empty_accepted(), rejected, total, {"missing_column": total})

    batch = batch.reset_index(drop=True)
    ts, ts_reason = _parse_ts(batch["ts"])
    value, value_reason = _parse_value(batch["value"])
    raw_host = batch["host"].astype("object")
    raw_metric = batch["metric"].astype("object")

    # keys are text: 1 and '1' must not become two hosts after a cast, ' a' and 'a' not two either
    def _text_or_missing(v: object) -> bool:
        return isinstance(v, str) or v is None or v is pd.NA

    not_text = ~(raw_host.map(_text_or_missing).astype(bool) & raw_metric.map(_text_or_missing).astype(bool))
    host = raw_host.map(lambda v: v.strip() if isinstance(v, str) else v)
    metric = raw_metric.map(lambda v: v.strip() if isinstance(v, str) else v)

    reason = ts_reason.copy()
    reason[(reason == "") & not_text] = "bad_key"
    empty_key = host.isna() | metric.isna() | (host.astype(str) == "") | (metric.astype(str) == "")
    reason[(reason == "") & empty_key] = "missing_key"
    # NaN and infinity parse (they are numbers); the suite judges them on the staged batch
    parse_only = value_reason.isin(["non_numeric", "null_value"])
    reason[(reason == "") & parse_only] = value_reason

    frame = pd.DataFrame({"ts": ts, "host": host, "metric": metric, "value": value})
    ok = reason == ""
    copies = frame.loc[ok].duplicated(keep="first")
    reason[copies[copies].index] = "duplicate_copy"
    return _split(batch, frame, reason, total)


def screen_rows(
    frame: pd.DataFrame, start: datetime, end: datetime, kinds: dict[str, str] | None
) -> CheckResult:
    """Judge parsed rows one by one: NaN, infinity, outside ``[start, end)``, out of the range of
    the metric's kind (``kinds``: metric -> kind), conflicting duplicates (all copies held back).

    Runs when a staged batch that passed its suite is released: the few rows that fail go to
    quarantine with their reason, the rest load.
    """
    import numpy as np
    import pandas as pd

    frame = frame.reset_index(drop=True)
    n = len(frame)
    reason = pd.Series(np.full(n, "", dtype=object), index=frame.index)
    ts, value = frame["ts"], frame["value"].to_numpy(dtype="float64")
    start_ts, end_ts = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    reason[((ts < start_ts) | (ts >= end_ts)).to_numpy()] = "outside_interval"
    reason[(reason == "") & np.isnan(value)] = "nan_value"
    reason[(reason == "") & np.isinf(value)] = "infinite_value"
    if kinds:
        kind = frame["metric"].map(kinds).to_numpy()
        low = np.select([np.isin(kind, list(KIND_RANGES))], [0.0], default=-np.inf)
        high = np.where(kind == "ratio", 1.0, np.where(kind == "percent", 100.0, np.inf))
        reason[(reason == "") & ((value < low) | (value > high))] = "out_of_range"
    ok = reason == ""
    dup = frame.loc[ok, ["host", "metric", "ts"]].duplicated(keep=False)
    reason[dup[dup].index] = "duplicate"
    result = _split(frame, frame, reason, n)
    outside = result.rejected["reason"] == "outside_interval"
    result.rejected.loc[outside, "detail"] = (
        f"timestamp is outside the data interval [{start_ts.isoformat()}, {end_ts.isoformat()})"
    )
    if kinds and "out_of_range" in result.counts:
        bad = result.rejected["reason"] == "out_of_range"
        result.rejected.loc[bad, "detail"] = [
            f"{kinds[m]} value outside {KIND_RANGES[kinds[m]]}" for m in result.rejected.loc[bad, "metric"]
        ]
    return result


# kind -> the range its values must lie in (the suite and screen_rows share it)
KIND_RANGES: dict[str, str] = {
    "ratio": "[0, 1]",
    "percent": "[0, 100]",
    "counter": "[0, inf)",
    "bytes": "[0, inf)",
    "rate": "[0, inf)",
}


def _split(batch: pd.DataFrame, frame: pd.DataFrame, reason: pd.Series, total: int) -> CheckResult:
    """Accepted canonical rows and rejected rows (raw text kept) from a reason per row."""
    import numpy as np
    import pandas as pd

    bad = reason != ""
    accepted = frame.loc[~bad].reset_index(drop=True)
    rejected = pd.DataFrame(
        {
            "ts": frame["ts"][bad],
            "ts_raw": _as_text(batch["ts"][bad]),
            "host": frame["host"][bad].map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            ),
            "metric": frame["metric"][bad].map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            ),
            "value": frame["value"][bad],
            "value_raw": _as_text(batch["value"][bad]),
            "reason": reason[bad].astype(str),
        }
    )
    rejected["detail"] = rejected["reason"].map(REASONS)
    counts = rejected["reason"].value_counts().to_dict()
    return CheckResult(
        accepted, rejected.reset_index(drop=True), total, {str(k): int(v) for k, v in counts.items()}
    )


def as_rejected(rows: pd.DataFrame, reason: str, detail: str | list[str] | None = None) -> pd.DataFrame:
    """Canonical rows in the quarantine layout with a reason (and the reason's sentence by default)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "ts": rows["ts"],
            "ts_raw": rows["ts"].astype(str),
            "host": rows["host"],
            "metric": rows["metric"],
            "value": rows["value"],
            "value_raw": rows["value"].astype(str),
            "reason": reason,
            "detail": REASONS[reason] if detail is None else detail,
        }
    ).reset_index(drop=True)


def _empty_accepted() -> pd.DataFrame:
    from anomaly.sources.base import empty_frame

    return empty_frame()
