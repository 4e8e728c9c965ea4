"""The validation suites as code: which expectations each batch meets, and how bad a failure is.

A suite is a list of :class:`Check`: a stable name (``raw.value_not_nan``), the Great
Expectations 1.x expectation class and its arguments, a severity and a sentence for people.
Building the list needs no Great Expectations import (DAG files may import this module); the
engine (:mod:`anomaly.validation.engine`) turns it into a GE suite when a task validates.

Severities: ``critical`` fails the task and quarantines the batch; ``warning`` is recorded and the
run goes on. ``ANOMALY_VALIDATION_SEVERITY`` overrides them by name
(``raw.completeness=critical,raw.known_hosts=warning``).

Suites and the batch each one validates:

* ``raw_metrics``: the staged interval of a source (one row per host, metric, ts).
* ``raw_completeness``: one row per host of that batch (and per host the source reported in the
  day before, so a host that went silent shows up with 0 samples).
* ``features``: one row per feature column of the interval's ``features`` rows (a column
  profile computed in SQL: non-finite values, nulls after warm-up, min and max, count excess).
* ``scores``: the rows a scoring run is about to write (host, ts, score, is_anomaly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)

RAW = "raw_metrics"
COMPLETENESS = "raw_completeness"
FEATURES = "features"
SCORES = "scores"

# Largest finite float: "between -MAX and MAX" is "finite" (GE leaves NaN to the null checks).
MAX_FLOAT = 1.7976931348623157e308

# Kinds of metric_catalog and the range their values must lie in (None: unbounded on that side).
KIND_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "ratio": (0.0, 1.0),
    "percent": (0.0, 100.0),
    "counter": (0.0, None),
    "bytes": (0.0, None),
    "rate": (0.0, None),
}


class SuiteConfigError(ValueError):
    """A severity override names an expectation that does not exist or a severity that does not."""


@dataclass(frozen=True)
class Check:
    """One expectation of a suite."""

    name: str
    expectation: str  # class name under great_expectations.expectations
    kwargs: dict[str, Any]  # its arguments; "where": {column: value or list} becomes a row condition
    severity: str
    description: str
    column: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise SuiteConfigError(
                f"{self.name}: severity must be one of {SEVERITIES}, not {self.severity!r}"
            )


def _col(name: str, expectation: str, column: str, severity: str, description: str, **kwargs: Any) -> Check:
    return Check(name, expectation, {"column": column, **kwargs}, severity, description, column)


def raw_suite(
    start: datetime,
    end: datetime,
    kinds: dict[str, str],
    known_hosts: Iterable[str],
    tolerance: float,
) -> list[Check]:
    """Expectations of a staged raw batch ``[start, end)``.

    ``kinds`` is metric_catalog (metric -> kind); ``known_hosts`` the hosts table;
    ``tolerance`` the share of rows that may individually fail a row-level expectation before
    the batch fails (``ANOMALY_MAX_REJECT_SHARE``): under it, those rows are quarantined one by
    one when the batch is released and the rest load.
    """
    mostly = 1.0 - tolerance
    row = {"mostly": mostly} if tolerance > 0 else {}
    checks = [
        Check(
            "raw.columns",
            "ExpectTableColumnsToMatchSet",
            {"column_set": ["ts", "host", "metric", "value"], "exact_match": True},
            CRITICAL,
            "the batch has exactly the columns ts, host, metric, value",
        ),
        _col(
            "raw.ts_type",
            "ExpectColumnValuesToBeOfType",
            "ts",
            CRITICAL,
            "ts is a timestamp with a time zone",
            type_="Timestamp",
        ),
        # the engine checks "str" on a column it dictionary-encoded as "CategoricalDtypeType": it
        # encodes a column only when every value is a string
        _col("raw.host_type", "ExpectColumnValuesToBeOfType", "host", CRITICAL, "host is text", type_="str"),
        _col(
            "raw.metric_type",
            "ExpectColumnValuesToBeOfType",
            "metric",
            CRITICAL,
            "metric is text",
            type_="str",
        ),
        _col(
            "raw.value_type",
            "ExpectColumnValuesToBeOfType",
            "value",
            CRITICAL,
            "value is a float",
            type_="float64",
        ),
        _col("raw.ts_not_null", "ExpectColumnValuesToNotBeNull", "ts", CRITICAL, "every row has a timestamp"),
        _col(
            "raw.host_not_null", "ExpectColumnValuesToNotBeNull", "host", CRITICAL, "every row names its host"
        ),
        _col(
            "raw.metric_not_null",
            "ExpectColumnValuesToNotBeNull",
            "metric",
            CRITICAL,
            "every row names its metric",
        ),
        _col(
            "raw.value_not_nan", "ExpectColumnValuesToNotBeNull", "value", CRITICAL, "value is not NaN", **row
        ),
        _col(
            "raw.value_finite",
            "ExpectColumnValuesToBeBetween",
            "value",
            CRITICAL,
            "value is finite (not infinity)",
            min_value=-MAX_FLOAT,
            max_value=MAX_FLOAT,
            **row,
        ),
        _col(
            "raw.ts_in_interval",
            "ExpectColumnValuesToBeBetween",
            "ts",
            CRITICAL,
            "timestamps lie inside the data interval [start, end)",
            min_value=start,
            max_value=end,
            strict_max=True,
            **row,
        ),
        Check(
            "raw.key_unique",
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["host", "metric", "ts"], **row},
            CRITICAL,
            "(host, metric, ts) is unique",
        ),
    ]
    by_kind: dict[str, list[str]] = {}
    for metric, kind in sorted(kinds.items()):
        by_kind.setdefault(kind, []).append(metric)
    for kind, (low, high) in KIND_BOUNDS.items():
        metrics = by_kind.get(kind)
        if not metrics:
            continue
        bounds = {"min_value": low, **({"max_value": high} if high is not None else {})}
        shown = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        checks.append(
            _col(
                f"raw.range_{kind}",
                "ExpectColumnValuesToBeBetween",
                "value",
                CRITICAL,
                f"{kind} metrics ({', '.join(metrics)}) are {shown}",
                where={"metric": metrics},
                **bounds,
                **row,
            )
        )
    checks += [
        _col(
            "raw.known_metrics",
            "ExpectColumnValuesToBeInSet",
            "metric",
            WARNING,
            "metrics are in metric_catalog (others load, but no feature uses them)",
            value_set=sorted(kinds),
        ),
        _col(
            "raw.known_hosts",
            "ExpectColumnValuesToBeInSet",
            "host",
            WARNING,
            "hosts were seen before (a new host is worth a look, not an error)",
            value_set=sorted(known_hosts),
        ),
    ]
    return checks


def completeness_suite(min_share: float) -> list[Check]:
    """Expectations of the per-host summary of a raw batch (columns host, observed, expected, share).

    Warning by default: a host that stops reporting is what the detector must see, and failing
    the whole fleet's interval for it would hide everyone else's data.
    """
    return [
        _col(
            "raw.completeness",
            "ExpectColumnValuesToBeBetween",
            "share",
            WARNING,
            f"each host delivers at least {min_share:.0%} of its expected samples (interval / step per metric)",
            min_value=min_share,
        ),
    ]


def features_suite(null_share: float) -> list[Check]:
    """Expectations of the column profile of an interval's features (one row per feature column)."""
    return [
        _col(
            "features.finite",
            "ExpectColumnValuesToBeBetween",
            "nonfinite",
            CRITICAL,
            "no feature value is NaN or infinite (missing is NULL)",
            min_value=0,
            max_value=0,
        ),
        _col(
            "features.null_share",
            "ExpectColumnValuesToBeBetween",
            "null_share",
            WARNING,
            f"after its window or lag has warmed up, a rolling, trend or seasonal feature is null in at "
            f"most {null_share:.0%} of rows (deviation, correlation and std-ratio features are null by "
            "design on a constant metric, so they are not judged)",
            max_value=null_share,
            where={"family": ["rolling", "trend", "seasonality"], "kind": ["value", "count"]},
        ),
        _col(
            "features.correlation_min",
            "ExpectColumnValuesToBeBetween",
            "min",
            CRITICAL,
            "correlations are >= -1",
            min_value=-1.0,
            where={"family": "cross", "kind": "corr"},
        ),
        _col(
            "features.correlation_max",
            "ExpectColumnValuesToBeBetween",
            "max",
            CRITICAL,
            "correlations are <= 1",
            max_value=1.0,
            where={"family": "cross", "kind": "corr"},
        ),
        _col(
            "features.count_step",
            "ExpectColumnValuesToBeBetween",
            "count_excess",
            WARNING,
            "sample counts are at most window / step + 1 (one extra for scrape jitter; more means a "
            "finer step than configured)",
            max_value=0,
        ),
        _col(
            "features.count_non_negative",
            "ExpectColumnValuesToBeBetween",
            "min",
            CRITICAL,
            "sample counts are >= 0",
            min_value=0,
            where={"kind": "count"},
        ),
    ]


def scores_suite() -> list[Check]:
    """Expectations of a batch of scores (host, ts, score, is_anomaly)."""
    return [
        Check(
            "scores.columns",
            "ExpectTableColumnsToMatchSet",
            {"column_set": ["host", "ts", "score", "is_anomaly"], "exact_match": False},
            CRITICAL,
            "the batch has host, ts, score and is_anomaly",
        ),
        _col(
            "scores.host_not_null",
            "ExpectColumnValuesToNotBeNull",
            "host",
            CRITICAL,
            "every score names its host",
        ),
        _col(
            "scores.ts_not_null",
            "ExpectColumnValuesToNotBeNull",
            "ts",
            CRITICAL,
            "every score has a timestamp",
        ),
        _col(
            "scores.score_not_null",
            "ExpectColumnValuesToNotBeNull",
            "score",
            CRITICAL,
            "every row has a score",
        ),
        _col(
            "scores.probability",
            "ExpectColumnValuesToBeBetween",
            "score",
            CRITICAL,
            "scores are probabilities in [0, 1]",
            min_value=0.0,
            max_value=1.0,
        ),
        Check(
            "scores.unique",
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["host", "ts"]},
            CRITICAL,
            "one score per host and timestamp",
        ),
    ]


def parse_overrides(spec: str) -> dict[str, str]:
    """``'raw.completeness=critical, raw.known_hosts=warning'`` -> {name: severity}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, severity = part.partition("=")
        severity = severity.strip().lower()
        if not sep or not name.strip() or severity not in SEVERITIES:
            raise SuiteConfigError(
                f"ANOMALY_VALIDATION_SEVERITY: {part!r} is not name=critical or name=warning"
            )
        out[name.strip()] = severity
    return out


def all_names() -> list[str]:
    """Every expectation name of every suite (kinds with bounds included)."""
    t = datetime(2000, 1, 1)
    kinds = {k: k for k in KIND_BOUNDS}
    suites = [raw_suite(t, t, kinds, [], 0.0), completeness_suite(0.9), features_suite(0.2), scores_suite()]
    return sorted({c.name for s in suites for c in s})


def with_overrides(checks: Sequence[Check], spec: str) -> list[Check]:
    """``checks`` with severities replaced as ``spec`` says; unknown names are an error."""
    overrides = parse_overrides(spec)
    unknown = sorted(set(overrides) - set(all_names()))
    if unknown:
        raise SuiteConfigError(
            f"ANOMALY_VALIDATION_SEVERITY names unknown expectation(s) {', '.join(unknown)}; "
            f"known: {', '.join(all_names())}"
        )
    return [replace(c, severity=overrides.get(c.name, c.severity)) for c in checks]
