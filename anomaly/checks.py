"""Row checks every batch passes before it reaches ``raw_metrics``.

Each check marks rows with a reason code; :func:`check_batch` splits a raw
source batch into accepted canonical rows and rejected rows (kept for
``quarantine`` with their raw text). Great Expectations suites (validation
issue) run on top of these; these checks are the floor that makes the
unique key and the types of ``raw_metrics`` hold.
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
    "duplicate_copy": "identical copy of another row of the batch (first copy loaded)",
    "source_conflict": "(host, metric, ts) is already loaded from another source",
    "batch_rejected": "row passed its checks, but the batch was rejected as a whole",
}

REQUIRED = ("ts", "host", "metric", "value")


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
    batch: pd.DataFrame, start: datetime, end: datetime, known_metrics: set[str] | None
) -> CheckResult:
    """Split ``batch`` into accepted canonical rows and rejected rows with reasons.

    Example::

        >>> res = check_batch(frame, start, end, {"cpu_util"})   # doctest: +SKIP
        >>> res.counts                                           # doctest: +SKIP
        {'nan_value': 2}
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
    start_ts, end_ts = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    outside = (reason == "") & ((ts < start_ts) | (ts >= end_ts)).fillna(False)
    reason[outside] = "outside_interval"
    reason[(reason == "") & (value_reason != "")] = value_reason
    if known_metrics is not None:
        unknown = (reason == "") & ~metric.isin(sorted(known_metrics))
        reason[unknown] = "unknown_metric"

    # duplicates among rows that are otherwise fine: identical copies keep one, conflicts keep none
    frame = pd.DataFrame({"ts": ts, "host": host, "metric": metric, "value": value})
    ok = reason == ""
    keys = frame.loc[ok, ["host", "metric", "ts"]]
    dup_any = keys.duplicated(keep=False)
    if dup_any.any():
        sub = frame.loc[ok].loc[dup_any]
        nvalues = sub.groupby(["host", "metric", "ts"])["value"].transform("nunique")
        conflicting = sub.index[nvalues.to_numpy() > 1]
        reason[conflicting] = "duplicate"
        still_ok = reason == ""
        copies = frame.loc[still_ok, ["host", "metric", "ts"]].duplicated(keep="first")
        reason[copies[copies].index] = "duplicate_copy"

    bad = reason != ""
    accepted = frame.loc[~bad].reset_index(drop=True)
    rejected = pd.DataFrame(
        {
            "ts": ts[bad],
            "ts_raw": _as_text(batch["ts"][bad]),
            "host": host[bad].map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            ),
            "metric": metric[bad].map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            ),
            "value": value[bad],
            "value_raw": _as_text(batch["value"][bad]),
            "reason": reason[bad].astype(str),
        }
    )
    rejected["detail"] = rejected["reason"].map(REASONS)
    window = f"[{start_ts.isoformat()}, {end_ts.isoformat()})"
    rejected.loc[rejected["reason"] == "outside_interval", "detail"] = (
        f"timestamp is outside the data interval {window}"
    )
    counts = rejected["reason"].value_counts().to_dict()
    return CheckResult(
        accepted, rejected.reset_index(drop=True), total, {str(k): int(v) for k, v in counts.items()}
    )


def _empty_accepted() -> pd.DataFrame:
    from anomaly.sources.base import empty_frame

    return empty_frame()
