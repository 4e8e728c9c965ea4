"""Validate a batch, keep the results, and say clearly why a batch was stopped.

Every validation of a batch (one suite, one source, one interval, one run):

1. runs the suite with Great Expectations (:mod:`anomaly.validation.engine`);
2. renders the result as a Data Docs page under ``ANOMALY_HOME/reports/validation/runs/``;
3. writes one row per expectation to ``validation_results`` (:func:`record`, inside the caller's
   transaction, so the results and the release or quarantine of the batch commit together);
4. refreshes ``reports/validation/index.html`` from that table (:func:`refresh_index`).

A critical failure becomes :class:`~anomaly.validation.ValidationFailed` whose message names the
suite, the expectation, the observed value and the interval (:func:`failure_message`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly import registry
from anomaly.settings import Settings, get_settings
from anomaly.validation import engine, suites
from anomaly.validation.engine import SuiteRun

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from anomaly.store import Lake

log = logging.getLogger(__name__)

INDEX_RUNS = 500  # validations listed on the index page, newest first
HISTORY = timedelta(days=1)  # hosts that reported in the day before are expected in the interval


def _interval(start: datetime, end: datetime) -> str:
    return f"[{start.isoformat()}, {end.isoformat()})"


# --- raw metrics ----------------------------------------------------------------------------------
def validate_raw(
    frame: pd.DataFrame,
    source: str,
    start: datetime,
    end: datetime,
    lake: Lake,
    settings: Settings | None = None,
) -> list[SuiteRun]:
    """Run ``raw_metrics`` on a staged batch and ``raw_completeness`` on its per-host summary."""
    settings = settings or get_settings()
    kinds = lake.metric_kinds()
    known = lake.query(f"SELECT host FROM {registry.HOSTS}")["host"].tolist()
    checks = suites.with_overrides(
        suites.raw_suite(start, end, kinds, known, settings.max_reject_share), settings.validation_severity
    )
    raw = engine.run(
        suites.RAW, frame, checks, text_columns=("host", "metric"), index_columns=("host", "metric", "ts")
    )
    summary = completeness_frame(frame, lake, source, start, end, settings.step_seconds)
    checks = suites.with_overrides(
        suites.completeness_suite(settings.validation_completeness), settings.validation_severity
    )
    complete = engine.run(suites.COMPLETENESS, summary, checks, index_columns=("host",))
    return [raw, complete]


def completeness_frame(
    frame: pd.DataFrame, lake: Lake, source: str, start: datetime, end: datetime, step_seconds: int
) -> pd.DataFrame:
    """One row per host: samples observed in the batch against those expected.

    Expected = (metrics the host reported in the batch or the day before) x (interval / step).
    Hosts that reported in the day before but not in the batch are listed with 0 samples.
    """
    import pandas as pd

    steps = max(1, int((end - start).total_seconds() // step_seconds))
    before = lake.query(
        f"SELECT DISTINCT host, metric FROM {registry.RAW_METRICS} WHERE source = ? AND ts >= ? AND ts < ?",
        [source, start - HISTORY, start],
    )
    ok = frame[["host", "metric"]].dropna() if {"host", "metric"} <= set(frame.columns) else None
    now = (
        ok.drop_duplicates().astype({"host": object, "metric": object}) if ok is not None else before.iloc[:0]
    )
    pairs = pd.concat([now, before], ignore_index=True).drop_duplicates()
    metrics = pairs.groupby("host")["metric"].nunique()
    observed = ok.groupby("host", observed=True).size() if ok is not None else pd.Series(dtype="int64")
    out = pd.DataFrame({"host": metrics.index.astype(str), "metrics": metrics.to_numpy()})
    out["observed"] = observed.reindex(metrics.index, fill_value=0).to_numpy().astype("int64")
    out["expected"] = out["metrics"] * steps
    out["share"] = out["observed"] / out["expected"]
    return out.sort_values("host").reset_index(drop=True)


# --- features ---------------------------------------------------------------------------------------
def features_profile(
    con: duckdb.DuckDBPyConnection, source: str, start: datetime, end: datetime, step_seconds: int
) -> pd.DataFrame:
    """One row per feature column of ``features`` for the interval (read once, through Arrow).

    Columns: feature, family, kind (corr, count, std_ratio or value), window_seconds, rows, nonfinite (NaN
    or infinite values), warm_rows (rows at least one window or lag after the host's first
    sample), warm_nulls, null_share, min, max, count_excess (max count minus window / step + 1).
    """
    import pandas as pd

    from anomaly.features import LAG_SECONDS, WINDOW_SECONDS

    catalog = con.execute(
        f'SELECT name, family, "window" FROM {registry.FEATURE_CATALOG} ORDER BY position'
    ).fetchall()
    spans = {**WINDOW_SECONDS, **LAG_SECONDS}
    numeric = {
        name
        for name, dtype, *_ in con.execute(f"DESCRIBE {registry.FEATURES}").fetchall()
        if dtype in ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "HUGEINT", "SMALLINT", "TINYINT")
    }
    rows = [(n, f, w) for n, f, w in catalog if n in numeric]
    if not rows:
        return pd.DataFrame(
            columns=[
                "feature",
                "family",
                "kind",
                "window_seconds",
                "rows",
                "nonfinite",
                "warm_rows",
                "warm_nulls",
                "null_share",
                "min",
                "max",
                "count_excess",
            ]
        )
    import numpy as np

    table = con.execute(
        f"""
        SELECT {", ".join(_quote(n) for n, _, _ in rows)},
               epoch(x.ts) - epoch(coalesce(h.first_seen, x.ts)) AS "__age"
        FROM {registry.FEATURES} x LEFT JOIN {registry.HOSTS} h USING (host)
        WHERE x.source = ? AND x.ts >= ? AND x.ts < ?
        """,
        [source, start, end],
    ).fetch_arrow_table()
    n = table.num_rows
    age = table.column("__age").to_numpy(zero_copy_only=False).astype("float64")
    out = []
    for name, family, window in rows:
        # Arrow keeps NULL (missing, by design) apart from NaN and infinity (a bug upstream)
        column = table.column(name).combine_chunks()
        missing = column.is_null().to_numpy(zero_copy_only=False)
        values = column.to_numpy(zero_copy_only=False).astype("float64")
        finite = np.isfinite(values)
        span = spans.get(window or "", 0)
        warm = age >= span
        kind = _feature_kind(name)
        mn = float(values[finite].min()) if finite.any() else None
        mx = float(values[finite].max()) if finite.any() else None
        excess = mx - (span / step_seconds + 1) if kind == "count" and mx is not None and span else None
        warm_rows, warm_nulls = int(warm.sum()), int((warm & missing).sum())
        out.append(
            {
                "feature": name,
                "family": family,
                "kind": kind,
                "window_seconds": span,
                "rows": n,
                "nonfinite": int((~missing & ~finite).sum()),
                "warm_rows": warm_rows,
                "warm_nulls": warm_nulls,
                "null_share": warm_nulls / warm_rows if warm_rows else None,
                "min": mn,
                "max": mx,
                "count_excess": excess,
            }
        )
    return pd.DataFrame(out)


def _feature_kind(name: str) -> str:
    """corr, count, std_ratio (NULL by design where the metric was constant) or value."""
    if name.startswith("corr__"):
        return "corr"
    if "__count_" in name:
        return "count"
    if re.search(r"__std_[0-9a-z]+_ratio_", name):
        return "std_ratio"
    return "value"


def validate_features_profile(profile: pd.DataFrame, settings: Settings | None = None) -> SuiteRun:
    settings = settings or get_settings()
    checks = suites.with_overrides(
        suites.features_suite(settings.validation_null_share), settings.validation_severity
    )
    return engine.run(suites.FEATURES, profile, checks, index_columns=("feature",))


def validate_scores(frame: pd.DataFrame, settings: Settings | None = None) -> SuiteRun:
    """The ``scores`` suite on a batch of scores (for the scoring DAG)."""
    settings = settings or get_settings()
    checks = suites.with_overrides(suites.scores_suite(), settings.validation_severity)
    return engine.run(suites.SCORES, frame, checks, text_columns=("host",), index_columns=("host", "ts"))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- messages, results, reports --------------------------------------------------------------------
def failure_message(
    runs: Sequence[SuiteRun], source: str, start: datetime, end: datetime, run_id: str
) -> str:
    """'validation failed for source 'x' interval [..): suite raw_metrics, expectation raw.value_not_nan
    (value is not NaN; expect_column_values_to_not_be_null on value): observed 51 unexpected of
    1000 rows (5.10%), e.g. ...'"""
    lines = []
    for run in runs:
        for o in run.failed:
            on = f" on {o.column}" if o.column else ""
            eg = f", e.g. {o.examples}" if o.examples else ""
            lines.append(
                f"suite {run.suite}, expectation {o.name} ({o.description}; {o.expectation_type}{on}, "
                f"{o.severity}): observed {o.observed}{eg}"
            )
    head = f"validation failed for source {source!r}, interval {_interval(start, end)}, run {run_id!r}"
    return head + ": " + "; ".join(lines)


def failed_names(runs: Sequence[SuiteRun]) -> list[str]:
    return [o.name for r in runs for o in r.failed]


def render(
    runs: Sequence[SuiteRun],
    source: str,
    start: datetime,
    end: datetime,
    run_id: str,
    batch_id: str,
    settings: Settings,
) -> dict[str, Path]:
    """Write one Data Docs page per suite run; returns suite -> page."""
    from anomaly.validation import docs

    pages = {}
    for run in runs:
        path = report_path(settings, run.suite, source, start, f"{run_id}__{batch_id}")
        docs.render_result(
            run.result,
            path,
            title=f"{run.suite} · {source} · {_interval(start, end)}",
            summary={
                "suite": run.suite,
                "source": source,
                "interval": _interval(start, end),
                "run id": run_id,
                "batch id": batch_id,
                "rows": str(run.rows),
                "status": run.status,
            },
        )
        pages[run.suite] = path
    return pages


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def batch_path(folder: Path, source: str, start: datetime, run_id: str, suffix: str) -> Path:
    """``folder/<source>/<start>__<run id><suffix>`` with both names made safe for a file system."""
    return (
        folder
        / _UNSAFE.sub("_", source)
        / f"{start.strftime('%Y%m%dT%H%M%S')}__{_UNSAFE.sub('_', run_id)}{suffix}"
    )


def report_path(settings: Settings, suite: str, source: str, start: datetime, run_id: str) -> Path:
    return batch_path(settings.validation_reports_dir / "runs" / suite, source, start, run_id, ".html")


def record(
    con: duckdb.DuckDBPyConnection,
    runs: Sequence[SuiteRun],
    source: str,
    start: datetime,
    end: datetime,
    run_id: str,
    batch_id: str,
    pages: dict[str, Path] | None = None,
) -> None:
    """Write the results of a batch's validation to ``validation_results`` (inside a transaction)."""
    import pandas as pd

    pages = pages or {}
    rows: list[dict[str, Any]] = []
    for run in runs:
        for o in run.outcomes:
            rows.append(
                {
                    "suite": run.suite,
                    "expectation": o.name,
                    "expectation_type": o.expectation_type,
                    "column": o.column,
                    "severity": o.severity,
                    "success": o.success,
                    "observed_value": o.observed,
                    "unexpected_count": o.unexpected_count,
                    "unexpected_percent": o.unexpected_percent,
                    "element_count": o.element_count if o.element_count is not None else run.rows,
                    "examples": o.examples or None,
                    "report": str(pages[run.suite]) if run.suite in pages else None,
                }
            )
    if not rows:
        return
    frame = pd.DataFrame(rows).astype({"unexpected_count": "Int64", "element_count": "Int64"})
    con.register("validation_rows", frame)
    con.execute(
        f"""
        INSERT INTO {registry.VALIDATION_RESULTS}
            (run_id, batch_id, suite, source, interval_start, interval_end, expectation, expectation_type,
             "column", severity, success, observed_value, unexpected_count, unexpected_percent, element_count,
             examples, report, validated_at)
        SELECT ?, ?, suite, ?, ?, ?, expectation, expectation_type, "column", severity, success,
               observed_value, unexpected_count, unexpected_percent, element_count, examples, report, now()
        FROM validation_rows
        """,
        [run_id, batch_id, source, start, end],
    )
    con.unregister("validation_rows")


def release_quarantine(
    con: duckdb.DuckDBPyConnection,
    suites_: Sequence[str],
    source: str,
    start: datetime,
    end: datetime,
    run_id: str,
) -> int:
    """Mark earlier quarantined batches of these suites for this interval as released; returns how many."""
    where = (
        "WHERE list_contains(?, suite) AND source = ? AND interval_start = ? AND interval_end = ? "
        "AND released_at IS NULL"
    )
    params = [list(suites_), source, start, end]
    held = con.execute(f"SELECT count(*) FROM {registry.QUARANTINE_BATCHES} {where}", params).fetchone()[0]
    if held:
        con.execute(
            f"UPDATE {registry.QUARANTINE_BATCHES} SET released_at = now(), released_by_run = ? {where}",
            [run_id, *params],
        )
    return int(held)


def quarantine_batch(
    con: duckdb.DuckDBPyConnection,
    runs: Sequence[SuiteRun],
    source: str,
    start: datetime,
    end: datetime,
    run_id: str,
    batch_id: str,
    *,
    rows: int,
    location: str,
    message: str,
    reason: str | None = None,
) -> None:
    """Record a refused batch in ``quarantine_batches`` (inside a transaction): one row per failed
    suite, or one row of suite ``runs[0].suite`` with ``reason`` when it was refused for another
    reason (no suite failed)."""
    entries = [(r.suite, ", ".join(o.name for o in r.failed)) for r in runs if r.failed]
    if not entries and reason:
        entries = [(runs[0].suite, reason)]
    for suite, why in entries:
        con.execute(
            f"""
            INSERT INTO {registry.QUARANTINE_BATCHES} (run_id, batch_id, suite, source, interval_start,
                interval_end, reason, detail, rows, location, quarantined_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())
            """,
            [run_id, batch_id, suite, source, start, end, why, message, rows, location],
        )


def refresh_index(lake: Lake, settings: Settings | None = None) -> Path:
    """Rewrite ``reports/validation/index.html`` from ``validation_results`` (newest first)."""
    from anomaly.validation import docs

    settings = settings or get_settings()
    runs = lake.read(
        f"""
        SELECT run_id, batch_id, suite, source, interval_start, interval_end, any_value(report) AS page,
               max(validated_at) AS validated_at, max(element_count) AS rows,
               list(expectation ORDER BY expectation) FILTER (WHERE NOT success AND severity = 'critical')
                   AS failed,
               list(expectation ORDER BY expectation) FILTER (WHERE NOT success AND severity <> 'critical')
                   AS warnings
        FROM {registry.VALIDATION_RESULTS}
        GROUP BY ALL
        ORDER BY validated_at DESC, suite
        LIMIT {INDEX_RUNS}
        """
    )
    items = []
    for r in runs.to_dict("records"):
        failed = list(r["failed"]) if r["failed"] is not None else []
        warnings = list(r["warnings"]) if r["warnings"] is not None else []
        r.update(
            failed=failed,
            warnings=warnings,
            status="failed" if failed else "warning" if warnings else "passed",
            rows=int(r["rows"]) if r["rows"] == r["rows"] and r["rows"] is not None else 0,
            page=r["page"] or "",
        )
        items.append(r)
    root = settings.validation_reports_dir
    root.mkdir(parents=True, exist_ok=True)
    return docs.write_index(root, items)
